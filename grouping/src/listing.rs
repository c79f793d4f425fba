//! Reads the Pushgateway's `/api/v1/metrics` as a stream, one group at a time.
//!
//! The answer holds every sample of every group (58 MB at 10 000 SDK groups); parsing it into
//! a `serde_json::Value` cost 1.3 GB of RSS. Here the body is handed chunk by chunk (a bounded
//! channel) to a blocking thread that runs serde_json over it with visitors that keep only
//! each group's grouping labels, `push_time_seconds`, its first push (see
//! [`ListedGroup::first_push`]) and, for the guard, each family's type; every sample is skipped with [`IgnoredAny`] without being built. Memory stays flat
//! in the number of series stored. The read has a size cap and a deadline that grows with
//! the bytes received (a slow but progressing answer is not cut; a stalled one is).
//!
//! The grouping labels are taken from `push_time_seconds`' sample (which carries exactly the
//! grouping key), falling back to the group's `labels` object: a pushed family named `labels`
//! overwrites that key in the Pushgateway's JSON.
//!
//! The gateway reads its family table this way, the collector's janitor its stale groups and
//! its guard every family's type. The requests themselves (and their timeouts) are theirs.
//! Which side of a clash stored on a shard stays — the family pushed first — is [`Side`] and
//! [`KeptSides`], the one order both the guard and the gateway's table use.

use std::fmt;
use std::io::Read;
use std::time::{Duration, Instant};

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::family::FamilyType;

mod sides;
mod stamp;

pub use sides::{KeptSides, Side};

/// One group of the listing, reduced to what the janitor and the guard need.
#[derive(Debug, Clone, PartialEq)]
pub struct ListedGroup {
    /// The grouping key, `job` included, sorted by label name.
    pub labels: Vec<(String, String)>,
    /// Unix time of the last successful push, if readable.
    pub push_time: Option<f64>,
    /// Unix time of the group's first push, if the listing shows it: the `time_stamp` of
    /// `push_failure_time_seconds` while that gauge is 0. The Pushgateway adds that family on
    /// a group's first write, stamped with that write's time, and keeps it, stamp included,
    /// through every later push and replace; only a failed push restamps it (then its value is
    /// the failure's time and this is `None`). Tenants cannot push that family through the
    /// gateway ([`crate::reserved`]).
    pub first_push: Option<f64>,
    /// `(family, type)` of every family of the group (only when asked for; a family of a type
    /// [`FamilyType`] does not know is left out).
    pub families: Vec<(Box<str>, FamilyType)>,
}

impl ListedGroup {
    /// The value of grouping label `name`.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Bounds of one listing read.
#[derive(Debug, Clone, Copy)]
pub struct ListingLimits {
    /// The answer is refused beyond this many bytes.
    pub max_bytes: u64,
    /// Time allowed before any byte counts.
    pub base_timeout: Duration,
    /// The deadline grows by one second per this many bytes received.
    pub bytes_per_second: u64,
}

impl Default for ListingLimits {
    fn default() -> Self {
        Self {
            max_bytes: 1 << 30,
            base_timeout: Duration::from_secs(10),
            bytes_per_second: 1 << 20,
        }
    }
}

impl ListingLimits {
    /// When the read must be over, given `bytes` received since `start`.
    fn deadline(&self, start: Instant, bytes: u64) -> Instant {
        let grown = Duration::from_secs(bytes / self.bytes_per_second.max(1));
        start + self.base_timeout + grown
    }
}

/// Why a listing could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ListingError {
    /// The answer is larger than the cap.
    #[error("answer larger than {max_bytes} bytes")]
    TooLarge {
        /// The cap.
        max_bytes: u64,
    },
    /// The answer stalled past its deadline.
    #[error("answer not complete after {secs:.1} s ({bytes} bytes read)")]
    TimedOut {
        /// Seconds spent.
        secs: f64,
        /// Bytes received.
        bytes: u64,
    },
    /// The connection failed while reading.
    #[error("reading the answer: {0}")]
    Transport(String),
    /// The answer is not the Pushgateway's JSON.
    #[error("not the Pushgateway's JSON: {0}")]
    Json(String),
}

/// Reads `resp`'s body as a listing, calling `fold(&mut acc, group)` for each group on a
/// blocking thread. Returns the accumulator and the number of groups.
pub async fn read_listing<T, F>(
    mut resp: reqwest::Response,
    limits: ListingLimits,
    want_families: bool,
    acc: T,
    fold: F,
) -> Result<(T, u64), ListingError>
where
    T: Send + 'static,
    F: FnMut(&mut T, ListedGroup) + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(8);
    let parser = tokio::task::spawn_blocking(move || {
        let reader = std::io::BufReader::with_capacity(64 * 1024, ChannelReader::new(rx));
        let mut acc = acc;
        let mut fold = fold;
        let groups = parse_listing(reader, want_families, |g| fold(&mut acc, g))?;
        Ok::<_, serde_json::Error>((acc, groups))
    });
    let start = Instant::now();
    let mut bytes = 0u64;
    let read: Result<(), ListingError> = async {
        loop {
            let deadline = limits.deadline(start, bytes);
            let chunk = tokio::time::timeout_at(deadline.into(), resp.chunk())
                .await
                .map_err(|_| ListingError::TimedOut {
                    secs: start.elapsed().as_secs_f64(),
                    bytes,
                })?
                .map_err(|e| ListingError::Transport(e.to_string()))?;
            let Some(chunk) = chunk else { return Ok(()) };
            bytes += chunk.len() as u64;
            if bytes > limits.max_bytes {
                return Err(ListingError::TooLarge {
                    max_bytes: limits.max_bytes,
                });
            }
            if tx.send(chunk).await.is_err() {
                // The parser stopped early (bad JSON): its error says why.
                return Ok(());
            }
        }
    }
    .await;
    drop(tx);
    let parsed = parser
        .await
        .map_err(|e| ListingError::Json(format!("parser thread: {e}")))?;
    read?;
    parsed.map_err(|e| ListingError::Json(e.to_string()))
}

/// A blocking [`Read`] over chunks arriving on a channel (end of stream when it closes).
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<bytes::Bytes>,
    current: bytes::Bytes,
}

impl ChannelReader {
    fn new(rx: tokio::sync::mpsc::Receiver<bytes::Bytes>) -> Self {
        Self {
            rx,
            current: bytes::Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.current = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        bytes::Buf::advance(&mut self.current, n);
        Ok(n)
    }
}

/// Parses a listing from `reader`, calling `on_group` for every group in order. Returns the
/// number of groups.
pub fn parse_listing<R: Read>(
    reader: R,
    want_families: bool,
    mut on_group: impl FnMut(ListedGroup),
) -> Result<u64, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_reader(reader);
    let groups = de.deserialize_map(TopVisitor {
        want_families,
        on_group: &mut on_group,
    })?;
    de.end()?;
    Ok(groups)
}

/// `{"status": …, "data": [group, …]}`
struct TopVisitor<'f, F> {
    want_families: bool,
    on_group: &'f mut F,
}

impl<'de, F: FnMut(ListedGroup)> Visitor<'de> for TopVisitor<'_, F> {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the Pushgateway's {\"status\",\"data\"} object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<u64, A::Error> {
        let mut groups = None;
        while let Some(key) = map.next_key::<Key>()? {
            if &*key.0 == "data" {
                groups = Some(map.next_value_seed(DataSeed {
                    want_families: self.want_families,
                    on_group: &mut *self.on_group,
                })?);
            } else {
                let _ = map.next_value::<IgnoredAny>()?;
            }
        }
        groups.ok_or_else(|| de::Error::missing_field("data"))
    }
}

/// A map key, borrowed when the input allows it.
struct Key(Box<str>);

impl<'de> de::Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(Key(v.into()))
            }
        }
        d.deserialize_str(V)
    }
}

/// `[group, …]`, handing each group to the callback as soon as it is read.
struct DataSeed<'f, F> {
    want_families: bool,
    on_group: &'f mut F,
}

impl<'de, F: FnMut(ListedGroup)> DeserializeSeed<'de> for DataSeed<'_, F> {
    type Value = u64;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<u64, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, F: FnMut(ListedGroup)> Visitor<'de> for DataSeed<'_, F> {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of groups")
    }

    // An empty Pushgateway answers `"data": null` (seen with some versions): no group.
    fn visit_unit<E: de::Error>(self) -> Result<u64, E> {
        Ok(0)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<u64, A::Error> {
        let mut n = 0;
        while let Some(group) = seq.next_element_seed(GroupSeed {
            want_families: self.want_families,
        })? {
            n += 1;
            if let Some(group) = group {
                (self.on_group)(group);
            }
        }
        Ok(n)
    }
}

/// One group object; `None` when it carries no grouping key at all.
struct GroupSeed {
    want_families: bool,
}

impl<'de> DeserializeSeed<'de> for GroupSeed {
    type Value = Option<ListedGroup>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for GroupSeed {
    type Value = Option<ListedGroup>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a group object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut labels_object: Option<Vec<(String, String)>> = None;
        let mut push_key: Option<Vec<(String, String)>> = None;
        let mut push_time = None;
        let mut first_push = None;
        let mut families = Vec::new();
        while let Some(Key(key)) = map.next_key::<Key>()? {
            if &*key == "last_push_successful" {
                let _ = map.next_value::<IgnoredAny>()?;
                continue;
            }
            let is_push_time = &*key == "push_time_seconds";
            let is_push_failure = &*key == "push_failure_time_seconds";
            let keep = match (is_push_time, is_push_failure) {
                (true, _) => Keep::LabelsAndValue,
                (_, true) => Keep::ValueAndStamp,
                _ => Keep::Nothing,
            };
            let entry = map.next_value_seed(EntrySeed { keep })?;
            match entry {
                Entry::Family { kind, first, stamp } => {
                    if is_push_time {
                        if let Some((labels, value)) = first {
                            push_time = value.trim().parse::<f64>().ok();
                            push_key = Some(labels);
                        }
                    } else if is_push_failure {
                        let never_failed =
                            first.is_some_and(|(_, value)| value.trim().parse::<f64>() == Ok(0.0));
                        first_push = stamp
                            .filter(|_| never_failed)
                            .and_then(|s| stamp::unix_seconds(&s));
                    }
                    if let Some(kind) = FamilyType::parse(&kind).filter(|_| self.want_families) {
                        families.push((key, kind));
                    }
                }
                Entry::Labels(pairs) if &*key == "labels" => labels_object = Some(pairs),
                Entry::Labels(_) => {}
            }
        }
        let Some(mut labels) = push_key.or(labels_object) else {
            return Ok(None);
        };
        labels.sort();
        Ok(Some(ListedGroup {
            labels,
            push_time,
            first_push,
            families,
        }))
    }
}

/// A value of a group object: a family (`{"type", "metrics", …}`) or the `labels` object.
enum Entry {
    Family {
        kind: Box<str>,
        /// Labels and value of the first sample (only when asked for; labels only with
        /// [`Keep::LabelsAndValue`]).
        first: Option<(Vec<(String, String)>, String)>,
        /// Its `time_stamp` (only with [`Keep::ValueAndStamp`]).
        stamp: Option<String>,
    },
    Labels(Vec<(String, String)>),
}

/// What to keep of a family beyond its type.
#[derive(Clone, Copy, PartialEq)]
enum Keep {
    Nothing,
    /// The first sample's labels and value (`push_time_seconds`: the grouping key).
    LabelsAndValue,
    /// The first sample's value and the family's `time_stamp` (`push_failure_time_seconds`).
    ValueAndStamp,
}

struct EntrySeed {
    keep: Keep,
}

impl<'de> DeserializeSeed<'de> for EntrySeed {
    type Value = Entry;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Entry, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for EntrySeed {
    type Value = Entry;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a metric family or a label object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entry, A::Error> {
        let mut strings = Vec::new();
        let mut kind = None;
        let mut metrics = None;
        while let Some(Key(key)) = map.next_key::<Key>()? {
            match &*key {
                "metrics" => {
                    metrics = Some(map.next_value_seed(SamplesSeed { keep: self.keep })?);
                }
                "type" => {
                    if let Some(t) = map.next_value::<MaybeString>()?.0 {
                        kind = Some(t.clone().into_boxed_str());
                        strings.push((key.into_string(), t));
                    }
                }
                // A family's other fields; never a label object's only content.
                "help" | "time_stamp" => {
                    if let Some(s) = map.next_value::<MaybeString>()?.0 {
                        strings.push((key.into_string(), s));
                    }
                }
                _ => {
                    if let Some(s) = map.next_value::<MaybeString>()?.0 {
                        strings.push((key.into_string(), s));
                    }
                }
            }
        }
        Ok(match metrics {
            Some(first) => Entry::Family {
                kind: kind.unwrap_or_else(|| "UNTYPED".into()),
                first,
                stamp: (self.keep == Keep::ValueAndStamp)
                    .then(|| strings.into_iter().find(|(k, _)| k == "time_stamp"))
                    .flatten()
                    .map(|(_, v)| v),
            },
            None => Entry::Labels(strings),
        })
    }

    // Anything else (a number, a bool) is neither: an empty label set.
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Entry, E> {
        Ok(Entry::Labels(Vec::new()))
    }
}

/// A string, or `None` for any other JSON value (skipped unparsed).
struct MaybeString(Option<String>);

impl<'de> de::Deserialize<'de> for MaybeString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MaybeString;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<MaybeString, E> {
                Ok(MaybeString(Some(v.to_string())))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<MaybeString, E> {
                Ok(MaybeString(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<MaybeString, E> {
                Ok(MaybeString(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<MaybeString, E> {
                Ok(MaybeString(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<MaybeString, E> {
                Ok(MaybeString(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<MaybeString, E> {
                Ok(MaybeString(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<MaybeString, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(MaybeString(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MaybeString, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(MaybeString(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// A family's `metrics` array: the first sample's labels and value are kept when asked for,
/// every other sample is skipped unparsed.
struct SamplesSeed {
    keep: Keep,
}

type FirstSample = Option<(Vec<(String, String)>, String)>;

impl<'de> DeserializeSeed<'de> for SamplesSeed {
    type Value = FirstSample;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<FirstSample, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for SamplesSeed {
    type Value = FirstSample;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of samples")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<FirstSample, A::Error> {
        let first = match self.keep {
            Keep::Nothing => None,
            Keep::LabelsAndValue => seq
                .next_element::<Sample>()?
                .map(|s| (s.labels.unwrap_or_default(), s.value.unwrap_or_default())),
            Keep::ValueAndStamp => seq
                .next_element::<ValueOnly>()?
                .map(|s| (Vec::new(), s.value.unwrap_or_default())),
        };
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(first)
    }

    fn visit_unit<E: de::Error>(self) -> Result<FirstSample, E> {
        Ok(None)
    }

    // A label named `metrics` in a `labels` object: not a family, nothing to keep.
    fn visit_str<E: de::Error>(self, _: &str) -> Result<FirstSample, E> {
        Ok(None)
    }
}

/// One sample of `push_failure_time_seconds`: its labels are skipped unparsed.
#[derive(serde::Deserialize)]
struct ValueOnly {
    #[serde(default)]
    value: Option<String>,
}

/// One sample of `push_time_seconds`.
#[derive(serde::Deserialize)]
struct Sample {
    #[serde(default, deserialize_with = "string_pairs")]
    labels: Option<Vec<(String, String)>>,
    #[serde(default)]
    value: Option<String>,
}

fn string_pairs<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<(String, String)>>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<Vec<(String, String)>>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object of label values")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut pairs = Vec::new();
            while let Some(Key(k)) = map.next_key::<Key>()? {
                if let Some(v) = map.next_value::<MaybeString>()?.0 {
                    pairs.push((k.into_string(), v));
                }
            }
            Ok(Some(pairs))
        }
    }
    d.deserialize_map(V)
}

#[cfg(test)]
mod tests;
