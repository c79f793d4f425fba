//! Rendering `dashboards/prometheus/prometheus.yml` for services on dynamic ports.
//!
//! The committed file is valid Prometheus config with the default targets `localhost:9091`
//! (Pushgateway) and `localhost:9095` (collector). The line holding each target carries a
//! marker comment; rendering replaces the default target on that line and nothing else.

use super::error::DashboardError;
use super::model::repo_dashboards_dir;

/// Marker comment on the Pushgateway target line.
pub const PUSHGATEWAY_MARKER: &str = "# PUSHGATEWAY_TARGET";
/// Marker comment on the collector target line.
pub const COLLECTOR_MARKER: &str = "# COLLECTOR_TARGET";
const PUSHGATEWAY_DEFAULT: &str = "localhost:9091";
const COLLECTOR_DEFAULT: &str = "localhost:9095";

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
        pushgateway,
    )?;
    replace_marked(&text, COLLECTOR_MARKER, COLLECTOR_DEFAULT, collector)
}

/// Reads the repository's `dashboards/prometheus/prometheus.yml` and renders it with
/// [`render_prometheus_config`]: what tests and the demo give `whisk_testkit::Prometheus`.
pub fn prometheus_config_for(pushgateway: &str, collector: &str) -> Result<String, DashboardError> {
    let path = repo_dashboards_dir()
        .join("prometheus")
        .join("prometheus.yml");
    let template = std::fs::read_to_string(&path).map_err(|source| DashboardError::Read {
        path: path.clone(),
        source,
    })?;
    render_prometheus_config(&template, pushgateway, collector)
}

fn replace_marked(
    text: &str,
    marker: &'static str,
    default: &'static str,
    target: &str,
) -> Result<String, DashboardError> {
    let target = target.trim_start_matches("http://").trim_end_matches('/');
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
    fn missing_marker_is_an_error_naming_it() {
        let err = render_prometheus_config("scrape_configs: []\n", "a:1", "b:2").unwrap_err();
        assert!(err.to_string().contains(PUSHGATEWAY_MARKER), "{err}");
    }
}
