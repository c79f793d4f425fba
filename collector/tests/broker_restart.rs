//! A real tansu broker that keeps its data (libsql) is restarted in the middle of a load: the
//! collector keeps running, resumes, and the Pushgateway holds exactly the events produced.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Collector, activation, sample, wait_for};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use whisk_testkit::{Pushgateway, Tansu};

/// `openwhisk_action_activations_total` summed over the platform groups.
fn pushed_total(pgw: &Pushgateway) -> f64 {
    pgw.metrics_text()
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            l.starts_with("openwhisk_action_activations_total{")
                && l.contains(r#"job="openwhisk_platform""#)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn counter(c: &Collector, series: &str) -> f64 {
    sample(&c.metrics(), series).unwrap_or(0.0)
}

fn kafka_errors(c: &Collector) -> f64 {
    c.metrics()
        .lines()
        .filter(|l| l.starts_with("whisk_collector_kafka_errors_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Produces batches to both partitions every 50 ms with one producer that lives through the
/// outage (librdkafka buffers and retries), until `stop` is set; then flushes.
fn load(bootstrap: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("linger.ms", "5")
            .set("message.timeout.ms", "180000")
            .create()
            .unwrap();
        let value = activation("guest", "guest/restart", r#","statusCode":0"#);
        let mut i = 0;
        while !stop.load(Ordering::SeqCst) {
            for _ in 0..100 {
                // A full queue during the outage: that message is simply not produced (the
                // expected count is read from the broker at the end).
                let _ = producer.send(
                    BaseRecord::<(), [u8]>::to("events")
                        .partition(i % 2)
                        .payload(value.as_slice()),
                );
                i += 1;
            }
            producer.poll(Duration::from_millis(50));
        }
        producer.flush(Duration::from_secs(180)).unwrap();
    })
}

/// Messages stored in the topic (sum of the high watermarks: every one is an activation).
fn stored(bootstrap: &str) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    (0..2)
        .map(|p| {
            let (low, high) = consumer
                .fetch_watermarks("events", p, Duration::from_secs(30))
                .unwrap();
            assert_eq!(low, 0);
            high
        })
        .sum()
}

#[test]
fn a_restarted_broker_with_its_data_is_resumed_and_counted_exactly_once() {
    let mut tansu = Tansu::start_persistent().unwrap();
    tansu.create_topic("events", 2).unwrap();
    let pgw = Pushgateway::start(&["--push.disable-consistency-check"]).unwrap();
    let args: Vec<String> = [
        "--brokers",
        &tansu.bootstrap(),
        "--group-id",
        "restart",
        "--instance",
        "r1",
        "--pushgateway-url",
        &pgw.url(),
        "--push-interval",
        "1s",
        "--prune-after",
        "0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut collector = Collector::start(&args);

    let stop = Arc::new(AtomicBool::new(false));
    let producer = load(tansu.bootstrap(), Arc::clone(&stop));
    // The broker goes away in the middle of the load.
    let applied = r#"whisk_collector_events_total{type="activation"}"#;
    wait_for(Duration::from_secs(60), || {
        (counter(&collector, applied) >= 2000.0).then_some(())
    })
    .unwrap_or_else(|| panic!("nothing consumed\n{}", collector.log()));
    let errors_before = kafka_errors(&collector);
    tansu.stop();
    let at_stop = counter(&collector, applied);
    // Wait on the collector noticing the outage.
    wait_for(Duration::from_secs(60), || {
        (kafka_errors(&collector) > errors_before).then_some(())
    })
    .unwrap_or_else(|| panic!("outage not noticed\n{}", collector.log()));
    assert!(
        collector.child.try_wait().unwrap().is_none(),
        "the collector exited during the outage:\n{}",
        collector.log()
    );

    tansu.start_again().unwrap();
    // The load goes on until the collector has consumed well past the outage.
    wait_for(Duration::from_secs(120), || {
        (counter(&collector, applied) >= at_stop + 4000.0).then_some(())
    })
    .unwrap_or_else(|| panic!("not resumed after the restart\n{}", collector.log()));
    stop.store(true, Ordering::SeqCst);
    producer.join().unwrap();
    let produced = stored(&tansu.bootstrap());
    let reached = wait_for(Duration::from_secs(120), || {
        (pushed_total(&pgw) >= produced as f64).then_some(())
    });
    assert!(
        reached.is_some(),
        "pushed {} of {produced} after the restart\n{}",
        pushed_total(&pgw),
        collector.log()
    );
    // Two more pushes: nothing further arrives (no event counted twice).
    let pushes = counter(&collector, r#"whisk_collector_pushes_total{result="ok"}"#);
    wait_for(Duration::from_secs(60), || {
        (counter(&collector, r#"whisk_collector_pushes_total{result="ok"}"#) >= pushes + 2.0)
            .then_some(())
    })
    .expect("the collector keeps pushing");
    assert_eq!(pushed_total(&pgw), produced as f64);
    assert_eq!(counter(&collector, applied), produced as f64);
    assert!(collector.child.try_wait().unwrap().is_none());
    eprintln!(
        "N = {produced}; applied when the broker stopped: {at_stop}; kafka errors counted: {}",
        kafka_errors(&collector)
    );
}
