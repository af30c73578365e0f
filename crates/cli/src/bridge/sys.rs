//! The operating-system side of a bridge port: an `AF_PACKET` socket bound to
//! one interface, read and written through pnet's datalink channel.
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
//! The three `unsafe` blocks below are plain system calls with arguments that
//! live on the stack; they run on the control path only (opening a port and
//! waiting for frames), never per frame.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::time::Duration;

use pnet::datalink::{self, Channel, DataLinkReceiver, DataLinkSender, FanoutOption, FanoutType};

/// `SOL_PACKET` from `<linux/socket.h>`.
const SOL_PACKET: libc::c_int = 263;
/// `PACKET_IGNORE_OUTGOING` from `<linux/if_packet.h>` (Linux 4.20+).
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;

/// Largest frame read in one piece (a GSO super-frame still fits, so it can be counted as oversize).
pub const READ_BUFFER: usize = 65_536 + 64;

/// One open interface: the pnet channel and a second descriptor of the same socket to wait on.
pub struct Port {
    /// Kernel interface index (changes when the interface is re-created).
    pub index: u32,
    /// Sends frames out of the interface.
    pub tx: Box<dyn DataLinkSender>,
    /// Receives frames that arrived on the interface.
    pub rx: Box<dyn DataLinkReceiver>,
    /// A duplicate of the socket's descriptor, for `poll`.
    wait_fd: OwnedFd,
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
        pfd.fd = port.map_or(-1, |p| p.wait_fd.as_raw_fd());
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
    let wait_fd = sock
        .try_clone()
        .map_err(|e| format!("interface {ifname}: dup: {e}"))?;
    let config = datalink::Config {
        read_buffer_size: READ_BUFFER,
        write_buffer_size: READ_BUFFER,
        // Zero: `next()` never blocks; waiting is done by `Port::wait_readable`.
        read_timeout: Some(Duration::ZERO),
        write_timeout: Some(Duration::from_millis(200)),
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
        Ok(Channel::Ethernet(tx, rx)) => Ok(Port {
            index: iface.index,
            tx,
            rx,
            wait_fd,
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

/// Whether `ifname` exists and is administratively and operationally up.
pub fn is_up(ifname: &str) -> Option<bool> {
    datalink::interfaces()
        .into_iter()
        .find(|i| i.name == ifname)
        .map(|i| i.is_up() && i.is_running())
}
