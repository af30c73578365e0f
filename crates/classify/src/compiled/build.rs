//! Building the compiled classifier: rule boxes, the rule groups, and the
//! cutting trees (see the [module docs](super) for the design).

use alloc::vec;
use alloc::vec::Vec;

use super::project::{self, RuleBox, PART_FAMILIES};
use super::rank32::{Rank32, V4Ranks};
use super::ranks::{AddrMap, Ranks};
use super::*;
use crate::bitset::Bitsets;
use crate::leaf::{self, LeafRule, Leaves, VERIFY};
use crate::RuleMatch;

/// A box of the point space (inclusive bounds per dimension) that a node's keys lie in.
#[derive(Clone, Copy, Debug)]
struct Region {
    lo: [u32; DIMS],
    hi: [u32; DIMS],
}

impl Region {
    /// The whole point space of a part whose dimensions end at `dim_max`.
    fn full(dim_max: [u32; DIMS]) -> Region {
        Region {
            lo: [0; DIMS],
            hi: dim_max,
        }
    }

    /// Whether `b` covers the region entirely.
    fn covered_by(&self, b: &RuleBox) -> bool {
        (0..DIMS).all(|d| b.lo[d] <= self.lo[d] && b.hi[d] >= self.hi[d])
    }
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
        Self::build_with_limits(rules, config, TABLE_LIMITS)
    }

    /// [`CompiledClassifier::build`] with other table limits (tests reach them with few rules).
    fn build_with_limits(
        rules: &[RuleMatch],
        config: &BuildConfig,
        limits: (usize, usize),
    ) -> Result<Self, BuildError> {
        if rules.len() >= NO_MATCH as usize {
            return Err(BuildError::TooManyRules { rules: rules.len() });
        }
        // Sets looked up by trees: first the rules that can be a first match
        // (then ranks and trees need only those).
        let live = (rules.len() > config.bitset_max_rules).then(|| live_rules(rules, config, limits));
        let is_live = |i: usize| live.as_ref().is_none_or(|l| l[i]);
        let live_count = (0..rules.len()).filter(|&i| is_live(i)).count();
        let ranked = live_count >= config.ipv4_rank_min_rules;
        let built = Self::build_projected(rules, config, limits, live_count, ranked, is_live)?;
        // Between the two, either space may cut better (a set grown at random,
        // most of its rules never matching, did in rank space at 2x the speed;
        // others lost 5-10%): both are built, the cheaper on corner keys kept.
        if !ranked && live.is_some() && live_count >= RANK_TRY_MIN_RULES {
            if let Ok(alt) = Self::build_projected(rules, config, limits, live_count, true, is_live) {
                let keys = crate::corner_keys(rules, MERGE_KEYS);
                if alt.corner_cost(&keys) < built.corner_cost(&keys) {
                    return Ok(alt);
                }
            }
        }
        Ok(built)
    }

    /// The build of the rules for which `is_live` holds (`live_count` of
    /// them), with IPv4 addresses by rank when `ranked` (and the trie that
    /// looks them up fits its budget; else address space).
    fn build_projected(
        rules: &[RuleMatch],
        config: &BuildConfig,
        limits: (usize, usize),
        live_count: usize,
        ranked: bool,
        is_live: impl Fn(usize) -> bool,
    ) -> Result<Self, BuildError> {
        let trie_budget =
            (TRIE_BYTES_BASE + TRIE_BYTES_PER_RULE * live_count).min(config.memory_cap_bytes / 8);
        let (ranks, boxes) = project_all(rules, ranked.then_some(Some(trie_budget)), is_live);
        let verify = if boxes.iter().flatten().flatten().all(|b| b.plain) {
            Vec::new()
        } else {
            rules.to_vec()
        };
        let verify_bytes = verify.iter().map(RuleMatch::heap_bytes).sum::<usize>()
            + verify.len() * core::mem::size_of::<RuleMatch>();
        let mut b = Builder::new(config, limits, verify_bytes + ranks.capacity_bytes());
        if let Err(Stop::Cap(e)) = b.check() {
            return Err(e);
        }
        let mut parts: [Part; 2] = Default::default();
        for (p, part_boxes) in boxes.into_iter().enumerate() {
            let members: Vec<u32> = (0..rules.len() as u32)
                .filter(|&i| part_boxes[i as usize].is_some())
                .collect();
            if members.is_empty() {
                continue;
            }
            b.dim_max = ranks.dim_max(PART_FAMILIES[p]);
            b.boxes = part_boxes
                .into_iter()
                .map(|b| b.unwrap_or(RuleBox::NONE))
                .collect();
            // The merge decision's keys: the rules' corners of this part's family.
            let points = || -> Vec<Point> {
                crate::corner_keys(rules, MERGE_KEYS)
                    .iter()
                    .map(|k| point_of(k, &ranks))
                    .filter(|&(_, part)| part == p)
                    .map(|(pt, _)| pt)
                    .collect()
            };
            parts[p] = b.part(&members, rules.len(), config, points)?;
        }
        Ok(Self::assemble(b, parts, ranks, verify, rules.len(), config))
    }

    /// The estimated work of looking `keys` up (see [`lookup_cost`]), with
    /// the IPv4 rank tries' lookups when there are any.
    fn corner_cost(&self, keys: &[FlowKey]) -> u64 {
        let mut points: [Vec<Point>; 2] = Default::default();
        for k in keys {
            let (p, part) = point_of(k, &self.ranks);
            if let Some(v) = points.get_mut(part) {
                v.push(p);
            }
        }
        let ranked_v4 = if self.ranks.v4.is_some() {
            points[0].len() as u64
        } else {
            0
        };
        let mut cost = RANK_LOOKUP_COST * ranked_v4;
        for (part, pts) in self.parts.iter().zip(&points) {
            if part.bitsets.is_none() {
                cost = cost.saturating_add(lookup_cost(&self.tab, &self.leaves, &part.roots, pts));
            }
        }
        cost
    }

    /// The classifier of a finished build.
    fn assemble(
        mut b: Builder,
        parts: [Part; 2],
        ranks: Ranks,
        verify: Vec<RuleMatch>,
        rule_count: usize,
        config: &BuildConfig,
    ) -> CompiledClassifier {
        b.tab.shrink_to_fit();
        b.leaves.finish();
        CompiledClassifier {
            tab: b.tab,
            leaves: b.leaves,
            parts,
            ranks,
            rule_count,
            verify,
            vector: config.vector && leaf::avx512_available(),
        }
    }
}

/// The parts' rank indexes (over the prefixes of the rules for which
/// `included` holds) and each rule's box in each part (`None` outside it,
/// or when not included). IPv4 addresses are ranked with `v4_ranks`, and
/// looked up through a trie when it holds a budget the trie fits (see
/// [`Rank32::of_ranges`]; address space when it does not).
fn project_all(
    rules: &[RuleMatch],
    v4_ranks: Option<Option<usize>>,
    included: impl Fn(usize) -> bool,
) -> (Ranks, [Vec<Option<RuleBox>>; 2]) {
    let of = |list: fn(&RuleMatch) -> &[crate::Prefix]| {
        rules
            .iter()
            .enumerate()
            .filter(|&(i, _)| included(i))
            .flat_map(move |(_, r)| list(r))
    };
    let v4_ranges = |list: fn(&RuleMatch) -> &[crate::Prefix]| {
        of(list).filter(|p| p.family == crate::IpFamily::V4).map(|p| {
            let (lo, hi) = p.range();
            (lo as u32, hi as u32)
        })
    };
    let v4 = v4_ranks.and_then(|budget| {
        let src = Rank32::of_ranges(v4_ranges(|r| &r.src), budget)?;
        let dst = Rank32::of_ranges(
            v4_ranges(|r| &r.dst),
            budget.map(|b| b.saturating_sub(src.capacity_bytes())),
        )?;
        Some(V4Ranks { src, dst })
    });
    // The IPv6 part's address dimensions: a window, or ranks among the bounds of every IPv6 prefix.
    let ranks = Ranks {
        src: AddrMap::of_prefixes(of(|r| &r.src)),
        dst: AddrMap::of_prefixes(of(|r| &r.dst)),
        v4,
    };
    let common = [
        project::common_bits(of(|r| &r.src)),
        project::common_bits(of(|r| &r.dst)),
    ];
    let boxes = PART_FAMILIES.map(|family| {
        rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                if included(i) {
                    RuleBox::project(r, family, &ranks, common)
                } else {
                    None
                }
            })
            .collect()
    });
    (ranks, boxes)
}

/// Which rules can be the first match of some key (see
/// [`Builder::live_rules`]): found in rank space, where a region is
/// covered by a rule exactly when the rule covers its intervals.
fn live_rules(rules: &[RuleMatch], config: &BuildConfig, limits: (usize, usize)) -> Vec<bool> {
    let (ranks, boxes) = project_all(rules, Some(None), |_| true);
    let mut live = vec![false; rules.len()];
    let mut b = Builder::new(config, limits, 0);
    for (p, part_boxes) in boxes.into_iter().enumerate() {
        let members: Vec<u32> = (0..rules.len() as u32)
            .filter(|&i| part_boxes[i as usize].is_some())
            .collect();
        b.dim_max = ranks.dim_max(PART_FAMILIES[p]);
        b.boxes = part_boxes
            .into_iter()
            .map(|b| b.unwrap_or(RuleBox::NONE))
            .collect();
        for r in b.live_rules(&members) {
            live[r as usize] = true;
        }
    }
    live
}

/// Build state: the growing tables and the limits.
struct Builder {
    /// The boxes of the part being built, by rule index ([`RuleBox::NONE`] for rules outside it).
    boxes: Vec<RuleBox>,
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
    /// Rules of the current tree.
    tree_rules: usize,
    /// The most words the node table and the leaf table may hold (what their references can address).
    limits: (usize, usize),
    /// The largest value of each dimension in the part being built (below
    /// [`DIM_MAX`] on address dimensions looked up by rank).
    dim_max: [u32; DIMS],
}

/// Why a build step stopped.
enum Stop {
    /// The memory cap: the build fails.
    Cap(BuildError),
    /// The current tree passed its budget: rebuild it with less replication.
    TreeBudget,
}

impl Builder {
    /// A builder with empty tables, whose tables may use `config`'s memory
    /// cap less `base_bytes`, and words up to `limits`.
    fn new(config: &BuildConfig, limits: (usize, usize), base_bytes: usize) -> Builder {
        Builder {
            boxes: Vec::new(),
            tab: DUMMY_NODE.to_vec(),
            leaves: Leaves::default(),
            cap: config.memory_cap_bytes,
            base_bytes,
            leaf_size: config.leaf_size.max(1),
            space_factor: config.space_factor.max(2),
            tree_mark: (0, 0),
            tree_cap: usize::MAX,
            tree_rules: 0,
            limits,
            dim_max: DIM_MAX,
        }
    }

    /// The lookup structure of one part: bit sets for a small rule set
    /// (`rules` in all) when they fit, else trees over the part's `members`
    /// (rule indices, ascending). `points` gives the keys the merge
    /// decision is estimated on.
    fn part(
        &mut self,
        members: &[u32],
        rules: usize,
        config: &BuildConfig,
        points: impl FnOnce() -> Vec<Point>,
    ) -> Result<Part, BuildError> {
        if rules <= config.bitset_max_rules {
            let list: Vec<LeafRule> = self
                .boxes
                .iter()
                .zip(0..)
                .map(|(bx, i)| bx.leaf_rule(i))
                .collect();
            let budget = (self.cap / 4).saturating_sub(self.bytes());
            if let Some(bitsets) = Bitsets::build(&list, budget) {
                self.base_bytes += bitsets.capacity_bytes();
                if let Err(Stop::Cap(e)) = self.check() {
                    return Err(e);
                }
                return Ok(Part {
                    roots: Vec::new(),
                    bitsets: Some(bitsets),
                });
            }
        }
        // Split the rules by their most specific field (CutSplit): source
        // address, destination address (at most 2^16 addresses wide, or for
        // IPv6 a prefix 16 bits longer than the set's common prefix),
        // destination port, source port (at most 2^10 ports wide), or none.
        // Cutting a tree's specific field then replicates few rules.
        let mut groups: [Vec<u32>; 5] = Default::default();
        for &i in members {
            let w = self.boxes[i as usize].width_bits;
            let g = if w[0] <= 16 {
                0
            } else if w[1] <= 16 {
                1
            } else if w[3] <= 10 {
                2
            } else if w[2] <= 10 {
                3
            } else {
                4
            };
            groups[g].push(i);
        }
        let sf = config.space_factor.max(2);
        let start = (self.tab.len(), self.leaves.len());
        let mut roots = Vec::new();
        for g in groups.iter() {
            roots.extend(self.group_trees(g, sf, 0)?);
        }
        // One tree for all the rules: fewer trees to walk, paid for with
        // deeper or fuller ones, or with a tree past its budget (then there is
        // none). Kept when it costs less on the rules' corner keys (see
        // `lookup_cost`), which is deterministic. It wins where few rules
        // remain (most of a set shadowed) or few are wide.
        let nonempty = groups.iter().filter(|g| !g.is_empty()).count();
        if nonempty >= 2 && members.len() <= ONE_TREE_MAX_RULES {
            let marks = (self.tab.len(), self.leaves.len());
            if let Some(one) = self.group_tree_with(members, sf, true, true)? {
                let points = points();
                if lookup_cost(&self.tab, &self.leaves, &[one], &points)
                    < lookup_cost(&self.tab, &self.leaves, &roots, &points)
                {
                    roots = alloc::vec![self.relocate(marks, start, one)];
                } else {
                    self.tab.truncate(marks.0);
                    self.leaves.truncate(marks.1);
                }
            }
        }
        roots.sort_by_key(|&(_, first)| first);
        Ok(Part { roots, bitsets: None })
    }

    fn bytes(&self) -> usize {
        self.base_bytes + self.tab.len() * 4 + self.leaves.len() * 4
    }

    /// Moves the tree `tree` (root, first rule), whose nodes and leaves are
    /// all the tables hold from `from` (node table, leaf words) on, down to
    /// `to`, dropping what was there; returns it with its new root. A
    /// tree's nodes lie one after the other (header, base, children), so
    /// each is found from the one before, and every reference into the moved
    /// part is shifted with it.
    fn relocate(&mut self, from: (usize, usize), to: (usize, usize), tree: (u32, u32)) -> (u32, u32) {
        let (dn, dl) = ((from.0 - to.0) as u32, (from.1 - to.1) as u32);
        let fix = |r: u32| -> u32 {
            if r & LEAF == 0 {
                if r as usize >= from.0 {
                    r - dn
                } else {
                    r
                }
            } else {
                let leaf = CompiledClassifier::leaf_ref(r);
                if leaf.code != 0 && leaf.start >= from.1 {
                    r - dl
                } else {
                    r
                }
            }
        };
        let mut at = from.0;
        while at < self.tab.len() {
            let ncuts = (self.tab[at] >> 16) as usize;
            for slot in at + 2..at + 3 + ncuts {
                self.tab[slot] = fix(self.tab[slot]);
            }
            at += 3 + ncuts;
        }
        self.tab.copy_within(from.0.., to.0);
        self.tab.truncate(self.tab.len() - dn as usize);
        self.leaves.move_down(from.1, to.1);
        (fix(tree.0), tree.1)
    }

    /// Bytes added to the tables since the given lengths.
    fn bytes_since(&self, tab: usize, leaves: usize) -> usize {
        (self.tab.len() - tab) * 4 + (self.leaves.len() - leaves) * 4
    }

    fn check(&self) -> Result<(), Stop> {
        let needed = self.bytes();
        if needed > self.cap {
            Err(Stop::Cap(BuildError::MemoryCap {
                needed,
                cap: self.cap,
            }))
        } else if self.tab.len() > self.limits.0 {
            // A node's index must stay below the leaf tag bit.
            Err(Stop::Cap(BuildError::IndexLimit {
                table: "tree node",
                reached: self.tab.len(),
                limit: self.limits.0,
                bytes: needed,
                cap: self.cap,
            }))
        } else if self.leaves.len() > self.limits.1 {
            // A leaf reference holds its first word in 26 bits.
            Err(Stop::Cap(BuildError::IndexLimit {
                table: "leaf",
                reached: self.leaves.len(),
                limit: self.limits.1,
                bytes: needed,
                cap: self.cap,
            }))
        } else if self.bytes_since(self.tree_mark.0, self.tree_mark.1) > self.tree_cap {
            Err(Stop::TreeBudget)
        } else {
            Ok(())
        }
    }

    /// The trees of a group of rules (priority-ordered): one tree when it
    /// fits its budget at some replication; else the group is split in two,
    /// its tamer rules (narrower boxes) and its wilder ones, and each half
    /// gets trees of its own, so that wide rules no longer replicate across
    /// the cuts that the narrow ones need (the way librte_acl splits its
    /// tries, and EffiCuts its rules by size). A group that cannot be split
    /// further gets one tree, bounded by the memory cap only.
    fn group_trees(&mut self, group: &[u32], sf: usize, depth: u32) -> Result<Vec<(u32, u32)>, BuildError> {
        if group.is_empty() {
            return Ok(Vec::new());
        }
        let splittable = depth < MAX_SPLIT_DEPTH && group.len() >= MIN_SPLIT_RULES;
        if let Some(tree) = self.group_tree(group, sf, !splittable)? {
            return Ok(alloc::vec![tree]);
        }
        let (tame, wild) = self.split_by_width(group);
        let mut trees = self.group_trees(&tame, sf, depth + 1)?;
        trees.extend(self.group_trees(&wild, sf, depth + 1)?);
        Ok(trees)
    }

    /// A group split in two (each priority-ordered): the rules whose boxes
    /// are narrower than the group's median (the sum of the log2 widths of
    /// their dimensions), and the others; by priority halves when all are alike.
    fn split_by_width(&self, group: &[u32]) -> (Vec<u32>, Vec<u32>) {
        let width = |r: u32| self.boxes[r as usize].width_bits.iter().sum::<u32>();
        let mut widths: Vec<u32> = group.iter().map(|&r| width(r)).collect();
        widths.sort_unstable();
        let median = widths[widths.len() / 2];
        let (tame, wild): (Vec<u32>, Vec<u32>) = group.iter().partition(|&&r| width(r) < median);
        if tame.is_empty() || wild.is_empty() {
            let (a, b) = group.split_at(group.len() / 2);
            (a.to_vec(), b.to_vec())
        } else {
            (tame, wild)
        }
    }

    /// Builds the tree of a group of rules (priority-ordered): its root and
    /// first rule, or `None` for an empty group. A tree that replicates too
    /// much is abandoned as soon as it passes its budget and rebuilt with
    /// less replication; with `bounded` false, the least replication has no
    /// budget but the memory cap; with `bounded`, a tree still past its
    /// budget with the least is dropped (`None`, tables as before), as is
    /// one reaching the memory cap when `optional`.
    fn group_tree_with(
        &mut self,
        group: &[u32],
        sf: usize,
        optional: bool,
        bounded: bool,
    ) -> Result<Option<(u32, u32)>, BuildError> {
        if group.is_empty() {
            return Ok(None);
        }
        let list = self.prune(group.iter().copied(), &Region::full(self.dim_max));
        let first = list.first().copied().unwrap_or(NO_MATCH);
        let marks = (self.tab.len(), self.leaves.len());
        // Big trees start with proportionally less replication (they
        // would pass the budget anyway, and every abandoned try costs).
        self.space_factor = (sf * BIG_TREE_RULES / list.len().max(1)).clamp(2, MAX_SPACE_FACTOR.max(sf));
        self.tree_rules = list.len();
        loop {
            self.tree_mark = marks;
            self.tree_cap = if self.space_factor > 2 {
                TREE_BYTES_PER_RULE * list.len() + TREE_BYTES_BASE
            } else if bounded {
                // The least replication may use twice the budget before the group is split.
                2 * TREE_BYTES_PER_RULE * list.len() + TREE_BYTES_BASE
            } else {
                usize::MAX
            };
            let stop = match self.node(&list, Region::full(self.dim_max), true) {
                Ok(root) => return Ok(Some((root, first))),
                Err(stop) => stop,
            };
            self.tab.truncate(marks.0);
            self.leaves.truncate(marks.1);
            match stop {
                Stop::Cap(_) if optional => return Ok(None),
                Stop::Cap(e) => return Err(e),
                // Only a bounded tree has a budget at the least replication.
                Stop::TreeBudget if self.space_factor == 2 => return Ok(None),
                Stop::TreeBudget => self.space_factor = (self.space_factor / 2).max(2),
            }
        }
    }

    /// [`Builder::group_tree_with`], not optional; bounded unless `unbounded`.
    fn group_tree(
        &mut self,
        group: &[u32],
        sf: usize,
        unbounded: bool,
    ) -> Result<Option<(u32, u32)>, BuildError> {
        self.group_tree_with(group, sf, false, !unbounded)
    }

    /// Drops rules shadowed inside `region`: after a plain rule covering the
    /// region, every later rule whose requirements include the plain rule's
    /// can never be the first match there.
    fn prune(&self, rules: impl Iterator<Item = u32>, region: &Region) -> Vec<u32> {
        let mut cover = 0u128;
        let mut out = Vec::new();
        for r in rules {
            let b = &self.boxes[r as usize];
            if cover & SUBSETS[(b.req & 0x7f) as usize] != 0 {
                continue;
            }
            out.push(r);
            if b.plain && region.covered_by(b) {
                cover |= 1u128 << b.req;
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
                hhi,
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
    ///
    /// A tree whose node's children so far project the node past its share
    /// of the tree's budget is abandoned early (at the root (`top`), half
    /// again the budget; below, four times its rules' share): a failed try
    /// then costs a fraction of the tree, not all of its budget.
    fn node(&mut self, rules: &[u32], region: Region, top: bool) -> Result<u32, Stop> {
        let n = rules.len();
        if n <= self.leaf_size {
            return self.leaf(rules);
        }
        let Some(cut) = self.best_cut(rules, &region) else {
            return self.leaf(rules);
        };
        let d = cut.d;
        let Children {
            mut lists,
            differs,
            partial,
        } = self.children(rules, &region, &cut);
        let (base, shift, ncuts) = (cut.base, cut.shift, cut.ncuts);
        let at = self.tab.len();
        let node_leaves = self.leaves.len();
        self.tab.push(d as u32 | shift << 8 | (ncuts as u32) << 16);
        self.tab.push(base);
        // Children, then the outside child (the empty leaf).
        self.tab.resize(at + 2 + ncuts + 1, EMPTY);
        self.check()?;
        let mut prev: Option<u32> = None;
        let total: usize = lists.iter().map(Vec::len).sum();
        let mut done = 0usize;
        let node_budget = if top {
            self.tree_cap as u128 * 3 / 2
        } else {
            self.tree_cap as u128 * 4 * n as u128 / self.tree_rules.max(1) as u128
        };
        for j in 0..ncuts {
            let list = core::mem::take(&mut lists[j]);
            done += list.len();
            let r = match prev {
                Some(pr) if !differs[j] && !partial[j] && !partial[j - 1] => pr,
                _ => self.node(&list, cut.child(&region, j), false)?,
            };
            self.tab[at + 2 + j] = r;
            prev = Some(r);
            if self.tree_cap != usize::MAX && done * 16 >= total {
                let spent = self.bytes_since(at, node_leaves) as u128;
                if spent * total as u128 > node_budget * done as u128 {
                    return Err(Stop::TreeBudget);
                }
            }
        }
        Ok(at as u32)
    }
}

impl Builder {
    /// The cut of a node holding `rules` (more than a leaf's worth) in
    /// `region`, or `None` when no cut separates them (a leaf then).
    ///
    /// Large nodes estimate each candidate cut on an even sample of their
    /// rules (the hull is always exact); if the estimate finds no useful
    /// cut, all rules decide.
    fn best_cut(&self, rules: &[u32], region: &Region) -> Option<Cut> {
        let n = rules.len();
        let stride = n.div_ceil(SAMPLE_RULES);
        let mut best = if stride > 1 {
            let sample: Vec<u32> = rules.iter().copied().step_by(stride).collect();
            self.choose_cut(rules, &sample, stride, region)
        } else {
            None
        };
        if best.as_ref().is_none_or(|c| c.maxc >= n && !c.shrinks) {
            best = self.choose_cut(rules, rules, 1, region);
        }
        best.filter(|c| c.maxc < n || c.shrinks)
    }

    /// The children's rule lists of a node holding `rules` (priority-ordered)
    /// in `region` cut by `cut`, each pruned of the rules shadowed there.
    fn children(&self, rules: &[u32], region: &Region, cut: &Cut) -> Children {
        let Cut {
            d,
            base,
            shift,
            ncuts,
            hhi,
            ..
        } = *cut;
        let mut lists: Vec<Vec<u32>> = vec![Vec::new(); ncuts];
        let mut cover = vec![0u128; ncuts];
        let mut differs = vec![false; ncuts + 1];
        let mut partial = vec![false; ncuts];
        // Whether a rule covers the region in every dimension but `d`.
        let covers_rest =
            |b: &RuleBox| (0..DIMS).all(|e| e == d || (b.lo[e] <= region.lo[e] && b.hi[e] >= region.hi[e]));
        for &r in rules {
            let b = &self.boxes[r as usize];
            let a = ((b.lo[d].max(base) - base) >> shift) as usize;
            let z = (((b.hi[d].min(hhi) - base) >> shift) as usize).min(ncuts - 1);
            let subsets = SUBSETS[(b.req & 0x7f) as usize];
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
                let (clo, chi) = cut.child_bounds(j);
                let spans = b.lo[d] <= clo && b.hi[d] >= chi;
                partial[j] |= !spans;
                if can_cover && spans {
                    cover[j] |= 1u128 << b.req;
                }
            }
            if prev_pushed && z + 1 < ncuts {
                differs[z + 1] = true;
            }
        }
        Children {
            lists,
            differs,
            partial,
        }
    }

    /// The rules of `rules` (a part's members, ascending) that can be the
    /// first match of some key: a cutting tree over all of them, each child
    /// pruned of the rules shadowed there (as the trees' nodes are), down to
    /// small lists or until `LIVE_WORK_PER_RULE` list entries per rule are
    /// spent; a rule in no list at the bottom is shadowed everywhere, by
    /// rules of any group, and no group's tree needs it. (Sets grown in
    /// random order bury most rules under earlier wide ones.)
    fn live_rules(&mut self, rules: &[u32]) -> Vec<u32> {
        let region = Region::full(self.dim_max);
        let list = self.prune(rules.iter().copied(), &region);
        let mut live = vec![false; self.boxes.len()];
        let mut budget = LIVE_WORK_PER_RULE * rules.len();
        let saved = self.space_factor;
        self.space_factor = LIVE_SPACE_FACTOR;
        self.mark_live(&list, region, 0, &mut budget, &mut live);
        self.space_factor = saved;
        rules.iter().copied().filter(|&r| live[r as usize]).collect()
    }

    /// [`Builder::live_rules`] below one node.
    fn mark_live(&self, rules: &[u32], region: Region, depth: u32, budget: &mut usize, live: &mut [bool]) {
        let cut = if rules.len() <= self.leaf_size || depth >= LIVE_MAX_DEPTH || *budget < rules.len() {
            None
        } else {
            self.best_cut(rules, &region)
        };
        let Some(cut) = cut else {
            for &r in rules {
                live[r as usize] = true;
            }
            return;
        };
        let children = self.children(rules, &region, &cut);
        *budget = budget.saturating_sub(children.lists.iter().map(Vec::len).sum());
        for (j, list) in children.lists.iter().enumerate() {
            let same = j > 0 && !children.differs[j] && !children.partial[j] && !children.partial[j - 1];
            if !same {
                self.mark_live(list, cut.child(&region, j), depth + 1, budget, live);
            }
        }
    }
}

/// A node's children: their rule lists, whether each differs from the one
/// before it (`differs[0]` unused), and whether some rule of each does not
/// span it on the cut dimension (`partial`). A subtree depends on its region
/// only through such rules, so two neighbours share one subtree when their
/// lists are the same and neither has any.
struct Children {
    lists: Vec<Vec<u32>>,
    differs: Vec<bool>,
    partial: Vec<bool>,
}

/// Parts of up to this many rules (that can match) try one tree for all of them.
const ONE_TREE_MAX_RULES: usize = 32768;

/// Bytes the IPv4 rank tries may take: this much...
const TRIE_BYTES_BASE: usize = 2 << 20;
/// ...and this much per rule (at most an eighth of the memory cap).
const TRIE_BYTES_PER_RULE: usize = 64;

/// Sets of fewer rules (that can match) than [`BuildConfig::ipv4_rank_min_rules`],
/// but at least this many, are built in both address and rank space (see
/// [`CompiledClassifier::build`]); smaller ones cut address space only.
const RANK_TRY_MIN_RULES: usize = 1024;

/// The work of an IPv4 key's two rank trie lookups in [`lookup_cost`]'s
/// units (two or three dependent gathers each, as two tree levels).
const RANK_LOOKUP_COST: u64 = 8;

/// List entries per rule that [`Builder::live_rules`] may spend.
const LIVE_WORK_PER_RULE: usize = 24;
/// Depth at which [`Builder::live_rules`] stops cutting.
const LIVE_MAX_DEPTH: u32 = 24;
/// The replication [`Builder::live_rules`] allows a cut (see [`BuildConfig::space_factor`]).
const LIVE_SPACE_FACTOR: usize = 8;

/// The estimated work of looking `points` up in the trees `roots` of the
/// tables, in the AVX-512 lookup's terms (the scalar one's differ little):
/// each tree a key visits costs a fixed setup, each level walked three
/// gathers, each non-empty leaf a vector check per 16 rules and the
/// selection of its match. A tuning estimate: rules that need the reference
/// count as matching when their box holds the key.
fn lookup_cost(tab: &[u32], leaves: &Leaves, roots: &[(u32, u32)], points: &[Point]) -> u64 {
    const VISIT: u64 = 3;
    const LEVEL: u64 = 4;
    const LEAF_CHECK: u64 = 10;
    const BLOCK_CHECK: u64 = 6;
    let mut roots = roots.to_vec();
    roots.sort_by_key(|&(_, first)| first);
    let mut cost = 0u64;
    for p in points {
        let mut best = NO_MATCH;
        for &(root, first) in &roots {
            if first >= best {
                continue;
            }
            cost += VISIT;
            let mut r = root;
            while r & LEAF == 0 {
                r = child_of(tab, r as usize, p);
                cost += LEVEL;
            }
            let (first_word, n) = leaves.bounds(CompiledClassifier::leaf_ref(r));
            if n == 0 {
                continue;
            }
            cost += LEAF_CHECK + BLOCK_CHECK * ((n as u64 - 1) / leaf::BLOCK as u64);
            for i in 0..n {
                let c = leaves.rule(first_word, n, i);
                if c.idx >= best {
                    break;
                }
                if c.contains(p) && c.need & !(p[5] as u8) & !VERIFY == 0 {
                    best = c.idx;
                    break;
                }
            }
        }
    }
    cost
}

/// A candidate cut of a node.
#[derive(Clone, Copy)]
struct Cut {
    d: usize,
    base: u32,
    shift: u32,
    ncuts: usize,
    maxc: usize,
    narrowing: u64,
    sum: usize,
    shrinks: bool,
    /// Where the rules end on the cut dimension: the last child's top.
    /// (The hull's top, not the region's: with the region's top, a cut that
    /// only isolates a hull narrower than its power-of-two span left the
    /// region unchanged and was chosen again and again: unbounded recursion,
    /// a stack overflow found by the fuzz target `policy`.)
    hhi: u32,
}

impl Cut {
    /// The bounds of child `j` on the cut dimension.
    fn child_bounds(&self, j: usize) -> (u32, u32) {
        let lo = self.base as u64 + ((j as u64) << self.shift);
        let hi = (lo + (1u64 << self.shift) - 1).min(self.hhi as u64);
        (lo as u32, hi as u32)
    }

    /// The region of child `j` of a node in `region`.
    fn child(&self, region: &Region, j: usize) -> Region {
        let mut child = *region;
        (child.lo[self.d], child.hi[self.d]) = self.child_bounds(j);
        child
    }

    fn better_than(&self, other: &Cut) -> bool {
        (self.maxc, core::cmp::Reverse(self.narrowing), self.sum)
            < (other.maxc, core::cmp::Reverse(other.narrowing), other.sum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PortRange, Prefix};

    /// Rules that replicate: nested source prefixes and port ranges.
    fn replicating(n: u32) -> Vec<RuleMatch> {
        (0..n)
            .map(|i| RuleMatch {
                src: vec![Prefix::v4((i << 20).to_be_bytes(), 4 + (i % 20) as u8)],
                dst_port: vec![PortRange {
                    lo: (i % 97) as u16,
                    hi: 1000 + i as u16,
                }],
                proto: Some(6),
                ..RuleMatch::any()
            })
            .collect()
    }

    #[test]
    fn a_table_past_what_its_references_address_is_named_with_its_limit() {
        let rules = replicating(3000);
        let config = BuildConfig::default().with_memory_cap(1 << 30);
        let ok = CompiledClassifier::build(&rules, &config).unwrap();
        assert!(ok.memory_bytes() < 1 << 30);
        let err = CompiledClassifier::build_with_limits(&rules, &config, (1 << 31, 5_000)).unwrap_err();
        assert!(
            matches!(err, BuildError::IndexLimit { table: "leaf", limit: 5_000, cap, .. } if cap == 1 << 30),
            "{err:?}"
        );
        let text = alloc::format!("{err}");
        assert!(text.contains("the leaf table reached"), "{text}");
        assert!(
            text.contains("more than the 5000 its references can address"),
            "{text}"
        );
        assert!(
            text.contains("under the memory cap of 1073741824 bytes"),
            "{text}"
        );
        let err = CompiledClassifier::build_with_limits(&rules, &config, (100, 1 << 26)).unwrap_err();
        assert!(
            matches!(
                err,
                BuildError::IndexLimit {
                    table: "tree node",
                    ..
                }
            ),
            "{err:?}"
        );
        // The memory cap, when it comes first, is named as the memory cap.
        let err = CompiledClassifier::build(&rules, &config.with_memory_cap(50_000)).unwrap_err();
        assert!(
            matches!(err, BuildError::MemoryCap { cap: 50_000, .. }),
            "{err:?}"
        );
    }
}

#[cfg(test)]
mod one_tree_tests {
    use super::*;
    use crate::{Classifier, LinearClassifier, PortRange, Prefix};

    /// Rules specific in the destination, some also in the source: two
    /// groups, and one tree over both cuts the destination for all of them.
    fn two_groups(n: u32) -> Vec<RuleMatch> {
        (0..n)
            .map(|i| RuleMatch {
                src: vec![Prefix::v4(
                    ((i % 7) << 24 | i << 4).to_be_bytes(),
                    if i % 2 == 0 { 28 } else { 8 },
                )],
                dst: vec![Prefix::v4((0xc000_0000 | i << 3).to_be_bytes(), 30)],
                proto: Some(6),
                dst_port: vec![PortRange::single(i as u16 % 50)],
                ..RuleMatch::any()
            })
            .collect()
    }

    #[test]
    fn one_tree_is_kept_where_it_costs_less_and_moved_to_the_start() {
        let rules = two_groups(3000);
        let config = BuildConfig {
            bitset_max_rules: 0,
            ..BuildConfig::default()
        };
        let c = CompiledClassifier::build(&rules, &config).unwrap();
        assert_eq!(c.tree_count(), 1, "one tree for both groups");
        // Its nodes and leaves were moved down over the groups' trees: the
        // tables hold nothing else (the root follows the dummy node).
        assert_eq!(c.parts[0].roots[0].0 as usize, DUMMY_NODE.len());
        let linear = LinearClassifier::new(rules.clone());
        let keys = crate::corner_keys(&rules, 20_000);
        for vector in [true, false] {
            let c = CompiledClassifier::build(&rules, &BuildConfig { vector, ..config }).unwrap();
            let mut out = vec![0; keys.len()];
            c.classify_batch(&keys, &mut out);
            for (k, o) in keys.iter().zip(&out) {
                assert_eq!(*o, linear.classify(k), "{k:?}");
            }
        }
    }

    /// A set grown in random order (a few wide rules, most narrow ones in
    /// clusters at lengths from /20 to /32, most of them never matching)
    /// and another of hosts in a /14 to /24-/32 destinations: below
    /// `ipv4_rank_min_rules`, the build keeps whichever of its address and
    /// rank space versions costs less on the corner keys, and both answer
    /// as the reference.
    #[test]
    fn below_the_threshold_the_cheaper_of_address_and_rank_space_is_kept() {
        const BASES: [u32; 4] = [0x0a00_0000, 0x0a10_0000, 0xc0a8_0000, 0xac10_0000];
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u32| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % u64::from(n)) as u32
        };
        let rules: Vec<RuleMatch> = (0..3000)
            .map(|_| {
                let wide = next(9) == 0;
                let (sl, dl) = if wide {
                    (next(17) as u8, next(17) as u8)
                } else {
                    (20 + next(13) as u8, 16 + next(17) as u8)
                };
                let (sb, so, db, d_off) = (next(4), next(512), next(4), next(512));
                let lo = next(1024) as u16;
                RuleMatch {
                    src: vec![Prefix::v4(
                        BASES[sb as usize].wrapping_add(so << 4).to_be_bytes(),
                        sl,
                    )],
                    dst: vec![Prefix::v4(
                        BASES[db as usize].wrapping_add(d_off << 6).to_be_bytes(),
                        dl,
                    )],
                    proto: [None, Some(6), Some(17)][next(3) as usize],
                    dst_port: vec![PortRange {
                        lo,
                        hi: lo + next(64) as u16,
                    }],
                    ..RuleMatch::any()
                }
            })
            .collect();
        let hosts: Vec<RuleMatch> = (0..3000u32)
            .map(|i| RuleMatch {
                src: vec![Prefix::v4(
                    (0x0a00_0000 | i.wrapping_mul(0x9e37_79b9) >> 14).to_be_bytes(),
                    32,
                )],
                dst: vec![Prefix::v4(
                    (0xc0a8_0000 | i.wrapping_mul(0x85eb_ca6b) >> 16).to_be_bytes(),
                    24 + (i % 9) as u8,
                )],
                proto: Some(6),
                dst_port: vec![PortRange::single(80 + (i % 3) as u16)],
                ..RuleMatch::any()
            })
            .collect();
        let config = BuildConfig::default();
        for rules in [rules, hosts] {
            assert!(rules.len() < config.ipv4_rank_min_rules);
            let live = live_rules(&rules, &config, TABLE_LIMITS);
            let n = live.iter().filter(|&&l| l).count();
            assert!(n >= RANK_TRY_MIN_RULES, "{n} rules can match");
            let corners = crate::corner_keys(&rules, MERGE_KEYS);
            let [by_address, by_rank] = [false, true].map(|ranked| {
                CompiledClassifier::build_projected(&rules, &config, TABLE_LIMITS, n, ranked, |i| live[i])
                    .unwrap()
            });
            assert_eq!(by_address.ipv4_address_lookup(), [AddressLookup::Address; 2]);
            assert_ne!(by_rank.ipv4_address_lookup(), [AddressLookup::Address; 2]);
            let rank_costs_less = by_rank.corner_cost(&corners) < by_address.corner_cost(&corners);
            let built = CompiledClassifier::build(&rules, &config).unwrap();
            assert_eq!(
                built.ipv4_address_lookup(),
                if rank_costs_less { &by_rank } else { &by_address }.ipv4_address_lookup()
            );
            let linear = LinearClassifier::new(rules.clone());
            let keys = crate::corner_keys(&rules, 20_000);
            for c in [&by_address, &by_rank, &built] {
                let mut out = vec![0; keys.len()];
                c.classify_batch(&keys, &mut out);
                for (k, o) in keys.iter().zip(&out) {
                    assert_eq!(*o, linear.classify(k), "{k:?}");
                }
            }
        }
    }
}
