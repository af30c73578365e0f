//! Text forms of a key: the `status` vocabulary and the CSV row of `palisade inspect`.
//!
//! Both are `core::fmt` only (no allocation), so the CLI, tests and any
//! embedding tool print keys the same way.

use core::fmt;
use core::net::{Ipv4Addr, Ipv6Addr};

use crate::key::{FlowKey, FragmentState, ParseStatus, Present};

/// The CSV header of `palisade inspect`, without a line end.
///
/// The columns are those of the tshark truth files in `../shared/pcaps`
/// plus `status`.
pub const CSV_HEADER: &str = "frame,outer_vlan,inner_vlan,ethertype,ip_version,ip_src,ip_dst,l4_proto,\
is_fragment,frag_offset,more_fragments,src_port,dst_port,icmp_type,icmp_code,tcp_flags,status";

/// `ok`, `truncated:LAYER` or `malformed:LAYER`, with the names of
/// [`crate::Layer::name`].
///
/// ```
/// use palisade_packet::{Layer, ParseStatus};
/// assert_eq!(ParseStatus::Ok.to_string(), "ok");
/// assert_eq!(ParseStatus::Truncated(Layer::Tcp).to_string(), "truncated:tcp");
/// assert_eq!(ParseStatus::Malformed(Layer::Ipv6Extension).to_string(), "malformed:ipv6-ext");
/// ```
impl fmt::Display for ParseStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseStatus::Ok => f.write_str("ok"),
            ParseStatus::Truncated(l) => write!(f, "truncated:{}", l.name()),
            ParseStatus::Malformed(l) => write!(f, "malformed:{}", l.name()),
        }
    }
}

/// Formats a key as one `palisade inspect` CSV row (without a line end).
///
/// Value conventions follow the truth files: an empty cell when a field is
/// absent, ethertype and TCP flags as 4-digit lowercase hex (`0x0800`,
/// `0x0012`), IPv6 addresses in RFC 5952 form (as tshark prints them),
/// fragment offset in bytes, flags as `0`/`1`. The fragment columns are
/// filled whenever the IP addresses are.
///
/// ```
/// use palisade_packet::{CsvRow, FlowKey};
/// let k = FlowKey::new().with_ipv4([10, 0, 0, 1], [10, 0, 0, 2]).with_proto(6).with_ports(1, 443);
/// assert_eq!(CsvRow { frame: 7, key: &k }.to_string(), "7,,,0x0800,4,10.0.0.1,10.0.0.2,6,0,0,0,1,443,,,,ok");
/// ```
#[derive(Clone, Copy, Debug)]
pub struct CsvRow<'a> {
    /// 1-based frame number, the first column.
    pub frame: u64,
    /// The key to print.
    pub key: &'a FlowKey,
}

struct Opt<T>(bool, T);

impl<T: fmt::Display> fmt::Display for Opt<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 {
            self.1.fmt(f)
        } else {
            Ok(())
        }
    }
}

struct Hex4(u16);

impl fmt::Display for Hex4 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:04x}", self.0)
    }
}

struct Addr(u8, u128);

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 4 {
            Ipv4Addr::from(self.1 as u32).fmt(f)
        } else {
            Ipv6Addr::from(self.1).fmt(f)
        }
    }
}

impl fmt::Display for CsvRow<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let k = self.key;
        let p = k.present;
        let addrs = p.has(Present::ADDRS);
        let ports = p.has(Present::PORTS);
        let icmp = p.has(Present::ICMP);
        write!(
            f,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            self.frame,
            Opt(k.vlan_count >= 1, k.outer_vlan),
            Opt(k.vlan_count >= 2, k.inner_vlan),
            Opt(p.has(Present::ETHERTYPE), Hex4(k.ethertype)),
            Opt(p.has(Present::IP_VERSION), k.ip_version),
            Opt(addrs, Addr(k.ip_version, k.src_ip)),
            Opt(addrs, Addr(k.ip_version, k.dst_ip)),
            Opt(p.has(Present::L4_PROTO), k.l4_proto),
            Opt(addrs, u8::from(k.fragment != FragmentState::None)),
            Opt(addrs, k.frag_offset),
            Opt(addrs, u8::from(k.more_fragments)),
            Opt(ports, k.src_port),
            Opt(ports, k.dst_port),
            Opt(icmp, k.icmp_type),
            Opt(icmp, k.icmp_code),
            Opt(p.has(Present::TCP_FLAGS), Hex4(k.tcp_flags)),
            k.status,
        )
    }
}
