//! Which decisions of one generation are logged, and under which bucket.
//!
//! A [`Plan`] is built once per generation (on the first batch a worker
//! classifies with it) from the generation's rule set: for every ACL, which
//! rules (and whether the default) have `log = true`, each mapped to the
//! [`RuleLog`] of its identity. Identities are `(acl name, rule identity)`,
//! the same that carry the engine's counters across reloads, so a rule kept
//! by a reload keeps its rate-limit bucket and its suppression count.
//!
//! The plan also holds what a log record needs besides the frame: the
//! generation number, digest, and port names. A record keeps its plan alive,
//! so the writer names a frame by the generation that decided it, however
//! many reloads happened since.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use palisade_engine::policy::{AclId, RuleRef};
use palisade_engine::Generation;
use palisade_rules::Logging;

use crate::limit::{Rate, RateLimiter};

/// One logged rule identity: its names and its bucket; lives as long as the logger.
#[derive(Debug)]
pub struct RuleLog {
    /// The ACL's name.
    pub acl: String,
    /// The rule's identity: its `id`, `#N`, or `default`.
    pub rule: String,
    /// Index among every identity ever logged (the per-worker suppression counters' slot).
    pub index: u32,
    /// Its rate limiter, shared by every worker.
    pub limiter: RateLimiter,
}

/// Every logged rule identity, by name; identities are never forgotten (a
/// rule removed by one reload and restored by the next keeps its counts).
#[derive(Debug, Default)]
pub(crate) struct Registry {
    inner: Mutex<RegistryInner>,
}

#[derive(Debug, Default)]
struct RegistryInner {
    by_name: HashMap<(String, String), Arc<RuleLog>>,
    all: Vec<Arc<RuleLog>>,
}

impl Registry {
    fn get(&self, acl: &str, rule: &str) -> Arc<RuleLog> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let g = &mut *g;
        if let Some(r) = g.by_name.get(&(acl.to_owned(), rule.to_owned())) {
            return Arc::clone(r);
        }
        let r = Arc::new(RuleLog {
            acl: acl.to_owned(),
            rule: rule.to_owned(),
            index: g.all.len() as u32,
            limiter: RateLimiter::new(),
        });
        g.by_name
            .insert((acl.to_owned(), rule.to_owned()), Arc::clone(&r));
        g.all.push(Arc::clone(&r));
        r
    }

    /// Every identity so far, by index.
    pub(crate) fn all(&self) -> Vec<Arc<RuleLog>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).all.clone()
    }
}

/// Marks a rule that is not logged in [`Plan`]'s tables.
const NOT_LOGGED: u32 = u32::MAX;

/// One generation's logging plan (see the module docs).
#[derive(Debug)]
pub struct Plan {
    /// The generation number.
    pub generation: u64,
    /// Its digest, lowercase hex (empty with no rules).
    pub digest: String,
    /// `[logging]` of the rule set.
    pub logging: Logging,
    /// The same, as the buckets use it.
    pub rate: Rate,
    /// Port names by port id.
    pub ports: Vec<String>,
    /// Per ACL id: per rule index, then one for the default: position in `rules` or NOT_LOGGED.
    acls: Vec<Box<[u32]>>,
    /// The logged identities of this generation.
    rules: Vec<Arc<RuleLog>>,
}

impl Plan {
    /// Builds the plan of `gen`, taking logged identities from `registry`.
    pub(crate) fn build(gen: &Generation, registry: &Registry) -> Plan {
        let logging = gen.ruleset().map(|rs| rs.logging).unwrap_or_default();
        let mut plan = Plan {
            generation: gen.number(),
            digest: gen.digest().map(|d| d.to_string()).unwrap_or_default(),
            logging,
            rate: Rate::new(logging.rate, logging.burst),
            ports: Vec::new(),
            acls: Vec::new(),
            rules: Vec::new(),
        };
        let (Some(policy), Some(rs)) = (gen.policy(), gen.ruleset()) else {
            return plan;
        };
        plan.ports = (0..)
            .map_while(|id| policy.port_info(id).map(|p| p.name.clone()))
            .collect();
        // The policy compiles ACLs in the rule file's order: ACL id i is rs.acls[i].
        for (info, def) in policy.acls().iter().zip(&rs.acls) {
            let mut table = vec![NOT_LOGGED; info.rule_ids.len() + 1];
            let logged = def
                .rules
                .iter()
                .map(|r| r.log)
                .chain(std::iter::once(def.log_default));
            for ((slot, id), log) in table
                .iter_mut()
                .zip(
                    info.rule_ids
                        .iter()
                        .map(String::as_str)
                        .chain(std::iter::once("default")),
                )
                .zip(logged)
            {
                if log {
                    *slot = plan.rules.len() as u32;
                    plan.rules.push(registry.get(&info.name, id));
                }
            }
            plan.acls.push(table.into_boxed_slice());
        }
        plan
    }

    /// Whether any rule of this generation is logged (else a batch skips logging entirely).
    #[inline]
    pub fn logs_anything(&self) -> bool {
        !self.rules.is_empty()
    }

    /// The position (in this plan) of the logged rule that made a decision, if it is logged.
    #[inline]
    pub fn position(&self, acl: Option<AclId>, rule: RuleRef) -> Option<u32> {
        let table = self.acls.get(acl? as usize)?;
        let i = match rule {
            RuleRef::Rule(i) => i as usize,
            RuleRef::Default => table.len().checked_sub(1)?,
            RuleRef::Rescue(_) | RuleRef::None => return None,
        };
        table.get(i).copied().filter(|&p| p != NOT_LOGGED)
    }

    /// The logged rule at `position`.
    #[inline]
    pub fn rule(&self, position: u32) -> Option<&Arc<RuleLog>> {
        self.rules.get(position as usize)
    }

    /// The highest identity index this plan uses, plus one (per-worker counter arrays' length).
    pub(crate) fn index_len(&self) -> usize {
        self.rules.iter().map(|r| r.index as usize + 1).max().unwrap_or(0)
    }
}
