//! A frame's flow identity: family, protocol, both addresses, both ports
//! (the ICMP query identifier for ICMP), in one canonical order so that a
//! frame and its reply find the same entry.

use palisade_packet::{icmp_message, FlowKey, FlowState, FragmentState, IcmpKind, Present};

/// A flow's key in canonical order: endpoint `a` is the lower of the two
/// (address, port) pairs. `from_b` says which way the frame went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowId {
    pub(crate) a: u128,
    pub(crate) b: u128,
    /// `port_a << 16 | port_b`.
    pub(crate) ports: u32,
    /// Protocol, the IPv6 bit and the "valid" bit, as the table's meta word holds them.
    pub(crate) key_meta: u32,
    /// The frame went from `b` to `a`.
    pub(crate) from_b: bool,
}

/// Bits of an entry's meta word that belong to its key.
pub(crate) const META_PROTO: u32 = 0xff;
pub(crate) const META_V6: u32 = 1 << 8;
pub(crate) const META_VALID: u32 = 1 << 9;
pub(crate) const META_KEY: u32 = META_PROTO | META_V6 | META_VALID;

impl FlowId {
    /// The id of a frame going `src` -> `dst`.
    #[inline]
    pub(crate) fn new(v6: bool, proto: u8, src: u128, dst: u128, sport: u16, dport: u16) -> FlowId {
        // Without a branch: which way a frame goes is a coin toss to a predictor.
        // (A plain `if` here was compiled into a branch.)
        use std::hint::select_unpredictable as pick;
        let ports = (sport as u32) << 16 | dport as u32;
        let key_meta = proto as u32 | if v6 { META_V6 } else { 0 } | META_VALID;
        if (src | dst) >> 32 == 0 {
            // Both addresses fit 32 bits (every IPv4 flow): the same order,
            // compared and picked in one register each instead of two.
            let (s, d) = (src as u32, dst as u32);
            let from_b = (s > d) | ((s == d) & (sport > dport));
            return FlowId {
                a: pick(from_b, d, s) as u128,
                b: pick(from_b, s, d) as u128,
                ports: pick(from_b, ports.rotate_left(16), ports),
                key_meta,
                from_b,
            };
        }
        let from_b = (src > dst) | ((src == dst) & (sport > dport));
        FlowId {
            a: pick(from_b, dst, src),
            b: pick(from_b, src, dst),
            ports: pick(from_b, ports.rotate_left(16), ports),
            key_meta,
            from_b,
        }
    }

    /// The protocol.
    pub fn proto(&self) -> u8 {
        (self.key_meta & META_PROTO) as u8
    }

    /// 6 for IPv6, else 4.
    pub fn ip_version(&self) -> u8 {
        if self.key_meta & META_V6 != 0 {
            6
        } else {
            4
        }
    }

    /// (source, destination, source port, destination port) of a frame going
    /// from `a` (`reverse` false) or from `b`.
    pub fn endpoints(&self, from_b: bool) -> (u128, u128, u16, u16) {
        let (pa, pb) = ((self.ports >> 16) as u16, self.ports as u16);
        match from_b {
            false => (self.a, self.b, pa, pb),
            true => (self.b, self.a, pb, pa),
        }
    }

    /// A keyed 64-bit hash (the seed is the table's, random per table, so
    /// flows cannot be chosen to collide).
    #[inline]
    pub(crate) fn hash(&self, seed: &[u64; 4]) -> u64 {
        #[inline(always)]
        fn fold(x: u64, y: u64) -> u64 {
            let p = x as u128 * y as u128;
            (p as u64) ^ ((p >> 64) as u64)
        }
        // Each input word meets a multiply in an operand whose low bits vary
        // (a multiply spreads only upwards), and the folds mix high into low.
        const K: u64 = 0x9e37_79b9_7f4a_7c15;
        let tail = (self.key_meta as u64) << 32 | self.ports as u64;
        if (self.a | self.b) >> 32 == 0 {
            // IPv4 (the common case): both addresses in one multiply, ports and
            // protocol in another, side by side.
            // Each is multiplied by an odd constant with its bits spread (so even a
            // weak seed mixes well), and folded.
            const K2: u64 = 0xd6e8_feb8_6659_fd93;
            let h1 = fold(((self.a as u64) << 32 | self.b as u64) ^ seed[0], K ^ seed[1]);
            let h3 = fold(tail ^ seed[2], K2 ^ seed[3]);
            return h1 ^ h3;
        }
        let h1 = fold((self.a >> 64) as u64 ^ seed[0], self.a as u64 ^ seed[1]);
        let h2 = fold((self.b >> 64) as u64 ^ seed[2], self.b as u64 ^ seed[3]);
        let h3 = fold(tail ^ seed[1].rotate_left(23), K);
        fold(h1 ^ h3, h2 ^ K)
    }
}

/// What a frame is to the flow table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Keyed {
    /// A frame of the flow `FlowId` (which may or may not have an entry);
    /// `opens` says whether it may open one when it has none.
    Flow { id: FlowId, opens: bool },
    /// An ICMP error quoting the datagram `quoted` (as its sender sent it).
    Error { quoted: FlowId },
    /// A frame no flow can be found for: this state, no lookup.
    Fixed(FlowState),
}

/// Finds what `key` (parsed from `frame`) is to the flow table. `frame` is
/// read only for ICMP (the query identifier, an error's quoted header); an
/// empty `frame` makes ICMP queries and errors invalid.
#[inline]
pub(crate) fn keyed(key: &FlowKey, frame: &[u8]) -> Keyed {
    let family = key.ip_family();
    let Some(family) = family else {
        return Keyed::Fixed(FlowState::without_entry(key));
    };
    if !key.status.is_ok() || key.fragment == FragmentState::NonFirst {
        return Keyed::Fixed(FlowState::Invalid);
    }
    let v6 = family == 6;
    let proto = key.l4_proto;
    match proto {
        6 | 17 => {
            if !key.present.has(Present::PORTS) {
                return Keyed::Fixed(FlowState::Invalid);
            }
            let id = FlowId::new(v6, proto, key.src_ip, key.dst_ip, key.src_port, key.dst_port);
            let opens = FlowState::without_entry(key) == FlowState::New;
            Keyed::Flow { id, opens }
        }
        1 | 58 => keyed_icmp(key, frame, v6),
        _ => Keyed::Flow {
            id: FlowId::new(v6, proto, key.src_ip, key.dst_ip, 0, 0),
            opens: true,
        },
    }
}

#[cold]
fn keyed_icmp(key: &FlowKey, frame: &[u8], v6: bool) -> Keyed {
    let proto = key.l4_proto;
    let Some(m) = icmp_message(frame) else {
        return Keyed::Fixed(FlowState::Invalid);
    };
    // The message must be the one the key describes (same family and protocol).
    if (m.ip_version == 6) != v6 || (proto == 58) != v6 {
        return Keyed::Fixed(FlowState::Invalid);
    }
    let flow = |id: u16, opens: bool| Keyed::Flow {
        id: FlowId::new(v6, proto, key.src_ip, key.dst_ip, id, id),
        opens,
    };
    match m.kind {
        IcmpKind::Query { id } => flow(id, true),
        IcmpKind::Reply { id } => flow(id, false),
        IcmpKind::Other => flow(0, true),
        IcmpKind::BadError => Keyed::Fixed(FlowState::Invalid),
        IcmpKind::Error(q) => {
            // An error goes back to the quoted datagram's sender, and quotes a flow it can name.
            match q.ports {
                Some((sp, dp)) if q.src_ip == key.dst_ip => Keyed::Error {
                    quoted: FlowId::new(v6, q.proto, q.src_ip, q.dst_ip, sp, dp),
                },
                _ => Keyed::Fixed(FlowState::Invalid),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An address: 32 bits (an IPv4 one) half the time, else any 128.
    fn address() -> impl proptest::strategy::Strategy<Value = u128> {
        use proptest::prelude::*;
        prop_oneof![any::<u32>().prop_map(u128::from), any::<u128>()]
    }

    proptest::proptest! {
        /// The canonical order is the lower (address, port) pair first,
        /// whether both addresses fit 32 bits (the IPv4 path) or not.
        #[test]
        fn the_lower_endpoint_comes_first(
            v6: bool,
            proto: u8,
            src in address(),
            other in address(),
            same: bool,
            sport: u16,
            other_port: u16,
            same_port: bool,
        ) {
            // Equal addresses and equal ports come up too (the order's ties).
            let dst = if same { src } else { other };
            let dport = if same_port { sport } else { other_port };
            let id = FlowId::new(v6, proto, src, dst, sport, dport);
            let from_b = (src, sport) > (dst, dport);
            let (a, b, ports) = if from_b {
                (dst, src, (dport as u32) << 16 | sport as u32)
            } else {
                (src, dst, (sport as u32) << 16 | dport as u32)
            };
            proptest::prop_assert_eq!(
                (id.a, id.b, id.ports, id.from_b, id.proto(), id.ip_version()),
                (a, b, ports, from_b, proto, if v6 { 6 } else { 4 })
            );
        }
    }

    #[test]
    fn a_frame_and_its_reply_have_one_id() {
        let there = FlowId::new(false, 6, 10, 20, 40000, 443);
        let back = FlowId::new(false, 6, 20, 10, 443, 40000);
        assert!(!there.from_b && back.from_b);
        assert_eq!(
            FlowId {
                from_b: false,
                ..back
            },
            there
        );
        let seed = [1, 2, 3, 4];
        assert_eq!(
            there.hash(&seed),
            FlowId {
                from_b: false,
                ..back
            }
            .hash(&seed)
        );
        assert_eq!(there.endpoints(false), (10, 20, 40000, 443));
        assert_eq!(there.endpoints(true), (20, 10, 443, 40000));
        // Same addresses, other port or protocol: another flow.
        assert_ne!(FlowId::new(false, 17, 10, 20, 40000, 443), there);
        assert_ne!(FlowId::new(true, 6, 10, 20, 40000, 443), there);
    }

    #[test]
    fn unkeyable_frames_get_a_fixed_state() {
        assert_eq!(keyed(&FlowKey::new(), &[]), Keyed::Fixed(FlowState::Untracked));
        let frag = FlowKey::new()
            .with_ipv4([1, 1, 1, 1], [2, 2, 2, 2])
            .with_proto(17)
            .with_fragment(FragmentState::NonFirst, 8, false);
        assert_eq!(keyed(&frag, &[]), Keyed::Fixed(FlowState::Invalid));
        let echo = FlowKey::new()
            .with_ipv4([1, 1, 1, 1], [2, 2, 2, 2])
            .with_proto(1)
            .with_icmp(8, 0);
        assert_eq!(
            keyed(&echo, &[]),
            Keyed::Fixed(FlowState::Invalid),
            "no frame bytes, no identifier"
        );
        let gre = FlowKey::new()
            .with_ipv4([1, 1, 1, 1], [2, 2, 2, 2])
            .with_proto(47);
        assert!(matches!(keyed(&gre, &[]), Keyed::Flow { opens: true, .. }));
    }
}
