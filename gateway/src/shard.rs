//! Which Pushgateway a group goes to: rendezvous (highest-random-weight) hashing of the
//! group's instance id over the shards' URLs.
//!
//! `score(shard, instance) = mix64(fnv1a64(url) ^ fnv1a64(instance))`, and the shard with the
//! highest score wins (ties: the earlier URL). A container (one instance id) therefore always
//! lands on the same shard; the choice depends only on the set of URLs, not their order, so
//! replicas agree without talking; adding an N+1-th shard moves only the groups that now score
//! highest on it (about 1/(N+1) of them), and removing one moves only its own groups. The hash
//! is fixed here (FNV-1a, then the SplitMix64 finaliser), never `std`'s randomised hasher.

/// FNV-1a, 64 bit.
pub(crate) fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The SplitMix64 finaliser: spreads every input bit over the output.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The shards, by their identity (the URL as configured).
#[derive(Debug, Clone)]
pub struct Shards {
    seeds: Vec<u64>,
}

impl Shards {
    /// Shards identified by `ids` (the Pushgateway URLs).
    pub fn new<S: AsRef<str>>(ids: &[S]) -> Self {
        Self {
            seeds: ids.iter().map(|s| fnv1a64(s.as_ref().as_bytes())).collect(),
        }
    }

    /// Number of shards.
    pub fn len(&self) -> usize {
        self.seeds.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.seeds.is_empty()
    }

    /// Index of the shard that owns `instance` (0 when there is a single one).
    pub fn pick(&self, instance: &str) -> usize {
        let key = fnv1a64(instance.as_bytes());
        let mut best = (0usize, 0u64);
        for (i, seed) in self.seeds.iter().enumerate() {
            let score = mix64(seed ^ key);
            if i == 0 || score > best.1 {
                best = (i, score);
            }
        }
        best.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("http://pushgateway-{i}:9091"))
            .collect()
    }

    fn instance(i: usize) -> String {
        format!("{:032x}", mix64(i as u64))
    }

    #[test]
    fn an_instance_always_lands_on_the_same_shard_whatever_the_url_order() {
        let urls = ids(3);
        let shards = Shards::new(&urls);
        let mut reversed = urls.clone();
        reversed.reverse();
        let other = Shards::new(&reversed);
        for i in 0..1000 {
            let id = instance(i);
            let a = shards.pick(&id);
            assert_eq!(a, shards.pick(&id));
            assert_eq!(urls[a], reversed[other.pick(&id)]);
        }
    }

    #[test]
    fn groups_spread_evenly_over_the_shards() {
        let shards = Shards::new(&ids(3));
        let mut counts = [0usize; 3];
        for i in 0..30_000 {
            counts[shards.pick(&instance(i))] += 1;
        }
        for c in counts {
            assert!((9_000..=11_000).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn adding_a_shard_moves_only_the_groups_it_takes() {
        let three = Shards::new(&ids(3));
        let four = Shards::new(&ids(4));
        let mut moved = 0;
        for i in 0..20_000 {
            let id = instance(i);
            let (a, b) = (three.pick(&id), four.pick(&id));
            if a != b {
                assert_eq!(b, 3, "a group moved between old shards");
                moved += 1;
            }
        }
        assert!((4_000..=6_000).contains(&moved), "{moved} of 20000 moved");
    }

    #[test]
    fn a_single_shard_takes_everything() {
        let one = Shards::new(&ids(1));
        assert_eq!(one.pick("x"), 0);
        assert_eq!(one.len(), 1);
    }
}
