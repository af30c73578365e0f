//! The set files of kept generations, stored once by content (format 3).
//!
//! A generation file of format 3 names its set files by SHA-256; each is an
//! *object* `objects/<sha256 hex>` of the state directory, shared by every
//! kept generation that has that file, removed when none references it.
//!
//! An object is one header line, then bytes:
//!
//! * `palisade-object 1 full`: the set file itself follows;
//! * `palisade-object 1 delta <base> <base length> <prefix> <suffix>`: the set
//!   file is the first `prefix` bytes of object `<base>`, the bytes that
//!   follow the header, and the last `suffix` bytes of the base. A `set add`
//!   appends a line to a million-line file: its object is that line and a
//!   reference, not another copy of the file.
//!
//! Chains of deltas are at most [`MAX_DELTA_DEPTH`] long and their bytes at
//! most half of the file's; past that, or when a change is not local (the
//! middle is more than an eighth of the file), the file is stored whole.
//! Every object is verified when first read (the whole chain resolved and the
//! result's SHA-256 compared with the name), and again whenever the file changes.

use std::collections::HashSet;
use std::fs;
use std::io::{self, BufRead, Read};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use palisade_rules::Digest;

use super::{open_regular, stamp, write_then_rename, Stamp, Store, StoreError, MAX_KEPT_FILE_BYTES};

/// The directory of objects inside the state directory.
pub(super) const OBJECTS_DIR: &str = "objects";
/// The start of every object's header line.
const OBJ_MAGIC: &str = "palisade-object 1";
/// The longest chain of deltas from an object to a whole file.
pub const MAX_DELTA_DEPTH: u32 = 16;
/// Files below this size are always stored whole (a delta would not save much).
const DELTA_MIN_FILE: usize = 64 << 10;
/// The longest header line read.
const MAX_HEADER: usize = 256;

/// What is known of an object verified on disk.
#[derive(Clone, Copy, Debug)]
pub(super) struct ObjInfo {
    /// The object file's identity when it was verified.
    stamp: Stamp,
    /// The object it is a delta of, if it is one.
    base: Option<Digest>,
    /// How many deltas lead to a whole file (0 for a whole file).
    depth: u32,
    /// The resolved file's length.
    len: u64,
    /// The bytes the deltas of its chain carry.
    delta_bytes: u64,
}

/// A set file to store: its name in the rule file, SHA-256 and bytes.
#[derive(Clone, Copy, Debug)]
pub struct PartRef<'a> {
    /// The name as written in the rule file.
    pub name: &'a str,
    /// SHA-256 of `bytes` (trusted: computed when the file was read).
    pub digest: Digest,
    /// The file's bytes.
    pub bytes: &'a [u8],
}

/// An object's header.
enum Header {
    Full,
    Delta {
        base: Digest,
        base_len: u64,
        prefix: u64,
        suffix: u64,
    },
}

/// Parses lowercase or uppercase hex SHA-256: exactly 64 hex digits (no
/// sign, no space: `u8::from_str_radix` alone would take a `+`).
pub(super) fn parse_digest(s: &str) -> Option<Digest> {
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(Digest(out))
}

/// The digest an object file is named by: its name is exactly 64 lowercase
/// hex digits, as [`Store::object_path`] writes it. Nothing else in the
/// objects directory is ever taken for an object (nor removed as one).
pub(super) fn object_name(name: &str) -> Option<Digest> {
    let canonical = name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    canonical.then(|| parse_digest(name))?
}

fn parse_header(line: &[u8]) -> Result<Header, String> {
    let text = std::str::from_utf8(line).map_err(|_| "bad object header")?;
    let rest = text
        .strip_prefix(OBJ_MAGIC)
        .ok_or("not a palisade set file object (or of a format this engine does not know)")?;
    let words: Vec<&str> = rest.split_ascii_whitespace().collect();
    match words.as_slice() {
        ["full"] => Ok(Header::Full),
        ["delta", base, base_len, prefix, suffix] => {
            let num = |s: &str| s.parse::<u64>().map_err(|_| format!("bad object header: {text}"));
            Ok(Header::Delta {
                base: parse_digest(base).ok_or_else(|| format!("bad object header: {text}"))?,
                base_len: num(base_len)?,
                prefix: num(prefix)?,
                suffix: num(suffix)?,
            })
        }
        _ => Err(format!("bad object header: {text}")),
    }
}

/// How many leading bytes `a` and `b` share (compared a page at a time).
fn prefix_len(a: &[u8], b: &[u8]) -> usize {
    const CHUNK: usize = 4096;
    let n = a.len().min(b.len());
    let mut i = 0;
    while i + CHUNK <= n && a[i..i + CHUNK] == b[i..i + CHUNK] {
        i += CHUNK;
    }
    while i < n && a[i] == b[i] {
        i += 1;
    }
    i
}

/// How many trailing bytes `a` and `b` share.
fn suffix_len(a: &[u8], b: &[u8]) -> usize {
    const CHUNK: usize = 4096;
    let n = a.len().min(b.len());
    let (la, lb) = (a.len(), b.len());
    let mut i = 0;
    while i + CHUNK <= n && a[la - i - CHUNK..la - i] == b[lb - i - CHUNK..lb - i] {
        i += CHUNK;
    }
    while i < n && a[la - i - 1] == b[lb - i - 1] {
        i += 1;
    }
    i
}

/// `new` as the prefix and suffix it shares with `base` (which do not overlap) and its middle.
pub(super) fn common_ends(base: &[u8], new: &[u8]) -> (usize, usize) {
    let p = prefix_len(base, new);
    let s = suffix_len(&base[p..], &new[p..]);
    (p, s)
}

impl Store {
    pub(super) fn objects_dir(&self) -> PathBuf {
        self.dir.join(OBJECTS_DIR)
    }

    /// The path of the object holding the set file with SHA-256 `digest`.
    pub fn object_path(&self, digest: &Digest) -> PathBuf {
        self.objects_dir().join(digest.to_string())
    }

    fn objects_map(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<Digest, ObjInfo>> {
        self.objects.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads the set file stored as `digest`, resolving deltas and verifying
    /// every object of the chain.
    pub(super) fn read_object(&self, digest: Digest) -> Result<Vec<u8>, String> {
        self.resolve(digest, 0).map(|(bytes, _)| bytes)
    }

    fn resolve(&self, digest: Digest, depth: u32) -> Result<(Vec<u8>, ObjInfo), String> {
        let short = &digest.to_string()[..12];
        if depth > MAX_DELTA_DEPTH {
            return Err(format!(
                "object {short}: a chain of more than {MAX_DELTA_DEPTH} deltas"
            ));
        }
        self.objects_dir_is_real()
            .map_err(|e| format!("object {short}: {e}"))?;
        let path = self.object_path(&digest);
        let (file, len) =
            open_regular(&path, MAX_KEPT_FILE_BYTES).map_err(|e| format!("object {short}: {e}"))?;
        let st = file
            .metadata()
            .map(|m| stamp(&m))
            .map_err(|e| format!("object {short}: cannot stat: {e}"))?;
        let mut data = Vec::with_capacity(len as usize);
        file.take(MAX_KEPT_FILE_BYTES + 1)
            .read_to_end(&mut data)
            .map_err(|e| format!("object {short}: cannot read: {e}"))?;
        let nl = data[..data.len().min(MAX_HEADER)]
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| format!("object {short}: no header"))?;
        let header = parse_header(&data[..nl]).map_err(|e| format!("object {short}: {e}"))?;
        let body = &data[nl + 1..];
        let (bytes, info) = match header {
            Header::Full => (
                body.to_vec(),
                ObjInfo {
                    stamp: st,
                    base: None,
                    depth: 0,
                    len: body.len() as u64,
                    delta_bytes: 0,
                },
            ),
            Header::Delta {
                base,
                base_len,
                prefix,
                suffix,
            } => {
                let (base_bytes, base_info) = self.resolve(base, depth + 1)?;
                if base_bytes.len() as u64 != base_len || prefix.saturating_add(suffix) > base_len {
                    return Err(format!("object {short}: does not fit its base"));
                }
                let (p, s) = (prefix as usize, suffix as usize);
                let mut bytes = Vec::with_capacity(p + body.len() + s);
                bytes.extend_from_slice(&base_bytes[..p]);
                bytes.extend_from_slice(body);
                bytes.extend_from_slice(&base_bytes[base_bytes.len() - s..]);
                let len = bytes.len() as u64;
                (
                    bytes,
                    ObjInfo {
                        stamp: st,
                        base: Some(base),
                        depth: base_info.depth + 1,
                        len,
                        delta_bytes: base_info.delta_bytes + body.len() as u64,
                    },
                )
            }
        };
        if Digest::of(&bytes) != digest {
            self.objects_map().remove(&digest);
            return Err(format!("object {short}: digest mismatch"));
        }
        self.objects_map().insert(digest, info);
        Ok((bytes, info))
    }

    /// Whether the object `digest` (and the chain under it) is in place and
    /// valid: checked by its files' identities when verified before, else
    /// read and verified now.
    pub(super) fn object_ok(&self, digest: Digest) -> Result<ObjInfo, String> {
        let mut at = digest;
        let mut top = None;
        for _ in 0..=MAX_DELTA_DEPTH {
            let known = self.objects_map().get(&at).copied();
            let on_disk = fs::symlink_metadata(self.object_path(&at)).map(|m| stamp(&m));
            match (known, on_disk) {
                (Some(i), Ok(st)) if i.stamp == st => {
                    top.get_or_insert(i);
                    match i.base {
                        Some(b) => at = b,
                        None => return Ok(top.unwrap_or(i)),
                    }
                }
                _ => break,
            }
        }
        self.resolve(digest, 0).map(|(_, i)| i)
    }

    /// Stores the set file `part` as an object unless a valid one is there:
    /// as a delta of one of `bases` (set files of the same name that are
    /// stored) when the change is local, else whole. The object is fsynced;
    /// the objects directory is not (the caller does it once). True when written.
    pub(super) fn put_object(&self, part: &PartRef<'_>, bases: &[PartRef<'_>]) -> Result<bool, StoreError> {
        if self.object_ok(part.digest).is_ok() {
            return Ok(false);
        }
        let new = part.bytes;
        // The closest stored base: (middle length, prefix, suffix, base, what is known of it).
        let mut best: Option<(usize, usize, usize, Digest, ObjInfo, usize)> = None;
        if new.len() >= DELTA_MIN_FILE {
            for b in bases
                .iter()
                .filter(|b| b.name == part.name && b.digest != part.digest)
            {
                let Ok(bi) = self.object_ok(b.digest) else {
                    continue;
                };
                if bi.depth >= MAX_DELTA_DEPTH || bi.len != b.bytes.len() as u64 {
                    continue;
                }
                let (p, s) = common_ends(b.bytes, new);
                let mid = new.len() - p - s;
                let fits = mid <= new.len() / 8 && bi.delta_bytes + mid as u64 <= new.len() as u64 / 2;
                if fits && best.is_none_or(|(m, ..)| mid < m) {
                    best = Some((mid, p, s, b.digest, bi, b.bytes.len()));
                }
            }
        }
        let (header, body, info) = match best {
            Some((mid, p, s, base, bi, base_len)) => (
                format!("{OBJ_MAGIC} delta {base} {base_len} {p} {s}\n"),
                &new[p..p + mid],
                (Some(base), bi.depth + 1, bi.delta_bytes + mid as u64),
            ),
            None => (format!("{OBJ_MAGIC} full\n"), new, (None, 0, 0)),
        };
        let dir = self.objects_dir();
        let err = |path: &Path, action, error| StoreError {
            path: path.to_path_buf(),
            action,
            error,
        };
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                return Err(err(&dir, "create the objects directory", e));
            }
            Err(_) => {}
            // Made just now: its entry in the state directory is made durable
            // before any object is written into it (when that fails, it is
            // removed again so that the next object makes it anew and fsyncs).
            Ok(()) => self.sync_dir().inspect_err(|_| {
                let _ = fs::remove_dir(&dir);
            })?,
        }
        self.objects_dir_is_real()
            .map_err(|why| err(&dir, "use as the objects directory", io::Error::other(why)))?;
        let total = header.len() + body.len();
        let path = self.object_path(&part.digest);
        if total as u64 > MAX_KEPT_FILE_BYTES {
            return Err(err(
                &path,
                "write",
                io::Error::other(format!(
                    "set file {} is {total} bytes, more than the limit of {MAX_KEPT_FILE_BYTES} bytes (MAX_KEPT_FILE_BYTES)",
                    part.name
                )),
            ));
        }
        let tmp = dir.join(format!(".{}.{}.tmp", part.digest, std::process::id()));
        write_then_rename(&tmp, &path, &[header.as_bytes(), body], self.durable)?;
        // (its directory entry is not durable until the objects directory is fsynced)
        self.objects_unsynced.store(true, Ordering::SeqCst);
        // Written whole just now from bytes whose digest is known: verified.
        if let Ok(m) = fs::symlink_metadata(&path) {
            let (base, depth, delta_bytes) = info;
            let info = ObjInfo {
                stamp: stamp(&m),
                base,
                depth,
                len: new.len() as u64,
                delta_bytes,
            };
            self.objects_map().insert(part.digest, info);
        }
        Ok(true)
    }

    /// The objects directory is a directory of the state directory, not a
    /// symbolic link to somewhere else (objects are opened without following
    /// links, but the directory on their path would be followed).
    pub(super) fn objects_dir_is_real(&self) -> Result<(), String> {
        match fs::symlink_metadata(self.objects_dir()) {
            Ok(m) if m.file_type().is_symlink() => {
                Err("the objects directory is a symbolic link: refused".into())
            }
            Ok(m) if !m.is_dir() => Err("the objects directory is not a directory: refused".into()),
            _ => Ok(()),
        }
    }

    /// fsyncs the objects directory when an object may have been renamed into
    /// it since it last was (by this store, or by a process before it that
    /// may have died before its fsync): then every object in it is durable.
    pub(super) fn sync_objects_dir(&self) -> Result<(), StoreError> {
        if !self.durable || !self.objects_unsynced.load(Ordering::SeqCst) {
            return Ok(());
        }
        let dir = self.objects_dir();
        fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|error| StoreError {
                path: dir,
                action: "fsync",
                error,
            })?;
        self.objects_unsynced.store(false, Ordering::SeqCst);
        Ok(())
    }

    /// The object `digest` is a delta of, read from its header (or known
    /// from a verification of the same file): `None` for a whole file or a
    /// missing one, an error when its header cannot be read and parsed.
    fn object_base(&self, digest: Digest) -> Result<Option<Digest>, String> {
        let short = &digest.to_string()[..12];
        let path = self.object_path(&digest);
        let st = match fs::symlink_metadata(&path) {
            Ok(m) => stamp(&m),
            // (missing: no generation can be read through it, nor needs its base for it)
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("object {short}: cannot stat: {e}")),
        };
        if let Some(i) = self.objects_map().get(&digest).filter(|i| i.stamp == st) {
            return Ok(i.base);
        }
        let (file, _) =
            open_regular(&path, MAX_KEPT_FILE_BYTES).map_err(|e| format!("object {short}: {e}"))?;
        let mut line = Vec::new();
        io::BufReader::new(file.take(MAX_HEADER as u64))
            .read_until(b'\n', &mut line)
            .map_err(|e| format!("object {short}: cannot read: {e}"))?;
        let line = line
            .strip_suffix(b"\n")
            .ok_or_else(|| format!("object {short}: no header"))?;
        match parse_header(line).map_err(|e| format!("object {short}: {e}"))? {
            Header::Delta { base, .. } => Ok(Some(base)),
            Header::Full => Ok(None),
        }
    }

    /// Removes every object no generation file in the directory references,
    /// directly or as the base of a delta. Called with the store's write lock
    /// held. Nothing is removed (and why is logged) when any generation file
    /// or any referenced object's header cannot be read and parsed: an error
    /// that passes (a descriptor limit, an I/O error) must not cost a kept
    /// generation its set files; an object left over is only garbage.
    pub(super) fn collect_objects(&self) {
        if let Err(why) = self.try_collect_objects() {
            log::warn!(
                "{}: unreferenced set file objects not removed: {why}",
                self.dir.display()
            );
        }
    }

    fn try_collect_objects(&self) -> Result<(), String> {
        let dir = self.objects_dir();
        match fs::symlink_metadata(&dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            _ => self.objects_dir_is_real()?,
        }
        let mut live: HashSet<Digest> = HashSet::new();
        for n in self.numbers_strict()? {
            live.extend(self.references_strict(n)?.into_iter().map(|(_, d)| d));
        }
        let mut todo: Vec<Digest> = live.iter().copied().collect();
        while let Some(d) = todo.pop() {
            if let Some(b) = self.object_base(d)? {
                if live.insert(b) {
                    todo.push(b);
                }
            }
        }
        let entries = fs::read_dir(&dir).map_err(|e| format!("{}: cannot list: {e}", dir.display()))?;
        // (not fsynced: an object that comes back after a crash is only garbage,
        // removed by the next collection; the generation files that referenced
        // the removed ones are gone for good, their removal fsynced before this)
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(d) = name.to_str().and_then(object_name) else {
                continue;
            };
            if !live.contains(&d) && fs::remove_file(e.path()).is_ok() {
                self.objects_map().remove(&d);
            }
        }
        Ok(())
    }
}
