//! The logging keys: `log` on a rule, `log_default` on an ACL, and `[logging]`.
//!
//! Kept apart from `parse.rs` so the rate-limit settings and their bounds
//! live in one place; the generic table and number checks are parse.rs's.

use toml::de::DeValue;

use crate::model::Logging;
use crate::parse::{fields, int_in, Cx, V};

/// The largest `rate` or `burst`: a million records a second per rule is
/// already far past what a log file can take; more is a typo.
pub(crate) const MAX_RECORDS: i128 = 1_000_000;

/// `[logging]`, or the defaults when the table is absent.
pub(crate) fn section(cx: &mut Cx, v: Option<&V>) -> Logging {
    let mut logging = Logging::default();
    let Some(v) = v else {
        return logging;
    };
    let Some(f) = fields(cx, v, "[logging]", &["rate", "burst", "description"]) else {
        return logging;
    };
    // Zero would mean "never log" for a rule that says `log = true`: refused, not guessed.
    if let Some(r) = f.get("rate") {
        if let Some(n) = int_in(
            cx,
            "[logging]",
            "rate (records a second per rule)",
            r,
            1,
            MAX_RECORDS,
        ) {
            logging.rate = n as u32;
        }
    }
    if let Some(b) = f.get("burst") {
        if let Some(n) = int_in(
            cx,
            "[logging]",
            "burst (records at once per rule)",
            b,
            1,
            MAX_RECORDS,
        ) {
            logging.burst = n as u32;
        }
    }
    logging
}

/// A `true`/`false` key such as `log` or `log_default` (absent: false).
pub(crate) fn flag(cx: &mut Cx, ctx: &str, key: &str, v: Option<&V>) -> bool {
    match v.map(|v| (v, v.get_ref())) {
        None => false,
        Some((_, DeValue::Boolean(b))) => *b,
        Some((v, other)) => {
            cx.error(
                v.span().start,
                format!("{ctx}: {key} must be true or false, found {}", other.type_str()),
            );
            false
        }
    }
}
