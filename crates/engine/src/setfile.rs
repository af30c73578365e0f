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
use std::path::Path;

use palisade_classify::{CompiledSet, IpFamily, Prefix};
use palisade_rules::SetElements;

/// Writes `bytes` to `path` atomically (temp, fsync, rename, fsync dir; no
/// fsync when `durable` is false). The file keeps its permissions; a new one
/// gets 0644 less the umask. A temporary file left by a crash is replaced.
/// Only a regular file is replaced (a symbolic link is kept and its target
/// replaced); a FIFO, a device or a directory in its place is an error and
/// nothing is written.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], durable: bool) -> io::Result<()> {
    let path = &fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file path"))?;
    let tmp = dir.join(format!(".{}.palisade-tmp", name.to_string_lossy()));
    let mode = check_replaceable(path)?;
    let write = || -> io::Result<()> {
        // A leftover of a crash (or anything planted there) is removed, and the
        // temporary file is created anew, never through a link.
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        if let Some(mode) = &mode {
            f.set_permissions(mode.clone())?;
        }
        f.write_all(bytes)?;
        if durable {
            f.sync_data()?; // the data and its length: what the rename makes visible
        }
        Ok(())
    };
    if let Err(e) = write().and_then(|()| fs::rename(&tmp, path)) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    if durable {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
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
