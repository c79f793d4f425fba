//! The gateway's listener against hostile clients, on the real binary over loopback: half-open
//! connections are closed after the head timeout while a container's pushes go on, a peer
//! address past its connection limit is refused and counted while another is served (and a
//! container behind the same address still gets in, in place of a connection that sent
//! nothing), and a body trickled a byte at a time is cut off. Needs `prometheus-pushgateway`
//! on PATH. Latency under such an attack is measured in docs/benchmarks.md, not here.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use whisk_testkit::wait_until;

/// A connection to the gateway from the loopback address `from` (127.0.0.x).
fn connect_from(from: Ipv4Addr, gw: &Gateway) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::from((from, 0)).into())
        .expect("binding a 127.0.0.x source address");
    socket
        .connect(&SocketAddr::from(([127, 0, 0, 1], gw.port)).into())
        .expect("connecting to the gateway");
    let stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
}

/// What the gateway sends before it closes `stream` (empty when it only closes it).
fn read_to_close(stream: &mut TcpStream) -> String {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => all.extend_from_slice(&buf[..n]),
            // A close with unread input in the gateway's buffer arrives as a reset.
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the gateway kept the connection open: {e}"),
        }
    }
    String::from_utf8_lossy(&all).into_owned()
}

/// A complete PUT of `body` to `path` on a fresh connection from `from`: the answer's status.
fn put_from(from: Ipv4Addr, gw: &Gateway, path: &str, body: &str) -> u16 {
    let mut s = connect_from(from, gw);
    write!(
        s,
        "PUT {path} HTTP/1.1\r\nHost: gw\r\nContent-Type: text/plain; version=0.0.4\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    status_of(&read_to_close(&mut s))
}

fn status_of(answer: &str) -> u16 {
    answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

fn gateway(pgw: &whisk_testkit::Pushgateway, extra: &[&str]) -> Gateway {
    let mut args = shard_args(&[pgw]);
    args.extend(["--auth", "none"].map(String::from));
    args.extend(extra.iter().map(|s| s.to_string()));
    Gateway::start(&args)
}

#[test]
fn a_slowloris_is_closed_after_the_head_timeout_while_a_container_keeps_pushing() {
    const HALF_OPEN: usize = 60;
    let pgws = pushgateways(1);
    let gw = gateway(&pgws[0], &["--head-timeout", "2s"]);
    let attacker = Ipv4Addr::new(127, 0, 0, 2);
    // Half send half a head, half send nothing.
    let mut slow: Vec<TcpStream> = (0..HALF_OPEN)
        .map(|i| {
            let mut s = connect_from(attacker, &gw);
            if i % 2 == 0 {
                s.write_all(b"PUT /metrics/job/openwhisk_actions HTTP/1.1\r\nHost: gw\r\nConte")
                    .unwrap();
            }
            s
        })
        .collect();
    // A container pushes meanwhile, on its one kept-alive connection, as the SDK does.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let url = format!(
        "{}{}",
        gw.url(),
        group("openwhisk_actions", "legit", "guest", "hello")
    );
    let started = Instant::now();
    let mut pushes = 0u64;
    while started.elapsed() < Duration::from_secs(4) {
        pushes += 1;
        let status = agent
            .put(&url)
            .header("Content-Type", "text/plain; version=0.0.4")
            .send(body("jobs_total", "counter", pushes).as_str())
            .expect("the container's push is answered")
            .status()
            .as_u16();
        assert_eq!(status, 202, "push {pushes}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Every half-open connection is closed by the gateway (the head timeout passed).
    for s in &mut slow {
        assert_eq!(read_to_close(s), "", "closed without an answer");
    }
    assert!(
        gw.own_value("whisk_gateway_connections_closed_total{reason=\"head_timeout\"}")
            >= HALF_OPEN as f64
    );
    wait_for_groups(&pgws[0], "instance", "legit", 1);
    let open = wait_until(Duration::from_secs(10), || {
        gw.own_value("whisk_gateway_connections_open") <= 2.0
    });
    assert!(open, "the half-open connections are gone from the count");
}

#[test]
fn a_peer_past_its_limit_is_refused_and_counted_while_another_peer_is_served() {
    let pgws = pushgateways(1);
    let gw = gateway(
        &pgws[0],
        &["--max-connections-per-peer", "3", "--body-timeout", "60s"],
    );
    let path = group("openwhisk_actions", "i1", "guest", "hello");
    let body = body("jobs_total", "counter", 1);
    let full = Ipv4Addr::new(127, 0, 0, 2);
    // Three requests from one address, each past its head and waiting for its body: they are
    // being served, so none of them can be closed to make room.
    let mut serving: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut s = connect_from(full, &gw);
            write!(
                s,
                "PUT {path} HTTP/1.1\r\nHost: gw\r\nExpect: 100-continue\r\n\
                 Content-Length: {}\r\n\r\n",
                body.len()
            )
            .unwrap();
            let mut interim = [0u8; 25];
            s.read_exact(&mut interim).unwrap();
            assert!(interim.starts_with(b"HTTP/1.1 100 Continue"));
            s
        })
        .collect();
    let mut refused = connect_from(full, &gw);
    let answer = read_to_close(&mut refused);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 503"),
        "{answer}"
    );
    assert_eq!(
        gw.own_value("whisk_gateway_connections_refused_total{reason=\"peer_limit\"}"),
        1.0
    );
    // Another address is served.
    assert_eq!(
        put_from(Ipv4Addr::new(127, 0, 0, 3), &gw, &path, &body),
        202
    );
    // The three requests are still being served: their bodies complete them.
    for s in &mut serving {
        s.write_all(body.as_bytes()).unwrap();
        assert_eq!(read_status(s), 202);
    }
}

/// Reads one answer's status line from a kept-alive connection.
fn read_status(stream: &mut TcpStream) -> u16 {
    let mut buf = [0u8; 512];
    let n = stream.read(&mut buf).unwrap();
    status_of(&String::from_utf8_lossy(&buf[..n]))
}

#[test]
fn behind_a_shared_address_a_container_gets_in_in_place_of_connections_that_sent_nothing() {
    let pgws = pushgateways(1);
    let gw = gateway(&pgws[0], &["--max-connections-per-peer", "4"]);
    let nat = Ipv4Addr::new(127, 0, 0, 4);
    let mut silent: Vec<TcpStream> = (0..4).map(|_| connect_from(nat, &gw)).collect();
    let open = wait_until(Duration::from_secs(10), || {
        gw.own_value("whisk_gateway_connections_open") >= 4.0
    });
    assert!(open);
    let path = group("openwhisk_actions", "behind-nat", "guest", "hello");
    let body = body("jobs_total", "counter", 1);
    assert_eq!(put_from(nat, &gw, &path, &body), 202);
    assert_eq!(
        gw.own_value("whisk_gateway_connections_closed_total{reason=\"shed\"}"),
        1.0
    );
    assert_eq!(
        gw.own_value("whisk_gateway_connections_refused_total{reason=\"peer_limit\"}"),
        0.0
    );
    // The oldest silent connection was the one closed.
    assert_eq!(read_to_close(&mut silent[0]), "");
    wait_for_groups(&pgws[0], "instance", "behind-nat", 1);
}

#[test]
fn a_body_trickled_a_byte_at_a_time_is_cut_off_at_the_body_timeout() {
    let pgws = pushgateways(1);
    let gw = gateway(&pgws[0], &["--body-timeout", "1s"]);
    let path = group("openwhisk_actions", "slow", "guest", "hello");
    let mut s = connect_from(Ipv4Addr::new(127, 0, 0, 5), &gw);
    const LENGTH: usize = 600;
    write!(
        s,
        "PUT {path} HTTP/1.1\r\nHost: gw\r\nContent-Length: {LENGTH}\r\n\r\n"
    )
    .unwrap();
    let mut writer = s.try_clone().unwrap();
    // One byte every 50 ms: the whole body would take 30 s.
    let trickle = std::thread::spawn(move || {
        let mut sent = 0;
        while sent < LENGTH && writer.write_all(b"#").is_ok() {
            sent += 1;
            std::thread::sleep(Duration::from_millis(50));
        }
        sent
    });
    let answer = read_to_close(&mut s);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("--body-timeout"), "{answer}");
    let sent = trickle.join().unwrap();
    assert!(sent < LENGTH, "cut off after {sent} of {LENGTH} bytes");
    assert_eq!(
        gw.own_value("whisk_gateway_connections_closed_total{reason=\"body_timeout\"}"),
        1.0
    );
    assert_eq!(
        gw.own_value(
            "whisk_gateway_requests_total{method=\"PUT\",reason=\"body_timeout\",result=\"rejected\"}"
        ),
        1.0
    );
    assert!(groups_with(&pgws[0], "instance", "slow").is_empty());
}
