//! Names the rule language accepts for numbers: protocols, TCP flags, DSCP, ethertypes.

/// IP protocol numbers by name.
const PROTOCOLS: &[(&str, u8)] = &[
    ("hopopt", 0),
    ("icmp", 1),
    ("igmp", 2),
    ("ipip", 4),
    ("ipv4", 4),
    ("tcp", 6),
    ("egp", 8),
    ("udp", 17),
    ("ipv6", 41),
    ("ipv6-route", 43),
    ("ipv6-frag", 44),
    ("rsvp", 46),
    ("gre", 47),
    ("esp", 50),
    ("ah", 51),
    ("icmpv6", 58),
    ("ipv6-icmp", 58),
    ("icmp6", 58),
    ("ipv6-nonxt", 59),
    ("ipv6-opts", 60),
    ("eigrp", 88),
    ("ospf", 89),
    ("pim", 103),
    ("vrrp", 112),
    ("l2tp", 115),
    ("sctp", 132),
    ("udplite", 136),
];

/// The protocol number of `name` (case-insensitive).
pub(crate) fn protocol(name: &str) -> Option<u8> {
    PROTOCOLS
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|&(_, v)| v)
}

/// A display name for a protocol number.
pub(crate) fn protocol_name(num: u8) -> Option<&'static str> {
    match num {
        1 => Some("icmp"),
        6 => Some("tcp"),
        17 => Some("udp"),
        58 => Some("icmpv6"),
        _ => PROTOCOLS.iter().find(|&&(_, v)| v == num).map(|&(n, _)| n),
    }
}

/// A protocol's display name, or its number when it has none.
pub(crate) fn proto_label(num: u8) -> String {
    protocol_name(num).map_or_else(|| num.to_string(), str::to_owned)
}

/// Protocols whose keys carry ports: the frame parser reads ports of TCP and
/// UDP only, so a port match on any other protocol could never match a frame.
pub(crate) const fn has_ports(proto: u8) -> bool {
    matches!(proto, 6 | 17)
}

/// ICMP or ICMPv6.
pub(crate) const fn is_icmp(proto: u8) -> bool {
    matches!(proto, 1 | 58)
}

/// TCP flag bits by name.
pub(crate) const TCP_FLAGS: &[(&str, u16)] = &[
    ("fin", 0x001),
    ("syn", 0x002),
    ("rst", 0x004),
    ("psh", 0x008),
    ("ack", 0x010),
    ("urg", 0x020),
    ("ece", 0x040),
    ("cwr", 0x080),
    ("ns", 0x100),
    ("ae", 0x100),
];

/// Parses `"syn,!ack"` into (value, mask).
pub(crate) fn tcp_flags(text: &str) -> Result<(u16, u16), String> {
    let mut value = 0u16;
    let mut mask = 0u16;
    for part in text.split(',') {
        let part = part.trim();
        let (neg, name) = match part.strip_prefix('!') {
            Some(rest) => (true, rest.trim()),
            None => (false, part),
        };
        if name.is_empty() {
            return Err(format!("tcp_flags \"{text}\" has an empty flag name"));
        }
        let Some(&(_, bit)) = TCP_FLAGS.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)) else {
            return Err(format!(
                "unknown TCP flag \"{name}\" (known: fin, syn, rst, psh, ack, urg, ece, cwr, ns)"
            ));
        };
        if mask & bit != 0 {
            return Err(format!("tcp_flags \"{text}\" names {name} twice"));
        }
        mask |= bit;
        if !neg {
            value |= bit;
        }
    }
    Ok((value, mask))
}

/// Formats TCP flags set in `flags` as `syn,ack`.
pub(crate) fn tcp_flags_names(flags: u16) -> String {
    let mut out = String::new();
    for &(name, bit) in TCP_FLAGS.iter().filter(|(n, _)| *n != "ae") {
        if flags & bit != 0 {
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(name);
        }
    }
    out
}

/// DSCP code points by name: `ef`, `csN`, `afXY`, `be`/`default`.
pub(crate) fn dscp(name: &str) -> Option<u8> {
    let n = name.to_ascii_lowercase();
    match n.as_str() {
        "ef" => return Some(46),
        "be" | "default" => return Some(0),
        "va" | "voice-admit" => return Some(44),
        _ => {}
    }
    if let Some(x) = n.strip_prefix("cs") {
        return x.parse::<u8>().ok().filter(|&x| x <= 7).map(|x| x * 8);
    }
    if let Some(xy) = n.strip_prefix("af") {
        let b = xy.as_bytes();
        if b.len() == 2 && (b'1'..=b'4').contains(&b[0]) && (b'1'..=b'3').contains(&b[1]) {
            return Some((b[0] - b'0') * 8 + (b[1] - b'0') * 2);
        }
    }
    None
}

/// Ethertypes by name.
pub(crate) fn ethertype(name: &str) -> Option<u16> {
    match name.to_ascii_lowercase().as_str() {
        "ipv4" | "ip" => Some(0x0800),
        "arp" => Some(0x0806),
        "ipv6" => Some(0x86dd),
        "lldp" => Some(0x88cc),
        "mpls" => Some(0x8847),
        "pppoe" => Some(0x8864),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_value_mask() {
        assert_eq!(tcp_flags("syn,!ack"), Ok((0x002, 0x012)));
        assert!(tcp_flags("syn,!syn").is_err());
        assert!(tcp_flags("sin").is_err());
        assert_eq!(tcp_flags_names(0x012), "syn,ack");
    }

    #[test]
    fn dscp_names() {
        assert_eq!(dscp("EF"), Some(46));
        assert_eq!(dscp("af41"), Some(34));
        assert_eq!(dscp("cs6"), Some(48));
        assert_eq!(dscp("af51"), None);
    }

    #[test]
    fn protocol_names() {
        assert_eq!(protocol("TCP"), Some(6));
        assert_eq!(protocol_name(58), Some("icmpv6"));
        assert_eq!(protocol("tcpp"), None);
    }
}
