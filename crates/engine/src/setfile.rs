//! Set changes: writing a set's file through, and checking a changed set.
//!
//! A set change (`palisade set add|del`) is a generation like a reload: it is
//! validated, compiled (only the changed set is rebuilt), self-tested,
//! persisted and published by the same pipeline, and its set file is written
//! through so that a later reload or restart keeps it. The write is the
//! last-known-good store's: a temporary file beside the set file, fsync,
//! rename over it, fsync of the directory, so a crash at any instant leaves
//! the old file or the new one whole, never a mix.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use palisade_classify::{CompiledSet, IpFamily, Prefix};
use palisade_rules::SetElements;

/// Writes `bytes` to `path` atomically (temp, fsync, rename, fsync dir; no
/// fsync when `durable` is false). The file keeps its permissions; a new one
/// gets 0644 less the umask. A temporary file left by a crash is replaced.
/// Only a regular file is replaced (a symbolic link is kept and its target
/// replaced); a FIFO, a device or a directory in its place is an error and
/// nothing is written.
///
/// Its temporary file is not the one a set change stages ([`Staged::write`]):
/// a confirm window's revert restoring a set file never meets a set change's.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], durable: bool) -> io::Result<()> {
    Staged::write_as(path, bytes, durable, "palisade-restore-tmp")?.commit()
}

/// A set change's file to write through when its generation is published:
/// the file, and its temporary copy as staged (or why staging failed).
#[derive(Debug)]
pub(crate) struct WriteThrough<'a> {
    pub file: &'a palisade_rules::CompanionFile,
    pub staged: io::Result<Staged>,
}

/// A set file written (and fsynced) beside its path under a temporary name,
/// not yet renamed over it: [`Staged::commit`] does that; dropped without a
/// commit, the temporary file is removed and the set file is as it was.
///
/// A set change stages its file while the changed set compiles and
/// self-tests, so the disk works while the CPU does, and renames it when the
/// generation is published.
#[derive(Debug)]
pub(crate) struct Staged {
    /// The file replaced (links resolved).
    path: PathBuf,
    tmp: PathBuf,
    dir: PathBuf,
    durable: bool,
    committed: bool,
}

impl Staged {
    /// Writes the temporary file `.<name>.palisade-tmp` beside the set file
    /// (and fsyncs it when `durable`).
    pub(crate) fn write(path: &Path, bytes: &[u8], durable: bool) -> io::Result<Staged> {
        Staged::write_as(path, bytes, durable, "palisade-tmp")
    }

    fn write_as(path: &Path, bytes: &[u8], durable: bool, suffix: &str) -> io::Result<Staged> {
        let (path, dir, tmp) = temporary_name(path, suffix)?;
        let mode = check_replaceable(&path)?;
        let staged = Staged {
            path,
            tmp,
            dir,
            durable,
            committed: false,
        };
        // A leftover of a crash (or anything planted there) is removed, and the
        // temporary file is created anew, never through a link.
        match fs::remove_file(&staged.tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&staged.tmp)?;
        // (from here on, dropping `staged` removes the temporary file)
        if let Some(mode) = &mode {
            f.set_permissions(mode.clone())?;
        }
        f.write_all(bytes)?;
        if durable {
            f.sync_data()?; // the data and its length: what the rename makes visible
        }
        Ok(staged)
    }

    /// Renames the temporary file over the set file and fsyncs the directory.
    /// The replaced file's blocks are freed after the rename, off this thread
    /// (freeing a big file's blocks takes milliseconds the change need not wait).
    pub(crate) fn commit(mut self) -> io::Result<()> {
        let old = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
            .open(&self.path)
            .ok();
        fs::rename(&self.tmp, &self.path)?;
        self.committed = true;
        if let Some(old) = old {
            let _ = std::thread::Builder::new()
                .name("set-file-free".into())
                .spawn(move || drop(old));
        }
        if self.durable {
            File::open(&self.dir)?.sync_all()?;
        }
        Ok(())
    }
}

/// The set file `path` (links resolved), its directory, and its temporary
/// file `.<name>.<suffix>` beside it.
fn temporary_name(path: &Path, suffix: &str) -> io::Result<(PathBuf, PathBuf, PathBuf)> {
    let path = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file path"))?;
    let tmp = dir.join(format!(".{}.{suffix}", name.to_string_lossy()));
    Ok((path, dir, tmp))
}

/// Removes the temporary files a set change ([`Staged::write`]) or a
/// revert's restore ([`write_atomic`]) left beside the set file `path` when
/// killed before its rename: only those exact names, never a directory (a
/// link is removed, not followed). Called at boot, before this engine can
/// stage one; the next write at that name would replace it anyway.
pub(crate) fn remove_leftovers(path: &Path) {
    for suffix in ["palisade-tmp", "palisade-restore-tmp"] {
        if let Ok((_, _, tmp)) = temporary_name(path, suffix) {
            if fs::symlink_metadata(&tmp).is_ok_and(|m| !m.is_dir()) {
                let _ = fs::remove_file(&tmp);
            }
        }
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Whether `path` (through links) may be replaced by [`write_atomic`]: a
/// regular file (its permissions returned) or nothing yet (`None`); a FIFO,
/// a device or a directory is an error. Never opens the file.
pub(crate) fn check_replaceable(path: &Path) -> io::Result<Option<fs::Permissions>> {
    match fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(Some(m.permissions())),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file; nothing written",
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether the compiled `set` agrees with the element list `elements` at
/// the edges of the changed elements `touched` and of an even sample (64) of the
/// list; the first disagreement, described, if any. The reference looks each
/// probe up at every prefix length of the list (no trie involved).
pub(crate) fn self_test(set: &CompiledSet, elements: &SetElements, touched: &SetElements) -> Option<String> {
    match (elements, touched) {
        (SetElements::Addresses(list), SetElements::Addresses(changed)) => {
            let step = (list.len() / 64).max(1);
            for p in changed.iter().chain(list.iter().step_by(step)) {
                let (lo, hi) = p.range();
                let max = if p.family == IpFamily::V4 {
                    u32::MAX as u128
                } else {
                    u128::MAX
                };
                for a in [lo.wrapping_sub(1) & max, lo, hi, hi.wrapping_add(1) & max] {
                    let want = (0..=p.family.bits()).any(|len| {
                        let cover = match p.family {
                            IpFamily::V4 => Prefix::v4((a as u32).to_be_bytes(), len),
                            IpFamily::V6 => Prefix::v6(a, len),
                        };
                        list.lists(&cover)
                    });
                    if set.contains_addr(p.family, a) != want {
                        return Some(format!(
                            "the compiled set answers {} for address {a:#x} ({:?}), its elements {want}",
                            !want, p.family
                        ));
                    }
                }
            }
            None
        }
        (SetElements::Ports(list), _) => (0..=u16::MAX)
            .find(|&p| set.contains_port(p) != list.iter().any(|r| r.contains(p)))
            .map(|p| format!("the compiled set disagrees with its elements on port {p}")),
        (SetElements::Addresses(_), SetElements::Ports(_)) => Some("a port change to an address set".into()),
    }
}
