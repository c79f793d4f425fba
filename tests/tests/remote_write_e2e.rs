//! Remote write end to end (docs/design.md "Remote-write backend"), on real services only.
//!
//! One load through the emulator reaches three stores at once: the example actions (SDK) push
//! to testkit's `PushTee`, which hands every push to three real `whisk-gateway`s — one in front
//! of a Pushgateway scraped by Prometheus (`honor_labels`, the shipped scrape config), one
//! writing to Debian's Prometheus 2.42 as a remote-write receiver, one writing to
//! VictoriaMetrics 1.79 — and three `whisk-collector`s (one consumer group each) read the
//! emulator's events from tansu and write the platform series to the same three stores. So the
//! same containers, with the same instance ids and values, land in both modes:
//!
//! - every activation is counted exactly once in each receiver, custom and platform metrics
//!   both there, every per-container series carries its container's instance id;
//! - the two modes agree, evaluated at one fixed time: instant values exactly, rates within
//!   the tolerance [`rates_agree`] states.
//!
//! And the dashboards' "containers alive" window query on remote-written samples whose
//! timestamps the test chooses (a container paused past the 5-minute lookback still counts).
//!
//! Prerequisites: as e2e.rs (common/mod.rs), plus victoria-metrics installed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{NAMESPACE, action_exec, collector_bin, eventually, gateway_bin};
use serde_json::{Value, json};
use whisk_emulator::controller::{Controller, new_api_key};
use whisk_emulator::{
    ActionSpec, Invocation, Invoker, InvokerConfig, KafkaSink, LoadPlan, LoadSpec, run_plan,
};
use whisk_testkit::{
    Prometheus, PushTee, Pushgateway, QueryApi, ServiceProcess, Tansu, VictoriaMetrics, free_port,
    http_get,
};
use whisk_tests::dashboards::{
    Vars, load_dashboards, prometheus_config_for, repo_dashboards_dir, substitute,
    with_gateway_target,
};

/// How long the stores may take to show what was acknowledged (VictoriaMetrics shows a new
/// series after ~10 s; a loaded machine needs more).
const SETTLE: Duration = Duration::from_secs(90);

/// Containers each action keeps (all started before the measured load).
const CONTAINERS: u64 = 2;

const SDK: &str = "job=\"openwhisk_actions\",namespace=\"guest\"";
const PLATFORM: &str = "job=\"openwhisk_platform\"";

/// Seconds since the Unix epoch.
fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// One store a push reaches, with how to name it in messages.
struct Store<'a> {
    name: &'static str,
    db: &'a dyn QueryApi,
}

/// An instant query at `t` as `label value → value` ("" when the label is absent).
fn by(store: &Store<'_>, query: &str, label: &str, t: f64) -> BTreeMap<String, f64> {
    store
        .db
        .query_at(query, t)
        .unwrap_or_else(|e| panic!("{}: {query}: {e}", store.name))
        .into_iter()
        .map(|s| {
            let key = s["metric"][label].as_str().unwrap_or("").to_string();
            let v = s["value"][1].as_str().and_then(|v| v.parse().ok());
            (key, v.unwrap_or(f64::NAN))
        })
        .collect()
}

/// The single value of an instant query at `t` (0 when empty).
fn one(store: &Store<'_>, query: &str, t: f64) -> f64 {
    by(store, query, "", t).values().sum()
}

fn service(name: &str, exe: &std::path::Path, args: Vec<String>, port: u16) -> ServiceProcess {
    let mut p = ServiceProcess::spawn(name, &exe.to_string_lossy(), &args, "cargo build")
        .unwrap_or_else(|e| panic!("start {name}: {e}"));
    let ready = format!("http://127.0.0.1:{port}/readyz");
    p.wait_ready(Duration::from_secs(60), || http_get(&ready).is_ok())
        .unwrap_or_else(|e| panic!("{name} ready: {e}"));
    p
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_string()).collect()
}

fn remote_write(url: &str) -> Vec<String> {
    strings(&["--remote-write-url", url])
}

/// The stack: tansu, the controller endpoint, the three stores, a gateway and a collector in
/// front of each, the tee the actions push to. Dropped in field order: clients first.
struct Modes {
    tee: PushTee,
    collectors: Vec<ServiceProcess>,
    gateways: Vec<ServiceProcess>,
    scraper: Prometheus,
    receiver: Prometheus,
    vm: VictoriaMetrics,
    _pushgateway: Pushgateway,
    _controller: Controller,
    guest_key: String,
    tansu: Tansu,
}

impl Modes {
    fn start() -> Self {
        let tansu = Tansu::start().expect("start tansu");
        tansu.create_topic("events", 2).expect("create events");
        let pushgateway = Pushgateway::start(&["--push.disable-consistency-check"]).unwrap();
        let receiver = Prometheus::start_receiver(&[]).expect("start the Prometheus receiver");
        let vm = VictoriaMetrics::start().expect("start VictoriaMetrics");
        let guest_key = new_api_key();
        let controller = Controller::start(&[(guest_key.clone(), vec![NAMESPACE.to_string()])])
            .expect("start the controller endpoint");
        let backends: [(&str, Vec<String>); 3] = [
            ("pgw", strings(&["--pushgateway-url", &pushgateway.url()])),
            ("prom", remote_write(&receiver.write_url())),
            ("vm", remote_write(&vm.write_url())),
        ];
        let mut gateways = Vec::new();
        let mut gateway_urls = Vec::new();
        let mut collectors = Vec::new();
        let mut collector_ports = Vec::new();
        for (name, backend) in &backends {
            let port = free_port();
            let mut args = strings(&[
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--openwhisk-api-host",
                &controller.url(),
                "--auth",
                "api-key",
            ]);
            args.extend(backend.iter().cloned());
            if *name != "pgw" {
                // Within the SDK's timeout here (10 s, [`Modes::invoker`]), not the deploy's
                // 200 ms: a write to a receiver on a loaded shared machine may take longer,
                // and the point here is exact totals.
                args.extend(strings(&["--remote-write-retry-bound", "5s"]));
            }
            gateways.push(service(
                &format!("gateway-{name}"),
                &gateway_bin(),
                args,
                port,
            ));
            gateway_urls.push(format!("http://127.0.0.1:{port}"));
            let port = free_port();
            let mut args = strings(&[
                "--brokers",
                &tansu.bootstrap(),
                "--group-id",
                &format!("whisk-collector-{name}"),
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--push-interval",
                "1s",
                "--instance",
                "replica0",
            ]);
            args.extend(backend.iter().cloned());
            if *name == "pgw" {
                args.extend(strings(&["--prune-after", "0"]));
            }
            collectors.push(service(
                &format!("collector-{name}"),
                &collector_bin(),
                args,
                port,
            ));
            collector_ports.push(port);
        }
        // The Pushgateway mode as shipped: dashboards/prometheus/prometheus.yml, scraping every
        // second so the test does not wait for 5 s scrapes.
        let config = prometheus_config_for(
            &format!("127.0.0.1:{}", pushgateway.port()),
            &format!("127.0.0.1:{}", collector_ports[0]),
        )
        .and_then(|c| with_gateway_target(&c, &gateway_urls[0]))
        .expect("render dashboards/prometheus/prometheus.yml")
        .replace("scrape_interval: 5s", "scrape_interval: 1s")
        .replace("scrape_timeout: 4s", "scrape_timeout: 1s");
        let scraper = Prometheus::start(&config).expect("start the scraping Prometheus");
        let tee = PushTee::start(&gateway_urls).expect("start the tee");
        Self {
            tee,
            collectors,
            gateways,
            scraper,
            receiver,
            vm,
            _pushgateway: pushgateway,
            _controller: controller,
            guest_key,
            tansu,
        }
    }

    fn stores(&self) -> [Store<'_>; 3] {
        [
            Store {
                name: "Pushgateway scraped by Prometheus",
                db: &self.scraper,
            },
            Store {
                name: "Prometheus receiver",
                db: &self.receiver,
            },
            Store {
                name: "VictoriaMetrics",
                db: &self.vm,
            },
        ]
    }

    fn logs(&self) -> String {
        self.gateways
            .iter()
            .chain(&self.collectors)
            .map(ServiceProcess::log_tail)
            .collect::<Vec<_>>()
            .join("\n---\n")
    }

    /// Invoker whose actions push to the tee. Containers stay (10 min idle timeout) so that
    /// every series exists before the measured load; pushes before the result and a generous
    /// SDK timeout (three gateways answer each push, on a shared machine) so none is lost.
    fn invoker(&self, sink: Arc<KafkaSink>) -> Invoker {
        let config = InvokerConfig::new()
            .with_pushgateway_url(&self.tee.url())
            .with_init_param("WHISK_METRICS_AUTH", "api-key")
            .with_api_key(NAMESPACE, &self.guest_key)
            .with_pause_grace(Duration::from_millis(50))
            .with_idle_timeout(Duration::from_secs(600))
            .with_namespace_concurrency(1000)
            .with_init_param("WHISK_METRICS_PUSH_MODE", "before-result")
            .with_init_param("WHISK_METRICS_TIMEOUT_MS", "10000");
        let max = CONTAINERS as usize;
        let specs = vec![
            ActionSpec::new("/guest/hello", action_exec("hello")).with_max_containers(max),
            ActionSpec::new("/guest/orders", action_exec("orders")).with_max_containers(max),
            ActionSpec::new("/guest/flaky", action_exec("flaky")).with_max_containers(max),
        ];
        Invoker::new(config, sink, specs).expect("invoker")
    }
}

/// What the receivers must hold, counted from the activations the emulator answered.
#[derive(Debug, Default, Clone, PartialEq)]
struct Expected {
    platform: BTreeMap<String, f64>,
    sdk: BTreeMap<String, f64>,
    errors: f64,
    greetings: f64,
    orders: BTreeMap<String, f64>,
}

impl Expected {
    fn count(&mut self, action: &str, params: &Value, status_code: u8) {
        let a = action.rsplit('/').next().unwrap_or(action).to_string();
        *self.platform.entry(a.clone()).or_default() += 1.0;
        *self.sdk.entry(a.clone()).or_default() += 1.0;
        if status_code != 0 {
            self.errors += 1.0;
        }
        match a.as_str() {
            "hello" => self.greetings += 1.0,
            "orders" => {
                let region = params["region"].as_str().unwrap_or("eu").to_string();
                *self.orders.entry(region).or_default() += 1.0;
            }
            _ => {}
        }
    }

    fn total(&self) -> f64 {
        self.platform.values().sum()
    }
}

/// Starts [`CONTAINERS`] containers of every action (concurrent invocations until each action
/// has them; flaky sleeps so its two run at once) and counts what they served.
fn warm_up(inv: &Invoker, e: &mut Expected) {
    let actions = ["guest/hello", "guest/orders", "guest/flaky"];
    let params = |a: &str| match a {
        "guest/orders" => json!({"items": 1, "value": 5.0, "region": "eu"}),
        "guest/flaky" => json!({"mode": "sleep", "sleep_ms": 300}),
        _ => json!({"name": "warm"}),
    };
    for _ in 0..20 {
        let missing: Vec<&str> = actions
            .iter()
            .copied()
            .filter(|a| {
                !inv.stats()
                    .iter()
                    .any(|s| s.action == *a && s.containers_created >= CONTAINERS)
            })
            .collect();
        if missing.is_empty() {
            return;
        }
        let answers: Vec<(&str, u8)> = std::thread::scope(|s| {
            let hs: Vec<_> = missing
                .iter()
                .flat_map(|a| [*a; 3])
                .map(|a| {
                    s.spawn(move || match inv.invoke(a, params(a), Instant::now()) {
                        Ok(Invocation::Completed(r)) => (a, r.status_code),
                        other => panic!("{a}: {other:?}"),
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().expect("join")).collect()
        });
        for (a, code) in answers {
            e.count(a, &params(a), code);
        }
    }
    panic!(
        "not every action got {CONTAINERS} containers: {:?}",
        inv.stats()
    );
}

fn load_spec() -> LoadSpec {
    let actions = [
        "guest/hello".to_string(),
        "guest/orders".into(),
        "guest/flaky".into(),
    ];
    let mut spec = LoadSpec::new(&actions);
    spec.rate = 25.0;
    spec.duration = Duration::from_secs(10);
    spec.burst_every = Some(Duration::from_secs(3));
    spec.burst_size = 10;
    spec.mix = vec![
        ("guest/hello".into(), 3),
        ("guest/orders".into(), 2),
        ("guest/flaky".into(), 2),
    ];
    spec.params
        .insert("guest/hello".into(), vec![json!({"name": "rw"})]);
    spec.params.insert(
        "guest/orders".into(),
        vec![
            json!({"items": 1, "value": 5.0, "region": "eu"}),
            json!({"items": 4, "value": 120.5, "region": "us"}),
        ],
    );
    spec.params.insert(
        "guest/flaky".into(),
        vec![json!({"mode": "ok"}), json!({"mode": "error"})],
    );
    spec.seed = 22;
    spec
}

/// Waits until every store holds `e`'s platform and SDK totals (at the present time).
fn settled(m: &Modes, e: &Expected, when: &str) {
    let want = (e.total(), e.total());
    for store in m.stores() {
        let got = eventually(SETTLE, &want, || {
            let t = now();
            (
                one(
                    &store,
                    &format!("sum(openwhisk_action_activations_total{{{PLATFORM}}})"),
                    t,
                ),
                one(&store, &format!("sum(whisk_activations_total{{{SDK}}})"), t),
            )
        });
        assert_eq!(
            got,
            want,
            "{when}: (platform, SDK) activations in the {}; logs:\n{}",
            store.name,
            m.logs()
        );
    }
}

/// Item by item in every store at `t`: every activation counted once, custom and platform
/// metrics, one instance id per container on every per-container series, the same instance ids
/// in every store.
fn counted_exactly_once(m: &Modes, e: &Expected, t: f64) {
    let mut instance_sets = Vec::new();
    for store in m.stores() {
        let s = &store;
        let platform = by(
            s,
            &format!("sum by (action) (openwhisk_action_activations_total{{{PLATFORM}}})"),
            "action",
            t,
        );
        assert_eq!(platform, e.platform, "{}: platform activations", s.name);
        let sdk = by(
            s,
            &format!("sum by (action) (whisk_activations_total{{{SDK}}})"),
            "action",
            t,
        );
        assert_eq!(sdk, e.sdk, "{}: SDK activations", s.name);
        let errors = one(
            s,
            &format!("sum(whisk_activations_total{{{SDK},status!=\"success\"}})"),
            t,
        );
        assert_eq!(errors, e.errors, "{}: SDK errors", s.name);
        let greetings = one(s, "sum(hello_greetings_total)", t);
        assert_eq!(greetings, e.greetings, "{}: custom counter", s.name);
        let orders = by(s, "sum by (region) (orders_placed_total)", "region", t);
        assert_eq!(orders, e.orders, "{}: custom counter by label", s.name);
        let info = by(
            s,
            &format!("count by (instance) (whisk_container_info{{{SDK}}})"),
            "instance",
            t,
        );
        assert_eq!(
            info.len() as u64,
            3 * CONTAINERS,
            "{}: one group per container: {info:?}",
            s.name
        );
        assert!(
            !info.contains_key("") && info.values().all(|n| *n == 1.0),
            "{}: {info:?}",
            s.name
        );
        // Every SDK series (custom ones included) carries one of those instance ids.
        let series = by(
            s,
            &format!("count by (instance) ({{{SDK},__name__!~\"push_.*\"}})"),
            "instance",
            t,
        );
        assert_eq!(
            series.keys().collect::<Vec<_>>(),
            info.keys().collect::<Vec<_>>(),
            "{}: instance ids of the SDK series",
            s.name
        );
        let push_time = one(s, &format!("count(push_time_seconds{{{PLATFORM}}})"), t);
        assert_eq!(push_time, 1.0, "{}: the platform group's push time", s.name);
        instance_sets.push(info.into_keys().collect::<Vec<_>>());
    }
    assert!(
        instance_sets.windows(2).all(|w| w[0] == w[1]),
        "the same containers in every store: {instance_sets:?}"
    );
}

/// The instant values the dashboards read agree exactly between the modes at `t`: memory per
/// container (the last push of each), containers alive (the dashboards' window query).
fn instant_values_agree(m: &Modes, t: f64) {
    let stores = m.stores();
    let memory = format!("whisk_container_memory_bytes{{{SDK}}}");
    let alive = alive_queries();
    let reference = by(&stores[0], &memory, "instance", t);
    assert_eq!(reference.len() as u64, 3 * CONTAINERS, "{reference:?}");
    for store in &stores {
        assert_eq!(
            by(store, &memory, "instance", t),
            reference,
            "{}: memory per container",
            store.name
        );
        for q in &alive {
            assert_eq!(
                one(store, q, t),
                CONTAINERS as f64,
                "{}: hello's containers alive: {q}",
                store.name
            );
        }
    }
}

/// Rates over `[from, t]` evaluated at `t` in the Pushgateway mode and the Prometheus
/// receiver (same engine, same extrapolation rules):
///
/// |scraped − written| × window ≤ k + 10 % of the larger increase, where k is the number of
/// series of the selector that increased in the window. Why: a remote-written series has
/// samples only at pushes, so a series idle at the window's start has its last sample before
/// the window and `increase()` cannot see its first increment in it (≤ 1 per series: each push
/// follows one activation); the scraped series has a sample every second. Both extrapolate to
/// the window's ends, by half an average sample interval at most for the written series
/// (≥ 10 pushes per container here) and by at most one scrape interval for the scraped one.
fn rates_agree(m: &Modes, from: f64, t: f64) {
    // Whole seconds, starting at or before `from`: no activation of the load before it.
    let window = (t - from).ceil();
    let stores = m.stores();
    let selectors = [
        format!("openwhisk_action_activations_total{{{PLATFORM}}}"),
        format!("openwhisk_action_status{{{PLATFORM},status!=\"success\"}}"),
        format!("whisk_activations_total{{{SDK}}}"),
        format!("whisk_activations_total{{{SDK},status!=\"success\"}}"),
        "hello_greetings_total".to_string(),
        "orders_placed_total".to_string(),
    ];
    for sel in selectors {
        let rate = format!("sum(rate({sel}[{window}s]))");
        let scraped = one(&stores[0], &rate, t);
        let written = one(&stores[1], &rate, t);
        let k = one(
            &stores[0],
            &format!("count(increase({sel}[{window}s]) > 0)"),
            t,
        );
        let allowed = k + 0.10 * scraped.max(written) * window;
        let diff = (scraped - written).abs() * window;
        println!(
            "{rate} at {t}: scraped {scraped:.4}/s, written {written:.4}/s, difference {diff:.2} \
             increments, allowed {allowed:.2} (k = {k})"
        );
        assert!(scraped > 0.0, "{rate}: nothing in the window");
        assert!(
            diff <= allowed,
            "{rate}: scraped {scraped}/s vs remote-written {written}/s over {window} s"
        );
    }
}

#[test]
fn one_load_is_counted_exactly_once_in_both_receivers_and_agrees_with_pushgateway_mode() {
    let m = Modes::start();
    let sink = Arc::new(KafkaSink::new(&m.tansu.bootstrap(), "events", &[]).expect("producer"));
    let mut inv = m.invoker(Arc::clone(&sink));
    let mut e = Expected::default();
    warm_up(&inv, &mut e);
    settled(&m, &e, "after the warm-up");
    // The window starts after every series exists in every store and two more scrapes.
    std::thread::sleep(Duration::from_secs(2));
    let from = now() - 1.0;
    let plan = LoadPlan::generate(&load_spec());
    let summary = run_plan(&inv, &plan, 32, &AtomicBool::new(false), |_| {});
    assert_eq!(
        (summary.completed as usize, summary.rejected, summary.failed),
        (plan.requests.len(), 0, 0),
        "{}",
        summary.render()
    );
    for (i, rec) in &summary.records {
        e.count(&rec.action, &plan.requests[*i].params, rec.status_code);
    }
    let created: u64 = inv.stats().iter().map(|s| s.containers_created).sum();
    assert_eq!(created, 3 * CONTAINERS, "{:?}", inv.stats());
    settled(&m, &e, "after the load");
    // Fixed evaluation time: after every store holds everything, a few scrapes later.
    std::thread::sleep(Duration::from_secs(3));
    let t = now().floor();
    assert!(m.tee.failures().is_empty(), "{:?}", m.tee.failures());
    counted_exactly_once(&m, &e, t);
    instant_values_agree(&m, t);
    rates_agree(&m, from, t);
    inv.shutdown();
    let delivery = sink.flush(Duration::from_secs(10)).expect("flush");
    assert_eq!(delivery.failed, 0);
    println!(
        "{} activations, {} pushes through the tee, window {:.0} s",
        e.total(),
        m.tee.requests(),
        t - from
    );
}

/// The dashboards' "containers alive" queries (every panel query over
/// `max_over_time(push_time_seconds…)`), for namespace `guest`, action `hello`.
fn alive_queries() -> Vec<String> {
    let vars = Vars::new()
        .with("namespace", "guest")
        .with("action", "hello");
    let dashboards = load_dashboards(&repo_dashboards_dir().join("grafana/dashboards")).unwrap();
    let queries: Vec<String> = dashboards
        .iter()
        .flat_map(|d| d.queries().unwrap())
        .filter(|q| {
            q.expr
                .contains("max_over_time(push_time_seconds{job=\"openwhisk_actions\"")
        })
        .map(|q| substitute(&q.expr, &vars).unwrap())
        .collect();
    assert!(
        queries.len() >= 3,
        "containers alive on the containers and action dashboards: {queries:?}"
    );
    queries
}

/// Writes the `push_time_seconds` a gateway writes for a group, at the timestamps (seconds)
/// given, with a stale marker at `stale` if any, to a remote-write receiver.
fn write_push_times(
    db: &dyn QueryApi,
    groups: &[(&str, &str, Vec<f64>, Option<f64>)],
) -> Result<(), String> {
    use whisk_remote_write::{Label, Sample, TimeSeries, WriteRequest};
    let timeseries = groups
        .iter()
        .map(|(instance, action, pushes, stale)| TimeSeries {
            labels: vec![
                Label::new("__name__", "push_time_seconds"),
                Label::new("action", *action),
                Label::new("instance", *instance),
                Label::new("job", "openwhisk_actions"),
                Label::new("namespace", "guest"),
            ],
            samples: pushes
                .iter()
                .map(|t| Sample {
                    value: *t,
                    timestamp: (*t * 1000.0) as i64,
                })
                .chain(stale.map(|t| Sample {
                    value: whisk_remote_write::STALE_NAN,
                    timestamp: (t * 1000.0) as i64,
                }))
                .collect(),
            exemplars: vec![],
        })
        .collect();
    let body = whisk_remote_write::encode(&WriteRequest { timeseries });
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut request = agent.post(db.write_url());
    for (n, v) in whisk_remote_write::HEADERS {
        request = request.header(n, v);
    }
    let mut answer = request.send(&body[..]).map_err(|e| e.to_string())?;
    let status = answer.status().as_u16();
    let text = answer.body_mut().read_to_string().unwrap_or_default();
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(format!("{status}: {text}"))
    }
}

/// The containers-alive queries on remote-written push times, at two fixed times: a container
/// whose last push is 7 min old (past the 5-minute lookback, inside OpenWhisk's 10-minute idle
/// timeout) is alive, one of 11 min is not, a DELETEd one (stale marker) counts until its last
/// push leaves the window, another action does not count.
/// Returns the first evaluation time.
fn containers_alive_on(store: &Store<'_>) -> f64 {
    let t = (now() - 900.0).floor();
    let every_minute = |from: f64, to: f64| {
        let mut v = Vec::new();
        let mut x = from;
        while x <= to {
            v.push(x);
            x += 60.0;
        }
        v
    };
    let groups = vec![
        ("fresh", "hello", every_minute(t - 900.0, t - 60.0), None),
        ("paused", "hello", every_minute(t - 1200.0, t - 420.0), None),
        ("gone", "hello", every_minute(t - 1500.0, t - 660.0), None),
        (
            "deleted",
            "hello",
            every_minute(t - 600.0, t - 180.0),
            Some(t - 170.0),
        ),
        ("other", "orders", every_minute(t - 600.0, t - 60.0), None),
    ];
    write_push_times(store.db, &groups).unwrap_or_else(|e| panic!("{}: {e}", store.name));
    for q in alive_queries() {
        // At t: fresh, paused, deleted. Five minutes later: fresh (6 min), deleted (8 min).
        for (at, want) in [(t, 3.0), (t + 300.0, 2.0)] {
            let got = eventually(SETTLE, &want, || one(store, &q, at));
            assert_eq!(got, want, "{} at t{:+}: {q}", store.name, at - t);
        }
    }
    t
}

#[test]
fn containers_alive_counts_a_container_paused_past_the_lookback_on_both_receivers() {
    let prom = Prometheus::start_receiver(&[]).expect("start the Prometheus receiver");
    let vm = VictoriaMetrics::start().expect("start VictoriaMetrics");
    let prom = Store {
        name: "Prometheus receiver",
        db: &prom,
    };
    let t = containers_alive_on(&prom);
    containers_alive_on(&Store {
        name: "VictoriaMetrics",
        db: &vm,
    });
    // Why a window: at the same time Prometheus's instant lookback (5 min) sees the fresh
    // container only (the paused one's last sample is older, the deleted one ended).
    let naive = "count(push_time_seconds{job=\"openwhisk_actions\",action=\"hello\"})";
    assert_eq!(
        one(&prom, naive, t),
        1.0,
        "{naive}: only the fresh container within the lookback"
    );
}
