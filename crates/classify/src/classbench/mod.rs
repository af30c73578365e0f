//! ClassBench filter sets and header traces.
//!
//! ClassBench is the standard benchmark of packet classification: a *filter
//! set* is an ordered list of 5-tuple rules (first line = highest priority)
//! and a *trace* is a list of packet headers. Two dialects exist and both are
//! read here:
//!
//! * the `db_generator` format (`cb12/`, `large/`): six TAB-separated fields,
//!   the last a 16-bit "flags" value/mask;
//! * the WUSTL format (`wustl/`): five space-separated fields, no flags.
//!
//! Addresses are IPv4 dotted quads or, in ClassBench-ng's IPv6 dialect,
//! IPv6 text (`@2001:db8:5a1:a0b::/64\t2001:db8::/32\t0 : 65535\t80 :
//! 80\t0x06/0xFF\t0x0000/0x0000`), read with `core::net`; one set may mix
//! both families, but one line has one. Rules become [`RuleMatch`]es on the
//! 5-tuple of their family: the line's family is the rule's
//! [`RuleMatch::family`] (so `0.0.0.0/0` is any IPv4 address, `::/0` any
//! IPv6 one), a wildcard port range `0 : 65535` becomes an empty list, a
//! protocol mask `0x00` becomes `None`, and the flags field is ignored (as
//! librte_acl and the published classifiers do) unless
//! [`FilterOptions::flags`] asks otherwise. Traces become [`FlowKey`]s with
//! protocol and ports plus the line's last column (0-based generating rule
//! for `cb12`, 1-based first match for `wustl`; see [`TraceFormat`]); an
//! address column is a decimal 32-bit number or a dotted quad (IPv4) or
//! IPv6 text. Errors name the line and the cause; the parsers never panic.
//!
//! ```
//! use palisade_classify::classbench::{parse_filters, parse_trace, FilterOptions, TraceFormat};
//! use palisade_classify::{Classifier, LinearClassifier};
//!
//! let rules = parse_filters(
//!     "@10.0.0.0/8\t0.0.0.0/0\t0 : 65535\t80 : 80\t0x06/0xFF\t0x0000/0x0000\t\n\
//!      @0.0.0.0/0 0.0.0.0/0 0 : 65535 0 : 65535 0x00/0x00\n",
//!     &FilterOptions::default(),
//! )
//! .unwrap();
//! assert_eq!(rules.len(), 2);
//! let trace = parse_trace("167772161 3232235777 1000 80 6 1\n").unwrap();
//! assert_eq!(trace[0].format, TraceFormat::Wustl);
//! let linear = LinearClassifier::new(rules);
//! assert_eq!(linear.classify(&trace[0].key), 0);
//!
//! let v6 = parse_filters(
//!     "@2001:db8:5a1:a0b::/64\t2001:db8::/32\t0 : 65535\t80 : 80\t0x06/0xFF\t0x0000/0x0000\t\n",
//!     &FilterOptions::default(),
//! )
//! .unwrap();
//! let trace = parse_trace("2001:db8:5a1:a0b::7\t2001:db8::1\t4000\t80\t6\t0\t0\n").unwrap();
//! assert_eq!(LinearClassifier::new(v6).classify(&trace[0].key), 0);
//!
//! let err = parse_filters("@10.0.0.0/40 0.0.0.0/0 0 : 65535 0 : 65535 0x00/0x00\n", &FilterOptions::default());
//! assert!(err.unwrap_err().to_string().starts_with("line 1: "));
//! ```

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::net::{Ipv4Addr, Ipv6Addr};

use palisade_packet::FlowKey;

use crate::{IpFamily, PortRange, Prefix, RuleMatch, TcpFlagsMatch};

mod synth;
pub use synth::{synthesize, synthesize_trace};

/// A parse error: the 1-based line and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportError {
    /// 1-based line number in the input.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// What to do with the ClassBench "flags" field of `cb12`-style filters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FlagsMode {
    /// Ignore it: 5-tuple matching, comparable with published results.
    #[default]
    Ignore,
    /// For TCP rules, match the high byte as TCP flags (`0x1000/0x1000` = ACK
    /// set); for ICMP rules, match high byte/low byte as ICMP type/code when
    /// the mask covers them whole. Other combinations are ignored.
    Match,
}

/// Options of [`parse_filters`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FilterOptions {
    /// Treatment of the flags field.
    pub flags: FlagsMode,
}

/// Which dialect a trace line is in; says what its last column means.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TraceFormat {
    /// Seven columns; the last is the 0-based index of the rule that
    /// generated the header (an upper bound of the first match).
    Cb12,
    /// Six columns; the last is the 1-based first matching rule.
    Wustl,
}

/// The [`TraceEntry::tag`] of a line whose last column is `-1` (no rule,
/// as ClassBench-ng's IPv6 trace generator writes for a header no rule matches).
pub const NO_TAG: u32 = u32::MAX;

/// One header of a trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceEntry {
    /// The header as a flow key (IPv4 or IPv6 addresses, protocol, ports).
    pub key: FlowKey,
    /// The line's last column, as written ([`NO_TAG`] for `-1`).
    pub tag: u32,
    /// The dialect of the line.
    pub format: TraceFormat,
}

impl TraceEntry {
    /// The 0-based rule index named by the last column (`tag - 1` for WUSTL).
    ///
    /// ```
    /// let t = palisade_classify::classbench::parse_trace("1 2 3 4 6 7\n").unwrap();
    /// assert_eq!(t[0].tag_index(), Some(6));
    /// ```
    pub fn tag_index(&self) -> Option<u32> {
        if self.tag == NO_TAG {
            return None;
        }
        match self.format {
            TraceFormat::Cb12 => Some(self.tag),
            TraceFormat::Wustl => self.tag.checked_sub(1),
        }
    }
}

/// Parses a ClassBench filter set (either dialect, per line) into rules in priority order.
///
/// Blank lines are skipped. See the module docs for the mapping.
///
/// ```
/// use palisade_classify::classbench::{parse_filters, FilterOptions};
/// let r = parse_filters("@1.2.3.4/32 0.0.0.0/0 1024 : 65535 53 : 53 0x11/0xFF\n", &FilterOptions::default()).unwrap();
/// assert_eq!(r[0].proto, Some(17));
/// assert_eq!(r[0].src_port[0].lo, 1024);
/// assert!(r[0].dst.is_empty());
/// ```
pub fn parse_filters(text: &str, options: &FilterOptions) -> Result<Vec<RuleMatch>, ImportError> {
    let mut rules = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let rule =
            parse_filter_line(line, options).map_err(|message| ImportError { line: i + 1, message })?;
        rules.push(rule);
    }
    Ok(rules)
}

/// Parses one filter line (without the line number in errors).
///
/// ```
/// use palisade_classify::classbench::{parse_filter_line, FilterOptions};
/// assert!(parse_filter_line("@1.2.3.4/33 0.0.0.0/0 0 : 1 0 : 1 0x06/0xFF", &FilterOptions::default()).is_err());
/// ```
pub fn parse_filter_line(line: &str, options: &FilterOptions) -> Result<RuleMatch, String> {
    let line = line.trim();
    let Some(body) = line.strip_prefix('@') else {
        return Err(String::from("a filter line must start with '@'"));
    };
    let mut tokens = Tokens {
        inner: body.split_whitespace(),
    };
    let mut rule = RuleMatch::any();
    let src = parse_prefix(tokens.next("source prefix")?, "source")?;
    let dst = parse_prefix(tokens.next("destination prefix")?, "destination")?;
    if src.family != dst.family {
        return Err(format!(
            "source prefix is {} and destination prefix {}: a line has one address family",
            family_name(src.family),
            family_name(dst.family)
        ));
    }
    rule.family = Some(src.family);
    if src.len > 0 {
        rule.src.push(src);
    }
    if dst.len > 0 {
        rule.dst.push(dst);
    }
    let sp = parse_port_range(&mut tokens, "source port")?;
    let dp = parse_port_range(&mut tokens, "destination port")?;
    if !sp.is_full() {
        rule.src_port.push(sp);
    }
    if !dp.is_full() {
        rule.dst_port.push(dp);
    }
    let (pv, pm) = parse_hex_pair(tokens.next("protocol")?, "protocol", 0xff)?;
    match pm {
        0xff => rule.proto = Some(pv as u8),
        0x00 => {}
        _ => {
            return Err(format!(
                "protocol mask 0x{pm:02x} is not supported (only 0xFF or 0x00)"
            ))
        }
    }
    if let Some(flags) = tokens.inner.next() {
        let (fv, fm) = parse_hex_pair(flags, "flags", 0xffff)?;
        if options.flags == FlagsMode::Match && fm != 0 {
            apply_flags(&mut rule, fv as u16, fm as u16);
        }
    }
    if let Some(extra) = tokens.inner.next() {
        return Err(format!("unexpected extra field `{extra}`"));
    }
    Ok(rule)
}

/// Maps the flags field onto TCP flags or ICMP type/code (see [`FlagsMode::Match`]).
fn apply_flags(rule: &mut RuleMatch, value: u16, mask: u16) {
    match rule.proto {
        Some(6) if mask & 0x00ff == 0 => {
            rule.tcp_flags = Some(TcpFlagsMatch {
                value: (value & mask) >> 8,
                mask: mask >> 8,
            });
        }
        Some(1) if mask == 0xff00 => rule.icmp_type = Some((value >> 8) as u8),
        Some(1) if mask == 0xffff => {
            rule.icmp_type = Some((value >> 8) as u8);
            rule.icmp_code = Some(value as u8);
        }
        _ => {}
    }
}

/// Parses a trace (either dialect, per line). Blank lines are skipped.
///
/// ```
/// let t = palisade_classify::classbench::parse_trace("16909060 84281096 0 1221 6 4294967295 261\n").unwrap();
/// assert_eq!(t[0].key.src_ip, 0x0102_0304);
/// assert_eq!(t[0].key.ports(), Some((0, 1221)));
/// assert_eq!(t[0].tag_index(), Some(261));
/// ```
pub fn parse_trace(text: &str) -> Result<Vec<TraceEntry>, ImportError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let entry = parse_trace_line(line).map_err(|message| ImportError { line: i + 1, message })?;
        out.push(entry);
    }
    Ok(out)
}

/// Parses one trace line: 6 or 7 columns, addresses as decimal 32-bit
/// numbers or dotted quads (IPv4) or IPv6 text, the last column `-1` or a rule number.
///
/// ```
/// use palisade_classify::classbench::parse_trace_line;
/// assert!(parse_trace_line("1 2 3 70000 6 1").is_err());
/// let v6 = parse_trace_line("2001:db8::1 2001:db8::2 1000 80 6 -1").unwrap();
/// assert_eq!(v6.key.ip_family(), Some(6));
/// assert_eq!(v6.tag_index(), None);
/// ```
pub fn parse_trace_line(line: &str) -> Result<TraceEntry, String> {
    let mut cols: [&str; 7] = [""; 7];
    let mut n = 0;
    for tok in line.split_whitespace() {
        if n == cols.len() {
            return Err(String::from("too many columns (a trace line has 6 or 7)"));
        }
        cols[n] = tok;
        n += 1;
    }
    let format = match n {
        6 => TraceFormat::Wustl,
        7 => TraceFormat::Cb12,
        _ => {
            return Err(format!(
                "{n} columns; a trace line has 6 (wustl) or 7 (ClassBench) columns"
            ))
        }
    };
    let number = |col: usize, max: u64, what: &str| -> Result<u64, String> {
        let tok = cols[col];
        let v = tok
            .parse::<u64>()
            .map_err(|_| format!("column {} `{tok}` is not an unsigned decimal number", col + 1))?;
        if v > max {
            Err(format!("{what} {v} in column {} exceeds {max}", col + 1))
        } else {
            Ok(v)
        }
    };
    let src = trace_address(cols[0], 1, "source address")?;
    let dst = trace_address(cols[1], 2, "destination address")?;
    let sp = number(2, u16::MAX as u64, "source port")? as u16;
    let dp = number(3, u16::MAX as u64, "destination port")? as u16;
    let proto = number(4, u8::MAX as u64, "protocol")? as u8;
    let tag = if cols[n - 1] == "-1" {
        NO_TAG
    } else {
        number(n - 1, u32::MAX as u64 - 1, "rule number")? as u32
    };
    if format == TraceFormat::Cb12 {
        number(5, u32::MAX as u64, "flags column")?;
    }
    let key = match (src, dst) {
        (Address::V4(s), Address::V4(d)) => FlowKey::new().with_ipv4(s.to_be_bytes(), d.to_be_bytes()),
        (Address::V6(s), Address::V6(d)) => FlowKey::new().with_ipv6(s, d),
        _ => {
            return Err(String::from(
                "source and destination addresses are of different families (IPv4 and IPv6)",
            ))
        }
    };
    Ok(TraceEntry {
        key: key.with_proto(proto).with_ports(sp, dp),
        tag,
        format,
    })
}

/// An address column of a trace line.
enum Address {
    V4(u32),
    V6(u128),
}

/// Reads an address column: a decimal 32-bit number (ClassBench's IPv4
/// form), a dotted quad, or IPv6 text.
fn trace_address(tok: &str, col: usize, what: &str) -> Result<Address, String> {
    if tok.contains(':') {
        tok.parse::<Ipv6Addr>()
            .map(|a| Address::V6(a.to_bits()))
            .map_err(|_| format!("{what} `{tok}` in column {col} is not an IPv6 address"))
    } else if tok.contains('.') {
        tok.parse::<Ipv4Addr>()
            .map(|a| Address::V4(a.to_bits()))
            .map_err(|_| format!("{what} `{tok}` in column {col} is not an IPv4 address"))
    } else {
        let v = tok.parse::<u64>().map_err(|_| {
            format!("column {col} `{tok}` is not an unsigned decimal number, an IPv4 or an IPv6 address")
        })?;
        u32::try_from(v)
            .map(Address::V4)
            .map_err(|_| format!("{what} {v} in column {col} exceeds {}", u32::MAX))
    }
}

/// Writes a trace line in the ClassBench (7-column) dialect for `key`.
///
/// IPv4 addresses are written as decimal numbers, IPv6 ones as text; `tag`
/// goes in the last column (`-1` for [`NO_TAG`]).
///
/// ```
/// use palisade_packet::FlowKey;
/// use palisade_classify::classbench::format_trace_line;
/// let k = FlowKey::new().with_ipv4([0, 0, 1, 0], [0, 0, 0, 2]).with_proto(17).with_ports(53, 54);
/// assert_eq!(format_trace_line(&k, 5), "256\t2\t53\t54\t17\t0\t5");
/// let k6 = FlowKey::new().with_ipv6(0x2001_0db8 << 96 | 1, 2).with_proto(6).with_ports(1, 2);
/// assert_eq!(format_trace_line(&k6, 0), "2001:db8::1\t::2\t1\t2\t6\t0\t0");
/// ```
pub fn format_trace_line(key: &FlowKey, tag: u32) -> String {
    let (sp, dp) = key.ports().unwrap_or((0, 0));
    let tag = if tag == NO_TAG {
        String::from("-1")
    } else {
        format!("{tag}")
    };
    if key.ip_family() == Some(6) {
        format!(
            "{}\t{}\t{}\t{}\t{}\t0\t{tag}",
            Ipv6Addr::from_bits(key.src_ip),
            Ipv6Addr::from_bits(key.dst_ip),
            sp,
            dp,
            key.l4_proto
        )
    } else {
        format!(
            "{}\t{}\t{}\t{}\t{}\t0\t{tag}",
            key.src_ip as u32, key.dst_ip as u32, sp, dp, key.l4_proto
        )
    }
}

/// Writes a rule as a filter line of the `db_generator` dialect (6
/// TAB-separated fields, flags `0x0000/0x0000`), if it has that form: one
/// family, at most one prefix per address, one range per port, an optional
/// protocol, nothing else. [`parse_filters`] reads the line back as the same rule.
///
/// ```
/// use palisade_classify::classbench::{format_filter_line, parse_filter_line, FilterOptions};
/// let line = "@2001:db8::/32\t::/0\t0 : 65535\t80 : 80\t0x06/0xFF\t0x0000/0x0000\t";
/// let rule = parse_filter_line(line, &FilterOptions::default()).unwrap();
/// assert_eq!(format_filter_line(&rule).as_deref(), Some(line));
/// ```
pub fn format_filter_line(rule: &RuleMatch) -> Option<String> {
    let family = rule.family?;
    let plain = RuleMatch {
        family: Some(family),
        src: rule.src.clone(),
        dst: rule.dst.clone(),
        proto: rule.proto,
        src_port: rule.src_port.clone(),
        dst_port: rule.dst_port.clone(),
        ..RuleMatch::any()
    };
    if plain != *rule
        || rule.src.len() > 1
        || rule.dst.len() > 1
        || rule.src_port.len() > 1
        || rule.dst_port.len() > 1
    {
        return None;
    }
    let prefix = |list: &[Prefix]| -> Option<String> {
        match list.first() {
            Some(p) if p.family != family => None,
            Some(p) => Some(prefix_text(p)),
            None => Some(prefix_text(&Prefix {
                family,
                addr: 0,
                len: 0,
            })),
        }
    };
    let ports = |list: &[PortRange]| {
        let r = list.first().copied().unwrap_or(PortRange { lo: 0, hi: u16::MAX });
        format!("{} : {}", r.lo, r.hi)
    };
    let proto = match rule.proto {
        Some(p) => format!("0x{p:02X}/0xFF"),
        None => String::from("0x00/0x00"),
    };
    Some(format!(
        "@{}\t{}\t{}\t{}\t{proto}\t0x0000/0x0000\t",
        prefix(&rule.src)?,
        prefix(&rule.dst)?,
        ports(&rule.src_port),
        ports(&rule.dst_port)
    ))
}

/// `address/len` in the family's text form.
fn prefix_text(p: &Prefix) -> String {
    match p.family {
        IpFamily::V4 => format!("{}/{}", Ipv4Addr::from_bits(p.addr as u32), p.len),
        IpFamily::V6 => format!("{}/{}", Ipv6Addr::from_bits(p.addr), p.len),
    }
}

fn family_name(f: IpFamily) -> &'static str {
    match f {
        IpFamily::V4 => "IPv4",
        IpFamily::V6 => "IPv6",
    }
}

/// An IPv4 rule moved into an IPv6 site: each IPv4 prefix `a/l` becomes
/// `site | a << 48` of length `48 + l` (so `0.0.0.0/0` becomes the whole
/// site), and an IPv4 family becomes IPv6; everything else is kept. `site`
/// is a /48 (its low 80 bits are ignored). A key moved by
/// [`map_key_to_ipv6_site`] has the same first match in the moved rules as
/// the IPv4 key in the IPv4 rules: the IPv6 version of a ClassBench set
/// whose rules all share one site, as a site's ACL does.
///
/// ```
/// use palisade_classify::classbench::{map_key_to_ipv6_site, map_rule_to_ipv6_site};
/// use palisade_classify::{IpFamily, Prefix, RuleMatch};
/// use palisade_packet::FlowKey;
/// let site = 0x2001_0db8_05a1u128 << 80;
/// let r = RuleMatch { family: Some(IpFamily::V4), src: vec![Prefix::v4([10, 1, 0, 0], 16)], ..RuleMatch::any() };
/// let r6 = map_rule_to_ipv6_site(&r, site);
/// assert_eq!(r6.src, vec![Prefix::v6(site | 0x0a01_0000 << 48, 64)]);
/// let k = FlowKey::new().with_ipv4([10, 1, 2, 3], [1, 1, 1, 1]);
/// assert!(r6.matches(&map_key_to_ipv6_site(&k, site)));
/// ```
pub fn map_rule_to_ipv6_site(rule: &RuleMatch, site: u128) -> RuleMatch {
    let site = site & Prefix::mask_of(IpFamily::V6, 48);
    let map = |list: &[Prefix]| -> Vec<Prefix> {
        list.iter()
            .map(|p| match p.family {
                IpFamily::V4 => Prefix::v6(site | p.addr << 48, 48 + p.len),
                IpFamily::V6 => *p,
            })
            .collect()
    };
    let mut out = rule.clone();
    if out.family == Some(IpFamily::V4) {
        out.family = Some(IpFamily::V6);
        // The whole IPv4 space is the whole site.
        if out.src.is_empty() {
            out.src.push(Prefix::v6(site, 48));
        }
        if out.dst.is_empty() {
            out.dst.push(Prefix::v6(site, 48));
        }
    }
    out.src = map(&out.src);
    out.dst = map(&out.dst);
    out
}

/// An IPv4 key moved into an IPv6 site as [`map_rule_to_ipv6_site`] moves
/// rules (other keys are returned as they are).
///
/// ```
/// use palisade_classify::classbench::map_key_to_ipv6_site;
/// use palisade_packet::FlowKey;
/// let k = map_key_to_ipv6_site(&FlowKey::new().with_ipv4([0, 0, 0, 1], [0, 0, 0, 2]), 0x2001_0db8u128 << 96);
/// assert_eq!((k.src_ip, k.ip_version), (0x2001_0db8 << 96 | 1 << 48, 6));
/// ```
pub fn map_key_to_ipv6_site(key: &FlowKey, site: u128) -> FlowKey {
    if key.ip_family() != Some(4) {
        return *key;
    }
    let site = site & Prefix::mask_of(IpFamily::V6, 48);
    let mut out = *key;
    out.src_ip = site | (key.src_ip & 0xffff_ffff) << 48;
    out.dst_ip = site | (key.dst_ip & 0xffff_ffff) << 48;
    out.ip_version = 6;
    out.ethertype = 0x86dd;
    out
}

/// Whitespace tokens with a "missing field" error.
struct Tokens<'a> {
    inner: core::str::SplitWhitespace<'a>,
}

impl<'a> Tokens<'a> {
    fn next(&mut self, what: &str) -> Result<&'a str, String> {
        self.inner.next().ok_or_else(|| format!("missing {what} field"))
    }
}

/// `address/len`: a dotted quad and 0..32, or IPv6 text and 0..128 (host bits are cleared).
fn parse_prefix(tok: &str, what: &str) -> Result<Prefix, String> {
    let (addr, len) = tok
        .rsplit_once('/')
        .ok_or_else(|| format!("{what} `{tok}` is not address/length"))?;
    let (family, bits) = if addr.contains(':') {
        let a = addr
            .parse::<Ipv6Addr>()
            .map_err(|_| format!("{what} address `{addr}` is not an IPv6 address"))?;
        (IpFamily::V6, a.to_bits())
    } else {
        let a = addr.parse::<Ipv4Addr>().map_err(|_| {
            // Name the octet at fault, as people read dotted quads.
            let parts: Vec<&str> = addr.split('.').collect();
            match parts.iter().find(|p| p.parse::<u8>().is_err()) {
                _ if parts.len() < 4 => format!("{what} address `{addr}` has fewer than 4 octets"),
                _ if parts.len() > 4 => format!("{what} address `{addr}` has more than 4 octets"),
                Some(bad) => format!("{what} address `{addr}`: octet `{bad}` is not 0..255"),
                None => format!("{what} address `{addr}` is not an IPv4 address"),
            }
        })?;
        (IpFamily::V4, a.to_bits() as u128)
    };
    let max = family.bits();
    let len: u8 = len
        .parse()
        .ok()
        .filter(|l| *l <= max)
        .ok_or_else(|| format!("{what} prefix length `{len}` is not 0..{max}"))?;
    Ok(match family {
        IpFamily::V4 => Prefix::v4((bits as u32).to_be_bytes(), len),
        IpFamily::V6 => Prefix::v6(bits, len),
    })
}

fn parse_port(tok: &str, what: &str) -> Result<u16, String> {
    tok.parse::<u16>()
        .map_err(|_| format!("{what} `{tok}` is not a port 0..65535"))
}

/// A port range written `lo : hi` (also accepts `lo:hi`, `lo: hi`, `lo :hi`).
fn parse_port_range(tokens: &mut Tokens<'_>, what: &str) -> Result<PortRange, String> {
    let first = tokens.next(what)?;
    let (lo, hi) = if let Some((a, b)) = first.split_once(':') {
        let b = if b.is_empty() { tokens.next(what)? } else { b };
        (a, b)
    } else {
        let colon = tokens.next(what)?;
        if let Some(rest) = colon.strip_prefix(':') {
            let b = if rest.is_empty() { tokens.next(what)? } else { rest };
            (first, b)
        } else {
            return Err(format!(
                "{what} range: expected `:` after `{first}`, found `{colon}`"
            ));
        }
    };
    let lo = parse_port(lo, what)?;
    let hi = parse_port(hi, what)?;
    if lo > hi {
        return Err(format!("{what} range {lo} : {hi} is reversed"));
    }
    Ok(PortRange { lo, hi })
}

fn parse_hex(tok: &str, what: &str, max: u32) -> Result<u32, String> {
    let digits = tok
        .strip_prefix("0x")
        .or_else(|| tok.strip_prefix("0X"))
        .ok_or_else(|| format!("{what} `{tok}` is not 0x-prefixed hex"))?;
    u32::from_str_radix(digits, 16)
        .ok()
        .filter(|v| *v <= max)
        .ok_or_else(|| format!("{what} `{tok}` is not hex at most 0x{max:x}"))
}

fn parse_hex_pair(tok: &str, what: &str, max: u32) -> Result<(u32, u32), String> {
    let (v, m) = tok
        .split_once('/')
        .ok_or_else(|| format!("{what} `{tok}` is not value/mask"))?;
    Ok((parse_hex(v, what, max)?, parse_hex(m, what, max)?))
}
