//! Last-known-good: generations persisted in the state directory, never torn.
//!
//! Each kept generation is one file, `gen-<number>.lkg`: a header line, one
//! line of JSON metadata (generation, digest, the rule file's length, source,
//! time, outcome), then the rule file's bytes exactly. A generation is the
//! rule file plus its *companions* (the set files a rule file names): the
//! digest covers them all ([`Digest::of_parts`]).
//!
//! * `palisade-lkg 3` (a generation with set files): the metadata names each
//!   set file and its SHA-256; the bytes are an object `objects/<sha256>` of
//!   the state directory, stored once for every generation that has it, and
//!   for a set file that changed a little (`set add`, `set del`) stored as a
//!   delta of the one before: an object is a header line, `palisade-object 1
//!   full` or `palisade-object 1 delta <base sha256> <base length> <prefix>
//!   <suffix>`, then the file, or the bytes between the base's first `prefix`
//!   and last `suffix` bytes (chains of at most [`MAX_DELTA_DEPTH`]). Every
//!   object is verified (chain resolved, SHA-256 compared with its name)
//!   when first read. Objects no generation file references are removed
//!   when generations are pruned, when the store is opened and when a set
//!   change is refused; never while any generation file or object header
//!   cannot be read and parsed (an object left over is only garbage; one
//!   removed that a kept generation needs would lose that generation).
//! * `palisade-lkg 2` (a generation without set files, as before): the rule
//!   file alone. Files of format 2 written with their set files inline (by
//!   earlier engines) are still read, and so are those of format 1 (one rule
//!   file, a `confirmed` flag): an older state directory boots as it is.
//!
//! A file is written to a temporary name, fsynced, renamed into place and the
//! directory fsynced, so after a crash at any instant the directory holds
//! either the complete old set of files or the complete new one; a
//! generation's objects are in place (and the objects directory fsynced)
//! before its generation file is renamed into place. On reading,
//! a file whose length or digest does not match its metadata, or whose number
//! is not the one in its name, is ignored (it cannot be produced by this
//! writer, but a disk can still lie, and a state directory can be tampered with).
//!
//! The directory is private and treated as hostile input all the same:
//!
//! * it is created (or tightened) to mode 0700 and every file in it is 0600,
//!   whatever the umask; a state directory that is a symbolic link, or is
//!   owned by another user, is refused;
//! * every file is opened with `O_NOFOLLOW | O_NONBLOCK` and checked with
//!   `fstat` to be a regular file within [`MAX_KEPT_FILE_BYTES`] before it
//!   is read, so a symlink (to `/dev/zero`, say), a FIFO or a device in place
//!   of a generation is refused at once, never read or waited on;
//! * one process at a time: [`Store::open_locked`] takes an exclusive `flock`
//!   on `lock` (which records the holder's pid for the error message);
//! * generation numbers only grow: only valid files count, the next number is
//!   computed with checked arithmetic, and a high-water mark (`high-water`) is
//!   persisted before a number is handed out, so a number is never reused
//!   even after the file that carried it was pruned or lost in a crash;
//! * pruning keeps the newest `keep` generations *and* whatever the caller
//!   protects (the active generation and the newest confirmed one), whatever
//!   their numbers.
//!
//! ```
//! use palisade_engine::lkg::{Companion, Kept, Outcome, Store};
//! let dir = std::env::temp_dir().join(format!("palisade-lkg-doc-{}", std::process::id()));
//! let store = Store::open_locked(&dir, 10, true).unwrap();
//! let n = store.next_generation(0).unwrap();
//! let sets = vec![Companion { name: "block.txt".into(), bytes: b"192.0.2.0/24\n".to_vec() }];
//! store.save(&Kept::with_companions(n, "edge.toml", b"version = 1\n".to_vec(), sets, Outcome::Confirmed)).unwrap();
//! store.prune(&[n]);
//! let newest = store.newest(true).unwrap();
//! assert_eq!((newest.generation, newest.bytes.as_slice()), (1, &b"version = 1\n"[..]));
//! assert_eq!(newest.companions[0].name, "block.txt");
//! drop(store);
//! std::fs::remove_dir_all(&dir).unwrap();
//! ```

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use palisade_rules::Digest;
use serde::{Deserialize, Serialize};

mod objects;
pub use objects::{PartRef, MAX_DELTA_DEPTH};

/// The header line of the current format for a generation with set files:
/// they are objects of the state directory, referenced by SHA-256.
const MAGIC_V3: &str = "palisade-lkg 3";
/// The header line of a generation without set files (and of the previous
/// format, which carried the set files inline: still read).
const MAGIC: &str = "palisade-lkg 2";
/// The header line of the previous format (one rule file, a `confirmed` flag): still read.
const MAGIC_V1: &str = "palisade-lkg 1";
/// The header line of the high-water mark file.
const HWM_MAGIC: &str = "palisade-hwm 1";
/// Name of the lock file.
const LOCK_FILE: &str = "lock";
/// Name of the high-water mark file.
const HWM_FILE: &str = "high-water";
/// How long [`Store::open_locked`] waits for another holder of the lock to let go.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The largest kept-generation file read (256 MiB: a 16 MiB rule file plus its
/// set files and metadata). A bigger file is refused without being read.
pub const MAX_KEPT_FILE_BYTES: u64 = 256 << 20;

/// A file a generation carries besides the rule file (a set file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Companion {
    /// The name as written in the rule file (e.g. `blocklist.txt`).
    pub name: String,
    /// The file's bytes.
    pub bytes: Vec<u8>,
}

impl Companion {
    /// A set file as a generation carries it.
    pub(crate) fn of(file: &palisade_rules::CompanionFile) -> Self {
        Companion {
            name: file.name.clone(),
            bytes: file.bytes.to_vec(),
        }
    }
}

/// What became of a kept generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Outcome {
    /// Active without a confirm window, or confirmed in time: boot may start from it.
    Confirmed,
    /// Published with a confirm window that is still open.
    Pending,
    /// Its confirm window closed without a confirmation: the rules before it came back.
    Reverted,
    /// Never confirmed: replaced while pending, or the engine stopped while it was pending.
    Unconfirmed,
}

impl Outcome {
    /// `confirmed`, `pending`, `reverted` or `unconfirmed`.
    ///
    /// ```
    /// assert_eq!(palisade_engine::lkg::Outcome::Reverted.as_str(), "reverted");
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Confirmed => "confirmed",
            Outcome::Pending => "pending",
            Outcome::Reverted => "reverted",
            Outcome::Unconfirmed => "unconfirmed",
        }
    }
}

/// One persisted generation: its metadata, the rule file's bytes and its companions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kept {
    /// The generation number.
    pub generation: u64,
    /// The generation's digest: [`Digest::of_parts`] of `bytes` and `companions`
    /// (the rule file's SHA-256 when there is no companion).
    pub digest: Digest,
    /// Where the rules came from (a path, or a note such as `control socket`).
    pub source: String,
    /// When it was saved, seconds since the Unix epoch.
    pub saved_at: u64,
    /// What became of it; boot starts only from a [`Outcome::Confirmed`] one.
    pub outcome: Outcome,
    /// The rule file, byte for byte.
    pub bytes: Vec<u8>,
    /// The companion files, in the order the rule file names them.
    pub companions: Vec<Companion>,
}

impl Kept {
    /// A generation of one rule file to keep, digest computed, saved now;
    /// `confirmed = false` makes it [`Outcome::Pending`].
    ///
    /// ```
    /// let k = palisade_engine::lkg::Kept::new(3, "r.toml", b"version = 1\n".to_vec(), true);
    /// assert!(k.is_confirmed());
    /// assert_eq!(k.digest, palisade_rules::Digest::of(b"version = 1\n"));
    /// ```
    pub fn new(generation: u64, source: &str, bytes: Vec<u8>, confirmed: bool) -> Self {
        let outcome = if confirmed {
            Outcome::Confirmed
        } else {
            Outcome::Pending
        };
        Kept::with_companions(generation, source, bytes, Vec::new(), outcome)
    }

    /// A generation of a rule file and its companion files, digest computed, saved now.
    ///
    /// ```
    /// use palisade_engine::lkg::{Companion, Kept, Outcome};
    /// let c = vec![Companion { name: "s.txt".into(), bytes: b"10.0.0.0/8\n".to_vec() }];
    /// let k = Kept::with_companions(1, "r.toml", b"x".to_vec(), c, Outcome::Pending);
    /// assert_eq!(k.digest, palisade_rules::Digest::of_parts(b"x", &[("s.txt", b"10.0.0.0/8\n")]));
    /// ```
    pub fn with_companions(
        generation: u64,
        source: &str,
        bytes: Vec<u8>,
        companions: Vec<Companion>,
        outcome: Outcome,
    ) -> Self {
        Kept {
            generation,
            digest: digest_of(&bytes, &companions),
            source: source.to_string(),
            saved_at: unix_now(),
            outcome,
            bytes,
            companions,
        }
    }

    /// Whether boot may start from it (its outcome is [`Outcome::Confirmed`]).
    pub fn is_confirmed(&self) -> bool {
        self.outcome == Outcome::Confirmed
    }

    /// The metadata alone (what status lists).
    pub fn info(&self) -> KeptInfo {
        KeptInfo {
            generation: self.generation,
            digest: self.digest,
            source: self.source.clone(),
            saved_at: self.saved_at,
            outcome: self.outcome,
        }
    }
}

/// The digest of a generation's parts ([`Digest::of_parts`]).
pub fn digest_of(bytes: &[u8], companions: &[Companion]) -> Digest {
    let parts: Vec<(&str, &[u8])> = companions
        .iter()
        .map(|c| (c.name.as_str(), c.bytes.as_slice()))
        .collect();
    Digest::of_parts(bytes, &parts)
}

/// A kept generation's metadata, without its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeptInfo {
    /// The generation number.
    pub generation: u64,
    /// The generation's digest.
    pub digest: Digest,
    /// Where the rules came from.
    pub source: String,
    /// When it was saved, seconds since the Unix epoch.
    pub saved_at: u64,
    /// What became of it.
    pub outcome: Outcome,
}

#[derive(Serialize, Deserialize)]
struct CompanionMeta {
    name: String,
    len: usize,
}

/// A set file of a format 3 generation: its name and its object.
#[derive(Serialize, Deserialize)]
struct ObjectMeta {
    name: String,
    sha256: String,
}

#[derive(Serialize, Deserialize)]
struct Meta {
    generation: u64,
    digest: String,
    len: usize,
    source: String,
    saved_at: u64,
    /// Format 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    outcome: Option<Outcome>,
    /// Format 2: the set files follow the rule file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    companions: Vec<CompanionMeta>,
    /// Format 3: the set files are objects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    objects: Vec<ObjectMeta>,
    /// Format 1 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    confirmed: Option<bool>,
}

/// Why the state directory could not be used: names the path and the OS cause.
#[derive(Debug)]
pub struct StoreError {
    /// The file or directory concerned.
    pub path: PathBuf,
    /// What was being done.
    pub action: &'static str,
    /// The OS error.
    pub error: io::Error,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: cannot {}: {}",
            self.path.display(),
            self.action,
            self.error
        )
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// Writes `parts` into `tmp` (created afresh, mode 0600 whatever the umask,
/// never through a symlink), fsyncs it when `durable`, and renames it to
/// `final_path`; on any error the temporary file is removed. The
/// directory's fsync is the caller's (now, or before anything relies on the name).
fn write_then_rename(
    tmp: &Path,
    final_path: &Path,
    parts: &[&[u8]],
    durable: bool,
) -> Result<(), StoreError> {
    let write = || -> io::Result<()> {
        let _ = fs::remove_file(tmp);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(tmp)?;
        // 0600 whatever the umask.
        f.set_permissions(fs::Permissions::from_mode(0o600))?;
        for p in parts {
            f.write_all(p)?;
        }
        if durable {
            f.sync_all()?;
        }
        Ok(())
    };
    if let Err(error) = write() {
        let _ = fs::remove_file(tmp);
        return Err(StoreError {
            path: tmp.to_path_buf(),
            action: "write",
            error,
        });
    }
    if let Err(error) = fs::rename(tmp, final_path) {
        let _ = fs::remove_file(tmp);
        return Err(StoreError {
            path: final_path.to_path_buf(),
            action: "rename into place",
            error,
        });
    }
    Ok(())
}

/// Why one kept generation could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeptError {
    /// No file of that generation in the state directory.
    NotKept {
        /// The generation asked for.
        generation: u64,
    },
    /// The file is there but is refused (not a regular file, too big, torn, tampered with...).
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
}

impl fmt::Display for KeptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeptError::NotKept { generation } => write!(f, "generation {generation} is not kept"),
            KeptError::Invalid { path, why } => write!(f, "{}: {why}", path.display()),
        }
    }
}

impl std::error::Error for KeptError {}

/// The state directory holding kept generations.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    keep: usize,
    durable: bool,
    /// The exclusive lock on the directory, held while this store (or a clone) lives.
    lock: Option<Arc<File>>,
    /// What [`Store::info`] found per file, by the file's identity on disk: a
    /// scan re-reads (and re-verifies) only files that changed since.
    seen: Arc<std::sync::Mutex<Seen>>,
    /// The set file objects verified (or written) so far, by SHA-256.
    objects: Arc<std::sync::Mutex<HashMap<Digest, objects::ObjInfo>>>,
    /// Held while a generation file and its objects are written, and while
    /// unreferenced objects are removed: never one in between.
    writing: Arc<std::sync::Mutex<()>>,
    /// Held while the high-water mark is read and raised: it only grows.
    high_water: Arc<std::sync::Mutex<()>>,
    /// A number [`Store::reserve_generation`] persisted for the next generation.
    reserved: Arc<std::sync::Mutex<Option<u64>>>,
    /// An object may have been renamed into the objects directory since it was
    /// last fsynced (true at first: a process before this one may have died
    /// between the two), so the next generation file that references objects
    /// fsyncs it first.
    objects_unsynced: Arc<std::sync::atomic::AtomicBool>,
}

/// Per generation number: the file's stamp when it was last verified, what
/// that found, and the set file objects it references (format 3).
type Seen = HashMap<u64, (Stamp, Result<KeptInfo, String>, Refs)>;

/// The set files a generation file references: name and object.
type Refs = Vec<(String, Digest)>;

/// A file's identity and state on disk (`lstat`): inode, size, modification
/// and change times (the change time cannot be set back by a writer).
type Stamp = (u64, u64, u64, i64, i64, i64, i64, u32);

fn stamp(m: &fs::Metadata) -> Stamp {
    (
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
        m.mode(),
    )
}

/// The effective uid of this process (the owner of `/proc/self`), when known.
fn effective_uid() -> Option<u32> {
    fs::metadata("/proc/self").ok().map(|m| m.uid())
}

/// Opens a file of the state directory for reading without following a symlink
/// and without blocking on a FIFO; checks it is a regular file of at most `max` bytes.
fn open_regular(path: &Path, max: u64) -> Result<(File, u64), String> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => "is a symbolic link: refused".to_string(),
            _ => format!("cannot open: {e}"),
        })?;
    let meta = file.metadata().map_err(|e| format!("cannot stat: {e}"))?;
    if !meta.file_type().is_file() {
        return Err("not a regular file: refused".into());
    }
    if meta.len() > max {
        return Err(format!(
            "the file is {} bytes, more than the limit of {max} bytes",
            meta.len()
        ));
    }
    Ok((file, meta.len()))
}

/// Reads a file checked by [`open_regular`], never past `max` bytes.
fn read_regular(path: &Path, max: u64) -> Result<Vec<u8>, String> {
    let (file, len) = open_regular(path, max)?;
    let mut data = Vec::with_capacity(len as usize);
    file.take(max + 1)
        .read_to_end(&mut data)
        .map_err(|e| format!("cannot read: {e}"))?;
    if data.len() as u64 > max {
        return Err(format!("grew past the limit of {max} bytes while being read"));
    }
    Ok(data)
}

impl Store {
    /// Opens (creating if needed) the state directory `dir`, keeping the newest
    /// `keep` generations. `durable = false` skips every fsync: only for tests
    /// and benchmarks that must not wait on the disk.
    ///
    /// The directory is made mode 0700 whatever the umask; a directory that is
    /// a symbolic link, is no directory, or is owned by another user is refused.
    /// Opening does not lock: use [`Store::open_locked`] to write.
    pub fn open(dir: &Path, keep: usize, durable: bool) -> Result<Store, StoreError> {
        let err = |action, error| StoreError {
            path: dir.to_path_buf(),
            action,
            error,
        };
        let refuse = |why: String| err("use as the state directory", io::Error::other(why));
        match fs::symlink_metadata(dir) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                    fs::create_dir_all(parent).map_err(|e| err("create the state directory", e))?;
                }
                let made = fs::DirBuilder::new().mode(0o700).create(dir);
                if let Err(e) = made {
                    if e.kind() != io::ErrorKind::AlreadyExists {
                        return Err(err("create the state directory", e));
                    }
                }
            }
            Err(e) => return Err(err("read the state directory", e)),
        }
        let meta = fs::symlink_metadata(dir).map_err(|e| err("read the state directory", e))?;
        if meta.file_type().is_symlink() {
            return Err(refuse(
                "is a symbolic link: refused (give the directory's real path)".into(),
            ));
        }
        if !meta.is_dir() {
            return Err(refuse("not a directory".into()));
        }
        if let Some(me) = effective_uid() {
            if meta.uid() != me {
                return Err(refuse(format!(
                    "owned by uid {}, not by this process (uid {me}): refused",
                    meta.uid()
                )));
            }
        }
        // Private whatever the umask (and tighten a directory made by hand). On a
        // read-only file system nobody can change it anyway: boot still reads it.
        if meta.permissions().mode() & 0o7777 != 0o700 {
            match fs::set_permissions(dir, fs::Permissions::from_mode(0o700)) {
                Err(e) if e.raw_os_error() != Some(libc::EROFS) => {
                    return Err(err("make the state directory private (mode 0700)", e));
                }
                _ => {}
            }
        }
        Ok(Store {
            dir: dir.to_path_buf(),
            keep: keep.max(1),
            durable,
            lock: None,
            seen: Arc::default(),
            objects: Arc::default(),
            writing: Arc::default(),
            high_water: Arc::default(),
            reserved: Arc::default(),
            objects_unsynced: Arc::new(true.into()),
        })
    }

    /// [`Store::open`], then takes the directory for this process alone: an
    /// exclusive `flock` on its `lock` file, held until the store and its clones
    /// are dropped. A second process fails (after [`LOCK_WAIT`], in case the
    /// holder is just exiting) with a message naming the holder's pid.
    /// Leftovers of a write interrupted by a crash are removed.
    pub fn open_locked(dir: &Path, keep: usize, durable: bool) -> Result<Store, StoreError> {
        let mut store = Store::open(dir, keep, durable)?;
        let path = dir.join(LOCK_FILE);
        let err = |action, error| StoreError {
            path: path.clone(),
            action,
            error,
        };
        // Made if missing (a read-only state directory still boots, from what it holds).
        let _ = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path);
        // Held read-only: a descriptor open for writing would keep the file
        // system from being remounted read-only.
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)
            .map_err(|e| err("open the lock file", e))?;
        if !file
            .metadata()
            .map_err(|e| err("stat the lock file", e))?
            .is_file()
        {
            return Err(err("lock", io::Error::other("not a regular file")));
        }
        // A process that is exiting (or a fork of ours that has not yet exec'd,
        // holding a copy of the descriptor) lets go within moments: wait that long.
        let give_up = std::time::Instant::now() + LOCK_WAIT;
        let locked = loop {
            match file.try_lock() {
                Err(fs::TryLockError::WouldBlock) if std::time::Instant::now() < give_up => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => break other,
            }
        };
        match locked {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = (&file).take(64).read_to_string(&mut holder);
                let holder = holder.trim();
                let who = match holder.is_empty() {
                    true => String::new(),
                    false => format!(" (pid {holder})"),
                };
                return Err(StoreError {
                    path: dir.to_path_buf(),
                    action: "lock the state directory",
                    error: io::Error::new(
                        io::ErrorKind::WouldBlock,
                        format!("it is in use by another palisade process{who}"),
                    ),
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(err("lock", e)),
        }
        let _ = file.set_permissions(fs::Permissions::from_mode(0o600));
        // The holder's pid, for the message a second process gets (best effort).
        if let Ok(mut w) = OpenOptions::new()
            .write(true)
            .truncate(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)
        {
            let _ = writeln!(w, "{}", std::process::id());
        }
        // Leftovers of a write interrupted by a crash: never complete, never read.
        let objects = store.objects_dir_is_real().ok().map(|()| store.objects_dir());
        for d in std::iter::once(dir.to_path_buf()).chain(objects) {
            for e in fs::read_dir(d).into_iter().flatten().flatten() {
                let name = e.file_name();
                let name = name.to_string_lossy();
                if name.starts_with('.') && name.ends_with(".tmp") {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        store.lock = Some(Arc::new(file));
        // Objects no generation references (a set change refused, or killed
        // between storing its set file and its generation file).
        store.collect_garbage();
        Ok(store)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of generation `generation`'s file.
    pub fn path_of(&self, generation: u64) -> PathBuf {
        self.dir.join(format!("gen-{generation:020}.lkg"))
    }

    /// Writes `data` to `final_path` atomically: a private temporary file
    /// (mode 0600, never through a symlink), fsync, rename, fsync of the directory.
    fn write_atomically(&self, final_path: &Path, tag: &str, parts: &[&[u8]]) -> Result<(), StoreError> {
        let tmp = self.dir.join(format!(".{tag}.{}.tmp", std::process::id()));
        write_then_rename(&tmp, final_path, parts, self.durable)?;
        self.sync_dir()
    }

    fn sync_dir(&self) -> Result<(), StoreError> {
        if !self.durable {
            return Ok(());
        }
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|error| StoreError {
                path: self.dir.clone(),
                action: "fsync",
                error,
            })
    }

    /// Persists `kept` atomically (temp file, fsync, rename, fsync directory),
    /// replacing a file of the same generation. Old generations stay until
    /// [`Store::prune`]. Its set files are stored as objects first (each once,
    /// whatever the number of generations that have it).
    pub fn save(&self, kept: &Kept) -> Result<(), StoreError> {
        let parts: Vec<PartRef<'_>> = kept
            .companions
            .iter()
            .map(|c| PartRef {
                name: &c.name,
                digest: Digest::of(&c.bytes),
                bytes: &c.bytes,
            })
            .collect();
        self.save_parts(&kept.info(), &kept.bytes, &parts, &[])
    }

    /// Persists a generation: its metadata `info` (whose digest must be
    /// [`Digest::of_manifest`] of the rule file and `parts`), the rule file's
    /// bytes and its set files, whose digests are trusted. A set file not yet
    /// stored is stored as a delta of the set file of the same name in
    /// `bases` when that one is stored and the change is local (a `set add`
    /// or `set del`), else whole. Then the generation file, atomically; crash
    /// safe at every instant: objects are in place (and fsynced) before the
    /// generation file that references them is renamed into place.
    ///
    /// ```
    /// use palisade_engine::lkg::{KeptInfo, Outcome, PartRef, Store};
    /// use palisade_rules::Digest;
    /// let dir = std::env::temp_dir().join(format!("palisade-lkg-parts-doc-{}", std::process::id()));
    /// let store = Store::open_locked(&dir, 10, false).unwrap();
    /// let (rules, set) = (b"version = 1\n", b"192.0.2.0/24\n");
    /// let part = PartRef { name: "bl.txt", digest: Digest::of(set), bytes: set };
    /// let info = KeptInfo {
    ///     generation: 1,
    ///     digest: Digest::of_manifest(Digest::of(rules), &[("bl.txt", part.digest)]),
    ///     source: "edge.toml".into(),
    ///     saved_at: 0,
    ///     outcome: Outcome::Confirmed,
    /// };
    /// store.save_parts(&info, rules, &[part], &[]).unwrap();
    /// assert_eq!(store.load(1).unwrap().companions[0].bytes, set);
    /// assert!(store.object_path(&part.digest).exists());
    /// drop(store);
    /// std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub fn save_parts(
        &self,
        info: &KeptInfo,
        rules: &[u8],
        parts: &[PartRef<'_>],
        bases: &[PartRef<'_>],
    ) -> Result<(), StoreError> {
        let _writing = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        self.put_objects(parts, bases)?;
        let refs: Refs = parts.iter().map(|p| (p.name.to_string(), p.digest)).collect();
        self.write_generation(info, rules, refs)
    }

    /// Writes a generation file whose set files (`refs`) are stored already.
    fn write_generation(&self, info: &KeptInfo, rules: &[u8], refs: Refs) -> Result<(), StoreError> {
        let path = self.path_of(info.generation);
        let meta = Meta {
            generation: info.generation,
            digest: info.digest.to_string(),
            len: rules.len(),
            source: info.source.clone(),
            saved_at: info.saved_at,
            outcome: Some(info.outcome),
            companions: Vec::new(),
            objects: refs
                .iter()
                .map(|(name, d)| ObjectMeta {
                    name: name.clone(),
                    sha256: d.to_string(),
                })
                .collect(),
            confirmed: None,
        };
        let meta = serde_json::to_string(&meta).unwrap_or_default();
        let magic = match refs.is_empty() {
            true => MAGIC,
            false => MAGIC_V3,
        };
        let parts: [&[u8]; 5] = [magic.as_bytes(), b"\n", meta.as_bytes(), b"\n", rules];
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if total as u64 > MAX_KEPT_FILE_BYTES {
            return Err(StoreError {
                path,
                action: "write",
                error: io::Error::other(format!(
                    "the generation is {total} bytes, more than the limit of {MAX_KEPT_FILE_BYTES} bytes (MAX_KEPT_FILE_BYTES)"
                )),
            });
        }
        let tag = format!("gen-{:020}", info.generation);
        self.write_atomically(&path, &tag, &parts)?;
        // Written whole just now: what a scan would find by reading it back.
        if let Ok(m) = fs::symlink_metadata(&path) {
            self.seen_map()
                .insert(info.generation, (stamp(&m), Ok(info.clone()), refs));
        }
        Ok(())
    }

    /// Stores set files as objects ahead of the generation that will reference
    /// them (what [`Store::save_parts`] does first; there it then finds them
    /// stored): a set change stores its changed file while it compiles. An
    /// object no generation comes to reference is removed by a later prune.
    pub fn store_objects(&self, parts: &[PartRef<'_>], bases: &[PartRef<'_>]) -> Result<(), StoreError> {
        let _writing = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        self.put_objects(parts, bases)
    }

    fn put_objects(&self, parts: &[PartRef<'_>], bases: &[PartRef<'_>]) -> Result<(), StoreError> {
        for part in parts {
            self.put_object(part, bases)?;
        }
        // (also when every object was found in place: one written earlier, by
        // a `store_objects` whose fsync failed or a process that died before
        // it, is durable before a generation file references it)
        if !parts.is_empty() {
            self.sync_objects_dir()?;
        }
        Ok(())
    }

    /// Removes the set file objects no kept generation file references
    /// (directly or as the base of a delta), as a prune does after removing
    /// generations: for objects stored ahead by [`Store::store_objects`] for a
    /// generation that was then not kept. Nothing is removed when any
    /// generation file or object header cannot be read and parsed (why is
    /// logged): an object left over is only garbage.
    ///
    /// ```
    /// use palisade_engine::lkg::{PartRef, Store};
    /// use palisade_rules::Digest;
    /// let dir = std::env::temp_dir().join(format!("palisade-lkg-garbage-doc-{}", std::process::id()));
    /// let store = Store::open_locked(&dir, 10, false).unwrap();
    /// let set = b"192.0.2.0/24\n";
    /// let part = PartRef { name: "bl.txt", digest: Digest::of(set), bytes: set };
    /// store.store_objects(&[part], &[]).unwrap();
    /// assert!(store.object_path(&part.digest).exists());
    /// store.collect_garbage(); // no generation references it
    /// assert!(!store.object_path(&part.digest).exists());
    /// drop(store);
    /// std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub fn collect_garbage(&self) {
        let _writing = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        self.collect_objects();
    }

    /// Generation numbers of every `gen-*.lkg` name, ascending (validity not checked).
    fn numbers(&self) -> Vec<u64> {
        let mut out: Vec<u64> = fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let digits = name.strip_prefix("gen-")?.strip_suffix(".lkg")?;
                digits
                    .bytes()
                    .all(|b| b.is_ascii_digit())
                    .then(|| digits.parse().ok())?
            })
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Generation numbers of every `gen-*.lkg` name, ascending; an error when
    /// the directory cannot be listed whole.
    fn numbers_strict(&self) -> Result<Vec<u64>, String> {
        let listing = |e: io::Error| format!("{}: cannot list: {e}", self.dir.display());
        let mut out = Vec::new();
        for e in fs::read_dir(&self.dir).map_err(listing)? {
            let name = e.map_err(listing)?.file_name();
            let name = name.to_string_lossy();
            let number: Option<u64> = name
                .strip_prefix("gen-")
                .and_then(|n| n.strip_suffix(".lkg"))
                .filter(|d| d.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|d| d.parse().ok());
            out.extend(number);
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// Reads and verifies one kept generation.
    pub fn load(&self, generation: u64) -> Result<Kept, KeptError> {
        let path = self.path_of(generation);
        match fs::symlink_metadata(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(KeptError::NotKept { generation });
            }
            _ => {}
        }
        let invalid = |why: String| KeptError::Invalid {
            path: path.clone(),
            why,
        };
        let (mut kept, refs) = self.load_head(generation)?;
        for (name, digest) in refs {
            let bytes = self
                .read_object(digest)
                .map_err(|why| invalid(format!("set file {name}: {why}")))?;
            kept.companions.push(Companion { name, bytes });
        }
        Ok(kept)
    }

    /// Reads and verifies one generation file, without the set file objects it
    /// references (format 3): the generation, and its references.
    fn load_head(&self, generation: u64) -> Result<(Kept, Refs), KeptError> {
        let path = self.path_of(generation);
        let invalid = |why: String| KeptError::Invalid {
            path: path.clone(),
            why,
        };
        let data = read_regular(&path, MAX_KEPT_FILE_BYTES).map_err(invalid)?;
        let (kept, refs) = decode(&data).map_err(invalid)?;
        if kept.generation != generation {
            return Err(invalid(format!(
                "carries generation {}, not the {generation} of its name",
                kept.generation
            )));
        }
        Ok((kept, refs))
    }

    /// The set file objects generation file `generation` references, read
    /// from its header (or known from a verification of the same file): none
    /// for a file of format 1 or 2 (set files inline) or no file; an error
    /// when that is not known for sure: the file cannot be opened or read, is
    /// not a regular file, or its header cannot be parsed (damaged, cut short,
    /// or of a format this engine does not know: its objects are kept).
    fn references_strict(&self, generation: u64) -> Result<Refs, String> {
        let path = self.path_of(generation);
        let why = |e: String| format!("{}: {e}", path.display());
        let st = match fs::symlink_metadata(&path) {
            Ok(m) => stamp(&m),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(why(format!("cannot stat: {e}"))),
        };
        // (only a verification that succeeded: a failed one may have failed to read)
        if let Some((s, Ok(_), refs)) = self.seen_map().get(&generation) {
            if *s == st {
                return Ok(refs.clone());
            }
        }
        let (file, _) = open_regular(&path, MAX_KEPT_FILE_BYTES).map_err(why)?;
        let mut head = io::BufReader::new(file);
        let mut line = |what: &str| -> Result<Vec<u8>, String> {
            let mut buf = Vec::new();
            std::io::BufRead::read_until(&mut head, b'\n', &mut buf)
                .map_err(|e| why(format!("cannot read: {e}")))?;
            match buf.pop() {
                Some(b'\n') => Ok(buf),
                _ => Err(why(format!("{what} cut short"))),
            }
        };
        let magic = line("the header")?;
        if magic == MAGIC.as_bytes() || magic == MAGIC_V1.as_bytes() {
            return Ok(Vec::new());
        }
        if magic != MAGIC_V3.as_bytes() {
            return Err(why("not a generation file this engine knows".into()));
        }
        let meta: Meta =
            serde_json::from_slice(&line("the metadata")?).map_err(|e| why(format!("bad metadata: {e}")))?;
        // (a name that is no digest names no object)
        Ok(meta
            .objects
            .into_iter()
            .filter_map(|o| Some((o.name, objects::parse_digest(&o.sha256)?)))
            .collect())
    }

    /// The metadata of one kept generation, verified like [`Store::load`] (the
    /// whole file read and its digest checked) unless the file is unchanged
    /// since it was last verified.
    pub fn info(&self, generation: u64) -> Result<KeptInfo, KeptError> {
        let path = self.path_of(generation);
        let st = match fs::symlink_metadata(&path) {
            Ok(m) => stamp(&m),
            Err(_) => {
                self.seen_map().remove(&generation);
                return Err(KeptError::NotKept { generation });
            }
        };
        let known = self
            .seen_map()
            .get(&generation)
            .filter(|(s, ..)| *s == st)
            .map(|(_, r, refs)| (r.clone(), refs.clone()));
        let (r, refs) = match known {
            Some(x) => x,
            None => {
                let (r, refs) = match self.load_head(generation) {
                    Ok((k, refs)) => (Ok(k.info()), refs),
                    Err(KeptError::Invalid { why, .. }) => (Err(why), Vec::new()),
                    Err(e @ KeptError::NotKept { .. }) => return Err(e),
                };
                self.seen_map().insert(generation, (st, r.clone(), refs.clone()));
                (r, refs)
            }
        };
        let info = r.map_err(|why| KeptError::Invalid {
            path: path.clone(),
            why,
        })?;
        // Its set files: each object verified once, then checked by its identity on disk.
        for (name, digest) in refs {
            if let Err(why) = self.object_ok(digest) {
                return Err(KeptError::Invalid {
                    path,
                    why: format!("set file {name}: {why}"),
                });
            }
        }
        Ok(info)
    }

    fn seen_map(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every kept generation file, valid ones and the reasons others are refused.
    pub fn scan(&self) -> Scan {
        let mut scan = Scan::default();
        let numbers = self.numbers();
        self.seen_map().retain(|n, _| numbers.binary_search(n).is_ok());
        for n in numbers {
            match self.info(n) {
                Ok(k) => scan.kept.push(k),
                Err(KeptError::NotKept { .. }) => {} // removed meanwhile
                Err(e) => scan.refused.push((n, e.to_string())),
            }
        }
        scan
    }

    /// Every valid kept generation, oldest first.
    pub fn list(&self) -> Vec<Kept> {
        self.numbers()
            .into_iter()
            .filter_map(|n| self.load(n).ok())
            .collect()
    }

    /// The newest valid kept generation (only confirmed ones when `confirmed_only`).
    pub fn newest(&self, confirmed_only: bool) -> Option<Kept> {
        self.scan()
            .kept
            .iter()
            .rev()
            .filter(|k| k.outcome == Outcome::Confirmed || !confirmed_only)
            .find_map(|k| self.load(k.generation).ok())
    }

    /// The number of the newest valid confirmed generation, if any.
    pub fn newest_confirmed(&self) -> Option<u64> {
        self.scan()
            .kept
            .iter()
            .rev()
            .find(|k| k.outcome == Outcome::Confirmed)
            .map(|k| k.generation)
    }

    /// The high-water mark: the highest generation number this directory has
    /// handed out, as persisted (0 without a valid mark; a junk file is ignored).
    pub fn high_water(&self) -> u64 {
        let Ok(data) = read_regular(&self.dir.join(HWM_FILE), 64) else {
            return 0;
        };
        let text = String::from_utf8_lossy(&data);
        let mut lines = text.lines();
        match (lines.next(), lines.next().map(str::parse::<u64>)) {
            (Some(HWM_MAGIC), Some(Ok(n))) => n,
            _ => 0,
        }
    }

    /// The highest generation number in use: of the valid generation files and
    /// the high-water mark (0 if none). Junk files (invalid, tampered, named
    /// with a huge number) do not count.
    pub fn max_generation(&self) -> u64 {
        let files = self.scan().kept.last().map_or(0, |k| k.generation);
        files.max(self.high_water())
    }

    /// Hands out the next generation number, greater than [`Store::max_generation`]
    /// and than `above` (numbers in use in memory), and persists it as the
    /// high-water mark before returning it. Fails when the numbers are
    /// exhausted or the mark cannot be persisted. A number reserved by
    /// [`Store::reserve_generation`] is handed out instead (it is persisted
    /// already) when it is still above `above` and every kept generation.
    pub fn next_generation(&self, above: u64) -> Result<u64, StoreError> {
        let _one = self.high_water.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = self.take_reserved(above) {
            return Ok(r);
        }
        let n = self.number_after(above)?;
        self.raise_locked(n)?;
        Ok(n)
    }

    /// The reserved number, taken, when it may still be handed out.
    fn take_reserved(&self, above: u64) -> Option<u64> {
        let r = self.reserved.lock().unwrap_or_else(|e| e.into_inner()).take()?;
        let files = self.scan().kept.last().map_or(0, |k| k.generation);
        (r > above && r > files && self.high_water() >= r).then_some(r)
    }

    /// Reserves the number the next [`Store::next_generation`] hands out
    /// (persisted as the high-water mark now), so that persisting a
    /// generation later writes only its file: a set change reserves it while
    /// it compiles. A reservation not used yet (the change was refused) is
    /// reserved again rather than a new number. Numbers stay unique and
    /// growing: a reservation overtaken by another number is dropped (the
    /// number is skipped).
    ///
    /// ```
    /// let dir = std::env::temp_dir().join(format!("palisade-lkg-reserve-doc-{}", std::process::id()));
    /// let store = palisade_engine::lkg::Store::open_locked(&dir, 10, false).unwrap();
    /// let n = store.reserve_generation(4).unwrap();
    /// assert_eq!((n, store.high_water()), (5, 5));
    /// // (reserved again by a change that then does not use it: the same number)
    /// assert_eq!(store.reserve_generation(4).unwrap(), 5);
    /// assert_eq!(store.next_generation(4).unwrap(), 5);
    /// assert_eq!(store.next_generation(4).unwrap(), 6);
    /// drop(store);
    /// std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub fn reserve_generation(&self, above: u64) -> Result<u64, StoreError> {
        let _one = self.high_water.lock().unwrap_or_else(|e| e.into_inner());
        let n = match self.take_reserved(above) {
            Some(r) => r,
            None => self.number_after(above)?,
        };
        self.raise_locked(n)?;
        *self.reserved.lock().unwrap_or_else(|e| e.into_inner()) = Some(n);
        Ok(n)
    }

    fn number_after(&self, above: u64) -> Result<u64, StoreError> {
        let base = self.max_generation().max(above);
        base.checked_add(1).ok_or_else(|| StoreError {
            path: self.dir.join(HWM_FILE),
            action: "hand out a generation number",
            error: io::Error::other(format!(
                "generation numbers are exhausted (the highest is {base})"
            )),
        })
    }

    /// Persists `n` as the high-water mark if it is higher than the current one.
    pub fn raise_high_water(&self, n: u64) -> Result<(), StoreError> {
        let _one = self.high_water.lock().unwrap_or_else(|e| e.into_inner());
        self.raise_locked(n)
    }

    fn raise_locked(&self, n: u64) -> Result<(), StoreError> {
        if self.high_water() >= n {
            return Ok(());
        }
        let text = format!("{HWM_MAGIC}\n{n}\n");
        self.write_atomically(&self.dir.join(HWM_FILE), HWM_FILE, &[text.as_bytes()])
    }

    /// Removes generations beyond the newest `keep` valid ones, never one in
    /// `protect` (the active generation, the newest confirmed one), whatever
    /// their numbers. Files that are not valid generations are left alone.
    /// Set file objects no generation file references any more are removed too.
    pub fn prune(&self, protect: &[u64]) {
        let valid: Vec<u64> = self.scan().kept.iter().map(|k| k.generation).collect();
        if valid.len() <= self.keep {
            return;
        }
        let _writing = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        let mut removed = false;
        for &n in &valid[..valid.len() - self.keep] {
            if !protect.contains(&n) {
                let _ = fs::remove_file(self.path_of(n));
                removed = true;
            }
        }
        if removed {
            let _ = self.sync_dir();
            self.collect_objects();
        }
    }

    /// Removes a kept generation (a persisted candidate that was then not published).
    pub fn remove(&self, generation: u64) {
        let _writing = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        let _ = fs::remove_file(self.path_of(generation));
        let _ = self.sync_dir();
        self.collect_objects();
    }

    /// Records what became of generation `generation` (rewrites its file
    /// atomically and durably); an error when it is not kept or cannot be rewritten.
    /// Only the generation file is rewritten: its set files stay where they are.
    pub fn set_outcome(&self, generation: u64, outcome: Outcome) -> Result<(), StoreError> {
        let unreadable = |e: KeptError| StoreError {
            path: self.path_of(generation),
            action: "read",
            error: io::Error::other(e.to_string()),
        };
        let (mut k, refs) = self.load_head(generation).map_err(unreadable)?;
        if k.outcome == outcome {
            return Ok(());
        }
        k.outcome = outcome;
        if refs.is_empty() && !k.companions.is_empty() {
            // A generation of format 2 (set files inline): rewritten as format 3.
            return self.save(&k);
        }
        // (held so that no prune removes the objects between the check and the rename)
        let _writing = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        for (name, digest) in &refs {
            // (a set file missing or damaged: the generation is refused like a torn file)
            if let Err(why) = self.object_ok(*digest) {
                return Err(unreadable(KeptError::Invalid {
                    path: self.path_of(generation),
                    why: format!("set file {name}: {why}"),
                }));
            }
        }
        self.write_generation(&k.info(), &k.bytes, refs)
    }

    /// Rewrites generation `generation` as confirmed (durably: Ok only once it is on disk).
    pub fn mark_confirmed(&self, generation: u64) -> Result<(), StoreError> {
        self.set_outcome(generation, Outcome::Confirmed)
    }
}

/// What [`Store::scan`] found.
#[derive(Clone, Debug, Default)]
pub struct Scan {
    /// Valid kept generations, oldest first.
    pub kept: Vec<KeptInfo>,
    /// Files named as generations that are refused: number and why.
    pub refused: Vec<(u64, String)>,
}

/// A generation file's contents, verified: the generation (without the set
/// files of format 3) and the objects it references.
fn decode(data: &[u8]) -> Result<(Kept, Refs), String> {
    let mut parts = data.splitn(3, |&b| b == b'\n');
    let magic = parts.next().unwrap_or_default();
    let v3 = magic == MAGIC_V3.as_bytes();
    let v1 = match magic {
        m if m == MAGIC.as_bytes() || v3 => false,
        m if m == MAGIC_V1.as_bytes() => true,
        _ => {
            return Err(
                "not a palisade last-known-good file (or of a format this engine does not know)".into(),
            )
        }
    };
    let meta = parts.next().ok_or("metadata missing")?;
    let body = parts.next().ok_or("rule bytes missing")?;
    let meta: Meta = serde_json::from_slice(meta).map_err(|e| format!("bad metadata: {e}"))?;
    let outcome = match (v1, meta.outcome, meta.confirmed) {
        (true, _, Some(true)) => Outcome::Confirmed,
        (true, _, _) => Outcome::Pending,
        (false, Some(o), _) => o,
        (false, None, _) => return Err("bad metadata: no outcome".into()),
    };
    if v1 && !meta.companions.is_empty() {
        return Err("bad metadata: companions in a format 1 file".into());
    }
    if v3 {
        if !meta.companions.is_empty() || meta.objects.is_empty() {
            return Err("bad metadata: a format 3 file lists its set files as objects".into());
        }
        if body.len() != meta.len {
            return Err(format!("torn: {} of {} bytes", body.len(), meta.len));
        }
        let mut refs = Refs::new();
        for o in meta.objects {
            let d = objects::parse_digest(&o.sha256)
                .ok_or_else(|| format!("bad metadata: set file {}: bad sha256", o.name))?;
            refs.push((o.name, d));
        }
        let named: Vec<(&str, Digest)> = refs.iter().map(|(n, d)| (n.as_str(), *d)).collect();
        let digest = Digest::of_manifest(Digest::of(body), &named);
        if digest.to_string() != meta.digest {
            return Err("digest mismatch".into());
        }
        let kept = Kept {
            generation: meta.generation,
            digest,
            source: meta.source,
            saved_at: meta.saved_at,
            outcome,
            bytes: body.to_vec(),
            companions: Vec::new(),
        };
        return Ok((kept, refs));
    } else if !meta.objects.is_empty() {
        return Err("bad metadata: objects in a format 1 or 2 file".into());
    }
    let want = meta
        .companions
        .iter()
        .try_fold(meta.len, |sum, c| sum.checked_add(c.len))
        .ok_or("bad metadata: lengths overflow")?;
    if body.len() != want {
        return Err(format!("torn: {} of {want} bytes", body.len()));
    }
    let (bytes, mut rest) = body.split_at(meta.len);
    let mut companions = Vec::with_capacity(meta.companions.len());
    for c in meta.companions {
        let (b, r) = rest.split_at(c.len);
        companions.push(Companion {
            name: c.name,
            bytes: b.to_vec(),
        });
        rest = r;
    }
    let digest = digest_of(bytes, &companions);
    if digest.to_string() != meta.digest {
        return Err("digest mismatch".into());
    }
    let kept = Kept {
        generation: meta.generation,
        digest,
        source: meta.source,
        saved_at: meta.saved_at,
        outcome,
        bytes: bytes.to_vec(),
        companions,
    };
    Ok((kept, Refs::new()))
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("palisade-lkg-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        p
    }

    #[test]
    fn keeps_only_the_newest_and_rejects_torn_files() {
        let dir = tmpdir("keep");
        let store = Store::open_locked(&dir, 3, false).unwrap();
        for g in 1..=5 {
            store
                .save(&Kept::new(g, "x", vec![b'a'; g as usize], true))
                .unwrap();
        }
        assert_eq!(store.list().len(), 5, "nothing is removed before prune");
        store.prune(&[]);
        let gens: Vec<u64> = store.list().iter().map(|k| k.generation).collect();
        assert_eq!(gens, vec![3, 4, 5]);
        // Tear the newest: it must be ignored, the previous one wins.
        let p = store.path_of(5);
        let data = fs::read(&p).unwrap();
        fs::write(&p, &data[..data.len() - 1]).unwrap();
        assert_eq!(store.newest(true).unwrap().generation, 4);
        assert_eq!(store.max_generation(), 4, "an invalid file does not count");
        // Unconfirmed generations are skipped when asked.
        store.save(&Kept::new(6, "x", b"six".to_vec(), false)).unwrap();
        assert_eq!(store.newest(true).unwrap().generation, 4);
        assert_eq!(store.newest(false).unwrap().generation, 6);
        store.mark_confirmed(6).unwrap();
        assert_eq!(store.newest(true).unwrap().generation, 6);
        assert!(
            store.mark_confirmed(99).is_err(),
            "confirming what is not kept is an error"
        );
        drop(store);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn companions_round_trip_and_are_covered_by_the_digest() {
        let dir = tmpdir("companions");
        let store = Store::open_locked(&dir, 10, false).unwrap();
        let comps = vec![
            Companion {
                name: "block.txt".into(),
                bytes: b"192.0.2.0/24\n".to_vec(),
            },
            Companion {
                name: "sets/empty.txt".into(),
                bytes: Vec::new(),
            },
        ];
        let k = Kept::with_companions(1, "r.toml", b"version = 1\n".to_vec(), comps, Outcome::Confirmed);
        store.save(&k).unwrap();
        assert_eq!(store.load(1).unwrap(), k);
        // Flip one byte of a companion: the digest no longer matches, the file is refused.
        let p = store.path_of(1);
        let mut data = fs::read(&p).unwrap();
        let at = data.len() - 2;
        data[at] ^= 1;
        fs::write(&p, &data).unwrap();
        assert!(matches!(store.load(1), Err(KeptError::Invalid { .. })));
        drop(store);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A set file of `lines` lines (big enough to be stored as deltas).
    fn big_set(lines: usize) -> Vec<u8> {
        (0..lines)
            .flat_map(|i| format!("10.{}.{}.0/24\n", i / 256 % 256, i % 256).into_bytes())
            .collect()
    }

    fn objects_in(store: &Store) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(store.objects_dir())
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// The set file `bl.txt` holding `bytes`, as a part of a generation.
    fn bl_part(bytes: &[u8]) -> PartRef<'_> {
        PartRef {
            name: "bl.txt",
            digest: Digest::of(bytes),
            bytes,
        }
    }

    /// A confirmed generation `generation` of `rules` and the set file `part`.
    fn bl_info(generation: u64, rules: &[u8], part: &PartRef<'_>) -> KeptInfo {
        KeptInfo {
            generation,
            digest: Digest::of_manifest(Digest::of(rules), &[("bl.txt", part.digest)]),
            source: "r.toml".into(),
            saved_at: 0,
            outcome: Outcome::Confirmed,
        }
    }

    fn with_set(g: u64, set: &[u8]) -> Kept {
        let c = vec![Companion {
            name: "bl.txt".into(),
            bytes: set.to_vec(),
        }];
        Kept::with_companions(g, "r.toml", b"version = 1\n".to_vec(), c, Outcome::Confirmed)
    }

    #[test]
    fn an_unchanged_set_file_is_stored_once_for_every_generation() {
        let dir = tmpdir("shared");
        let store = Store::open_locked(&dir, 10, false).unwrap();
        let set = big_set(20_000);
        for g in 1..=4 {
            store.save(&with_set(g, &set)).unwrap();
        }
        assert_eq!(objects_in(&store), vec![Digest::of(&set).to_string()]);
        let total: u64 = fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".lkg"))
            .map(|e| e.metadata().unwrap().len())
            .sum();
        assert!(
            total < 4 * 1024,
            "generation files hold no set file ({total} bytes)"
        );
        for g in 1..=4 {
            assert_eq!(store.load(g).unwrap().companions[0].bytes, set);
        }
        drop(store);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_changed_set_file_is_stored_as_a_delta_and_read_back_whole() {
        let dir = tmpdir("delta");
        let store = Store::open_locked(&dir, 100, false).unwrap();
        let mut set = big_set(20_000);
        let rules = b"version = 1\n";
        let mut prev: Option<Vec<u8>> = None;
        let mut versions = Vec::new();
        // Appends (set add), then a line dropped in the middle (set del), past the chain limit.
        for g in 1..=(MAX_DELTA_DEPTH as u64 + 3) {
            match g % 3 {
                0 => {
                    let at = set.len() / 2;
                    let end = at + set[at..].iter().position(|&b| b == b'\n').unwrap() + 1;
                    set.drain(at..end);
                }
                _ => set.extend_from_slice(format!("198.18.0.{g}\n").as_bytes()),
            }
            let part = bl_part(&set);
            let info = bl_info(g, rules, &part);
            let base = prev.as_ref().map(|b| bl_part(b));
            store.save_parts(&info, rules, &[part], base.as_slice()).unwrap();
            let size = fs::metadata(store.object_path(&part.digest)).unwrap().len();
            // (whole: the first, and the one past a chain of MAX_DELTA_DEPTH deltas)
            if g == 1 || g == MAX_DELTA_DEPTH as u64 + 2 {
                assert!(
                    size > set.len() as u64,
                    "generation {g}: stored whole ({size} bytes)"
                );
            } else {
                assert!(size < 200, "generation {g}: a delta, not a copy ({size} bytes)");
            }
            prev = Some(set.clone());
            versions.push(set.clone());
        }
        // Read back by a store that has verified nothing yet.
        drop(store);
        let store = Store::open_locked(&dir, 100, false).unwrap();
        for (i, want) in versions.iter().enumerate() {
            let k = store.load(i as u64 + 1).unwrap();
            assert_eq!(&k.companions[0].bytes, want, "generation {}", i + 1);
        }
        assert_eq!(store.scan().kept.len(), versions.len());
        drop(store);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn objects_no_generation_references_are_removed_and_delta_bases_kept() {
        let dir = tmpdir("gc");
        let store = Store::open_locked(&dir, 2, false).unwrap();
        let rules = b"version = 1\n";
        let mut sets = vec![big_set(20_000)];
        for g in 1..=4u64 {
            let set = sets.last().unwrap().clone();
            let prev = sets.get(sets.len().wrapping_sub(2)).cloned();
            let part = bl_part(&set);
            let info = bl_info(g, rules, &part);
            let base: Vec<PartRef<'_>> = prev.iter().map(|b| bl_part(b)).collect();
            store.save_parts(&info, rules, &[part], &base).unwrap();
            store.prune(&[g]);
            let mut next = set;
            next.extend_from_slice(format!("198.18.0.{g}\n").as_bytes());
            sets.push(next);
        }
        // Generations 3 and 4 are kept; their objects are deltas down to generation 1's whole file.
        let gens: Vec<u64> = store.list().iter().map(|k| k.generation).collect();
        assert_eq!(gens, vec![3, 4]);
        let want: std::collections::BTreeSet<String> =
            sets[..4].iter().map(|s| Digest::of(s).to_string()).collect();
        let have: std::collections::BTreeSet<String> = objects_in(&store).into_iter().collect();
        assert_eq!(
            have, want,
            "the chain under the kept generations stays, nothing else"
        );
        // A whole file in place of the chain: the bases no generation needs go.
        let last = sets[3].clone();
        store.save(&with_set(5, &last)).unwrap();
        fs::remove_file(store.path_of(3)).unwrap();
        fs::remove_file(store.path_of(4)).unwrap();
        store.remove(5);
        assert!(objects_in(&store).is_empty(), "{:?}", objects_in(&store));
        drop(store);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// Moves `path` aside and puts a directory in its place (what fails to be
    /// read as a file, even as root); the returned closure puts it back.
    fn replace_by_a_directory(path: PathBuf) -> impl FnOnce() {
        let aside = path.with_extension("aside");
        fs::rename(&path, &aside).unwrap();
        fs::create_dir(&path).unwrap();
        move || {
            fs::remove_dir(&path).unwrap();
            fs::rename(&aside, &path).unwrap();
        }
    }

    #[test]
    fn a_generation_file_that_cannot_be_read_keeps_every_object() {
        let dir = tmpdir("gcunread");
        let store = Store::open_locked(&dir, 10, false).unwrap();
        let (a, b) = (b"192.0.2.0/24\n", b"198.51.100.0/24\n");
        store.save(&with_set(1, a)).unwrap();
        store.save(&with_set(2, b)).unwrap();
        drop(store);
        // Generation 2 cannot be read (as an error that passes would): nothing it
        // may reference is removed, by the opening store (nothing verified yet) nor by a removal.
        let put_back = replace_by_a_directory(dir.join("gen-00000000000000000002.lkg"));
        let store = Store::open_locked(&dir, 10, false).unwrap();
        store.remove(1);
        assert!(
            store.object_path(&Digest::of(b)).exists(),
            "{:?}",
            objects_in(&store)
        );
        put_back();
        assert_eq!(store.load(2).unwrap().companions[0].bytes, b);
        // A header cut short (damaged): kept too.
        let path = store.path_of(2);
        let whole = fs::read(&path).unwrap();
        let cut = whole.iter().position(|&c| c == b'\n').unwrap() + 20;
        fs::write(&path, &whole[..cut]).unwrap();
        store.collect_garbage();
        assert!(
            store.object_path(&Digest::of(b)).exists(),
            "{:?}",
            objects_in(&store)
        );
        fs::write(&path, &whole).unwrap();
        assert_eq!(store.load(2).unwrap().companions[0].bytes, b);
        // Every file readable: generation 1's object goes, 2's stays.
        store.collect_garbage();
        assert_eq!(objects_in(&store), vec![Digest::of(b).to_string()]);
        drop(store);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_object_whose_header_cannot_be_read_keeps_its_delta_base() {
        let dir = tmpdir("gcbase");
        let store = Store::open_locked(&dir, 10, false).unwrap();
        let a = big_set(20_000);
        let mut b = a.clone();
        b.extend_from_slice(b"198.18.0.1\n");
        let rules = b"version = 1\n";
        let part_a = bl_part(&a);
        let part_b = bl_part(&b);
        for (g, part, bases) in [(1, part_a, vec![]), (2, part_b, vec![part_a])] {
            let info = bl_info(g, rules, &part);
            store.save_parts(&info, rules, &[part], &bases).unwrap();
        }
        assert!(
            fs::metadata(store.object_path(&part_b.digest)).unwrap().len() < 200,
            "a delta"
        );
        drop(store);
        // Generation 2's object (a delta of 1's) cannot be read when 1 is removed:
        // its base stays, and generation 2 reads back once the object can be read again.
        let put_back = replace_by_a_directory(dir.join(objects::OBJECTS_DIR).join(part_b.digest.to_string()));
        let store = Store::open_locked(&dir, 10, false).unwrap();
        store.remove(1);
        assert!(
            store.object_path(&part_a.digest).exists(),
            "{:?}",
            objects_in(&store)
        );
        put_back();
        assert_eq!(store.load(2).unwrap().companions[0].bytes, b);
        store.collect_garbage();
        assert_eq!(objects_in(&store).len(), 2, "the base of a kept delta stays");
        drop(store);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn objects_stored_for_no_generation_are_removed_when_the_store_is_opened() {
        let dir = tmpdir("gcopen");
        let store = Store::open_locked(&dir, 10, false).unwrap();
        store.save(&with_set(1, b"192.0.2.0/24\n")).unwrap();
        let orphan = b"198.51.100.0/24\n";
        let part = bl_part(orphan);
        // (stored ahead for a generation never written: a kill -9 in between)
        store.store_objects(&[part], &[]).unwrap();
        // Not objects: names that only look like digests are never removed.
        let lookalikes = [
            format!("+{}", &part.digest.to_string()[1..]),
            part.digest.to_string().to_uppercase(),
            "notes.txt".to_string(),
        ];
        for name in &lookalikes {
            fs::write(store.objects_dir().join(name), b"x").unwrap();
        }
        drop(store);
        let store = Store::open_locked(&dir, 10, false).unwrap();
        let mut want = vec![Digest::of(b"192.0.2.0/24\n").to_string()];
        want.extend(lookalikes.iter().cloned());
        want.sort();
        assert_eq!(objects_in(&store), want);
        assert_eq!(store.load(1).unwrap().companions[0].bytes, b"192.0.2.0/24\n");
        drop(store);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_generation_file_is_written_only_once_the_objects_directory_is_fsynced() {
        use std::sync::atomic::Ordering;
        let dir = tmpdir("objsync");
        let set = b"192.0.2.0/24\n";
        let part = bl_part(set);
        let rules = b"version = 1\n";
        let info = |generation| bl_info(generation, rules, &part);
        let store = Store::open_locked(&dir, 10, true).unwrap();
        assert!(
            store.objects_unsynced.load(Ordering::SeqCst),
            "a process before this one may have died before its fsync"
        );
        store.store_objects(&[part], &[]).unwrap();
        assert!(
            !store.objects_unsynced.load(Ordering::SeqCst),
            "written and fsynced"
        );
        // The object in place, its directory's fsync failed (as it may, after the
        // object was verified): the generation file that references it fsyncs it first.
        store.objects_unsynced.store(true, Ordering::SeqCst);
        store.save_parts(&info(1), rules, &[part], &[]).unwrap();
        assert!(!store.objects_unsynced.load(Ordering::SeqCst));
        drop(store);
        // A new process finds the object in place and fsyncs before its first generation file.
        let store = Store::open_locked(&dir, 10, true).unwrap();
        store.save_parts(&info(2), rules, &[part], &[]).unwrap();
        assert!(!store.objects_unsynced.load(Ordering::SeqCst));
        assert_eq!(store.load(2).unwrap().companions[0].bytes, set);
        drop(store);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_digest_is_exactly_64_hex_digits() {
        let d = Digest::of(b"x").to_string();
        assert_eq!(objects::parse_digest(&d), Some(Digest::of(b"x")));
        assert_eq!(objects::parse_digest(&d.to_uppercase()), Some(Digest::of(b"x")));
        assert_eq!(objects::object_name(&d), Some(Digest::of(b"x")));
        assert_eq!(objects::object_name(&d.to_uppercase()), None, "not canonical");
        for bad in [
            format!("+{}", &d[1..]),
            format!("{} ", &d[1..]),
            format!("-{}", &d[1..]),
        ] {
            assert_eq!(objects::parse_digest(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_missing_or_damaged_set_file_object_refuses_the_generation_and_says_which() {
        let dir = tmpdir("objgone");
        let store = Store::open_locked(&dir, 10, false).unwrap();
        store.save(&with_set(1, b"192.0.2.0/24\n")).unwrap();
        store.save(&with_set(2, b"198.51.100.0/24\n")).unwrap();
        let obj = store.object_path(&Digest::of(b"198.51.100.0/24\n"));
        fs::write(&obj, b"palisade-object 1 full\n198.51.100.0/25\n").unwrap();
        let err = store.load(2).unwrap_err().to_string();
        assert!(
            err.contains("set file bl.txt") && err.contains("digest mismatch"),
            "{err}"
        );
        assert_eq!(store.newest(true).unwrap().generation, 1, "boot falls back");
        fs::remove_file(&obj).unwrap();
        let scan = store.scan();
        assert_eq!(scan.kept.len(), 1);
        assert!(
            scan.refused[0].1.contains("set file bl.txt"),
            "{:?}",
            scan.refused
        );
        assert!(
            store.set_outcome(2, Outcome::Unconfirmed).is_err(),
            "a refused generation is not rewritten"
        );
        drop(store);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn format_2_files_with_set_files_inline_are_still_read_and_rewritten_as_format_3() {
        let dir = tmpdir("v2");
        let store = Store::open_locked(&dir, 10, false).unwrap();
        let (rules, set) = (&b"version = 1\n"[..], &b"192.0.2.0/24\n"[..]);
        let digest = Digest::of_parts(rules, &[("bl.txt", set)]);
        let meta = format!(
            "{{\"generation\":3,\"digest\":\"{digest}\",\"len\":{},\"source\":\"r.toml\",\"saved_at\":7,\"outcome\":\"pending\",\"companions\":[{{\"name\":\"bl.txt\",\"len\":{}}}]}}",
            rules.len(),
            set.len()
        );
        let mut data = format!("{MAGIC}\n{meta}\n").into_bytes();
        data.extend_from_slice(rules);
        data.extend_from_slice(set);
        fs::write(store.path_of(3), &data).unwrap();
        let k = store.load(3).unwrap();
        assert_eq!((k.digest, k.companions[0].bytes.as_slice()), (digest, set));
        store.mark_confirmed(3).unwrap();
        let head = fs::read(store.path_of(3)).unwrap();
        assert!(head.starts_with(MAGIC_V3.as_bytes()));
        let k = store.load(3).unwrap();
        assert_eq!(
            (k.digest, k.outcome, k.companions[0].bytes.as_slice()),
            (digest, Outcome::Confirmed, set)
        );
        drop(store);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_objects_directory_that_is_a_symlink_is_refused() {
        let dir = tmpdir("objlink");
        let elsewhere = tmpdir("objlink-target");
        fs::create_dir_all(&elsewhere).unwrap();
        let store = Store::open_locked(&dir, 10, false).unwrap();
        std::os::unix::fs::symlink(&elsewhere, store.objects_dir()).unwrap();
        let err = store
            .save(&with_set(1, b"192.0.2.0/24\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("symbolic link"), "{err}");
        assert_eq!(
            fs::read_dir(&elsewhere).unwrap().count(),
            0,
            "nothing written through it"
        );
        drop(store);
        fs::remove_dir_all(&dir).unwrap();
        fs::remove_dir_all(&elsewhere).unwrap();
    }

    #[test]
    fn format_1_files_are_still_read() {
        let dir = tmpdir("v1");
        let store = Store::open(&dir, 10, false).unwrap();
        let bytes = b"version = 1\n";
        let meta = format!(
            "{{\"generation\":4,\"digest\":\"{}\",\"len\":{},\"source\":\"old.toml\",\"saved_at\":7,\"confirmed\":true}}",
            Digest::of(bytes),
            bytes.len()
        );
        let mut data = format!("{MAGIC_V1}\n{meta}\n").into_bytes();
        data.extend_from_slice(bytes);
        fs::write(store.path_of(4), &data).unwrap();
        let k = store.load(4).unwrap();
        assert_eq!(
            (k.outcome, k.source.as_str(), k.bytes.as_slice()),
            (Outcome::Confirmed, "old.toml", &bytes[..])
        );
        assert!(k.companions.is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_in_place_of_the_directory_is_a_clear_error() {
        let path = tmpdir("file");
        fs::write(&path, b"x").unwrap();
        let err = Store::open(&path, 10, true).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("not a directory"), "{err}");
        fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_wrongly_numbered_file_is_refused() {
        let dir = tmpdir("renamed");
        let store = Store::open_locked(&dir, 10, false).unwrap();
        store.save(&Kept::new(3, "x", b"three".to_vec(), true)).unwrap();
        fs::rename(store.path_of(3), store.path_of(30)).unwrap();
        let err = store.load(30).unwrap_err().to_string();
        assert!(err.contains("carries generation 3"), "{err}");
        assert_eq!(store.max_generation(), 0);
        assert_eq!(store.load(3).unwrap_err(), KeptError::NotKept { generation: 3 });
        drop(store);
        fs::remove_dir_all(&dir).unwrap();
    }
}
