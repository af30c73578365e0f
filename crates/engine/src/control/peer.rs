//! Who is on the other end of a control connection: `SO_PEERCRED`.
//!
//! One of the engine's four `unsafe` modules (with `flow::huge`, `flow::prefetch` and
//! `flow::simd`): std has no stable way to read a Unix socket's peer credentials, so one
//! `getsockopt(2)` is made here.
#![allow(unsafe_code)]

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

/// The uid of the process that connected `stream` (as it was at `connect(2)`),
/// or `None` when the kernel does not say.
///
/// ```
/// let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
/// // SAFETY-free check of our own uid: root owns /proc/self by uid 0, others theirs.
/// let me = std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m)).ok();
/// assert_eq!(palisade_engine::control::peer_uid(&a), me);
/// ```
pub fn peer_uid(stream: &UnixStream) -> Option<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: the descriptor is open for the lifetime of `stream`; `cred` and `len` are
    // valid for writes and `len` holds the size of `cred`, as getsockopt(2) requires.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (rc == 0 && len as usize == std::mem::size_of::<libc::ucred>()).then_some(cred.uid)
}
