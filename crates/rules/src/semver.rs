//! A small semver requirement matcher for `requires` (Cargo's operators).
//!
//! A requirement is comparators separated by commas, all of which must
//! hold: `>=0.1, <0.3`, `^0.1`, `~1.2.3`, `=0.1.0`, `0.1` (caret), `0.1.*`, `*`.
//! Pre-release versions are not supported and are rejected.

/// A full version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Version(pub u64, pub u64, pub u64);

/// Parses `MAJOR.MINOR.PATCH`.
pub(crate) fn parse_version(text: &str) -> Option<Version> {
    let mut it = text.trim().split('.').map(|p| p.parse::<u64>().ok());
    let v = Version(it.next()??, it.next()??, it.next()??);
    it.next().is_none().then_some(v)
}

/// Whether `version` satisfies `req`; `Err` explains an unreadable requirement.
pub(crate) fn matches(req: &str, version: Version) -> Result<bool, String> {
    let req = req.trim();
    if req.is_empty() {
        return Err("empty requirement".into());
    }
    let mut ok = true;
    for comp in req.split(',') {
        let (lo, hi) = bounds(comp.trim())?;
        ok &= !matches!(lo, Some(lo) if version < lo) && !matches!(hi, Some(hi) if version >= hi);
    }
    Ok(ok)
}

/// The half-open interval `[lo, hi)` of one comparator.
fn bounds(comp: &str) -> Result<(Option<Version>, Option<Version>), String> {
    let (op, rest) = ["<=", ">=", "=", "<", ">", "^", "~"]
        .iter()
        .find_map(|op| comp.strip_prefix(op).map(|r| (*op, r.trim())))
        .unwrap_or(("^", comp));
    if rest.is_empty() {
        return Err(format!("\"{comp}\" has no version"));
    }
    if rest.contains(['-', '+']) {
        return Err(format!(
            "\"{comp}\": pre-release and build versions are not supported"
        ));
    }
    let mut parts = Vec::new();
    for p in rest.split('.') {
        match p {
            "*" | "x" | "X" => break,
            _ => parts.push(
                p.parse::<u64>()
                    .map_err(|_| format!("\"{comp}\": \"{p}\" is not a version number"))?,
            ),
        }
    }
    if parts.len() > 3 || rest.split('.').count() > 3 {
        return Err(format!("\"{comp}\" has more than three version parts"));
    }
    let wildcard = parts.len() < rest.split('.').count();
    if wildcard && op != "^" && op != "=" {
        return Err(format!("\"{comp}\": wildcards only work without an operator"));
    }
    let op = if wildcard { "=" } else { op };
    let major = parts.first().copied();
    let minor = parts.get(1).copied();
    let patch = parts.get(2).copied();
    let floor = Version(major.unwrap_or(0), minor.unwrap_or(0), patch.unwrap_or(0));
    let bump = |v: u64| v.saturating_add(1);
    // The version just past the partial one (1.2 -> 1.3.0, 1 -> 2.0.0).
    let next = match (major, minor, patch) {
        (None, _, _) => None,
        (Some(ma), None, _) => Some(Version(bump(ma), 0, 0)),
        (Some(ma), Some(mi), None) => Some(Version(ma, bump(mi), 0)),
        (Some(ma), Some(mi), Some(pa)) => Some(Version(ma, mi, bump(pa))),
    };
    Ok(match op {
        "=" => (major.map(|_| floor), next),
        ">=" => (Some(floor), None),
        ">" => (
            next,
            if major.is_none() {
                Some(Version(0, 0, 0))
            } else {
                None
            },
        ),
        "<" => (None, Some(floor)),
        "<=" => (None, next),
        "~" => {
            let hi = match (major, minor) {
                (Some(ma), None) => Version(bump(ma), 0, 0),
                (Some(ma), Some(mi)) => Version(ma, bump(mi), 0),
                _ => return Err(format!("\"{comp}\" has no version")),
            };
            (Some(floor), Some(hi))
        }
        _ => {
            // caret: the left-most non-zero part may not change.
            let hi = match (major, minor, patch) {
                (Some(ma), _, _) if ma > 0 => Version(bump(ma), 0, 0),
                (Some(0), None, _) => Version(1, 0, 0),
                (Some(0), Some(mi), _) if mi > 0 => Version(0, bump(mi), 0),
                (Some(0), Some(0), None) => Version(0, 1, 0),
                (Some(0), Some(0), Some(pa)) => Version(0, 0, bump(pa)),
                _ => return Err(format!("\"{comp}\" has no version")),
            };
            (Some(floor), Some(hi))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(req: &str, v: &str) -> bool {
        matches(req, parse_version(v).unwrap()).unwrap()
    }

    #[test]
    fn operators() {
        assert!(m(">=0.1", "0.1.0"));
        assert!(!m(">=0.2", "0.1.0"));
        assert!(m("^0.1", "0.1.9"));
        assert!(!m("^0.1", "0.2.0"));
        assert!(m("0.1", "0.1.3"));
        assert!(!m("^0.0.3", "0.0.4"));
        assert!(m("~1.2.3", "1.2.9"));
        assert!(!m("~1.2.3", "1.3.0"));
        assert!(m("=0.1.0", "0.1.0"));
        assert!(!m("=0.1.1", "0.1.0"));
        assert!(m(">=0.1, <0.3", "0.2.5"));
        assert!(!m(">=0.1, <0.3", "0.3.0"));
        assert!(m("0.1.*", "0.1.7"));
        assert!(m("*", "7.0.0"));
        assert!(m(">0.1", "0.2.0"));
        assert!(!m(">0.1", "0.1.5"));
        assert!(m("<=0.1", "0.1.5"));
        assert!(!m("<0.1", "0.1.0"));
        assert!(m("^1", "1.9.9"));
        assert!(!m("^1", "2.0.0"));
    }

    #[test]
    fn bad_requirements() {
        let v = Version(0, 1, 0);
        for bad in ["", ">=", "abc", ">=1.2.3.4", ">=1.0.0-beta", ">=1.*", "1.2,"] {
            assert!(matches(bad, v).is_err(), "{bad}");
        }
    }
}
