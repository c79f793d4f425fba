//! Translations remembered by the body's shape, so that a container's next push — the same
//! text but for its sample values — is not parsed and translated again.
//!
//! The shape is the validation cache's ([`crate::verdicts::shape_of`]: each sample line's value
//! token cut out); two bodies of one shape are the same text but for their values, read by the
//! parser into the same families and series (the argument is in [`crate::verdicts`]).
//! [`whisk_remote_write::translate()`] only copies values (a series' value is a sample's, or
//! 0 for a `_sum`/`_count` the body lacks), so a shape's translation is its series plus, per
//! series, which sample line's value it takes ([`Source`]). That plan is learnt on a shape's
//! first push by translating a probe — the body with sample line `j`'s value replaced by
//! `j + 1` — and kept only if it reproduces that push's own translation exactly.
//!
//! A plan is found by its shape's **verdict**, not by the shape again: the validation cache
//! hands every body of a remembered shape the same `Arc<Validated>` (it compared the shape
//! byte for byte), so the verdict's address names the shape without a second scan, hash and
//! comparison of the body (~7 % of the gateway's CPU per push, perf). A plan holds a `Weak` of
//! its verdict, so that address cannot be reused by another verdict while the plan exists. A
//! verdict the cache does not hold (an uncacheable body, `--validation-cache-bytes 0`) is not
//! the same for the next body of its shape: such a push is translated without a plan.
//!
//! Bounded by bytes (a quarter of `--remote-write-memory-bytes`): an entry costs its series
//! (counted again here: a plan keeps them alive), its sources and [`ENTRY_OVERHEAD`]; past the
//! bound, plans whose verdict the cache dropped go first, then arbitrary ones.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use whisk_remote_write::{Untranslatable, translate};

use super::groups::{Groups, Shape};
use crate::validate::Validated;

/// Bytes an entry costs besides its series and sources (map slot, `Arc`s, rounding).
pub(crate) const ENTRY_OVERHEAD: usize = 128;

/// Where a translated series' value comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Source {
    /// The value of the body's sample line of this index (sample lines counted from 0).
    Sample(usize),
    /// A constant (0 for a `_sum` or `_count` the body does not have).
    Fixed(f64),
}

#[derive(Debug)]
struct Plan {
    /// Keeps the verdict's allocation (not its value) alive: its address stays this plan's.
    verdict: Weak<Validated>,
    shape: Arc<Shape>,
    sources: Box<[Source]>,
    cost: usize,
}

/// Remembered translations, by the verdict of the body's shape.
#[derive(Debug)]
pub(crate) struct Plans {
    max_bytes: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    by_verdict: HashMap<usize, Arc<Plan>>,
    bytes: usize,
}

/// A push translated: its interned series and one value each.
#[derive(Debug)]
pub(crate) struct Translation {
    /// The series (shared by every group that pushed them).
    pub shape: Arc<Shape>,
    /// Their values, in order.
    pub values: Vec<f64>,
}

impl Plans {
    /// At most `max_bytes` of plans.
    pub(crate) fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Bytes held.
    pub(crate) fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Translates `body` (a push the validation cache judged `verdict`), by its shape's plan
    /// when one is known; the series are interned in `groups`.
    pub(crate) fn translate(
        &self,
        body: &[u8],
        verdict: &Arc<Validated>,
        groups: &Groups,
    ) -> Result<Translation, Untranslatable> {
        // Held by the validation cache too, or not the verdict of a remembered shape.
        let cached = Arc::strong_count(verdict) > 1;
        let id = Arc::as_ptr(verdict) as usize;
        let known = cached
            .then(|| self.lock().by_verdict.get(&id).cloned())
            .flatten();
        if let Some(plan) = known {
            if let Some(values) = read(&plan.sources, body) {
                let shape = Arc::clone(&plan.shape);
                return Ok(Translation { shape, values });
            }
        }
        let t = translate(body)?;
        let shape = groups.intern(t.series);
        if cached {
            if let Some(sources) = learn(body, &shape, &t.values) {
                self.insert(id, Arc::downgrade(verdict), Arc::clone(&shape), sources);
            }
        }
        Ok(Translation {
            shape,
            values: t.values,
        })
    }

    fn insert(&self, id: usize, verdict: Weak<Validated>, shape: Arc<Shape>, sources: Vec<Source>) {
        let cost = shape.bytes() + sources.len() * std::mem::size_of::<Source>() + ENTRY_OVERHEAD;
        if cost > self.max_bytes {
            return;
        }
        let mut inner = self.lock();
        if inner.bytes + cost > self.max_bytes {
            let mut freed = 0;
            inner.by_verdict.retain(|_, p| {
                let live = p.verdict.strong_count() > 0;
                if !live {
                    freed += p.cost;
                }
                live
            });
            inner.bytes -= freed;
        }
        while inner.bytes + cost > self.max_bytes {
            let Some(victim) = inner.by_verdict.keys().next().copied() else {
                break;
            };
            if let Some(p) = inner.by_verdict.remove(&victim) {
                inner.bytes -= p.cost;
            }
        }
        let plan = Arc::new(Plan {
            verdict,
            shape,
            sources: sources.into_boxed_slice(),
            cost,
        });
        if let Some(old) = inner.by_verdict.insert(id, plan) {
            inner.bytes -= old.cost;
        }
        inner.bytes += cost;
    }
}

/// The series' values of `body` by a plan's `sources`; `None` if a value does not parse.
fn read(sources: &[Source], body: &[u8]) -> Option<Vec<f64>> {
    let samples = sample_values(body)?;
    sources
        .iter()
        .map(|s| match *s {
            Source::Sample(i) => samples.get(i).copied(),
            Source::Fixed(v) => Some(v),
        })
        .collect()
}

/// Each sample line's value, in order: the token after the line's last blank, read as the
/// translation reads a value. The lines are those [`crate::verdicts::shape_of`] cuts.
fn sample_values(body: &[u8]) -> Option<Vec<f64>> {
    let mut out = Vec::with_capacity(128);
    for line in sample_lines(body) {
        let token = value_token(line)?;
        let text = std::str::from_utf8(token).ok()?;
        out.push(text.trim().parse::<f64>().ok()?);
    }
    Some(out)
}

fn sample_lines(body: &[u8]) -> impl Iterator<Item = &[u8]> {
    body.split(|&b| b == b'\n').filter(|l| {
        l.first()
            .is_some_and(|&c| whisk_grouping::is_metric_name_start(c))
    })
}

fn value_token(line: &[u8]) -> Option<&[u8]> {
    let cut = line.iter().rposition(|&b| b == b' ' || b == b'\t')?;
    Some(&line[cut + 1..])
}

/// The plan of `body`'s shape, if translating the probe gives `shape`'s series and reading
/// `body` by it gives exactly `values` (its own translation).
fn learn(body: &[u8], shape: &Shape, values: &[f64]) -> Option<Vec<Source>> {
    let mut probe = Vec::with_capacity(body.len() + 64);
    let mut n = 0usize;
    for (i, line) in body.split(|&b| b == b'\n').enumerate() {
        if i > 0 {
            probe.push(b'\n');
        }
        let is_sample = line
            .first()
            .is_some_and(|&c| whisk_grouping::is_metric_name_start(c));
        match value_token(line).filter(|_| is_sample) {
            Some(token) => {
                probe.extend_from_slice(&line[..line.len() - token.len()]);
                n += 1;
                probe.extend_from_slice(n.to_string().as_bytes());
            }
            None => probe.extend_from_slice(line),
        }
    }
    let t = translate(&probe).ok()?;
    if t.series != shape.series {
        return None;
    }
    #[allow(clippy::cast_precision_loss)]
    let sources: Vec<Source> = t
        .values
        .iter()
        .map(|&v| {
            if v >= 1.0 && v <= n as f64 && v.fract() == 0.0 {
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                Source::Sample(v as usize - 1)
            } else {
                Source::Fixed(v)
            }
        })
        .collect();
    let same = read(&sources, body).is_some_and(|got| {
        got.len() == values.len()
            && got
                .iter()
                .zip(values)
                .all(|(a, b)| a.to_bits() == b.to_bits())
    });
    same.then_some(sources)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::telemetry::Telemetry;
    use crate::verdicts::Verdicts;

    fn verdicts() -> Verdicts {
        Verdicts::new(10_000, 1 << 20, Telemetry::new())
    }

    const BODY: &str = "# HELP jobs_total Jobs.\n# TYPE jobs_total counter\njobs_total{kind=\"a\"} 3\njobs_total{kind=\"b\"} 4\n# TYPE h histogram\nh_bucket{le=\"0.5\"} 1\nh_bucket{le=\"1.0\"} 2\nh_count 2\n# TYPE s summary\ns{quantile=\"0.5\"} 0.25\ns_sum 7\n# TYPE g gauge\ng NaN\n";

    fn with_values(body: &str, bump: f64) -> String {
        body.lines()
            .map(|l| match l.rsplit_once(' ') {
                Some((head, v)) if !l.starts_with('#') => match v.parse::<f64>() {
                    Ok(x) if x.is_finite() => format!("{head} {}\n", x + bump),
                    _ => format!("{l}\n"),
                },
                _ => format!("{l}\n"),
            })
            .collect()
    }

    #[test]
    fn a_known_shape_is_read_without_a_parse_and_agrees_with_the_translation() {
        let groups = Groups::new(10, 1 << 20, Duration::from_secs(600));
        let plans = Plans::new(1 << 20);
        let verdicts = verdicts();
        let verdict = verdicts.validate(BODY.as_bytes()).unwrap();
        let first = plans.translate(BODY.as_bytes(), &verdict, &groups).unwrap();
        assert!(plans.bytes() > 0, "the shape's plan is kept");
        for bump in [1.0, 2.5, -7.0, 1e6] {
            let body = with_values(BODY, bump);
            let verdict = verdicts.validate(body.as_bytes()).unwrap();
            let got = plans.translate(body.as_bytes(), &verdict, &groups).unwrap();
            let want = translate(body.as_bytes()).unwrap();
            assert!(Arc::ptr_eq(&got.shape, &first.shape));
            assert_eq!(got.shape.series, want.series);
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got.values), bits(&want.values), "bump {bump}");
        }
    }

    #[test]
    fn missing_sums_and_counts_stay_zero_and_the_inf_bucket_follows_the_count() {
        let groups = Groups::new(10, 1 << 20, Duration::from_secs(600));
        let plans = Plans::new(1 << 20);
        let verdicts = verdicts();
        let verdict = verdicts.validate(BODY.as_bytes()).unwrap();
        plans.translate(BODY.as_bytes(), &verdict, &groups).unwrap();
        let body = with_values(BODY, 10.0);
        let verdict = verdicts.validate(body.as_bytes()).unwrap();
        let got = plans.translate(body.as_bytes(), &verdict, &groups).unwrap();
        let value = |name: &str, extra: Option<(&str, &str)>| {
            let i = got
                .shape
                .series
                .iter()
                .position(|s| {
                    s[0].value == name
                        && extra.is_none_or(|(n, v)| s.iter().any(|l| l.name == n && l.value == v))
                })
                .unwrap();
            got.values[i]
        };
        assert_eq!(value("h_bucket", Some(("le", "+Inf"))), 12.0);
        assert_eq!(value("h_sum", None), 0.0);
        assert_eq!(value("s_count", None), 0.0);
        assert_eq!(value("s_sum", None), 17.0);
    }

    #[test]
    fn a_verdict_the_cache_does_not_hold_gets_no_plan_and_the_push_is_still_translated() {
        let groups = Groups::new(10, 1 << 20, Duration::from_secs(600));
        let plans = Plans::new(1 << 20);
        let off = Verdicts::new(10_000, 0, Telemetry::new());
        for bump in [0.0, 1.0] {
            let body = with_values(BODY, bump);
            let verdict = off.validate(body.as_bytes()).unwrap();
            let got = plans.translate(body.as_bytes(), &verdict, &groups).unwrap();
            let want = translate(body.as_bytes()).unwrap();
            assert_eq!(got.shape.series, want.series);
            assert_eq!(got.values.len(), want.values.len());
        }
        assert_eq!(plans.bytes(), 0);
    }

    #[test]
    fn the_byte_bound_holds() {
        let groups = Groups::new(100, 1 << 20, Duration::from_secs(600));
        let plans = Plans::new(4096);
        let verdicts = verdicts();
        for i in 0..50 {
            let body = format!("m{i} 1\nn{i} 2\n");
            let verdict = verdicts.validate(body.as_bytes()).unwrap();
            plans.translate(body.as_bytes(), &verdict, &groups).unwrap();
            assert!(plans.bytes() <= 4096);
        }
    }
}
