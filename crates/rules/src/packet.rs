//! Concrete packets for `[[expect]]` vectors and `palisade explain`: a
//! small builder, the one-line packet syntax, and its inverse.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use palisade_classify::{IpFamily, Prefix};
use palisade_packet::{FlowKey, FlowState, FlowStates, FragmentState, Layer, ParseStatus, Present};

use crate::names::{self, proto_label};

/// Parses an IPv4 or IPv6 address into key encoding.
pub(crate) fn parse_addr(text: &str) -> Result<(IpFamily, u128), String> {
    match text.parse::<IpAddr>() {
        Ok(IpAddr::V4(a)) => Ok((IpFamily::V4, u32::from(a) as u128)),
        Ok(IpAddr::V6(a)) => Ok((IpFamily::V6, u128::from(a))),
        Err(_) => Err(format!("\"{text}\" is not an IPv4 or IPv6 address")),
    }
}

/// Parses `addr` or `addr/len`; host bits set or a length beyond the family's width are errors.
pub(crate) fn parse_prefix(text: &str) -> Result<Prefix, String> {
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (text, None),
    };
    let (family, value) = parse_addr(addr.trim())?;
    let bits = family.bits();
    let len = match len {
        None => bits,
        Some(l) => {
            let l = l.trim();
            let n: u32 = l
                .parse()
                .map_err(|_| format!("prefix \"{text}\": length \"{l}\" is not a number"))?;
            if n > bits as u32 {
                return Err(format!(
                    "prefix \"{text}\": length {n} is beyond {bits} for {}",
                    family_name(family)
                ));
            }
            n as u8
        }
    };
    let mask = Prefix::mask_of(family, len);
    if value & !mask != 0 {
        let net = value & mask;
        return Err(format!(
            "prefix \"{text}\" has host bits set (did you mean {}/{len}?)",
            format_addr(family, net)
        ));
    }
    Ok(Prefix {
        family,
        addr: value,
        len,
    })
}

/// `"IPv4"` or `"IPv6"`.
pub(crate) const fn family_name(f: IpFamily) -> &'static str {
    match f {
        IpFamily::V4 => "IPv4",
        IpFamily::V6 => "IPv6",
    }
}

/// Formats an address in key encoding.
pub(crate) fn format_addr(family: IpFamily, value: u128) -> String {
    match family {
        IpFamily::V4 => Ipv4Addr::from(value as u32).to_string(),
        IpFamily::V6 => Ipv6Addr::from(value).to_string(),
    }
}

/// The port a packet gets when its `src_port` or `dst_port` is not given:
/// the first ephemeral port (RFC 6335).
pub(crate) const DEFAULT_PORT: u16 = 49152;

/// A concrete packet, field by field, before it becomes a [`FlowKey`].
#[derive(Clone, Debug, Default)]
pub(crate) struct PacketBuilder {
    pub proto: Option<u8>,
    pub src: Option<(IpFamily, u128)>,
    pub dst: Option<(IpFamily, u128)>,
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
    pub icmp_type: Option<u8>,
    pub icmp_code: Option<u8>,
    pub tcp_flags: Option<u16>,
    pub vlan: Option<u16>,
    pub fragment: Option<FragmentState>,
    pub dscp: Option<u8>,
    pub ethertype: Option<u16>,
    pub malformed: bool,
    /// The flow state; when not given, the state with no flow entry.
    pub state: Option<FlowState>,
}

impl PacketBuilder {
    /// Builds the key; the error names the inconsistency.
    ///
    /// Defaults: TCP flags `syn` for TCP, ICMP code 0, echo request when
    /// no ICMP type is given, port 49152 when a port is not given, the
    /// unspecified address (`0.0.0.0` / `::`) when an address is not given,
    /// and the state of a frame whose flow has no entry
    /// ([`FlowState::without_entry`]: `new` or `invalid`) when no state is given.
    pub fn build(&self) -> Result<FlowKey, String> {
        let k = self.build_stateless()?;
        let Some(state) = self.state else {
            return Ok(k.with_flow_state(FlowState::without_entry(&k)));
        };
        if !FlowStates::possible(&k).contains(state) {
            let could: Vec<&str> = FlowStates::possible(&k).iter().map(FlowState::name).collect();
            let why = match could.as_slice() {
                [] => "it is not IP, and flows are IP".to_owned(),
                _ => format!("such a packet can only be {}", could.join(" or ")),
            };
            return Err(format!("a packet in state {}: {why}", state.name()));
        }
        Ok(k.with_flow_state(state))
    }

    fn build_stateless(&self) -> Result<FlowKey, String> {
        let mut k = FlowKey::new();
        let family = match (self.src, self.dst) {
            (Some((fs, s)), Some((fd, d))) => {
                if fs != fd {
                    return Err(format!(
                        "src is {} but dst is {}",
                        family_name(fs),
                        family_name(fd)
                    ));
                }
                k = match fs {
                    IpFamily::V4 => k.with_ipv4((s as u32).to_be_bytes(), (d as u32).to_be_bytes()),
                    IpFamily::V6 => k.with_ipv6(s, d),
                };
                k.present.0 &= !Present::DSCP;
                Some(fs)
            }
            (None, None) => None,
            // One address given: the other is the unspecified address of its family.
            (Some((f, a)), None) => {
                return PacketBuilder {
                    dst: Some((f, 0)),
                    src: Some((f, a)),
                    ..self.clone()
                }
                .build_stateless()
            }
            (None, Some((f, a))) => {
                return PacketBuilder {
                    src: Some((f, 0)),
                    dst: Some((f, a)),
                    ..self.clone()
                }
                .build_stateless()
            }
        };
        let Some(family) = family else {
            let ip_only = self.ethertype == Some(0x0800)
                || self.proto.is_some()
                || self.src_port.is_some()
                || self.dst_port.is_some()
                || self.icmp_type.is_some()
                || self.icmp_code.is_some()
                || self.tcp_flags.is_some()
                || self.fragment.is_some()
                || self.dscp.is_some();
            if ip_only {
                // No addresses given: IPv4 0.0.0.0 -> 0.0.0.0.
                let any4 = (IpFamily::V4, 0);
                return PacketBuilder {
                    src: Some(any4),
                    dst: Some(any4),
                    ..self.clone()
                }
                .build_stateless();
            }
            let et = self.ethertype.unwrap_or(0x0806);
            if et == 0x86dd {
                let any6 = (IpFamily::V6, 0);
                return PacketBuilder {
                    src: Some(any6),
                    dst: Some(any6),
                    ..self.clone()
                }
                .build_stateless();
            }
            k.ethertype = et;
            k.present.0 |= Present::ETHERTYPE;
            if let Some(v) = self.vlan {
                k = k.with_vlan(v);
            }
            if self.malformed {
                k.status = ParseStatus::Truncated(Layer::Ethernet);
            }
            return Ok(k);
        };
        if let Some(et) = self.ethertype {
            if et != k.ethertype {
                return Err(format!(
                    "ethertype 0x{et:04x} does not carry {}",
                    family_name(family)
                ));
            }
        }
        k = k.with_dscp(self.dscp.unwrap_or(0));
        let mut proto = self
            .proto
            .unwrap_or(match (self.icmp_type, self.src_port, self.dst_port) {
                (Some(_), _, _) => 1,
                _ => 6,
            });
        if proto == 1 && family == IpFamily::V6 {
            proto = 58;
        }
        k = k.with_proto(proto);
        let frag = self.fragment.unwrap_or(FragmentState::None);
        k = match frag {
            FragmentState::None => k,
            FragmentState::First => k.with_fragment(FragmentState::First, 0, true),
            FragmentState::NonFirst => k.with_fragment(FragmentState::NonFirst, 1480, true),
        };
        let has_l4 = frag != FragmentState::NonFirst;
        let ports_given = self.src_port.is_some() || self.dst_port.is_some();
        let icmp_given = self.icmp_type.is_some() || self.icmp_code.is_some();
        if ports_given && !names::has_ports(proto) {
            return Err(format!(
                "ports given but proto {} carries none",
                proto_label(proto)
            ));
        }
        if icmp_given && !names::is_icmp(proto) {
            return Err(format!(
                "icmp_type/icmp_code given but proto is {}",
                proto_label(proto)
            ));
        }
        if self.tcp_flags.is_some() && proto != 6 {
            return Err(format!("tcp_flags given but proto is {}", proto_label(proto)));
        }
        if !has_l4 && (ports_given || icmp_given || self.tcp_flags.is_some()) {
            return Err("a non-first fragment carries no ports, ICMP type or TCP flags".into());
        }
        if has_l4 {
            if names::has_ports(proto) {
                k = k.with_ports(
                    self.src_port.unwrap_or(DEFAULT_PORT),
                    self.dst_port.unwrap_or(DEFAULT_PORT),
                );
            }
            if names::is_icmp(proto) {
                let echo = if family == IpFamily::V6 { 128 } else { 8 };
                k = k.with_icmp(self.icmp_type.unwrap_or(echo), self.icmp_code.unwrap_or(0));
            }
            if proto == 6 {
                k = k.with_tcp_flags(self.tcp_flags.unwrap_or(0x002));
            }
        }
        if let Some(v) = self.vlan {
            k = k.with_vlan(v);
        }
        if self.malformed {
            k.status = ParseStatus::Truncated(match family {
                IpFamily::V4 => Layer::Ipv4,
                IpFamily::V6 => Layer::Ipv6,
            });
        }
        Ok(k)
    }
}

/// Parses the one-line packet syntax of `palisade explain`:
///
/// `PROTO SRC[:PORT] -> DST[:PORT] [type T] [code C] [flags F] [vlan V] [fragment first|non-first] [dscp D] [state S] [malformed]`
///
/// and, for frames without an IP header (every packet an `[[expect]]` can
/// describe): `arp [SRC -> DST] [vlan V] [malformed]` (the IPv4 addresses an
/// ARP frame asks about; rules never match them, an ARP frame has no IP
/// header) and `ethertype N [vlan V] [malformed]` (N a number, `0x` hex, or
/// a name: arp, lldp, mpls, pppoe). `malformed` makes the frame one that
/// cannot be parsed far enough (it gets the rule set's `malformed` verdict).
///
/// IPv6 addresses with a port are written `[2001:db8::1]:53`. `icmp` with
/// IPv6 addresses means ICMPv6. A TCP packet without `flags` is a SYN; an
/// ICMP packet without `type` is an echo request; a TCP/UDP endpoint without
/// a port uses port 49152. A packet without `state` is in the state it has
/// when its flow has no entry: `new` if it may open one, else `invalid`.
///
/// ```
/// let k = palisade_rules::parse_packet_spec("tcp 10.0.0.1:1234 -> 192.0.2.1:443 flags syn,ack").unwrap();
/// assert_eq!((k.l4_proto, k.src_port, k.dst_port, k.tcp_flags), (6, 1234, 443, 0x012));
/// let k = palisade_rules::parse_packet_spec("udp [2001:db8::1]:53 -> [2001:db8::2]:53").unwrap();
/// assert_eq!(k.ip_version, 6);
/// let k = palisade_rules::parse_packet_spec("icmp 10.0.0.1 -> 10.0.0.2 type 8 code 0").unwrap();
/// assert_eq!(k.icmp(), Some((8, 0)));
/// let k = palisade_rules::parse_packet_spec("tcp 192.0.2.1:443 -> 10.0.0.1:1234 flags ack state established").unwrap();
/// assert_eq!(k.flow_state, palisade_packet::FlowState::Established);
/// assert!(palisade_rules::parse_packet_spec("tcp 10.0.0.1:1 -> 10.0.0.2:2 flags ack state new").is_err());
/// assert!(palisade_rules::parse_packet_spec("tcp 10.0.0.1 -> ").is_err());
/// let arp = palisade_rules::parse_packet_spec("arp 10.0.0.1 -> 10.0.0.2").unwrap();
/// assert_eq!((arp.ethertype, arp.ip_family()), (0x0806, None));
/// let lldp = palisade_rules::parse_packet_spec("ethertype 0x88cc vlan 20").unwrap();
/// assert_eq!((lldp.ethertype, lldp.outer_vlan), (0x88cc, 20));
/// let bad = palisade_rules::parse_packet_spec("udp 10.0.0.1 -> 10.0.0.2:53 malformed").unwrap();
/// assert!(!bad.status.is_ok());
/// ```
pub fn parse_packet_spec(text: &str) -> Result<FlowKey, String> {
    let all: Vec<&str> = text.split_whitespace().collect();
    // `malformed` is a word without a value, anywhere after the packet.
    let malformed = all.iter().any(|w| w.eq_ignore_ascii_case("malformed"));
    let words: Vec<&str> = all
        .iter()
        .copied()
        .filter(|w| !w.eq_ignore_ascii_case("malformed"))
        .collect();
    if let Some(first) = words.first() {
        let first = first.to_ascii_lowercase();
        if first == "arp" || first == "ethertype" || (words.is_empty() && malformed) {
            return parse_l2_spec(text, &words, malformed);
        }
    } else if malformed {
        return parse_l2_spec(text, &words, malformed);
    }
    // The builder marks it malformed, so its flow state is the one a malformed frame has.
    parse_ip_spec(text, &words, malformed)
}

/// `arp [SRC -> DST] [vlan V]`, `ethertype N [vlan V]`, or nothing (with `malformed`).
fn parse_l2_spec(text: &str, words: &[&str], malformed: bool) -> Result<FlowKey, String> {
    let usage = || {
        format!(
            "packet \"{text}\": expected `arp [SRC -> DST] [vlan V] [malformed]` or `ethertype N [vlan V] [malformed]`"
        )
    };
    let mut b = PacketBuilder {
        malformed,
        ..PacketBuilder::default()
    };
    let rest = match words {
        [] => &[][..],
        [w, rest @ ..] if w.eq_ignore_ascii_case("arp") => {
            b.ethertype = Some(0x0806);
            match rest {
                [src, "->", dst, rest @ ..] => {
                    for a in [src, dst] {
                        match parse_addr(a) {
                            Ok((IpFamily::V4, _)) => {}
                            _ => {
                                return Err(format!(
                                    "packet \"{text}\": ARP asks about IPv4 addresses, not \"{a}\""
                                ))
                            }
                        }
                    }
                    rest
                }
                rest => rest,
            }
        }
        [w, n, rest @ ..] if w.eq_ignore_ascii_case("ethertype") => {
            let parsed = match n.strip_prefix("0x").or_else(|| n.strip_prefix("0X")) {
                Some(hex) => u16::from_str_radix(hex, 16).ok(),
                None => n.parse::<u16>().ok().or_else(|| names::ethertype(n)),
            };
            let et = parsed.ok_or_else(|| {
                format!("packet \"{text}\": ethertype \"{n}\" is not a number 0-0xffff or a name (arp, lldp, mpls, pppoe)")
            })?;
            if matches!(et, 0x0800 | 0x86dd) {
                return Err(format!(
                    "packet \"{text}\": ethertype 0x{et:04x} carries IP: write the packet as `PROTO SRC -> DST`"
                ));
            }
            b.ethertype = Some(et);
            rest
        }
        _ => return Err(usage()),
    };
    match rest {
        [] => {}
        [v, n] if v.eq_ignore_ascii_case("vlan") => {
            let vid = n
                .parse::<u16>()
                .ok()
                .filter(|&n| n <= 4094)
                .ok_or_else(|| format!("packet \"{text}\": vlan \"{n}\" is not a number 0-4094"))?;
            b.vlan = Some(vid);
        }
        _ => return Err(usage()),
    }
    b.build().map_err(|e| format!("packet \"{text}\": {e}"))
}

/// `PROTO SRC[:PORT] -> DST[:PORT] [...]` (see [`parse_packet_spec`]).
fn parse_ip_spec(text: &str, words: &[&str], malformed: bool) -> Result<FlowKey, String> {
    let [proto, src, arrow, dst, rest @ ..] = words else {
        return Err(format!(
            "packet \"{text}\": expected `PROTO SRC[:PORT] -> DST[:PORT] [type T] [code C] [flags F]`"
        ));
    };
    if *arrow != "->" {
        return Err(format!(
            "packet \"{text}\": expected `->` after the source, found \"{arrow}\""
        ));
    }
    let mut b = PacketBuilder {
        proto: Some(parse_proto_word(proto)?),
        malformed,
        ..PacketBuilder::default()
    };
    let (s, sp) = parse_endpoint(src)?;
    let (d, dp) = parse_endpoint(dst)?;
    b.src = Some(s);
    b.dst = Some(d);
    b.src_port = sp;
    b.dst_port = dp;
    let mut it = rest.iter();
    while let Some(&word) = it.next() {
        let Some(&arg) = it.next() else {
            return Err(format!("packet \"{text}\": `{word}` needs a value"));
        };
        let num = |max: u32| -> Result<u32, String> {
            arg.parse::<u32>()
                .ok()
                .filter(|&n| n <= max)
                .ok_or_else(|| format!("packet \"{text}\": {word} \"{arg}\" is not a number 0-{max}"))
        };
        match word.to_ascii_lowercase().as_str() {
            "type" => b.icmp_type = Some(num(255)? as u8),
            "code" => b.icmp_code = Some(num(255)? as u8),
            "flags" => b.tcp_flags = Some(names::tcp_flags(arg)?.0),
            "vlan" => b.vlan = Some(num(4094)? as u16),
            "dscp" => {
                b.dscp = Some(match names::dscp(arg) {
                    Some(d) => d,
                    None => num(63)? as u8,
                })
            }
            "fragment" | "frag" => b.fragment = Some(parse_fragment_state(arg)?),
            "state" => {
                b.state = Some(FlowState::from_name(arg).ok_or_else(|| {
                    format!(
                        "packet \"{text}\": state \"{arg}\" is not one of new, established, related, invalid"
                    )
                })?)
            }
            _ => {
                return Err(format!(
                    "packet \"{text}\": unknown word \"{word}\" (expected type, code, flags, vlan, dscp, fragment or state)"
                ))
            }
        }
    }
    b.build().map_err(|e| format!("packet \"{text}\": {e}"))
}

/// `none`, `first` or `non-first` as a fragment state.
pub(crate) fn parse_fragment_state(text: &str) -> Result<FragmentState, String> {
    match text {
        "none" => Ok(FragmentState::None),
        "first" => Ok(FragmentState::First),
        "non-first" => Ok(FragmentState::NonFirst),
        _ => Err(format!(
            "fragment \"{text}\" is not one of \"none\", \"first\", \"non-first\""
        )),
    }
}

fn parse_proto_word(word: &str) -> Result<u8, String> {
    if let Some(p) = names::protocol(word) {
        return Ok(p);
    }
    word.parse::<u8>()
        .map_err(|_| format!("unknown protocol \"{word}\" (a name like tcp, udp, icmp, or a number 0-255)"))
}

fn parse_endpoint(word: &str) -> Result<((IpFamily, u128), Option<u16>), String> {
    let port = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| format!("port \"{p}\" in \"{word}\" is not a number 0-65535"))
    };
    if let Some(rest) = word.strip_prefix('[') {
        let Some((addr, after)) = rest.split_once(']') else {
            return Err(format!("\"{word}\": missing `]`"));
        };
        let a = parse_addr(addr)?;
        return match after {
            "" => Ok((a, None)),
            _ => match after.strip_prefix(':') {
                Some(p) => Ok((a, Some(port(p)?))),
                None => Err(format!("\"{word}\": expected `:PORT` after `]`")),
            },
        };
    }
    if let Ok(a) = parse_addr(word) {
        return Ok((a, None));
    }
    match word.rsplit_once(':') {
        Some((addr, p)) if !addr.contains(':') => Ok((parse_addr(addr)?, Some(port(p)?))),
        _ => Err(format!(
            "\"{word}\" is not an address, `addr:port` or `[v6addr]:port`"
        )),
    }
}

/// Formats a key in the syntax [`parse_packet_spec`] reads (plus `vlan`).
///
/// ```
/// let k = palisade_rules::parse_packet_spec("udp [2001:db8::1]:53 -> [2001:db8::2]:53").unwrap();
/// assert_eq!(palisade_rules::format_packet(&k), "udp [2001:db8::1]:53 -> [2001:db8::2]:53");
/// ```
pub fn format_packet(k: &FlowKey) -> String {
    let family = match k.ip_family() {
        Some(4) => IpFamily::V4,
        Some(6) => IpFamily::V6,
        _ => {
            let mut s = match k.ethertype {
                0x0806 => "arp".to_owned(),
                et => format!("ethertype 0x{et:04x}"),
            };
            if k.vlan_count > 0 {
                s.push_str(&format!(" vlan {}", k.outer_vlan));
            }
            if !k.status.is_ok() {
                s.push_str(" malformed");
            }
            return s;
        }
    };
    let proto = if k.present.has(Present::L4_PROTO) {
        proto_label(k.l4_proto)
    } else {
        "ip".to_owned()
    };
    let ep = |addr: u128, port: Option<u16>| match (family, port) {
        (IpFamily::V4, Some(p)) => format!("{}:{p}", format_addr(family, addr)),
        (IpFamily::V6, Some(p)) => format!("[{}]:{p}", format_addr(family, addr)),
        (_, None) => format_addr(family, addr),
    };
    let ports = k.ports();
    let mut s = format!(
        "{proto} {} -> {}",
        ep(k.src_ip, ports.map(|p| p.0)),
        ep(k.dst_ip, ports.map(|p| p.1))
    );
    if let Some((t, c)) = k.icmp() {
        s.push_str(&format!(" type {t} code {c}"));
    }
    if k.present.has(Present::TCP_FLAGS) && k.tcp_flags != 0x002 {
        s.push_str(&format!(" flags {}", names::tcp_flags_names(k.tcp_flags)));
    }
    if k.vlan_count > 0 {
        s.push_str(&format!(" vlan {}", k.outer_vlan));
    }
    match k.fragment {
        FragmentState::None => {}
        FragmentState::First => s.push_str(" fragment first"),
        FragmentState::NonFirst => s.push_str(" fragment non-first"),
    }
    if k.dscp != 0 {
        s.push_str(&format!(" dscp {}", k.dscp));
    }
    if k.flow_state != FlowState::Untracked && k.flow_state != FlowState::without_entry(k) {
        s.push_str(&format!(" state {}", k.flow_state.name()));
    }
    if !k.status.is_ok() {
        s.push_str(" malformed");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        assert_eq!(parse_prefix("10.0.0.0/8").unwrap(), Prefix::v4([10, 0, 0, 0], 8));
        assert_eq!(parse_prefix("10.0.0.1").unwrap().len, 32);
        assert!(parse_prefix("10.0.0.1/24")
            .unwrap_err()
            .contains("did you mean 10.0.0.0/24"));
        assert!(parse_prefix("10.0.0.0/33").unwrap_err().contains("beyond 32"));
        assert!(parse_prefix("2001:db8::/129").unwrap_err().contains("beyond 128"));
        assert_eq!(parse_prefix("2001:db8::/32").unwrap().family, IpFamily::V6);
        assert!(parse_prefix("10.0.0/8").is_err());
    }

    #[test]
    fn packet_specs() {
        let k = parse_packet_spec("icmp 2001:db8::1 -> 2001:db8::2").unwrap();
        assert_eq!((k.l4_proto, k.icmp()), (58, Some((128, 0))));
        let k = parse_packet_spec("tcp 10.0.0.1:1 -> 10.0.0.2:2 vlan 20 fragment first").unwrap();
        assert_eq!((k.outer_vlan, k.fragment), (20, FragmentState::First));
        assert!(parse_packet_spec("tcp 10.0.0.1:1 -> 2001:db8::2").is_err());
        assert!(parse_packet_spec("icmp 10.0.0.1:1 -> 10.0.0.2").is_err());
        assert!(parse_packet_spec("udp 10.0.0.1 -> 10.0.0.2 flags syn").is_err());
        assert!(parse_packet_spec("tcp 10.0.0.1:99999 -> 10.0.0.2:1").is_err());
        assert!(parse_packet_spec("tcp 10.0.0.1 => 10.0.0.2").is_err());
        assert!(parse_packet_spec("tcp 10.0.0.1 -> 10.0.0.2 flags").is_err());
        let k = parse_packet_spec("udp 10.0.0.1 -> 10.0.0.2 fragment non-first").unwrap();
        assert_eq!(k.ports(), None);
    }

    #[test]
    fn format_roundtrip() {
        for s in [
            "tcp 10.0.0.1:1234 -> 192.0.2.1:443",
            "tcp 10.0.0.1:1234 -> 192.0.2.1:443 flags syn,ack",
            "icmp 10.0.0.1 -> 10.0.0.2 type 3 code 4",
            "icmpv6 2001:db8::1 -> 2001:db8::2 type 128 code 0",
            "udp [2001:db8::1]:53 -> [2001:db8::2]:53 vlan 20",
            "arp",
            "arp vlan 20",
            "ethertype 0x88cc",
            "ethertype 0x88cc vlan 20 malformed",
            "udp 10.0.0.1:53 -> 10.0.0.2:53 malformed",
            "tcp 192.0.2.1:443 -> 10.0.0.1:1234 flags ack state established",
            "icmp 192.0.2.1 -> 10.0.0.1 type 3 code 3 state related",
            "udp 192.0.2.1:53 -> 10.0.0.1:5353 state established",
        ] {
            let k = parse_packet_spec(s).unwrap();
            assert_eq!(format_packet(&k), s);
            assert_eq!(parse_packet_spec(&format_packet(&k)).unwrap(), k);
        }
    }
}
