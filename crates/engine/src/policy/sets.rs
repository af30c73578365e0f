//! The policy's set tests: named sets and rules' long address lists, compiled
//! to membership structures and looked up for a whole batch before the ACL
//! stages (see `palisade_classify::set`).
//!
//! Named sets come from the rule set: its `set_tests` are bits `0..n` of a
//! key's `set_bits`. A rule's own `src` or `dst` list of more than
//! [`ANONYMOUS_MIN`] prefixes is compiled the same way, as an *anonymous*
//! set with a bit of its own (identical lists share one structure): the
//! compiled classifier then tests one bit instead of scanning the list for
//! every frame that reaches the rule. Anonymous sets take the bits the named
//! ones leave, longest lists first; a list that finds no bit left (more than
//! [`palisade_classify::MAX_SET_TESTS`] tests in all) stays a list in its
//! rule, which is still exact, only slower. The named tests never fall back:
//! past the limit the rule set is refused when it is parsed.

use std::collections::HashMap;
use std::sync::Arc;

use palisade_classify::{
    AddrList, CompiledSet, Membership, Prefix, RuleMatch, SetField, SetMatch, MAX_SET_TESTS,
};
use palisade_rules::{RuleSet, SetElements};

/// A rule's `src` or `dst` list longer than this becomes an anonymous set
/// (a scan of 16 prefixes costs about one set lookup; past it the scan grows
/// with the list and the set lookup does not).
pub const ANONYMOUS_MIN: usize = 16;

/// What one set test looks at, for explain and expect messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetTestInfo {
    /// The set's name; for an anonymous set, `acl "A" rule R` of the first rule with the list.
    pub set: String,
    /// The field tested.
    pub field: SetField,
    /// Whether it is a rule's own list rather than a named set.
    pub anonymous: bool,
    /// Elements of the set.
    pub elements: usize,
}

/// The compiled set tests of one policy.
#[derive(Clone, Debug, Default)]
pub(crate) struct PolicySets {
    pub membership: Membership,
    pub tests: Vec<SetTestInfo>,
    /// Compiled named sets, by index in `RuleSet::sets`.
    pub named: Vec<Arc<CompiledSet>>,
    /// For each test, the named set it uses (`None` for an anonymous one).
    pub test_set: Vec<Option<usize>>,
    /// Per ACL, per rule: the rule's set requirements as compiled (with anonymous ones).
    pub rule_sets: Vec<Box<[SetMatch]>>,
}

impl PolicySets {
    /// Compiles the named sets and the rules' long lists; returns the rules
    /// of every ACL as the classifiers must see them (long lists replaced by
    /// their set test).
    pub fn build(rs: &RuleSet) -> Result<(PolicySets, Vec<Vec<RuleMatch>>), String> {
        let named: Vec<Arc<CompiledSet>> = rs.sets.iter().map(|s| Arc::new(compile(&s.elements))).collect();
        let mut tests: Vec<(Arc<CompiledSet>, SetField)> = Vec::new();
        let mut info = Vec::new();
        let mut test_set = Vec::new();
        for t in &rs.set_tests {
            let set = named
                .get(t.set)
                .ok_or_else(|| format!("set test names set #{} of {}", t.set + 1, rs.sets.len()))?;
            tests.push((Arc::clone(set), t.field));
            info.push(SetTestInfo {
                set: rs.sets[t.set].name.clone(),
                field: t.field,
                anonymous: false,
                elements: set.elements(),
            });
            test_set.push(Some(t.set));
        }

        let mut rules: Vec<Vec<RuleMatch>> = rs
            .acls
            .iter()
            .map(|a| a.rules.iter().map(|r| r.matcher.clone()).collect())
            .collect();
        // Long lists, longest first: (acl, rule, field, length).
        let mut long: Vec<(usize, usize, SetField, usize)> = Vec::new();
        for (ai, a) in rs.acls.iter().enumerate() {
            for (ri, r) in a.rules.iter().enumerate() {
                for (field, list) in [(SetField::Src, &r.matcher.src), (SetField::Dst, &r.matcher.dst)] {
                    if list.len() > ANONYMOUS_MIN {
                        long.push((ai, ri, field, list.len()));
                    }
                }
            }
        }
        long.sort_by_key(|&(ai, ri, field, len)| (std::cmp::Reverse(len), ai, ri, field));
        // Identical lists share a structure; the same list in the same field shares a test.
        let mut by_list: HashMap<Vec<Prefix>, Arc<CompiledSet>> = HashMap::new();
        let mut test_of: HashMap<(Vec<Prefix>, SetField), usize> = HashMap::new();
        for (ai, ri, field, _) in long {
            let Some(m) = rules.get_mut(ai).and_then(|r| r.get_mut(ri)) else {
                continue;
            };
            let list = match field {
                SetField::Src => &m.src,
                _ => &m.dst,
            };
            let mut key: Vec<Prefix> = list.clone();
            key.sort_by_key(|p| (p.family == palisade_classify::IpFamily::V6, p.addr, p.len));
            key.dedup();
            let bit = match test_of.get(&(key.clone(), field)) {
                Some(&b) => b,
                None => {
                    if tests.len() >= MAX_SET_TESTS {
                        continue; // no bit left: the list stays a list (exact, slower)
                    }
                    let set = by_list.entry(key.clone()).or_insert_with(|| {
                        Arc::new(CompiledSet::addresses(&AddrList::from_prefixes(
                            key.iter().copied(),
                        )))
                    });
                    tests.push((Arc::clone(set), field));
                    let rule = rs.acls[ai].rule_identity(ri);
                    info.push(SetTestInfo {
                        set: format!("acl \"{}\" rule {rule}", rs.acls[ai].name),
                        field,
                        anonymous: true,
                        elements: set.elements(),
                    });
                    test_set.push(None);
                    test_of.insert((key, field), tests.len() - 1);
                    tests.len() - 1
                }
            };
            match field {
                SetField::Src => m.src.clear(),
                _ => m.dst.clear(),
            }
            m.sets.member |= 1 << bit;
        }
        let membership = Membership::new(tests).map_err(|e| e.to_string())?;
        let rule_sets = rules
            .iter()
            .map(|acl| acl.iter().map(|m| m.sets).collect())
            .collect();
        Ok((
            PolicySets {
                membership,
                tests: info,
                named,
                test_set,
                rule_sets,
            },
            rules,
        ))
    }

    /// The same tests with named set `index` replaced by `set` (a set change:
    /// every other structure is shared).
    pub fn with_named(&self, index: usize, set: Arc<CompiledSet>) -> Result<PolicySets, String> {
        let mut out = self.clone();
        if let Some(slot) = out.named.get_mut(index) {
            *slot = Arc::clone(&set);
        }
        let tests = self
            .membership
            .tests()
            .iter()
            .zip(&self.test_set)
            .enumerate()
            .map(|(bit, ((old, field), named))| {
                let s = if *named == Some(index) {
                    Arc::clone(&set)
                } else {
                    Arc::clone(old)
                };
                if let Some(i) = out.tests.get_mut(bit).filter(|_| *named == Some(index)) {
                    i.elements = set.elements();
                }
                (s, *field)
            })
            .collect();
        out.membership = Membership::new(tests).map_err(|e| e.to_string())?;
        Ok(out)
    }

    /// Bytes of every distinct compiled set.
    pub fn memory_bytes(&self) -> usize {
        self.membership.memory_bytes()
            + self
                .named
                .iter()
                .filter(|n| !self.membership.tests().iter().any(|(t, _)| Arc::ptr_eq(t, n)))
                .map(|n| n.memory_bytes())
                .sum::<usize>()
    }
}

/// Compiles a named set.
pub(crate) fn compile(elements: &SetElements) -> CompiledSet {
    match elements {
        SetElements::Addresses(list) => CompiledSet::addresses(list),
        SetElements::Ports(list) => CompiledSet::ports(list),
    }
}
