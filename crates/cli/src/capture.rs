//! Reading classic pcap and pcapng captures into Ethernet frames.
//!
//! Shared by `inspect` and `classify`. The file is read into memory once and
//! walked with `pcap-file`'s slice parsers; records are taken raw, so a
//! snap length of 0 (or records longer than the snap length, or an
//! original length larger than it) is not an error: the parser sees exactly
//! the captured bytes of each record. Only Ethernet (link type 1) is
//! accepted, since that is what `palisade_packet::parse` reads.
//!
//! Errors name the file and the cause in one line, e.g.
//! `x.pcap: truncated capture: record 4 at byte 530 is cut short`.

use std::fmt;
use std::path::{Path, PathBuf};

use pcap_file::pcap::PcapParser;
use pcap_file::pcapng::{Block, PcapNgParser};
use pcap_file::{DataLink, PcapError};

/// Why a capture could not be read.
#[derive(Debug)]
pub struct CaptureError {
    /// The capture file.
    pub path: PathBuf,
    /// What went wrong, for people.
    pub cause: String,
    /// How many frames were delivered before the error.
    pub frames_before: u64,
}

impl fmt::Display for CaptureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.cause)
    }
}

impl std::error::Error for CaptureError {}

/// One frame of a capture, borrowed from the file buffer.
#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    /// 1-based frame number, as tshark counts.
    pub number: u64,
    /// The captured bytes (may be shorter than the frame was on the wire).
    pub data: &'a [u8],
}

const PCAP_MAGICS: [[u8; 4]; 4] = [
    [0xd4, 0xc3, 0xb2, 0xa1],
    [0xa1, 0xb2, 0xc3, 0xd4],
    [0x4d, 0x3c, 0xb2, 0xa1],
    [0xa1, 0xb2, 0x3c, 0x4d],
];
const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];

/// Calls `each` for every frame of the capture at `path`, in order.
///
/// Frames before a broken or cut record are delivered before the error is
/// returned, so a caller may print them first; the error's `frames_before`
/// says how many there were. Returns the number of frames.
///
/// Only regular files are read: a device or FIFO (`/dev/zero`, a pipe) would
/// never end, so it is refused rather than read until memory runs out.
pub fn for_each_frame(path: &Path, each: impl FnMut(Frame<'_>)) -> Result<u64, CaptureError> {
    let fail = |cause: String| CaptureError {
        path: path.to_path_buf(),
        cause,
        frames_before: 0,
    };
    let meta = std::fs::metadata(path).map_err(|e| fail(io_cause(&e)))?;
    if !meta.is_file() {
        return Err(fail(
            "not a regular file (a capture must be a pcap or pcapng file)".to_string(),
        ));
    }
    let data = std::fs::read(path).map_err(|e| fail(io_cause(&e)))?;
    for_each_frame_in(path, &data, each)
}

/// [`for_each_frame`] over capture bytes already in memory (`path` names
/// them in errors). Never panics, whatever the bytes (fuzz target `capture`).
pub fn for_each_frame_in(
    path: &Path,
    data: &[u8],
    mut each: impl FnMut(Frame<'_>),
) -> Result<u64, CaptureError> {
    let mut count = 0u64;
    let err = |count: u64, cause: String| CaptureError {
        path: path.to_path_buf(),
        cause,
        frames_before: count,
    };
    let Some(magic) = data.get(..4) else {
        return Err(err(
            0,
            format!("not a pcap or pcapng capture: only {} bytes", data.len()),
        ));
    };
    if PCAP_MAGICS.iter().any(|m| m == magic) {
        let (mut rem, parser) =
            PcapParser::new(data).map_err(|e| err(0, format!("bad pcap header: {}", pcap_cause(&e))))?;
        // The upper bits of the field may carry FCS information (pcap spec,
        // "LinkType and additional information"); the link type is the low 16.
        let link = DataLink::from(u32::from(parser.header().datalink) & 0xffff);
        if link != DataLink::ETHERNET {
            return Err(err(
                0,
                format!("unsupported link type {link:?} (only Ethernet is supported)"),
            ));
        }
        while !rem.is_empty() {
            let at = data.len() - rem.len();
            match parser.next_raw_packet(rem) {
                Ok((r, pkt)) => {
                    count += 1;
                    each(Frame {
                        number: count,
                        data: &pkt.data,
                    });
                    rem = r;
                }
                Err(e) => {
                    let why = match e {
                        PcapError::IncompleteBuffer => "is cut short".to_string(),
                        e => pcap_cause(&e),
                    };
                    return Err(err(
                        count,
                        format!("truncated capture: record {} at byte {at} {why}", count + 1),
                    ));
                }
            }
        }
        Ok(count)
    } else if magic == PCAPNG_MAGIC {
        let (mut rem, mut parser) =
            PcapNgParser::new(data).map_err(|e| err(0, format!("bad pcapng header: {}", pcap_cause(&e))))?;
        while !rem.is_empty() {
            let at = data.len() - rem.len();
            let (r, block) = parser.next_block(rem).map_err(|e| {
                let why = match e {
                    PcapError::IncompleteBuffer => "is cut short".to_string(),
                    e => pcap_cause(&e),
                };
                err(
                    count,
                    format!("truncated or damaged capture: block at byte {at} {why}"),
                )
            })?;
            rem = r;
            let (iface, data) = match &block {
                Block::EnhancedPacket(p) => (p.interface_id, &p.data),
                Block::SimplePacket(p) => (0, &p.data),
                Block::Packet(p) => (u32::from(p.interface_id), &p.data),
                _ => continue,
            };
            let Some(desc) = parser.interfaces().get(iface as usize) else {
                return Err(err(
                    count,
                    format!("block at byte {at} names interface {iface}, which is not described"),
                ));
            };
            if desc.linktype != DataLink::ETHERNET {
                return Err(err(
                    count,
                    format!(
                        "unsupported link type {:?} on interface {iface} (only Ethernet is supported)",
                        desc.linktype
                    ),
                ));
            }
            count += 1;
            each(Frame { number: count, data });
        }
        Ok(count)
    } else {
        Err(err(
            0,
            format!("not a pcap or pcapng capture (starts with {:02x?})", magic),
        ))
    }
}

fn io_cause(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => e.to_string(),
    }
}

fn pcap_cause(e: &PcapError) -> String {
    match e {
        PcapError::IncompleteBuffer => "file is cut short".to_string(),
        PcapError::IoError(io) => io.to_string(),
        PcapError::InvalidField(what) => format!("invalid field ({what})"),
        other => other.to_string(),
    }
}
