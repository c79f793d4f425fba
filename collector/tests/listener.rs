//! The collector's `/metrics` listener is `whisk-serve`'s, with its flags: on the real binary
//! (no broker needed), a connection that sends nothing is closed after `--head-timeout` and
//! counted, and a new connection from an address at `--max-connections-per-peer` takes the
//! place of its oldest silent one. The listener's behaviour in depth (refusals included) is
//! tested on the gateway (`gateway/tests/listener.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command};
use std::time::Duration;

struct Collector {
    child: Child,
    port: u16,
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn collector(extra: &[&str]) -> Collector {
    let port = whisk_testkit::free_port();
    let broker = whisk_testkit::free_port();
    let mut args = vec![
        "--listen".to_string(),
        format!("127.0.0.1:{port}"),
        "--brokers".to_string(),
        format!("127.0.0.1:{broker}"),
        "--log-level".to_string(),
        "error".to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let child = Command::new(env!("CARGO_BIN_EXE_whisk-collector"))
        .args(&args)
        .env_remove("KAFKA_HOSTS")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let c = Collector { child, port };
    let url = format!("http://127.0.0.1:{port}/healthz");
    assert!(whisk_testkit::wait_until(Duration::from_secs(30), || {
        whisk_testkit::http_get(&url).is_ok()
    }));
    c
}

fn own_value(c: &Collector, series: &str) -> f64 {
    whisk_testkit::http_get(&format!("http://127.0.0.1:{}/metrics", c.port))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

fn connect_from(last: u8, c: &Collector) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::from(([127, 0, 0, last], 0)).into())
        .unwrap();
    socket
        .connect(&SocketAddr::from(([127, 0, 0, 1], c.port)).into())
        .unwrap();
    let s: TcpStream = socket.into();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// What arrives before the collector closes `s`.
fn read_to_close(s: &mut TcpStream) -> String {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the collector kept the connection open: {e}"),
        }
    }
    String::from_utf8_lossy(&all).into_owned()
}

#[test]
fn a_silent_connection_is_closed_after_the_head_timeout_and_counted() {
    let c = collector(&["--head-timeout", "1s"]);
    let mut silent = connect_from(2, &c);
    assert_eq!(read_to_close(&mut silent), "");
    assert_eq!(
        own_value(
            &c,
            "whisk_collector_connections_closed_total{reason=\"head_timeout\"}"
        ),
        1.0
    );
}

#[test]
fn an_address_at_its_limit_loses_its_oldest_silent_connection_to_a_new_one() {
    let c = collector(&["--max-connections-per-peer", "2"]);
    let mut oldest = connect_from(2, &c);
    let _second = connect_from(2, &c);
    let open = whisk_testkit::wait_until(Duration::from_secs(10), || {
        own_value(&c, "whisk_collector_connections_open") >= 2.0
    });
    assert!(open);
    let mut third = connect_from(2, &c);
    assert_eq!(read_to_close(&mut oldest), "", "closed to make room");
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: c\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert!(read_to_close(&mut third).starts_with("HTTP/1.1 200"));
    assert_eq!(
        own_value(
            &c,
            "whisk_collector_connections_closed_total{reason=\"shed\"}"
        ),
        1.0
    );
}
