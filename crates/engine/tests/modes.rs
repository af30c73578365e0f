//! The state directory is private whatever the umask: directory 0700, every
//! file in it 0600. (Its own test binary: the umask is process-wide.)

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;
use palisade_engine::ReloadOptions;

fn mode(p: &std::path::Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn modes_are_private_under_umask_000() {
    // SAFETY: umask only changes this process's file-creation mask; this test
    // binary has no other test that creates files concurrently.
    let old = unsafe { libc::umask(0) };
    let dir = TempDir::new("umask");
    // A state directory made by hand with wide permissions is tightened too.
    std::fs::create_dir(dir.join("state")).unwrap();
    std::fs::set_permissions(dir.join("state"), std::fs::Permissions::from_mode(0o777)).unwrap();
    let engine = engine_with(&dir, &rules_a(), true);
    engine
        .reload(bytes("b.toml", &rules_b()), &ReloadOptions::default())
        .unwrap();
    let state = engine.store().dir().to_path_buf();
    assert_eq!(mode(&state), 0o700, "state directory");
    let mut files = 0;
    for e in std::fs::read_dir(&state).unwrap().flatten() {
        assert_eq!(mode(&e.path()), 0o600, "{}", e.path().display());
        files += 1;
    }
    assert!(files >= 4, "two generations, the lock and the high-water mark");
    // A fresh directory (and the parents created for it) under umask 000.
    drop(engine);
    std::fs::write(dir.join("rules.toml"), rules_a()).unwrap();
    let fresh = dir.join("deep/er/state");
    let (engine, _) =
        palisade_engine::Engine::open(&dir.join("rules.toml"), &fresh, Default::default()).unwrap();
    assert_eq!(mode(&fresh), 0o700);
    for e in std::fs::read_dir(&fresh).unwrap().flatten() {
        assert_eq!(mode(&e.path()), 0o600, "{}", e.path().display());
    }
    drop(engine);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
}
