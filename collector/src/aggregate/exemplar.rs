//! Exemplars of the platform time histograms (wait, init, duration): for each bucket, the
//! latest observation that fell into it, with its activation id, value and event timestamp.
//!
//! Bounded by construction: at most one exemplar per bucket of the three histograms of an
//! action (3 × 16), held sparsely (only buckets that saw an activation with a usable id) and
//! with the usual 32-hex-digit OpenWhisk ids packed into 16 bytes. An id that would take the
//! label set `{activation_id="…"}` past OpenMetrics' 128 characters is refused whole (never
//! truncated into some other activation's id) and counted by the aggregate.

use std::fmt;

use whisk_grouping::TIME_BUCKETS;

/// The exemplar's one label.
pub(crate) const LABEL: &str = "activation_id";

/// OpenMetrics' limit on an exemplar's label names and values together, in characters.
pub(crate) const MAX_LABEL_SET_CHARS: usize = 128;

/// An activation id as held in an exemplar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ActivationId {
    /// 32 lowercase hex digits (what OpenWhisk generates), packed.
    Hex([u8; 16]),
    /// Anything else that fits the label limit, as received.
    Text(Box<str>),
}

/// An id refused because the label set would exceed [`MAX_LABEL_SET_CHARS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IdTooLong;

impl ActivationId {
    /// The exemplar id of `id`: `Ok(None)` for an empty id, `Err` when
    /// `activation_id` + the id exceed 128 characters.
    pub(crate) fn new(id: &str) -> Result<Option<Self>, IdTooLong> {
        if id.is_empty() {
            return Ok(None);
        }
        // Characters, not bytes; an id of no more bytes than the limit needs no count.
        if LABEL.len() + id.len() > MAX_LABEL_SET_CHARS
            && LABEL.len() + id.chars().count() > MAX_LABEL_SET_CHARS
        {
            return Err(IdTooLong);
        }
        Ok(Some(
            pack_hex(id).map_or_else(|| Self::Text(id.into()), Self::Hex),
        ))
    }
}

fn pack_hex(id: &str) -> Option<[u8; 16]> {
    let b = id.as_bytes();
    if b.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (o, pair) in out.iter_mut().zip(b.chunks_exact(2)) {
        let (hi, lo) = (NIBBLE[usize::from(pair[0])], NIBBLE[usize::from(pair[1])]);
        // Both are digits iff neither has a bit above the low four.
        if (hi | lo) > 0x0f {
            return None;
        }
        *o = hi << 4 | lo;
    }
    Some(out)
}

/// The value of each lowercase hex digit; 0xff for every other byte.
const NIBBLE: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut c = 0;
    while c < 10 {
        t[b'0' as usize + c] = c as u8;
        c += 1;
    }
    let mut c = 0;
    while c < 6 {
        t[b'a' as usize + c] = 10 + c as u8;
        c += 1;
    }
    t
};

impl fmt::Display for ActivationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Hex(bytes) => bytes.iter().try_for_each(|b| write!(f, "{b:02x}")),
            Self::Text(s) => f.write_str(s),
        }
    }
}

/// One exemplar: which activation, what it observed, when.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Exemplar {
    /// The activation id (label `activation_id`).
    pub(crate) id: ActivationId,
    /// The observed value, in the histogram's unit (seconds).
    pub(crate) value: f64,
    /// The event's envelope timestamp (ms since the epoch), else when it was applied.
    pub(crate) timestamp_ms: i64,
}

/// The platform histograms that carry exemplars.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Timed {
    /// `openwhisk_action_waitTime_seconds`.
    Wait,
    /// `openwhisk_action_initTime_seconds`.
    Init,
    /// `openwhisk_action_duration_seconds`.
    Duration,
}

/// Buckets of each time histogram: its bounds and `+Inf`.
const BUCKETS: usize = TIME_BUCKETS.len() + 1;

/// The exemplars of one action's time histograms: bit `histogram × 16 + bucket` of `held`
/// says whether that bucket holds one, and `slots` holds them in bit order, so finding a
/// bucket's slot is a count of the bits below it; an empty set allocates nothing.
#[derive(Debug, Clone, Default)]
pub(crate) struct Exemplars {
    held: u64,
    slots: Box<[Exemplar]>,
}

/// The bit of `bucket` (0..N, N = `+Inf`) of `histogram` in [`Exemplars::held`].
fn bit(histogram: Timed, bucket: usize) -> Option<u32> {
    if bucket >= BUCKETS {
        return None;
    }
    u32::try_from(histogram as usize * BUCKETS + bucket).ok()
}

impl Exemplars {
    /// The slot of `bit` and whether it is held.
    fn slot(&self, bit: u32) -> (usize, bool) {
        let below = self.held & ((1u64 << bit) - 1);
        (below.count_ones() as usize, self.held & (1u64 << bit) != 0)
    }

    /// Makes `exemplar` the latest of `bucket` (0..N, N = `+Inf`) of `histogram`.
    pub(crate) fn set(&mut self, histogram: Timed, bucket: usize, exemplar: Exemplar) {
        let Some(bit) = bit(histogram, bucket) else {
            return;
        };
        match self.slot(bit) {
            (i, true) => self.slots[i] = exemplar,
            (i, false) => {
                // A new bucket is rare (a handful per action over its life): exact-size
                // reallocation keeps the steady footprint at the slots alone.
                let mut v = std::mem::take(&mut self.slots).into_vec();
                v.reserve_exact(1);
                v.insert(i, exemplar);
                self.slots = v.into_boxed_slice();
                self.held |= 1u64 << bit;
            }
        }
    }

    /// The latest exemplar of `bucket` (0..N, N = `+Inf`) of `histogram`, if any.
    pub(crate) fn get(&self, histogram: Timed, bucket: usize) -> Option<&Exemplar> {
        match self.slot(bit(histogram, bucket)?) {
            (i, true) => self.slots.get(i),
            (_, false) => None,
        }
    }

    /// Exemplars held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openwhisk_ids_are_packed_and_print_back_unchanged() {
        let id = "841e3f99f40346429e3f99f4000000ab";
        let a = ActivationId::new(id).unwrap().unwrap();
        assert!(matches!(a, ActivationId::Hex(_)));
        assert_eq!(a.to_string(), id);
        let upper = "841E3F99F40346429E3F99F4000000AB";
        let b = ActivationId::new(upper).unwrap().unwrap();
        assert!(matches!(b, ActivationId::Text(_)));
        assert_eq!(b.to_string(), upper);
        assert_eq!(ActivationId::new("").unwrap(), None);
    }

    #[test]
    fn an_id_past_the_label_limit_is_refused_not_truncated() {
        let fits = "x".repeat(MAX_LABEL_SET_CHARS - LABEL.len());
        assert_eq!(ActivationId::new(&fits).unwrap().unwrap().to_string(), fits);
        let over = "x".repeat(MAX_LABEL_SET_CHARS - LABEL.len() + 1);
        assert_eq!(ActivationId::new(&over), Err(IdTooLong));
        // Characters, not bytes: 115 two-byte characters still fit.
        let wide = "é".repeat(MAX_LABEL_SET_CHARS - LABEL.len());
        assert!(ActivationId::new(&wide).unwrap().is_some());
        assert_eq!(ActivationId::new(&"a".repeat(200)), Err(IdTooLong));
    }

    #[test]
    fn each_bucket_keeps_its_latest_exemplar() {
        let ex = |id: &str, v: f64| Exemplar {
            id: ActivationId::new(id).unwrap().unwrap(),
            value: v,
            timestamp_ms: 1,
        };
        let mut set = Exemplars::default();
        set.set(Timed::Duration, 3, ex("a", 0.1));
        set.set(Timed::Wait, 3, ex("b", 0.2));
        set.set(Timed::Duration, 0, ex("c", 0.3));
        set.set(Timed::Duration, 3, ex("d", 0.4));
        assert_eq!(set.len(), 3);
        assert_eq!(set.get(Timed::Duration, 3), Some(&ex("d", 0.4)));
        assert_eq!(set.get(Timed::Wait, 3), Some(&ex("b", 0.2)));
        assert_eq!(set.get(Timed::Duration, 0), Some(&ex("c", 0.3)));
        assert_eq!(set.get(Timed::Init, 3), None);
    }

    #[test]
    fn an_exemplar_costs_40_bytes_and_an_action_without_any_nothing_on_the_heap() {
        // The bound of docs/design.md: at most 48 slots per action (3 histograms × 16
        // buckets), each this size (plus a long id's own allocation, rare).
        assert_eq!(BUCKETS * 3, 48);
        assert_eq!(std::mem::size_of::<Exemplar>(), 40);
        assert_eq!(std::mem::size_of::<Exemplars>(), 24);
        assert_eq!(Exemplars::default().len(), 0);
    }
}
