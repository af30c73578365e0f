//! The compiled classifier: decision trees over the 5-tuple with verified leaves.
//!
//! # Design
//!
//! Every key is projected onto a *point* of five dimensions: source and
//! destination address (an IPv4 address, or the top 32 bits of an IPv6 one),
//! source and destination port and protocol (0 when absent). Every rule is
//! projected onto a *box*: the bounding interval of its constraint on each
//! dimension, full when unconstrained. The box over-approximates the rule: a
//! key the rule matches always has its point inside the box. So a structure
//! that returns, for a point, every rule whose box contains it in priority
//! order, followed by an exact check, is exactly equal to the linear scan.
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
//! Sets of at most 4096 rules also try one tree for all groups but the
//! source one, and keep it when it costs less (levels, candidates and trees
//! visited) on the rules' corner keys.
//!
//! Trees are searched in order of their first rule, and a tree whose first
//! rule comes after the best match found so far is skipped (for a whole
//! batch when none of its keys needs it).
//!
//! The leaf check is exact without calling [`RuleMatch::matches`] for *plain*
//! rules, those with at most one IPv4 prefix per address, one range per port
//! and an optional protocol (every ClassBench rule): their match is "point in
//! box, and the key carries what the rule constrains" (an IP header, IPv4,
//! a protocol, ports), which is compared as a bit set. Any other rule (IPv6,
//! lists, ICMP, TCP flags, VLAN, fragment, DSCP, ethertype) is verified with
//! [`RuleMatch::matches`], the reference itself.
//!
//! On a CPU with AVX-512 (F, BW, VL; detected at build with the `std`
//! feature), a batch is looked up 64 keys at a time: four vectors of 16
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

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use palisade_packet::{FlowKey, Present};

use crate::bitset::{self, Bitsets};
use crate::leaf::{self, LeafRef, LeafRule, Leaves, Point, Probe, VERIFY};
use crate::{Classifier, IpFamily, RuleIndex, RuleMatch, NO_MATCH};

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
/// Nodes with more rules than this estimate their cuts on a sample of this many.
const SAMPLE_RULES: usize = 2048;
/// Rule sets up to this size try merging their trees (see [`CompiledClassifier::build`]).
const MERGE_MAX_RULES: usize = 4096;
/// Corner keys the merge decision is estimated on.
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

/// `SUBSETS[x]`: the set (as bits) of requirement masks that are subsets of `x`.
const SUBSETS: [u16; 16] = {
    let mut t = [0u16; 16];
    let mut x = 0;
    while x < 16 {
        let mut m = 0;
        while m < 16 {
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
}

impl Default for BuildConfig {
    fn default() -> Self {
        BuildConfig {
            memory_cap_bytes: 256 << 20,
            leaf_size: 16,
            space_factor: 16,
            vector: true,
            bitset_max_rules: 1024,
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
        }
    }
}

/// The point of a key and the requirement bits it satisfies.
#[inline(always)]
fn point_of(key: &FlowKey) -> Point {
    let present = key.present;
    let mut carried = 0u8;
    let (s, d) = match key.ip_family() {
        Some(4) => {
            carried |= REQ_IP | REQ_V4;
            (key.src_ip as u32, key.dst_ip as u32)
        }
        Some(6) => {
            carried |= REQ_IP;
            ((key.src_ip >> 96) as u32, (key.dst_ip >> 96) as u32)
        }
        _ => (0, 0),
    };
    let proto = if present.has(Present::L4_PROTO) {
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

/// A rule's box (inclusive bounds per dimension), requirements, and whether the box check is exact.
#[derive(Clone, Copy, Debug)]
struct RuleBox {
    lo: [u32; DIMS],
    hi: [u32; DIMS],
    req: u8,
    plain: bool,
}

impl RuleBox {
    fn of(rule: &RuleMatch) -> RuleBox {
        let mut lo = [0u32; DIMS];
        let mut hi = DIM_MAX;
        let addr_bounds = |list: &[crate::Prefix]| -> (u32, u32) {
            let mut b = (u32::MAX, 0u32);
            for p in list {
                let (l, h) = p.range();
                let (l, h) = match p.family {
                    IpFamily::V4 => (l as u32, h as u32),
                    IpFamily::V6 => ((l >> 96) as u32, (h >> 96) as u32),
                };
                b = (b.0.min(l), b.1.max(h));
            }
            b
        };
        if !rule.src.is_empty() {
            (lo[0], hi[0]) = addr_bounds(&rule.src);
        }
        if !rule.dst.is_empty() {
            (lo[1], hi[1]) = addr_bounds(&rule.dst);
        }
        let port_bounds = |list: &[crate::PortRange]| -> (u32, u32) {
            list.iter()
                .fold((u32::MAX, 0), |b, r| (b.0.min(r.lo as u32), b.1.max(r.hi as u32)))
        };
        if !rule.src_port.is_empty() {
            (lo[2], hi[2]) = port_bounds(&rule.src_port);
        }
        if !rule.dst_port.is_empty() {
            (lo[3], hi[3]) = port_bounds(&rule.dst_port);
        }
        if let Some(p) = rule.proto {
            lo[4] = p as u32;
            hi[4] = p as u32;
        }
        // What a key must carry for the rule to match (implied by the rule).
        let mut req = 0;
        if rule.needs_ip() {
            req |= REQ_IP;
        }
        let all_v4 = |l: &[crate::Prefix]| !l.is_empty() && l.iter().all(|p| p.family == IpFamily::V4);
        if rule.family == Some(IpFamily::V4) || all_v4(&rule.src) || all_v4(&rule.dst) {
            req |= REQ_V4;
        }
        if rule.proto.is_some() {
            req |= REQ_PROTO;
        }
        if !rule.src_port.is_empty() || !rule.dst_port.is_empty() {
            req |= REQ_PORTS;
        }
        let v4_single = |l: &[crate::Prefix]| l.len() <= 1 && l.iter().all(|p| p.family == IpFamily::V4);
        let plain = matches!(rule.family, None | Some(IpFamily::V4))
            && v4_single(&rule.src)
            && v4_single(&rule.dst)
            && rule.src_port.len() <= 1
            && rule.dst_port.len() <= 1
            && rule.icmp_type.is_none()
            && rule.icmp_code.is_none()
            && rule.tcp_flags.is_none()
            && rule.vlan.is_empty()
            && rule.fragment.is_none()
            && rule.dscp.is_empty()
            && rule.ethertype.is_none();
        RuleBox { lo, hi, req, plain }
    }

    fn leaf_rule(&self, idx: u32) -> LeafRule {
        let span: [u32; DIMS] = core::array::from_fn(|d| self.hi[d] - self.lo[d]);
        LeafRule {
            lo: self.lo,
            span,
            need: self.req | if self.plain { 0 } else { VERIFY },
            idx,
        }
    }

    /// Log2 of the width of dimension `d` (rounded down).
    fn span_bits(&self, d: usize) -> u32 {
        let w = self.hi[d] as u64 - self.lo[d] as u64 + 1;
        63 - w.leading_zeros()
    }
}

/// A box of the point space (inclusive bounds per dimension) that a node's keys lie in.
#[derive(Clone, Copy, Debug)]
struct Region {
    lo: [u32; DIMS],
    hi: [u32; DIMS],
}

impl Region {
    fn full() -> Region {
        Region {
            lo: [0; DIMS],
            hi: DIM_MAX,
        }
    }

    /// Whether `b` covers the region entirely.
    fn covered_by(&self, b: &RuleBox) -> bool {
        (0..DIMS).all(|d| b.lo[d] <= self.lo[d] && b.hi[d] >= self.hi[d])
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
/// let c = CompiledClassifier::build(&[web], &BuildConfig::default()).unwrap();
///
/// let hit = FlowKey::new().with_ipv4([10, 0, 0, 1], [192, 0, 2, 9]).with_proto(6).with_ports(5000, 443);
/// let miss = FlowKey::new().with_ipv4([10, 0, 0, 1], [192, 0, 3, 9]).with_proto(6).with_ports(5000, 443);
/// let mut out = [0; 2];
/// c.classify_batch(&[hit, miss], &mut out);
/// assert_eq!(out, [0, NO_MATCH]);
/// ```
#[derive(Clone, Debug)]
pub struct CompiledClassifier {
    /// Tree nodes: a header word (dim | shift << 8 | mask << 16), the base,
    /// then child references (a node's index, or a leaf's reference, tagged [`LEAF`]).
    tab: Vec<u32>,
    /// The leaves' words (see [`leaf`] for the layout); the empty leaf has none.
    leaves: Leaves,
    /// Each tree's root reference and its lowest rule index, by lowest rule
    /// index: a tree is skipped for a key already matched by an earlier rule.
    roots: Vec<(u32, u32)>,
    /// The rules, kept only when some rule needs verification by the reference.
    verify: Vec<RuleMatch>,
    rule_count: usize,
    /// Leaves are checked with AVX-512 (see [`CompiledClassifier::uses_vector_leaves`]).
    vector: bool,
    /// The bit-set lookup, which replaces the trees for small sets.
    bitsets: Option<Bitsets>,
}

impl CompiledClassifier {
    /// Compiles `rules` (in priority order).
    ///
    /// Fails with [`BuildError::MemoryCap`] before the tables grow past
    /// `config.memory_cap_bytes`.
    ///
    /// ```
    /// use palisade_classify::{BuildConfig, BuildError, CompiledClassifier, Prefix, RuleMatch};
    /// let rules: Vec<RuleMatch> = (0..200u32)
    ///     .map(|i| RuleMatch { src: vec![Prefix::v4(i.to_be_bytes(), 32)], ..RuleMatch::any() })
    ///     .collect();
    /// let err = CompiledClassifier::build(&rules, &BuildConfig::default().with_memory_cap(1000)).unwrap_err();
    /// assert!(matches!(err, BuildError::MemoryCap { .. }));
    /// assert!(err.to_string().contains("cap 1000 bytes"));
    /// ```
    pub fn build(rules: &[RuleMatch], config: &BuildConfig) -> Result<Self, BuildError> {
        if rules.len() >= NO_MATCH as usize {
            return Err(BuildError::TooManyRules { rules: rules.len() });
        }
        let boxes: Vec<RuleBox> = rules.iter().map(RuleBox::of).collect();
        let verify = if boxes.iter().all(|b| b.plain) {
            Vec::new()
        } else {
            rules.to_vec()
        };
        let verify_bytes = verify.iter().map(RuleMatch::heap_bytes).sum::<usize>()
            + verify.len() * core::mem::size_of::<RuleMatch>();
        let mut b = Builder {
            boxes: &boxes,
            tab: DUMMY_NODE.to_vec(),
            leaves: Leaves::default(),
            cap: config.memory_cap_bytes,
            base_bytes: verify_bytes,
            leaf_size: config.leaf_size.max(1),
            space_factor: config.space_factor.max(2),
            tree_mark: (0, 0),
            tree_cap: usize::MAX,
        };
        if let Err(Stop::Cap(e)) = b.check() {
            return Err(e);
        }
        if rules.len() <= config.bitset_max_rules {
            let list: Vec<LeafRule> = boxes.iter().zip(0..).map(|(bx, i)| bx.leaf_rule(i)).collect();
            let budget = (config.memory_cap_bytes / 4).saturating_sub(verify_bytes);
            if let Some(bitsets) = Bitsets::build(&list, budget) {
                return Ok(Self::assemble(b, Vec::new(), verify, config, Some(bitsets)));
            }
        }
        // Split the rules by their most specific field (CutSplit): source
        // address, destination address (at most 2^16 addresses wide),
        // destination port, source port (at most 2^10 ports wide), or none.
        // Cutting a tree's specific field then replicates few rules.
        let mut groups: [Vec<u32>; 5] = Default::default();
        for (i, bx) in boxes.iter().enumerate() {
            let g = if bx.span_bits(0) <= 16 {
                0
            } else if bx.span_bits(1) <= 16 {
                1
            } else if bx.span_bits(3) <= 10 {
                2
            } else if bx.span_bits(2) <= 10 {
                3
            } else {
                4
            };
            groups[g].push(i as u32);
        }
        let sf = config.space_factor.max(2);
        let mut roots = Vec::new();
        for g in groups.iter() {
            roots.extend(b.group_tree(g, sf, false)?);
        }
        // Small sets try one tree for every group but the source one: fewer
        // trees to walk, paid for with deeper or fuller ones. The merged tree
        // is kept when it costs less on the rules' corner keys (levels walked,
        // candidates checked, trees visited), which is deterministic.
        let rest = groups[1..].iter().filter(|g| !g.is_empty()).count();
        if rules.len() <= MERGE_MAX_RULES && rest >= 2 {
            let marks = (b.tab.len(), b.leaves.len());
            let mut merged = groups[1..].concat();
            merged.sort_unstable();
            if let Some(m) = b.group_tree(&merged, sf, true)? {
                let mut alt: Vec<(u32, u32)> = roots
                    .iter()
                    .copied()
                    .take(!groups[0].is_empty() as usize)
                    .collect();
                alt.push(m);
                let keys = crate::corner_keys(rules, MERGE_KEYS);
                if lookup_cost(&b.tab, &b.leaves, &alt, &keys) < lookup_cost(&b.tab, &b.leaves, &roots, &keys)
                {
                    // Rebuild with the merged grouping (the same trees), so no table keeps an unused tree.
                    b.tab.truncate(DUMMY_NODE.len());
                    b.leaves.truncate(0);
                    roots.clear();
                    roots.extend(b.group_tree(&groups[0], sf, false)?);
                    roots.extend(b.group_tree(&merged, sf, false)?);
                } else {
                    b.tab.truncate(marks.0);
                    b.leaves.truncate(marks.1);
                }
            }
        }
        roots.sort_by_key(|&(_, first)| first);
        Ok(Self::assemble(b, roots, verify, config, None))
    }

    /// The classifier of a finished build: its trees (`roots`, in order of
    /// their first rule) or its bit sets.
    fn assemble(
        mut b: Builder,
        roots: Vec<(u32, u32)>,
        verify: Vec<RuleMatch>,
        config: &BuildConfig,
        bitsets: Option<Bitsets>,
    ) -> CompiledClassifier {
        b.tab.shrink_to_fit();
        b.leaves.finish();
        CompiledClassifier {
            tab: b.tab,
            leaves: b.leaves,
            roots,
            rule_count: b.boxes.len(),
            verify,
            vector: config.vector && leaf::avx512_available(),
            bitsets,
        }
    }

    /// Number of trees the rules were split into.
    ///
    /// ```
    /// use palisade_classify::{BuildConfig, CompiledClassifier};
    /// assert_eq!(CompiledClassifier::build(&[], &BuildConfig::default()).unwrap().tree_count(), 0);
    /// ```
    pub fn tree_count(&self) -> usize {
        self.roots.len()
    }

    /// Follows one tree reference one level down (a leaf stays on itself,
    /// without a branch: it steps through the dummy node and keeps its reference).
    #[inline(always)]
    fn step(&self, r: u32, p: &Point) -> u32 {
        // Bit masks, not `if`: the compiler turned the select into a branch
        // per lane and level, which mispredicts as lanes reach their leaves.
        let leaf_mask = 0u32.wrapping_sub(r >> 31);
        let child = child_of(&self.tab, (r & !leaf_mask) as usize, p);
        (r & leaf_mask) | (child & !leaf_mask)
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

    /// Walks a tree to its leaf; returns the leaf's reference.
    #[inline(always)]
    fn walk(&self, mut r: u32, p: &Point) -> u32 {
        while !self.is_leaf(r) {
            r = self.step(r, p);
        }
        r
    }

    /// The first rule of leaf `r` that matches, if better than `best`; else
    /// `best`, or with `VECTOR` and not `MIN` some index not better than `best`.
    /// `VECTOR` checks 16 rules per step; callers pass it only when [`leaf::avx512_available`].
    #[inline(always)]
    fn leaf_first<const VECTOR: bool, const MIN: bool>(
        &self,
        r: u32,
        p: &Point,
        key: &FlowKey,
        best: u32,
    ) -> u32 {
        let leaf = Self::leaf_ref(r);
        let q = Probe {
            p,
            key,
            verify: &self.verify,
            best,
        };
        #[cfg(target_arch = "x86_64")]
        if VECTOR {
            // SAFETY: `VECTOR` is true only on a path entered after
            // `leaf::avx512_available()` returned true (see `vector`).
            #[allow(unsafe_code)]
            return unsafe {
                if self.verify.is_empty() {
                    leaf::first_avx512::<false, MIN>(&self.leaves, leaf, q)
                } else {
                    leaf::first_avx512::<true, MIN>(&self.leaves, leaf, q)
                }
            };
        }
        leaf::first_scalar(&self.leaves, leaf, &q)
    }

    /// Classifies up to [`LANES`] keys, walking them level by level together
    /// (the lookup without AVX-512).
    #[inline(always)]
    fn classify_lanes(&self, keys: &[FlowKey], out: &mut [RuleIndex]) {
        let n = keys.len().min(out.len()).min(LANES);
        let mut pts = [[0u32; 8]; LANES];
        for j in 0..n {
            pts[j] = point_of(&keys[j]);
        }
        // Lanes past the keys count as matched, so they walk no tree.
        let mut best = [0; LANES];
        best[..n].fill(NO_MATCH);
        for &(root, first) in &self.roots {
            // Lanes already matched by a rule before this tree's first sit on
            // the empty leaf; a tree no lane needs is skipped.
            let mut refs = [0u32; LANES];
            let mut any = false;
            for j in 0..LANES {
                let need = best[j] > first;
                refs[j] = if need { root } else { EMPTY };
                any |= need;
            }
            if !any {
                continue;
            }
            // All lanes step together until every lane sits on its leaf.
            loop {
                let mut all_leaves = true;
                for j in 0..LANES {
                    refs[j] = self.step(refs[j], &pts[j]);
                    all_leaves &= refs[j] & LEAF != 0;
                }
                if all_leaves {
                    break;
                }
            }
            for j in 0..n {
                best[j] = self.leaf_first::<false, true>(refs[j], &pts[j], &keys[j], best[j]);
            }
        }
        out[..n].copy_from_slice(&best[..n]);
    }

    #[inline(always)]
    fn classify_one<const VECTOR: bool>(&self, key: &FlowKey) -> RuleIndex {
        let p = point_of(key);
        let mut best = NO_MATCH;
        for &(root, first) in &self.roots {
            if first >= best {
                continue;
            }
            let leaf = self.walk(root, &p);
            best = self.leaf_first::<VECTOR, true>(leaf, &p, key, best);
        }
        best
    }

    /// [`Classifier::classify_batch`] with AVX-512: [`VECTOR_LANES`] keys walk
    /// each tree together in vector registers, and leaves are checked 16 rules per step.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    fn classify_batch_avx512(&self, keys: &[FlowKey], out: &mut [RuleIndex]) {
        for (k, o) in keys.chunks(VECTOR_LANES).zip(out.chunks_mut(VECTOR_LANES)) {
            self.classify_lanes_avx512(k, o);
        }
    }

    /// Classifies up to [`VECTOR_LANES`] keys: each tree is walked by all of
    /// them at once, 16 per vector, one level per step (three gathers: node
    /// header, base, child; only the child's at the root); the groups of 16
    /// step together so that their gathers overlap. Then each key's leaf is
    /// checked, unless it is the empty one.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    #[inline]
    #[allow(unsafe_code)]
    fn classify_lanes_avx512(&self, keys: &[FlowKey], out: &mut [RuleIndex]) {
        use core::arch::x86_64::*;
        const G: usize = VECTOR_LANES / 16;
        let n = keys.len().min(out.len()).min(VECTOR_LANES);
        let mut pts = [[0u32; 8]; VECTOR_LANES];
        let mut dims = [[0u32; VECTOR_LANES]; DIMS];
        for j in 0..n {
            pts[j] = point_of(&keys[j]);
            for d in 0..DIMS {
                dims[d][j] = pts[j][d];
            }
        }
        // Lanes past the keys count as matched, so they walk no tree.
        let mut best = [0u32; VECTOR_LANES];
        best[..n].fill(NO_MATCH);
        // SAFETY: loads of 16 `u32`s inside local arrays of VECTOR_LANES (a multiple of 16).
        let pv: [[__m512i; DIMS]; G] = core::array::from_fn(|g| {
            core::array::from_fn(|d| unsafe {
                _mm512_loadu_epi32(dims[d].as_ptr().add(16 * g) as *const i32)
            })
        });
        let tab = self.tab.as_ptr() as *const i32;
        // The table always holds the dummy node, so it has 3 entries or more,
        // and fewer than 2^31 (the leaf tag), so indices fit an i32.
        let last = self.tab.len().saturating_sub(1) as i32;
        let leaf_tag = _mm512_set1_epi32(LEAF as i32);
        for &(root, first) in &self.roots {
            // Lanes already matched by a rule before this tree's first skip it.
            let mut need = [0 as __mmask16; G];
            let mut refs = [_mm512_setzero_si512(); G];
            for g in 0..G {
                // SAFETY: a load of 16 lanes inside the local array.
                let bv = unsafe { _mm512_loadu_epi32(best.as_ptr().add(16 * g) as *const i32) };
                need[g] = _mm512_cmpgt_epu32_mask(bv, _mm512_set1_epi32(first as i32));
                refs[g] = _mm512_mask_blend_epi32(
                    need[g],
                    _mm512_set1_epi32(EMPTY as i32),
                    _mm512_set1_epi32(root as i32),
                );
            }
            if need.iter().all(|&m| m == 0) {
                continue;
            }
            // The root is the same node for every lane: its header and base
            // are scalars, so its step needs only the child gather.
            if !self.is_leaf(root) {
                let at = (root as usize).min(self.tab.len().saturating_sub(3));
                let hdr = self.tab.get(at).copied().unwrap_or(0);
                let base = self.tab.get(at + 1).copied().unwrap_or(0);
                let d = (hdr & 7) as usize;
                let bcast = |x: u32| _mm512_set1_epi32(x as i32);
                for g in 0..G {
                    let v = pv[g][if d < DIMS { d } else { 0 }];
                    let child_at = child_slots(bcast(at as u32), bcast(hdr), bcast(base), v, last);
                    // SAFETY: `child_at` is clamped to 0..=last, inside `tab`.
                    refs[g] = unsafe { _mm512_mask_i32gather_epi32::<4>(refs[g], need[g], child_at, tab) };
                }
            }
            loop {
                let mut any = 0;
                for g in 0..G {
                    // Lanes still on a node (below the leaf tag).
                    let active = _mm512_cmplt_epu32_mask(refs[g], leaf_tag);
                    any |= active;
                    if active == 0 {
                        continue;
                    }
                    let at = _mm512_min_epu32(refs[g], _mm512_set1_epi32(last - 2));
                    // SAFETY: every index is clamped to 0..=last, inside `tab`
                    // (`at` to last - 2, so `at + 1` is inside too).
                    let (hdr, base) = unsafe {
                        (
                            _mm512_mask_i32gather_epi32::<4>(_mm512_setzero_si512(), active, at, tab),
                            _mm512_mask_i32gather_epi32::<4>(
                                _mm512_setzero_si512(),
                                active,
                                _mm512_add_epi32(at, _mm512_set1_epi32(1)),
                                tab,
                            ),
                        )
                    };
                    // The node's dimension of each lane's point.
                    let dim = _mm512_and_si512(hdr, _mm512_set1_epi32(7));
                    let mut v = pv[g][0];
                    for (d, pd) in pv[g].iter().enumerate().skip(1) {
                        let is_d = _mm512_cmpeq_epi32_mask(dim, _mm512_set1_epi32(d as i32));
                        v = _mm512_mask_mov_epi32(v, is_d, *pd);
                    }
                    let child_at = child_slots(at, hdr, base, v, last);
                    // SAFETY: `child_at` is clamped to 0..=last (at <= last - 2 and
                    // idx <= 0xffff, so the sum cannot wrap before the clamp).
                    refs[g] = unsafe { _mm512_mask_i32gather_epi32::<4>(refs[g], active, child_at, tab) };
                }
                if any == 0 {
                    break;
                }
            }
            let mut leaves = [0u32; VECTOR_LANES];
            let mut lanes = 0u64;
            for (g, r) in refs.iter().enumerate().rev() {
                // SAFETY: a store of 16 lanes inside the local array.
                unsafe { _mm512_storeu_epi32(leaves.as_mut_ptr().add(16 * g) as *mut i32, *r) };
                // Lanes in the empty leaf have nothing to check (most, in
                // trees of firewall sets).
                let filled = _mm512_mask_cmpneq_epu32_mask(need[g], *r, _mm512_set1_epi32(EMPTY as i32));
                lanes = lanes << 16 | filled as u64;
            }
            // Each lane's leaf match, then the better of it and the lane's
            // best, in vectors: a scalar min would become a branch on a
            // result that arrives late and mispredicts often.
            let mut found = [NO_MATCH; VECTOR_LANES];
            self.leaf_matches(lanes, &leaves, &pts, keys, &best, &mut found);
            for g in 0..G {
                // SAFETY: loads and a store of 16 lanes inside the local arrays.
                unsafe {
                    let at = 16 * g;
                    let b = _mm512_loadu_epi32(best.as_ptr().add(at) as *const i32);
                    let f = _mm512_loadu_epi32(found.as_ptr().add(at) as *const i32);
                    _mm512_storeu_epi32(best.as_mut_ptr().add(at) as *mut i32, _mm512_min_epu32(b, f));
                }
            }
        }
        out[..n].copy_from_slice(&best[..n]);
    }

    /// The leaf match of each lane in `lanes` (a bit per lane) against its
    /// leaf in `leaves`, into `found`: a rule better than the lane's `best`,
    /// or an index not better than it.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    #[inline(never)]
    fn leaf_matches(
        &self,
        mut lanes: u64,
        leaves: &[u32; VECTOR_LANES],
        pts: &[Point; VECTOR_LANES],
        keys: &[FlowKey],
        best: &[RuleIndex; VECTOR_LANES],
        found: &mut [RuleIndex; VECTOR_LANES],
    ) {
        while lanes != 0 {
            let j = lanes.trailing_zeros() as usize;
            lanes &= lanes - 1;
            if let (Some(f), Some(&b), Some(p), Some(k), Some(&r)) = (
                found.get_mut(j),
                best.get(j),
                pts.get(j),
                keys.get(j),
                leaves.get(j),
            ) {
                *f = self.leaf_first::<true, false>(r, p, k, b);
            }
        }
    }

    /// [`Classifier::classify_batch`] with the bit sets and AVX-512: the
    /// classes of [`bitset::BATCH`] keys first (their gathers overlap), then each key's intersection.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    fn classify_bitsets_avx512(&self, bitsets: &Bitsets, keys: &[FlowKey], out: &mut [RuleIndex]) {
        const CHUNK: usize = bitset::BATCH;
        let mut values = [[0u32; CHUNK]; bitset::FIELDS];
        let mut classes = [[0u32; CHUNK]; bitset::FIELDS];
        for (k, o) in keys.chunks(CHUNK).zip(out.chunks_mut(CHUNK)) {
            // Lanes past the keys keep values of an earlier chunk: valid, and their results are dropped.
            for (j, key) in k.iter().enumerate() {
                Bitsets::set_field_values(&point_of(key), j, &mut values);
            }
            // SAFETY (both calls): this function is compiled for, and entered
            // only after `leaf::avx512_available()` found, the features they need.
            #[allow(unsafe_code)]
            unsafe {
                bitsets.classes_avx512(&values, &mut classes)
            };
            for (j, (key, o)) in k.iter().zip(o.iter_mut()).enumerate() {
                let c = core::array::from_fn(|f| classes[f][j] as usize);
                #[allow(unsafe_code)]
                {
                    *o = unsafe {
                        if bitsets.has_product() {
                            bitsets.first_avx512::<3>(&c, key, &self.verify)
                        } else {
                            bitsets.first_avx512::<5>(&c, key, &self.verify)
                        }
                    };
                }
            }
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
        self.bitsets.is_some()
    }

    /// [`Classifier::classify`] with AVX-512 leaf checks, compiled for them.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    fn classify_one_avx512(&self, key: &FlowKey) -> RuleIndex {
        self.classify_one::<true>(key)
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
}

impl Classifier for CompiledClassifier {
    fn classify(&self, key: &FlowKey) -> RuleIndex {
        if let Some(bitsets) = &self.bitsets {
            return bitsets.lookup(&point_of(key), key, &self.verify);
        }
        #[cfg(target_arch = "x86_64")]
        if self.vector {
            // SAFETY: `vector` is set only when `leaf::avx512_available()`
            // found the features this function is compiled for.
            #[allow(unsafe_code)]
            return unsafe { self.classify_one_avx512(key) };
        }
        self.classify_one::<false>(key)
    }

    fn classify_batch(&self, keys: &[FlowKey], out: &mut [RuleIndex]) {
        if let Some(bitsets) = &self.bitsets {
            #[cfg(target_arch = "x86_64")]
            if self.vector {
                // SAFETY: `vector` is set only when `leaf::avx512_available()`
                // found the features this function is compiled for.
                #[allow(unsafe_code)]
                return unsafe { self.classify_bitsets_avx512(bitsets, keys, out) };
            }
            for (key, o) in keys.iter().zip(out.iter_mut()) {
                *o = bitsets.lookup(&point_of(key), key, &self.verify);
            }
            return;
        }
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
            + self.roots.capacity() * 8
            + self.verify.iter().map(RuleMatch::heap_bytes).sum::<usize>()
            + self.verify.capacity() * core::mem::size_of::<RuleMatch>()
            + self.bitsets.as_ref().map_or(0, Bitsets::capacity_bytes)
    }
}

/// Where each lane's child reference is in the table: the node at `at`
/// (header `hdr`, base `base`) cut at the lane's value `v` (as
/// [`child_of`]), clamped to `last`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
#[inline]
fn child_slots(
    at: core::arch::x86_64::__m512i,
    hdr: core::arch::x86_64::__m512i,
    base: core::arch::x86_64::__m512i,
    v: core::arch::x86_64::__m512i,
    last: i32,
) -> core::arch::x86_64::__m512i {
    use core::arch::x86_64::*;
    let shift = _mm512_and_si512(_mm512_srli_epi32::<8>(hdr), _mm512_set1_epi32(31));
    let idx = _mm512_min_epu32(
        _mm512_srlv_epi32(_mm512_sub_epi32(v, base), shift),
        _mm512_srli_epi32::<16>(hdr),
    );
    _mm512_min_epu32(
        _mm512_add_epi32(_mm512_add_epi32(at, idx), _mm512_set1_epi32(2)),
        _mm512_set1_epi32(last),
    )
}

/// Build state: the growing tables and the limits.
struct Builder<'a> {
    boxes: &'a [RuleBox],
    tab: Vec<u32>,
    leaves: Leaves,
    cap: usize,
    base_bytes: usize,
    leaf_size: usize,
    space_factor: usize,
    /// Table lengths when the current tree started.
    tree_mark: (usize, usize),
    /// Bytes the current tree may use before it is rebuilt with less replication.
    tree_cap: usize,
}

/// Why a build step stopped.
enum Stop {
    /// The memory cap: the build fails.
    Cap(BuildError),
    /// The current tree passed its budget: rebuild it with less replication.
    TreeBudget,
}

impl Builder<'_> {
    fn bytes(&self) -> usize {
        self.base_bytes + self.tab.len() * 4 + self.leaves.len() * 4
    }

    /// Bytes added to the tables since the given lengths.
    fn bytes_since(&self, tab: usize, leaves: usize) -> usize {
        (self.tab.len() - tab) * 4 + (self.leaves.len() - leaves) * 4
    }

    fn check(&self) -> Result<(), Stop> {
        let needed = self.bytes();
        // References must not reach the leaf tag bit.
        if needed > self.cap || self.tab.len() >= LEAF as usize || self.leaves.len() > LEAF_WORDS as usize {
            Err(Stop::Cap(BuildError::MemoryCap {
                needed,
                cap: self.cap,
            }))
        } else if self.bytes_since(self.tree_mark.0, self.tree_mark.1) > self.tree_cap {
            Err(Stop::TreeBudget)
        } else {
            Ok(())
        }
    }

    /// Builds the tree of a group of rules (priority-ordered): its root and
    /// first rule, or `None` for an empty group. A tree that replicates too
    /// much is abandoned as soon as it passes its budget and rebuilt with
    /// less replication; with `optional`, one still past it with the least,
    /// or reaching the memory cap, is dropped (`None`, tables as before).
    fn group_tree(
        &mut self,
        group: &[u32],
        sf: usize,
        optional: bool,
    ) -> Result<Option<(u32, u32)>, BuildError> {
        if group.is_empty() {
            return Ok(None);
        }
        let list = self.prune(group.iter().copied(), &Region::full());
        let first = list.first().copied().unwrap_or(NO_MATCH);
        let marks = (self.tab.len(), self.leaves.len());
        // Big trees start with proportionally less replication (they
        // would pass the budget anyway, and every abandoned try costs).
        self.space_factor = (sf * BIG_TREE_RULES / list.len().max(1)).clamp(2, MAX_SPACE_FACTOR.max(sf));
        loop {
            self.tree_mark = marks;
            self.tree_cap = if self.space_factor > 2 || optional {
                TREE_BYTES_PER_RULE * list.len() + TREE_BYTES_BASE
            } else {
                usize::MAX
            };
            let stop = match self.node(&list, Region::full()) {
                Ok(root) => return Ok(Some((root, first))),
                Err(stop) => stop,
            };
            self.tab.truncate(marks.0);
            self.leaves.truncate(marks.1);
            match stop {
                Stop::Cap(_) if optional => return Ok(None),
                Stop::Cap(e) => return Err(e),
                // Only an optional tree has a budget at the least replication.
                Stop::TreeBudget if self.space_factor == 2 => return Ok(None),
                Stop::TreeBudget => self.space_factor = (self.space_factor / 2).max(2),
            }
        }
    }

    /// Drops rules shadowed inside `region`: after a plain rule covering the
    /// region, every later rule whose requirements include the plain rule's
    /// can never be the first match there.
    fn prune(&self, rules: impl Iterator<Item = u32>, region: &Region) -> Vec<u32> {
        let mut cover = 0u16;
        let mut out = Vec::new();
        for r in rules {
            let b = &self.boxes[r as usize];
            if cover & SUBSETS[b.req as usize] != 0 {
                continue;
            }
            out.push(r);
            if b.plain && region.covered_by(b) {
                cover |= 1 << b.req;
            }
        }
        out
    }

    fn leaf(&mut self, rules: &[u32]) -> Result<u32, Stop> {
        if rules.is_empty() {
            return Ok(EMPTY);
        }
        let list: Vec<LeafRule> = rules
            .iter()
            .map(|&r| self.boxes[r as usize].leaf_rule(r))
            .collect();
        let leaf = self.leaves.push(&list);
        self.check()?;
        Ok(LEAF | leaf.code << LEAF_COUNT_SHIFT | (leaf.start as u32 & LEAF_WORDS))
    }

    /// The best cut of a node holding `rules`, its replication estimated on
    /// `est` (every `stride`-th rule, or all of them with stride 1).
    fn choose_cut(&self, rules: &[u32], est: &[u32], stride: usize, region: &Region) -> Option<Cut> {
        let n = rules.len();
        let budget = self.space_factor * n;
        let mut best: Option<Cut> = None;
        let mut counts: Vec<u32> = Vec::new();
        for d in 0..DIMS {
            let (mut hlo, mut hhi) = (region.hi[d], region.lo[d]);
            let mut all_span = true;
            for &r in rules {
                let b = &self.boxes[r as usize];
                hlo = hlo.min(b.lo[d].max(region.lo[d]));
                hhi = hhi.max(b.hi[d].min(region.hi[d]));
                all_span &= b.lo[d] <= region.lo[d] && b.hi[d] >= region.hi[d];
            }
            if all_span {
                // Every rule spans the region here: a cut separates nothing.
                continue;
            }
            let shrinks = hlo > region.lo[d] || hhi < region.hi[d];
            let width = hhi as u64 - hlo as u64 + 1;
            // 2^wbits >= width.
            let wbits = 64 - (width - 1).leading_zeros();
            // The most cuts within the space budget (the replication grows
            // with the number of cuts, so a binary search finds it).
            let sum_for = |shift: u32| -> usize {
                let mut spans = 0usize;
                for &r in est {
                    let b = &self.boxes[r as usize];
                    let a = (b.lo[d].max(hlo) - hlo) >> shift;
                    let z = (b.hi[d].min(hhi) - hlo) >> shift;
                    spans += (z - a) as usize + 1;
                }
                ((width - 1) >> shift) as usize + 1 + spans * stride
            };
            let mut chosen: Option<u32> = None;
            let (mut lo_k, mut hi_k) = (1u32, wbits.min(MAX_CUT_BITS));
            while lo_k <= hi_k {
                let k = (lo_k + hi_k) / 2;
                if sum_for(wbits - k) <= budget {
                    chosen = Some(wbits - k);
                    lo_k = k + 1;
                } else {
                    hi_k = k - 1;
                }
            }
            let shift = match chosen {
                Some(s) => s,
                // Only isolate the hull.
                None if shrinks => wbits.min(31),
                None => continue,
            };
            let ncuts = ((width - 1) >> shift) as usize + 1;
            counts.clear();
            counts.resize(ncuts + 1, 0);
            let mut sum = 0usize;
            for &r in est {
                let b = &self.boxes[r as usize];
                let a = ((b.lo[d].max(hlo) - hlo) >> shift) as usize;
                let z = ((b.hi[d].min(hhi) - hlo) >> shift) as usize;
                // A difference array: entries go "negative" (wrap) and are summed with
                // wrapping_add below, so they are updated with wrapping arithmetic too.
                counts[a] = counts[a].wrapping_add(1);
                counts[z + 1] = counts[z + 1].wrapping_sub(1);
                sum += z - a + 1;
            }
            let mut run = 0u32;
            let mut maxc = 0u32;
            for c in counts.iter().take(ncuts) {
                run = run.wrapping_add(*c);
                maxc = maxc.max(run);
            }
            // Fewest rules in the fullest child, then the most narrowing of the
            // region (keys outside the hull are done at once), then least replication.
            let narrowing = (region.hi[d] - region.lo[d]) as u64 / width;
            let cut = Cut {
                d,
                base: hlo,
                shift,
                ncuts,
                maxc: maxc as usize * stride,
                narrowing,
                sum: sum * stride,
                shrinks,
            };
            if best.as_ref().is_none_or(|b| cut.better_than(b)) {
                best = Some(cut);
            }
        }
        best
    }

    /// Builds the subtree for `rules` (priority-ordered, pruned) within `region`.
    ///
    /// A node cuts one dimension: the hull of its rules there is split into
    /// `ncuts` pieces of `2^shift` values from `base`; keys outside the hull go
    /// to an extra, empty child.
    fn node(&mut self, rules: &[u32], region: Region) -> Result<u32, Stop> {
        let n = rules.len();
        if n <= self.leaf_size {
            return self.leaf(rules);
        }
        // Large nodes estimate each candidate cut on an even sample of their
        // rules (the hull is always exact); if the estimate finds no useful
        // cut, all rules decide.
        let stride = n.div_ceil(SAMPLE_RULES);
        let mut best = if stride > 1 {
            let sample: Vec<u32> = rules.iter().copied().step_by(stride).collect();
            self.choose_cut(rules, &sample, stride, &region)
        } else {
            None
        };
        if best.as_ref().is_none_or(|c| c.maxc >= n && !c.shrinks) {
            best = self.choose_cut(rules, rules, 1, &region);
        }
        let Some(cut) = best else {
            return self.leaf(rules);
        };
        if cut.maxc >= n && !cut.shrinks {
            return self.leaf(rules);
        }
        let Cut {
            d,
            base,
            shift,
            ncuts,
            ..
        } = cut;
        // The hull's top, not the region's: the last child ends where the rules do.
        // (With the region's top, a cut that only isolates a hull narrower than its
        // power-of-two span left the region unchanged and was chosen again and again:
        // unbounded recursion, a stack overflow found by the fuzz target `policy`.)
        let hhi = rules
            .iter()
            .map(|&r| self.boxes[r as usize].hi[d].min(region.hi[d]))
            .max()
            .unwrap_or(region.hi[d]);
        // Child lists, pruned per child as they are filled.
        let mut lists: Vec<Vec<u32>> = vec![Vec::new(); ncuts];
        let mut cover = vec![0u16; ncuts];
        // differs[j]: children j-1 and j have different lists (differs[0] unused).
        let mut differs = vec![false; ncuts + 1];
        // partial[j]: some rule of child j does not span it in `d`. A subtree
        // depends on its region only through such rules, so two neighbours
        // share one subtree only when neither has any.
        let mut partial = vec![false; ncuts];
        let child_bounds = |j: usize| -> (u32, u32) {
            let lo = base as u64 + ((j as u64) << shift);
            let hi = (lo + (1u64 << shift) - 1).min(hhi as u64);
            (lo as u32, hi as u32)
        };
        // Whether a rule covers the region in every dimension but `d`.
        let covers_rest =
            |b: &RuleBox| (0..DIMS).all(|e| e == d || (b.lo[e] <= region.lo[e] && b.hi[e] >= region.hi[e]));
        for &r in rules {
            let b = &self.boxes[r as usize];
            let a = ((b.lo[d].max(base) - base) >> shift) as usize;
            let z = (((b.hi[d].min(hhi) - base) >> shift) as usize).min(ncuts - 1);
            let subsets = SUBSETS[b.req as usize];
            let can_cover = b.plain && covers_rest(b);
            let mut prev_pushed = false;
            for j in a..=z {
                let pushed = cover[j] & subsets == 0;
                // Children j-1 and j differ when the rule is in one only.
                differs[j] |= pushed != prev_pushed;
                prev_pushed = pushed;
                if !pushed {
                    continue;
                }
                lists[j].push(r);
                let (clo, chi) = child_bounds(j);
                let spans = b.lo[d] <= clo && b.hi[d] >= chi;
                partial[j] |= !spans;
                if can_cover && spans {
                    cover[j] |= 1 << b.req;
                }
            }
            if prev_pushed && z + 1 < ncuts {
                differs[z + 1] = true;
            }
        }
        drop(cover);
        let at = self.tab.len();
        self.tab.push(d as u32 | shift << 8 | (ncuts as u32) << 16);
        self.tab.push(base);
        // Children, then the outside child (the empty leaf).
        self.tab.resize(at + 2 + ncuts + 1, EMPTY);
        self.check()?;
        let mut prev: Option<u32> = None;
        for j in 0..ncuts {
            let list = core::mem::take(&mut lists[j]);
            let r = match prev {
                Some(pr) if !differs[j] && !partial[j] && !partial[j - 1] => pr,
                _ => {
                    let mut child = region;
                    (child.lo[d], child.hi[d]) = child_bounds(j);
                    self.node(&list, child)?
                }
            };
            self.tab[at + 2 + j] = r;
            prev = Some(r);
        }
        Ok(at as u32)
    }
}

/// The work of looking `keys` up in the trees `roots` of the tables: levels walked plus candidates checked plus twice the trees
/// visited (a visit has a fixed cost of its own). A tuning estimate: rules
/// that need the reference count as matching when their box holds the key.
fn lookup_cost(tab: &[u32], leaves: &Leaves, roots: &[(u32, u32)], keys: &[FlowKey]) -> u64 {
    let mut roots = roots.to_vec();
    roots.sort_by_key(|&(_, first)| first);
    let mut cost = 0u64;
    for key in keys {
        let p = point_of(key);
        let mut best = NO_MATCH;
        for &(root, first) in &roots {
            if first >= best {
                continue;
            }
            cost += 2;
            let mut r = root;
            while r & LEAF == 0 {
                r = child_of(tab, r as usize, &p);
                cost += 1;
            }
            let (first_word, n) = leaves.bounds(CompiledClassifier::leaf_ref(r));
            for i in 0..n {
                let c = leaves.rule(first_word, n, i);
                cost += 1;
                if c.idx >= best {
                    break;
                }
                if c.contains(&p) && c.need & !(p[5] as u8) & !VERIFY == 0 {
                    best = c.idx;
                    break;
                }
            }
        }
    }
    cost
}

/// A candidate cut of a node.
struct Cut {
    d: usize,
    base: u32,
    shift: u32,
    ncuts: usize,
    maxc: usize,
    narrowing: u64,
    sum: usize,
    shrinks: bool,
}

impl Cut {
    fn better_than(&self, other: &Cut) -> bool {
        (self.maxc, core::cmp::Reverse(self.narrowing), self.sum)
            < (other.maxc, core::cmp::Reverse(other.narrowing), other.sum)
    }
}
