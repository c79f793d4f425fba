//! `dashboards/catalog.json`: every exported metric family, plotted or deliberately not.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::error::DashboardError;
use super::model::repo_dashboards_dir;

/// Whether a family is shown on a dashboard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlotStatus {
    /// Some dashboard query selects it.
    Plotted,
    /// Deliberately left out, and why.
    NotPlotted {
        /// The reason (never empty).
        reason: String,
    },
}

/// One metric family of the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogEntry {
    /// Family name (histograms without `_bucket`/`_sum`/`_count`).
    pub name: String,
    /// `counter`, `gauge`, `histogram` or `summary`.
    pub kind: String,
    /// Who exports it: `platform`, `collector`, `gateway`, `sdk`, `example`, `pushgateway`,
    /// `prometheus`, or `rule` (recorded by `dashboards/prometheus/rules.yml`).
    pub source: String,
    /// Plotted or not.
    pub status: PlotStatus,
}

/// The metric catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalog {
    /// The families, in file order.
    pub entries: Vec<CatalogEntry>,
}

impl Catalog {
    /// The repository's `dashboards/catalog.json`.
    pub fn repo_path() -> PathBuf {
        repo_dashboards_dir().join("catalog.json")
    }

    /// Reads and validates a catalog file: every entry has a name, type and source, a status
    /// of `plotted` or `not_plotted`, and a non-empty reason when not plotted.
    pub fn load(path: &Path) -> Result<Self, DashboardError> {
        let json = super::model::read_json(path)?;
        let shape = |message: String| DashboardError::Shape {
            path: path.to_path_buf(),
            message,
        };
        let families = json
            .get("families")
            .and_then(Value::as_array)
            .ok_or_else(|| shape("missing array `families`".into()))?;
        let mut entries = Vec::with_capacity(families.len());
        for (i, f) in families.iter().enumerate() {
            let field = |key: &str| {
                f.get(key)
                    .and_then(Value::as_str)
                    .filter(|s| !s.trim().is_empty())
                    .map(str::to_string)
                    .ok_or_else(|| shape(format!("families[{i}]: missing or empty `{key}`")))
            };
            let name = field("name")?;
            let status = match field("status")?.as_str() {
                "plotted" => PlotStatus::Plotted,
                "not_plotted" => PlotStatus::NotPlotted {
                    reason: field("reason").map_err(|_| {
                        shape(format!(
                            "families[{i}] ({name}): not_plotted needs a `reason`"
                        ))
                    })?,
                },
                other => {
                    return Err(shape(format!(
                        "families[{i}] ({name}): status `{other}` is not plotted or not_plotted"
                    )));
                }
            };
            entries.push(CatalogEntry {
                kind: field("type")?,
                source: field("source")?,
                name,
                status,
            });
        }
        Ok(Self { entries })
    }

    /// The entry named exactly `name`.
    pub fn get(&self, name: &str) -> Option<&CatalogEntry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// The family a series name belongs to: itself, or a histogram/summary family for names
    /// ending in `_bucket`, `_sum` or `_count`.
    pub fn family_of(&self, series: &str) -> Option<&CatalogEntry> {
        if let Some(e) = self.get(series) {
            return Some(e);
        }
        ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
            let base = series.strip_suffix(suffix)?;
            self.get(base)
                .filter(|e| e.kind == "histogram" || (e.kind == "summary" && *suffix != "_bucket"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, kind: &str) -> CatalogEntry {
        CatalogEntry {
            name: name.into(),
            kind: kind.into(),
            source: "sdk".into(),
            status: PlotStatus::Plotted,
        }
    }

    #[test]
    fn histogram_series_map_to_their_family_but_gauges_do_not() {
        let c = Catalog {
            entries: vec![entry("h_seconds", "histogram"), entry("g", "gauge")],
        };
        assert_eq!(
            c.family_of("h_seconds_bucket").map(|e| e.name.as_str()),
            Some("h_seconds")
        );
        assert_eq!(
            c.family_of("h_seconds_count").map(|e| e.name.as_str()),
            Some("h_seconds")
        );
        assert!(c.family_of("g_count").is_none());
        assert!(c.family_of("unknown").is_none());
    }
}
