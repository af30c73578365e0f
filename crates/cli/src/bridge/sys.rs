//! The operating-system side of a bridge port: an `AF_PACKET` socket bound to
//! one interface by pnet's datalink channel, read and written in batches.
//!
//! pnet binds the socket to the interface, makes it promiscuous and joins
//! the fanout group. Frames then arrive in a receive ring ([`super::ring`]:
//! no system call per frame, a third less daemon CPU per 64-byte frame than
//! `recvmmsg` in the same run, see the README) and leave with `sendmmsg`, a whole batch per
//! system call: pnet's own `next()`/`send_to()` cost two system calls per
//! frame (a `poll` and the transfer), which measured at a third of the frame
//! rate.
//!
//! pnet opens its own socket when asked, but a bridge needs options pnet
//! does not set, so the socket is created here and handed to pnet:
//!
//! - `PACKET_IGNORE_OUTGOING`: without it the socket also sees every frame
//!   the bridge itself sends out of the interface, and would forward it back.
//! - `PACKET_AUXDATA`: the interface strips a frame's outer VLAN tag on
//!   receive (rx VLAN offload) and reports it beside the frame (in the ring
//!   slot's header, and for a frame read from the socket queue in this
//!   control message); without it the tag, and with it the frame's VLAN,
//!   would be lost.
//! - `PACKET_VNET_HDR`: every frame comes and goes with a virtio-net header,
//!   so GSO/GRO super-frames (up to 64 KiB, offloads on) are received and sent
//!   whole, and a checksum the sender left to the hardware (`NEEDS_CSUM`)
//!   stays marked for the egress device (or the kernel) to complete. Frames
//!   are never split and their checksums never rewritten here.
//! - protocol 0 at creation: the socket receives nothing until pnet binds it
//!   to the interface with `ETH_P_ALL`, so no frame of another interface can
//!   slip into the queue in between.
//!
//! Each `unsafe` block below is one system call whose arguments live on the
//! stack or in buffers borrowed for the duration of the call, or the
//! zero-initialisation of a C struct of integers and pointers. The ring's
//! shared memory has its own rules, in [`super::ring`].

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::time::Duration;

use palisade_dataplane::vlan::{Span, Tag, TPID_8021Q};
use pnet::datalink::{self, Channel, FanoutOption, FanoutType};

use super::ring::{RxRing, SlotHeader, TP_STATUS_COPY, TP_STATUS_VLAN_TPID_VALID, TP_STATUS_VLAN_VALID};

/// `SOL_PACKET` from `<linux/socket.h>`.
const SOL_PACKET: libc::c_int = 263;
/// `PACKET_AUXDATA` from `<linux/if_packet.h>`.
const PACKET_AUXDATA: libc::c_int = 8;
/// `PACKET_VNET_HDR` from `<linux/if_packet.h>`.
const PACKET_VNET_HDR: libc::c_int = 15;
/// `PACKET_IGNORE_OUTGOING` from `<linux/if_packet.h>` (Linux 4.20+).
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
/// `PACKET_STATISTICS` from `<linux/if_packet.h>`.
const PACKET_STATISTICS: libc::c_int = 6;

/// Receive queue size asked for each packet socket.
const RECEIVE_QUEUE_BYTES: libc::c_int = 8 << 20;
/// Send queue size asked for each packet socket (frames sent, not yet consumed by the egress).
const SEND_QUEUE_BYTES: libc::c_int = 4 << 20;

/// Most frames moved by one `recvmmsg`/`sendmmsg`.
pub const MAX_BATCH: usize = palisade_dataplane::MAX_BATCH;

/// Room for the control messages of one received frame (one `tpacket_auxdata`: 40 bytes).
const CONTROL_BYTES: usize = 64;

/// `struct virtio_net_hdr` (`<linux/virtio_net.h>`), which precedes every
/// frame on a socket with `PACKET_VNET_HDR`. Packet sockets use the legacy
/// virtio layout in the host's byte order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct VnetHdr {
    /// `VIRTIO_NET_HDR_F_NEEDS_CSUM` (1): the L4 checksum at `csum_start +
    /// csum_offset` is partial (pseudo-header only), left to the device.
    /// `VIRTIO_NET_HDR_F_DATA_VALID` (2): the checksum was verified.
    pub flags: u8,
    /// `VIRTIO_NET_HDR_GSO_*`: 0 for a plain frame, else the kind of super-frame.
    pub gso_type: u8,
    /// Length of the headers (a hint for the kernel's linear part).
    pub hdr_len: u16,
    /// Payload bytes per segment of a super-frame.
    pub gso_size: u16,
    /// Offset from the frame's first byte where checksumming starts.
    pub csum_start: u16,
    /// Offset of the checksum field from `csum_start`.
    pub csum_offset: u16,
}

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`.
pub const NEEDS_CSUM: u8 = 1;

impl VnetHdr {
    /// The header from the 10 bytes the kernel wrote (host byte order).
    pub fn from_bytes(b: &[u8]) -> VnetHdr {
        let u16_at = |at: usize| {
            b.get(at..at + 2)
                .and_then(|x| x.try_into().ok())
                .map_or(0, u16::from_ne_bytes)
        };
        VnetHdr {
            flags: b.first().copied().unwrap_or(0),
            gso_type: b.get(1).copied().unwrap_or(0),
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        }
    }

    /// Follows `delta` bytes inserted (positive) or removed (negative) in front
    /// of the network header, as a VLAN tag is: the offsets into the frame move.
    pub fn shift(&mut self, delta: isize) {
        let moved = |v: u16| -> u16 {
            let v = v as isize + delta;
            v.clamp(0, u16::MAX as isize) as u16
        };
        if self.flags & NEEDS_CSUM != 0 {
            self.csum_start = moved(self.csum_start);
        }
        if self.hdr_len != 0 {
            self.hdr_len = moved(self.hdr_len);
        }
    }
}

/// One received frame's metadata.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RxMeta {
    /// Frame length as received (without a stripped tag).
    pub len: usize,
    /// The outer tag the interface stripped, from the auxiliary data.
    pub tag: Option<Tag>,
    /// The frame's virtio-net header.
    pub vnet: VnetHdr,
}

/// Control-message buffer of one frame, aligned for `struct cmsghdr`.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct Control([u8; CONTROL_BYTES]);

/// The stripped VLAN tag reported in a frame's control messages, if any.
///
/// Reads the `cmsghdr` list from bytes (no pointer arithmetic): each header is
/// `cmsg_len` (a `size_t`), level and type (`int`s), data after the aligned header.
fn stripped_tag(control: &[u8]) -> Option<Tag> {
    const WORD: usize = std::mem::size_of::<usize>();
    let header = std::mem::size_of::<libc::cmsghdr>();
    let align = |n: usize| n.div_ceil(WORD) * WORD;
    let int = |b: &[u8], at: usize| -> Option<i32> {
        Some(i32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
    };
    let mut off = 0;
    while off + header <= control.len() {
        let len = usize::from_ne_bytes(control.get(off..off + WORD)?.try_into().ok()?);
        let (level, kind) = (int(control, off + WORD)?, int(control, off + WORD + 4)?);
        if len < header || off.checked_add(len).is_none_or(|end| end > control.len()) {
            return None;
        }
        if level == SOL_PACKET && kind == PACKET_AUXDATA {
            // struct tpacket_auxdata { u32 tp_status, tp_len, tp_snaplen; u16 tp_mac, tp_net,
            // tp_vlan_tci, tp_vlan_tpid; }
            let data = control.get(off + align(header)..off + len)?;
            let u16_at = |at: usize| -> Option<u16> {
                Some(u16::from_ne_bytes(data.get(at..at + 2)?.try_into().ok()?))
            };
            let status = u32::from_ne_bytes(data.get(0..4)?.try_into().ok()?);
            if status & TP_STATUS_VLAN_VALID == 0 {
                return None;
            }
            let tci = u16_at(16)?;
            let tpid = match u16_at(18)? {
                tpid if status & TP_STATUS_VLAN_TPID_VALID != 0 && tpid != 0 => tpid,
                _ => TPID_8021Q,
            };
            return Some(Tag { tpid, tci });
        }
        off += align(len);
    }
    None
}

/// One received frame: its buffer (a ring slot or a buffer of its own), where the frame is
/// in it, the VLAN tag the interface stripped and its virtio-net header.
#[derive(Debug, Default)]
pub struct RxFrame<'a> {
    /// The buffer holding the frame, with free bytes in front of it.
    pub buf: &'a mut [u8],
    /// The frame in `buf`.
    pub span: Span,
    /// The outer tag the interface stripped.
    pub tag: Option<Tag>,
    /// The frame's virtio-net header.
    pub vnet: VnetHdr,
}

/// What one [`Port::receive`] took.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Received {
    /// Ring slots taken (to give back with [`Port::release`]).
    pub slots: usize,
    /// Frames in `out`.
    pub frames: usize,
    /// Frames too long for any buffer, dropped.
    pub oversize: u64,
    /// Frames the kernel could not hand over (see [`recv_one`]), dropped.
    pub rx_errors: u64,
}

/// Reads one frame queued on the socket into `buf[headroom..]`: `Ok(None)` when it was
/// longer than the buffer (dropped). An error is this frame's: `EINVAL` for a super-frame
/// a virtio-net header cannot describe (SCTP, tunnels), which the kernel drops.
fn recv_one(fd: &OwnedFd, buf: &mut [u8], headroom: usize) -> io::Result<Option<RxMeta>> {
    let room = buf
        .get_mut(headroom..)
        .ok_or_else(|| io::Error::other("receive buffer shorter than its headroom"))?;
    let mut vnet = VnetHdr::default();
    let mut control = Control([0; CONTROL_BYTES]);
    let mut iov = [
        libc::iovec {
            iov_base: (&mut vnet as *mut VnetHdr).cast(),
            iov_len: std::mem::size_of::<VnetHdr>(),
        },
        libc::iovec {
            iov_base: room.as_mut_ptr().cast(),
            iov_len: room.len(),
        },
    ];
    // SAFETY: msghdr is a plain C struct of integers and pointers; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = 2;
    msg.msg_control = control.0.as_mut_ptr().cast();
    msg.msg_controllen = CONTROL_BYTES as _;
    // SAFETY: `msg` points at two iovecs (a `VnetHdr`, any bytes valid, and the free part of
    // `buf`, mutably borrowed) and at `control`, all alive for the call; the kernel writes at
    // most their lengths.
    let rc = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let hdr = std::mem::size_of::<VnetHdr>();
    if msg.msg_flags & libc::MSG_TRUNC != 0 || (rc as usize) <= hdr {
        return Ok(None);
    }
    // `size_t` with glibc, `socklen_t` with musl.
    #[allow(clippy::unnecessary_cast)]
    let used = (msg.msg_controllen as usize).min(CONTROL_BYTES);
    Ok(Some(RxMeta {
        len: rc as usize - hdr,
        tag: stripped_tag(&control.0[..used]),
        vnet,
    }))
}

/// One open interface: the packet socket pnet configured.
pub struct Port {
    /// Kernel interface index (changes when the interface is re-created).
    pub index: u32,
    /// Our descriptor of the socket (pnet's channel, holding another, is dropped after setup).
    fd: OwnedFd,
    /// Its receive ring.
    ring: RxRing,
}

fn empty_msgs() -> [libc::mmsghdr; MAX_BATCH] {
    // SAFETY: mmsghdr is a plain C struct of integers and raw pointers, for which all-zero
    // bytes are a valid value (null name, no iovecs, no control data).
    unsafe { std::mem::zeroed() }
}

const NO_IOV: libc::iovec = libc::iovec {
    iov_base: std::ptr::null_mut(),
    iov_len: 0,
};

/// What stopped a send.
#[derive(Debug)]
pub struct SendError {
    /// The error.
    pub error: io::Error,
    /// Whether it concerns one frame only (too long for the egress, a header the kernel
    /// refused) and the rest of the batch went on; else the batch stopped there.
    pub per_frame: bool,
}

impl Port {
    /// Takes the frames the kernel has handed over, up to `out.len()`, without waiting.
    ///
    /// Frames that fit a ring slot stay in the ring; one that did not (a super-frame, a
    /// jumbo frame) is read whole from the socket queue into the next buffer of `big`
    /// (behind `headroom` free bytes). `out[..frames]` receive them in arrival order, each
    /// the frame as received (a stripped tag not yet re-inserted: see [`RxFrame::tag`]).
    /// Give the slots back with [`Port::release`] once the frames are sent.
    pub fn receive<'a>(
        &'a mut self,
        big: &'a mut [Box<[u8]>],
        headroom: usize,
        out: &mut [RxFrame<'a>],
    ) -> Received {
        let Port { fd, ring, .. } = self;
        let slots = ring.ready(out.len());
        let mut got = Received {
            slots,
            ..Received::default()
        };
        let mut big = big.iter_mut();
        let mut frames = out.iter_mut();
        for (status, slot) in ring.slots_mut(slots) {
            let h = SlotHeader::read(status, slot);
            if h.status & TP_STATUS_COPY != 0 {
                // The whole frame waits on the socket queue, in slot order.
                let Some(buf) = big.next() else {
                    got.rx_errors += 1;
                    continue;
                };
                // A pending socket error (ENETDOWN, ...) is reported before the frame: read again.
                let read = match recv_one(fd, buf, headroom) {
                    Err(e) if !matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EAGAIN)) => {
                        recv_one(fd, buf, headroom)
                    }
                    read => read,
                };
                match read {
                    Ok(Some(meta)) => {
                        if let Some(f) = frames.next() {
                            *f = RxFrame {
                                buf,
                                span: Span {
                                    start: headroom,
                                    len: meta.len,
                                },
                                tag: meta.tag,
                                vnet: meta.vnet,
                            };
                            got.frames += 1;
                        }
                    }
                    Ok(None) => got.oversize += 1,
                    Err(_) => got.rx_errors += 1,
                }
                continue;
            }
            // Offsets in `slot` are the slot's minus its 4-byte status word.
            let (Some(mac), len) = ((h.mac as usize).checked_sub(4), h.snaplen as usize) else {
                got.rx_errors += 1;
                continue;
            };
            let hdr = std::mem::size_of::<VnetHdr>();
            let vnet = mac
                .checked_sub(hdr)
                .and_then(|at| slot.get(at..mac))
                .map(VnetHdr::from_bytes);
            let (Some(vnet), true) = (vnet, h.snaplen == h.len && slot.len() >= mac + len) else {
                // Cut short without a whole copy queued (no room on the socket): lost.
                got.oversize += 1;
                continue;
            };
            let tag = (h.status & TP_STATUS_VLAN_VALID != 0).then_some(Tag {
                tpid: match h.vlan_tpid {
                    tpid if h.status & TP_STATUS_VLAN_TPID_VALID != 0 && tpid != 0 => tpid,
                    _ => TPID_8021Q,
                },
                tci: h.vlan_tci,
            });
            if let Some(f) = frames.next() {
                *f = RxFrame {
                    buf: slot,
                    span: Span { start: mac, len },
                    tag,
                    vnet,
                };
                got.frames += 1;
            }
        }
        got
    }

    /// Gives the `slots` ring slots of the last [`Port::receive`] back to the kernel.
    pub fn release(&mut self, slots: usize) {
        self.ring.release(slots);
    }

    /// The socket's pending error, if any (reading it clears it).
    pub fn take_error(&self) -> Option<io::Error> {
        let mut err: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt(2) writes at most `len` bytes into `err` on our stack.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                (&mut err as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        match (rc, err) {
            (0, 0) => None,
            (0, e) => Some(io::Error::from_raw_os_error(e)),
            _ => Some(io::Error::last_os_error()),
        }
    }

    /// Frames the kernel dropped since the last call because they found the ring full.
    pub fn drops(&self) -> u64 {
        let mut stats = [0u32; 2]; // struct tpacket_stats { tp_packets, tp_drops }
        let mut len = std::mem::size_of_val(&stats) as libc::socklen_t;
        // SAFETY: getsockopt(2) writes at most `len` bytes into `stats` on our stack and the
        // new length into `len`.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                SOL_PACKET,
                PACKET_STATISTICS,
                stats.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if rc == 0 {
            u64::from(stats[1])
        } else {
            0
        }
    }

    /// Sends `frames[i]` (its bytes at its span, with its virtio-net header) for every `i` in
    /// `which`, in order.
    ///
    /// Returns how many were sent and the last error. A frame the kernel refuses on its
    /// own (`EMSGSIZE`, `EINVAL`) is skipped and the rest are sent; any other error stops
    /// the batch. A full transmit queue is waited on briefly, never indefinitely.
    pub fn send_batch(&self, frames: &[RxFrame<'_>], which: &[usize]) -> (usize, Option<SendError>) {
        let mut iov = [NO_IOV; 2 * MAX_BATCH];
        let mut msgs = empty_msgs();
        let mut m = 0;
        for &i in which.iter().take(MAX_BATCH) {
            let Some(f) = frames.get(i) else {
                continue;
            };
            let frame = f.span.of(f.buf);
            if frame.is_empty() {
                continue;
            }
            // The kernel only reads transmit buffers; the pointers are `*mut` by the C signature.
            iov[2 * m] = libc::iovec {
                iov_base: (&f.vnet as *const VnetHdr).cast_mut().cast(),
                iov_len: std::mem::size_of::<VnetHdr>(),
            };
            iov[2 * m + 1] = libc::iovec {
                iov_base: frame.as_ptr().cast_mut().cast(),
                iov_len: frame.len(),
            };
            m += 1;
        }
        for (j, msg) in msgs.iter_mut().enumerate().take(m) {
            msg.msg_hdr.msg_iov = &mut iov[2 * j];
            msg.msg_hdr.msg_iovlen = 2;
        }
        let (mut next, mut sent, mut waits) = (0, 0, 0);
        let mut last = None;
        while next < m {
            // SAFETY: `msgs[next..m]` each point at two iovecs of `iov`, covering the header and
            // the bytes of a frame of `frames`, all borrowed for this call; the socket is bound,
            // so no address is needed.
            let rc = unsafe {
                libc::sendmmsg(
                    self.fd.as_raw_fd(),
                    msgs[next..].as_mut_ptr(),
                    (m - next) as libc::c_uint,
                    0,
                )
            };
            if rc > 0 {
                next += rc as usize;
                sent += rc as usize;
                continue;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => {}
                Some(libc::EAGAIN) if waits < 5 => {
                    waits += 1;
                    self.wait_writable(Duration::from_millis(20));
                }
                Some(libc::EMSGSIZE | libc::EINVAL) => {
                    // This frame only: skip it, send the rest.
                    next += 1;
                    last = Some(SendError {
                        error: e,
                        per_frame: true,
                    });
                }
                _ => {
                    return (
                        sent,
                        Some(SendError {
                            error: e,
                            per_frame: false,
                        }),
                    )
                }
            }
        }
        (sent, last)
    }

    fn wait_writable(&self, timeout: Duration) {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one valid pollfd on our stack, count 1; the descriptor is owned by `self`.
        unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as libc::c_int) };
    }
}

/// Waits up to `timeout` until one of `ports` has a frame to read (or an error to report).
///
/// `ready[i]` is set for each readable port; absent ports (`None`) are skipped. Returns
/// `false` on timeout or interruption.
pub fn wait_any(ports: [Option<&Port>; 2], timeout: Duration, ready: &mut [bool; 2]) -> bool {
    let mut fds = [libc::pollfd {
        fd: -1,
        events: libc::POLLIN,
        revents: 0,
    }; 2];
    for (pfd, port) in fds.iter_mut().zip(ports) {
        // poll(2) ignores entries with a negative descriptor.
        pfd.fd = port.map_or(-1, |p| p.fd.as_raw_fd());
    }
    let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: `fds` is an array of two valid pollfd on our stack and we pass its exact length;
    // each descriptor is owned by a `Port` borrowed for the whole call.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
    for (r, pfd) in ready.iter_mut().zip(fds) {
        // POLLERR counts as readable: the next read reports the pending error (ENETDOWN, ...).
        *r = rc > 0 && pfd.fd >= 0 && pfd.revents != 0;
    }
    rc > 0
}

/// How a port's socket joins the other workers reading the same interface.
#[derive(Clone, Copy, Debug)]
pub struct Fanout {
    /// Group id shared by every worker of one interface (unique per interface and process).
    pub group: u16,
}

/// Opens `ifname` for bridging: promiscuous, own transmissions ignored, optional fanout group,
/// a receive ring of `ring_blocks` MiB.
///
/// Errors name the interface and the cause (missing interface, no permission, ...).
pub fn open(ifname: &str, fanout: Option<Fanout>, ring_blocks: usize) -> Result<Port, String> {
    let iface = datalink::interfaces()
        .into_iter()
        .find(|i| i.name == ifname)
        .ok_or_else(|| format!("interface {ifname}: no such interface"))?;
    // SAFETY: socket(2) with constant arguments; on success we take sole ownership of the
    // returned descriptor immediately below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(format!(
            "interface {ifname}: cannot open a packet socket: {}",
            io::Error::last_os_error()
        ));
    }
    // SAFETY: `fd` was just returned by socket(2), is valid and owned by nobody else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    // SAFETY: setsockopt(2) reads `size_of::<c_int>()` bytes from a c_int on our stack.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            SOL_PACKET,
            PACKET_IGNORE_OUTGOING,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(format!(
            "interface {ifname}: cannot ignore outgoing frames (needs Linux 4.20+): {}",
            io::Error::last_os_error()
        ));
    }
    for (opt, what) in [
        (PACKET_AUXDATA, "receive VLAN tags (PACKET_AUXDATA)"),
        (
            PACKET_VNET_HDR,
            "move offload super-frames whole (PACKET_VNET_HDR)",
        ),
    ] {
        // SAFETY: setsockopt(2) reads `size_of::<c_int>()` bytes from a c_int on our stack.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                SOL_PACKET,
                opt,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(format!(
                "interface {ifname}: cannot {what}: {}",
                io::Error::last_os_error()
            ));
        }
    }
    // A deep receive queue rides out the moments the worker is not scheduled (a reload's
    // compile, a busy core) instead of dropping frames; a deep send queue keeps frames that
    // the egress has not consumed yet (the peer's backlog, softirq deferred to ksoftirqd)
    // from stalling the worker, and with it the other direction. FORCE needs CAP_NET_ADMIN,
    // which a bridge has; without it the plain option is capped by net.core.[rw]mem_max.
    for (force, plain, size) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, RECEIVE_QUEUE_BYTES),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, SEND_QUEUE_BYTES),
    ] {
        for opt in [force, plain] {
            // SAFETY: setsockopt(2) reads `size_of::<c_int>()` bytes from a c_int on our stack.
            let rc = unsafe {
                libc::setsockopt(
                    sock.as_raw_fd(),
                    libc::SOL_SOCKET,
                    opt,
                    (&size as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if rc == 0 {
                break;
            }
        }
    }
    let ring = RxRing::new(&sock, ring_blocks)
        .map_err(|e| format!("interface {ifname}: cannot set up the receive ring (PACKET_RX_RING): {e}"))?;
    let fd = sock
        .try_clone()
        .map_err(|e| format!("interface {ifname}: dup: {e}"))?;
    let config = datalink::Config {
        // pnet's own buffers go unused: frames move through `recv_batch`/`send_batch`.
        read_buffer_size: 64,
        write_buffer_size: 64,
        promiscuous: true,
        linux_fanout: fanout.map(|f| FanoutOption {
            group_id: f.group,
            fanout_type: FanoutType::HASH,
            defrag: true,
            rollover: false,
        }),
        socket_fd: Some(sock.into_raw_fd()),
        ..Default::default()
    };
    match datalink::channel(&iface, config) {
        // pnet's sender and receiver are dropped here; the socket lives on in `fd`.
        Ok(Channel::Ethernet(_tx, _rx)) => Ok(Port {
            index: iface.index,
            fd,
            ring,
        }),
        Ok(_) => Err(format!("interface {ifname}: not an Ethernet channel")),
        Err(e) => Err(format!("interface {ifname}: cannot open: {e}")),
    }
}

/// The kernel index of `ifname`, if it exists.
pub fn index_of(ifname: &str) -> Option<u32> {
    datalink::interfaces()
        .into_iter()
        .find(|i| i.name == ifname)
        .map(|i| i.index)
}

/// Whether `ifname` exists: `Some((administratively up, has carrier))`.
pub fn link_state(ifname: &str) -> Option<(bool, bool)> {
    datalink::interfaces()
        .into_iter()
        .find(|i| i.name == ifname)
        .map(|i| (i.is_up(), i.is_running()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A control buffer holding one `cmsghdr` + `tpacket_auxdata` as the kernel writes it.
    fn auxdata(status: u32, tci: u16, tpid: u16) -> Vec<u8> {
        let header = std::mem::size_of::<libc::cmsghdr>();
        let mut data = Vec::new();
        data.extend_from_slice(&status.to_ne_bytes());
        data.extend_from_slice(&100u32.to_ne_bytes()); // tp_len
        data.extend_from_slice(&100u32.to_ne_bytes()); // tp_snaplen
        data.extend_from_slice(&0u16.to_ne_bytes()); // tp_mac
        data.extend_from_slice(&14u16.to_ne_bytes()); // tp_net
        data.extend_from_slice(&tci.to_ne_bytes());
        data.extend_from_slice(&tpid.to_ne_bytes());
        let mut out = Vec::new();
        out.extend_from_slice(&(header + data.len()).to_ne_bytes());
        out.extend_from_slice(&SOL_PACKET.to_ne_bytes());
        out.extend_from_slice(&PACKET_AUXDATA.to_ne_bytes());
        out.extend_from_slice(&data);
        out.resize(out.len().div_ceil(8) * 8, 0);
        out
    }

    #[test]
    fn stripped_tags_are_read_from_auxdata() {
        let tag = |tci, tpid| Some(Tag { tpid, tci });
        let both = TP_STATUS_VLAN_VALID | TP_STATUS_VLAN_TPID_VALID;
        assert_eq!(stripped_tag(&auxdata(both, 0x2014, 0x88a8)), tag(0x2014, 0x88a8));
        // TCI without TPID (older kernels): 802.1Q. A priority tag (VID 0) is a tag too.
        assert_eq!(
            stripped_tag(&auxdata(TP_STATUS_VLAN_VALID, 10, 0)),
            tag(10, 0x8100)
        );
        assert_eq!(stripped_tag(&auxdata(both, 0xe000, 0x8100)), tag(0xe000, 0x8100));
        // No tag stripped, no control message, another message first, garbage: none.
        assert_eq!(stripped_tag(&auxdata(0, 10, 0x8100)), None);
        assert_eq!(stripped_tag(&[]), None);
        let mut other = auxdata(both, 7, 0x8100);
        other[std::mem::size_of::<usize>()] = 1; // level SOL_SOCKET-ish
        let mut two = other.clone();
        two.extend_from_slice(&auxdata(both, 30, 0x8100));
        assert_eq!(stripped_tag(&other), None);
        assert_eq!(stripped_tag(&two), tag(30, 0x8100));
        for cut in 0..two.len() {
            let _ = stripped_tag(&two[..cut]);
        }
        let mut huge = auxdata(both, 7, 0x8100);
        huge[..8].copy_from_slice(&usize::MAX.to_ne_bytes());
        assert_eq!(stripped_tag(&huge), None);
    }

    #[test]
    fn vnet_header_follows_an_inserted_or_removed_tag() {
        let mut h = VnetHdr {
            flags: NEEDS_CSUM,
            gso_type: 1,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        h.shift(4);
        assert_eq!(
            (h.csum_start, h.hdr_len, h.csum_offset, h.gso_size),
            (38, 70, 16, 1448)
        );
        h.shift(-4);
        assert_eq!((h.csum_start, h.hdr_len), (34, 66));
        // Without a partial checksum the start means nothing and stays; a zero hint stays zero.
        let mut plain = VnetHdr::default();
        plain.shift(4);
        assert_eq!(plain, VnetHdr::default());
        assert_eq!(
            std::mem::size_of::<VnetHdr>(),
            10,
            "the kernel's struct virtio_net_hdr"
        );
    }
}
