//! The consistent-hash ring: which nodes own a key.
//!
//! Each physical node is placed at [`DEFAULT_VNODES`] points ("virtual nodes")
//! on a 64-bit circle by xxh3-64 with the fixed seed [`RING_SEED`], hashing
//! `"{node}#{i}"`. A key hashes (same function, same seed) to a point; its
//! *preference list* is the first N distinct physical nodes found walking
//! clockwise from that point. Every SDK instance and proxy that knows the same
//! node names therefore computes the same placement.
//!
//! The ring is pure and synchronous: no I/O, no clocks, no health. It is
//! rebuilt only when membership changes; an unhealthy node stays on the ring
//! and is merely skipped by the caller (failover), so placement never flaps.

pub use distcache_proto::ring::{RING_SEED, key_hash};
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Virtual nodes per physical node unless configured otherwise.
pub const DEFAULT_VNODES: usize = 150;

/// Top bits of a hash that index the bucket table narrowing each lookup.
const BUCKET_BITS: u32 = 12;

/// A consistent-hash ring over named nodes.
///
/// ```
/// use distcache::ring::Ring;
/// let ring = Ring::new(["http://a:7001", "http://b:7001", "http://c:7001"], 150);
/// let owners = ring.preference_list(b"user:123", 2);
/// assert_eq!(owners.len(), 2);
/// assert_ne!(owners[0], owners[1]);
/// println!("primary: {}", ring.node(owners[0]));
/// ```
#[derive(Debug, Clone)]
pub struct Ring {
    nodes: Vec<String>,
    /// Points on the circle, sorted.
    hashes: Vec<u64>,
    /// `owners[i]` is the node index of `hashes[i]`.
    owners: Vec<u32>,
    /// `buckets[b]` is the first point whose top `BUCKET_BITS` bits are at
    /// least `b`: a lookup searches only its bucket's few points instead of
    /// the whole ring (about 10 ns instead of a 10-step binary search).
    buckets: Vec<u32>,
    vnodes: usize,
}

impl Ring {
    /// Builds a ring over `nodes` (duplicates are ignored, order does not
    /// matter for placement) with `vnodes` points per node (at least 1).
    pub fn new<I, S>(nodes: I, vnodes: usize) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut names: Vec<String> = Vec::new();
        for n in nodes {
            let n = n.into();
            if !names.contains(&n) {
                names.push(n);
            }
        }
        let vnodes = vnodes.max(1);
        let mut points = Vec::with_capacity(names.len() * vnodes);
        let mut buf = String::new();
        for (idx, name) in names.iter().enumerate() {
            for i in 0..vnodes {
                buf.clear();
                buf.push_str(name);
                buf.push('#');
                buf.push_str(&i.to_string());
                points.push((xxh3_64_with_seed(buf.as_bytes(), RING_SEED), idx as u32));
            }
        }
        // Ties (astronomically rare) are broken by node name so that every
        // instance orders them the same way whatever the input order.
        points.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| names[a.1 as usize].cmp(&names[b.1 as usize]))
        });
        let hashes: Vec<u64> = points.iter().map(|p| p.0).collect();
        let owners = points.iter().map(|p| p.1).collect();
        let buckets = (0..=1u64 << BUCKET_BITS)
            .map(|b| hashes.partition_point(|&h| (h >> (64 - BUCKET_BITS)) < b) as u32)
            .collect();
        Self {
            nodes: names,
            hashes,
            owners,
            buckets,
            vnodes,
        }
    }

    /// The node names, indexed by the `usize`s this ring hands out.
    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// The name of node `idx`.
    ///
    /// # Panics
    /// If `idx` is not an index this ring handed out.
    pub fn node(&self, idx: usize) -> &str {
        &self.nodes[idx]
    }

    /// Number of physical nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when the ring has no node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Virtual nodes per physical node.
    pub fn vnodes(&self) -> usize {
        self.vnodes
    }

    /// The points on the circle, sorted: point `p` owns the hashes from the
    /// point before it (exclusive) to `p` (inclusive).
    pub(crate) fn points(&self) -> &[u64] {
        &self.hashes
    }

    /// Position of the first point at or after `hash` (wrapping).
    #[inline]
    fn start(&self, hash: u64) -> usize {
        let b = (hash >> (64 - BUCKET_BITS)) as usize;
        let (lo, hi) = (self.buckets[b] as usize, self.buckets[b + 1] as usize);
        let i = lo + self.hashes[lo..hi].partition_point(|&p| p < hash);
        if i == self.hashes.len() { 0 } else { i }
    }

    /// The first owner of `key`, or `None` on an empty ring. Allocation-free.
    #[inline]
    pub fn primary(&self, key: &[u8]) -> Option<usize> {
        if self.hashes.is_empty() {
            return None;
        }
        Some(self.owners[self.start(key_hash(key))] as usize)
    }

    /// The first `n` distinct nodes clockwise from `key` (fewer when the ring
    /// has fewer nodes), appended to `out` after clearing it.
    pub fn preference_list_into(&self, key: &[u8], n: usize, out: &mut Vec<usize>) {
        out.clear();
        self.fill(key, n, out);
    }

    /// Appends the first `n` distinct nodes clockwise from `key` to an empty `out`.
    pub(crate) fn fill<V>(&self, key: &[u8], n: usize, out: &mut V)
    where
        V: AsRef<[usize]> + Extend<usize>,
    {
        self.fill_at(key_hash(key), n, out);
    }

    /// [`Ring::fill`] for the keys whose hash is `hash`.
    pub(crate) fn fill_at<V>(&self, hash: u64, n: usize, out: &mut V)
    where
        V: AsRef<[usize]> + Extend<usize>,
    {
        let want = n.min(self.nodes.len());
        if want == 0 {
            return;
        }
        let start = self.start(hash);
        let (tail, head) = self.owners.split_at(start);
        for &owner in head.iter().chain(tail) {
            let idx = owner as usize;
            if !out.as_ref().contains(&idx) {
                out.extend([idx]);
                if out.as_ref().len() == want {
                    return;
                }
            }
        }
    }

    /// The first `n` distinct nodes clockwise from `key`.
    pub fn preference_list(&self, key: &[u8], n: usize) -> Vec<usize> {
        let mut out = Vec::with_capacity(n);
        self.preference_list_into(key, n, &mut out);
        out
    }

    /// The fraction of the hash circle each node owns as primary, indexed
    /// like [`Ring::nodes`]. Sums to 1 on a non-empty ring.
    pub fn ownership(&self) -> Vec<f64> {
        let mut share = vec![0.0; self.nodes.len()];
        let len = self.hashes.len();
        for i in 0..len {
            // The arc (hashes[i-1], hashes[i]] belongs to owners[i].
            let prev = self.hashes[if i == 0 { len - 1 } else { i - 1 }];
            let arc = self.hashes[i].wrapping_sub(prev);
            share[self.owners[i] as usize] += arc as f64 / 2f64.powi(64);
        }
        if len == 1 {
            share[self.owners[0] as usize] = 1.0;
        }
        share
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn names(prefix: &str, n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("http://{prefix}-{i}:7001"))
            .collect()
    }

    fn keys(seed: u64, n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| format!("key:{seed}:{i}").into_bytes())
            .collect()
    }

    #[test]
    fn empty_and_single() {
        let empty = Ring::new(Vec::<String>::new(), 150);
        assert!(empty.is_empty());
        assert_eq!(empty.primary(b"k"), None);
        assert!(empty.preference_list(b"k", 2).is_empty());
        let one = Ring::new(["a"], 150);
        assert_eq!(one.preference_list(b"k", 3), vec![0]);
        assert!((one.ownership()[0] - 1.0).abs() < 1e-9);
    }

    #[test]
    fn bucketed_lookup_matches_binary_search() {
        for n in [1, 2, 10, 50] {
            let ring = Ring::new(names("b", n), DEFAULT_VNODES);
            let mut probes: Vec<u64> = ring.hashes.clone();
            probes.extend(ring.hashes.iter().map(|h| h.wrapping_add(1)));
            probes.extend([0, 1, u64::MAX, u64::MAX - 1]);
            probes.extend((0..10_000u64).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
            for h in probes {
                let plain = ring.hashes.partition_point(|&p| p < h);
                let plain = if plain == ring.hashes.len() { 0 } else { plain };
                assert_eq!(ring.start(h), plain, "hash {h:#x}");
            }
        }
    }

    #[test]
    fn input_order_and_duplicates_do_not_matter() {
        let a = Ring::new(["x", "y", "z"], 150);
        let b = Ring::new(["z", "x", "y", "x"], 150);
        assert_eq!(b.len(), 3);
        for k in keys(1, 1000) {
            let pa: Vec<&str> = a
                .preference_list(&k, 3)
                .iter()
                .map(|&i| a.node(i))
                .collect();
            let pb: Vec<&str> = b
                .preference_list(&k, 3)
                .iter()
                .map(|&i| b.node(i))
                .collect();
            assert_eq!(pa, pb);
        }
    }

    #[test]
    fn placement_is_stable_across_releases() {
        // Pinned so an accidental change of hash, seed or vnode naming (which
        // would move every key of every deployed cluster) fails loudly.
        let ring = Ring::new(["http://a:7001", "http://b:7001", "http://c:7001"], 150);
        let got: Vec<usize> = (0..8)
            .map(|i| ring.primary(format!("k{i}").as_bytes()).unwrap_or(9))
            .collect();
        assert_eq!(got, PINNED);
    }
    const PINNED: [usize; 8] = [1, 2, 1, 0, 1, 2, 2, 0];

    proptest! {
        // Seeded: about 1 cluster in 2000 lands just above 1.3 (a 2000-name
        // scan peaked at 1.32), so a random seed would make this flaky.
        #![proptest_config(ProptestConfig {
            cases: 64,
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x5eed),
            ..ProptestConfig::default()
        })]

        #[test]
        fn balanced_at_ten_nodes(prefix in "[a-z]{1,8}") {
            let ring = Ring::new(names(&prefix, 10), DEFAULT_VNODES);
            let share = ring.ownership();
            let mean = 1.0 / 10.0;
            let max = share.iter().cloned().fold(0.0, f64::max);
            prop_assert!(max / mean <= 1.3, "max/mean = {}", max / mean);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn preference_lists_are_distinct_and_prefixes(
            prefix in "[a-z]{1,8}", n in 1usize..8, key in proptest::collection::vec(any::<u8>(), 0..32)
        ) {
            let ring = Ring::new(names(&prefix, n), 20);
            let full = ring.preference_list(&key, n);
            prop_assert_eq!(full.len(), n);
            let mut sorted = full.clone();
            sorted.sort_unstable();
            sorted.dedup();
            prop_assert_eq!(sorted.len(), n);
            for r in 1..=n {
                prop_assert_eq!(&ring.preference_list(&key, r)[..], &full[..r]);
            }
            prop_assert_eq!(ring.primary(&key), Some(full[0]));
        }

        #[test]
        fn adding_a_node_moves_about_one_nth_and_only_to_it(
            prefix in "[a-z]{1,8}", n in 3usize..12, seed in any::<u64>()
        ) {
            let before = Ring::new(names(&prefix, n), DEFAULT_VNODES);
            let mut grown = names(&prefix, n);
            grown.push(format!("http://{prefix}-new:7001"));
            let after = Ring::new(grown, DEFAULT_VNODES);
            let new_idx = n;
            let ks = keys(seed, 4000);
            let mut moved = 0usize;
            for k in &ks {
                let b = before.preference_list(k, 2);
                let a = after.preference_list(k, 2);
                if a[0] != b[0] {
                    moved += 1;
                    // Only the newcomer takes keys; nobody else trades.
                    prop_assert_eq!(a[0], new_idx);
                }
                // Replica lists change only by the newcomer moving in.
                let kept: Vec<usize> = a.iter().copied().filter(|&i| i != new_idx).collect();
                prop_assert_eq!(&kept[..], &b[..kept.len()]);
            }
            let frac = moved as f64 / ks.len() as f64;
            let ideal = 1.0 / (n as f64 + 1.0);
            prop_assert!(frac > ideal * 0.5 && frac < ideal * 1.5, "moved {frac}, ideal {ideal}");
        }

        #[test]
        fn removing_a_node_moves_only_its_keys(
            prefix in "[a-z]{1,8}", n in 3usize..12, gone in 0usize..3, seed in any::<u64>()
        ) {
            let all = names(&prefix, n);
            let before = Ring::new(all.clone(), DEFAULT_VNODES);
            let kept: Vec<String> = all.iter().enumerate().filter(|(i, _)| *i != gone).map(|(_, s)| s.clone()).collect();
            let after = Ring::new(kept, DEFAULT_VNODES);
            let ks = keys(seed, 4000);
            let mut moved = 0usize;
            for k in &ks {
                let b = before.node(before.preference_list(k, 1)[0]);
                let a = after.node(after.preference_list(k, 1)[0]);
                if a != b {
                    moved += 1;
                    prop_assert_eq!(b, all[gone].as_str());
                }
            }
            let frac = moved as f64 / ks.len() as f64;
            let ideal = 1.0 / n as f64;
            prop_assert!(frac > ideal * 0.5 && frac < ideal * 1.5, "moved {frac}, ideal {ideal}");
        }
    }
}
