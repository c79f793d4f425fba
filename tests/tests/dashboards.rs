//! The Grafana dashboards, provisioning files, scrape config and metric catalog of
//! `dashboards/`, checked against the files themselves, docs/design.md, promtool and a real
//! Prometheus (and Pushgateway) started by whisk-testkit.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use whisk_testkit::{Prometheus, Pushgateway, free_port, wait_until};
use whisk_tests::dashboards::{
    BUILTIN_VARIABLES, COLLECTOR_MARKER, Catalog, Dashboard, DashboardError, GATEWAY_MARKER,
    PUSHGATEWAY_MARKER, PlotStatus, QueryOrigin, QueryOutcome, Vars, check_all_queries_parse,
    check_all_queries_return_data, load_dashboards, metric_names, prometheus_config_for,
    render_prometheus_config, repo_dashboards_dir, run_instant_query, variable_references,
    with_gateway_target, with_rules_file,
};

const EXPECTED: &[(&str, &str)] = &[
    ("action.json", "whisk-action"),
    ("collector-health.json", "whisk-collector-health"),
    ("containers.json", "whisk-containers"),
    ("platform-overview.json", "whisk-platform-overview"),
];
const PANEL_TYPES: &[&str] = &[
    "timeseries",
    "stat",
    "table",
    "state-timeline",
    "bargauge",
    "row",
];
/// Container path → repository directory, as documented in dashboards/README.md.
const GRAFANA_MOUNTS: &[(&str, &str)] = &[
    ("/etc/grafana/provisioning", "grafana/provisioning"),
    (
        "/var/lib/grafana/dashboards/whisk-metrics",
        "grafana/dashboards",
    ),
];

fn dashboards() -> Vec<Dashboard> {
    load_dashboards(&repo_dashboards_dir().join("grafana/dashboards")).expect("dashboards load")
}

fn vars() -> Vars {
    Vars::new()
        .with("namespace", "guest")
        .with("action", "hello")
}

fn yaml(path: &Path) -> serde_yaml::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()))
}

fn ystr<'a>(v: &'a serde_yaml::Value, key: &str) -> &'a str {
    v.get(key).and_then(|x| x.as_str()).unwrap_or_default()
}

/// Where a dashboard is located: file, panel id and title.
fn at(d: &Dashboard, p: &Value) -> String {
    format!(
        "{} panel {} \"{}\"",
        d.uid(),
        p["id"],
        p["title"].as_str().unwrap_or_default()
    )
}

#[test]
fn the_four_dashboards_load_with_current_schema_and_stable_uids() {
    let ds = dashboards();
    let got: Vec<(String, String)> = ds
        .iter()
        .map(|d| {
            let file = d.path().file_name().unwrap().to_string_lossy().to_string();
            (file, d.uid().to_string())
        })
        .collect();
    let want: Vec<(String, String)> = EXPECTED
        .iter()
        .map(|(f, u)| (f.to_string(), u.to_string()))
        .collect();
    assert_eq!(got, want);
    for d in &ds {
        assert!(
            d.schema_version() >= 39,
            "{}: schemaVersion {}",
            d.uid(),
            d.schema_version()
        );
        assert!(!d.title().is_empty(), "{}: no title", d.uid());
        assert!(
            d.json()["id"].is_null(),
            "{}: id must be null for provisioning/import",
            d.uid()
        );
        assert!(
            d.json()["panels"].as_array().is_some_and(|p| !p.is_empty()),
            "{}",
            d.uid()
        );
    }
}

#[test]
fn uids_are_unique_and_panel_ids_are_unique_within_each_dashboard() {
    let ds = dashboards();
    let uids: BTreeSet<&str> = ds.iter().map(|d| d.uid()).collect();
    assert_eq!(uids.len(), ds.len(), "duplicate dashboard uid");
    for d in &ds {
        let mut seen = BTreeMap::new();
        for p in d.panels() {
            let id = p["id"]
                .as_i64()
                .unwrap_or_else(|| panic!("{}: panel without id", at(d, p)));
            if let Some(prev) = seen.insert(id, at(d, p)) {
                panic!("panel id {id} used twice: {prev} and {}", at(d, p));
            }
        }
    }
}

#[test]
fn every_panel_uses_the_datasource_variable_and_has_a_target_with_an_expression() {
    let mut panels = 0;
    for d in dashboards() {
        for p in d.panels() {
            let kind = p["type"].as_str().unwrap_or_default();
            assert!(
                PANEL_TYPES.contains(&kind),
                "{}: panel type `{kind}`",
                at(&d, p)
            );
            assert!(
                p["gridPos"]["w"].as_u64().is_some(),
                "{}: no gridPos",
                at(&d, p)
            );
            if kind == "row" {
                continue;
            }
            panels += 1;
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", at(&d, p));
            assert_eq!(p["datasource"]["type"], "prometheus", "{}", at(&d, p));
            let targets = p["targets"].as_array().cloned().unwrap_or_default();
            assert!(!targets.is_empty(), "{}: no targets", at(&d, p));
            let mut refs = BTreeSet::new();
            for t in &targets {
                let expr = t["expr"].as_str().unwrap_or_default();
                assert!(
                    !expr.trim().is_empty(),
                    "{}: target without expr",
                    at(&d, p)
                );
                assert!(
                    refs.insert(t["refId"].as_str().unwrap_or_default()),
                    "{}",
                    at(&d, p)
                );
                assert_eq!(t["datasource"]["uid"], "${datasource}", "{}", at(&d, p));
            }
        }
    }
    assert!(panels >= 40, "only {panels} data panels");
}

#[test]
fn every_dashboard_has_a_prometheus_datasource_variable() {
    for d in dashboards() {
        let var = d
            .variables()
            .into_iter()
            .find(|v| v["name"] == "datasource");
        let var = var.unwrap_or_else(|| panic!("{}: no datasource variable", d.uid()));
        assert_eq!(var["type"], "datasource", "{}", d.uid());
        assert_eq!(var["query"], "prometheus", "{}", d.uid());
    }
}

#[test]
fn action_dashboard_selects_namespace_and_action_with_label_values() {
    let ds = dashboards();
    let d = ds.iter().find(|d| d.uid() == "whisk-action").unwrap();
    let def = |name: &str| {
        let v = d
            .variables()
            .into_iter()
            .find(|v| v["name"] == name)
            .unwrap()
            .clone();
        assert_eq!(v["type"], "query", "{name}");
        v["definition"].as_str().unwrap().to_string()
    };
    assert_eq!(
        def("namespace"),
        "label_values(openwhisk_action_activations_total, namespace)"
    );
    assert!(
        def("action").starts_with(
            "label_values(openwhisk_action_activations_total{namespace=\"$namespace\"}"
        )
    );
}

#[test]
fn every_variable_used_is_defined() {
    for d in dashboards() {
        let mut defined: BTreeSet<String> =
            BUILTIN_VARIABLES.iter().map(|s| s.to_string()).collect();
        defined.extend(d.variable_names().into_iter().map(str::to_string));
        let mut texts = vec![d.title().to_string()];
        for p in d.panels() {
            texts.push(p["title"].as_str().unwrap_or_default().to_string());
            texts.push(p["description"].as_str().unwrap_or_default().to_string());
            texts.extend(p["targets"].as_array().into_iter().flatten().flat_map(|t| {
                [t["expr"].as_str(), t["legendFormat"].as_str()]
                    .into_iter()
                    .flatten()
                    .map(str::to_string)
            }));
        }
        texts.extend(d.queries().unwrap().into_iter().map(|q| q.expr));
        let mut used = 0;
        for text in &texts {
            for name in variable_references(text) {
                used += 1;
                assert!(
                    defined.contains(&name),
                    "{}: `${name}` is not defined in: {text}",
                    d.uid()
                );
            }
        }
        assert!(used > 0, "{}: uses no variable at all", d.uid());
    }
}

#[test]
fn no_query_hard_codes_a_container_instance() {
    for d in dashboards() {
        for q in d.queries().unwrap() {
            assert!(
                !q.expr.contains("instance=\""),
                "{q}: instance matcher: {}",
                q.expr
            );
            assert!(
                !q.expr.contains("instance=~\""),
                "{q}: instance matcher: {}",
                q.expr
            );
            let hexrun = q.expr.chars().fold((0usize, 0usize), |(run, max), c| {
                let run = if c.is_ascii_hexdigit() && !c.is_ascii_uppercase() {
                    run + 1
                } else {
                    0
                };
                (run, max.max(run))
            });
            assert!(
                hexrun.1 < 32,
                "{q}: looks like a hard-coded instance id: {}",
                q.expr
            );
        }
    }
}

/// A Prometheus whose scrape targets are closed ports: an empty TSDB, the real query parser.
fn empty_prometheus() -> Prometheus {
    let a = format!("127.0.0.1:{}", free_port());
    let b = format!("127.0.0.1:{}", free_port());
    Prometheus::start(&prometheus_config_for(&a, &b).unwrap()).expect("prometheus starts")
}

#[test]
fn every_expression_with_variables_substituted_is_accepted_by_real_prometheus() {
    let prom = empty_prometheus();
    // the check can fail: a broken expression is a 400 bad_data
    match run_instant_query(&prom.url(), "sum(rate(x[5m])").unwrap() {
        QueryOutcome::Rejected { error_type, .. } => assert_eq!(error_type, "bad_data"),
        other => panic!("broken PromQL was not rejected: {other:?}"),
    }
    let summary = check_all_queries_parse(&prom.url(), &vars()).unwrap_or_else(|e| panic!("{e}"));
    let total: usize = dashboards()
        .iter()
        .map(|d| d.queries().unwrap().len())
        .sum();
    assert_eq!(summary.queries, total);
    assert!(total >= 80, "only {total} queries");
    // also with other built-in values (range and rate interval are substituted, not fixed)
    let other = vars()
        .with_range_secs(86_400)
        .with_rate_interval_secs(20)
        .with_interval_secs(5);
    check_all_queries_parse(&prom.url(), &other).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn a_missing_variable_value_fails_the_check_with_its_name() {
    let prom = empty_prometheus();
    let err = check_all_queries_parse(&prom.url(), &Vars::new().with("namespace", "guest"));
    match err {
        Err(DashboardError::Queries { failures, .. }) => {
            assert!(
                failures.iter().all(|f| f.contains("`$action`")),
                "{failures:#?}"
            );
            assert!(
                failures.iter().any(|f| f.contains("whisk-action")),
                "{failures:#?}"
            );
        }
        other => panic!("expected failures for $action, got {other:?}"),
    }
}

#[test]
fn data_check_lists_the_panels_that_would_show_no_data() {
    let prom = empty_prometheus();
    let err = check_all_queries_return_data(&prom.url(), &vars()).unwrap_err();
    let DashboardError::Queries { checked, failures } = err else {
        panic!("{err}")
    };
    // before any pipeline ran, almost every query is empty; only the honest zero fallbacks
    // (`or vector(0)`, `up` of a down target) answer
    assert!(
        failures.len() >= checked - 8,
        "{} of {checked} failed:\n{failures:#?}",
        failures.len()
    );
    assert!(
        failures
            .iter()
            .any(|f| f.contains("\"Activations/s\"") && f.contains("no data"))
    );
    assert!(
        failures.iter().any(|f| f.contains("variable $namespace")),
        "{failures:#?}"
    );
}

#[test]
fn provisioning_files_parse_and_point_at_existing_paths() {
    let root = repo_dashboards_dir();
    let ds = yaml(&root.join("grafana/provisioning/datasources/prometheus.yaml"));
    assert_eq!(ds.get("apiVersion").and_then(|v| v.as_u64()), Some(1));
    let sources = ds
        .get("datasources")
        .and_then(|v| v.as_sequence())
        .expect("datasources");
    assert_eq!(sources.len(), 1);
    assert_eq!(ystr(&sources[0], "type"), "prometheus");
    assert!(ystr(&sources[0], "url").starts_with("http://"));
    assert!(!ystr(&sources[0], "uid").is_empty());

    let prov = yaml(&root.join("grafana/provisioning/dashboards/whisk.yaml"));
    assert_eq!(prov.get("apiVersion").and_then(|v| v.as_u64()), Some(1));
    let providers = prov
        .get("providers")
        .and_then(|v| v.as_sequence())
        .expect("providers");
    assert_eq!(providers.len(), 1);
    assert_eq!(ystr(&providers[0], "type"), "file");
    let path = providers[0]
        .get("options")
        .map(|o| ystr(o, "path"))
        .unwrap_or_default();
    let (mount, repo_dir) = GRAFANA_MOUNTS
        .iter()
        .find(|(container, _)| *container == path)
        .unwrap_or_else(|| panic!("provider path {path} is not a documented mount"));
    let dir: PathBuf = root.join(repo_dir);
    for (file, _) in EXPECTED {
        assert!(
            dir.join(file).is_file(),
            "{mount} → {} lacks {file}",
            dir.display()
        );
    }
    // the provisioning mount holds both provisioning directories
    let prov_dir = root.join(GRAFANA_MOUNTS[0].1);
    assert!(prov_dir.join("datasources").is_dir() && prov_dir.join("dashboards").is_dir());
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    for (container, repo) in GRAFANA_MOUNTS {
        assert!(readme.contains(container) && readme.contains(&format!("dashboards/{repo}")));
    }
}

fn promtool_check(path: &Path) {
    let out = Command::new("promtool")
        .args(["check", "config"])
        .arg(path)
        .output()
        .expect("promtool is installed (apt-get install prometheus)");
    assert!(
        out.status.success(),
        "promtool rejected {}:\n{}{}",
        path.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn promtool_accepts_the_committed_and_the_rendered_scrape_config() {
    let committed = repo_dashboards_dir().join("prometheus/prometheus.yml");
    promtool_check(&committed);
    let cfg = yaml(&committed);
    let jobs = cfg
        .get("scrape_configs")
        .and_then(|v| v.as_sequence())
        .unwrap();
    let job = |name: &str| {
        jobs.iter()
            .find(|j| ystr(j, "job_name") == name)
            .unwrap()
            .clone()
    };
    assert_eq!(
        job("pushgateway")
            .get("honor_labels")
            .and_then(|v| v.as_bool()),
        Some(true)
    );
    // The gateway's own series carry no pushed labels to keep.
    assert_eq!(job("whisk-gateway").get("honor_labels"), None);
    let drops = job("whisk-collector")
        .get("metric_relabel_configs")
        .cloned()
        .unwrap();
    // First the exemplar copy of the time histograms' buckets, then the drop of the rest.
    let copy = &drops.as_sequence().unwrap()[0];
    assert_eq!(
        (
            ystr(copy, "regex"),
            ystr(copy, "target_label"),
            ystr(copy, "replacement")
        ),
        (
            "openwhisk_action_(duration|waitTime|initTime)_seconds_bucket",
            "__name__",
            "openwhisk_exemplar_${1}_seconds_bucket"
        )
    );
    let drop = &drops.as_sequence().unwrap()[1];
    assert_eq!(
        (ystr(drop, "action"), ystr(drop, "regex")),
        ("drop", "openwhisk_(action|namespace)_.*")
    );

    let template = std::fs::read_to_string(&committed).unwrap();
    let rules = repo_dashboards_dir().join("prometheus/rules.yml");
    let rendered = with_rules_file(
        &render_prometheus_config(&template, "127.0.0.1:41001", "127.0.0.1:41002").unwrap(),
        &rules.canonicalize().unwrap(),
    )
    .unwrap();
    assert!(rendered.contains(&format!("['127.0.0.1:41001'] {PUSHGATEWAY_MARKER}")));
    assert!(rendered.contains(&format!("['127.0.0.1:41002'] {COLLECTOR_MARKER}")));
    let rendered = with_gateway_target(&rendered, "127.0.0.1:41003").unwrap();
    assert!(rendered.contains(&format!("['127.0.0.1:41003'] {GATEWAY_MARKER}")));
    assert!(
        rendered
            .lines()
            .all(|l| l.trim_start().starts_with('#') || !l.contains("localhost")),
        "{rendered}"
    );
    let dir = std::env::temp_dir().join(format!("whisk-dash-promtool-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("prometheus.yml");
    std::fs::write(&file, &rendered).unwrap();
    promtool_check(&file);
    let _ = std::fs::remove_dir_all(&dir);
}

fn put(url: &str, body: &str) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    agent
        .put(url)
        .send(body)
        .unwrap_or_else(|e| panic!("PUT {url}: {e}"));
}

#[test]
fn rendered_scrape_config_keeps_pushed_labels_and_drops_platform_metrics_from_collector_job_but_the_exemplar_copy()
 {
    // A real Pushgateway for the `pushgateway` job, and a second one standing in for the
    // collector's /metrics exposition (it serves whatever text format is pushed to it).
    let pgw = Pushgateway::start(&[]).unwrap();
    let collector_stand_in = Pushgateway::start(&[]).unwrap();
    put(
        &format!(
            "{}/metrics/job/openwhisk_actions/instance/0123abcd/namespace/guest/action/hello",
            pgw.url()
        ),
        "# TYPE whisk_container_start_time_seconds gauge\nwhisk_container_start_time_seconds 1700000000\n",
    );
    put(
        &format!("{}/metrics/job/standin", collector_stand_in.url()),
        "# TYPE whisk_collector_live_series gauge\nwhisk_collector_live_series 7\n# TYPE openwhisk_action_memory gauge\nopenwhisk_action_memory{namespace=\"guest\",initiator=\"guest\",action=\"hello\"} 256\n# TYPE openwhisk_action_duration_seconds histogram\nopenwhisk_action_duration_seconds_bucket{namespace=\"guest\",initiator=\"guest\",action=\"hello\",le=\"0.1\"} 2\nopenwhisk_action_duration_seconds_bucket{namespace=\"guest\",initiator=\"guest\",action=\"hello\",le=\"+Inf\"} 3\nopenwhisk_action_duration_seconds_sum{namespace=\"guest\",initiator=\"guest\",action=\"hello\"} 1.5\nopenwhisk_action_duration_seconds_count{namespace=\"guest\",initiator=\"guest\",action=\"hello\"} 3\n",
    );
    let cfg = prometheus_config_for(
        &format!("127.0.0.1:{}", pgw.port()),
        &format!("127.0.0.1:{}", collector_stand_in.port()),
    )
    .unwrap();
    let prom = Prometheus::start(&cfg).unwrap();
    let q = |e: &str| prom.query(e).unwrap();
    let scraped = wait_until(Duration::from_secs(30), || {
        !q(r#"whisk_container_start_time_seconds{job="openwhisk_actions",instance="0123abcd",namespace="guest",action="hello"}"#).is_empty()
            && !q(r#"whisk_collector_live_series{job="whisk-collector"}"#).is_empty()
    });
    assert!(
        scraped,
        "Prometheus did not scrape both targets with the expected labels"
    );
    assert_eq!(prom.query_sum(r#"up{job="pushgateway"}"#).unwrap(), 1.0);
    assert_eq!(prom.query_sum(r#"up{job="whisk-collector"}"#).unwrap(), 1.0);
    assert!(
        q(r#"openwhisk_action_memory{job="whisk-collector"}"#).is_empty(),
        "openwhisk_* not dropped"
    );
    // The time histograms' buckets stay, renamed (they carry the exemplars); nothing else of
    // them, and no series of the collector job under an openwhisk_action_* name.
    assert_eq!(
        prom.query_sum(r#"openwhisk_exemplar_duration_seconds_bucket{job="whisk-collector",action="hello",le="+Inf"}"#)
            .unwrap(),
        3.0
    );
    assert!(q(r#"{job="whisk-collector",__name__=~"openwhisk_action_.+"}"#).is_empty());
    assert!(q(r#"{__name__=~"openwhisk_exemplar_duration_seconds_(sum|count)"}"#).is_empty());
    assert!(q("whisk_container_start_time_seconds{exported_instance!=\"\"}").is_empty());
}

fn queried_families(catalog: &Catalog) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for d in dashboards() {
        for q in d.queries().unwrap() {
            if matches!(q.origin, QueryOrigin::Variable { .. }) {
                // variables select, they do not plot; their metrics must still be cataloged
                for name in metric_names(&q.expr) {
                    assert!(
                        catalog.family_of(&name).is_some(),
                        "{q}: `{name}` not in catalog"
                    );
                }
                continue;
            }
            for name in metric_names(&q.expr) {
                let family = catalog
                    .family_of(&name)
                    .unwrap_or_else(|| panic!("{q}: `{name}` is not in dashboards/catalog.json"));
                out.entry(family.name.clone())
                    .or_default()
                    .push(q.to_string());
            }
        }
    }
    out
}

#[test]
fn every_queried_metric_is_cataloged_and_every_family_is_plotted_or_has_a_reason() {
    let catalog = Catalog::load(&Catalog::repo_path()).unwrap();
    let plotted = queried_families(&catalog);
    for e in &catalog.entries {
        match &e.status {
            PlotStatus::Plotted => {
                assert!(
                    plotted.contains_key(&e.name),
                    "{} is marked plotted but no panel queries it",
                    e.name
                )
            }
            PlotStatus::NotPlotted { reason } => {
                assert!(reason.len() >= 20, "{}: reason too short: {reason}", e.name);
                assert!(
                    !plotted.contains_key(&e.name),
                    "{} is marked not_plotted but {:?} query it",
                    e.name,
                    plotted[&e.name]
                );
            }
        }
    }
    let names: BTreeSet<&str> = catalog.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names.len(),
        catalog.entries.len(),
        "duplicate catalog entries"
    );
}

/// `(name, type)` of every backticked metric in the `name`/`metric` column of design.md tables.
fn design_metric_tables(markdown: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut lines = markdown.lines().peekable();
    while let Some(line) = lines.next() {
        if !line.trim_start().starts_with('|') {
            continue;
        }
        let cells = |l: &str| -> Vec<String> {
            l.trim()
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        };
        let header = cells(line);
        let name_col = header.iter().position(|h| h == "name" || h == "metric");
        let type_col = header.iter().position(|h| h == "type");
        while lines
            .peek()
            .is_some_and(|l| l.trim_start().starts_with('|'))
        {
            let row = cells(lines.next().unwrap_or_default());
            let (Some(n), Some(t)) = (name_col, type_col) else {
                continue;
            };
            let Some(cell) = row.get(n) else { continue };
            let Some(name) = cell.split('`').nth(1) else {
                continue;
            };
            let valid = name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
            if valid && !name.is_empty() {
                let kind = row
                    .get(t)
                    .and_then(|k| k.split_whitespace().next())
                    .unwrap_or_default();
                out.insert(name.to_string(), kind.to_string());
            }
        }
    }
    out
}

/// Catalog sources whose families are exactly the metric tables of docs/design.md.
const DESIGN_SOURCES: &[&str] = &["platform", "collector", "gateway", "sdk", "example"];

#[test]
fn catalog_matches_the_metric_tables_of_design_md() {
    let design_path = repo_dashboards_dir().join("../docs/design.md");
    let design = std::fs::read_to_string(&design_path).unwrap();
    let tables = design_metric_tables(&design);
    assert!(
        tables.len() >= 36,
        "parsed only {} metrics from design.md: {tables:?}",
        tables.len()
    );
    let catalog = Catalog::load(&Catalog::repo_path()).unwrap();
    let from_design: BTreeMap<String, String> = catalog
        .entries
        .iter()
        .filter(|e| DESIGN_SOURCES.contains(&e.source.as_str()))
        .map(|e| (e.name.clone(), e.kind.clone()))
        .collect();
    assert_eq!(
        from_design, tables,
        "catalog ({DESIGN_SOURCES:?}) ≠ design.md tables"
    );
    for e in &catalog.entries {
        match e.source.as_str() {
            s if DESIGN_SOURCES.contains(&s) => {}
            "pushgateway" => assert!(
                design.contains(&format!("`{}`", e.name)),
                "{} not in design.md",
                e.name
            ),
            "prometheus" => assert_eq!(e.name, "up"),
            "rule" => assert!(
                recorded_names().contains(&e.name),
                "{} (source rule) is not recorded by dashboards/prometheus/rules.yml",
                e.name
            ),
            other => panic!("{}: unknown source {other}", e.name),
        }
    }
    // and every recorded series is cataloged, as a gauge of source `rule`
    for name in recorded_names() {
        let e = catalog
            .get(&name)
            .unwrap_or_else(|| panic!("recording rule {name} is not in dashboards/catalog.json"));
        assert_eq!(
            (e.source.as_str(), e.kind.as_str()),
            ("rule", "gauge"),
            "{name}"
        );
    }
}

fn prometheus_dir() -> PathBuf {
    repo_dashboards_dir().join("prometheus")
}

/// The `record:` names of dashboards/prometheus/rules.yml, in file order.
fn recorded_names() -> Vec<String> {
    let rules = yaml(&prometheus_dir().join("rules.yml"));
    let groups = rules
        .get("groups")
        .and_then(|g| g.as_sequence())
        .expect("rules.yml: groups");
    groups
        .iter()
        .flat_map(|g| {
            g.get("rules")
                .and_then(|r| r.as_sequence())
                .cloned()
                .unwrap_or_default()
        })
        .map(|r| ystr(&r, "record").to_string())
        .collect()
}

fn promtool(args: &[&str], dir: &Path) -> (bool, String) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool is installed (apt-get install prometheus)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn recording_rules_pass_their_promtool_unit_tests_and_every_rule_is_tested() {
    let dir = prometheus_dir();
    let (ok, out) = promtool(&["check", "rules", "rules.yml"], &dir);
    assert!(ok, "promtool check rules:\n{out}");
    let (ok, out) = promtool(&["test", "rules", "rules.test.yml"], &dir);
    assert!(ok, "promtool test rules:\n{out}");

    // Every recorded series is asserted by some test case, and names are unique.
    let records = recorded_names();
    assert!(records.len() >= 10, "{records:?}");
    let unique: BTreeSet<&String> = records.iter().collect();
    assert_eq!(unique.len(), records.len(), "a record name is used twice");
    let tests = yaml(&dir.join("rules.test.yml"));
    let tested: BTreeSet<String> = tests
        .get("tests")
        .and_then(|t| t.as_sequence())
        .into_iter()
        .flatten()
        .flat_map(|t| {
            t.get("promql_expr_test")
                .and_then(|p| p.as_sequence())
                .cloned()
                .unwrap_or_default()
        })
        .flat_map(|case| metric_names(ystr(&case, "expr")))
        .collect();
    for r in &records {
        assert!(
            tested.contains(r),
            "rules.yml records {r}, which no test in rules.test.yml checks"
        );
    }

    // The control: a wrong expectation makes promtool fail, naming the expression.
    let tmp = std::env::temp_dir().join(format!("whisk-rules-test-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::copy(dir.join("rules.yml"), tmp.join("rules.yml")).unwrap();
    let text = std::fs::read_to_string(dir.join("rules.test.yml")).unwrap();
    let wrong = text.replacen("value: 33554432", "value: 33554433", 1);
    assert_ne!(wrong, text, "the p50 expectation to break is gone");
    std::fs::write(tmp.join("rules.test.yml"), wrong).unwrap();
    let (ok, out) = promtool(&["test", "rules", "rules.test.yml"], &tmp);
    let _ = std::fs::remove_dir_all(&tmp);
    assert!(!ok, "a wrong expectation passed:\n{out}");
    assert!(
        out.contains("whisk_activation_memory_peak_bytes:p50"),
        "{out}"
    );
}

#[test]
fn rendered_config_loads_every_recording_rule_into_real_prometheus() {
    let prom = empty_prometheus();
    let body = whisk_testkit::http_get(&format!("{}/api/v1/rules?type=record", prom.url()))
        .expect("GET /api/v1/rules");
    let v: Value = serde_json::from_str(&body).expect("rules API answers JSON");
    let loaded: Vec<String> = v["data"]["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .filter_map(|r| r["name"].as_str().map(str::to_string))
        .collect();
    assert_eq!(loaded, recorded_names(), "rules loaded by Prometheus");
    // every rule evaluates without error on an empty TSDB
    for g in v["data"]["groups"].as_array().into_iter().flatten() {
        for r in g["rules"].as_array().into_iter().flatten() {
            assert_ne!(r["health"], "err", "{r}");
        }
    }
}
