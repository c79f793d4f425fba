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
