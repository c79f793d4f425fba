//! `whisk-emulator`: runs a load against action executables like an OpenWhisk invoker (events to
//! Kafka, metrics from the actions to a Pushgateway or a whisk-gateway, optionally with the
//! controller's `GET /api/v1/namespaces` for the API keys it hands the actions) with a live table.
// Product code: no function over 100 lines (clippy.toml); tests and benches are exempt.
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde_json::Value;
use whisk_emulator::controller::{Controller, new_api_key};
use whisk_emulator::{
    ActionSpec, EventSink, Invoker, InvokerConfig, KafkaSink, LoadPlan, LoadSpec, MemorySink,
    SequenceSpec, example_params, run_plan, table,
};
use whisk_grouping::parse_duration;

#[derive(Debug, Parser)]
#[command(
    name = "whisk-emulator",
    version,
    about = "An OpenWhisk invoker emulator"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run a load against action executables, printing a live per-action table.
    Run(Box<RunArgs>),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// An action: NAME=PATH (NAME is `action` in --namespace, or `ns/action`, `ns/pkg/action`).
    #[arg(long = "action", value_name = "NAME=PATH", required = true)]
    actions: Vec<String>,
    /// A sequence of the actions: NAME=ACTION,ACTION,… (repeatable). Its name can be used in
    /// --mix and --params like an action's; its components' events carry causedBy=sequence.
    #[arg(long = "sequence", value_name = "NAME=ACTIONS")]
    sequences: Vec<String>,
    /// Namespace for action names given without one.
    #[arg(long, default_value = "guest")]
    namespace: String,
    /// Kafka bootstrap servers.
    #[arg(long, env = "KAFKA_HOSTS", default_value = "127.0.0.1:9092")]
    brokers: String,
    /// The topic is `<prefix>events`.
    #[arg(long, default_value = "")]
    topic_prefix: String,
    /// librdkafka property for the producer (repeatable).
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    kafka_properties: Vec<String>,
    /// Keep events in memory instead of producing them to Kafka.
    #[arg(long)]
    no_kafka: bool,
    /// Passed to every container as WHISK_METRICS_PUSHGATEWAY_URL (a Pushgateway, or a
    /// whisk-gateway in front of them).
    #[arg(long)]
    pushgateway_url: Option<String>,
    /// Serve the OpenWhisk controller's `GET /api/v1/namespaces` and the activation records
    /// (`GET /api/v1/namespaces/_/activations/ID`, the last 10 000 activations, what the
    /// dashboards' exemplar links open) on 127.0.0.1:PORT (0: any free port) for a fresh
    /// API key per namespace of the actions (printed at start), and hand each activation its
    /// namespace's key as `__OW_API_KEY`, as the invoker does: what `whisk-gateway
    /// --openwhisk-api-host http://127.0.0.1:PORT` authenticates the pushes against (with
    /// `--init-param WHISK_METRICS_AUTH=api-key`).
    #[arg(long, value_name = "PORT")]
    controller_port: Option<u16>,
    /// Extra init parameter for every container (repeatable).
    #[arg(long = "init-param", value_name = "KEY=VALUE")]
    init_params: Vec<String>,
    /// Steady activations per second.
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// How long to generate load (250ms, 15s, 15m, 1h or seconds).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// A burst every this long.
    #[arg(long, value_parser = parse_duration)]
    burst_every: Option<Duration>,
    /// Requests per burst.
    #[arg(long, default_value_t = 20)]
    burst_size: usize,
    /// Weights, e.g. hello=3,orders=2,flaky=1 (default: equal).
    #[arg(long, value_delimiter = ',', value_name = "NAME=WEIGHT")]
    mix: Vec<String>,
    /// Parameters for an action: NAME=JSON, an object or an array of objects to pick from
    /// (repeatable). Default: choices that exercise hello, orders and flaky; `{}` otherwise.
    #[arg(long = "params", value_name = "NAME=JSON")]
    params: Vec<String>,
    /// Idle time before a container is frozen (SIGSTOP).
    #[arg(long, default_value = "50ms", value_parser = parse_duration)]
    pause_grace: Duration,
    /// Idle time before a container is removed (SIGKILL).
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    idle_timeout: Duration,
    /// Most containers per action.
    #[arg(long, default_value_t = 4)]
    max_containers: usize,
    /// In-flight activations allowed per namespace (beyond: ConcurrentRateLimit).
    #[arg(long, default_value_t = 100)]
    namespace_limit: usize,
    /// Do not emit a ConcurrentInvocations Metric event per accepted activation (the FPC
    /// scheduler never does; the old load balancer does).
    #[arg(long)]
    no_concurrent_invocations: bool,
    /// Action time limit.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    timeout: Duration,
    /// Time limit of one action: NAME=DURATION (repeatable).
    #[arg(long = "action-timeout", value_name = "NAME=DURATION")]
    action_timeouts: Vec<String>,
    /// Run the proxy as with OW_WAIT_FOR_ACK: each action must write {"ok":true} on fd 3 at
    /// start.
    #[arg(long)]
    wait_for_ack: bool,
    /// Run containers as plain processes, without a memory cgroup each.
    #[arg(long)]
    no_cgroups: bool,
    /// Memory limit (MB): reported in the events and set on each container's cgroup.
    #[arg(long, default_value_t = 256)]
    memory: u32,
    /// Runtime kind reported in the events.
    #[arg(long, default_value = "rust:1.34")]
    kind: String,
    /// N of the events' source `invoker<N>`.
    #[arg(long, default_value_t = 0)]
    invoker_id: u32,
    /// Worker threads (most requests in flight).
    #[arg(long, default_value_t = 64)]
    workers: usize,
    /// Seed of the load plan.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print only the summary, not the live table.
    #[arg(long)]
    quiet: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Run(args) => run(*args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("whisk-emulator: {e}");
            ExitCode::FAILURE
        }
    }
}

fn split_kv<'a>(s: &'a str, what: &str) -> Result<(&'a str, &'a str), String> {
    s.split_once('=')
        .ok_or_else(|| format!("{what} {s:?} must be KEY=VALUE"))
}

impl RunArgs {
    /// `name` with the default namespace unless it names one (`ns/action`); no leading slash.
    fn qualify(&self, name: &str) -> String {
        let name = name.trim_start_matches('/');
        if name.contains('/') {
            name.to_string()
        } else {
            format!("{}/{name}", self.namespace)
        }
    }

    /// The actions (`--action`, with `--action-timeout`) and the sequences (`--sequence`).
    fn actions(&self) -> Result<(Vec<ActionSpec>, Vec<SequenceSpec>), String> {
        let timeouts: BTreeMap<String, Duration> = self
            .action_timeouts
            .iter()
            .map(|s| {
                let (k, v) = split_kv(s, "--action-timeout")?;
                Ok((self.qualify(k), parse_duration(v)?))
            })
            .collect::<Result<_, String>>()?;
        let mut specs = Vec::new();
        for a in &self.actions {
            let (name, path) = split_kv(a, "--action")?;
            let name = self.qualify(name);
            let timeout = timeouts.get(&name).copied().unwrap_or(self.timeout);
            specs.push(
                ActionSpec::new(&name, path)
                    .with_timeout(timeout)
                    .with_max_containers(self.max_containers)
                    .with_memory_mb(self.memory),
            );
        }
        let sequences = self
            .sequences
            .iter()
            .map(|s| SequenceSpec::parse(s, &self.namespace).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, String>>()?;
        Ok((specs, sequences))
    }

    /// The load over `names` (the actions and sequences): rate, bursts, `--mix`, `--params`.
    fn load(&self, names: &[String]) -> Result<LoadSpec, String> {
        let mut spec = LoadSpec::new(names);
        spec.rate = self.rate;
        spec.duration = self.duration;
        spec.burst_every = self.burst_every;
        spec.burst_size = self.burst_size;
        spec.seed = self.seed;
        if !self.mix.is_empty() {
            spec.mix = self
                .mix
                .iter()
                .map(|m| {
                    let (k, v) = split_kv(m, "--mix")?;
                    let w = v
                        .parse::<u32>()
                        .map_err(|_| format!("--mix weight {v:?} must be a whole number"))?;
                    Ok((self.qualify(k), w))
                })
                .collect::<Result<_, String>>()?;
        }
        for n in names {
            spec.params.insert(n.clone(), example_params(n));
        }
        for p in &self.params {
            let (k, v) = split_kv(p, "--params")?;
            let json: Value =
                serde_json::from_str(v).map_err(|e| format!("--params {k}: invalid JSON: {e}"))?;
            let choices = match json {
                Value::Array(items) => items,
                other => vec![other],
            };
            spec.params.insert(self.qualify(k), choices);
        }
        for (m, _) in &spec.mix {
            if !names.contains(m) {
                return Err(format!(
                    "--mix names {m}, which is not an --action or a --sequence"
                ));
            }
        }
        Ok(spec)
    }

    /// The invoker's settings (`--controller-port` adds the API keys, [`start_controller`]).
    fn invoker_config(&self) -> Result<InvokerConfig, String> {
        let mut config = InvokerConfig::new()
            .with_pause_grace(self.pause_grace)
            .with_idle_timeout(self.idle_timeout)
            .with_namespace_concurrency(self.namespace_limit)
            .with_invoker_id(self.invoker_id)
            .with_kind(&self.kind)
            .with_concurrent_invocations_events(!self.no_concurrent_invocations)
            .with_wait_for_ack(self.wait_for_ack)
            .with_cgroups(!self.no_cgroups);
        if let Some(url) = &self.pushgateway_url {
            config = config.with_pushgateway_url(url);
        }
        for p in &self.init_params {
            let (k, v) = split_kv(p, "--init-param")?;
            config = config.with_init_param(k, v);
        }
        Ok(config)
    }

    /// The Kafka sink of the events topic; `None` with `--no-kafka`.
    fn kafka_sink(&self, topic: &str) -> Result<Option<Arc<KafkaSink>>, String> {
        if self.no_kafka {
            return Ok(None);
        }
        let props = self
            .kafka_properties
            .iter()
            .map(|p| split_kv(p, "-X").map(|(k, v)| (k.to_string(), v.to_string())))
            .collect::<Result<Vec<_>, String>>()?;
        let kafka = KafkaSink::new(&self.brokers, topic, &props).map_err(|e| e.to_string())?;
        Ok(Some(Arc::new(kafka)))
    }
}

/// The controller's `GET /api/v1/namespaces` on `port`, with a fresh API key for each namespace
/// of `specs`, which `config` hands to that namespace's activations. Dropping it stops it.
fn start_controller(
    port: u16,
    specs: &[ActionSpec],
    config: InvokerConfig,
) -> Result<(Controller, InvokerConfig), String> {
    let mut config = config;
    let mut namespaces: Vec<&str> = specs.iter().map(ActionSpec::namespace).collect();
    namespaces.sort_unstable();
    namespaces.dedup();
    let keys: Vec<(String, Vec<String>)> = namespaces
        .iter()
        .map(|ns| (new_api_key(), vec![(*ns).to_string()]))
        .collect();
    for (key, ns) in &keys {
        config = config.with_api_key(&ns[0], key);
    }
    let controller = Controller::start_on(port, &keys)
        .map_err(|e| format!("--controller-port {port}: cannot listen: {e}"))?;
    println!(
        "whisk-emulator: controller GET {}/api/v1/namespaces (and …/activations/{{id}}) knows one API key for each of {}",
        controller.url(),
        namespaces.join(", ")
    );
    for (key, ns) in &keys {
        println!("whisk-emulator: API key of namespace {}: {key}", ns[0]);
    }
    Ok((controller, config))
}

fn run(args: RunArgs) -> Result<ExitCode, String> {
    let (specs, sequences) = args.actions()?;
    let mut names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
    names.extend(sequences.iter().map(|s| s.name.clone()));
    let spec = args.load(&names)?;
    let config = args.invoker_config()?;
    // The controller is kept alive until the load ends: dropping it stops the endpoint.
    let (controller, config) = match args.controller_port {
        Some(port) => {
            let (controller, config) = start_controller(port, &specs, config)?;
            (Some(controller), config)
        }
        None => (None, config),
    };
    let topic = format!("{}events", args.topic_prefix);
    let kafka = args.kafka_sink(&topic)?;
    let sink: Arc<dyn EventSink> = match &kafka {
        Some(k) => k.clone(),
        None => Arc::new(MemorySink::default()),
    };
    // With a controller, its activation records API answers for every activation run here.
    let sink = match &controller {
        Some(c) => c.recording(sink),
        None => sink,
    };
    let mut invoker =
        Invoker::with_sequences(config, sink, specs, sequences).map_err(|e| e.to_string())?;

    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .map_err(|e| format!("cannot install the Ctrl-C handler: {e}"))?;

    let plan = LoadPlan::generate(&spec);
    let tty = std::io::stdout().is_terminal();
    println!(
        "whisk-emulator: {} requests over {:.0}s to {} (events → {}), Ctrl-C stops",
        plan.requests.len(),
        spec.duration.as_secs_f64(),
        names.join(", "),
        if args.no_kafka {
            "memory".to_string()
        } else {
            format!("{} topic {topic}", args.brokers)
        },
    );
    let summary = run_plan(&invoker, &plan, args.workers, &stop, |p| {
        if args.quiet {
            return;
        }
        let mut out = String::new();
        if tty {
            out.push_str("\x1b[2J\x1b[H");
        }
        out.push_str(&format!(
            "t={:>5.1}s  submitted {}/{}  answered {}\n",
            p.elapsed.as_secs_f64(),
            p.submitted,
            p.planned,
            p.answered
        ));
        out.push_str(&table::render(&invoker.stats()));
        println!("{out}");
    });
    invoker.shutdown();
    println!("{}", table::render(&invoker.stats()));
    print!("{}", summary.render());
    match kafka {
        Some(k) => delivered_all(&k),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// Waits (bounded) for the events to be delivered and prints the counts; failure unless every
/// published event was delivered.
fn delivered_all(kafka: &KafkaSink) -> Result<ExitCode, String> {
    let d = kafka
        .flush(Duration::from_secs(30))
        .map_err(|e| e.to_string())?;
    println!(
        "events: {} published, {} delivered, {} failed",
        d.published, d.delivered, d.failed
    );
    if d.failed > 0 || d.delivered < d.published {
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
