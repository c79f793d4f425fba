//! The exemplars a platform write carries: each time histogram bucket's latest exemplar
//! (`{activation_id="<id>"}`, its value, the event's timestamp; see `crate::aggregate`) rides
//! on that bucket's `_bucket` series, in field 3 of its `TimeSeries`.
//!
//! An exemplar is sent once: the write of a snapshot carries only the exemplars that changed
//! since the last acknowledged write (a new activation in that bucket, or a bucket, action or
//! process new since). What was sent is remembered as two 64-bit hashes per bucket that holds
//! an exemplar now (the bucket's identity and the exemplar's), so it is bounded by the
//! aggregate's own exemplars (≤ 48 per action) and forgets buckets that went away. A write
//! that failed is not remembered: the next snapshot carries its exemplars again. Resending
//! would be harmless anyway (Prometheus drops an exemplar identical to the latest it holds
//! for that series), only larger.

use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};

use hashbrown::{DefaultHashBuilder, HashMap};
use whisk_grouping::TIME_BUCKETS;
use whisk_remote_write::{Exemplar, Label, SeriesLabels};

use crate::aggregate::{ActionSeries, Aggregator, EXEMPLAR_LABEL, Timed};
use crate::render::timed_family;

const TIMED: [Timed; 3] = [Timed::Wait, Timed::Init, Timed::Duration];

/// What the acknowledged writes carried: bucket hash → exemplar hash.
#[derive(Debug, Default)]
pub(super) struct Sent {
    hasher: DefaultHashBuilder,
    by_bucket: HashMap<u64, u64>,
}

/// The exemplars of one snapshot's write.
#[derive(Debug, Default)]
pub(super) struct Picked {
    /// (index into the translated series, its exemplar), only those not sent before.
    pub(super) exemplars: Vec<(usize, Exemplar)>,
    /// Every bucket's exemplar now: what [`Sent`] becomes once the write is acknowledged.
    current: HashMap<u64, u64>,
}

impl Sent {
    /// The exemplars of `agg` for the translated `series` of its snapshot, each on its
    /// `_bucket` series, without those an acknowledged write already carried.
    pub(super) fn pick(&self, agg: &Aggregator, series: &[SeriesLabels]) -> Picked {
        let actions: HashMap<(&str, &str, &str), &ActionSeries> = agg
            .actions
            .iter()
            .map(|(k, s)| ((k.namespace(), k.initiator(), k.action()), &**s))
            .collect();
        let mut picked = Picked::default();
        for (i, labels) in series.iter().enumerate() {
            let Some(at) = bucket_of(labels) else {
                continue;
            };
            let Some(ex) = actions
                .get(&(at.namespace, at.initiator, at.action))
                .and_then(|s| s.exemplar(at.which, at.bucket))
            else {
                continue;
            };
            let bucket = self.hasher.hash_one(&at);
            let mut h = self.hasher.build_hasher();
            ex.value.to_bits().hash(&mut h);
            ex.timestamp_ms.hash(&mut h);
            let _ = fmt::write(&mut HashWriter(&mut h), format_args!("{}", ex.id));
            let fingerprint = h.finish();
            picked.current.insert(bucket, fingerprint);
            if self.by_bucket.get(&bucket) != Some(&fingerprint) {
                picked.exemplars.push((
                    i,
                    Exemplar {
                        labels: vec![Label::new(EXEMPLAR_LABEL, ex.id.to_string())],
                        value: ex.value,
                        timestamp: ex.timestamp_ms,
                    },
                ));
            }
        }
        picked
    }

    /// Remembers what an acknowledged write carried (and forgets buckets that are gone).
    pub(super) fn acknowledged(&mut self, picked: Picked) {
        self.by_bucket = picked.current;
    }

    /// Buckets remembered.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.by_bucket.len()
    }
}

/// One time histogram bucket of one action, as named by a translated series.
struct BucketOf<'a> {
    namespace: &'a str,
    initiator: &'a str,
    action: &'a str,
    which: Timed,
    /// 0..N of [`TIME_BUCKETS`], N = `+Inf`.
    bucket: usize,
}

impl Hash for BucketOf<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self.namespace, self.initiator, self.action).hash(state);
        (self.which as u8, self.bucket).hash(state);
    }
}

/// The bucket a series is, when it is a `_bucket` series of a time histogram. A label the
/// series lacks had an empty value (a scrape stores none).
fn bucket_of(labels: &SeriesLabels) -> Option<BucketOf<'_>> {
    let get = |name: &str| {
        labels
            .iter()
            .find(|l| l.name == name)
            .map_or("", |l| l.value.as_str())
    };
    let name = get("__name__").strip_suffix("_bucket")?;
    let which = TIMED.into_iter().find(|t| timed_family(*t) == name)?;
    let le = get("le");
    let bucket = if le == "+Inf" {
        TIME_BUCKETS.len()
    } else {
        let v: f64 = le.parse().ok()?;
        TIME_BUCKETS.iter().position(|b| *b == v)?
    };
    Some(BucketOf {
        namespace: get("namespace"),
        initiator: get("initiator"),
        action: get("action"),
        which,
        bucket,
    })
}

/// Feeds formatted text to a hasher without building the string.
struct HashWriter<'a, H>(&'a mut H);

impl<H: Hasher> fmt::Write for HashWriter<'_, H> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.write(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::parse;

    fn aggregate(events: &[String]) -> Aggregator {
        let mut agg = Aggregator::new(100);
        for e in events {
            agg.apply(&parse(e.as_bytes()).unwrap());
        }
        agg
    }

    fn activation(id: &str, duration_ms: u64, ts: i64) -> String {
        format!(
            r#"{{"body":{{"activationId":"{id}","name":"guest/hello","kind":"nodejs:20","memory":256,"statusCode":0,"duration":{duration_ms},"waitTime":3,"initTime":0,"conductor":false}},"eventType":"Activation","source":"invoker0","namespace":"guest","timestamp":{ts}}}"#
        )
    }

    fn translated(agg: &Aggregator) -> Vec<SeriesLabels> {
        whisk_remote_write::translate(agg.render_to_string().as_bytes())
            .unwrap()
            .series
    }

    fn le_and_id<'a>(series: &'a [SeriesLabels], picked: &'a Picked) -> Vec<(&'a str, &'a str)> {
        let mut v: Vec<(&str, &str)> = picked
            .exemplars
            .iter()
            .map(|(i, e)| {
                let s = &series[*i];
                let name = &s.iter().find(|l| l.name == "__name__").unwrap().value;
                let le = &s.iter().find(|l| l.name == "le").unwrap().value;
                assert!(name.ends_with("_bucket"), "{name}");
                (le.as_str(), e.labels[0].value.as_str())
            })
            .collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn each_exemplar_rides_on_its_bucket_series_once_until_it_changes() {
        let a = "0123456789abcdef0123456789abcdef";
        let b = "fedcba9876543210fedcba9876543210";
        let mut agg = aggregate(&[activation(a, 40, 1_000), activation(b, 700, 2_000)]);
        let series = translated(&agg);
        let mut sent = Sent::default();
        let first = sent.pick(&agg, &series);
        // Duration 0.04 s in le="0.05", 0.7 s in le="1"; both waits (3 ms) in le="0.005",
        // whose exemplar is the latest, b.
        assert_eq!(
            le_and_id(&series, &first),
            [("0.005", b), ("0.05", a), ("1", b)]
        );
        let (i, ex) = &first.exemplars[0];
        assert_eq!(
            ex.labels,
            [Label::new("activation_id", ex.labels[0].value.clone())]
        );
        assert!(
            series[*i]
                .iter()
                .any(|l| l.name == "namespace" && l.value == "guest")
        );
        // Not acknowledged: the next write carries them again.
        assert_eq!(sent.pick(&agg, &series).exemplars.len(), 3);
        sent.acknowledged(first);
        assert_eq!(sent.len(), 3);
        assert!(sent.pick(&agg, &series).exemplars.is_empty());
        // A new activation in le="1" replaces b there, and only that bucket is sent.
        let c = "c0000000000000000000000000000000";
        agg.apply(&parse(activation(c, 800, 3_000).as_bytes()).unwrap());
        let series = translated(&agg);
        let next = sent.pick(&agg, &series);
        assert_eq!(le_and_id(&series, &next), [("0.005", c), ("1", c)]);
        let ex = &next.exemplars[1].1;
        assert_eq!((ex.value, ex.timestamp), (0.8, 3_000));
    }

    #[test]
    fn series_of_other_families_and_ids_never_seen_carry_no_exemplar() {
        let agg = aggregate(&[activation("", 40, 1_000)]);
        let series = translated(&agg);
        assert!(series.len() > 20);
        assert!(Sent::default().pick(&agg, &series).exemplars.is_empty());
        let mut odd = series[0].clone();
        odd.retain(|l| l.name != "__name__");
        odd.push(Label::new(
            "__name__",
            "openwhisk_action_duration_seconds_bucket",
        ));
        odd.push(Label::new("le", "0.07"));
        assert!(bucket_of(&odd).is_none());
    }
}
