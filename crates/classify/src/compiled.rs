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
//! rule-set splitting of EffiCuts/CutSplit): rules are split by which address
//! is specific (source prefix long, else destination prefix long, else
//! neither), so that cutting a tree's specific dimension replicates few
//! rules. Each node cuts one dimension of its region into 2^k aligned
//! pieces, indexed by a shift and a mask: one load per level. Leaves hold
//! short priority-ordered lists of compact boxes (32 bytes, inline, ended by
//! a sentinel). A rule that covers a child's whole region shadows every later
//! rule whose presence requirements include its own, and those are dropped.
//!
//! The leaf check is exact without calling [`RuleMatch::matches`] for *plain*
//! rules, those with at most one IPv4 prefix per address, one range per port
//! and an optional protocol (every ClassBench rule): their match is "point in
//! box, and the key carries what the rule constrains" (an IP header, IPv4,
//! a protocol, ports), which is compared as a bit set. Any other rule (IPv6,
//! lists, ICMP, TCP flags, VLAN, fragment, DSCP, ethertype) is verified with
//! [`RuleMatch::matches`], the reference itself.
//!
//! Lookups in a batch walk all keys level by level, so the loads of up to 16
//! independent walks are in flight at once.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use palisade_packet::{FlowKey, Present};

use crate::{Classifier, IpFamily, RuleIndex, RuleMatch, NO_MATCH};

/// Dimensions of the point: source, destination, source port, destination port, protocol.
const DIMS: usize = 5;
/// Width in bits of each dimension.
const WIDTH: [u8; DIMS] = [32, 32, 16, 16, 8];
/// Marks a tree reference as a leaf (index into the candidate array).
const LEAF: u32 = 1 << 31;
/// Most cut bits of one node.
const MAX_CUT_BITS: u8 = 16;
/// Keys walked together in a batch.
const LANES: usize = 16;

/// Requirement bits: what a key must carry for a rule to match it.
const REQ_IP: u8 = 1;
/// The key is IPv4.
const REQ_V4: u8 = 2;
/// The key carries a protocol.
const REQ_PROTO: u8 = 4;
/// The key carries ports.
const REQ_PORTS: u8 = 8;
/// Never carried by a key: the rule must be verified with the reference.
const VERIFY: u8 = 16;

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
    /// A node with at most this many rules becomes a leaf. Default 8.
    pub leaf_size: usize,
    /// A cut may replicate rules up to this factor of the node's rule count
    /// (counting one slot per child). Default 4.
    pub space_factor: usize,
}

impl Default for BuildConfig {
    fn default() -> Self {
        BuildConfig {
            memory_cap_bytes: 256 << 20,
            leaf_size: 8,
            space_factor: 4,
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

/// A rule's box in a leaf: `lo` and `span` (`hi - lo`) per dimension, requirement bits, index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C, align(32))]
struct Cand {
    s_lo: u32,
    s_span: u32,
    d_lo: u32,
    d_span: u32,
    sp_lo: u16,
    sp_span: u16,
    dp_lo: u16,
    dp_span: u16,
    pr_lo: u8,
    pr_span: u8,
    need: u8,
    _pad: u8,
    idx: u32,
}

impl Cand {
    /// Ends every leaf: its index is never below a best answer, so scans stop there.
    const SENTINEL: Cand = Cand {
        s_lo: 0,
        s_span: u32::MAX,
        d_lo: 0,
        d_span: u32::MAX,
        sp_lo: 0,
        sp_span: u16::MAX,
        dp_lo: 0,
        dp_span: u16::MAX,
        pr_lo: 0,
        pr_span: u8::MAX,
        need: 0,
        _pad: 0,
        idx: NO_MATCH,
    };

    #[inline(always)]
    fn contains(&self, p: &Point) -> bool {
        // Non-short-circuit `&`: five compares, one branch.
        (p[0].wrapping_sub(self.s_lo) <= self.s_span)
            & (p[1].wrapping_sub(self.d_lo) <= self.d_span)
            & ((p[2] as u16).wrapping_sub(self.sp_lo) <= self.sp_span)
            & ((p[3] as u16).wrapping_sub(self.dp_lo) <= self.dp_span)
            & ((p[4] as u8).wrapping_sub(self.pr_lo) <= self.pr_span)
    }
}

/// A key's point; index 5 holds its requirement bits, 6-7 are unused (so `dim & 7` needs no check).
type Point = [u32; 8];

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
    [s, d, sp, dp, proto, carried as u32, 0, 0]
}

/// A rule's box (inclusive bounds per dimension), requirements, and whether the box check is exact.
#[derive(Clone, Copy, Debug)]
struct RuleBox {
    lo: [u32; DIMS],
    hi: [u32; DIMS],
    req: u8,
    plain: bool,
}

fn dim_max(d: usize) -> u32 {
    if WIDTH[d] == 32 {
        u32::MAX
    } else {
        (1u32 << WIDTH[d]) - 1
    }
}

impl RuleBox {
    fn of(rule: &RuleMatch) -> RuleBox {
        let mut lo = [0u32; DIMS];
        let mut hi = [0u32; DIMS];
        for (d, h) in hi.iter_mut().enumerate() {
            *h = dim_max(d);
        }
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

    fn cand(&self, idx: u32) -> Cand {
        Cand {
            s_lo: self.lo[0],
            s_span: self.hi[0] - self.lo[0],
            d_lo: self.lo[1],
            d_span: self.hi[1] - self.lo[1],
            sp_lo: self.lo[2] as u16,
            sp_span: (self.hi[2] - self.lo[2]) as u16,
            dp_lo: self.lo[3] as u16,
            dp_span: (self.hi[3] - self.lo[3]) as u16,
            pr_lo: self.lo[4] as u8,
            pr_span: (self.hi[4] - self.lo[4]) as u8,
            need: self.req | if self.plain { 0 } else { VERIFY },
            _pad: 0,
            idx,
        }
    }

    /// Log2 of the width of dimension `d` (rounded down).
    fn span_bits(&self, d: usize) -> u32 {
        let w = self.hi[d] as u64 - self.lo[d] as u64 + 1;
        63 - w.leading_zeros()
    }
}

/// An aligned region of the point space: per dimension a low bound and a width in bits.
#[derive(Clone, Copy, Debug)]
struct Region {
    lo: [u32; DIMS],
    bits: [u8; DIMS],
}

impl Region {
    fn full() -> Region {
        Region {
            lo: [0; DIMS],
            bits: WIDTH,
        }
    }

    fn hi(&self, d: usize) -> u32 {
        (self.lo[d] as u64 + (1u64 << self.bits[d]) - 1) as u32
    }

    /// Whether `b` covers the region entirely.
    fn covered_by(&self, b: &RuleBox) -> bool {
        (0..DIMS).all(|d| b.lo[d] <= self.lo[d] && b.hi[d] >= self.hi(d))
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
    /// Tree nodes: a header word (dim | shift << 8 | mask << 16) followed by child references.
    tab: Vec<u32>,
    /// Leaf lists, each ended by a sentinel; index 0 is a sentinel (the empty leaf).
    cands: Vec<Cand>,
    /// Root reference of each tree.
    roots: Vec<u32>,
    /// The rules, kept only when some rule needs verification by the reference.
    verify: Vec<RuleMatch>,
    rule_count: usize,
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
            tab: Vec::new(),
            cands: vec![Cand::SENTINEL],
            cap: config.memory_cap_bytes,
            base_bytes: verify_bytes,
            leaf_size: config.leaf_size.max(1),
            space_factor: config.space_factor.max(2),
        };
        b.check()?;
        // Split the rules by which address is specific (at most 2^16 addresses wide).
        const SMALL: u32 = 16;
        let mut groups: [Vec<u32>; 3] = [Vec::new(), Vec::new(), Vec::new()];
        for (i, bx) in boxes.iter().enumerate() {
            let g = if bx.span_bits(0) <= SMALL {
                0
            } else if bx.span_bits(1) <= SMALL {
                1
            } else {
                2
            };
            groups[g].push(i as u32);
        }
        let mut roots = Vec::new();
        for g in groups.iter() {
            if g.is_empty() {
                continue;
            }
            let list = b.prune(g.iter().copied(), &Region::full());
            roots.push(b.node(&list, Region::full())?);
        }
        b.tab.shrink_to_fit();
        b.cands.shrink_to_fit();
        Ok(CompiledClassifier {
            tab: b.tab,
            cands: b.cands,
            roots,
            verify,
            rule_count: rules.len(),
        })
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

    /// Follows one tree reference one level down.
    #[inline(always)]
    fn step(&self, r: u32, p: &Point) -> u32 {
        let h = self.tab.get(r as usize).copied().unwrap_or(0);
        let f = p[(h & 7) as usize];
        let child = r as usize + 1 + ((f >> ((h >> 8) & 31)) & (h >> 16)) as usize;
        self.tab.get(child).copied().unwrap_or(LEAF)
    }

    /// Walks a tree to its leaf; returns the leaf's first candidate index.
    #[inline(always)]
    fn walk(&self, mut r: u32, p: &Point) -> usize {
        while r & LEAF == 0 {
            r = self.step(r, p);
        }
        (r & !LEAF) as usize
    }

    /// Scans a leaf for a match better than `best`.
    #[inline(always)]
    fn scan(&self, mut i: usize, p: &Point, key: &FlowKey, best: u32) -> u32 {
        let carried = p[5] as u8;
        while let Some(c) = self.cands.get(i) {
            if c.idx >= best {
                return best;
            }
            if c.contains(p) {
                let miss = c.need & !carried;
                if miss == 0
                    || (miss == VERIFY && self.verify.get(c.idx as usize).is_some_and(|r| r.matches(key)))
                {
                    return c.idx;
                }
            }
            i += 1;
        }
        best
    }

    /// Classifies up to [`LANES`] keys, walking them level by level together.
    #[inline(always)]
    fn classify_lanes(&self, keys: &[FlowKey], out: &mut [RuleIndex]) {
        let n = keys.len().min(out.len()).min(LANES);
        let mut pts = [[0u32; 8]; LANES];
        for j in 0..n {
            pts[j] = point_of(&keys[j]);
        }
        let mut best = [NO_MATCH; LANES];
        for &root in &self.roots {
            let mut refs = [root; LANES];
            loop {
                let mut active = false;
                for j in 0..n {
                    let r = refs[j];
                    if r & LEAF == 0 {
                        refs[j] = self.step(r, &pts[j]);
                        active = true;
                    }
                }
                if !active {
                    break;
                }
            }
            for j in 0..n {
                best[j] = self.scan((refs[j] & !LEAF) as usize, &pts[j], &keys[j], best[j]);
            }
        }
        out[..n].copy_from_slice(&best[..n]);
    }
}

impl Classifier for CompiledClassifier {
    fn classify(&self, key: &FlowKey) -> RuleIndex {
        let p = point_of(key);
        let mut best = NO_MATCH;
        for &root in &self.roots {
            let leaf = self.walk(root, &p);
            best = self.scan(leaf, &p, key, best);
        }
        best
    }

    fn classify_batch(&self, keys: &[FlowKey], out: &mut [RuleIndex]) {
        for (k, o) in keys.chunks(LANES).zip(out.chunks_mut(LANES)) {
            self.classify_lanes(k, o);
        }
    }

    fn rule_count(&self) -> usize {
        self.rule_count
    }

    fn memory_bytes(&self) -> usize {
        self.tab.capacity() * 4
            + self.cands.capacity() * core::mem::size_of::<Cand>()
            + self.roots.capacity() * 4
            + self.verify.iter().map(RuleMatch::heap_bytes).sum::<usize>()
            + self.verify.capacity() * core::mem::size_of::<RuleMatch>()
    }
}

/// Build state: the growing tables and the limits.
struct Builder<'a> {
    boxes: &'a [RuleBox],
    tab: Vec<u32>,
    cands: Vec<Cand>,
    cap: usize,
    base_bytes: usize,
    leaf_size: usize,
    space_factor: usize,
}

impl Builder<'_> {
    fn bytes(&self) -> usize {
        self.base_bytes + self.tab.len() * 4 + self.cands.len() * core::mem::size_of::<Cand>()
    }

    fn check(&self) -> Result<(), BuildError> {
        let needed = self.bytes();
        if needed > self.cap {
            Err(BuildError::MemoryCap {
                needed,
                cap: self.cap,
            })
        } else {
            Ok(())
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

    fn leaf(&mut self, rules: &[u32]) -> Result<u32, BuildError> {
        if rules.is_empty() {
            return Ok(LEAF);
        }
        let start = self.cands.len() as u32;
        for &r in rules {
            self.cands.push(self.boxes[r as usize].cand(r));
        }
        self.cands.push(Cand::SENTINEL);
        self.check()?;
        Ok(LEAF | start)
    }

    /// Builds the subtree for `rules` (priority-ordered, pruned) within `region`.
    fn node(&mut self, rules: &[u32], region: Region) -> Result<u32, BuildError> {
        let n = rules.len();
        if n <= self.leaf_size {
            return self.leaf(rules);
        }
        // Choose a dimension and a number of cuts: per dimension the most cuts
        // within the space budget, then the dimension whose fullest child is
        // smallest.
        let budget = self.space_factor * n;
        let mut best: Option<(usize, u8, usize, usize)> = None; // (dim, bits, max child, sum)
        let mut counts: Vec<u32> = Vec::new();
        for d in 0..DIMS {
            if region.bits[d] == 0 {
                continue;
            }
            let rlo = region.lo[d];
            let rhi = region.hi(d);
            let max_bits = region.bits[d].min(MAX_CUT_BITS);
            let mut chosen = 0u8;
            for k in 1..=max_bits {
                let shift = region.bits[d] - k;
                let mut sum = 1usize << k;
                for &r in rules {
                    let b = &self.boxes[r as usize];
                    let lo = b.lo[d].max(rlo);
                    let hi = b.hi[d].min(rhi);
                    sum += ((hi - rlo) >> shift) as usize - ((lo - rlo) >> shift) as usize + 1;
                }
                if sum > budget {
                    break;
                }
                chosen = k;
            }
            if chosen == 0 {
                continue;
            }
            let shift = region.bits[d] - chosen;
            let ncuts = 1usize << chosen;
            counts.clear();
            counts.resize(ncuts + 1, 0);
            let mut sum = 0usize;
            for &r in rules {
                let b = &self.boxes[r as usize];
                let a = ((b.lo[d].max(rlo) - rlo) >> shift) as usize;
                let z = ((b.hi[d].min(rhi) - rlo) >> shift) as usize;
                counts[a] += 1;
                counts[z + 1] -= 1;
                sum += z - a + 1;
            }
            let mut run = 0u32;
            let mut maxc = 0u32;
            for c in counts.iter().take(ncuts) {
                run = run.wrapping_add(*c);
                maxc = maxc.max(run);
            }
            let cand = (d, chosen, maxc as usize, sum);
            let better = match best {
                None => true,
                Some((_, _, bm, bs)) => cand.2 < bm || (cand.2 == bm && cand.3 < bs),
            };
            if better {
                best = Some(cand);
            }
        }
        let Some((d, k, maxc, _)) = best else {
            return self.leaf(rules);
        };
        if maxc >= n {
            return self.leaf(rules);
        }
        let ncuts = 1usize << k;
        let shift = region.bits[d] - k;
        let rlo = region.lo[d];
        let rhi = region.hi(d);
        // Child lists, pruned per child as they are filled.
        let mut lists: Vec<Vec<u32>> = vec![Vec::new(); ncuts];
        let mut cover = vec![0u16; ncuts];
        // Whether a rule covers the region in every dimension but `d`.
        let covers_rest =
            |b: &RuleBox| (0..DIMS).all(|e| e == d || (b.lo[e] <= region.lo[e] && b.hi[e] >= region.hi(e)));
        for &r in rules {
            let b = &self.boxes[r as usize];
            let a = ((b.lo[d].max(rlo) - rlo) >> shift) as usize;
            let z = ((b.hi[d].min(rhi) - rlo) >> shift) as usize;
            let subsets = SUBSETS[b.req as usize];
            let can_cover = b.plain && covers_rest(b);
            for j in a..=z {
                if cover[j] & subsets != 0 {
                    continue;
                }
                lists[j].push(r);
                if can_cover {
                    let clo = rlo as u64 + ((j as u64) << shift);
                    let chi = clo + (1u64 << shift) - 1;
                    if b.lo[d] as u64 <= clo && b.hi[d] as u64 >= chi {
                        cover[j] |= 1 << b.req;
                    }
                }
            }
        }
        drop(cover);
        let at = self.tab.len();
        self.tab
            .push(d as u32 | (shift as u32) << 8 | ((ncuts as u32 - 1) << 16));
        self.tab.resize(at + 1 + ncuts, LEAF);
        self.check()?;
        let mut prev: Option<(usize, u32)> = None;
        for j in 0..ncuts {
            let r = match prev {
                Some((pj, pr)) if lists[pj] == lists[j] => pr,
                _ => {
                    let mut child = region;
                    child.lo[d] = rlo + ((j as u32) << shift);
                    child.bits[d] = shift;
                    let list = core::mem::take(&mut lists[j]);
                    let r = self.node(&list, child)?;
                    lists[j] = list;
                    r
                }
            };
            self.tab[at + 1 + j] = r;
            prev = Some((j, r));
        }
        Ok(at as u32)
    }
}
