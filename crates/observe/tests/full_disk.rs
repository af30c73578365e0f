//! A full filesystem under the log: records are dropped and counted, frames
//! are not, the files stay whole (no half line, no half pcapng block), and
//! logging resumes once there is room. The test mounts a small tmpfs (root
//! only: it prints `SKIPPED: ...` otherwise) and unmounts it at the end.

mod common;

use std::ffi::CString;
use std::path::{Path, PathBuf};

use common::*;
use palisade_engine::policy::Verdict;
use palisade_observe::{LogConfig, Logger, Target};

/// A tmpfs of `size` bytes mounted at `dir`, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: usize) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let c = |s: &str| CString::new(s).unwrap();
        let (src, target, fstype, opts) = (
            c("palisade-test"),
            c(dir.to_str().unwrap()),
            c("tmpfs"),
            c(&format!("size={size},mode=0700")),
        );
        // SAFETY: every pointer is a valid NUL-terminated string that outlives the call.
        let rc = unsafe {
            libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                0,
                opts.as_ptr().cast(),
            )
        };
        assert_eq!(
            rc,
            0,
            "mount tmpfs on {}: {}",
            dir.display(),
            std::io::Error::last_os_error()
        );
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let target = CString::new(self.0.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path; MNT_DETACH never blocks on open files.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}

#[test]
fn a_full_disk_drops_records_not_frames_and_keeps_the_files_whole() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIPPED: needs root to mount a tmpfs");
        return;
    }
    let dir = TempDir::new("full");
    let fs = dir.join("fs");
    let _mounted = Tmpfs::mount(&fs, 256 * 1024);
    // Leave room for a few hundred records only.
    std::fs::write(fs.join("filler"), vec![0u8; 160 * 1024]).unwrap();
    let engine = engine(&dir, &rules(1_000_000, 1_000_000));
    let config = LogConfig {
        json: Some(Target::File(fs.join("log.json"))),
        pcap: Some(fs.join("log.pcapng")),
        ..LogConfig::default()
    };
    let logger = Logger::start(config).unwrap();
    let mut log = logger.worker();
    let mut h = engine.handle();
    let keys: Vec<_> = (0..100).map(telnet).collect();
    let frames: Vec<_> = (0..100).map(|i| frame(i, 200)).collect();
    let mut decided = 0u64;
    for _ in 0..50 {
        let out = run_batch(&mut h, &mut log, "wan0", &keys, &frames);
        decided += out.iter().filter(|d| d.verdict == Verdict::Deny).count() as u64;
        assert!(logger.flush(FLUSH));
    }
    assert_eq!(decided, 5000, "every frame decided while the disk was full");
    let full = logger.stats();
    assert!(
        full.json_errors > 0 && full.pcap_errors > 0,
        "the disk filled: {full:?}"
    );
    assert!(
        full.json_frames > 0 && full.pcap_frames > 0,
        "some fit first: {full:?}"
    );
    let e = full
        .json_last_error
        .as_ref()
        .map(|(_, m)| m.as_str())
        .unwrap_or("");
    assert!(e.contains("log.json") && e.contains("No space left"), "{e}");
    assert_eq!(full.queued, 5000);
    assert_eq!(
        full.json_frames + full.json_errors,
        5000,
        "every record written or counted"
    );
    assert_eq!(full.pcap_frames + full.pcap_errors, 5000);
    // The files hold exactly the records counted as written, all whole.
    assert_eq!(lines(&fs.join("log.json")).len() as u64, full.json_frames);
    assert_eq!(pcap_frames(&fs.join("log.pcapng")).len() as u64, full.pcap_frames);

    // Room again: logging resumes by itself.
    std::fs::remove_file(fs.join("filler")).unwrap();
    run_batch(&mut h, &mut log, "wan0", &keys[..10], &frames[..10]);
    assert!(logger.flush(FLUSH));
    let after = logger.stats();
    assert_eq!(after.json_frames, full.json_frames + 10);
    assert_eq!(after.pcap_frames, full.pcap_frames + 10);
    assert_eq!(lines(&fs.join("log.json")).len() as u64, after.json_frames);
    let pcap = pcap_frames(&fs.join("log.pcapng"));
    assert_eq!(pcap.len() as u64, after.pcap_frames);
    assert!(pcap
        .iter()
        .all(|(iface, len, _, c)| iface == "wan0" && *len == 200 && c.contains("no-telnet")));
    drop(logger);
}
