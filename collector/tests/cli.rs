//! The binary's flag and environment handling, as an operator meets it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn the_kafka_properties_environment_variable_is_a_comma_separated_list() {
    // Only a split list makes `novalue` an item of its own, which is not KEY=VALUE: exit 2.
    let out = Command::new(env!("CARGO_BIN_EXE_whisk-collector"))
        .env(
            "WHISK_COLLECTOR_KAFKA_PROPERTIES",
            "security.protocol=PLAINTEXT,novalue",
        )
        .env_remove("KAFKA_HOSTS")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--kafka-property") && stderr.contains("\"novalue\" is not KEY=VALUE"),
        "{stderr}"
    );
}

/// GET `path` over HTTP/1.1 with `Connection: close`; the raw answer (chunked encoding kept).
fn get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    let _ = s.read_to_string(&mut out).ok()?;
    Some(out)
}

#[test]
fn metrics_are_served_as_a_stream_of_chunks_without_a_broker() {
    let port = whisk_testkit::free_port();
    let broker = whisk_testkit::free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_whisk-collector"))
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--brokers",
            &format!("127.0.0.1:{broker}"),
            "--log-level",
            "error",
        ])
        .env_remove("KAFKA_HOSTS")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut answer = None;
    assert!(whisk_testkit::wait_until(
        std::time::Duration::from_secs(30),
        || {
            answer = get(port, "/metrics");
            answer.is_some()
        }
    ));
    let _ = child.kill();
    let _ = child.wait();
    let answer = answer.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains("transfer-encoding: chunked"),
        "streamed, not one sized body: {answer}"
    );
    for needle in [
        "# TYPE openwhisk_action_activations_total counter",
        "# TYPE openwhisk_namespace_concurrent_invocations gauge",
        "whisk_collector_live_series 0",
    ] {
        assert!(answer.contains(needle), "{needle} missing in {answer}");
    }
}

#[test]
fn an_unreadable_ca_or_password_file_stops_the_start_naming_the_flag() {
    let dir = std::env::temp_dir().join(format!("whisk-collector-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let not_pem = dir.join("not-a-ca.pem");
    std::fs::write(&not_pem, "hello\n").unwrap();
    let missing = dir.join("missing");
    let cases = [
        ("--pushgateway-ca-file", &not_pem, "no PEM certificate"),
        ("--pushgateway-password-file", &missing, "No such file"),
    ];
    for (flag, path, reason) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_whisk-collector"))
            .args([
                "--listen",
                &format!("127.0.0.1:{}", whisk_testkit::free_port()),
                "--brokers",
                &format!("127.0.0.1:{}", whisk_testkit::free_port()),
                "--pushgateway-url",
                "https://127.0.0.1:1",
                flag,
            ])
            .arg(path)
            .env_remove("KAFKA_HOSTS")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag}: {stderr}");
        assert!(
            stderr.contains(flag) && stderr.contains(reason),
            "{flag}: {stderr}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
