//! The reference linear first-match classifier: the correctness oracle.

use alloc::vec::Vec;

use palisade_packet::FlowKey;

use crate::{Classifier, RuleIndex, RuleMatch, NO_MATCH};

/// Scans the rules in order and returns the first that matches.
///
/// Slow by design (O(rules) per packet) and obviously correct: it calls
/// [`RuleMatch::matches`], which is the definition of the match semantics.
///
/// ```
/// use palisade_classify::{Classifier, LinearClassifier, RuleMatch, NO_MATCH};
/// use palisade_packet::FlowKey;
/// let empty = LinearClassifier::new(Vec::new());
/// assert_eq!(empty.classify(&FlowKey::new()), NO_MATCH);
/// ```
#[derive(Clone, Debug, Default)]
pub struct LinearClassifier {
    rules: Vec<RuleMatch>,
}

impl LinearClassifier {
    /// Builds the reference classifier from rules in priority order.
    ///
    /// ```
    /// let c = palisade_classify::LinearClassifier::new(vec![palisade_classify::RuleMatch::any()]);
    /// assert_eq!(c.rules().len(), 1);
    /// ```
    pub fn new(rules: Vec<RuleMatch>) -> Self {
        LinearClassifier { rules }
    }

    /// The rules, in priority order.
    ///
    /// ```
    /// assert!(palisade_classify::LinearClassifier::default().rules().is_empty());
    /// ```
    pub fn rules(&self) -> &[RuleMatch] {
        &self.rules
    }
}

impl Classifier for LinearClassifier {
    fn classify(&self, key: &FlowKey) -> RuleIndex {
        self.rules
            .iter()
            .position(|r| r.matches(key))
            .map_or(NO_MATCH, |i| i as RuleIndex)
    }

    fn rule_count(&self) -> usize {
        self.rules.len()
    }

    fn memory_bytes(&self) -> usize {
        self.rules.iter().map(RuleMatch::heap_bytes).sum::<usize>()
            + self.rules.capacity() * core::mem::size_of::<RuleMatch>()
    }
}
