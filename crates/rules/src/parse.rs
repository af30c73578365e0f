//! TOML text -> [`RuleSet`], with every error located at `file:line:col`.
//!
//! The TOML is read with `toml`'s spanned document tree ([`DeTable`]), so
//! every key and value keeps its byte offset. Each table is checked against
//! its list of allowed keys (unknown keys are errors), each value is parsed
//! on its own (an error never hides the next one), and names are resolved at
//! the end. Nothing here panics on any input.

use std::collections::HashMap;

use palisade_classify::{FragmentMatch, IpFamily, PortRange, Prefix, RuleMatch, TcpFlagsMatch};
use palisade_packet::FragmentState;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::flows::{self, FlowsDef};
use crate::model::*;
use crate::packet::{parse_addr, parse_fragment_state, parse_prefix, PacketBuilder};
use crate::validate;
use crate::{names, semver, Diagnostic, Severity, ENGINE_VERSION};

pub(crate) type V<'i> = Spanned<DeValue<'i>>;

/// Collects diagnostics and turns byte offsets into line/column.
pub(crate) struct Cx<'s> {
    file: &'s str,
    src: &'s str,
    line_starts: Vec<usize>,
    pub diags: Vec<Diagnostic>,
    seen: std::collections::HashSet<(u32, u32, String)>,
    /// The `[[set]]`s and the set tests of the rules read so far.
    pub sets: crate::sets::Scope<'s>,
}

impl<'s> Cx<'s> {
    pub fn new(file: &'s str, src: &'s str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(src.match_indices('\n').map(|(i, _)| i + 1));
        Cx {
            file,
            src,
            line_starts,
            diags: Vec::new(),
            seen: std::collections::HashSet::new(),
            sets: crate::sets::Scope::default(),
        }
    }

    /// The rule file's name, as given.
    pub fn file(&self) -> &'s str {
        self.file
    }

    /// Line and column (1-based, column in characters) of a byte offset.
    pub fn span(&self, off: usize) -> Span {
        let off = off.min(self.src.len());
        let line = self.line_starts.partition_point(|&s| s <= off).max(1);
        let start = self.line_starts[line - 1];
        let col = self
            .src
            .get(start..off)
            .map_or(off - start, |s| s.chars().count());
        Span {
            line: line as u32,
            col: col as u32 + 1,
        }
    }

    pub fn error(&mut self, off: usize, message: impl Into<String>) {
        self.push(off, Severity::Error, message.into());
    }

    pub fn warn(&mut self, off: usize, message: impl Into<String>) {
        self.push(off, Severity::Warning, message.into());
    }

    fn push(&mut self, off: usize, severity: Severity, message: String) {
        let d = Diagnostic {
            file: self.file.to_owned(),
            span: self.span(off),
            severity,
            message,
        };
        if self.seen.insert((d.span.line, d.span.col, d.message.clone())) {
            self.diags.push(d);
        }
    }

    /// `line:col` of an offset, for "first defined at" notes.
    pub fn at(&self, off: usize) -> String {
        let s = self.span(off);
        format!("{}:{}", s.line, s.col)
    }
}

/// A table whose keys were checked against an allow-list.
pub(crate) struct Fields<'a, 'i> {
    pub(crate) t: &'a DeTable<'i>,
    pub(crate) at: usize,
}

impl<'a, 'i> Fields<'a, 'i> {
    pub(crate) fn get(&self, key: &str) -> Option<&'a V<'i>> {
        self.t.get(key)
    }
}

/// Closest allowed key to a misspelt one (edit distance <= 2).
pub(crate) fn suggest<'k>(key: &str, allowed: &[&'k str]) -> Option<&'k str> {
    fn dist(a: &str, b: &str) -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut prev: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut cur = vec![i + 1];
            for (j, cb) in b.iter().enumerate() {
                let sub = prev[j] + usize::from(ca != *cb);
                cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
            }
            prev = cur;
        }
        prev[b.len()]
    }
    allowed
        .iter()
        .map(|a| (dist(key, a), *a))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, a)| a)
}

pub(crate) fn fields<'a, 'i>(
    cx: &mut Cx,
    v: &'a V<'i>,
    what: &str,
    allowed: &[&str],
) -> Option<Fields<'a, 'i>> {
    let DeValue::Table(t) = v.get_ref() else {
        cx.error(
            v.span().start,
            format!("{what} must be a table, found {}", v.get_ref().type_str()),
        );
        return None;
    };
    for (k, _) in t.iter() {
        let name: &str = k.get_ref();
        if !allowed.contains(&name) {
            let hint = suggest(name, allowed).map_or(String::new(), |s| format!(" (did you mean \"{s}\"?)"));
            cx.error(k.span().start, format!("unknown key \"{name}\" in {what}{hint}"));
        }
    }
    Some(Fields {
        t,
        at: v.span().start,
    })
}

/// The elements of an array of tables (`[[name]]`).
pub(crate) fn table_array<'a, 'i>(cx: &mut Cx, root: &'a DeTable<'i>, name: &str) -> Vec<&'a V<'i>> {
    match root.get(name) {
        None => Vec::new(),
        Some(v) => match v.get_ref() {
            DeValue::Array(a) => a.iter().collect(),
            other => {
                cx.error(
                    v.span().start,
                    format!(
                        "`{name}` must be an array of tables ([[{name}]]), found {}",
                        other.type_str()
                    ),
                );
                Vec::new()
            }
        },
    }
}

pub(crate) fn string<'a>(cx: &mut Cx, ctx: &str, key: &str, v: &'a V) -> Option<&'a str> {
    match v.get_ref() {
        DeValue::String(s) => Some(s.as_ref()),
        other => {
            cx.error(
                v.span().start,
                format!("{ctx}: {key} must be a string, found {}", other.type_str()),
            );
            None
        }
    }
}

pub(crate) fn name(cx: &mut Cx, ctx: &str, key: &str, v: &V) -> Option<String> {
    let s = string(cx, ctx, key, v)?;
    if s.trim().is_empty() {
        cx.error(v.span().start, format!("{ctx}: {key} must not be empty"));
        return None;
    }
    Some(s.to_owned())
}

fn integer(v: &V) -> Result<i128, String> {
    match v.get_ref() {
        DeValue::Integer(i) => {
            i128::from_str_radix(i.as_str(), i.radix()).map_err(|_| format!("{i} is not a usable integer"))
        }
        other => Err(format!("expected an integer, found {}", other.type_str())),
    }
}

pub(crate) fn int_in(cx: &mut Cx, ctx: &str, key: &str, v: &V, lo: i128, hi: i128) -> Option<i128> {
    match integer(v) {
        Ok(n) if (lo..=hi).contains(&n) => Some(n),
        Ok(n) => {
            cx.error(v.span().start, format!("{ctx}: {key} {n} is outside {lo}-{hi}"));
            None
        }
        Err(e) => {
            cx.error(v.span().start, format!("{ctx}: {key}: {e}"));
            None
        }
    }
}

fn action(cx: &mut Cx, ctx: &str, key: &str, v: &V) -> Option<Action> {
    match string(cx, ctx, key, v)? {
        "permit" => Some(Action::Permit),
        "deny" => Some(Action::Deny),
        other => {
            cx.error(
                v.span().start,
                format!("{ctx}: {key} \"{other}\" is not \"permit\" or \"deny\""),
            );
            None
        }
    }
}

fn required<'a, 'i>(cx: &mut Cx, f: &Fields<'a, 'i>, ctx: &str, key: &str) -> Option<&'a V<'i>> {
    let v = f.get(key);
    if v.is_none() {
        cx.error(f.at, format!("{ctx}: missing required key `{key}`"));
    }
    v
}

/// A scalar or a list of scalars; `"any"` (alone) gives `Some(vec![])`.
pub(crate) fn list<'a, 'i>(cx: &mut Cx, ctx: &str, key: &str, v: &'a V<'i>) -> Option<Vec<&'a V<'i>>> {
    match v.get_ref() {
        DeValue::Array(a) => {
            if a.is_empty() {
                cx.error(
                    v.span().start,
                    format!("{ctx}: {key} is an empty list, which matches nothing (write \"any\" or drop the key)"),
                );
                return None;
            }
            let mut ok = true;
            for e in a.iter() {
                match e.get_ref() {
                    DeValue::String(s) if s.eq_ignore_ascii_case("any") => {
                        cx.error(
                            e.span().start,
                            format!("{ctx}: {key}: \"any\" cannot be part of a list"),
                        );
                        ok = false;
                    }
                    DeValue::Array(_) | DeValue::Table(_) => {
                        cx.error(e.span().start, format!("{ctx}: {key}: lists cannot nest"));
                        ok = false;
                    }
                    _ => {}
                }
            }
            ok.then(|| a.iter().collect())
        }
        DeValue::String(s) if s.eq_ignore_ascii_case("any") => Some(Vec::new()),
        _ => Some(vec![v]),
    }
}

fn prefixes(cx: &mut Cx, ctx: &str, key: &str, v: &V) -> Option<Vec<Prefix>> {
    let items = list(cx, ctx, key, v)?;
    let mut out = Vec::new();
    let mut ok = true;
    for e in items {
        match string(cx, ctx, key, e).map(parse_prefix) {
            Some(Ok(p)) => out.push(p),
            Some(Err(msg)) => {
                cx.error(e.span().start, format!("{ctx}: {key}: {msg}"));
                ok = false;
            }
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// Parses `lo-hi` or a single number with bounds.
pub(crate) fn range_text(text: &str, max: u32, what: &str) -> Result<(u32, u32), String> {
    let num = |t: &str| {
        t.trim()
            .parse::<u32>()
            .ok()
            .filter(|&n| n <= max)
            .ok_or_else(|| format!("{what} \"{}\" is not a number 0-{max}", t.trim()))
    };
    match text.split_once('-') {
        Some((a, b)) => {
            let (lo, hi) = (num(a)?, num(b)?);
            if lo > hi {
                return Err(format!("{what} range {lo}-{hi} is reversed"));
            }
            Ok((lo, hi))
        }
        None => num(text).map(|n| (n, n)),
    }
}

fn ranges(cx: &mut Cx, ctx: &str, key: &str, v: &V, lo_min: u32, max: u32) -> Option<Vec<(u32, u32)>> {
    let items = list(cx, ctx, key, v)?;
    let mut out = Vec::new();
    let mut ok = true;
    for e in items {
        let r = match e.get_ref() {
            DeValue::Integer(_) => match integer(e) {
                Ok(n) if n >= lo_min as i128 && n <= max as i128 => Ok((n as u32, n as u32)),
                Ok(n) => Err(format!("{key} {n} is outside {lo_min}-{max}")),
                Err(err) => Err(err),
            },
            DeValue::String(s) => range_text(s, max, key).and_then(|(lo, hi)| {
                if lo < lo_min {
                    Err(format!("{key} {lo} is outside {lo_min}-{max}"))
                } else {
                    Ok((lo, hi))
                }
            }),
            other => Err(format!(
                "{key} must be a number, \"lo-hi\" or a list of them, found {}",
                other.type_str()
            )),
        };
        match r {
            Ok(r) => out.push(r),
            Err(msg) => {
                cx.error(e.span().start, format!("{ctx}: {msg}"));
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

fn proto(cx: &mut Cx, ctx: &str, v: &V) -> Option<Option<u8>> {
    match v.get_ref() {
        DeValue::String(s) if s.eq_ignore_ascii_case("any") => Some(None),
        DeValue::String(s) => match names::protocol(s).or_else(|| s.parse::<u8>().ok()) {
            Some(p) => Some(Some(p)),
            None => {
                cx.error(
                    v.span().start,
                    format!("{ctx}: unknown protocol \"{s}\" (a name like tcp, udp, icmp, icmpv6, gre, esp, a number 0-255, or \"any\")"),
                );
                None
            }
        },
        _ => int_in(cx, ctx, "proto", v, 0, 255).map(|n| Some(n as u8)),
    }
}

fn tcp_flags(cx: &mut Cx, ctx: &str, v: &V) -> Option<TcpFlagsMatch> {
    match names::tcp_flags(string(cx, ctx, "tcp_flags", v)?) {
        Ok((value, mask)) => Some(TcpFlagsMatch { value, mask }),
        Err(e) => {
            cx.error(v.span().start, format!("{ctx}: {e}"));
            None
        }
    }
}

fn dscp_list(cx: &mut Cx, ctx: &str, v: &V) -> Option<Vec<u8>> {
    let items = list(cx, ctx, "dscp", v)?;
    let mut out = Vec::new();
    let mut ok = true;
    for e in items {
        let d = match e.get_ref() {
            DeValue::String(s) => names::dscp(s).or_else(|| {
                cx.error(
                    e.span().start,
                    format!("{ctx}: dscp \"{s}\" is not a number 0-63 or a name (ef, afXY, csN, be)"),
                );
                None
            }),
            _ => int_in(cx, ctx, "dscp", e, 0, 63).map(|n| n as u8),
        };
        match d {
            Some(d) => out.push(d),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn ethertype(cx: &mut Cx, ctx: &str, v: &V) -> Option<u16> {
    match v.get_ref() {
        DeValue::String(s) => names::ethertype(s).or_else(|| {
            cx.error(
                v.span().start,
                format!("{ctx}: unknown ethertype \"{s}\" (ipv4, ipv6, arp, lldp, mpls, pppoe, or a number)"),
            );
            None
        }),
        _ => int_in(cx, ctx, "ethertype", v, 0, 0xffff).map(|n| n as u16),
    }
}

/// Parses the match keys of a rule; `None` if any of them is wrong or the rule can never match.
fn rule_match(cx: &mut Cx, ctx: &str, f: &Fields) -> Option<RuleMatch> {
    let before = cx.diags.len();
    let mut m = RuleMatch::any();
    let off = |k: &str| f.get(k).map_or(f.at, |v| v.span().start);
    if let Some(v) = f.get("src") {
        if !crate::sets::reference(cx, ctx, "src", v, &mut m) {
            m.src = prefixes(cx, ctx, "src", v).unwrap_or_default();
        }
    }
    if let Some(v) = f.get("dst") {
        if !crate::sets::reference(cx, ctx, "dst", v, &mut m) {
            m.dst = prefixes(cx, ctx, "dst", v).unwrap_or_default();
        }
    }
    if let Some(v) = f.get("family") {
        m.family = match string(cx, ctx, "family", v) {
            Some("ipv4") => Some(IpFamily::V4),
            Some("ipv6") => Some(IpFamily::V6),
            Some("any") => None,
            Some(other) => {
                cx.error(
                    v.span().start,
                    format!("{ctx}: family \"{other}\" is not \"ipv4\", \"ipv6\" or \"any\""),
                );
                None
            }
            None => None,
        };
    }
    if let Some(v) = f.get("proto") {
        match v.get_ref() {
            // A list: any of these protocols (one value keeps the scalar form).
            DeValue::Array(_) => {
                let items = list(cx, ctx, "proto", v).unwrap_or_default();
                let protos: Option<Vec<u8>> = items.iter().map(|e| proto(cx, ctx, e).flatten()).collect();
                (m.proto, m.protos) = one_or_list(protos.unwrap_or_default());
            }
            _ => m.proto = proto(cx, ctx, v).flatten(),
        }
    }
    let port_sets: Vec<&str> = ["src_port", "dst_port"]
        .into_iter()
        .filter(|k| {
            f.get(k)
                .is_some_and(|v| crate::sets::reference(cx, ctx, k, v, &mut m))
        })
        .collect();
    for (key, slot) in [("src_port", &mut m.src_port), ("dst_port", &mut m.dst_port)] {
        if let Some(v) = f.get(key).filter(|_| !port_sets.contains(&key)) {
            *slot = ranges(cx, ctx, key, v, 0, 65535)
                .unwrap_or_default()
                .into_iter()
                .map(|(lo, hi)| PortRange {
                    lo: lo as u16,
                    hi: hi as u16,
                })
                .collect();
        }
    }
    for (key, one, many) in [
        ("icmp_type", &mut m.icmp_type, &mut m.icmp_types),
        ("icmp_code", &mut m.icmp_code, &mut m.icmp_codes),
    ] {
        if let Some(v) = f.get(key) {
            match v.get_ref() {
                DeValue::Array(_) => {
                    let items = list(cx, ctx, key, v).unwrap_or_default();
                    let values: Option<Vec<u8>> = items
                        .iter()
                        .map(|e| int_in(cx, ctx, key, e, 0, 255).map(|n| n as u8))
                        .collect();
                    (*one, *many) = one_or_list(values.unwrap_or_default());
                }
                _ => *one = int_in(cx, ctx, key, v, 0, 255).map(|n| n as u8),
            }
        }
    }
    if let Some(v) = f.get("tcp_flags") {
        m.tcp_flags = tcp_flags(cx, ctx, v);
    }
    if let Some(v) = f.get("vlan") {
        let mut vlans: Vec<u16> = Vec::new();
        for (lo, hi) in ranges(cx, ctx, "vlan", v, 1, 4094).unwrap_or_default() {
            vlans.extend((lo..=hi).map(|x| x as u16));
        }
        vlans.sort_unstable();
        vlans.dedup();
        m.vlan = vlans;
    }
    if let Some(v) = f.get("fragment") {
        m.fragment = match string(cx, ctx, "fragment", v) {
            Some("any") => Some(FragmentMatch::Any),
            Some(s) => match parse_fragment_state(s) {
                Ok(FragmentState::None) => Some(FragmentMatch::None),
                Ok(FragmentState::First) => Some(FragmentMatch::First),
                Ok(FragmentState::NonFirst) => Some(FragmentMatch::NonFirst),
                Err(e) => {
                    cx.error(v.span().start, format!("{ctx}: {e} (or \"any\")"));
                    None
                }
            },
            None => None,
        };
    }
    if let Some(v) = f.get("dscp") {
        let mut d = dscp_list(cx, ctx, v).unwrap_or_default();
        d.sort_unstable();
        d.dedup();
        m.dscp = d;
    }
    if let Some(v) = f.get("ethertype") {
        m.ethertype = ethertype(cx, ctx, v);
    }
    if let Some(v) = f.get("state") {
        m.state = flows::states(cx, ctx, v).flatten();
    }
    if cx.diags.len() > before {
        return None;
    }
    if let Some((key, msg)) = validate::never_matches(&m) {
        cx.error(off(key), format!("{ctx}: {msg}: the rule can never match"));
        return None;
    }
    if let Some((key, msg)) = validate::dead_list_members(&m) {
        cx.warn(off(key), format!("{ctx}: {msg}"));
    }
    if m.proto == Some(1) && !families(&m).contains(&IpFamily::V4) {
        cx.warn(
            off("proto"),
            format!("{ctx}: proto icmp (1) with IPv6 addresses: ICMPv6 is \"icmpv6\" (58)"),
        );
    }
    Some(m)
}

/// A list of values as the matcher keeps it: sorted and deduplicated; a
/// single value as the scalar (`(Some(v), [])`), several as the list (`(None, list)`).
fn one_or_list(mut values: Vec<u8>) -> (Option<u8>, Vec<u8>) {
    values.sort_unstable();
    values.dedup();
    match values.as_slice() {
        [] => (None, Vec::new()),
        [one] => (Some(*one), Vec::new()),
        _ => (None, values),
    }
}

/// The families a rule can match, judged from `family`, `src` and `dst`.
pub(crate) fn families(m: &RuleMatch) -> Vec<IpFamily> {
    [IpFamily::V4, IpFamily::V6]
        .into_iter()
        .filter(|&f| {
            m.family.is_none_or(|mf| mf == f)
                && (m.src.is_empty() || m.src.iter().any(|p| p.family == f))
                && (m.dst.is_empty() || m.dst.iter().any(|p| p.family == f))
        })
        .collect()
}

const RULE_KEYS: &[&str] = &[
    "id",
    "action",
    "description",
    "src",
    "dst",
    "proto",
    "src_port",
    "dst_port",
    "icmp_type",
    "icmp_code",
    "tcp_flags",
    "vlan",
    "fragment",
    "dscp",
    "ethertype",
    "family",
    "log",
    "state",
    "keep_state",
];

const RESCUE_KEYS: &[&str] = &[
    "id",
    "description",
    "src",
    "dst",
    "proto",
    "src_port",
    "dst_port",
    "icmp_type",
    "icmp_code",
    "tcp_flags",
    "vlan",
    "fragment",
    "dscp",
    "ethertype",
    "family",
    "state",
];

const PACKET_KEYS: &[&str] = &[
    "proto",
    "src",
    "dst",
    "src_port",
    "dst_port",
    "icmp_type",
    "icmp_code",
    "tcp_flags",
    "vlan",
    "fragment",
    "dscp",
    "ethertype",
    "malformed",
    "state",
];

/// Byte offsets kept next to the model for name resolution.
#[derive(Default)]
pub(crate) struct Locs {
    pub port_name: Vec<usize>,
    pub port_vlan: Vec<usize>,
    pub iface_name: Vec<usize>,
    pub iface_target: Vec<usize>,
    pub acl_name: Vec<usize>,
    /// Per ACL, per rule: offset of the rule table and of its id (if any).
    pub rule: Vec<Vec<(usize, Option<usize>)>>,
    pub bind_acl: Vec<usize>,
    pub bind_target: Vec<usize>,
    pub rescue_id: Vec<Option<usize>>,
    pub expect_port: Vec<usize>,
    pub expect_route: Vec<(usize, usize)>,
    /// The set files read (handed to `Loaded::files`).
    pub set_files: Vec<crate::CompanionFile>,
}

/// Parses the whole document into a model; errors go to `cx`.
pub(crate) fn document(cx: &mut Cx, root: &Spanned<DeTable>) -> (RuleSet, Locs) {
    let mut locs = Locs::default();
    let top = Spanned::new(root.span(), DeValue::Table(root.get_ref().clone()));
    let allowed = [
        "version",
        "requires",
        "defaults",
        "port",
        "interface",
        "acl",
        "bind",
        "rescue",
        "expect",
        "set",
        "flows",
        "description",
        "logging",
    ];
    let Some(f) = fields(cx, &top, "the rule file", &allowed) else {
        return (empty_ruleset(), locs);
    };
    let root = f.t;

    let mut version = 1;
    match root.get("version") {
        None => cx.error(0, "missing `version = 1` (the rule-language version)"),
        Some(v) => match integer(v) {
            Ok(1) => {}
            Ok(n) => {
                cx.error(
                    v.span().start,
                    format!("unknown rule-language version {n} (this engine reads version 1)"),
                );
                version = u32::try_from(n).unwrap_or(0);
            }
            Err(e) => cx.error(v.span().start, format!("version: {e}")),
        },
    }

    let mut requires = None;
    if let Some(v) = root.get("requires") {
        if let Some(r) = string(cx, "requires", "requires", v) {
            let engine = semver::parse_version(ENGINE_VERSION).unwrap_or(semver::Version(0, 0, 0));
            match semver::matches(r, engine) {
                Ok(true) => {}
                Ok(false) => cx.error(
                    v.span().start,
                    format!("requires \"{r}\" is not met by this engine (version {ENGINE_VERSION})"),
                ),
                Err(e) => cx.error(
                    v.span().start,
                    format!("requires \"{r}\" is not a semver requirement: {e}"),
                ),
            }
            requires = Some(r.to_owned());
        }
    }

    let mut defaults = Defaults::default();
    if let Some(v) = root.get("defaults") {
        if let Some(d) = fields(cx, v, "[defaults]", &["malformed"]) {
            if let Some(m) = d.get("malformed") {
                if let Some(a) = action(cx, "[defaults]", "malformed", m) {
                    defaults.malformed = a;
                }
            }
        }
    }

    let logging = crate::logging::section(cx, root.get("logging"));

    let mut ports = Vec::new();
    for (i, v) in table_array(cx, root, "port").into_iter().enumerate() {
        let ctx0 = format!("port {}", i + 1);
        let Some(f) = fields(
            cx,
            v,
            "[[port]]",
            &["name", "vlan", "trunk", "device", "description"],
        ) else {
            continue;
        };
        let at = f.at;
        let nm = required(cx, &f, &ctx0, "name").and_then(|n| name(cx, &ctx0, "name", n));
        let ctx = nm.as_ref().map_or(ctx0, |n| format!("port \"{n}\""));
        let vlan = f
            .get("vlan")
            .and_then(|v| int_in(cx, &ctx, "vlan", v, 1, 4094).map(|n| n as u16));
        let mut trunk = Vec::new();
        if let Some(v) = f.get("trunk") {
            for (lo, hi) in ranges(cx, &ctx, "trunk", v, 1, 4094).unwrap_or_default() {
                trunk.extend((lo..=hi).map(|x| x as u16));
            }
            trunk.sort_unstable();
            trunk.dedup();
        }
        let device = f.get("device").and_then(|d| name(cx, &ctx, "device", d));
        locs.port_name.push(f.get("name").map_or(at, |v| v.span().start));
        locs.port_vlan.push(f.get("vlan").map_or(at, |v| v.span().start));
        ports.push(PortDef {
            name: nm.unwrap_or_default(),
            vlan,
            trunk,
            device,
            span: cx.span(at),
        });
    }

    let mut interfaces = Vec::new();
    for (i, v) in table_array(cx, root, "interface").into_iter().enumerate() {
        let ctx0 = format!("interface {}", i + 1);
        let Some(f) = fields(cx, v, "[[interface]]", &["name", "vlan", "port", "description"]) else {
            continue;
        };
        let at = f.at;
        let nm = required(cx, &f, &ctx0, "name").and_then(|n| name(cx, &ctx0, "name", n));
        let ctx = nm.as_ref().map_or(ctx0, |n| format!("interface \"{n}\""));
        let target = match (f.get("vlan"), f.get("port")) {
            (Some(v), None) => {
                int_in(cx, &ctx, "vlan", v, 1, 4094).map(|n| (InterfaceTarget::Vlan(n as u16), v))
            }
            (None, Some(p)) => name(cx, &ctx, "port", p).map(|n| (InterfaceTarget::Port(n), p)),
            (Some(_), Some(p)) => {
                cx.error(
                    p.span().start,
                    format!("{ctx}: give exactly one of `vlan` (an SVI) or `port` (a routed port), not both"),
                );
                None
            }
            (None, None) => {
                cx.error(
                    at,
                    format!("{ctx}: missing `vlan` (an SVI) or `port` (a routed port)"),
                );
                None
            }
        };
        locs.iface_name.push(f.get("name").map_or(at, |v| v.span().start));
        locs.iface_target
            .push(target.as_ref().map_or(at, |(_, v)| v.span().start));
        interfaces.push(InterfaceDef {
            name: nm.unwrap_or_default(),
            target: target.map_or(InterfaceTarget::Vlan(0), |(t, _)| t),
            span: cx.span(at),
        });
    }

    crate::sets::parse_sets(cx, root);

    let mut acls = Vec::new();
    for (i, v) in table_array(cx, root, "acl").into_iter().enumerate() {
        let ctx0 = format!("acl {}", i + 1);
        let Some(f) = fields(
            cx,
            v,
            "[[acl]]",
            &["name", "default", "rule", "description", "log_default"],
        ) else {
            continue;
        };
        let at = f.at;
        let nm = required(cx, &f, &ctx0, "name").and_then(|n| name(cx, &ctx0, "name", n));
        let ctx = nm.as_ref().map_or(ctx0, |n| format!("acl \"{n}\""));
        let default = f
            .get("default")
            .and_then(|d| action(cx, &ctx, "default", d))
            .unwrap_or(Action::Deny);
        let log_default = crate::logging::flag(cx, &ctx, "log_default", f.get("log_default"));
        let mut rules = Vec::new();
        let mut rule_locs = Vec::new();
        let rule_values = match f.get("rule") {
            None => Vec::new(),
            Some(r) => match r.get_ref() {
                DeValue::Array(a) => a.iter().collect(),
                other => {
                    cx.error(
                        r.span().start,
                        format!(
                            "{ctx}: `rule` must be an array of tables ([[acl.rule]]), found {}",
                            other.type_str()
                        ),
                    );
                    Vec::new()
                }
            },
        };
        for (n, rv) in rule_values.into_iter().enumerate() {
            let rctx0 = format!("{ctx} rule {}", n + 1);
            let Some(rf) = fields(cx, rv, "[[acl.rule]]", RULE_KEYS) else {
                continue;
            };
            let id = rf.get("id").and_then(|v| name(cx, &rctx0, "id", v));
            let rctx = match &id {
                Some(id) => format!("{rctx0} (\"{id}\")"),
                None => rctx0,
            };
            let act = required(cx, &rf, &rctx, "action").and_then(|a| action(cx, &rctx, "action", a));
            let m = rule_match(cx, &rctx, &rf);
            let log = crate::logging::flag(cx, &rctx, "log", rf.get("log"));
            let keep_state = flows::keep_state(cx, &rctx, &rf, act, m.as_ref().and_then(|m| m.state));
            rule_locs.push((rf.at, rf.get("id").map(|v| v.span().start)));
            rules.push(AclRule {
                id,
                action: act.unwrap_or(Action::Deny),
                matcher: m.unwrap_or_default(),
                log,
                keep_state,
                span: cx.span(rf.at),
            });
        }
        locs.acl_name.push(f.get("name").map_or(at, |v| v.span().start));
        locs.rule.push(rule_locs);
        acls.push(AclDef {
            name: nm.unwrap_or_default(),
            default,
            rules,
            log_default,
            span: cx.span(at),
        });
    }

    let mut bindings = Vec::new();
    for (i, v) in table_array(cx, root, "bind").into_iter().enumerate() {
        let ctx = format!("bind {}", i + 1);
        let Some(f) = fields(
            cx,
            v,
            "[[bind]]",
            &["acl", "port", "vlan", "interface", "direction", "description"],
        ) else {
            continue;
        };
        let at = f.at;
        let acl = required(cx, &f, &ctx, "acl").and_then(|a| name(cx, &ctx, "acl", a));
        let targets: Vec<(&str, &V)> = ["port", "vlan", "interface"]
            .into_iter()
            .filter_map(|k| f.get(k).map(|v| (k, v)))
            .collect();
        let target = match targets.as_slice() {
            [] => {
                cx.error(
                    at,
                    format!("{ctx}: missing target: give one of `port`, `vlan` or `interface`"),
                );
                None
            }
            [(kind, tv)] => Some((*kind, *tv)),
            [first, rest @ ..] => {
                for (k, tv) in rest {
                    cx.error(
                        tv.span().start,
                        format!(
                            "{ctx}: a binding has exactly one target, but names both `{}` and `{k}`",
                            first.0
                        ),
                    );
                }
                None
            }
        };
        let direction = f
            .get("direction")
            .and_then(|d| match string(cx, &ctx, "direction", d) {
                Some("in") => Some((Direction::In, d)),
                Some("out") => Some((Direction::Out, d)),
                Some(other) => {
                    cx.error(
                        d.span().start,
                        format!("{ctx}: direction \"{other}\" is not \"in\" or \"out\""),
                    );
                    None
                }
                None => None,
            });
        let mut bt = None;
        if let Some((kind, tv)) = target {
            if kind != "interface" {
                if let Some((_, d)) = direction {
                    cx.error(
                        d.span().start,
                        format!(
                            "{ctx}: `direction` applies only to a Routed ACL (`interface`), not to `{kind}`"
                        ),
                    );
                }
            }
            bt = match kind {
                "port" => name(cx, &ctx, "port", tv).map(BindTarget::Port),
                "vlan" => int_in(cx, &ctx, "vlan", tv, 1, 4094).map(|n| BindTarget::Vlan(n as u16)),
                _ => {
                    let iname = name(cx, &ctx, "interface", tv);
                    if direction.is_none() && f.get("direction").is_none() {
                        cx.error(
                            tv.span().start,
                            format!("{ctx}: a Routed ACL binding needs `direction = \"in\"` or `\"out\"`"),
                        );
                    }
                    match (iname, direction) {
                        (Some(name), Some((direction, _))) => Some(BindTarget::Interface { name, direction }),
                        _ => None,
                    }
                }
            };
        }
        locs.bind_acl.push(f.get("acl").map_or(at, |v| v.span().start));
        locs.bind_target
            .push(target.map_or(at, |(_, tv)| tv.span().start));
        bindings.push(BindingDef {
            acl: acl.unwrap_or_default(),
            target: bt.unwrap_or(BindTarget::Vlan(0)),
            span: cx.span(at),
        });
    }

    let mut rescue = Vec::new();
    for (i, v) in table_array(cx, root, "rescue").into_iter().enumerate() {
        let ctx0 = format!("rescue {}", i + 1);
        let Some(f) = fields(cx, v, "[[rescue]]", RESCUE_KEYS) else {
            continue;
        };
        let id = f.get("id").and_then(|v| name(cx, &ctx0, "id", v));
        let ctx = match &id {
            Some(id) => format!("{ctx0} (\"{id}\")"),
            None => ctx0,
        };
        let m = rule_match(cx, &ctx, &f);
        if m.as_ref().is_some_and(|m| !m.sets.is_any()) {
            cx.error(
                f.at,
                format!("{ctx}: a rescue rule cannot use a set: its addresses and ports belong in the rule file, where changing them needs --allow-rescue-change"),
            );
        }
        if m.as_ref()
            .is_some_and(|m| !m.needs_ip() && m.vlan.is_empty() && m.ethertype.is_none() && m.state.is_none())
        {
            cx.error(
                f.at,
                format!("{ctx}: a rescue rule that matches everything would disable every ACL"),
            );
        }
        locs.rescue_id.push(f.get("id").map(|v| v.span().start));
        rescue.push(RescueDef {
            id,
            matcher: m.unwrap_or_default(),
            span: cx.span(f.at),
        });
    }

    let mut expects = Vec::new();
    for (i, v) in table_array(cx, root, "expect").into_iter().enumerate() {
        let ctx = format!("expect {}", i + 1);
        let Some(f) = fields(
            cx,
            v,
            "[[expect]]",
            &[
                "port",
                "packet",
                "route",
                "verdict",
                "stage",
                "rule",
                "id",
                "description",
            ],
        ) else {
            continue;
        };
        let at = f.at;
        let port = required(cx, &f, &ctx, "port").and_then(|p| name(cx, &ctx, "port", p));
        let verdict = required(cx, &f, &ctx, "verdict").and_then(|a| action(cx, &ctx, "verdict", a));
        let packet = required(cx, &f, &ctx, "packet").and_then(|p| packet(cx, &ctx, p));
        let mut route = None;
        let mut route_locs = (at, at);
        if let Some(r) = f.get("route") {
            if let Some(rf) = fields(cx, r, "expect route", &["from", "to"]) {
                let rctx = format!("{ctx} route");
                let from = required(cx, &rf, &rctx, "from").and_then(|v| name(cx, &rctx, "from", v));
                let to = required(cx, &rf, &rctx, "to").and_then(|v| name(cx, &rctx, "to", v));
                route_locs = (
                    rf.get("from").map_or(rf.at, |v| v.span().start),
                    rf.get("to").map_or(rf.at, |v| v.span().start),
                );
                if let (Some(from), Some(to)) = (from, to) {
                    route = Some((from, to));
                }
            }
        }
        let stage = f.get("stage").and_then(|s| {
            let s = string(cx, &ctx, "stage", s).map(|st| (st, s))?;
            if STAGES.contains(&s.0) {
                Some(s.0.to_owned())
            } else {
                cx.error(
                    s.1.span().start,
                    format!("{ctx}: stage \"{}\" is not one of {}", s.0, STAGES.join(", ")),
                );
                None
            }
        });
        let rule = f.get("rule").and_then(|r| name(cx, &ctx, "rule", r));
        locs.expect_port
            .push(f.get("port").map_or(at, |v| v.span().start));
        locs.expect_route.push(route_locs);
        expects.push(ExpectDef {
            port: port.unwrap_or_default(),
            packet: packet.unwrap_or_default(),
            route,
            verdict: verdict.unwrap_or(Action::Deny),
            stage,
            rule,
            span: cx.span(at),
        });
    }

    let (sets, set_tests, set_files) = crate::sets::finish(cx);
    locs.set_files = set_files;
    let flows = match root.get("flows") {
        Some(v) => {
            let t = flows::table(cx, v);
            let any_keep = acls.iter().flat_map(|a| &a.rules).any(|r| r.keep_state);
            flows::unused_table(cx, &t, v.span().start, any_keep);
            t
        }
        None => FlowsDef::default(),
    };

    (
        RuleSet {
            version,
            requires,
            defaults,
            logging,
            ports,
            interfaces,
            acls,
            bindings,
            rescue,
            expects,
            sets,
            set_tests,
            flows,
        },
        locs,
    )
}

/// Stage names an `[[expect]]` may name (the engine's `Stage::as_str`).
pub(crate) const STAGES: &[&str] = &[
    "rescue",
    "malformed",
    "vlan-filter",
    "pacl",
    "vacl-in",
    "racl-in",
    "racl-out",
    "vacl-out",
    "none",
];

fn packet(cx: &mut Cx, ctx: &str, v: &V) -> Option<palisade_packet::FlowKey> {
    let f = fields(cx, v, "expect packet", PACKET_KEYS)?;
    let before = cx.diags.len();
    let mut b = PacketBuilder::default();
    let pctx = format!("{ctx} packet");
    if let Some(p) = f.get("proto") {
        match proto(cx, &pctx, p) {
            Some(Some(n)) => b.proto = Some(n),
            Some(None) => cx.error(
                p.span().start,
                format!("{pctx}: a packet has one protocol, not \"any\""),
            ),
            None => {}
        }
    }
    for (key, slot) in [("src", &mut b.src), ("dst", &mut b.dst)] {
        if let Some(a) = f.get(key) {
            if let Some(s) = string(cx, &pctx, key, a) {
                match parse_addr(s) {
                    Ok(x) => *slot = Some(x),
                    Err(e) => cx.error(a.span().start, format!("{pctx}: {key}: {e}")),
                }
            }
        }
    }
    if let Some(p) = f.get("src_port") {
        b.src_port = int_in(cx, &pctx, "src_port", p, 0, 65535).map(|n| n as u16);
    }
    if let Some(p) = f.get("dst_port") {
        b.dst_port = int_in(cx, &pctx, "dst_port", p, 0, 65535).map(|n| n as u16);
    }
    if let Some(p) = f.get("icmp_type") {
        b.icmp_type = int_in(cx, &pctx, "icmp_type", p, 0, 255).map(|n| n as u8);
    }
    if let Some(p) = f.get("icmp_code") {
        b.icmp_code = int_in(cx, &pctx, "icmp_code", p, 0, 255).map(|n| n as u8);
    }
    if let Some(p) = f.get("tcp_flags") {
        // In a packet, flags are the set bits: "syn,ack" (negations are ignored).
        b.tcp_flags = tcp_flags(cx, &pctx, p).map(|t| t.value);
    }
    if let Some(p) = f.get("vlan") {
        // 0 means a priority-tagged frame (a tag with VID 0).
        b.vlan = int_in(cx, &pctx, "vlan", p, 0, 4094).map(|n| n as u16);
    }
    if let Some(p) = f.get("fragment") {
        if let Some(s) = string(cx, &pctx, "fragment", p) {
            match parse_fragment_state(s) {
                Ok(fs) => b.fragment = Some(fs),
                Err(e) => cx.error(p.span().start, format!("{pctx}: {e}")),
            }
        }
    }
    if let Some(p) = f.get("dscp") {
        b.dscp = dscp_list(cx, &pctx, p).and_then(|d| match d.as_slice() {
            [one] => Some(*one),
            _ => {
                cx.error(p.span().start, format!("{pctx}: dscp must be one value"));
                None
            }
        });
    }
    if let Some(p) = f.get("ethertype") {
        b.ethertype = ethertype(cx, &pctx, p);
    }
    if let Some(p) = f.get("state") {
        b.state = flows::packet_state(cx, &pctx, p);
    }
    if let Some(p) = f.get("malformed") {
        match p.get_ref() {
            DeValue::Boolean(m) => b.malformed = *m,
            other => cx.error(
                p.span().start,
                format!(
                    "{pctx}: malformed must be true or false, found {}",
                    other.type_str()
                ),
            ),
        }
    }
    if cx.diags.len() > before {
        return None;
    }
    match b.build() {
        Ok(k) => Some(k),
        Err(e) => {
            cx.error(f.at, format!("{pctx}: {e}"));
            None
        }
    }
}

fn empty_ruleset() -> RuleSet {
    RuleSet {
        version: 1,
        requires: None,
        defaults: Defaults::default(),
        logging: Logging::default(),
        ports: Vec::new(),
        interfaces: Vec::new(),
        acls: Vec::new(),
        bindings: Vec::new(),
        rescue: Vec::new(),
        expects: Vec::new(),
        sets: Vec::new(),
        set_tests: Vec::new(),
        flows: FlowsDef::default(),
    }
}

/// Resolves names across the file: duplicates, dangling references, unbound ACLs.
pub(crate) fn resolve(cx: &mut Cx, rs: &RuleSet, locs: &Locs) {
    let mut port_at: HashMap<&str, usize> = HashMap::new();
    for (p, &off) in rs.ports.iter().zip(&locs.port_name) {
        if p.name.is_empty() {
            continue;
        }
        if let Some(&first) = port_at.get(p.name.as_str()) {
            cx.error(
                off,
                format!(
                    "duplicate port \"{}\" (first defined at {})",
                    p.name,
                    cx.at(first)
                ),
            );
        } else {
            port_at.insert(&p.name, off);
        }
    }
    let mut known_vlans: Vec<u16> = rs
        .ports
        .iter()
        .flat_map(|p| p.vlan.iter().chain(&p.trunk).copied())
        .collect();
    let mut iface_at: HashMap<&str, usize> = HashMap::new();
    let mut svi_at: HashMap<u16, usize> = HashMap::new();
    let mut routed_at: HashMap<&str, usize> = HashMap::new();
    for (i, (&off, &toff)) in rs
        .interfaces
        .iter()
        .zip(locs.iface_name.iter().zip(&locs.iface_target))
    {
        if !i.name.is_empty() {
            if let Some(&first) = iface_at.get(i.name.as_str()) {
                cx.error(
                    off,
                    format!(
                        "duplicate interface \"{}\" (first defined at {})",
                        i.name,
                        cx.at(first)
                    ),
                );
            } else {
                iface_at.insert(&i.name, off);
            }
        }
        match &i.target {
            InterfaceTarget::Vlan(0) => {}
            InterfaceTarget::Vlan(v) => {
                if let Some(&first) = svi_at.get(v) {
                    cx.error(
                        toff,
                        format!(
                            "interface \"{}\": VLAN {v} already has an SVI (at {})",
                            i.name,
                            cx.at(first)
                        ),
                    );
                } else {
                    svi_at.insert(*v, toff);
                }
                if !known_vlans.contains(v) {
                    cx.warn(
                        toff,
                        format!("interface \"{}\": no port carries VLAN {v}", i.name),
                    );
                }
            }
            InterfaceTarget::Port(p) => {
                if !port_at.contains_key(p.as_str()) {
                    cx.error(
                        toff,
                        format!("interface \"{}\" names missing port \"{p}\"", i.name),
                    );
                } else if let Some(&first) = routed_at.get(p.as_str()) {
                    cx.error(
                        toff,
                        format!(
                            "interface \"{}\": port \"{p}\" is already a routed interface (at {})",
                            i.name,
                            cx.at(first)
                        ),
                    );
                } else {
                    routed_at.insert(p, toff);
                }
            }
        }
    }
    known_vlans.extend(svi_at.keys().copied());

    let mut acl_at: HashMap<&str, usize> = HashMap::new();
    for (ai, (a, &off)) in rs.acls.iter().zip(&locs.acl_name).enumerate() {
        if !a.name.is_empty() {
            if let Some(&first) = acl_at.get(a.name.as_str()) {
                cx.error(
                    off,
                    format!("duplicate acl \"{}\" (first defined at {})", a.name, cx.at(first)),
                );
            } else {
                acl_at.insert(&a.name, off);
            }
        }
        let mut ids: HashMap<&str, usize> = HashMap::new();
        for (r, &(roff, idoff)) in a.rules.iter().zip(&locs.rule[ai]) {
            if let (Some(id), Some(idoff)) = (&r.id, idoff) {
                if let Some(&first) = ids.get(id.as_str()) {
                    cx.error(
                        idoff,
                        format!(
                            "acl \"{}\": duplicate rule id \"{id}\" (first used at {})",
                            a.name,
                            cx.at(first)
                        ),
                    );
                } else {
                    ids.insert(id, idoff);
                }
            }
            let _ = roff;
        }
        validate::shadowing(cx, a, &locs.rule[ai]);
    }
    let mut rescue_ids: HashMap<&str, usize> = HashMap::new();
    for (r, off) in rs.rescue.iter().zip(&locs.rescue_id) {
        if let (Some(id), Some(off)) = (&r.id, off) {
            if let Some(&first) = rescue_ids.get(id.as_str()) {
                cx.error(
                    *off,
                    format!("duplicate rescue id \"{id}\" (first used at {})", cx.at(first)),
                );
            } else {
                rescue_ids.insert(id, *off);
            }
        }
    }

    let mut bound: Vec<bool> = vec![false; rs.acls.len()];
    let mut slot_at: HashMap<String, usize> = HashMap::new();
    for (i, (b, (&aoff, &toff))) in rs
        .bindings
        .iter()
        .zip(locs.bind_acl.iter().zip(&locs.bind_target))
        .enumerate()
    {
        let ctx = format!("bind {}", i + 1);
        if !b.acl.is_empty() {
            match rs.acls.iter().position(|a| a.name == b.acl) {
                Some(ai) => bound[ai] = true,
                None => cx.error(aoff, format!("{ctx} names missing acl \"{}\"", b.acl)),
            }
        }
        let slot = match &b.target {
            BindTarget::Vlan(0) => None,
            BindTarget::Port(p) => {
                if !port_at.contains_key(p.as_str()) {
                    cx.error(toff, format!("{ctx} names missing port \"{p}\""));
                }
                Some(format!("port \"{p}\""))
            }
            BindTarget::Vlan(v) => {
                if !known_vlans.contains(v) {
                    cx.error(
                        toff,
                        format!("{ctx} names VLAN {v}, which no port or interface carries"),
                    );
                }
                Some(format!("VLAN {v}"))
            }
            BindTarget::Interface { name, direction } => {
                if !iface_at.contains_key(name.as_str()) {
                    cx.error(toff, format!("{ctx} names missing interface \"{name}\""));
                }
                Some(format!("interface \"{name}\" direction {}", direction.as_str()))
            }
        };
        if let Some(slot) = slot {
            if let Some(&first) = slot_at.get(&slot) {
                cx.error(
                    toff,
                    format!("{ctx}: {slot} already has an ACL bound (at {})", cx.at(first)),
                );
            } else {
                slot_at.insert(slot, toff);
            }
        }
    }
    for ((a, &off), bound) in rs.acls.iter().zip(&locs.acl_name).zip(bound) {
        if !bound && !a.name.is_empty() {
            cx.warn(off, format!("acl \"{}\" is bound nowhere", a.name));
        }
    }

    for (i, (e, (&poff, &(foff, toff)))) in rs
        .expects
        .iter()
        .zip(locs.expect_port.iter().zip(&locs.expect_route))
        .enumerate()
    {
        let ctx = format!("expect {}", i + 1);
        if !e.port.is_empty() && !port_at.contains_key(e.port.as_str()) {
            cx.error(poff, format!("{ctx} names missing port \"{}\"", e.port));
        }
        if let Some((from, to)) = &e.route {
            if !iface_at.contains_key(from.as_str()) {
                cx.error(foff, format!("{ctx}: route names missing interface \"{from}\""));
            }
            if !iface_at.contains_key(to.as_str()) {
                cx.error(toff, format!("{ctx}: route names missing interface \"{to}\""));
            }
        }
    }
}
