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
//! Rules become [`RuleMatch`]es on the 5-tuple: a wildcard port range
//! `0 : 65535` becomes an empty list, a protocol mask `0x00` becomes `None`,
//! and the flags field is ignored (as librte_acl and the published
//! classifiers do) unless [`FilterOptions::flags`] asks otherwise. Traces
//! become IPv4 [`FlowKey`]s with protocol and ports plus the line's last
//! column (0-based generating rule for `cb12`, 1-based first match for
//! `wustl`; see [`TraceFormat`]). Errors name the line and the cause; the
//! parsers never panic.
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
//! let err = parse_filters("@10.0.0.0/40 0.0.0.0/0 0 : 65535 0 : 65535 0x00/0x00\n", &FilterOptions::default());
//! assert!(err.unwrap_err().to_string().starts_with("line 1: "));
//! ```

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use palisade_packet::FlowKey;

use crate::{PortRange, Prefix, RuleMatch, TcpFlagsMatch};

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

/// One header of a trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceEntry {
    /// The header as a flow key (IPv4, protocol, ports).
    pub key: FlowKey,
    /// The line's last column, as written.
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

/// Parses one trace line.
///
/// ```
/// assert!(palisade_classify::classbench::parse_trace_line("1 2 3 70000 6 1").is_err());
/// ```
pub fn parse_trace_line(line: &str) -> Result<TraceEntry, String> {
    let mut cols: [u64; 7] = [0; 7];
    let mut n = 0;
    for tok in line.split_whitespace() {
        if n == cols.len() {
            return Err(String::from("too many columns (a trace line has 6 or 7)"));
        }
        cols[n] = tok
            .parse::<u64>()
            .map_err(|_| format!("column {} `{tok}` is not an unsigned decimal number", n + 1))?;
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
    let limit = |col: usize, max: u64, what: &str| -> Result<u64, String> {
        if cols[col] > max {
            Err(format!(
                "{what} {} in column {} exceeds {max}",
                cols[col],
                col + 1
            ))
        } else {
            Ok(cols[col])
        }
    };
    let src = limit(0, u32::MAX as u64, "source address")? as u32;
    let dst = limit(1, u32::MAX as u64, "destination address")? as u32;
    let sp = limit(2, u16::MAX as u64, "source port")? as u16;
    let dp = limit(3, u16::MAX as u64, "destination port")? as u16;
    let proto = limit(4, u8::MAX as u64, "protocol")? as u8;
    let tag = limit(n - 1, u32::MAX as u64, "rule number")? as u32;
    if format == TraceFormat::Cb12 {
        limit(5, u32::MAX as u64, "flags column")?;
    }
    let key = FlowKey::new()
        .with_ipv4(src.to_be_bytes(), dst.to_be_bytes())
        .with_proto(proto)
        .with_ports(sp, dp);
    Ok(TraceEntry { key, tag, format })
}

/// Writes a trace line in the ClassBench (7-column) dialect for `key`.
///
/// Only the IPv4 5-tuple is written; `tag` goes in the last column.
///
/// ```
/// use palisade_packet::FlowKey;
/// let k = FlowKey::new().with_ipv4([0, 0, 1, 0], [0, 0, 0, 2]).with_proto(17).with_ports(53, 54);
/// assert_eq!(palisade_classify::classbench::format_trace_line(&k, 5), "256\t2\t53\t54\t17\t0\t5");
/// ```
pub fn format_trace_line(key: &FlowKey, tag: u32) -> String {
    let (sp, dp) = key.ports().unwrap_or((0, 0));
    format!(
        "{}\t{}\t{}\t{}\t{}\t0\t{}",
        key.src_ip as u32, key.dst_ip as u32, sp, dp, key.l4_proto, tag
    )
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

fn parse_prefix(tok: &str, what: &str) -> Result<Prefix, String> {
    let (addr, len) = tok
        .split_once('/')
        .ok_or_else(|| format!("{what} `{tok}` is not address/length"))?;
    let mut octets = [0u8; 4];
    let mut parts = addr.split('.');
    for o in octets.iter_mut() {
        let part = parts
            .next()
            .ok_or_else(|| format!("{what} address `{addr}` has fewer than 4 octets"))?;
        *o = part
            .parse::<u8>()
            .map_err(|_| format!("{what} address `{addr}`: octet `{part}` is not 0..255"))?;
    }
    if parts.next().is_some() {
        return Err(format!("{what} address `{addr}` has more than 4 octets"));
    }
    let len: u8 = len
        .parse()
        .ok()
        .filter(|l| *l <= 32)
        .ok_or_else(|| format!("{what} prefix length `{len}` is not 0..32"))?;
    Ok(Prefix::v4(octets, len))
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
