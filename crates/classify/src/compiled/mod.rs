//! The compiled classifier: decision trees over the 5-tuple with verified leaves.
//!
//! # Design
//!
//! The rules are looked up in two *parts*: IPv4 keys (and keys without an
//! IP header) in one, IPv6 keys in the other; a rule is in the part of each
//! family it can match ([`project`], the one place that also decides which
//! rules the leaves verify with the reference). Every key is projected onto
//! a *point* of five 32-bit dimensions: source and destination address,
//! source and destination port and protocol (0 when absent). An IPv4
//! address is itself; an IPv6 address is the 32 bits after the prefix that
//! all the rules' IPv6 prefixes share, when none reaches further (a site's
//! ACL: a *window*), or else its *rank* among the elementary intervals that
//! the rules' prefixes cut the 128-bit space into ([`ranks`]). Either is
//! exact: every address bit that tells two rules apart is seen. Every rule
//! is projected onto a *box*: the bounding interval of its constraint on
//! each dimension, full when unconstrained. The box over-approximates the
//! rule: a key the rule matches always has its point inside the box. So a
//! structure that returns, for a point, every rule whose box contains it in
//! priority order, followed by an exact check, is exactly equal to the
//! linear scan.
//!
//! The structure is a set of multi-way cutting trees (HiCuts with the
//! rule-set splitting of EffiCuts/CutSplit): rules are split by their most
//! specific field (source prefix of 16 bits or more, else destination
//! prefix, else a destination port range of at most 1024 ports, else a
//! source one, else none), so that cutting a tree's specific dimension
//! replicates few rules. A node cuts one dimension: the *hull* of its rules
//! there (so keys outside it end at once in an empty leaf) is split into
//! equal power-of-two pieces, indexed by a subtraction, a shift and a
//! clamp: one dependent load per level. The dimension is the one whose
//! fullest child is smallest, with as many pieces as a replication budget
//! (`space_factor`) allows; a tree that passes 512 bytes per rule is rebuilt
//! with less replication, so memory stays bounded. Leaves hold short
//! priority-ordered lists of boxes, stored field by field in blocks of 16
//! (32 bytes per rule; see [`crate::leaf`]); a leaf reference carries the
//! leaf's first word and rule count, so a lookup needs no header load. A
//! rule that covers a child's whole region shadows every later rule whose
//! presence requirements include its own, and those are dropped.
//!
//! Before any tree, the rules that can never be a first match are found
//! and dropped: a tree over all of them, in rank space (below), each child
//! pruned of the rules shadowed there, cut until its lists are small or its
//! work budget is spent; a rule in no list at the bottom is shadowed
//! everywhere, by rules of any group. (A set grown in random order, as
//! ClassBench's generator grows one, buries most of its rules under earlier
//! wide ones: 93 to 98 in 100 of the 100,000-rule sets grown from the shared
//! ones.) Parts of up to 32,768 remaining rules also try one tree for all of
//! them, and keep it when it costs less on the rules' corner keys (levels,
//! leaf checks and trees visited, weighted as the AVX-512 lookup pays them);
//! its tables then move down over the groups' trees.
//!
//! Sets of at least [`BuildConfig::ipv4_rank_min_rules`] rules (that can
//! match; from 1024 up to that, when rank space costs less on the rules'
//! corner keys) see IPv4 addresses by *rank* too, as IPv6 ones may be: the number
//! of the address's elementary interval among those the rules' prefixes cut
//! the field into ([`rank32`]: a 16-8-8 trie, at most three loads, 64 keys
//! at a time with gathers). Equal cuts of rank space follow the rules where
//! they cluster (a cluster of /32s under a /20 took a level per few bits in
//! address space, twelve levels on the 100,000-rule ACL sets, and takes one
//! or two in rank space), and a region is covered by a rule exactly when the
//! rule covers its intervals, so every rule shadowed there is pruned.
//!
//! Trees are searched in order of their first rule, and a tree whose first
//! rule comes after the best match found so far is skipped (for a whole
//! batch when none of its keys needs it).
//!
//! The leaf check is exact without calling [`RuleMatch::matches`] for *plain*
//! rules, those with at most one prefix of the part's family per address,
//! one range per port and an optional protocol (every ClassBench rule, IPv4
//! or IPv6): their match is "point in box, and the key carries what the
//! rule constrains" (an IP header, IPv4, a protocol, ports, an IPv6 address
//! inside the window's prefix), which is compared as a bit set. Any other
//! rule (lists, ICMP, TCP flags, VLAN, fragment, DSCP, ethertype, and any
//! field added to [`RuleMatch`] later) is verified with
//! [`RuleMatch::matches`], the reference itself (see [`project`]).
//!
//! On a CPU with AVX-512 (F, BW, VL; detected at build with the `std`
//! feature), a batch is looked up 64 keys at a time: their points are
//! gathered from the keys field by field (16 keys to a gather; IPv6 keys
//! take the scalar path), then four vectors of 16
//! keys walk a tree level by level together, each level three gathers
//! (node header, base, child) per vector but the root's one (its header
//! and base are the same for all), the four vectors' gathers in flight at
//! once; a key whose leaf is not empty then tests its rules 16 at a time,
//! without a branch (masked loads, so short leaves cost nothing extra), and
//! the leaves' matches join the keys' best in vectors. Without
//! AVX-512, 8 keys walk together in scalar code (a key at its leaf stays
//! there, without a branch) and leaves are scanned one rule at a time. Both
//! give the same answers; `BuildConfig::vector` chooses, and the tests run
//! both. The `unsafe` code (gathers, masked loads) is confined to these
//! lookups, each index clamped into its table before the load; `palisade
//! bench --scalar` measures what it gains.
//!
//! Sets of at most [`BuildConfig::bitset_max_rules`] rules (default 1024)
//! use no trees but bit sets (see [`crate::bitset`]): every field value
//! class holds the set of rules whose box covers it, and a key's first
//! match is the lowest bit of the intersection of its classes (the port
//! and protocol classes are intersected at build time, RFC-style, when the
//! product stays small, so a lookup intersects three sets, not five). The classes are found by tries, walked 64 keys at
//! a time with AVX-512 gathers, and the intersection takes one vector load
//! per set and 512 rules, without a branch on where the first bit is. Past two 512-rule lines,
//! trees were faster on ClassBench sets. `palisade bench --trees` measures
//! what the bit sets gain.

mod avx512;
mod build;
mod project;
mod rank32;
mod ranks;
mod search;

use alloc::vec::Vec;
use core::fmt;

use palisade_packet::{FlowKey, Present};

use crate::bitset::Bitsets;
use crate::leaf::{self, LeafRef, Leaves, Point};
use crate::{Classifier, RuleIndex, RuleMatch, NO_MATCH};
use ranks::{AddrMap, RankIndex, Ranks};

/// Dimensions of the point: source, destination, source port, destination port, protocol.
const DIMS: usize = 5;
/// Largest value of each dimension (32, 32, 16, 16 and 8 bits wide).
const DIM_MAX: [u32; DIMS] = [
    u32::MAX,
    u32::MAX,
    u16::MAX as u32,
    u16::MAX as u32,
    u8::MAX as u32,
];
/// Tag of a reference to a leaf: a child reference with this bit names a
/// leaf (see the constants below), so a walk knows it has reached a leaf, and
/// where its rules are, without another load. Other references index `tab`.
const LEAF: u32 = 1 << 31;
/// A leaf reference holds the leaf's rule count in bits 26-30 (so a lookup
/// computes the leaf's field offsets without loading its header first)...
const LEAF_COUNT_SHIFT: u32 = 26;
/// ...or this value when the leaf has this many rules or more (then the header tells).
const LEAF_COUNT_MAX: u32 = leaf::BIG_LEAF;
/// ...and its first word in bits 0-25 (see [`leaf`]).
const LEAF_WORDS: u32 = (1 << LEAF_COUNT_SHIFT) - 1;
/// The most words the node table and the leaf table may hold: a node's
/// index stays below the leaf tag, a leaf's first word fits [`LEAF_WORDS`].
const TABLE_LIMITS: (usize, usize) = (LEAF as usize - 1, LEAF_WORDS as usize);
/// The empty leaf: no rules (word 0, count 0).
const EMPTY: u32 = LEAF;
/// A node that every leaf lane of a batch steps through (its result is
/// discarded), at index 0 of the table: no cuts, one child.
const DUMMY_NODE: [u32; 3] = [0, 0, EMPTY];
/// Most cut bits of one node.
const MAX_CUT_BITS: u32 = 15;
/// A tree using more than this many bytes per rule is rebuilt with less replication.
const TREE_BYTES_PER_RULE: usize = 512;
/// Trees with more rules than this start with a proportionally smaller space factor.
const BIG_TREE_RULES: usize = 16384;
/// Small trees may grow the space factor up to this.
const MAX_SPACE_FACTOR: usize = 64;
/// Every tree may use this many bytes on top of its per-rule budget.
const TREE_BYTES_BASE: usize = 1 << 20;
/// A group of rules whose tree passes its budget is split at most this many times over.
const MAX_SPLIT_DEPTH: u32 = 1;
/// Groups smaller than this are not split.
const MIN_SPLIT_RULES: usize = 256;
/// Nodes with more rules than this estimate their cuts on a sample of this many.
const SAMPLE_RULES: usize = 2048;
/// Corner keys the choice of one tree is estimated on.
const MERGE_KEYS: usize = 8192;
/// Keys walked together in a batch.
const LANES: usize = 8;
/// Keys walked together in a batch by the AVX-512 lookup (one per vector lane).
#[cfg(target_arch = "x86_64")]
const VECTOR_LANES: usize = 64;

/// Requirement bits: what a key must carry for a rule to match it.
const REQ_IP: u8 = 1;
/// The key is IPv4.
const REQ_V4: u8 = 2;
/// The key carries a protocol.
const REQ_PROTO: u8 = 4;
/// The key carries ports.
const REQ_PORTS: u8 = 8;
/// The key's IPv6 source lies in the common prefix of the rules' IPv6
/// sources (when the IPv6 part sees them through a window, see [`ranks::AddrMap`]).
const REQ_SRC_IN: u8 = 32;
/// The same for the destination.
const REQ_DST_IN: u8 = 64;

/// `SUBSETS[x]`: the set (as bits) of requirement masks that are subsets
/// of `x` (requirement masks are below 128; the verify bit is never one).
const SUBSETS: [u128; 128] = {
    let mut t = [0u128; 128];
    let mut x = 0;
    while x < 128 {
        let mut m = 0;
        while m < 128 {
            if m & !x == 0 {
                t[x] |= 1 << m;
            }
            m += 1;
        }
        x += 1;
    }
    t
};

/// Settings of [`CompiledClassifier::build`].
///
/// ```
/// let c = palisade_classify::BuildConfig::default().with_memory_cap(1 << 20);
/// assert_eq!(c.memory_cap_bytes, 1 << 20);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BuildConfig {
    /// The build fails with [`BuildError::MemoryCap`] rather than let the
    /// tables grow past this many bytes. Default 256 MiB.
    pub memory_cap_bytes: usize,
    /// A node with at most this many rules becomes a leaf. Default 16.
    pub leaf_size: usize,
    /// A cut may replicate rules up to this factor of the node's rule count
    /// (counting one slot per child). Default 16; a tree that grows past
    /// 512 bytes per rule is rebuilt with half the factor, down to 2.
    pub space_factor: usize,
    /// Check leaves with AVX-512, 16 rules per step, when the CPU has it
    /// (AVX-512 F, BW and VL; detected only with the crate's `std` feature).
    /// Default true; false always checks one rule at a time (same answers).
    pub vector: bool,
    /// Sets of at most this many rules are looked up with bit sets, one per
    /// field value class, intersected (see [`CompiledClassifier::uses_bitsets`]),
    /// when those fit in a quarter of the memory cap; larger sets use trees.
    /// Default 1024 (two 512-rule lines: past that, trees were faster on
    /// ClassBench sets); 0 always uses trees.
    pub bitset_max_rules: usize,
    /// Sets of at least this many rules look IPv4 addresses up by their
    /// rank among the elementary intervals of the rules' prefixes, and cut
    /// rank space (see [`CompiledClassifier::ipv4_address_lookup`]); smaller
    /// ones of 1024 rules or more looked up by trees are built both ways and
    /// keep the one that costs less on the rules' corner keys, the smallest
    /// cut address space. Default 16384 (the 10K ClassBench sets, up to 9,800
    /// rules that can match, differ: wustl acl1_10K ran at 0.63x in rank
    /// space, cb12 ipc1_10k at 1.2x); 0 always uses ranks.
    pub ipv4_rank_min_rules: usize,
}

impl Default for BuildConfig {
    fn default() -> Self {
        BuildConfig {
            memory_cap_bytes: 256 << 20,
            leaf_size: 16,
            space_factor: 16,
            vector: true,
            bitset_max_rules: 1024,
            ipv4_rank_min_rules: 16_384,
        }
    }
}

impl BuildConfig {
    /// This configuration with another memory cap.
    ///
    /// ```
    /// assert_eq!(palisade_classify::BuildConfig::default().with_memory_cap(5).memory_cap_bytes, 5);
    /// ```
    pub fn with_memory_cap(mut self, bytes: usize) -> Self {
        self.memory_cap_bytes = bytes;
        self
    }
}

/// Why [`CompiledClassifier::build`] failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    /// The tables would exceed [`BuildConfig::memory_cap_bytes`].
    MemoryCap {
        /// Bytes the tables had reached when the build stopped.
        needed: usize,
        /// The configured cap.
        cap: usize,
    },
    /// More rules than a [`RuleIndex`] can name.
    TooManyRules {
        /// Number of rules given.
        rules: usize,
    },
    /// A table reached the most words its references can address, below
    /// the memory cap (a rule set that replicates beyond every layout the
    /// build tries).
    IndexLimit {
        /// The table: `"tree node"` or `"leaf"`.
        table: &'static str,
        /// Words it had reached.
        reached: usize,
        /// The most words its references address.
        limit: usize,
        /// Bytes of all the tables at that point.
        bytes: usize,
        /// The configured memory cap (not reached).
        cap: usize,
    },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::MemoryCap { needed, cap } => write!(
                f,
                "compiled classifier needs more than its memory cap: reached {needed} bytes, cap {cap} bytes"
            ),
            BuildError::TooManyRules { rules } => {
                write!(f, "{rules} rules are more than the classifier can index")
            }
            BuildError::IndexLimit {
                table,
                reached,
                limit,
                bytes,
                cap,
            } => write!(
                f,
                "compiled classifier: the {table} table reached {reached} words, more than the {limit} its references can address \
                 (the tables held {bytes} bytes, under the memory cap of {cap} bytes)"
            ),
        }
    }
}

/// The part of a key and its point: IPv4 keys and keys without an IP
/// header are looked up in part 0 with their addresses, IPv6 keys in part 1
/// with the ranks of theirs (see [`ranks`]).
#[inline(always)]
fn point_of(key: &FlowKey, ranks: &Ranks) -> (Point, usize) {
    match key.ip_family() {
        Some(4) => {
            let (s, d) = match &ranks.v4 {
                Some(v4) => (v4.src.lookup(key.src_ip as u32), v4.dst.lookup(key.dst_ip as u32)),
                None => (key.src_ip as u32, key.dst_ip as u32),
            };
            (point_with(key, s, d, REQ_IP | REQ_V4), 0)
        }
        Some(6) => {
            let (s, s_in) = ranks.src.value(key.src_ip);
            let (d, d_in) = ranks.dst.value(key.dst_ip);
            let carried = REQ_IP | if s_in { REQ_SRC_IN } else { 0 } | if d_in { REQ_DST_IN } else { 0 };
            (point_with(key, s, d, carried), 1)
        }
        _ => (point_with(key, 0, 0, 0), 0),
    }
}

/// The points of up to `N` (at most 64) keys into `pts`, and the lanes of
/// each part (a bit per lane): [`point_of`] for a batch, whose IPv6 ranks
/// are searched for all lanes together, so that the searches overlap.
/// `rank` searches the ranks of a batch's IPv6 addresses (see [`ranks::RankIndex::rank_lanes`]).
#[inline(always)]
fn points_of<const N: usize>(
    keys: &[FlowKey],
    ranks: &Ranks,
    pts: &mut [Point; N],
    rank: impl Fn(&RankIndex, &[u128; N], u64, &mut [u32; N]),
) -> [u64; 2] {
    let mut v6 = 0u64;
    for (j, key) in keys.iter().enumerate().take(N.min(64)) {
        match key.ip_family() {
            Some(4) => pts[j] = point_with(key, key.src_ip as u32, key.dst_ip as u32, REQ_IP | REQ_V4),
            Some(6) => v6 |= 1 << j,
            _ => pts[j] = point_with(key, 0, 0, 0),
        }
    }
    let n = keys.len().min(N).min(64);
    let all = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
    if v6 != 0 {
        // (Only batches with IPv6 keys pay for these arrays.)
        let (mut src, mut dst) = ([0u128; N], [0u128; N]);
        let mut m = v6;
        while m != 0 {
            let j = m.trailing_zeros() as usize;
            m &= m - 1;
            if let (Some(key), Some(s), Some(d)) = (keys.get(j), src.get_mut(j), dst.get_mut(j)) {
                (*s, *d) = (key.src_ip, key.dst_ip);
            }
        }
        // Windows read the address; ranks are searched for all lanes at once.
        let values = |map: &AddrMap, addrs: &[u128; N], out: &mut [u32; N], inside: &mut u64| {
            if map.is_window() {
                let mut m = v6;
                while m != 0 {
                    let j = m.trailing_zeros() as usize;
                    m &= m - 1;
                    if let (Some(o), Some(&a)) = (out.get_mut(j), addrs.get(j)) {
                        let (v, is_in) = map.value(a);
                        *o = v;
                        *inside |= (is_in as u64) << j;
                    }
                }
            } else {
                rank(&map.ranks, addrs, v6, out);
                *inside = v6;
            }
        };
        let (mut s, mut d) = ([0u32; N], [0u32; N]);
        let (mut s_in, mut d_in) = (0u64, 0u64);
        values(&ranks.src, &src, &mut s, &mut s_in);
        values(&ranks.dst, &dst, &mut d, &mut d_in);
        let mut m = v6;
        while m != 0 {
            let j = m.trailing_zeros() as usize;
            m &= m - 1;
            if let (Some(p), Some(key)) = (pts.get_mut(j), keys.get(j)) {
                let carried = REQ_IP
                    | if s_in >> j & 1 != 0 { REQ_SRC_IN } else { 0 }
                    | if d_in >> j & 1 != 0 { REQ_DST_IN } else { 0 };
                *p = point_with(key, s[j], d[j], carried);
            }
        }
    }
    [all & !v6, v6]
}

/// The IPv4 lanes' addresses (`lanes`, a bit per lane, of part 0) replaced
/// by their ranks, when the IPv4 part uses them (see [`rank32`]).
#[inline(always)]
fn rank_v4_lanes<const N: usize>(ranks: &Ranks, pts: &mut [Point; N], lanes: u64) {
    let Some(v4) = &ranks.v4 else { return };
    let mut m = lanes;
    while m != 0 {
        let j = m.trailing_zeros() as usize;
        m &= m - 1;
        if let Some(p) = pts.get_mut(j) {
            p[0] = v4.src.lookup(p[0]);
            p[1] = v4.dst.lookup(p[1]);
        }
    }
}

/// The point of `key` with the address values `s` and `d` and the requirement bits its addresses carry.
#[inline(always)]
fn point_with(key: &FlowKey, s: u32, d: u32, mut carried: u8) -> Point {
    let proto = if key.present.has(Present::L4_PROTO) {
        carried |= REQ_PROTO;
        key.l4_proto as u32
    } else {
        0
    };
    let (sp, dp) = match key.ports() {
        Some((sp, dp)) => {
            carried |= REQ_PORTS;
            (sp as u32, dp as u32)
        }
        None => (0, 0),
    };
    [
        s,
        d,
        sp,
        dp,
        proto,
        carried as u32,
        sp << 16 | dp,
        (carried as u32) << 8 | 0xff,
    ]
}

/// The child of the node at `tab[at]` that point `p` falls in (see
/// [`CompiledClassifier::tab`] for the encoding); the empty leaf when `at` is out of the table.
#[inline(always)]
fn child_of(tab: &[u32], at: usize, p: &Point) -> u32 {
    let h = tab.get(at).copied().unwrap_or(0);
    let base = tab.get(at + 1).copied().unwrap_or(0);
    let idx = (p[(h & 7) as usize].wrapping_sub(base) >> ((h >> 8) & 31)).min(h >> 16);
    tab.get(at + 2 + idx as usize).copied().unwrap_or(EMPTY)
}

/// The lookup structure of one part: trees, or bit sets for small sets.
#[derive(Clone, Debug, Default)]
struct Part {
    /// Each tree's root reference and its lowest rule index, by lowest rule
    /// index: a tree is skipped for a key already matched by an earlier rule.
    roots: Vec<(u32, u32)>,
    /// The bit-set lookup, which replaces the trees for small sets.
    bitsets: Option<Bitsets>,
}

impl Part {
    fn capacity_bytes(&self) -> usize {
        self.roots.capacity() * 8 + self.bitsets.as_ref().map_or(0, Bitsets::capacity_bytes)
    }
}

/// The compiled first-match classifier; equal to [`crate::LinearClassifier`] on every key.
///
/// ```
/// use palisade_classify::{BuildConfig, Classifier, CompiledClassifier, PortRange, Prefix, RuleMatch, NO_MATCH};
/// use palisade_packet::FlowKey;
///
/// let mut web = RuleMatch::any();
/// web.dst = vec![Prefix::v4([192, 0, 2, 0], 24)];
/// web.proto = Some(6);
/// web.dst_port = vec![PortRange::single(443)];
/// let mut web6 = web.clone();
/// web6.dst = vec![Prefix::v6(0x2001_0db8_0000_0000_0000_0000_0000_0080, 121)];
/// let c = CompiledClassifier::build(&[web, web6], &BuildConfig::default()).unwrap();
///
/// let hit = FlowKey::new().with_ipv4([10, 0, 0, 1], [192, 0, 2, 9]).with_proto(6).with_ports(5000, 443);
/// let miss = FlowKey::new().with_ipv4([10, 0, 0, 1], [192, 0, 3, 9]).with_proto(6).with_ports(5000, 443);
/// let hit6 = FlowKey::new().with_ipv6(1, 0x2001_0db8 << 96 | 0xff).with_proto(6).with_ports(5000, 443);
/// let miss6 = FlowKey::new().with_ipv6(1, 0x2001_0db8 << 96 | 0x7f).with_proto(6).with_ports(5000, 443);
/// let mut out = [0; 4];
/// c.classify_batch(&[hit, miss, hit6, miss6], &mut out);
/// assert_eq!(out, [0, NO_MATCH, 1, NO_MATCH]);
/// ```
#[derive(Clone, Debug)]
pub struct CompiledClassifier {
    /// Tree nodes of both parts: a header word (dim | shift << 8 | mask << 16), the base,
    /// then child references (a node's index, or a leaf's reference, tagged [`LEAF`]).
    tab: Vec<u32>,
    /// The leaves' words (see [`leaf`] for the layout); the empty leaf has none.
    leaves: Leaves,
    /// The IPv4 part (with keys without an IP header) and the IPv6 part.
    parts: [Part; 2],
    /// The ranks of IPv6 addresses, the IPv6 part's address dimensions.
    ranks: Ranks,
    /// The rules, kept only when some rule needs verification by the reference.
    verify: Vec<RuleMatch>,
    rule_count: usize,
    /// Leaves are checked with AVX-512 (see [`CompiledClassifier::uses_vector_leaves`]).
    vector: bool,
}

impl CompiledClassifier {
    /// Number of trees the rules were split into (both families).
    ///
    /// ```
    /// use palisade_classify::{BuildConfig, CompiledClassifier};
    /// assert_eq!(CompiledClassifier::build(&[], &BuildConfig::default()).unwrap().tree_count(), 0);
    /// ```
    pub fn tree_count(&self) -> usize {
        self.parts.iter().map(|p| p.roots.len()).sum()
    }

    #[inline(always)]
    fn is_leaf(&self, r: u32) -> bool {
        r & LEAF != 0
    }

    /// The leaf a leaf reference names.
    #[inline(always)]
    fn leaf_ref(r: u32) -> LeafRef {
        LeafRef {
            start: (r & LEAF_WORDS) as usize,
            code: (r >> LEAF_COUNT_SHIFT) & LEAF_COUNT_MAX,
        }
    }

    /// Whether lookups use bit sets (small sets, see
    /// [`BuildConfig::bitset_max_rules`]) rather than trees.
    ///
    /// ```
    /// use palisade_classify::{BuildConfig, CompiledClassifier, RuleMatch};
    /// let rules = vec![RuleMatch::any(); 10];
    /// assert!(CompiledClassifier::build(&rules, &BuildConfig::default()).unwrap().uses_bitsets());
    /// let trees = BuildConfig { bitset_max_rules: 0, ..BuildConfig::default() };
    /// assert!(!CompiledClassifier::build(&rules, &trees).unwrap().uses_bitsets());
    /// ```
    pub fn uses_bitsets(&self) -> bool {
        self.parts.iter().any(|p| p.bitsets.is_some())
    }

    /// Whether lookups check leaves with AVX-512 (16 rules per step) rather
    /// than one rule at a time: when the CPU has AVX-512 F, BW and VL and
    /// [`BuildConfig::vector`] allowed it.
    ///
    /// ```
    /// use palisade_classify::{BuildConfig, CompiledClassifier};
    /// let scalar = BuildConfig { vector: false, ..BuildConfig::default() };
    /// assert!(!CompiledClassifier::build(&[], &scalar).unwrap().uses_vector_leaves());
    /// ```
    pub fn uses_vector_leaves(&self) -> bool {
        self.vector
    }

    /// How the IPv6 lookup reads the source and the destination address:
    /// through a window when all the rules' IPv6 prefixes of that field lie
    /// in one prefix and reach at most 32 bits past it, else by rank.
    ///
    /// ```
    /// use palisade_classify::{AddressLookup, BuildConfig, CompiledClassifier, Prefix, RuleMatch};
    /// let site = 0x2001_0db8_0001u128 << 80;
    /// let rules: Vec<RuleMatch> = (0..4u128)
    ///     .map(|i| RuleMatch {
    ///         src: vec![Prefix::v6(site | i << 78, 56)],
    ///         dst: vec![Prefix::v6(i << 100, 28), Prefix::v6(i, 128)],
    ///         ..RuleMatch::any()
    ///     })
    ///     .collect();
    /// let c = CompiledClassifier::build(&rules, &BuildConfig::default()).unwrap();
    /// assert_eq!(
    ///     c.ipv6_address_lookup(),
    ///     // Starts 0 to 4 (the /128s and the address after each), and 1 << 100 to 4 << 100 (the /28s').
    ///     [AddressLookup::Window { common_len: 48 }, AddressLookup::Ranks { intervals: 9 }]
    /// );
    /// ```
    pub fn ipv6_address_lookup(&self) -> [AddressLookup; 2] {
        self.ipv6_lookup()
    }

    /// How the IPv4 lookup reads the source and the destination address:
    /// by rank among the elementary intervals of the rules' prefixes, found
    /// in a trie (sets of at least [`BuildConfig::ipv4_rank_min_rules`]
    /// rules that can match, or of fewer for which ranks cost less, when the
    /// tries fit their budget), else as they are.
    ///
    /// ```
    /// use palisade_classify::{AddressLookup, BuildConfig, CompiledClassifier, Prefix, RuleMatch};
    /// let rules: Vec<RuleMatch> = (0..2000u32)
    ///     .map(|i| RuleMatch { src: vec![Prefix::v4((i << 12).to_be_bytes(), 20)], ..RuleMatch::any() })
    ///     .collect();
    /// let small = CompiledClassifier::build(&rules[..500], &BuildConfig::default()).unwrap();
    /// assert_eq!(small.ipv4_address_lookup(), [AddressLookup::Address; 2]);
    /// let config = BuildConfig { ipv4_rank_min_rules: 0, ..BuildConfig::default() };
    /// let ranked = CompiledClassifier::build(&rules, &config).unwrap();
    /// // Each /20 starts an interval, and so does the address after the last one.
    /// assert_eq!(
    ///     ranked.ipv4_address_lookup(),
    ///     [AddressLookup::Ranks { intervals: 2001 }, AddressLookup::Ranks { intervals: 1 }]
    /// );
    /// ```
    pub fn ipv4_address_lookup(&self) -> [AddressLookup; 2] {
        match &self.ranks.v4 {
            Some(v4) => [&v4.src, &v4.dst].map(|r| AddressLookup::Ranks {
                intervals: r.intervals(),
            }),
            None => [AddressLookup::Address; 2],
        }
    }

    fn ipv6_lookup(&self) -> [AddressLookup; 2] {
        [&self.ranks.src, &self.ranks.dst].map(|m| {
            if m.is_window() {
                AddressLookup::Window {
                    common_len: m.common_len(),
                }
            } else {
                AddressLookup::Ranks {
                    intervals: m.ranks.intervals(),
                }
            }
        })
    }
}

/// How the compiled classifier reads one address field (see
/// [`CompiledClassifier::ipv6_address_lookup`] and
/// [`CompiledClassifier::ipv4_address_lookup`]); every way, every address
/// bit that tells two rules apart is seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AddressLookup {
    /// The 32 bits after the prefix, of this length, that every IPv6
    /// prefix of the field (but `/0`) lies in; an address outside it can
    /// only match rules that do not constrain the field.
    Window {
        /// Length of the common prefix.
        common_len: u8,
    },
    /// The address's rank among the elementary intervals that the rules'
    /// prefixes cut the address space into (a search in a B-tree of their starts).
    Ranks {
        /// Number of intervals (1 for a set without prefixes of the family).
        intervals: usize,
    },
    /// The address itself (IPv4, in sets smaller than
    /// [`BuildConfig::ipv4_rank_min_rules`] that cut address space at less
    /// cost, or whose rank tries would not fit their budget).
    Address,
}

impl Classifier for CompiledClassifier {
    fn classify(&self, key: &FlowKey) -> RuleIndex {
        let (p, part) = point_of(key, &self.ranks);
        let Some(part) = self.parts.get(part) else {
            return NO_MATCH;
        };
        if let Some(bitsets) = &part.bitsets {
            return bitsets.lookup(&p, key, &self.verify);
        }
        #[cfg(target_arch = "x86_64")]
        if self.vector {
            // SAFETY: `vector` is set only when `leaf::avx512_available()`
            // found the features this function is compiled for.
            #[allow(unsafe_code)]
            return unsafe { self.classify_one_avx512(&part.roots, &p, key) };
        }
        self.classify_one::<false>(&part.roots, &p, key)
    }

    fn classify_batch(&self, keys: &[FlowKey], out: &mut [RuleIndex]) {
        #[cfg(target_arch = "x86_64")]
        if self.vector {
            // SAFETY: as in `classify`.
            #[allow(unsafe_code)]
            return unsafe { self.classify_batch_avx512(keys, out) };
        }
        for (k, o) in keys.chunks(LANES).zip(out.chunks_mut(LANES)) {
            self.classify_lanes(k, o);
        }
    }

    fn rule_count(&self) -> usize {
        self.rule_count
    }

    fn memory_bytes(&self) -> usize {
        self.tab.capacity() * 4
            + self.leaves.capacity_bytes()
            + self.parts.iter().map(Part::capacity_bytes).sum::<usize>()
            + self.ranks.capacity_bytes()
            + self.verify.iter().map(RuleMatch::heap_bytes).sum::<usize>()
            + self.verify.capacity() * core::mem::size_of::<RuleMatch>()
    }
}
