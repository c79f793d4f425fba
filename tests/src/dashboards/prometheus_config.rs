//! Rendering `dashboards/prometheus/prometheus.yml` for services on dynamic ports.
//!
//! The committed file is valid Prometheus config with the default targets `localhost:9091`
//! (Pushgateway), `localhost:9096` (whisk-gateway) and `localhost:9095` (collector). The line
//! holding each target carries a marker comment; rendering replaces the default target on that
//! line and nothing else. Several targets of one job (Pushgateway shards, collector replicas)
//! are given as one string joined with `', '` (e.g. `a:1', 'b:2`), which the quotes around the
//! target on the marked line complete to a YAML list.
//! The `rule_files` entry (`rules.yml`, relative to the config file) carries [`RULES_MARKER`]:
//! [`prometheus_config_for`] points it at the repository's rules file by absolute path, since
//! the rendered config is written elsewhere.

use std::path::Path;

use super::error::DashboardError;
use super::model::repo_dashboards_dir;

/// Marker comment on the Pushgateway target line.
pub const PUSHGATEWAY_MARKER: &str = "# PUSHGATEWAY_TARGET";
/// Marker comment on the collector target line.
pub const COLLECTOR_MARKER: &str = "# COLLECTOR_TARGET";
/// Marker comment on the whisk-gateway target line.
pub const GATEWAY_MARKER: &str = "# GATEWAY_TARGET";
/// Marker comment on the `rule_files` entry of the recording rules.
pub const RULES_MARKER: &str = "# RULES_FILE";
const RULES_DEFAULT: &str = "rules.yml";
const PUSHGATEWAY_DEFAULT: &str = "localhost:9091";
const COLLECTOR_DEFAULT: &str = "localhost:9095";
const GATEWAY_DEFAULT: &str = "localhost:9096";

/// Replaces the default targets of `template` with `pushgateway` and `collector`
/// (`host:port`; a leading `http://` and a trailing `/` are dropped).
pub fn render_prometheus_config(
    template: &str,
    pushgateway: &str,
    collector: &str,
) -> Result<String, DashboardError> {
    let text = replace_marked(
        template,
        PUSHGATEWAY_MARKER,
        PUSHGATEWAY_DEFAULT,
        host_port(pushgateway),
    )?;
    replace_marked(
        &text,
        COLLECTOR_MARKER,
        COLLECTOR_DEFAULT,
        host_port(collector),
    )
}

/// Reads the repository's `dashboards/prometheus/prometheus.yml` and renders it with
/// [`render_prometheus_config`] and [`with_rules_file`] (the repository's
/// `dashboards/prometheus/rules.yml`): what tests and the demo give `whisk_testkit::Prometheus`.
pub fn prometheus_config_for(pushgateway: &str, collector: &str) -> Result<String, DashboardError> {
    let dir = repo_dashboards_dir().join("prometheus");
    let path = dir.join("prometheus.yml");
    let template = std::fs::read_to_string(&path).map_err(|source| DashboardError::Read {
        path: path.clone(),
        source,
    })?;
    let text = render_prometheus_config(&template, pushgateway, collector)?;
    let rules = dir.join(RULES_DEFAULT);
    let rules = rules.canonicalize().unwrap_or(rules);
    with_rules_file(&text, &rules)
}

/// Replaces the default whisk-gateway target of `config` (the line marked [`GATEWAY_MARKER`])
/// with `gateway` (`host:port`; a leading `http://` and a trailing `/` are dropped).
pub fn with_gateway_target(config: &str, gateway: &str) -> Result<String, DashboardError> {
    replace_marked(config, GATEWAY_MARKER, GATEWAY_DEFAULT, host_port(gateway))
}

/// Points the `rule_files` entry marked [`RULES_MARKER`] at `rules` (give an absolute path: a
/// relative one is read relative to wherever the config file is written).
pub fn with_rules_file(config: &str, rules: &Path) -> Result<String, DashboardError> {
    let quoted = format!("'{}'", rules.display().to_string().replace('\'', "''"));
    replace_marked(config, RULES_MARKER, RULES_DEFAULT, &quoted)
}

/// `host:port` of a target given as `http://host:port/` or `host:port`.
fn host_port(target: &str) -> &str {
    target.trim_start_matches("http://").trim_end_matches('/')
}

fn replace_marked(
    text: &str,
    marker: &'static str,
    default: &'static str,
    target: &str,
) -> Result<String, DashboardError> {
    let mut found = false;
    let lines: Vec<String> = text
        .split_inclusive('\n')
        .map(|line| {
            if line.contains(marker) && line.contains(default) {
                found = true;
                line.replacen(default, target, 1)
            } else {
                line.to_string()
            }
        })
        .collect();
    if !found {
        return Err(DashboardError::MissingMarker { marker, default });
    }
    Ok(lines.concat())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = "scrape_configs:\n  - job_name: pushgateway\n    static_configs:\n      - targets: ['localhost:9091'] # PUSHGATEWAY_TARGET\n  - job_name: whisk-collector\n    static_configs:\n      - targets: ['localhost:9095'] # COLLECTOR_TARGET\n";

    #[test]
    fn replaces_only_the_marked_default_targets() {
        let out =
            render_prometheus_config(TEMPLATE, "127.0.0.1:4001", "http://127.0.0.1:4002/").unwrap();
        assert!(
            out.contains("['127.0.0.1:4001'] # PUSHGATEWAY_TARGET"),
            "{out}"
        );
        assert!(
            out.contains("['127.0.0.1:4002'] # COLLECTOR_TARGET"),
            "{out}"
        );
        assert!(!out.contains("localhost"), "{out}");
    }

    #[test]
    fn rules_file_entry_becomes_the_given_absolute_path() {
        let template = "rule_files:\n  - rules.yml # RULES_FILE\nscrape_configs: []\n";
        let out = with_rules_file(template, Path::new("/repo/dash's/rules.yml")).unwrap();
        assert_eq!(
            out,
            "rule_files:\n  - '/repo/dash''s/rules.yml' # RULES_FILE\nscrape_configs: []\n"
        );
        let err = with_rules_file(TEMPLATE, Path::new("/r.yml")).unwrap_err();
        assert!(err.to_string().contains(RULES_MARKER), "{err}");
    }

    #[test]
    fn repository_config_loads_the_repository_rules_file() {
        let out = prometheus_config_for("127.0.0.1:1", "127.0.0.1:2").unwrap();
        let line = out
            .lines()
            .find(|l| l.contains(RULES_MARKER) && !l.trim_start().starts_with('#'))
            .expect("rules line");
        let path = line
            .split('\'')
            .nth(1)
            .expect("quoted path on the rules line");
        assert!(Path::new(path).is_absolute(), "{line}");
        assert!(Path::new(path).is_file(), "{line}");
    }

    #[test]
    fn gateway_target_is_replaced_in_the_repository_config() {
        let out = prometheus_config_for("127.0.0.1:1", "127.0.0.1:2").unwrap();
        let out = with_gateway_target(&out, "http://127.0.0.1:4003/").unwrap();
        assert!(out.contains("['127.0.0.1:4003'] # GATEWAY_TARGET"), "{out}");
        let err = with_gateway_target(TEMPLATE, "a:1").unwrap_err();
        assert!(err.to_string().contains(GATEWAY_MARKER), "{err}");
    }

    #[test]
    fn missing_marker_is_an_error_naming_it() {
        let err = render_prometheus_config("scrape_configs: []\n", "a:1", "b:2").unwrap_err();
        assert!(err.to_string().contains(PUSHGATEWAY_MARKER), "{err}");
    }
}
