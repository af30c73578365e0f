//! The operating-system side of a bridge port: an `AF_PACKET` socket bound to
//! one interface by pnet's datalink channel, read and written in batches.
//!
//! pnet binds the socket to the interface, makes it promiscuous and joins
//! the fanout group. Frames then move with `recvmmsg`/`sendmmsg`, a whole
//! batch per system call: pnet's own `next()`/`send_to()` cost two system
//! calls per frame (a `poll` and the transfer), which measured at a third of
//! the frame rate (see the README's performance notes).
//!
//! pnet opens its own socket when asked, but a bridge needs two options pnet
//! does not set, so the socket is created here and handed to pnet:
//!
//! - `PACKET_IGNORE_OUTGOING`: without it the socket also sees every frame
//!   the bridge itself sends out of the interface, and would forward it back.
//! - protocol 0 at creation: the socket receives nothing until pnet binds it
//!   to the interface with `ETH_P_ALL`, so no frame of another interface can
//!   slip into the queue in between.
//!
//! Each `unsafe` block below is one system call whose arguments live on the
//! stack or in buffers borrowed for the duration of the call.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::time::Duration;

use pnet::datalink::{self, Channel, FanoutOption, FanoutType};

/// `SOL_PACKET` from `<linux/socket.h>`.
const SOL_PACKET: libc::c_int = 263;
/// `PACKET_IGNORE_OUTGOING` from `<linux/if_packet.h>` (Linux 4.20+).
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;

/// Receive queue size asked for each packet socket.
const RECEIVE_QUEUE_BYTES: libc::c_int = 8 << 20;

/// Most frames moved by one `recvmmsg`/`sendmmsg`.
pub const MAX_BATCH: usize = palisade_dataplane::MAX_BATCH;

/// One open interface: the packet socket pnet configured.
pub struct Port {
    /// Kernel interface index (changes when the interface is re-created).
    pub index: u32,
    /// Our descriptor of the socket (pnet's channel, holding another, is dropped after setup).
    fd: OwnedFd,
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

impl Port {
    /// Receives up to `bufs.len()` frames that are already queued, without waiting.
    ///
    /// Frames land in `bufs[..n]` with lengths in `lens[..n]`; returns `n` and the number of
    /// frames longer than their buffer, which are dropped (moved past `n`).
    pub fn recv_batch(&self, bufs: &mut [Box<[u8]>], lens: &mut [usize]) -> io::Result<(usize, u64)> {
        let want = bufs.len().min(lens.len()).min(MAX_BATCH);
        let mut iov = [NO_IOV; MAX_BATCH];
        let mut msgs = empty_msgs();
        for ((v, m), buf) in iov
            .iter_mut()
            .zip(msgs.iter_mut())
            .zip(bufs.iter_mut())
            .take(want)
        {
            v.iov_base = buf.as_mut_ptr().cast();
            v.iov_len = buf.len();
            m.msg_hdr.msg_iov = v;
            m.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: `msgs[..want]` each point at one iovec of `iov`, each covering a whole buffer of
        // `bufs` that is mutably borrowed for this call; the kernel writes at most `iov_len`
        // bytes into each and fills `msg_len`/`msg_flags`. No timeout pointer is passed.
        let rc = unsafe {
            libc::recvmmsg(
                self.fd.as_raw_fd(),
                msgs.as_mut_ptr(),
                want as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok((0, 0)),
                _ => Err(e),
            };
        }
        let got = (rc as usize).min(want);
        let (mut n, mut truncated) = (0, 0);
        for (i, msg) in msgs.iter().enumerate().take(got) {
            if msg.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                truncated += 1;
                continue;
            }
            lens[n] = msg.msg_len as usize;
            bufs.swap(n, i);
            n += 1;
        }
        Ok((n, truncated))
    }

    /// Sends `bufs[i][..lens[i]]` for every `i` in `which`, in order.
    ///
    /// Returns how many were sent, and the error that stopped the rest. A full transmit
    /// queue is waited on briefly, never indefinitely.
    pub fn send_batch(
        &self,
        bufs: &[Box<[u8]>],
        lens: &[usize],
        which: &[usize],
    ) -> (usize, Option<io::Error>) {
        let mut iov = [NO_IOV; MAX_BATCH];
        let mut msgs = empty_msgs();
        let mut m = 0;
        for &i in which.iter().take(MAX_BATCH) {
            let Some(frame) = bufs
                .get(i)
                .and_then(|b| b.get(..lens.get(i).copied().unwrap_or(0)))
            else {
                continue;
            };
            // The kernel only reads transmit buffers; the pointer is `*mut` by the C signature.
            iov[m].iov_base = frame.as_ptr().cast_mut().cast();
            iov[m].iov_len = frame.len();
            m += 1;
        }
        for (msg, v) in msgs.iter_mut().zip(iov.iter_mut()).take(m) {
            msg.msg_hdr.msg_iov = v;
            msg.msg_hdr.msg_iovlen = 1;
        }
        let mut sent = 0;
        let mut waits = 0;
        while sent < m {
            // SAFETY: `msgs[sent..m]` each point at one iovec of `iov` covering a frame borrowed
            // from `bufs` for this call; the socket is bound, so no address is needed.
            let rc = unsafe {
                libc::sendmmsg(
                    self.fd.as_raw_fd(),
                    msgs[sent..].as_mut_ptr(),
                    (m - sent) as libc::c_uint,
                    0,
                )
            };
            if rc > 0 {
                sent += rc as usize;
                continue;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => {}
                io::ErrorKind::WouldBlock if waits < 5 => {
                    waits += 1;
                    self.wait_writable(Duration::from_millis(20));
                }
                _ => return (sent, Some(e)),
            }
        }
        (sent, None)
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

/// Opens `ifname` for bridging: promiscuous, own transmissions ignored, optional fanout group.
///
/// Errors name the interface and the cause (missing interface, no permission, ...).
pub fn open(ifname: &str, fanout: Option<Fanout>) -> Result<Port, String> {
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
    // A deep receive queue rides out the moments the worker is not scheduled (a reload's
    // compile, a busy core) instead of dropping frames. FORCE needs CAP_NET_ADMIN, which a
    // bridge has; without it the plain option is capped by net.core.rmem_max.
    let size: libc::c_int = RECEIVE_QUEUE_BYTES;
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
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
