//! Reading typed action parameters with clear errors.

use serde_json::Value;

/// A parameter that is present but unusable. The message names the parameter and what it expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamError(pub String);

impl std::fmt::Display for ParamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParamError {}

/// `params[key]` as a string, `default` when absent or null.
pub(crate) fn string<'a>(
    params: &'a Value,
    key: &str,
    default: &'a str,
) -> Result<&'a str, ParamError> {
    match params.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(ParamError(format!(
            "parameter `{key}` must be a string, got {other}"
        ))),
    }
}

/// `params[key]` as a non-negative integer (a JSON number or a numeric string), `default` when
/// absent or null.
pub(crate) fn count(params: &Value, key: &str, default: u64) -> Result<u64, ParamError> {
    let bad = |v: &Value| {
        ParamError(format!(
            "parameter `{key}` must be a non-negative integer, got {v}"
        ))
    };
    match params.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(v @ Value::Number(n)) => n.as_u64().ok_or_else(|| bad(v)),
        Some(v @ Value::String(s)) => s.trim().parse().map_err(|_| bad(v)),
        Some(v) => Err(bad(v)),
    }
}

/// `params[key]` as a finite non-negative number (a JSON number or a numeric string), `default`
/// when absent or null.
pub(crate) fn amount(params: &Value, key: &str, default: f64) -> Result<f64, ParamError> {
    let bad = |v: &Value| {
        ParamError(format!(
            "parameter `{key}` must be a non-negative number, got {v}"
        ))
    };
    let x = match params.get(key) {
        None | Some(Value::Null) => return Ok(default),
        Some(v @ Value::Number(n)) => n.as_f64().ok_or_else(|| bad(v))?,
        Some(v @ Value::String(s)) => s.trim().parse::<f64>().map_err(|_| bad(v))?,
        Some(v) => return Err(bad(v)),
    };
    if x.is_finite() && x >= 0.0 {
        Ok(x)
    } else {
        Err(bad(&params[key]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn absent_and_null_params_take_the_default() {
        let p = json!({"n": null});
        assert_eq!(count(&p, "n", 7), Ok(7));
        assert_eq!(count(&p, "missing", 3), Ok(3));
        assert_eq!(string(&p, "n", "eu"), Ok("eu"));
        assert_eq!(amount(&p, "n", 1.5), Ok(1.5));
    }

    #[test]
    fn numeric_strings_are_accepted() {
        let p = json!({"n": " 12 ", "x": "2.5"});
        assert_eq!(count(&p, "n", 0), Ok(12));
        assert_eq!(amount(&p, "x", 0.0), Ok(2.5));
    }

    #[test]
    fn negative_or_malformed_numbers_are_rejected_with_the_parameter_name() {
        let p = json!({"n": -1, "m": "many", "x": -0.5, "b": true});
        for err in [
            count(&p, "n", 0).unwrap_err(),
            count(&p, "m", 0).unwrap_err(),
            count(&p, "b", 0).unwrap_err(),
        ] {
            assert!(err.0.contains("must be a non-negative integer"), "{err}");
        }
        assert!(amount(&p, "x", 0.0).unwrap_err().0.contains("`x`"));
        assert!(
            string(&p, "n", "")
                .unwrap_err()
                .0
                .contains("`n` must be a string")
        );
    }
}
