//! The loop on in-memory input: result lines, outcomes, panics and the `__OW_*` variables.

use super::*;
use proptest::prelude::*;

fn serving() -> Serving {
    serving_with(Config::new())
}

fn serving_with(config: Config) -> Serving {
    let mut s = Serving::new(&config.with_disabled(true));
    s.pusher = None;
    s
}

/// The result lines and how the loop ended.
fn serve_with(config: Config, input: &str, handler: &mut Handler<'_>) -> (Vec<String>, Flow) {
    let mut out = Vec::new();
    let flow = serving_with(config)
        .serve(input.as_bytes(), &mut out, handler)
        .unwrap();
    let lines = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    (lines, flow)
}

fn serve(input: &str, handler: &mut Handler<'_>) -> Vec<Value> {
    let (lines, flow) = serve_with(Config::new(), input, handler);
    assert_eq!(flow, Flow::Next);
    lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn answers_each_line_with_one_result_line() {
    let input = "{\"value\":{\"n\":1}}\n{\"value\":{\"n\":2}}\n{\"value\":[3]}";
    let results = serve(input, &mut |v, _| Ok(json!({ "echo": v })));
    assert_eq!(
        results,
        vec![
            json!({"echo":{"n":1}}),
            json!({"echo":{"n":2}}),
            json!({"echo":[3]})
        ]
    );
}

#[test]
fn malformed_line_gets_an_error_result_and_the_loop_goes_on() {
    let input = "not json\n{\"novalue\":1}\n[1]\n\n{\"value\":{}}\n";
    let results = serve(input, &mut |_, _| Ok(json!({"ok": true})));
    assert_eq!(results.len(), 5);
    for r in &results[..4] {
        let msg = r["error"].as_str().unwrap();
        assert!(msg.starts_with("malformed activation input"), "{msg}");
    }
    assert_eq!(results[4], json!({"ok": true}));
}

#[test]
fn huge_or_odd_deadlines_and_field_types_get_an_answer_not_a_crash() {
    let lines = [
        json!({"value": {}, "deadline": "1e300"}),
        json!({"value": {}, "deadline": 1e300}),
        json!({"value": {}, "deadline": "18446744073709551615"}),
        json!({"value": {}, "deadline": u64::MAX}),
        json!({"value": {}, "deadline": "-1"}),
        json!({"value": {}, "action_name": 7, "action_version": [1], "api_key": {"a": null}}),
        json!({"value": {}, "": "empty key", "a=b": "x", "nul": "a\u{0}b"}),
    ];
    let input: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let results = serve(&input, &mut |_, _| Ok(json!({"ok": true})));
    assert_eq!(results, vec![json!({"ok": true}); lines.len()]);
}

/// The loop over in-memory stdin and fd 3: one answer line per input line, or the panic.
fn answers(input: &[u8]) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    let served = catch_unwind(AssertUnwindSafe(|| {
        serving().serve(input, &mut out, &mut |v, _| Ok(json!({ "echo": v })))
    }));
    match served {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(format!("the loop stopped: {e}")),
        Err(p) => return Err(format!("the loop panicked: {}", panic_message(p.as_ref()))),
    }
    let text = String::from_utf8(out).map_err(|e| e.to_string())?;
    text.lines()
        .map(|l| serde_json::from_str(l).map_err(|e| format!("{l:?}: {e}")))
        .collect()
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        // binary fractions print and parse back exactly; huge and odd numbers as numbers too
        any::<i32>().prop_map(|i| Value::from(f64::from(i) / 8.0)),
        prop::sample::select(vec![1e300, -1e300, f64::MAX, 5e-324]).prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
        "[0-9e+.-]{0,24}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(".{0,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn run_line() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("value".to_string()),
        Just("deadline".to_string()),
        Just("action_name".to_string()),
        Just("action_version".to_string()),
        Just("activation_id".to_string()),
        Just("api_key".to_string()),
        Just("api_host".to_string()),
        Just("namespace".to_string()),
        "proptest_[a-z=\u{0}]{0,4}",
    ];
    prop::collection::btree_map(key, json_value(), 0..8)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_json_object_run_line_gets_exactly_one_answer(lines in prop::collection::vec(run_line(), 1..6)) {
        let input: String = lines.iter().map(|l| format!("{l}\n")).collect();
        let results = answers(input.as_bytes()).map_err(TestCaseError::fail)?;
        prop_assert_eq!(results.len(), lines.len());
        for (line, result) in lines.iter().zip(&results) {
            // what the loop read (serde_json's float parsing is not exact for every f64)
            let line: Value = serde_json::from_str(&line.to_string()).map_err(|e| TestCaseError::fail(e.to_string()))?;
            match line.get("value") {
                Some(v) => prop_assert_eq!(&result["echo"], v),
                None => prop_assert!(result["error"].is_string(), "{}", result),
            }
        }
    }

    #[test]
    fn any_bytes_run_line_gets_exactly_one_answer(
        lines in prop::collection::vec(prop::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 0..64), 1..6)
    ) {
        let mut input = Vec::new();
        for l in &lines {
            input.extend_from_slice(l);
            input.push(b'\n');
        }
        let results = answers(&input).map_err(TestCaseError::fail)?;
        prop_assert_eq!(results.len(), lines.len());
    }
}

#[test]
fn handler_error_becomes_error_result_and_counts_application_error() {
    let count = || {
        registry::global()
            .builtins
            .activations(Outcome::ApplicationError)
    };
    let before = count();
    let results = serve("{\"value\":{}}\n", &mut |_, _| {
        Err("out of stock".to_string())
    });
    assert_eq!(results, vec![json!({"error": "out of stock"})]);
    assert!(count() > before);
}

#[test]
fn panic_by_default_ends_the_loop_without_a_result_and_counts_developer_error() {
    let count = || {
        registry::global()
            .builtins
            .activations(Outcome::DeveloperError)
    };
    let before = count();
    let mut calls = 0;
    let input = "{\"value\":{}}\n{\"value\":{}}\n{\"value\":{}}\n";
    let (lines, flow) = serve_with(Config::new(), input, &mut |_, _| {
        calls += 1;
        if calls == 2 {
            panic!("boom {}", calls);
        }
        Ok(json!({"calls": calls}))
    });
    assert_eq!(flow, Flow::Exit);
    assert_eq!(lines, vec![r#"{"calls":1}"#.to_string()]);
    assert_eq!(calls, 2, "the line after the panic must not be served");
    assert!(count() > before);
}

#[test]
fn panic_with_error_result_answers_an_error_and_serving_continues() {
    let count = || {
        registry::global()
            .builtins
            .activations(Outcome::DeveloperError)
    };
    let before = count();
    let mut calls = 0;
    let config = Config::new().with_on_panic(OnPanic::ErrorResult);
    let input = "{\"value\":{}}\n{\"value\":{}}\n";
    let (lines, flow) = serve_with(config, input, &mut |_, _| {
        calls += 1;
        if calls == 1 {
            panic!("boom {}", calls);
        }
        Ok(json!({"calls": calls}))
    });
    assert_eq!(flow, Flow::Next);
    assert_eq!(
        lines,
        vec![
            r#"{"error":"the action panicked: boom 1"}"#.to_string(),
            r#"{"calls":2}"#.to_string()
        ]
    );
    assert!(count() > before);
}

#[test]
fn non_object_result_is_passed_through_as_the_proxy_sees_it_and_counts_developer_error() {
    let count = || {
        registry::global()
            .builtins
            .activations(Outcome::DeveloperError)
    };
    for (value, line) in [
        (json!("just text"), r#""just text""#),
        (json!(42), "42"),
        (json!(true), "true"),
        (Value::Null, "null"),
    ] {
        let before = count();
        let v = value.clone();
        let (lines, flow) =
            serve_with(Config::new(), "{\"value\":{}}\n", &mut |_, _| Ok(v.clone()));
        assert_eq!(flow, Flow::Next);
        assert_eq!(lines, vec![line.to_string()], "{value}");
        assert!(count() > before, "{value}");
    }
    // arrays are results: the Go proxy passes them on (runHandler.go)
    let (lines, _) = serve_with(Config::new(), "{\"value\":{}}\n", &mut |_, _| {
        Ok(json!([1]))
    });
    assert_eq!(lines, vec!["[1]".to_string()]);
}

#[test]
fn sets_ow_environment_and_context_before_the_handler() {
    let input = json!({
        "value": {}, "action_name": "/ns/pkg/envtest", "action_version": "1.2.3",
        "activation_id": "act1", "deadline": "4102444800000", "odd=key": "x"
    })
    .to_string();
    let results = serve(&input, &mut |_, ctx| {
        Ok(json!({
            "env_name": std::env::var("__OW_ACTION_NAME").unwrap_or_default(),
            "env_deadline": std::env::var("__OW_DEADLINE").unwrap_or_default(),
            "ctx_version": ctx.action_version,
            "ctx_id": ctx.activation_id,
            "has_deadline": ctx.deadline.is_some(),
        }))
    });
    assert_eq!(
        results[0],
        json!({
            "env_name": "/ns/pkg/envtest", "env_deadline": "4102444800000",
            "ctx_version": "1.2.3", "ctx_id": "act1", "has_deadline": true
        })
    );
}

#[test]
fn ow_variables_take_longer_values_and_come_back_after_the_handler_removed_them() {
    let long = "x".repeat(300);
    let lines = [
        json!({"value": {}, "envgrow_key": "a", "envgrow_ü": "ü"}),
        json!({"value": {}, "envgrow_key": long}),
        json!({"value": {}, "envgrow_key": long}),
        json!({"value": {}, "envgrow_key": "b"}),
    ];
    let input: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let mut calls = 0;
    let results = serve(&input, &mut |_, _| {
        calls += 1;
        let seen = std::env::var("__OW_ENVGROW_KEY").unwrap_or_default();
        if calls == 1 {
            assert_eq!(std::env::var("__OW_ENVGROW_Ü").as_deref(), Ok("ü"));
        }
        if calls == 2 {
            #[allow(unsafe_code)]
            // SAFETY: the test's handler runs on the loop's thread, like the loop's writes.
            unsafe {
                std::env::remove_var("__OW_ENVGROW_KEY")
            };
        }
        Ok(json!({ "seen": seen }))
    });
    let seen: Vec<&str> = results.iter().filter_map(|r| r["seen"].as_str()).collect();
    assert_eq!(seen, vec!["a", long.as_str(), long.as_str(), "b"]);
}

#[test]
fn updates_changed_ow_variables_and_restores_ones_the_handler_changed() {
    let line = |id: &str, n: u64| {
        json!({"value": {}, "activation_id": id, "envtest_number": n, "action_version": "9"})
            .to_string()
    };
    let input = format!("{}\n{}\n", line("first", 1), line("second", 2));
    let results = serve(&input, &mut |_, _| {
        let seen = json!({
            "id": std::env::var("__OW_ACTIVATION_ID").unwrap_or_default(),
            "number": std::env::var("__OW_ENVTEST_NUMBER").unwrap_or_default(),
            "version": std::env::var("__OW_ACTION_VERSION").unwrap_or_default(),
        });
        // a handler that overwrites a variable gets the activation's value back next time
        #[allow(unsafe_code)]
        // SAFETY: the test's handler runs on the loop's thread, like the loop's set_var.
        unsafe {
            std::env::set_var("__OW_ACTION_VERSION", "changed by the handler")
        };
        Ok(seen)
    });
    assert_eq!(
        results,
        vec![
            json!({"id": "first", "number": "1", "version": "9"}),
            json!({"id": "second", "number": "2", "version": "9"}),
        ]
    );
}
