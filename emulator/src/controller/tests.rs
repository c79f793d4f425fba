use super::*;

fn get(url: &str, auth: Option<&str>) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let mut req = agent.get(url);
    if let Some(a) = auth {
        req = req.header("Authorization", a);
    }
    let mut resp = req.call().expect("controller answers");
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_string().unwrap_or_default())
}

#[test]
fn answers_the_namespaces_of_a_known_key_and_401_otherwise() {
    let key = new_api_key();
    let c = Controller::start(&[(key.clone(), vec!["guest".into()])]).unwrap();
    c.add_key("u:k", &["a", "b"]);
    let url = format!("{}/api/v1/namespaces", c.url());
    let basic = |s: &str| {
        // Tiny encoder for the test only.
        let table = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let bytes = s.as_bytes();
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(char::from(table[((n >> (18 - 6 * i)) & 63) as usize]));
                } else {
                    out.push('=');
                }
            }
        }
        format!("Basic {out}")
    };
    assert_eq!(
        get(&url, Some(&basic(&key))),
        (200, r#"["guest"]"#.to_string())
    );
    assert_eq!(get(&url, Some(&basic("u:k"))).1, r#"["a","b"]"#);
    assert_eq!(get(&url, Some(&basic("u:wrong"))).0, 401);
    assert_eq!(get(&url, None).0, 401);
    assert_eq!(get(&format!("{}/api/v1/other", c.url()), None).0, 404);
    c.set_failing(true);
    assert_eq!(get(&url, Some(&basic(&key))).0, 503);
    assert_eq!(c.requests(), 6);
}

fn basic(s: &str) -> String {
    let table = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in s.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(table[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    format!("Basic {out}")
}

fn ended(sink: &dyn EventSink, ns: &str, id: &str, init: u64, status: u8) {
    let event = EventMessage::activation(
        0,
        ns,
        crate::events::ActivationBody {
            name: format!("{ns}/hello"),
            activation_id: id.to_string(),
            status_code: status,
            duration: 120,
            wait_time: 7,
            init_time: init,
            kind: "rust:1.34".into(),
            conductor: false,
            memory: 256,
            caused_by: None,
            size: Some(17),
            user_defined_status_code: None,
        },
    );
    sink.activation_ended(&event, &json!({"greeting": "hi"}), Duration::from_secs(60));
    sink.publish(&event);
}

#[test]
fn serves_the_activation_record_to_its_namespace_key_and_404_to_others() {
    let (guest, other) = (new_api_key(), new_api_key());
    let c = Controller::start(&[
        (guest.clone(), vec!["guest".into()]),
        (other.clone(), vec!["other".into()]),
    ])
    .unwrap();
    let memory = Arc::new(crate::events::MemorySink::default());
    let sink = c.recording(memory.clone());
    ended(&*sink, "guest", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 30, 0);
    ended(&*sink, "other", "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", 0, 2);
    assert_eq!(
        memory.events().len(),
        2,
        "events still reach the inner sink"
    );
    let url = |ns: &str, id: &str| format!("{}/api/v1/namespaces/{ns}/activations/{id}", c.url());

    for ns in ["_", "guest"] {
        let (status, body) = get(
            &url(ns, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
            Some(&basic(&guest)),
        );
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["activationId"], "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
        assert_eq!(v["namespace"], "guest");
        assert_eq!(v["name"], "hello");
        assert_eq!(v["duration"], 120);
        assert_eq!(
            v["end"].as_u64().unwrap() - v["start"].as_u64().unwrap(),
            120
        );
        assert_eq!(v["response"]["status"], "success");
        assert_eq!(v["response"]["success"], true);
        assert_eq!(v["response"]["result"]["greeting"], "hi");
        let ann = |k: &str| {
            v["annotations"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["key"] == k)
                .map(|a| a["value"].clone())
        };
        assert_eq!(ann("waitTime"), Some(json!(7)));
        assert_eq!(ann("initTime"), Some(json!(30)));
        assert_eq!(ann("kind"), Some(json!("rust:1.34")));
        assert_eq!(ann("limits").unwrap()["memory"], 256);
        assert_eq!(ann("limits").unwrap()["timeout"], 60_000);
        assert_eq!(ann("path"), Some(json!("guest/hello")));
    }
    let (_, body) = get(
        &url("_", "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"),
        Some(&basic(&other)),
    );
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["response"]["status"], "action developer error");
    assert_eq!(v["response"]["success"], false);
    assert!(
        !v["annotations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["key"] == "initTime"),
        "a warm activation has no initTime"
    );
    // Another namespace's id, an unknown id, a namespace the key may not act in, no key.
    assert_eq!(
        get(
            &url("_", "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"),
            Some(&basic(&guest))
        )
        .0,
        404
    );
    assert_eq!(
        get(
            &url("_", "cccccccccccccccccccccccccccccccc"),
            Some(&basic(&guest))
        )
        .0,
        404
    );
    assert_eq!(
        get(
            &url("other", "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"),
            Some(&basic(&guest))
        )
        .0,
        403
    );
    assert_eq!(
        get(&url("_", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"), None).0,
        401
    );
    assert_eq!(
        get(
            &url("_", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
            Some(&basic("u:wrong"))
        )
        .0,
        401
    );
    assert_eq!(c.activations_held(), 2);
}

#[test]
fn the_activation_log_keeps_the_last_records_within_its_count_and_bytes() {
    let mut log = ActivationLog::new(3, 1000);
    for i in 0..5 {
        log.insert("ns", format!("id{i}"), "x".repeat(10));
    }
    assert_eq!(log.len(), 3);
    assert!(log.get("ns", "id1").is_none());
    assert!(log.get("ns", "id4").is_some());
    assert!(log.get("other", "id4").is_none());
    // 985 bytes: one more record than the count bound asks for must go to make room.
    log.insert("ns", "big".into(), "x".repeat(980));
    assert!(log.get("ns", "big").is_some());
    assert!(log.bytes <= 1000, "{}", log.bytes);
    assert_eq!(log.len(), 2, "older records made room");
    assert!(log.get("ns", "id2").is_none() && log.get("ns", "id4").is_some());
    log.insert("ns", "huge".into(), "x".repeat(2000));
    assert!(
        log.get("ns", "huge").is_none(),
        "a record larger than the whole log is not kept"
    );
}

#[test]
fn a_stopped_controller_refuses_connections_and_can_come_back_on_its_port() {
    let mut c = Controller::start(&[]).unwrap();
    let port = c.port();
    c.stop();
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    let back = Controller::start_on(port, &[]).unwrap();
    assert_eq!(back.port(), port);
}
