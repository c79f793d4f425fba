//! Conventions every whisk-metrics binary and library shares besides names on the wire: the
//! duration syntax of flags and environment variables, and the buckets of time histograms.

use std::time::Duration;

/// Upper bounds (seconds) of every time histogram: the platform's wait/init/duration
/// histograms (collector) and the SDK's activation duration, so the two can be compared
/// bucket by bucket.
pub const TIME_BUCKETS: [f64; 15] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// Parses a duration as every flag and environment variable of the project spells it:
/// `250ms`, `15s`, `15m`, `1h` or a bare number of seconds (fractions allowed, e.g. `1.5`).
///
/// ```
/// use std::time::Duration;
/// use whisk_grouping::parse_duration;
///
/// assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
/// assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
/// assert!(parse_duration("5y").is_err());
/// ```
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, unit) = match t.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (use e.g. 250ms, 15s, 15m, 1h or 30)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

/// [`parse_duration`] for settings where zero makes no sense (timeouts, intervals).
pub fn parse_duration_nonzero(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        Err(format!("{s:?}: must be greater than zero"))
    } else {
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations_in_every_documented_form() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration(" 30 "), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        for bad in ["15x", "abc", "-3s", "5 parsecs", "", "1e300h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert!(parse_duration_nonzero("0s").is_err());
        assert_eq!(parse_duration_nonzero("2s"), Ok(Duration::from_secs(2)));
    }

    #[test]
    fn time_buckets_ascend() {
        assert!(TIME_BUCKETS.windows(2).all(|w| w[0] < w[1]));
    }
}
