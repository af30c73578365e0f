//! The writer thread: drains the workers' queues and the control events into
//! the outputs, and never lets a bad output reach the data path.
//!
//! Every round it takes what is queued, encodes it into one buffer per output
//! and writes each buffer with as few system calls as it can. A write that
//! fails part-way (a full disk: `ENOSPC`) is cut back to the last whole
//! record (the file is truncated to it), so the log never holds half a line
//! or half a pcapng block; the records that did not fit are counted as write
//! errors and the writer goes on (a later round writes again once there is
//! room). A file that vanished (deleted, or the path now names another file,
//! as after logrotate's rename) is reopened within a second; if it cannot be
//! created, records are counted as write errors until it can. A reopen can
//! also be asked for (SIGUSR1, the control request `log-reopen`).
//!
//! A slow or stuck write blocks only this thread: the workers' queues fill
//! and they drop (and count) records, never frames.
//!
//! The pcapng output starts a new section (header and interfaces) whenever
//! it (re)opens a file or a write failed, so the file is always readable;
//! each frame's block carries a comment naming acl, rule and generation.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::DataLink;

use crate::logger::{Lane, LogConfig, OutputStats, Shared, Target};
use crate::record::{event_json, frame_json, pcap_comment, FrameRecord};

/// Records taken from one worker's queue per round (so one busy worker cannot starve the rest).
const ROUND: usize = 512;
/// How long the writer sleeps when there is nothing to do (producers never wake it).
const IDLE: Duration = Duration::from_millis(10);
/// How often an open file's path is checked (vanished, replaced).
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// An output file: where it should be, and the open file if there is one.
struct FileSink {
    path: PathBuf,
    file: Option<File>,
    /// Device and inode of the open file, to notice the path naming another one.
    ident: Option<(u64, u64)>,
    next_check: Instant,
}

impl FileSink {
    fn open(path: &Path) -> io::Result<FileSink> {
        let mut sink = FileSink {
            path: path.to_path_buf(),
            file: None,
            ident: None,
            next_check: Instant::now() + CHECK_EVERY,
        };
        sink.reopen()?;
        Ok(sink)
    }

    fn reopen(&mut self) -> io::Result<()> {
        self.file = None;
        self.ident = None;
        self.next_check = Instant::now() + CHECK_EVERY;
        let file = OpenOptions::new().create(true).append(true).open(&self.path)?;
        let meta = file.metadata()?;
        self.ident = Some((meta.dev(), meta.ino()));
        self.file = Some(file);
        Ok(())
    }

    /// True when the path no longer names the open file (or none is open) and it is time to look.
    fn needs_reopen(&mut self) -> bool {
        let now = Instant::now();
        if now < self.next_check {
            return false;
        }
        self.next_check = now + CHECK_EVERY;
        match std::fs::metadata(&self.path) {
            Ok(m) => self.ident != Some((m.dev(), m.ino())),
            Err(_) => true,
        }
    }

    /// Appends `buf`; on failure truncates back to the last whole record
    /// (`ends`: the end offset of each record in `buf`) and returns how many
    /// bytes (a record boundary) were kept, with the error.
    fn append(&mut self, buf: &[u8], ends: &[usize]) -> Result<(), (usize, io::Error)> {
        let Some(file) = self.file.as_mut() else {
            return Err((0, io::Error::new(io::ErrorKind::NotFound, "not open")));
        };
        let before = file.metadata().map(|m| m.len());
        let mut done = 0;
        while done < buf.len() {
            match file.write(&buf[done..]) {
                Ok(0) => {
                    return Err(cut(file, before, done, ends, io::ErrorKind::WriteZero.into()));
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(cut(file, before, done, ends, e)),
            }
        }
        Ok(())
    }
}

/// After a failed write of which `done` bytes landed: keeps whole records only.
fn cut(
    file: &File,
    before: io::Result<u64>,
    done: usize,
    ends: &[usize],
    e: io::Error,
) -> (usize, io::Error) {
    let keep = ends
        .iter()
        .copied()
        .take_while(|&end| end <= done)
        .last()
        .unwrap_or(0);
    if keep < done {
        if let Ok(len) = before {
            // Best effort: with the disk full, shrinking a file still works.
            let _ = file.set_len(len + keep as u64);
        }
    }
    (keep, e)
}

/// Where the JSON lines go.
enum JsonSink {
    Stdout,
    File(FileSink),
}

/// A record's kind in a round's buffer.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Frame,
    Event,
    /// pcapng section header or interface description (not a record).
    Meta,
}

/// One output's buffer for a round: the bytes and each record's end and kind.
#[derive(Default)]
struct Round {
    buf: Vec<u8>,
    ends: Vec<(usize, Kind)>,
}

impl Round {
    fn mark(&mut self, kind: Kind) {
        self.ends.push((self.buf.len(), kind));
    }

    fn clear(&mut self) {
        self.buf.clear();
        self.ends.clear();
    }

    /// Records of `kind` in the part of the buffer from `from` on.
    fn count_from(&self, from: usize, kind: Kind) -> u64 {
        self.ends
            .iter()
            .filter(|(end, k)| *end > from && *k == kind)
            .count() as u64
    }
}

/// The pcapng output and its current section.
struct PcapOut {
    sink: FileSink,
    /// Encoder of the current section (writes into a buffer); `None`: a new section starts next round.
    section: Option<PcapNgWriter<Vec<u8>>>,
    /// Interface ids of the current section, by port name.
    ifaces: HashMap<String, u32>,
    snaplen: u32,
}

impl PcapOut {
    fn encode(&mut self, round: &mut Round, rec: &FrameRecord) {
        let Some((plan, rule)) = rec.names() else { return };
        if self.section.is_none() {
            match PcapNgWriter::new(Vec::new()) {
                Ok(w) => self.section = Some(w),
                Err(_) => return,
            }
            self.ifaces.clear();
            if let Some(w) = self.section.as_mut() {
                round.buf.append(w.get_mut());
                round.mark(Kind::Meta);
            }
        }
        let Some(w) = self.section.as_mut() else { return };
        let port = plan.ports.get(rec.port as usize).map_or("?", String::as_str);
        let id = match self.ifaces.get(port) {
            Some(&id) => id,
            None => {
                let idb = InterfaceDescriptionBlock {
                    linktype: DataLink::ETHERNET,
                    snaplen: self.snaplen,
                    options: vec![
                        InterfaceDescriptionOption::IfName(Cow::Owned(port.to_owned())),
                        // Timestamps are written in nanoseconds.
                        InterfaceDescriptionOption::IfTsResol(9),
                    ],
                };
                if w.write_pcapng_block(idb).is_err() {
                    return;
                }
                let id = self.ifaces.len() as u32;
                self.ifaces.insert(port.to_owned(), id);
                round.buf.append(w.get_mut());
                round.mark(Kind::Meta);
                id
            }
        };
        let epb = EnhancedPacketBlock {
            interface_id: id,
            timestamp: Duration::from_nanos(rec.unix_ns),
            original_len: rec.len,
            data: Cow::Borrowed(rec.bytes()),
            options: vec![EnhancedPacketOption::Comment(Cow::Owned(pcap_comment(
                rec, plan, rule,
            )))],
        };
        if w.write_pcapng_block(epb).is_ok() {
            round.buf.append(w.get_mut());
            round.mark(Kind::Frame);
        }
    }
}

/// The outputs of a logger.
pub(crate) struct Outputs {
    json: Option<JsonSink>,
    pcap: Option<PcapOut>,
}

impl Outputs {
    /// Opens the outputs; `Ok(None)` when none is configured.
    pub(crate) fn open(config: &LogConfig) -> Result<Option<Outputs>, String> {
        let json = match &config.json {
            None => None,
            Some(Target::Stdout) => Some(JsonSink::Stdout),
            Some(Target::File(p)) => Some(JsonSink::File(
                FileSink::open(p).map_err(|e| format!("--log {}: cannot open: {e}", p.display()))?,
            )),
        };
        let pcap = match &config.pcap {
            None => None,
            Some(p) => Some(PcapOut {
                sink: FileSink::open(p)
                    .map_err(|e| format!("--log-pcap {}: cannot open: {e}", p.display()))?,
                section: None,
                ifaces: HashMap::new(),
                snaplen: config.snaplen as u32,
            }),
        };
        Ok((json.is_some() || pcap.is_some()).then_some(Outputs { json, pcap }))
    }

    /// Reopens every file output; the first error, if any.
    fn reopen(&mut self, shared: &Shared) -> Result<(), String> {
        let mut result = Ok(());
        if let Some(JsonSink::File(f)) = self.json.as_mut() {
            match f.reopen() {
                Ok(()) => {
                    shared.json.reopened.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    let msg = format!("--log {}: cannot reopen: {e}", f.path.display());
                    shared.json.error(0, msg.clone());
                    result = Err(msg);
                }
            }
        }
        if let Some(p) = self.pcap.as_mut() {
            p.section = None;
            match p.sink.reopen() {
                Ok(()) => {
                    shared.pcap.reopened.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    let msg = format!("--log-pcap {}: cannot reopen: {e}", p.sink.path.display());
                    shared.pcap.error(0, msg.clone());
                    result = result.and(Err(msg));
                }
            }
        }
        result
    }

    /// Reopens files whose path vanished or now names another file (checked once a second).
    fn follow_paths(&mut self, shared: &Shared) {
        if let Some(JsonSink::File(f)) = self.json.as_mut() {
            if f.needs_reopen() {
                if let Err(e) = f.reopen() {
                    shared
                        .json
                        .error(0, format!("--log {}: cannot reopen: {e}", f.path.display()));
                }
            }
        }
        if let Some(p) = self.pcap.as_mut() {
            if p.sink.needs_reopen() {
                p.section = None;
                if let Err(e) = p.sink.reopen() {
                    shared.pcap.error(
                        0,
                        format!("--log-pcap {}: cannot reopen: {e}", p.sink.path.display()),
                    );
                }
            }
        }
    }
}

/// Writes a round's buffer to a file sink, counting what was written and what was lost.
fn write_file(sink: &mut FileSink, round: &Round, stats: &OutputStats, what: &str) -> bool {
    let ends: Vec<usize> = round.ends.iter().map(|(e, _)| *e).collect();
    match sink.append(&round.buf, &ends) {
        Ok(()) => {
            stats
                .frames
                .fetch_add(round.count_from(0, Kind::Frame), Ordering::Relaxed);
            stats
                .events
                .fetch_add(round.count_from(0, Kind::Event), Ordering::Relaxed);
            true
        }
        Err((kept, e)) => {
            let written = |k| round.count_from(0, k) - round.count_from(kept, k);
            stats.frames.fetch_add(written(Kind::Frame), Ordering::Relaxed);
            stats.events.fetch_add(written(Kind::Event), Ordering::Relaxed);
            let lost = round.count_from(kept, Kind::Frame) + round.count_from(kept, Kind::Event);
            stats.error(lost, format!("{what} {}: {e}", sink.path.display()));
            false
        }
    }
}

/// The writer thread's loop (see the module docs).
pub(crate) fn run(shared: &Shared, mut outputs: Outputs) {
    let mut lanes: Vec<Lane> = Vec::new();
    let mut json = Round::default();
    let mut pcap = Round::default();
    loop {
        let stopping = shared.stop.load(Ordering::Acquire);
        lanes.append(&mut shared.new_lanes.lock().unwrap_or_else(|e| e.into_inner()));
        if shared.reopen.swap(false, Ordering::AcqRel) {
            let result = outputs.reopen(shared);
            *shared.reopen_result.lock().unwrap_or_else(|e| e.into_inner()) = result;
            shared.reopens_done.fetch_add(1, Ordering::Release);
        }
        outputs.follow_paths(shared);

        json.clear();
        pcap.clear();
        let mut handled = 0u64;
        let events: Vec<_> = shared
            .events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect();
        for ev in &events {
            if outputs.json.is_some() {
                event_json(&mut json.buf, ev);
                json.mark(Kind::Event);
            }
            handled += 1;
        }
        for lane in &lanes {
            for _ in 0..ROUND {
                let Ok(mut rec) = lane.full.try_recv() else { break };
                if let Some((plan, rule)) = rec.names() {
                    if outputs.json.is_some() {
                        frame_json(&mut json.buf, &rec, plan, rule);
                        json.mark(Kind::Frame);
                    }
                }
                if let Some(p) = outputs.pcap.as_mut() {
                    p.encode(&mut pcap, &rec);
                }
                // The plan is released here, never on the data path.
                rec.plan = None;
                let _ = lane.free.try_send(rec);
                handled += 1;
            }
        }

        if !json.ends.is_empty() {
            match outputs.json.as_mut() {
                Some(JsonSink::File(f)) => {
                    write_file(f, &json, &shared.json, "--log");
                }
                Some(JsonSink::Stdout) => {
                    let mut out = io::stdout().lock();
                    match out.write_all(&json.buf).and_then(|()| out.flush()) {
                        Ok(()) => {
                            let s = &shared.json;
                            s.frames
                                .fetch_add(json.count_from(0, Kind::Frame), Ordering::Relaxed);
                            s.events
                                .fetch_add(json.count_from(0, Kind::Event), Ordering::Relaxed);
                        }
                        Err(e) => shared.json.error(
                            json.count_from(0, Kind::Frame) + json.count_from(0, Kind::Event),
                            format!("--log -: {e}"),
                        ),
                    }
                }
                None => {}
            }
        }
        if !pcap.ends.is_empty() {
            if let Some(p) = outputs.pcap.as_mut() {
                if !write_file(&mut p.sink, &pcap, &shared.pcap, "--log-pcap") {
                    // What landed ends at a block boundary; the next round starts a new section.
                    p.section = None;
                }
            }
        }
        shared.processed.fetch_add(handled, Ordering::Release);
        if handled == 0 {
            if stopping {
                return;
            }
            std::thread::park_timeout(IDLE);
        }
    }
}
