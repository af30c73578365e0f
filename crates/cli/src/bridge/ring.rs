//! The receive ring of a packet socket (`PACKET_RX_RING`, `TPACKET_V2`).
//!
//! The kernel copies each received frame into a slot of a ring mapped into
//! our memory, in the softirq that received it, and hands the slot over by
//! setting its status to `TP_STATUS_USER`; the worker reads the frame in
//! place, decides it, sends it out of the other interface straight from the
//! slot, and gives the slot back (`TP_STATUS_KERNEL`). Per frame that saves
//! the worker a system call's worth of work (`recvmsg`: a queued skb clone
//! dequeued, copied and freed) and keeps the frames of a batch in memory the
//! kernel just wrote, instead of 64 cold receive buffers.
//!
//! Slots are small ([`SLOT_BYTES`]): a frame that does not fit (a jumbo frame,
//! a GSO/GRO super-frame) is marked `TP_STATUS_COPY` and the whole frame is
//! also queued on the socket (`PACKET_COPY_THRESH`), where the worker reads it
//! with `recvmsg` in the same order. Each slot carries the frame's metadata:
//! length, the VLAN tag the interface stripped (`tp_vlan_tci`/`tp_vlan_tpid`),
//! and, before the frame, its virtio-net header (`PACKET_VNET_HDR`).
//!
//! Ownership follows the status word: a slot the kernel handed over is ours
//! until we set it back, so a mutable slice over it aliases nothing; the
//! status is read with acquire and written with release ordering, the
//! protocol `Documentation/networking/packet_mmap.rst` describes.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

/// `PACKET_RX_RING`, `PACKET_VERSION`, `TPACKET_V2`, `PACKET_COPY_THRESH` from `<linux/if_packet.h>`.
const PACKET_RX_RING: libc::c_int = 5;
const PACKET_VERSION: libc::c_int = 10;
const TPACKET_V2: libc::c_int = 1;
const PACKET_COPY_THRESH: libc::c_int = 7;
/// Slot status bits: ours (`USER`), the whole frame also queued on the socket (`COPY`).
const TP_STATUS_KERNEL: u32 = 0;
const TP_STATUS_USER: u32 = 1;
pub const TP_STATUS_COPY: u32 = 1 << 1;
/// The stripped tag's TCI, and its TPID, are valid.
pub const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
pub const TP_STATUS_VLAN_TPID_VALID: u32 = 1 << 6;

/// Bytes per slot: header, padding, virtio-net header and a frame of up to
/// 1,972 bytes (a full-size frame with two VLAN tags fits).
pub const SLOT_BYTES: usize = 2048;
/// Bytes per ring block (a power-of-two number of pages, one kernel allocation): 512 slots.
pub const BLOCK_BYTES: usize = 1 << 20;
/// Most blocks per ring: 8 MiB, 4,096 slots per socket.
pub const MAX_BLOCKS: usize = 8;

/// The fields of `struct tpacket2_hdr` a worker needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotHeader {
    /// `tp_status`.
    pub status: u32,
    /// The frame's length (without a stripped tag).
    pub len: u32,
    /// Bytes of it in the slot.
    pub snaplen: u32,
    /// Offset of the frame in the slot.
    pub mac: u16,
    /// The stripped tag, valid with `TP_STATUS_VLAN_VALID`.
    pub vlan_tci: u16,
    /// Its TPID, valid with `TP_STATUS_VLAN_TPID_VALID`.
    pub vlan_tpid: u16,
}

impl SlotHeader {
    /// Reads a slot's header: its status word (read atomically by the ring) and the bytes
    /// after it (zeroes when the slice is short).
    ///
    /// `struct tpacket2_hdr { u32 tp_status, tp_len, tp_snaplen; u16 tp_mac, tp_net;
    /// u32 tp_sec, tp_nsec; u16 tp_vlan_tci, tp_vlan_tpid; u8 tp_padding[4]; }`
    pub fn read(status: u32, after_status: &[u8]) -> SlotHeader {
        // Field offsets below are the struct's; `after_status` starts at offset 4.
        let field = |offset: usize, width: usize| after_status.get(offset - 4..offset - 4 + width);
        let u32_at = |offset| {
            field(offset, 4)
                .and_then(|b| b.try_into().ok())
                .map_or(0, u32::from_ne_bytes)
        };
        let u16_at = |offset| {
            field(offset, 2)
                .and_then(|b| b.try_into().ok())
                .map_or(0, u16::from_ne_bytes)
        };
        SlotHeader {
            status,
            len: u32_at(4),
            snaplen: u32_at(8),
            mac: u16_at(12),
            vlan_tci: u16_at(24),
            vlan_tpid: u16_at(26),
        }
    }
}

/// A `TPACKET_V2` receive ring mapped from one packet socket.
pub struct RxRing {
    base: NonNull<u8>,
    len: usize,
    slots: usize,
    /// The next slot the kernel hands over.
    head: usize,
}

// SAFETY: the ring is a private mapping of a socket owned by the same `Port`; it is used by
// the one worker thread that owns the port (moving it between threads moves the ownership).
unsafe impl Send for RxRing {}

impl RxRing {
    /// Turns the socket's receive path into a ring of `blocks` blocks (1 to [`MAX_BLOCKS`]):
    /// `TPACKET_V2`, frames that do not fit a slot also queued whole on the socket, then the
    /// ring set up and mapped. Must run after `PACKET_VNET_HDR` is set and before the socket
    /// is bound.
    pub fn new(sock: &OwnedFd, blocks: usize) -> io::Result<RxRing> {
        let blocks = blocks.clamp(1, MAX_BLOCKS);
        let fd = sock.as_raw_fd();
        for (opt, value) in [(PACKET_VERSION, TPACKET_V2), (PACKET_COPY_THRESH, 1)] {
            // SAFETY: setsockopt(2) reads one c_int from our stack.
            let rc = unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_PACKET,
                    opt,
                    (&value as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        let slots = BLOCK_BYTES / SLOT_BYTES * blocks;
        let req = libc::tpacket_req {
            tp_block_size: BLOCK_BYTES as u32,
            tp_block_nr: blocks as u32,
            tp_frame_size: SLOT_BYTES as u32,
            tp_frame_nr: slots as u32,
        };
        // SAFETY: setsockopt(2) reads `size_of::<tpacket_req>()` bytes of `req` on our stack.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_PACKET,
                PACKET_RX_RING,
                (&req as *const libc::tpacket_req).cast(),
                std::mem::size_of::<libc::tpacket_req>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let len = BLOCK_BYTES * blocks;
        // SAFETY: maps the ring just set up on our socket: a fresh shared mapping of `len`
        // bytes that no Rust object refers to yet; failure is checked below.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(map.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(RxRing {
            base,
            len,
            slots,
            head: 0,
        })
    }

    /// The status word of slot `i` (`i < self.slots`).
    fn status(&self, i: usize) -> &AtomicU32 {
        status_word(self.base, self.slots, i)
    }

    /// How many slots from the head, up to `max`, the kernel has handed over.
    pub fn ready(&self, max: usize) -> usize {
        let mut n = 0;
        while n < max.min(self.slots) {
            let i = (self.head + n) % self.slots;
            if self.status(i).load(Ordering::Acquire) & TP_STATUS_USER == 0 {
                break;
            }
            n += 1;
        }
        n
    }

    /// The first `n` slots from the head, as their status and the slot's bytes after the
    /// status word (offsets into the slot minus 4): disjoint mutable slices; `n` must not
    /// exceed what [`RxRing::ready`] returned.
    pub fn slots_mut(&mut self, n: usize) -> impl Iterator<Item = (u32, &mut [u8])> + '_ {
        let (base, head, slots) = (self.base, self.head, self.slots);
        (0..n.min(slots)).map(move |k| {
            let i = (head + k) % slots;
            let status = status_word(base, slots, i).load(Ordering::Relaxed);
            // SAFETY: slot `i` is inside the mapping (see `status`); the kernel handed it
            // over (`ready` saw TP_STATUS_USER with acquire ordering) and does not write it
            // until `release` sets it back, which needs `&mut self` and so cannot run while
            // these slices live (the kernel may still read the status word of the oldest slot,
            // to see that the ring is full: the slices leave that word out). The `n <= slots`
            // slots are distinct, so no two slices overlap.
            let rest = unsafe {
                std::slice::from_raw_parts_mut(base.as_ptr().add(i * SLOT_BYTES + 4), SLOT_BYTES - 4)
            };
            (status, rest)
        })
    }

    /// Gives the first `n` slots from the head back to the kernel and moves the head past them.
    pub fn release(&mut self, n: usize) {
        for k in 0..n.min(self.slots) {
            let i = (self.head + k) % self.slots;
            self.status(i).store(TP_STATUS_KERNEL, Ordering::Release);
        }
        self.head = (self.head + n) % self.slots;
    }
}

/// The status word of slot `i` of the ring of `slots` slots mapped at `base`.
fn status_word<'a>(base: NonNull<u8>, slots: usize, i: usize) -> &'a AtomicU32 {
    let i = i.min(slots.saturating_sub(1));
    // SAFETY: slot `i < slots` starts `i * SLOT_BYTES` bytes into the ring's mapping (slots
    // never straddle blocks: BLOCK_BYTES is a multiple of SLOT_BYTES), which lives as long as
    // the `RxRing` every caller borrows; the word is 4-byte aligned (the mapping is page
    // aligned, SLOT_BYTES a multiple of 4). The kernel writes it concurrently, so it is only
    // ever accessed atomically (slices handed out by `slots_mut` leave it out).
    unsafe { AtomicU32::from_ptr(base.as_ptr().add(i * SLOT_BYTES).cast::<u32>()) }
}

impl Drop for RxRing {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`; no slice into it outlives `self`.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_headers_are_read_field_by_field() {
        let mut slot = [0u8; 64];
        slot[4..8].copy_from_slice(&61u32.to_ne_bytes());
        slot[8..12].copy_from_slice(&60u32.to_ne_bytes());
        slot[14..16].copy_from_slice(&90u16.to_ne_bytes());
        slot[12..14].copy_from_slice(&76u16.to_ne_bytes());
        slot[24..26].copy_from_slice(&20u16.to_ne_bytes());
        slot[26..28].copy_from_slice(&0x88a8u16.to_ne_bytes());
        let status = TP_STATUS_USER | TP_STATUS_VLAN_VALID;
        let h = SlotHeader::read(status, &slot[4..]);
        assert_eq!(
            h,
            SlotHeader {
                status,
                len: 61,
                snaplen: 60,
                mac: 76,
                vlan_tci: 20,
                vlan_tpid: 0x88a8,
            }
        );
        assert_eq!(
            SlotHeader::read(1, &slot[4..10]).snaplen,
            0,
            "short slice: zeroes, no panic"
        );
    }
}
