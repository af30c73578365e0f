//! The phases of a TCP flow, and which idle timeout each phase takes.
//!
//! ```text
//!  opener SYN ──> SynSent ──responder SYN(+ACK)──> SynReceived ──opener ACK──> Established
//!                    any FIN ──> Closing (FIN one way) ──FIN the other way──> Closed
//!                    any RST ──> Closed
//! ```
//!
//! `SynSent` and `SynReceived` take `tcp_handshake`, `Established` takes
//! `tcp_established`, `Closing` and `Closed` take `tcp_closing`. A SYN
//! without ACK on a `Closed` flow starts a new connection on the same ports:
//! the old entry is dropped and the frame is `new`. Sequence numbers are not
//! tracked: the phase only chooses the timeout, and every frame of a flow
//! with an entry is `established` whatever its phase.

/// TCP flag bits as in [`palisade_packet::FlowKey::tcp_flags`].
pub(crate) const FIN: u16 = 0x001;
pub(crate) const SYN: u16 = 0x002;
pub(crate) const RST: u16 = 0x004;
pub(crate) const ACK: u16 = 0x010;

/// A TCP flow's phase (0 is used for flows of other protocols).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum TcpPhase {
    /// Not TCP.
    None = 0,
    /// The opener's SYN was seen.
    SynSent = 1,
    /// The responder answered with SYN (normally SYN-ACK).
    SynReceived = 2,
    /// The opener acknowledged the responder's SYN.
    Established = 3,
    /// A FIN was seen in one direction.
    Closing = 4,
    /// FINs were seen both ways, or a RST.
    Closed = 5,
}

impl TcpPhase {
    /// From the 4 bits the table stores.
    pub(crate) const fn from_bits(b: u32) -> TcpPhase {
        match b {
            1 => TcpPhase::SynSent,
            2 => TcpPhase::SynReceived,
            3 => TcpPhase::Established,
            4 => TcpPhase::Closing,
            5 => TcpPhase::Closed,
            _ => TcpPhase::None,
        }
    }

    /// `syn-sent`, `syn-received`, `established`, `closing`, `closed`, or `""` when not TCP.
    ///
    /// ```
    /// assert_eq!(palisade_engine::flow::TcpPhase::SynReceived.name(), "syn-received");
    /// ```
    pub const fn name(self) -> &'static str {
        match self {
            TcpPhase::None => "",
            TcpPhase::SynSent => "syn-sent",
            TcpPhase::SynReceived => "syn-received",
            TcpPhase::Established => "established",
            TcpPhase::Closing => "closing",
            TcpPhase::Closed => "closed",
        }
    }
}

/// A TCP flow's phase with the FINs seen from each side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Tcp {
    pub phase: TcpPhase,
    /// A FIN from the opener.
    pub fin_opener: bool,
    /// A FIN from the responder.
    pub fin_responder: bool,
}

impl Tcp {
    /// The state a permitted opening SYN creates.
    pub(crate) const OPENED: Tcp = Tcp {
        phase: TcpPhase::SynSent,
        fin_opener: false,
        fin_responder: false,
    };

    /// Whether a SYN without ACK on this flow starts a new connection (the old one is over).
    pub(crate) const fn reopened_by(self, flags: u16) -> bool {
        matches!(self.phase, TcpPhase::Closed) && flags & SYN != 0 && flags & (ACK | RST | FIN) == 0
    }

    /// The state after a segment with `flags` from the opener (`reply` false) or the responder.
    pub(crate) const fn after(self, flags: u16, reply: bool) -> Tcp {
        let mut t = self;
        if flags & RST != 0 {
            t.phase = TcpPhase::Closed;
            return t;
        }
        if flags & FIN != 0 {
            if reply {
                t.fin_responder = true;
            } else {
                t.fin_opener = true;
            }
            t.phase = if (t.fin_opener && t.fin_responder) || matches!(t.phase, TcpPhase::Closed) {
                TcpPhase::Closed
            } else {
                TcpPhase::Closing
            };
            return t;
        }
        t.phase = match (self.phase, reply) {
            (TcpPhase::SynSent, true) if flags & SYN != 0 => TcpPhase::SynReceived,
            (TcpPhase::SynReceived, false) if flags & ACK != 0 && flags & SYN == 0 => TcpPhase::Established,
            (p, _) => p,
        };
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_data_and_close() {
        let t = Tcp::OPENED;
        let t = t.after(SYN, false); // retransmitted SYN
        assert_eq!(t.phase, TcpPhase::SynSent);
        let t = t.after(SYN | ACK, true);
        assert_eq!(t.phase, TcpPhase::SynReceived);
        let t = t.after(ACK, true); // the responder's ACK does not complete it
        assert_eq!(t.phase, TcpPhase::SynReceived);
        let t = t.after(ACK, false);
        assert_eq!(t.phase, TcpPhase::Established);
        let t = t.after(FIN | ACK, true);
        assert_eq!(
            (t.phase, t.fin_responder, t.fin_opener),
            (TcpPhase::Closing, true, false)
        );
        assert!(!t.reopened_by(SYN));
        let t = t.after(FIN | ACK, false);
        assert_eq!(t.phase, TcpPhase::Closed);
        assert!(t.reopened_by(SYN));
        assert!(!t.reopened_by(SYN | ACK));
    }

    #[test]
    fn reset_closes_from_any_phase() {
        for p in [
            TcpPhase::SynSent,
            TcpPhase::SynReceived,
            TcpPhase::Established,
            TcpPhase::Closing,
        ] {
            let t = Tcp {
                phase: p,
                ..Tcp::OPENED
            };
            assert_eq!(t.after(RST, true).phase, TcpPhase::Closed);
            assert_eq!(t.after(RST | ACK, false).phase, TcpPhase::Closed);
        }
    }
}
