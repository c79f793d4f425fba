//! Loading dashboards and walking their panels, targets and template variables.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::error::DashboardError;
use super::promql::label_values_to_promql;

/// The repository's `dashboards/` directory (found from this crate's manifest directory).
pub fn repo_dashboards_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("dashboards")
}

/// One Grafana dashboard file.
#[derive(Debug, Clone)]
pub struct Dashboard {
    path: PathBuf,
    json: Value,
}

/// Where a query comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryOrigin {
    /// A panel's target.
    Panel {
        /// Panel id.
        id: i64,
        /// Panel title.
        title: String,
        /// Target refId (`A`, `B`, …).
        ref_id: String,
    },
    /// A template variable's `label_values(…)` query, as the equivalent PromQL.
    Variable {
        /// Variable name.
        name: String,
    },
}

/// One PromQL expression of a dashboard, variables not yet substituted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// The dashboard's uid.
    pub dashboard: String,
    /// Panel target or template variable.
    pub origin: QueryOrigin,
    /// The expression as written in the dashboard.
    pub expr: String,
}

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.origin {
            QueryOrigin::Panel { id, title, ref_id } => {
                write!(
                    f,
                    "{} panel {id} \"{title}\" target {ref_id}",
                    self.dashboard
                )
            }
            QueryOrigin::Variable { name } => write!(f, "{} variable ${name}", self.dashboard),
        }
    }
}

/// Loads every `*.json` in `dir` (sorted by file name).
pub fn load_dashboards(dir: &Path) -> Result<Vec<Dashboard>, DashboardError> {
    let read_err = |source| DashboardError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(read_err)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files.iter().map(|p| Dashboard::load(p)).collect()
}

/// Reads a JSON file, naming the file in the error.
pub(crate) fn read_json(path: &Path) -> Result<Value, DashboardError> {
    let text = std::fs::read_to_string(path).map_err(|source| DashboardError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| DashboardError::Json {
        path: path.to_path_buf(),
        source,
    })
}

impl Dashboard {
    /// Reads and parses one dashboard file.
    pub fn load(path: &Path) -> Result<Self, DashboardError> {
        let json = read_json(path)?;
        if !json.is_object() {
            return Err(DashboardError::Shape {
                path: path.to_path_buf(),
                message: "top level is not a JSON object".into(),
            });
        }
        Ok(Self {
            path: path.to_path_buf(),
            json,
        })
    }

    /// The file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The raw JSON.
    pub fn json(&self) -> &Value {
        &self.json
    }

    /// `uid` (empty when missing).
    pub fn uid(&self) -> &str {
        self.json
            .get("uid")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// `title` (empty when missing).
    pub fn title(&self) -> &str {
        self.json
            .get("title")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// `schemaVersion` (0 when missing).
    pub fn schema_version(&self) -> u64 {
        self.json
            .get("schemaVersion")
            .and_then(Value::as_u64)
            .unwrap_or(0)
    }

    /// Every panel, rows included, with the panels nested in collapsed rows after their row.
    pub fn panels(&self) -> Vec<&Value> {
        let mut out = Vec::new();
        for panel in array(&self.json, "panels") {
            out.push(panel);
            out.extend(array(panel, "panels"));
        }
        out
    }

    /// The panels that show data (every panel except rows).
    pub fn data_panels(&self) -> Vec<&Value> {
        self.panels()
            .into_iter()
            .filter(|p| panel_type(p) != "row")
            .collect()
    }

    /// The template variables (`templating.list`).
    pub fn variables(&self) -> Vec<&Value> {
        self.json
            .get("templating")
            .map(|t| array(t, "list"))
            .unwrap_or_default()
    }

    /// Names of the template variables.
    pub fn variable_names(&self) -> Vec<&str> {
        self.variables()
            .into_iter()
            .filter_map(|v| v.get("name")?.as_str())
            .collect()
    }

    /// Every panel target expression, then every query variable as PromQL.
    pub fn queries(&self) -> Result<Vec<Query>, DashboardError> {
        let mut out = Vec::new();
        for panel in self.data_panels() {
            let id = panel.get("id").and_then(Value::as_i64).unwrap_or(-1);
            let title = panel
                .get("title")
                .and_then(Value::as_str)
                .unwrap_or_default();
            for target in array(panel, "targets") {
                let ref_id = target
                    .get("refId")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let expr = target
                    .get("expr")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                out.push(Query {
                    dashboard: self.uid().to_string(),
                    origin: QueryOrigin::Panel {
                        id,
                        title: title.to_string(),
                        ref_id: ref_id.to_string(),
                    },
                    expr: expr.to_string(),
                });
            }
        }
        for var in self.variables() {
            if var.get("type").and_then(Value::as_str) != Some("query") {
                continue;
            }
            let name = var.get("name").and_then(Value::as_str).unwrap_or_default();
            let raw = variable_query(var).unwrap_or_default();
            let expr = label_values_to_promql(raw).ok_or_else(|| DashboardError::Shape {
                path: self.path.clone(),
                message: format!(
                    "variable `{name}`: query `{raw}` is not label_values(…) or query_result(…)"
                ),
            })?;
            out.push(Query {
                dashboard: self.uid().to_string(),
                origin: QueryOrigin::Variable {
                    name: name.to_string(),
                },
                expr,
            });
        }
        Ok(out)
    }
}

/// The type of a panel (`timeseries`, `row`, …; empty when missing).
pub(crate) fn panel_type(panel: &Value) -> &str {
    panel
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// The query text of a query variable: `query` as a string, or `query.query`, else `definition`.
fn variable_query(var: &Value) -> Option<&str> {
    match var.get("query") {
        Some(Value::String(s)) if !s.is_empty() => Some(s),
        Some(Value::Object(o)) => o.get("query").and_then(Value::as_str),
        _ => var.get("definition").and_then(Value::as_str),
    }
}

fn array<'a>(v: &'a Value, key: &str) -> Vec<&'a Value> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}
