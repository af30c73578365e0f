//! Last-known-good: generations persisted in the state directory, never torn.
//!
//! Each kept generation is one file, `gen-<number>.lkg`: a header line, one
//! line of JSON metadata (generation, SHA-256 digest and length of the rule
//! bytes, source, time, whether it was confirmed), then the rule file's bytes
//! exactly. A file is written to a temporary name, fsynced, renamed into
//! place and the directory fsynced, so after a crash at any instant the
//! directory holds either the complete old set of files or the complete new
//! one. On reading, a file whose length or digest does not match its
//! metadata is ignored (it cannot be produced by this writer, but a disk can
//! still lie). Only the newest `keep` generations are kept.
//!
//! ```
//! use palisade_engine::lkg::{Kept, Store};
//! let dir = std::env::temp_dir().join(format!("palisade-lkg-doc-{}", std::process::id()));
//! let store = Store::open(&dir, 10, true).unwrap();
//! store.save(&Kept::new(7, "edge.toml", b"version = 1\n".to_vec(), true)).unwrap();
//! store.prune();
//! let newest = store.newest(true).unwrap();
//! assert_eq!((newest.generation, newest.bytes.as_slice()), (7, &b"version = 1\n"[..]));
//! std::fs::remove_dir_all(&dir).unwrap();
//! ```

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use palisade_rules::Digest;
use serde::{Deserialize, Serialize};

const MAGIC: &str = "palisade-lkg 1";

/// One persisted generation: its metadata and the rule file's bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kept {
    /// The generation number.
    pub generation: u64,
    /// SHA-256 of `bytes`.
    pub digest: Digest,
    /// Where the rules came from (a path, or a note such as `control socket`).
    pub source: String,
    /// When it was saved, seconds since the Unix epoch.
    pub saved_at: u64,
    /// False while a commit-confirmed reload waits for its confirmation;
    /// boot never starts from an unconfirmed generation.
    pub confirmed: bool,
    /// The rule file, byte for byte.
    pub bytes: Vec<u8>,
}

impl Kept {
    /// A generation to keep, digest computed, saved now.
    pub fn new(generation: u64, source: &str, bytes: Vec<u8>, confirmed: bool) -> Self {
        Kept {
            generation,
            digest: Digest::of(&bytes),
            source: source.to_string(),
            saved_at: unix_now(),
            confirmed,
            bytes,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Meta {
    generation: u64,
    digest: String,
    len: usize,
    source: String,
    saved_at: u64,
    confirmed: bool,
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

impl std::error::Error for StoreError {}

/// The state directory holding kept generations.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    keep: usize,
    durable: bool,
}

impl Store {
    /// Opens (creating if needed) the state directory `dir`, keeping the newest
    /// `keep` generations. `durable = false` skips every fsync: only for tests
    /// and benchmarks that must not wait on the disk.
    pub fn open(dir: &Path, keep: usize, durable: bool) -> Result<Store, StoreError> {
        let err = |action, error| StoreError {
            path: dir.to_path_buf(),
            action,
            error,
        };
        fs::create_dir_all(dir).map_err(|e| err("create the state directory", e))?;
        let meta = fs::metadata(dir).map_err(|e| err("read the state directory", e))?;
        if !meta.is_dir() {
            return Err(err(
                "use as the state directory",
                io::Error::other("not a directory"),
            ));
        }
        let store = Store {
            dir: dir.to_path_buf(),
            keep: keep.max(1),
            durable,
        };
        // Leftovers of a write interrupted by a crash: never complete, never read.
        if let Ok(entries) = fs::read_dir(dir) {
            for e in entries.flatten() {
                let name = e.file_name();
                let name = name.to_string_lossy();
                if name.starts_with(".gen-") && name.ends_with(".tmp") {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        Ok(store)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path_of(&self, generation: u64) -> PathBuf {
        self.dir.join(format!("gen-{generation:020}.lkg"))
    }

    /// Persists `kept` atomically (temp file, fsync, rename, fsync directory).
    /// Old generations stay until [`Store::prune`].
    pub fn save(&self, kept: &Kept) -> Result<(), StoreError> {
        let meta = Meta {
            generation: kept.generation,
            digest: kept.digest.to_string(),
            len: kept.bytes.len(),
            source: kept.source.clone(),
            saved_at: kept.saved_at,
            confirmed: kept.confirmed,
        };
        let meta = serde_json::to_string(&meta).unwrap_or_default();
        let final_path = self.path_of(kept.generation);
        let tmp = self
            .dir
            .join(format!(".gen-{:020}.{}.tmp", kept.generation, std::process::id()));
        let write = || -> io::Result<()> {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            f.write_all(MAGIC.as_bytes())?;
            f.write_all(b"\n")?;
            f.write_all(meta.as_bytes())?;
            f.write_all(b"\n")?;
            f.write_all(&kept.bytes)?;
            if self.durable {
                f.sync_all()?;
            }
            Ok(())
        };
        if let Err(error) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(StoreError {
                path: tmp,
                action: "write",
                error,
            });
        }
        if let Err(error) = fs::rename(&tmp, &final_path) {
            let _ = fs::remove_file(&tmp);
            return Err(StoreError {
                path: final_path,
                action: "rename into place",
                error,
            });
        }
        if self.durable {
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(|error| StoreError {
                    path: self.dir.clone(),
                    action: "fsync",
                    error,
                })?;
        }
        Ok(())
    }

    /// Generation numbers of every `gen-*.lkg` file, ascending (validity not checked).
    fn numbers(&self) -> Vec<u64> {
        let mut out: Vec<u64> = fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_prefix("gen-")?.strip_suffix(".lkg")?.parse().ok()
            })
            .collect();
        out.sort_unstable();
        out
    }

    /// Removes generations beyond the newest `keep` (called once a new one is published).
    pub fn prune(&self) {
        let numbers = self.numbers();
        if numbers.len() > self.keep {
            for &n in &numbers[..numbers.len() - self.keep] {
                let _ = fs::remove_file(self.path_of(n));
            }
        }
    }

    /// The highest generation number present on disk, valid or not (0 if none),
    /// so that numbers keep increasing across restarts.
    pub fn max_generation(&self) -> u64 {
        self.numbers().last().copied().unwrap_or(0)
    }

    /// Reads and verifies one kept generation.
    pub fn load(&self, generation: u64) -> Result<Kept, String> {
        let path = self.path_of(generation);
        let data = fs::read(&path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        decode(&data).map_err(|why| format!("{}: {why}", path.display()))
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
        self.numbers()
            .into_iter()
            .rev()
            .filter_map(|n| self.load(n).ok())
            .find(|k| k.confirmed || !confirmed_only)
    }

    /// Removes a kept generation (a persisted candidate that was then not published).
    pub fn remove(&self, generation: u64) {
        let _ = fs::remove_file(self.path_of(generation));
        if self.durable {
            let _ = File::open(&self.dir).and_then(|d| d.sync_all());
        }
    }

    /// Rewrites generation `generation` as confirmed.
    pub fn mark_confirmed(&self, generation: u64) -> Result<(), StoreError> {
        match self.load(generation) {
            Ok(mut k) if !k.confirmed => {
                k.confirmed = true;
                self.save(&k)
            }
            _ => Ok(()),
        }
    }
}

fn decode(data: &[u8]) -> Result<Kept, String> {
    let mut parts = data.splitn(3, |&b| b == b'\n');
    let magic = parts.next().unwrap_or_default();
    if magic != MAGIC.as_bytes() {
        return Err("not a palisade last-known-good file".into());
    }
    let meta = parts.next().ok_or("metadata missing")?;
    let bytes = parts.next().ok_or("rule bytes missing")?;
    let meta: Meta = serde_json::from_slice(meta).map_err(|e| format!("bad metadata: {e}"))?;
    if bytes.len() != meta.len {
        return Err(format!("torn: {} of {} bytes", bytes.len(), meta.len));
    }
    let digest = Digest::of(bytes);
    if digest.to_string() != meta.digest {
        return Err("digest mismatch".into());
    }
    Ok(Kept {
        generation: meta.generation,
        digest,
        source: meta.source,
        saved_at: meta.saved_at,
        confirmed: meta.confirmed,
        bytes: bytes.to_vec(),
    })
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
        std::env::temp_dir().join(format!("palisade-lkg-{tag}-{}", std::process::id()))
    }

    #[test]
    fn keeps_only_the_newest_and_rejects_torn_files() {
        let dir = tmpdir("keep");
        let _ = fs::remove_dir_all(&dir);
        let store = Store::open(&dir, 3, false).unwrap();
        for g in 1..=5 {
            store
                .save(&Kept::new(g, "x", vec![b'a'; g as usize], true))
                .unwrap();
        }
        assert_eq!(store.list().len(), 5, "nothing is removed before prune");
        store.prune();
        let gens: Vec<u64> = store.list().iter().map(|k| k.generation).collect();
        assert_eq!(gens, vec![3, 4, 5]);
        // Tear the newest: it must be ignored, the previous one wins.
        let p = store.path_of(5);
        let data = fs::read(&p).unwrap();
        fs::write(&p, &data[..data.len() - 1]).unwrap();
        assert_eq!(store.newest(true).unwrap().generation, 4);
        assert_eq!(store.max_generation(), 5);
        // Unconfirmed generations are skipped when asked.
        store.save(&Kept::new(6, "x", b"six".to_vec(), false)).unwrap();
        assert_eq!(store.newest(true).unwrap().generation, 4);
        assert_eq!(store.newest(false).unwrap().generation, 6);
        store.mark_confirmed(6).unwrap();
        assert_eq!(store.newest(true).unwrap().generation, 6);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_in_place_of_the_directory_is_a_clear_error() {
        let path = tmpdir("file");
        fs::write(&path, b"x").unwrap();
        let err = Store::open(&path, 10, true).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        fs::remove_file(&path).unwrap();
    }
}
