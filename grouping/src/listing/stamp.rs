//! The Pushgateway's family `time_stamp` (Go's RFC 3339 with nanoseconds, in the
//! Pushgateway's local zone) as Unix seconds.

/// Unix seconds of `2006-01-02T15:04:05[.fraction](Z|±hh:mm)`; `None` for anything else.
pub(super) fn unix_seconds(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    let shape = b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && matches!(b[10], b'T' | b't')
        && b[13] == b':'
        && b[16] == b':';
    if !shape {
        return None;
    }
    let (year, month, day) = (digits(s, 0, 4)?, digits(s, 5, 7)?, digits(s, 8, 10)?);
    let (hour, min, sec) = (digits(s, 11, 13)?, digits(s, 14, 16)?, digits(s, 17, 19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut nanos = 0i64;
    if let Some(fraction) = rest.strip_prefix('.') {
        let n = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        for (i, d) in fraction.bytes().take(n).enumerate() {
            if i < 9 {
                nanos = nanos * 10 + i64::from(d - b'0');
            }
        }
        nanos *= 10i64.pow(9 - n.min(9) as u32);
        rest = &fraction[n..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            if rest.len() != 6 || rest.as_bytes()[3] != b':' {
                return None;
            }
            sign * (digits(rest, 1, 3)? * 3600 + digits(rest, 4, 6)? * 60)
        }
    };
    let secs = days_from_civil(year, month, day) * 86_400 + hour * 3600 + min * 60 + sec - offset;
    Some(secs as f64 + nanos as f64 / 1e9)
}

/// The decimal number in `s[from..to]`, digits only.
fn digits(s: &str, from: usize, to: usize) -> Option<i64> {
    s.get(from..to)?.bytes().try_fold(0i64, |n, c| {
        c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0'))
    })
}

/// Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_go_rfc3339_in_any_zone_and_refuses_anything_else() {
        assert_eq!(unix_seconds("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(unix_seconds("2000-03-01T00:00:00Z"), Some(951_868_800.0));
        assert_eq!(unix_seconds("2026-12-07T06:06:19Z"), Some(1_796_623_579.0));
        assert_eq!(
            unix_seconds("2026-12-07T07:36:19+01:30"),
            Some(1_796_623_579.0)
        );
        assert_eq!(
            unix_seconds("2026-12-07T01:06:19-05:00"),
            Some(1_796_623_579.0)
        );
        assert_eq!(
            unix_seconds("2026-12-07T06:06:19.25Z"),
            Some(1_796_623_579.25)
        );
        // Go's zero time, for completeness: far in the past, still a number.
        assert_eq!(
            unix_seconds("0001-01-01T00:00:00Z"),
            Some(-62_135_596_800.0)
        );
        for bad in [
            "",
            "2026-12-07",
            "2026-12-07 06:06:19Z",
            "2026-13-07T06:06:19Z",
            "2026-12-07T06:06:19",
            "2026-12-07T06:06:19.Z",
            "2026-12-07T06:06:19+0100",
            "2026-12-07T06:06:19Zjunk",
            "2026-1a-07T06:06:19Z",
        ] {
            assert_eq!(unix_seconds(bad), None, "{bad:?}");
        }
    }
}
