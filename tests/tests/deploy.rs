//! Offline checks of `deploy/`: the kustomize manifests, the collector image and the drift
//! between them and the parts they deploy (collector flags, dashboards, scrape config).
//!
//! Needs `kubectl` (kustomize), `kubernetes-validate` (PyPI), `promtool` and whisk-collector and
//! whisk-gateway built with the tests (scripts/test.sh builds every binary first). A missing tool is
//! a failure that says how to get it, never a skipped check. The two image tests also need
//! `podman`: without it they fail under `CI=true` and skip elsewhere (`whisk_testkit::require`).

// Helpers outside #[test] fns panic on purpose: a failed expectation is the test's failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::Value;

/// Every kustomization that must render: the base and each directory under overlays/.
fn kustomization_dirs() -> Vec<PathBuf> {
    let k8s = root().join("deploy/kubernetes");
    let mut dirs = vec![k8s.join("base")];
    let mut overlays: Vec<PathBuf> = std::fs::read_dir(k8s.join("overlays"))
        .expect("deploy/kubernetes/overlays must exist")
        .map(|e| e.expect("readable overlays dir").path())
        .filter(|p| p.join("kustomization.yaml").is_file())
        .collect();
    overlays.sort();
    assert!(
        !overlays.is_empty(),
        "no overlay under deploy/kubernetes/overlays"
    );
    dirs.extend(overlays);
    dirs
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn rel(p: &Path) -> String {
    p.strip_prefix(root()).unwrap_or(p).display().to_string()
}

/// A rendered kustomization: its directory, the YAML text and the parsed documents.
struct Render {
    dir: PathBuf,
    yaml: String,
    docs: Vec<Value>,
}

impl Render {
    fn name(&self) -> String {
        rel(&self.dir)
    }

    fn of_kind<'a>(&'a self, kind: &str) -> impl Iterator<Item = &'a Value> + use<'a> {
        let kind = kind.to_owned();
        self.docs.iter().filter(move |d| d["kind"] == kind.as_str())
    }

    fn get(&self, kind: &str, name: &str) -> &Value {
        self.of_kind(kind)
            .find(|d| d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{}: no {kind} named {name}", self.name()))
    }

    fn collector_container(&self) -> &Value {
        self.container("whisk-collector", "collector")
    }

    fn gateway_container(&self) -> &Value {
        self.container("whisk-gateway", "gateway")
    }

    /// The container `name` of Deployment `deployment`.
    fn container(&self, deployment: &str, name: &str) -> &Value {
        let deploy = self.get("Deployment", deployment);
        deploy["spec"]["template"]["spec"]["containers"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["name"] == name))
            .unwrap_or_else(|| panic!("{}: {deployment} has no `{name}` container", self.name()))
    }
}

fn parse_docs(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| Value::deserialize(doc).expect("kustomize output is valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

fn kustomize(dir: &Path) -> Result<String, String> {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .map_err(|e| format!("cannot run `kubectl kustomize` ({e}); install kubectl"))?;
    if !out.status.success() {
        return Err(format!(
            "`kubectl kustomize {}` failed:\n{}",
            rel(dir),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    String::from_utf8(out.stdout).map_err(|e| format!("kustomize output is not UTF-8: {e}"))
}

fn renders() -> &'static [Render] {
    static RENDERS: OnceLock<Vec<Render>> = OnceLock::new();
    RENDERS.get_or_init(|| {
        kustomization_dirs()
            .into_iter()
            .map(|dir| {
                let yaml = kustomize(&dir).unwrap_or_else(|e| panic!("{e}"));
                let docs = parse_docs(&yaml);
                Render { dir, yaml, docs }
            })
            .collect()
    })
}

/// The overlay without Pushgateways (docs/design.md "Remote-write backend").
const REMOTE_WRITE_OVERLAY: &str = "deploy/kubernetes/overlays/remote-write";

/// Every render that runs Pushgateways (all but the remote-write overlay).
fn pushgateway_renders() -> impl Iterator<Item = &'static Render> {
    renders()
        .iter()
        .filter(|r| r.name() != REMOTE_WRITE_OVERLAY)
}

fn overlay(name: &str) -> &'static Render {
    renders()
        .iter()
        .find(|r| r.dir.ends_with(format!("overlays/{name}")))
        .unwrap_or_else(|| panic!("overlay {name} not rendered"))
}

fn temp_file(name: &str, contents: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("whisk-deploy-{}-{name}", std::process::id()));
    std::fs::write(&path, contents).expect("write temp file");
    path
}

/// The oldest Kubernetes the manifests are checked against; the newest is kubernetes-validate's
/// default (its own latest schema).
const OLDEST_KUBERNETES: &str = "1.27.0";

/// Runs `kubernetes-validate --strict --quiet` on `yaml` for `version` (None: the tool's
/// default, its newest); Ok(output) when it exits 0.
fn kubernetes_validate(name: &str, yaml: &str, version: Option<&str>) -> Result<String, String> {
    let file = temp_file(&format!("{name}.yaml"), yaml);
    let mut cmd = Command::new("kubernetes-validate");
    cmd.args(["--strict", "--quiet"]);
    if let Some(v) = version {
        cmd.args(["--kubernetes-version", v]);
    }
    let out = cmd.arg(&file).output();
    let _ = std::fs::remove_file(&file);
    let out = out.unwrap_or_else(|e| {
        panic!(
            "cannot run `kubernetes-validate` ({e}); install it with \
             `python3 -m pip install kubernetes-validate` (scripts/setup.sh does)"
        )
    });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

/// Kinds with no schema in kubernetes-validate: checked structurally by a test of their own.
const CRD_KINDS: &[&str] = &["ServiceMonitor", "PrometheusRule"];

#[test]
fn every_overlay_and_the_base_render_with_kustomize() {
    let names: Vec<String> = renders().iter().map(Render::name).collect();
    assert!(
        names.contains(&"deploy/kubernetes/base".to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"deploy/kubernetes/overlays/openwhisk".to_owned()),
        "{names:?}"
    );
    for r in renders() {
        for kind in ["Deployment", "Service", "PodDisruptionBudget", "ConfigMap"] {
            assert!(
                r.of_kind(kind).next().is_some(),
                "{}: renders no {kind}",
                r.name()
            );
        }
        r.get("Deployment", "whisk-collector");
        r.get("Deployment", "whisk-gateway");
        if r.name() == REMOTE_WRITE_OVERLAY {
            assert!(r.of_kind("StatefulSet").next().is_none(), "no Pushgateway");
        } else {
            r.get("StatefulSet", "pushgateway");
        }
    }
}

#[test]
fn rendered_resources_validate_strictly_against_kubernetes_schemas() {
    for r in renders() {
        let name = r.dir.file_name().unwrap().to_string_lossy().into_owned();
        let mut out = String::new();
        for version in [Some(OLDEST_KUBERNETES), None] {
            let text = kubernetes_validate(&name, &r.yaml, version)
                .unwrap_or_else(|e| panic!("{} does not validate ({version:?}):\n{e}", r.name()));
            out.push_str(&text);
        }
        // Every kind without a schema must be one we check structurally ourselves.
        for line in out.lines().filter(|l| l.contains("Couldn't find schema")) {
            assert!(
                CRD_KINDS
                    .iter()
                    .any(|k| line.contains(&format!("kind {k} "))),
                "{}: unvalidated kind: {line}",
                r.name()
            );
        }
    }
}

#[test]
fn kubernetes_validate_rejects_a_misspelled_field() {
    // The negative control: strict validation must catch a typo in our own manifests.
    let base = &renders()[0];
    assert!(base.yaml.contains("readOnlyRootFilesystem: true"));
    let broken = base.yaml.replace(
        "readOnlyRootFilesystem: true",
        "readOnlyRootFilesytem: true",
    );
    let err =
        kubernetes_validate("broken", &broken, None).expect_err("a misspelled field must fail");
    assert!(err.contains("readOnlyRootFilesytem"), "{err}");
}

/// The fields of monitoring.coreos.com/v1 ServiceMonitor we may use (a subset of the CRD).
fn servicemonitor_fields() -> BTreeMap<&'static str, &'static [&'static str]> {
    BTreeMap::from([
        ("top", &["apiVersion", "kind", "metadata", "spec"][..]),
        (
            "spec",
            &[
                "selector",
                "endpoints",
                "namespaceSelector",
                "jobLabel",
                "targetLabels",
            ][..],
        ),
        (
            "endpoint",
            &[
                "port",
                "path",
                "interval",
                "scrapeTimeout",
                "scheme",
                "honorLabels",
                "honorTimestamps",
                "relabelings",
                "metricRelabelings",
            ][..],
        ),
        (
            "relabel",
            &[
                "sourceLabels",
                "separator",
                "regex",
                "targetLabel",
                "replacement",
                "action",
                "modulus",
            ][..],
        ),
    ])
}

fn assert_keys_within(what: &str, obj: &Value, allowed: &[&str]) {
    let map = obj
        .as_object()
        .unwrap_or_else(|| panic!("{what} is not a mapping: {obj}"));
    for key in map.keys() {
        assert!(
            allowed.contains(&key.as_str()),
            "{what}: unknown field `{key}` (allowed: {allowed:?})"
        );
    }
}

#[test]
fn servicemonitors_use_known_fields_honor_labels_and_select_our_services() {
    let r = overlay("openwhisk-prometheus-operator");
    let fields = servicemonitor_fields();
    let monitors: Vec<&Value> = r.of_kind("ServiceMonitor").collect();
    let names: BTreeSet<&str> = monitors
        .iter()
        .filter_map(|m| m["metadata"]["name"].as_str())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["pushgateway", "whisk-collector", "whisk-gateway"])
    );
    for m in monitors {
        let name = m["metadata"]["name"].as_str().unwrap_or_default();
        assert_eq!(m["apiVersion"], "monitoring.coreos.com/v1", "{name}");
        assert_eq!(m["metadata"]["namespace"], "openwhisk", "{name}");
        assert_keys_within(name, m, fields["top"]);
        assert_keys_within(&format!("{name}.spec"), &m["spec"], fields["spec"]);
        let selector = m["spec"]["selector"]["matchLabels"]
            .as_object()
            .unwrap_or_else(|| panic!("{name}: spec.selector.matchLabels missing"));
        // The selector must match exactly one of our Services, by its labels.
        let services: Vec<&Value> = r
            .of_kind("Service")
            .filter(|s| {
                selector
                    .iter()
                    .all(|(k, v)| &s["metadata"]["labels"][k] == v)
            })
            .collect();
        assert_eq!(
            services.len(),
            1,
            "{name}: selector {selector:?} must match one Service"
        );
        let ports: Vec<&str> = services[0]["spec"]["ports"]
            .as_array()
            .map(|p| p.iter().filter_map(|p| p["name"].as_str()).collect())
            .unwrap_or_default();
        let endpoints = m["spec"]["endpoints"]
            .as_array()
            .expect("endpoints is a list");
        assert!(!endpoints.is_empty(), "{name}: no endpoints");
        for ep in endpoints {
            assert_keys_within(&format!("{name}.endpoint"), ep, fields["endpoint"]);
            assert_eq!(ep["honorLabels"], true, "{name}: honorLabels must be true");
            let port = ep["port"].as_str().expect("endpoint port is a name");
            assert!(
                ports.contains(&port),
                "{name}: port {port} not in Service ports {ports:?}"
            );
            for relabel in ep["metricRelabelings"].as_array().into_iter().flatten() {
                assert_keys_within(
                    &format!("{name}.metricRelabelings"),
                    relabel,
                    fields["relabel"],
                );
            }
        }
    }
    // The collector's openwhisk_* families arrive through the Pushgateway only, but for the
    // renamed exemplar copy of the time histograms' buckets (docs/design.md).
    let collector = r.get("ServiceMonitor", "whisk-collector");
    let copy = &collector["spec"]["endpoints"][0]["metricRelabelings"][0];
    assert_eq!(copy["targetLabel"], "__name__");
    assert_eq!(
        copy["regex"],
        "openwhisk_action_(duration|waitTime|initTime)_seconds_bucket"
    );
    assert_eq!(
        copy["replacement"],
        "openwhisk_exemplar_${1}_seconds_bucket"
    );
    let drop = &collector["spec"]["endpoints"][0]["metricRelabelings"][1];
    assert_eq!(drop["action"], "drop");
    assert_eq!(drop["regex"], "openwhisk_(action|namespace)_.*");
    assert_eq!(drop["sourceLabels"][0], "__name__");
}

#[test]
fn recording_rules_ship_as_a_configmap_and_a_prometheusrule_equal_to_the_rules_file() {
    let path = root().join("dashboards/prometheus/rules.yml");
    let text = std::fs::read_to_string(&path).expect("dashboards/prometheus/rules.yml");
    let rules: Value = serde_yaml::from_str(&text).expect("rules.yml is YAML");
    assert!(
        rules["groups"].as_array().is_some_and(|g| !g.is_empty()),
        "rules.yml has no groups"
    );
    for r in renders() {
        let cm = r.get("ConfigMap", "whisk-metrics-prometheus-rules");
        assert_eq!(
            cm["data"]["rules.yml"].as_str(),
            Some(text.as_str()),
            "{}: ConfigMap differs from {}",
            r.name(),
            rel(&path)
        );
    }
    let op = overlay("openwhisk-prometheus-operator");
    let pr = op.get("PrometheusRule", "whisk-metrics");
    assert_eq!(pr["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(pr["metadata"]["namespace"], "openwhisk");
    assert_keys_within(
        "PrometheusRule",
        pr,
        &["apiVersion", "kind", "metadata", "spec"],
    );
    assert_keys_within("PrometheusRule.spec", &pr["spec"], &["groups"]);
    for g in pr["spec"]["groups"].as_array().expect("groups list") {
        assert_keys_within("PrometheusRule group", g, &["name", "interval", "rules"]);
        for rule in g["rules"].as_array().expect("rules list") {
            assert_keys_within("PrometheusRule rule", rule, &["record", "expr", "labels"]);
        }
    }
    assert_eq!(
        pr["spec"]["groups"],
        rules["groups"],
        "PrometheusRule whisk-metrics differs from {}: copy its groups",
        rel(&path)
    );
}

/// The URL of every Pushgateway shard: `http://<pod>.<headless service>:<port>` for each replica
/// of StatefulSet pushgateway, in ordinal order.
fn shard_urls(r: &Render) -> Vec<String> {
    let sts = r.get("StatefulSet", "pushgateway");
    let replicas = sts["spec"]["replicas"]
        .as_u64()
        .expect("pushgateway replicas");
    let service = sts["spec"]["serviceName"].as_str().expect("serviceName");
    let svc = r.get("Service", service);
    assert_eq!(
        svc["spec"]["clusterIP"],
        "None",
        "{}: Service {service} must be headless (one DNS name per shard)",
        r.name()
    );
    assert_eq!(
        svc["spec"]["selector"],
        sts["spec"]["selector"]["matchLabels"]
    );
    let port = sts["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"]
        .as_u64()
        .expect("pushgateway containerPort");
    (0..replicas)
        .map(|i| format!("http://pushgateway-{i}.{service}:{port}"))
        .collect()
}

#[test]
fn gateway_forwards_to_every_pushgateway_shard_of_the_statefulset() {
    for r in pushgateway_renders() {
        let shards = shard_urls(r);
        assert!(shards.len() >= 2, "{}: {shards:?}", r.name());
        let c = r.gateway_container();
        let urls: Vec<String> = env_value(c, "WHISK_GATEWAY_PUSHGATEWAY_URL")["value"]
            .as_str()
            .expect("a literal URL list")
            .split(',')
            .map(str::to_owned)
            .collect();
        assert_eq!(urls, shards, "{}: gateway shards", r.name());
        // Prometheus discovers every shard through the headless Service's endpoints.
        let sts = r.get("StatefulSet", "pushgateway");
        let labels = &sts["spec"]["template"]["metadata"]["labels"];
        assert_eq!(labels["app.kubernetes.io/name"], "pushgateway");
    }
}

/// Bytes of a Kubernetes quantity (`512Mi`, `1Gi`) or a Go `GOMEMLIMIT` (`900MiB`).
fn bytes_of(quantity: &str) -> u64 {
    let units = [
        ("GiB", 1u64 << 30),
        ("MiB", 1 << 20),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
    ];
    units
        .iter()
        .find_map(|(suffix, unit)| {
            let n = quantity.strip_suffix(suffix)?.parse::<u64>().ok()?;
            Some(n * unit)
        })
        .unwrap_or_else(|| panic!("unexpected quantity {quantity:?}"))
}

#[test]
fn pushgateway_go_runtime_limits_follow_the_container_limits() {
    for r in pushgateway_renders() {
        let sts = r.get("StatefulSet", "pushgateway");
        let c = &sts["spec"]["template"]["spec"]["containers"][0];
        let limits = &c["resources"]["limits"];
        let memory = bytes_of(limits["memory"].as_str().expect("a memory limit"));
        let gomemlimit = bytes_of(
            env_value(c, "GOMEMLIMIT")["value"]
                .as_str()
                .expect("a literal GOMEMLIMIT"),
        );
        // The Go heap's soft limit leaves room below the container's hard one for the rest of
        // the process (stacks, the runtime, a persistence write).
        assert!(
            gomemlimit < memory && gomemlimit >= memory * 3 / 4,
            "{}: GOMEMLIMIT {gomemlimit} against a memory limit of {memory}",
            r.name()
        );
        assert_eq!(
            env_value(c, "GOMAXPROCS")["value"],
            limits["cpu"],
            "{}: GOMAXPROCS is the CPU limit",
            r.name()
        );
    }
}

#[test]
fn gateway_worker_threads_follow_its_cpu_limit() {
    for r in renders() {
        let c = r.gateway_container();
        assert_eq!(
            env_value(c, "WHISK_GATEWAY_WORKER_THREADS")["value"],
            c["resources"]["limits"]["cpu"],
            "{}: one request-serving thread per CPU of the limit",
            r.name()
        );
    }
}

#[test]
fn gateway_deployment_runs_two_ready_checked_non_root_replicas_behind_its_service() {
    for r in renders() {
        let d = r.get("Deployment", "whisk-gateway");
        assert_eq!(d["spec"]["replicas"], 2, "{}", r.name());
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"], 0);
        let pod = &d["spec"]["template"]["spec"];
        let c = r.gateway_container();
        let port = c["ports"][0]["containerPort"]
            .as_u64()
            .expect("containerPort");
        assert_eq!(
            env_value(c, "WHISK_GATEWAY_LISTEN")["value"],
            format!("0.0.0.0:{port}")
        );
        assert_eq!(env_value(c, "WHISK_GATEWAY_AUTH")["value"], "api-key");
        assert_eq!(
            env_value(c, "WHISK_GATEWAY_JOB")["value"],
            "openwhisk_actions"
        );
        let api = env_value(c, "WHISK_GATEWAY_OPENWHISK_API_HOST")["value"]
            .as_str()
            .expect("api host");
        assert!(api.starts_with("http"), "{api}");
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert!(pod["securityContext"]["runAsUser"].as_u64() > Some(0));
        let svc = r.get("Service", "whisk-gateway");
        assert_eq!(
            svc["spec"]["selector"],
            d["spec"]["selector"]["matchLabels"]
        );
        assert_eq!(svc["spec"]["ports"][0]["port"], port);
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], "http");
        let pdb = r.get("PodDisruptionBudget", "whisk-gateway");
        assert_eq!(pdb["spec"]["selector"], d["spec"]["selector"]);
    }
    assert_eq!(
        env_value(
            overlay("openwhisk").gateway_container(),
            "WHISK_GATEWAY_OPENWHISK_API_HOST"
        )["value"],
        "http://owdev-controller.openwhisk:8080"
    );
}

/// A pod as NetworkPolicy sees it: its namespace and labels.
struct PodRef {
    namespace: String,
    labels: BTreeMap<String, String>,
}

impl PodRef {
    fn new(namespace: &str, labels: &[(&str, &str)]) -> Self {
        Self {
            namespace: namespace.to_owned(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }
}

fn selector_matches(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    let by_label = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| labels.get(k.as_str()).map(String::as_str) == v.as_str());
    let by_expr = selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|e| {
            let key = e["key"].as_str().expect("expression key");
            let values: Vec<&str> = e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let got = labels.get(key).map(String::as_str);
            match e["operator"].as_str().expect("operator") {
                "In" => got.is_some_and(|g| values.contains(&g)),
                "NotIn" => !got.is_some_and(|g| values.contains(&g)),
                "Exists" => got.is_some(),
                "DoesNotExist" => got.is_none(),
                other => panic!("unknown operator {other}"),
            }
        });
    by_label && by_expr
}

/// Whether the NetworkPolicies of `r` (namespace `ns`) let `from` open a TCP connection to
/// `to` on `port` (a name or number). Pods no policy selects admit everything, as in
/// Kubernetes; policies add up.
fn admits(r: &Render, ns: &str, from: &PodRef, to: &PodRef, port: &Value) -> bool {
    let policies: Vec<&Value> = r
        .of_kind("NetworkPolicy")
        .filter(|p| to.namespace == ns && selector_matches(&p["spec"]["podSelector"], &to.labels))
        .filter(|p| {
            p["spec"]["policyTypes"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t == "Ingress"))
        })
        .collect();
    if policies.is_empty() {
        return true;
    }
    policies.iter().any(|p| {
        p["spec"]["ingress"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|rule| {
                let port_ok = rule["ports"]
                    .as_array()
                    .is_none_or(|ports| ports.iter().any(|p| &p["port"] == port));
                let peer_ok = rule["from"].as_array().is_none_or(|peers| {
                    peers.iter().any(|peer| {
                        let ns_ok = match peer.get("namespaceSelector") {
                            // {} selects every namespace; we know no namespace labels, so any other
                            // selector is taken as not matching.
                            Some(sel) => sel.as_object().is_some_and(|m| m.is_empty()),
                            None => from.namespace == ns,
                        };
                        let pod_ok = peer
                            .get("podSelector")
                            .is_none_or(|sel| selector_matches(sel, &from.labels));
                        ns_ok
                            && pod_ok
                            && (peer.get("podSelector").is_some()
                                || peer.get("namespaceSelector").is_some())
                    })
                });
                port_ok && peer_ok
            })
    })
}

#[test]
fn network_policies_let_action_pods_reach_the_gateway_but_no_pushgateway() {
    let r = overlay("openwhisk");
    let ns = "openwhisk";
    let pod_of = |kind: &str, name: &str| PodRef {
        namespace: ns.to_owned(),
        labels: r.get(kind, name)["spec"]["template"]["metadata"]["labels"]
            .as_object()
            .expect("pod labels")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
            .collect(),
    };
    // An action pod as OpenWhisk's KubernetesContainerFactory labels it.
    let action = PodRef::new(
        ns,
        &[
            ("name", "wskowdev-invoker-00-1-guest-hello"),
            ("user-action-pod", "true"),
            ("invoker", "invoker0"),
        ],
    );
    let gateway = pod_of("Deployment", "whisk-gateway");
    let collector = pod_of("Deployment", "whisk-collector");
    let pushgateway = pod_of("StatefulSet", "pushgateway");
    let prometheus = PodRef::new("monitoring", &[("app.kubernetes.io/name", "prometheus")]);
    let stranger = PodRef::new("default", &[("app", "curl")]);
    let http = Value::from("http");

    assert!(admits(r, ns, &action, &gateway, &http), "action -> gateway");
    assert!(
        !admits(r, ns, &action, &pushgateway, &http),
        "action -> pushgateway"
    );
    assert!(
        admits(r, ns, &gateway, &pushgateway, &http),
        "gateway -> pushgateway"
    );
    assert!(
        admits(r, ns, &collector, &pushgateway, &http),
        "collector -> pushgateway"
    );
    assert!(
        admits(r, ns, &prometheus, &pushgateway, &http),
        "prometheus -> pushgateway"
    );
    assert!(
        admits(r, ns, &prometheus, &gateway, &http),
        "prometheus -> gateway"
    );
    assert!(
        !admits(r, ns, &stranger, &pushgateway, &http),
        "stranger -> pushgateway"
    );
    assert!(
        !admits(r, ns, &stranger, &gateway, &http),
        "stranger -> gateway"
    );
    // the check can fail: another port of the gateway is closed to actions
    assert!(!admits(r, ns, &action, &gateway, &Value::from(22)));
    // every policy's port names exist on the pods it selects
    for p in r.of_kind("NetworkPolicy") {
        for rule in p["spec"]["ingress"].as_array().into_iter().flatten() {
            for port in rule["ports"].as_array().into_iter().flatten() {
                assert_eq!(port["port"], "http", "{}", p["metadata"]["name"]);
            }
        }
    }
}

fn gateway_binary() -> PathBuf {
    whisk_testkit::workspace_bin("whisk-gateway", "WHISK_GATEWAY_BIN")
}

#[test]
fn every_gateway_env_var_in_the_manifests_is_documented_by_help() {
    let out = Command::new(gateway_binary())
        .arg("--help")
        .env_clear()
        .output()
        .expect("run whisk-gateway --help");
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "whisk-gateway --help failed: {help}");
    let (envs, flags) = parse_help(&help);
    for flag in [
        "--listen",
        "--pushgateway-url",
        "--openwhisk-api-host",
        "--auth",
    ] {
        assert!(flags.contains(flag), "{flag} not in --help: {flags:?}");
    }
    for r in renders() {
        let c = r.gateway_container();
        let names: Vec<&str> = c["env"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["name"].as_str())
            .collect();
        assert!(names.len() >= 5, "{}: gateway env {names:?}", r.name());
        for name in names {
            assert!(
                envs.contains(name),
                "{}: env {name} is not documented by `whisk-gateway --help` ({envs:?})",
                r.name()
            );
        }
        assert!(c["args"].is_null() && c["command"].is_null(), "env only");
    }
}

fn collector_binary() -> PathBuf {
    whisk_testkit::workspace_bin("whisk-collector", "WHISK_COLLECTOR_BIN")
}

/// The env var names (`[env: NAME=...]`) and long/short flags `whisk-collector --help` documents.
fn collector_help() -> (BTreeSet<String>, BTreeSet<String>) {
    let out = Command::new(collector_binary())
        .arg("--help")
        .env_clear()
        .output()
        .expect("run whisk-collector --help");
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "whisk-collector --help failed: {help}"
    );
    parse_help(&help)
}

/// Reads clap's help text: env names from `[env: NAME=]`, flags such as `--brokers` and `-X`.
fn parse_help(help: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut envs = BTreeSet::new();
    for part in help.split("[env: ").skip(1) {
        let name: String = part
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        envs.insert(name);
    }
    let mut flags = BTreeSet::new();
    for word in help.split(|c: char| c.is_whitespace() || c == ',' || c == '=' || c == '[') {
        let is_long = word.starts_with("--") && word.len() > 2;
        let is_short = word.len() == 2 && word.starts_with('-') && word != "--";
        if is_long || is_short {
            let flag: String = word
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            flags.insert(flag);
        }
    }
    (envs, flags)
}

#[test]
fn help_parser_reads_clap_env_annotations_and_flags() {
    let sample = "Options:\n      --brokers <BROKERS>  bootstrap servers [env: WHISK_COLLECTOR_BROKERS=] \
                  [default: 127.0.0.1:9092]\n  -X <KEY=VALUE>  librdkafka property \
                  [env: WHISK_COLLECTOR_KAFKA_PROPERTIES=a=b]\n  -h, --help  Print help\n";
    let (envs, flags) = parse_help(sample);
    assert_eq!(
        envs,
        BTreeSet::from([
            "WHISK_COLLECTOR_BROKERS".to_owned(),
            "WHISK_COLLECTOR_KAFKA_PROPERTIES".to_owned()
        ])
    );
    for flag in ["--brokers", "-X", "-h", "--help"] {
        assert!(flags.contains(flag), "{flag} not found in {flags:?}");
    }
    assert!(!flags.contains("--pushgateway-url"));
}

#[test]
fn every_collector_env_var_and_flag_in_the_manifests_is_documented_by_help() {
    let (envs, flags) = collector_help();
    assert!(
        envs.len() >= 10,
        "`whisk-collector --help` documents {} env vars ({envs:?}); expected one \
         `[env: WHISK_COLLECTOR_...]` per flag of docs/design.md. Is {} built from the \
         current collector sources?",
        envs.len(),
        collector_binary().display()
    );
    for r in renders() {
        let c = r.collector_container();
        let env_names: Vec<&str> = c["env"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["name"].as_str())
            .collect();
        assert!(!env_names.is_empty(), "{}: collector has no env", r.name());
        for name in env_names {
            assert!(
                envs.contains(name),
                "{}: env {name} is not documented by `whisk-collector --help` (documented: {envs:?})",
                r.name()
            );
        }
        let args = c["command"]
            .as_array()
            .into_iter()
            .chain(c["args"].as_array())
            .flatten();
        for arg in args
            .filter_map(Value::as_str)
            .filter(|a| a.starts_with('-'))
        {
            let flag = arg.split('=').next().unwrap_or(arg);
            assert!(
                flags.contains(flag),
                "{}: flag {flag} not in --help ({flags:?})",
                r.name()
            );
        }
    }
}

fn env_value<'a>(container: &'a Value, name: &str) -> &'a Value {
    container["env"]
        .as_array()
        .and_then(|env| env.iter().find(|e| e["name"] == name))
        .unwrap_or_else(|| panic!("env {name} missing"))
}

#[test]
fn collector_deployment_runs_two_replicas_in_one_group_with_pod_name_instances() {
    for r in pushgateway_renders() {
        let d = r.get("Deployment", "whisk-collector");
        assert_eq!(d["spec"]["replicas"], 2, "{}", r.name());
        let pod = &d["spec"]["template"]["spec"];
        let c = r.collector_container();
        assert_eq!(
            env_value(c, "WHISK_COLLECTOR_GROUP_ID")["value"],
            "whisk-collector"
        );
        assert_eq!(
            env_value(c, "WHISK_COLLECTOR_INSTANCE")["valueFrom"]["fieldRef"]["fieldPath"],
            "metadata.name"
        );
        assert_eq!(env_value(c, "WHISK_COLLECTOR_PRUNE_AFTER")["value"], "15m");
        // Every shard, in ordinal order: the platform group goes to the first, the janitor and
        // its guard serve each one.
        assert_eq!(
            env_value(c, "WHISK_COLLECTOR_PUSHGATEWAY_URL")["value"],
            shard_urls(r).join(",").as_str(),
            "{}",
            r.name()
        );
        let secret = &env_value(c, "WHISK_COLLECTOR_KAFKA_PROPERTIES")["valueFrom"]["secretKeyRef"];
        assert_eq!(secret["name"], "whisk-collector-kafka");
        assert_eq!(secret["key"], "kafka-properties");
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        for res in ["requests", "limits"] {
            for k in ["cpu", "memory"] {
                assert!(
                    c["resources"][res][k].is_string(),
                    "{}: resources.{res}.{k}",
                    r.name()
                );
            }
        }
        let pdb = r.get("PodDisruptionBudget", "whisk-collector");
        assert_eq!(pdb["spec"]["selector"], d["spec"]["selector"]);
        let pgw = r.get("StatefulSet", "pushgateway");
        let pgw_args = &pgw["spec"]["template"]["spec"]["containers"][0]["args"];
        assert!(
            pgw_args
                .as_array()
                .into_iter()
                .flatten()
                .any(|a| a == "--push.disable-consistency-check"),
            "{}: pushgateway args {pgw_args}",
            r.name()
        );
    }
    let ow = overlay("openwhisk");
    assert_eq!(
        env_value(ow.collector_container(), "WHISK_COLLECTOR_BROKERS")["value"],
        "owdev-kafka.openwhisk:9092"
    );
    for doc in &ow.docs {
        assert_eq!(
            doc["metadata"]["namespace"], "openwhisk",
            "{}",
            doc["metadata"]["name"]
        );
    }
}

/// Partitions OpenWhisk's controller gives the `events` topic (`KafkaMessagingProvider`).
const OPENWHISK_EVENTS_PARTITIONS: i64 = 1;

#[test]
fn collector_rollout_and_pdb_can_progress_when_standbys_own_no_partition() {
    // Why: with more replicas than partitions, all but one collector are standbys without a
    // partition. A rollout with maxUnavailable 0 waits for the surge pod to be Ready, and the
    // PDB lets a drain evict a pod only while the others are Ready; both stall forever if
    // Ready meant "holds a partition" (issue 10). /readyz means "joined the consumer group
    // and polling" (collector/tests/rebalance.rs proves two replicas on one partition are
    // both Ready), and these settings rely on exactly that.
    let design = std::fs::read_to_string(root().join("docs/design.md")).expect("docs/design.md");
    assert!(
        design.contains("`/readyz`") && design.contains("without a partition"),
        "docs/design.md must state that /readyz is 200 for a standby without a partition"
    );
    for r in renders() {
        let d = r.get("Deployment", "whisk-collector");
        let replicas = d["spec"]["replicas"].as_i64().expect("replicas");
        assert!(
            replicas > OPENWHISK_EVENTS_PARTITIONS,
            "{}: with {replicas} replicas there is no standby to take over",
            r.name()
        );
        let c = r.collector_container();
        assert_eq!(
            c["readinessProbe"]["httpGet"]["path"],
            "/readyz",
            "{}: readiness must be the group-membership probe",
            r.name()
        );
        let strategy = &d["spec"]["strategy"];
        assert_eq!(strategy["type"], "RollingUpdate", "{}", r.name());
        let surge = strategy["rollingUpdate"]["maxSurge"].as_i64().unwrap_or(0);
        let unavailable = strategy["rollingUpdate"]["maxUnavailable"]
            .as_i64()
            .unwrap_or(-1);
        assert_eq!(
            unavailable,
            0,
            "{}: never fewer consumers than replicas during a rollout",
            r.name()
        );
        assert!(
            surge >= 1,
            "{}: with maxUnavailable 0 the rollout needs a surge pod (Ready as a standby)",
            r.name()
        );
        let pdb = r.get("PodDisruptionBudget", "whisk-collector");
        assert_eq!(
            pdb["spec"]["selector"],
            d["spec"]["selector"],
            "{}",
            r.name()
        );
        // Evictions allowed when every replica is Ready (standbys included).
        let allowed = match (
            pdb["spec"]["maxUnavailable"].as_i64(),
            pdb["spec"]["minAvailable"].as_i64(),
        ) {
            (Some(max), None) => max,
            (None, Some(min)) => replicas - min,
            other => panic!(
                "{}: PDB needs an integer maxUnavailable or minAvailable: {other:?}",
                r.name()
            ),
        };
        assert!(
            allowed >= 1 && allowed < replicas,
            "{}: a drain must be able to evict one collector ({allowed} allowed) yet never all",
            r.name()
        );
    }
}

fn dashboard_files() -> BTreeMap<String, String> {
    let dir = root().join("dashboards/grafana/dashboards");
    let files: BTreeMap<String, String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("readable dashboards dir").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (
                name,
                std::fs::read_to_string(&p).expect("readable dashboard"),
            )
        })
        .collect();
    assert!(!files.is_empty(), "no dashboards in {}", dir.display());
    files
}

#[test]
fn every_dashboard_file_is_in_a_grafana_configmap_with_the_same_content() {
    let files = dashboard_files();
    for r in renders() {
        let mut generated = BTreeMap::new();
        for cm in r
            .of_kind("ConfigMap")
            .filter(|c| c["metadata"]["labels"]["grafana_dashboard"] == "1")
        {
            for (key, value) in cm["data"].as_object().into_iter().flatten() {
                let text = value.as_str().unwrap_or_default().to_owned();
                let before = generated.insert(key.clone(), text);
                assert!(
                    before.is_none(),
                    "{}: dashboard {key} generated twice",
                    r.name()
                );
            }
        }
        let missing: Vec<&String> = files
            .keys()
            .filter(|f| !generated.contains_key(*f))
            .collect();
        assert!(
            missing.is_empty(),
            "{}: dashboards {missing:?} are not in any ConfigMap; add them to dashboards/kustomization.yaml",
            r.name()
        );
        let extra: Vec<&String> = generated
            .keys()
            .filter(|k| !files.contains_key(*k))
            .collect();
        assert!(
            extra.is_empty(),
            "{}: ConfigMaps hold unknown dashboards {extra:?}",
            r.name()
        );
        for (name, text) in &files {
            assert_eq!(
                &generated[name],
                text,
                "{}: {name} differs from the file",
                r.name()
            );
        }
    }
}

fn scrape_jobs(config: &Value) -> BTreeMap<String, &Value> {
    config["scrape_configs"]
        .as_array()
        .expect("scrape_configs is a list")
        .iter()
        .map(|j| (j["job_name"].as_str().expect("job_name").to_owned(), j))
        .collect()
}

#[test]
fn kubernetes_scrape_config_matches_the_demo_config_and_passes_promtool() {
    let base = &renders()[0];
    let cm = base.get("ConfigMap", "whisk-metrics-prometheus-scrape");
    let text = cm["data"]["prometheus.yml"]
        .as_str()
        .expect("prometheus.yml key");
    let k8s: Value = serde_yaml::from_str(text).expect("scrape config is YAML");
    let demo_path = root().join("dashboards/prometheus/prometheus.yml");
    let demo: Value =
        serde_yaml::from_str(&std::fs::read_to_string(&demo_path).expect("demo prometheus.yml"))
            .expect("demo prometheus.yml is YAML");
    let (k8s_jobs, demo_jobs) = (scrape_jobs(&k8s), scrape_jobs(&demo));
    assert_eq!(
        k8s_jobs.keys().collect::<Vec<_>>(),
        demo_jobs.keys().collect::<Vec<_>>(),
        "job names drifted from {}",
        rel(&demo_path)
    );
    for (job, k) in &k8s_jobs {
        let d = demo_jobs[job];
        assert_eq!(
            k["honor_labels"], d["honor_labels"],
            "job {job}: honor_labels"
        );
        assert_eq!(
            k["metric_relabel_configs"], d["metric_relabel_configs"],
            "job {job}"
        );
        assert!(
            k["kubernetes_sd_configs"].is_array(),
            "job {job}: no kubernetes_sd_configs"
        );
    }
    assert_eq!(k8s_jobs["pushgateway"]["honor_labels"], true);

    // Debian's promtool is built without Kubernetes discovery, so promtool checks the rest of
    // the file (globals, relabel rules and regexes) with each discovery swapped for a target.
    let mut checkable = k8s.clone();
    for job in checkable["scrape_configs"].as_array_mut().expect("list") {
        let job = job.as_object_mut().expect("job is a mapping");
        assert!(job.remove("kubernetes_sd_configs").is_some());
        job.insert(
            "static_configs".into(),
            serde_json::json!([{ "targets": ["127.0.0.1:1"] }]),
        );
    }
    let file = temp_file(
        "prometheus.yml",
        &serde_yaml::to_string(&checkable).expect("to YAML"),
    );
    let out = Command::new("promtool")
        .args(["check", "config"])
        .arg(&file)
        .output();
    let _ = std::fs::remove_file(&file);
    let out = out.expect("run promtool (Debian package prometheus)");
    assert!(
        out.status.success(),
        "promtool check config failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// deploy/Dockerfile as instructions (continuation lines joined, comments dropped).
fn dockerfile() -> Vec<(String, String)> {
    parse_dockerfile("deploy/Dockerfile")
}

/// The Dockerfile at `path` (relative to the repository root) as `(INSTRUCTION, arguments)`.
fn parse_dockerfile(path: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head.trim());
                current.push(' ');
            }
            None => {
                current.push_str(line);
                let (op, args) = current.split_once(' ').unwrap_or((&current, ""));
                out.push((op.to_uppercase(), args.trim().to_owned()));
                current.clear();
            }
        }
    }
    out
}

fn instructions(op: &str) -> Vec<String> {
    dockerfile()
        .into_iter()
        .filter(|(o, _)| o == op)
        .map(|(_, a)| a)
        .collect()
}

/// The script's `cargo build` line and its `export NAME=VALUE` lines.
fn script() -> (String, Vec<String>) {
    let text = std::fs::read_to_string(root().join("scripts/build-collector-static.sh"))
        .expect("scripts/build-collector-static.sh");
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    let builds: Vec<&&str> = lines
        .iter()
        .filter(|l| l.starts_with("cargo build"))
        .collect();
    assert_eq!(
        builds.len(),
        1,
        "the script must run exactly one cargo build: {builds:?}"
    );
    let exports = lines
        .iter()
        .filter_map(|l| l.strip_prefix("export "))
        .map(str::to_owned)
        .collect();
    ((*builds[0]).to_owned(), exports)
}

#[test]
fn dockerfile_builds_with_the_exact_command_and_env_of_the_static_build_script() {
    let (build, exports) = script();
    assert!(
        build.contains("--target x86_64-unknown-linux-musl"),
        "{build}"
    );
    assert!(
        build.contains("--release") && build.contains("-p whisk-collector"),
        "{build}"
    );
    // The suite's musl build (which the image tests ship) has kafka-tls; the image's must too.
    assert!(build.contains("--features kafka-tls"), "{build}");
    let runs: Vec<String> = instructions("RUN")
        .into_iter()
        .filter(|r| r.contains("cargo build"))
        .collect();
    assert_eq!(
        runs,
        vec![build],
        "the Dockerfile's cargo build differs from the script's"
    );
    let envs = instructions("ENV");
    for export in &exports {
        assert!(
            envs.contains(export),
            "Dockerfile lacks `ENV {export}` (script exports it)"
        );
    }
    let all = dockerfile();
    let from_builder = all
        .iter()
        .position(|(o, a)| o == "FROM" && a.ends_with(" AS builder"));
    let build_at = all
        .iter()
        .position(|(o, a)| o == "RUN" && a.contains("cargo build"));
    assert!(
        from_builder < build_at,
        "cargo build must run in the builder stage"
    );
    let setup = instructions("RUN").join(" ");
    assert!(
        setup.contains("rustup target add x86_64-unknown-linux-musl"),
        "{setup}"
    );
    assert!(setup.contains("musl-tools"), "{setup}");
}

fn workspace_members() -> Vec<String> {
    let toml = std::fs::read_to_string(root().join("Cargo.toml")).expect("root Cargo.toml");
    let line = toml
        .lines()
        .find(|l| l.trim_start().starts_with("members"))
        .expect("workspace members line");
    line.split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

#[test]
fn dockerfile_copies_existing_paths_and_runs_the_binary_the_build_produces() {
    let mut copied = BTreeSet::new();
    let mut binary_in_context = None;
    let workdir = instructions("WORKDIR")
        .first()
        .cloned()
        .expect("builder WORKDIR");
    let (build, _) = script();
    for copy in instructions("COPY") {
        let words: Vec<&str> = copy.split_whitespace().collect();
        if let Some(from) = words[0].strip_prefix("--from=") {
            if from == "builder" && words[1].contains("/target/") {
                let expected =
                    format!("{workdir}/target/x86_64-unknown-linux-musl/release/whisk-collector");
                assert!(build.contains("--target x86_64-unknown-linux-musl"));
                assert_eq!(words[1], expected, "COPY of the binary");
                binary_in_context = Some(words[2].to_owned());
            }
            continue;
        }
        let (sources, _dest) = words.split_at(words.len() - 1);
        for src in sources {
            let path = root().join(src);
            assert!(
                path.exists(),
                "Dockerfile copies {src}, which does not exist"
            );
            copied.insert((*src).to_owned());
        }
    }
    for member in workspace_members() {
        assert!(
            copied.contains(&member),
            "workspace member {member} is not copied"
        );
    }
    assert!(
        copied.contains("Cargo.lock"),
        "--locked needs Cargo.lock in the image"
    );
    let collector_toml = std::fs::read_to_string(root().join("collector/Cargo.toml")).unwrap();
    assert!(collector_toml.contains("name = \"whisk-collector\""));
    // The built binary lands in the context stage as the file the runtime Dockerfile copies.
    let in_context = binary_in_context.expect("the context stage copies the built binary");
    let runtime = runtime_stage("deploy/Dockerfile.runtime");
    let dest = runtime
        .iter()
        .filter(|(op, _)| op == "COPY")
        .find_map(|(_, a)| {
            let (src, dest) = a.split_once(' ')?;
            (format!("/{src}") == in_context).then(|| dest.to_owned())
        })
        .expect("deploy/Dockerfile.runtime copies the binary");
    let runtime_op = |op: &str| -> Vec<String> {
        runtime
            .iter()
            .filter(|(o, _)| o == op)
            .map(|(_, a)| a.clone())
            .collect()
    };
    assert_eq!(runtime_op("ENTRYPOINT"), vec![format!("[\"{dest}\"]")]);

    // User, port and health check agree with the Deployment.
    let base = &renders()[0];
    let c = base.collector_container();
    let uid = base.get("Deployment", "whisk-collector")["spec"]["template"]["spec"]
        ["securityContext"]["runAsUser"]
        .as_u64()
        .expect("runAsUser");
    let user = runtime_op("USER").last().cloned().expect("USER");
    let image_uid: u64 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("numeric USER");
    assert!(image_uid > 0);
    assert_eq!(image_uid, uid, "image USER and Deployment runAsUser differ");
    let port = c["ports"][0]["containerPort"]
        .as_u64()
        .expect("containerPort");
    assert_eq!(runtime_op("EXPOSE"), vec![port.to_string()]);
    assert_eq!(
        env_value(c, "WHISK_COLLECTOR_LISTEN")["value"],
        format!("0.0.0.0:{port}")
    );
    let health = runtime_op("HEALTHCHECK").join(" ");
    assert!(
        health.contains(&format!("127.0.0.1:{port}/healthz")),
        "{health}"
    );
    assert_eq!(runtime_op("FROM"), vec!["scratch".to_owned()]);
}

/// A runtime Dockerfile: `FROM scratch`, then only instructions that need no container run.
fn runtime_stage(path: &str) -> Vec<(String, String)> {
    let all = parse_dockerfile(path);
    let froms = all.iter().filter(|(op, _)| op == "FROM").count();
    assert_eq!(froms, 1, "{path}: one stage only");
    for (op, args) in &all {
        assert!(
            [
                "FROM",
                "COPY",
                "USER",
                "EXPOSE",
                "HEALTHCHECK",
                "ENTRYPOINT",
                "CMD",
                "LABEL",
                "ENV"
            ]
            .contains(&op.as_str()),
            "{path}: `{op} {args}` needs a registry or a container run; the runtime stage \
             must build offline from its context"
        );
        if op == "COPY" {
            assert!(!args.starts_with("--from"), "{path}: COPY {args}");
        }
    }
    all
}

#[test]
fn dockerfile_final_stage_is_the_runtime_dockerfile_fed_by_its_context_stage() {
    let all = dockerfile();
    let last_from = all
        .iter()
        .rposition(|(op, _)| op == "FROM")
        .expect("a FROM");
    let final_stage: Vec<(String, String)> = all[last_from..]
        .iter()
        .map(|(op, args)| match args.strip_prefix("--from=context /") {
            Some(rest) if op == "COPY" => (op.clone(), rest.to_owned()),
            _ => (op.clone(), args.clone()),
        })
        .collect();
    let runtime = runtime_stage("deploy/Dockerfile.runtime");
    assert_eq!(
        final_stage, runtime,
        "the final stage of deploy/Dockerfile must equal deploy/Dockerfile.runtime \
         (with `COPY --from=context /FILE` for `COPY FILE`)"
    );
    // The context stage provides every file the runtime copies, and nothing else.
    let context_at = all
        .iter()
        .position(|(op, a)| op == "FROM" && a == "scratch AS context")
        .expect("a `FROM scratch AS context` stage");
    let provided: BTreeSet<String> = all[context_at + 1..last_from]
        .iter()
        .filter(|(op, _)| op == "COPY")
        .filter_map(|(_, a)| a.split_whitespace().last().map(str::to_owned))
        .collect();
    let needed: BTreeSet<String> = runtime
        .iter()
        .filter(|(op, _)| op == "COPY")
        .filter_map(|(_, a)| a.split_whitespace().next().map(|s| format!("/{s}")))
        .collect();
    assert_eq!(
        provided, needed,
        "context stage files vs runtime COPY sources"
    );
}

/// True when the ELF file has no program interpreter (PT_INTERP): it runs on `FROM scratch`.
fn elf_is_static(bytes: &[u8]) -> bool {
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let u64_at = |o: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[o..o + 8]);
        u64::from_le_bytes(b) as usize
    };
    assert_eq!(&bytes[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(bytes[4], 2, "not a 64-bit ELF");
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    (0..phnum).all(|i| {
        let p_type = u32::from_le_bytes(bytes[phoff + i * phentsize..][..4].try_into().unwrap());
        p_type != 3 // PT_INTERP
    })
}

/// Whether `bytes` hold OpenSSL's version text (`OPENSSL_VERSION_TEXT`, e.g. "OpenSSL 3.6.3 9 Jun
/// 2026"): linked into a collector built with feature kafka-tls, absent otherwise.
fn has_openssl_version_text(bytes: &[u8]) -> bool {
    let prefix = b"OpenSSL ";
    bytes.windows(prefix.len()).enumerate().any(|(i, w)| {
        w == prefix && {
            // "<major>.<minor>.<patch> <day> <Mon> <year>"
            let rest = &bytes[i + prefix.len()..bytes.len().min(i + prefix.len() + 32)];
            let text = String::from_utf8_lossy(rest);
            let mut words = text.split(' ');
            let version_ok = words.next().is_some_and(|v| {
                let parts: Vec<&str> = v.split('.').collect();
                parts.len() == 3 && parts.iter().all(|p| p.parse::<u32>().is_ok())
            });
            let date: Vec<&str> = words.filter(|w| !w.is_empty()).take(3).collect();
            version_ok
                && date.len() == 3
                && date[0].parse::<u32>().is_ok()
                && date[1].len() == 3
                && date[2].get(..4).is_some_and(|y| y.parse::<u32>().is_ok())
        }
    })
}

#[test]
fn openssl_version_text_is_told_from_other_mentions_of_openssl() {
    assert!(has_openssl_version_text(b"\0OpenSSL 3.6.3 9 Jun 2026\0"));
    assert!(has_openssl_version_text(b"xxOpenSSL 3.0.13 30 Jan 2024\0"));
    assert!(!has_openssl_version_text(
        b"OpenSSL 3.0.x implementation providers."
    ));
    assert!(!has_openssl_version_text(b"ssl.ca.location: OpenSSL "));
}

/// podman with a private storage (vfs driver, under a temporary directory removed on drop), so
/// the test neither needs overlay mounts nor touches the machine's images.
struct Podman {
    dir: PathBuf,
    conf: PathBuf,
}

impl Podman {
    /// Podman, or why not: it is not installed.
    fn new() -> Result<Self, &'static str> {
        let found = Command::new("podman")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Err(
                "podman is not installed (Debian: apt-get install podman; scripts/setup.sh \
                        installs it)",
            );
        }
        // One storage per instance: the image tests run in parallel and each removes its own
        // directory when done (a shared one vanished under the slower test).
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("whisk-podman-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("podman storage dir");
        let conf = dir.join("storage.conf");
        std::fs::write(
            &conf,
            format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = \"{0}/root\"\nrunroot = \"{0}/run\"\n",
                dir.display()
            ),
        )
        .expect("write storage.conf");
        Ok(Self { dir, conf })
    }

    /// A command whose podman uses this storage (`CONTAINERS_STORAGE_CONF`).
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("CONTAINERS_STORAGE_CONF", &self.conf);
        cmd
    }

    /// Runs `podman ARGS`; its stdout, or a panic with its stderr.
    fn run(&self, args: &[&str]) -> String {
        let out = self
            .command("podman")
            .args(args)
            .output()
            .expect("run podman");
        assert!(
            out.status.success(),
            "podman {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The runtime image of `component` built offline by scripts/build-image.sh, its `podman image
/// inspect`, its filesystem exported into `fs`, and the static binary it was built from.
struct BuiltImage {
    inspect: Value,
    fs: PathBuf,
    binary: PathBuf,
}

/// The static binary `name`'s image ships. When the tests themselves are built for musl
/// (scripts/test.sh builds the suite so), the workspace's binaries beside them are static and
/// the image is built from those: `Some`, passed as `BINARY` to scripts/build-image.sh. Else
/// `None`: the script runs the static release build first (cargo makes that a no-op when the
/// binary is current) and ships its output.
fn prebuilt_static_binary(name: &str) -> Option<PathBuf> {
    cfg!(target_env = "musl").then(|| {
        let var = format!(
            "WHISK_{}_BIN",
            name.trim_start_matches("whisk-").to_uppercase()
        );
        whisk_testkit::workspace_bin(name, &var)
    })
}

fn build_runtime_image(podman: &Podman, component: &str) -> BuiltImage {
    let tag = format!("localhost/whisk-{component}:test");
    let name = format!("whisk-{component}");
    let prebuilt = prebuilt_static_binary(&name);
    let started = std::time::Instant::now();
    let mut build = podman.command(root().join("scripts/build-image.sh"));
    build.args([component, tag.as_str()]);
    if let Some(binary) = &prebuilt {
        build.env("BINARY", binary);
    }
    let out = build.output().expect("run scripts/build-image.sh");
    assert!(
        out.status.success(),
        "scripts/build-image.sh {component} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "scripts/build-image.sh {component}: image (and static build unless prebuilt) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let inspect: Value = serde_json::from_str(&podman.run(&["image", "inspect", tag.as_str()]))
        .expect("inspect is JSON");
    let inspect = inspect[0].clone();
    // `podman create` only writes the container's config (nothing runs); export its rootfs.
    let id = podman.run(&["create", tag.as_str()]).trim().to_owned();
    let tar = podman.dir.join(format!("{component}.tar"));
    let tar_path = tar.display().to_string();
    podman.run(&["export", "-o", tar_path.as_str(), id.as_str()]);
    podman.run(&["rm", id.as_str()]);
    let fs = podman.dir.join(format!("{component}-rootfs"));
    std::fs::create_dir_all(&fs).expect("rootfs dir");
    let status = Command::new("tar")
        .arg("-xf")
        .arg(&tar)
        .arg("-C")
        .arg(&fs)
        .status()
        .expect("run tar");
    assert!(status.success(), "untar the exported rootfs");
    let binary = prebuilt
        .unwrap_or_else(|| root().join(format!("target/x86_64-unknown-linux-musl/release/{name}")));
    BuiltImage {
        inspect,
        fs,
        binary,
    }
}

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
}

/// The checks both runtime images pass: `component`'s image (scripts/build-image.sh) agrees with
/// its Deployment (`container` picks the Deployment's container from a render), holds the static
/// build as its entrypoint, which answers `--version`, and carries a static busybox with wget and
/// a readable CA bundle for its HEALTHCHECK.
fn check_runtime_image(component: &str, container: fn(&Render) -> &Value) {
    let test = format!("{component}_runtime_image_builds_offline");
    let Some(podman) = whisk_testkit::require(&test, Podman::new()) else {
        return;
    };
    let name = format!("whisk-{component}");
    let image = build_runtime_image(&podman, component);
    let config = &image.inspect["Config"];

    // The image's config agrees with the Deployment: non-root numeric user, the port.
    let base = &renders()[0];
    let pod = &base.get("Deployment", &name)["spec"]["template"]["spec"];
    let (uid, gid) = (
        pod["securityContext"]["runAsUser"].as_u64().expect("uid"),
        pod["securityContext"]["runAsGroup"].as_u64().expect("gid"),
    );
    assert!(uid > 0, "runAsUser must not be root");
    assert_eq!(config["User"], format!("{uid}:{gid}"), "image user");
    let port = container(base)["ports"][0]["containerPort"]
        .as_u64()
        .expect("containerPort");
    let exposed: Vec<&String> = config["ExposedPorts"]
        .as_object()
        .map(|m| m.keys().collect())
        .unwrap_or_default();
    assert_eq!(exposed, vec![&format!("{port}/tcp")], "exposed ports");
    let entrypoint: Vec<&str> = config["Entrypoint"]
        .as_array()
        .expect("an entrypoint")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(entrypoint, vec![format!("/usr/local/bin/{name}")]);
    let health = image.inspect["Healthcheck"]["Test"].to_string();
    assert!(
        health.contains(&format!("http://127.0.0.1:{port}/healthz")),
        "healthcheck {health}"
    );

    // The exported filesystem: the entrypoint is the static binary cargo built, executable by
    // the image's user, and it answers --version outside the container.
    let bin = image.fs.join(entrypoint[0].trim_start_matches('/'));
    let bytes = std::fs::read(&bin).expect("entrypoint in the image");
    assert!(
        elf_is_static(&bytes),
        "{} needs a dynamic loader",
        bin.display()
    );
    let built = std::fs::read(&image.binary).expect("the static build's output");
    assert!(
        bytes == built,
        "the image holds another binary than the static build {}",
        image.binary.display()
    );
    if component == "collector" {
        // The shipped collector speaks TLS to Kafka (feature kafka-tls: OpenSSL linked in).
        assert!(
            has_openssl_version_text(&bytes),
            "the collector in the image was built without feature kafka-tls"
        );
    }
    assert_eq!(mode_of(&bin) & 0o005, 0o005, "uid {uid} cannot execute it");
    let out = Command::new(&bin)
        .arg("--version")
        .env_clear()
        .output()
        .expect("run the image's binary");
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "--version failed: {version}");
    assert_eq!(version.trim(), format!("{name} {}", workspace_version()));

    // The HEALTHCHECK's busybox is static and has wget; the CA bundle is readable.
    let busybox = image.fs.join("usr/local/bin/busybox");
    assert!(elf_is_static(
        &std::fs::read(&busybox).expect("busybox in the image")
    ));
    let applets = Command::new(&busybox)
        .arg("--list")
        .output()
        .expect("run busybox");
    assert!(
        String::from_utf8_lossy(&applets.stdout)
            .lines()
            .any(|l| l == "wget")
    );
    let ca = image.fs.join("etc/ssl/certs/ca-certificates.crt");
    let pem = std::fs::read_to_string(&ca).expect("CA bundle in the image");
    assert!(pem.contains("BEGIN CERTIFICATE"));
    assert_eq!(mode_of(&ca) & 0o004, 0o004, "CA bundle not world-readable");
}

#[test]
fn collector_runtime_image_builds_offline_runs_as_non_root_and_ships_a_static_binary() {
    check_runtime_image("collector", Render::collector_container);
}

/// `version` of `[workspace.package]` in the root Cargo.toml.
fn workspace_version() -> String {
    let toml = std::fs::read_to_string(root().join("Cargo.toml")).expect("root Cargo.toml");
    toml.lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .expect("workspace version")
        .to_owned()
}

#[test]
fn elf_check_tells_dynamic_from_static_executables() {
    // The control for the check above: Debian's /bin/sh is dynamically linked (glibc), the
    // workspace's binaries of a musl build are static.
    let sh = std::fs::read("/bin/sh").unwrap();
    assert!(!elf_is_static(&sh));
    if let Some(binary) = prebuilt_static_binary("whisk-gateway") {
        assert!(elf_is_static(&std::fs::read(binary).unwrap()));
    }
}

/// A binary started from a rendered Deployment's environment, its output in a log file; killed
/// on drop.
struct LoggedChild {
    child: std::process::Child,
    log: PathBuf,
}

impl LoggedChild {
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.chars()
            .rev()
            .take(3000)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect()
    }
}

impl Drop for LoggedChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

#[test]
fn collector_and_pushgateway_run_with_the_manifests_settings_on_real_services() {
    use std::time::Duration;
    let base = &renders()[0];

    // Real tansu, with the topic OpenWhisk's controller would create.
    let tansu = whisk_testkit::Tansu::start().expect("start tansu");
    tansu
        .create_topic("events", 1)
        .expect("create events topic");

    // Debian's Pushgateway with the Deployment's own flags (listen address and data dir local).
    let data = std::env::temp_dir().join(format!("whisk-deploy-pgw-{}", std::process::id()));
    std::fs::create_dir_all(&data).expect("pushgateway data dir");
    let pgw_args: Vec<String> = base.get("StatefulSet", "pushgateway")["spec"]["template"]["spec"]
        ["containers"][0]["args"]
        .as_array()
        .expect("pushgateway args")
        .iter()
        .filter_map(Value::as_str)
        .filter(|a| !a.starts_with("--web.listen-address"))
        .map(|a| a.replace("/data/", &format!("{}/", data.display())))
        .collect();
    let pgw_refs: Vec<&str> = pgw_args.iter().map(String::as_str).collect();
    let pgw = whisk_testkit::Pushgateway::start(&pgw_refs).expect("pushgateway with our flags");

    // The collector with exactly the Deployment's env, addresses pointed at the local services.
    let port = whisk_testkit::free_port();
    let pod = "whisk-collector-5d9c7b-x2x4q";
    let mut cmd = Command::new(collector_binary());
    cmd.env_clear();
    for e in base.collector_container()["env"]
        .as_array()
        .expect("env list")
    {
        let name = e["name"].as_str().expect("env name");
        let value = match name {
            "WHISK_COLLECTOR_BROKERS" => tansu.bootstrap(),
            "WHISK_COLLECTOR_PUSHGATEWAY_URL" => pgw.url(),
            "WHISK_COLLECTOR_LISTEN" => format!("127.0.0.1:{port}"),
            _ if e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name" => pod.to_owned(),
            // An optional Secret that does not exist: Kubernetes leaves the variable unset.
            _ if e["valueFrom"]["secretKeyRef"]["optional"] == true => continue,
            _ => e["value"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: no value"))
                .to_owned(),
        };
        cmd.env(name, value);
    }
    let log = temp_file("collector.log", "");
    let out = std::fs::File::create(&log).expect("collector log");
    let err = out.try_clone().expect("collector log handle");
    let child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("start whisk-collector");
    let collector = LoggedChild { child, log };

    let http = format!("http://127.0.0.1:{port}");
    for probe in ["/healthz", "/readyz"] {
        let url = format!("{http}{probe}");
        assert!(
            whisk_testkit::wait_until(Duration::from_secs(60), || {
                whisk_testkit::http_get(&url).is_ok()
            }),
            "{probe} never answered 2xx; collector log:\n{}",
            collector.log_tail()
        );
    }
    // One push interval (15s in the manifest) later, this replica's group is in the Pushgateway.
    let pushed = whisk_testkit::wait_until(Duration::from_secs(45), || {
        pgw.groups()
            .unwrap_or_default()
            .iter()
            .any(|g| g["labels"]["job"] == "openwhisk_platform" && g["labels"]["instance"] == pod)
    });
    let groups = pgw.groups().unwrap_or_default();
    let _ = std::fs::remove_dir_all(&data);
    assert!(
        pushed,
        "no openwhisk_platform group for instance {pod}; groups: {groups:?}\ncollector log:\n{}",
        collector.log_tail()
    );
    let metrics = whisk_testkit::http_get(&format!("{http}/metrics")).expect("/metrics");
    assert!(metrics.contains("whisk_collector_"), "{metrics}");
}

#[test]
fn gateway_runs_with_the_manifests_settings_against_one_real_pushgateway_per_shard() {
    use std::time::Duration;
    let base = &renders()[0];
    let shards = shard_urls(base);
    // One real Pushgateway per shard of the StatefulSet, with the StatefulSet's own flags.
    let pgw_args: Vec<String> = base.get("StatefulSet", "pushgateway")["spec"]["template"]["spec"]
        ["containers"][0]["args"]
        .as_array()
        .expect("pushgateway args")
        .iter()
        .filter_map(Value::as_str)
        .filter(|a| !a.starts_with("--web.listen-address") && !a.starts_with("--persistence"))
        .map(str::to_owned)
        .collect();
    let pgw_refs: Vec<&str> = pgw_args.iter().map(String::as_str).collect();
    let pgws: Vec<whisk_testkit::Pushgateway> = shards
        .iter()
        .map(|_| whisk_testkit::Pushgateway::start(&pgw_refs).expect("pushgateway"))
        .collect();
    let local_urls: Vec<String> = pgws.iter().map(whisk_testkit::Pushgateway::url).collect();

    let port = whisk_testkit::free_port();
    let controller = format!("http://127.0.0.1:{}", whisk_testkit::free_port());
    let mut cmd = Command::new(gateway_binary());
    cmd.env_clear();
    for e in base.gateway_container()["env"]
        .as_array()
        .expect("env list")
    {
        let name = e["name"].as_str().expect("env name");
        let value = match name {
            "WHISK_GATEWAY_LISTEN" => format!("127.0.0.1:{port}"),
            "WHISK_GATEWAY_PUSHGATEWAY_URL" => local_urls.join(","),
            "WHISK_GATEWAY_OPENWHISK_API_HOST" => controller.clone(),
            _ => e["value"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: no literal value"))
                .to_owned(),
        };
        cmd.env(name, value);
    }
    let log = temp_file("gateway.log", "");
    let out = std::fs::File::create(&log).expect("gateway log");
    let err = out.try_clone().expect("gateway log handle");
    let child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("start whisk-gateway");
    let gateway = LoggedChild { child, log };
    let http = format!("http://127.0.0.1:{port}");
    // Ready means: seeded its family table from every shard.
    for probe in ["/healthz", "/readyz"] {
        let url = format!("{http}{probe}");
        assert!(
            whisk_testkit::wait_until(Duration::from_secs(60), || {
                whisk_testkit::http_get(&url).is_ok()
            }),
            "{probe} never answered 2xx; gateway log:\n{}",
            gateway.log_tail()
        );
    }
    let metrics = whisk_testkit::http_get(&format!("{http}/metrics")).expect("/metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l == format!("whisk_gateway_shards {}", shards.len())),
        "{metrics}"
    );
    assert!(
        metrics.contains("whisk_gateway_auth_disabled 0"),
        "{metrics}"
    );
}

/// The `cargo build` line and the `export` lines of scripts/build-gateway-static.sh.
fn gateway_script() -> (String, Vec<String>) {
    let text = std::fs::read_to_string(root().join("scripts/build-gateway-static.sh"))
        .expect("scripts/build-gateway-static.sh");
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    let builds: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("cargo build"))
        .collect();
    assert_eq!(builds.len(), 1, "exactly one cargo build: {builds:?}");
    let exports = lines
        .iter()
        .filter_map(|l| l.strip_prefix("export "))
        .map(str::to_owned)
        .collect();
    (builds[0].to_owned(), exports)
}

#[test]
fn gateway_dockerfile_builds_like_its_static_script_and_ends_with_its_runtime_stage() {
    let (build, exports) = gateway_script();
    assert!(
        build.contains("--release")
            && build.contains("--target x86_64-unknown-linux-musl")
            && build.contains("-p whisk-gateway"),
        "{build}"
    );
    let all = parse_dockerfile("deploy/Dockerfile.gateway");
    let of = |op: &str| -> Vec<String> {
        all.iter()
            .filter(|(o, _)| o == op)
            .map(|(_, a)| a.clone())
            .collect()
    };
    let runs: Vec<String> = of("RUN")
        .into_iter()
        .filter(|r| r.contains("cargo build"))
        .collect();
    assert_eq!(
        runs,
        vec![build],
        "Dockerfile.gateway's cargo build vs the script's"
    );
    let envs = of("ENV");
    for export in &exports {
        assert!(
            envs.contains(export),
            "Dockerfile.gateway lacks `ENV {export}`"
        );
    }
    // Every workspace member is copied into the builder (cargo resolves them all).
    let copies = of("COPY").join("\n");
    for member in workspace_members() {
        assert!(
            copies.lines().any(|c| c == format!("{member} {member}")),
            "Dockerfile.gateway does not copy workspace member {member}"
        );
    }
    // The final stage is the runtime Dockerfile, each file from the `context` stage, which
    // takes the binary from the builder's musl target dir.
    let last_from = all
        .iter()
        .rposition(|(op, _)| op == "FROM")
        .expect("a FROM");
    let final_stage: Vec<(String, String)> = all[last_from..]
        .iter()
        .map(|(op, args)| match args.strip_prefix("--from=context /") {
            Some(rest) if op == "COPY" => (op.clone(), rest.to_owned()),
            _ => (op.clone(), args.clone()),
        })
        .collect();
    assert_eq!(
        final_stage,
        runtime_stage("deploy/Dockerfile.gateway.runtime"),
        "the final stage of deploy/Dockerfile.gateway must equal deploy/Dockerfile.gateway.runtime"
    );
    assert!(
        copies.contains(
            "--from=builder /src/target/x86_64-unknown-linux-musl/release/whisk-gateway /whisk-gateway"
        ),
        "{copies}"
    );
}

#[test]
fn gateway_runtime_image_builds_offline_runs_as_non_root_and_ships_a_static_binary() {
    check_runtime_image("gateway", Render::gateway_container);
}

#[test]
fn remote_write_overlay_points_gateway_and_collector_at_the_receiver_with_affinity_and_egress() {
    let r = overlay("remote-write");
    assert!(r.of_kind("StatefulSet").next().is_none());
    let g = r.gateway_container();
    let env_names = |c: &Value| -> Vec<String> {
        c["env"]
            .as_array()
            .expect("env")
            .iter()
            .filter_map(|e| e["name"].as_str().map(str::to_owned))
            .collect()
    };
    assert!(!env_names(g).contains(&"WHISK_GATEWAY_PUSHGATEWAY_URL".to_owned()));
    let url = env_value(g, "WHISK_GATEWAY_REMOTE_WRITE_URL")["value"]
        .as_str()
        .expect("a URL");
    assert_eq!(
        env_value(g, "WHISK_GATEWAY_REMOTE_WRITE_TENANT_HEADER")["value"],
        "X-Scope-OrgID"
    );
    let c = r.collector_container();
    assert!(!env_names(c).contains(&"WHISK_COLLECTOR_PUSHGATEWAY_URL".to_owned()));
    assert_eq!(
        env_value(c, "WHISK_COLLECTOR_REMOTE_WRITE_URL")["value"],
        url
    );
    assert_eq!(
        env_value(c, "WHISK_COLLECTOR_REMOTE_WRITE_HEADER")["value"],
        "X-Scope-OrgID=platform"
    );
    assert_eq!(
        r.get("Service", "whisk-gateway")["spec"]["sessionAffinity"],
        "ClientIP"
    );
    let egress = r.get("NetworkPolicy", "whisk-remote-write-egress");
    assert_eq!(egress["spec"]["policyTypes"][0], "Egress");
    let selected: Vec<&str> = egress["spec"]["podSelector"]["matchExpressions"][0]["values"]
        .as_array()
        .expect("values")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(selected, ["whisk-gateway", "whisk-collector"]);
    assert!(
        r.of_kind("NetworkPolicy")
            .all(|p| p["metadata"]["name"] != "whisk-pushgateway")
    );
}
