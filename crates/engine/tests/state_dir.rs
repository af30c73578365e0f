//! The state directory and rule files as hostile input: FIFOs, devices and
//! symlinks are refused at once (never read, never waited on), junk files do
//! not steer the numbering, pruning never drops the last confirmed
//! generation, numbers never go back, and one engine at a time.

mod common;

use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use palisade_engine::lkg::{Kept, Outcome, Store};
use palisade_engine::{
    BootSource, Engine, EngineOptions, GenerationState, ReloadOptions, ReloadSource, ReloadStage,
};

#[test]
fn a_fifo_or_a_device_as_rule_file_is_refused_at_once() {
    let dir = TempDir::new("fifo-rules");
    let engine = std::sync::Arc::new(engine_with(&dir, &rules_a(), false));
    let before = engine.status();
    let fifo = dir.join("pipe.toml");
    mkfifo(&fifo);
    for path in [fifo.clone(), "/dev/zero".into()] {
        let e = std::sync::Arc::clone(&engine);
        let p = path.clone();
        let err = within(10, "reload of a FIFO/device", move || {
            e.reload(ReloadSource::Path(p), &ReloadOptions::default())
        })
        .unwrap_err();
        assert_eq!(err.stage, ReloadStage::Read, "{}", path.display());
        assert!(err.errors[0].contains("not a regular file"), "{:?}", err.errors);
    }
    // The config itself replaced by a FIFO (what SIGHUP reloads).
    std::fs::remove_file(dir.join("rules.toml")).unwrap();
    mkfifo(&dir.join("rules.toml"));
    let e = std::sync::Arc::clone(&engine);
    let err = within(10, "reload of a FIFO config", move || {
        e.reload(ReloadSource::Config, &ReloadOptions::default())
    })
    .unwrap_err();
    assert!(err.errors[0].contains("not a regular file"), "{:?}", err.errors);
    // Status does not hang on it either, and says why the config cannot be read.
    let e = std::sync::Arc::clone(&engine);
    let st = within(10, "status with a FIFO config", move || e.status());
    assert_eq!(
        (st.generation, st.digest.clone()),
        (before.generation, before.digest)
    );
    assert!(st.config.error.unwrap().contains("not a regular file"));
}

#[test]
fn a_fifo_a_symlink_or_a_device_in_the_state_directory_is_refused_not_read() {
    let dir = TempDir::new("fifo-state");
    let gen_a = engine_with(&dir, &rules_a(), false).status();
    let store = Store::open(&dir.join("state"), 10, false).unwrap();
    // A valid generation file elsewhere, linked into the state directory: refused too.
    let elsewhere = TempDir::new("fifo-state-elsewhere");
    let other = Store::open_locked(&elsewhere.join("s"), 10, false).unwrap();
    other
        .save(&Kept::new(4, "b.toml", rules_b().into_bytes(), true))
        .unwrap();
    mkfifo(&store.path_of(2));
    symlink("/dev/zero", store.path_of(3)).unwrap();
    symlink(other.path_of(4), store.path_of(4)).unwrap();
    drop(other);
    let ((engine, boot), _dir) = within(20, "boot beside a FIFO and /dev/zero", move || {
        let r = reopen(&dir);
        (r, dir)
    });
    // Newer files than the running generation could not be used: said loudly.
    assert_eq!(boot.state, GenerationState::LastKnownGood, "{boot:?}");
    assert_eq!(boot.generation, gen_a.generation);
    let st = engine.status();
    assert_eq!(st.digest, gen_a.digest);
    let refused = st.kept_refused.join("\n");
    assert_eq!(st.kept_refused.len(), 3, "{refused}");
    assert!(
        refused.contains("generation 2: ") && refused.contains("not a regular file"),
        "{refused}"
    );
    assert!(
        refused.contains("generation 3: ") && refused.contains("symbolic link"),
        "{refused}"
    );
    assert!(
        refused.contains("generation 4: ") && refused.contains("symbolic link"),
        "{refused}"
    );
    // A reload is neither blocked nor misled by them.
    let engine = std::sync::Arc::new(engine);
    let e = std::sync::Arc::clone(&engine);
    let ok = within(20, "reload beside a FIFO", move || {
        e.reload(bytes("b.toml", &rules_b()), &ReloadOptions::default())
    })
    .unwrap();
    assert_eq!(engine.status().state, GenerationState::Active);
    assert!(ok.generation > gen_a.generation);
    drop(engine);
    drop(elsewhere);
}

#[test]
fn a_junk_file_with_a_huge_number_does_not_wrap_the_numbering() {
    let dir = TempDir::new("junk");
    let engine = engine_with(&dir, &rules_a(), false);
    let first = engine.status().generation;
    let junk = engine.store().dir().join(format!("gen-{}.lkg", u64::MAX));
    std::fs::write(&junk, b"junk").unwrap();
    let ok = engine
        .reload(bytes("b.toml", &rules_b()), &ReloadOptions::default())
        .unwrap();
    assert_eq!(ok.generation, first + 1, "only valid files count");
    let st = engine.status();
    assert!(
        st.kept_refused.iter().any(|r| r.contains(&u64::MAX.to_string())),
        "{:?}",
        st.kept_refused
    );
    // A valid generation at the top of the range: the next reload is refused
    // ("exhausted"), never numbered 0.
    std::fs::remove_file(&junk).unwrap();
    Store::open(&dir.join("state"), 10, false)
        .unwrap()
        .save(&Kept::new(u64::MAX, "top.toml", rules_a().into_bytes(), true))
        .unwrap();
    let err = engine
        .reload(bytes("a.toml", &rules_a()), &ReloadOptions::default())
        .unwrap_err();
    assert_eq!(err.stage, ReloadStage::Persist);
    assert!(err.errors[0].contains("exhausted"), "{:?}", err.errors);
    assert_eq!(engine.status().generation, ok.generation, "nothing changed");
}

const CHILD_ENV: &str = "PALISADE_STATE_DIR_CHILD";

/// Not a test of its own: the child of `pruning_never_drops_the_last_confirmed_generation`.
/// Boots on A, then makes 12 commit-confirmed reloads that nobody confirms, then waits to be killed.
#[test]
fn child_twelve_unconfirmed_reloads() {
    let Ok(dir) = std::env::var(CHILD_ENV) else { return };
    let dir = Path::new(&dir);
    let (engine, _) = Engine::open(
        &dir.join("rules.toml"),
        &dir.join("state"),
        EngineOptions::default(),
    )
    .unwrap();
    let opts = ReloadOptions {
        confirm_within: Some(Duration::from_secs(3600)),
        ..ReloadOptions::default()
    };
    for i in 0..12 {
        let text = format!("{}\n# unconfirmed {i}\n", rules_b());
        engine.reload(bytes("b.toml", &text), &opts).unwrap();
    }
    std::fs::write(dir.join("ready"), b"").unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn pruning_never_drops_the_last_confirmed_generation_after_twelve_unconfirmed_reloads_and_a_crash() {
    let dir = TempDir::new("prune");
    std::fs::write(dir.join("rules.toml"), rules_a()).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_twelve_unconfirmed_reloads",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !dir.join("ready").exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the child never got ready"
        );
        assert!(child.try_wait().unwrap().is_none(), "the child died");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL: the 13th generation was still pending
    child.wait().unwrap();

    let kept = Store::open(&dir.join("state"), 10, false).unwrap().scan().kept;
    assert_eq!(
        kept.first().map(|k| k.generation),
        Some(1),
        "generation 1 (A, confirmed) is kept: {kept:?}"
    );
    assert_eq!(
        kept.iter().filter(|k| k.outcome == Outcome::Pending).count(),
        10,
        "{kept:?}"
    );

    // Restart with a broken config: the last confirmed generation runs, not "no rules".
    std::fs::write(dir.join("rules.toml"), "version = 1\n[[acl\n").unwrap();
    let (engine, boot) = reopen(&dir);
    assert_eq!(
        (boot.state, boot.generation, boot.source),
        (GenerationState::Active, 1, BootSource::StateDirectory)
    );
    let st = engine.status();
    assert_eq!(
        st.digest.unwrap(),
        palisade_rules::Digest::of(rules_a().as_bytes()).to_string()
    );
    assert!(
        st.kept
            .iter()
            .filter(|k| k.generation > 1)
            .all(|k| k.outcome == Outcome::Unconfirmed),
        "the generations pending at the crash are recorded as never confirmed: {:?}",
        st.kept
    );
}

#[test]
fn numbers_never_go_back_after_a_crash_that_loses_a_generation() {
    let dir = TempDir::new("skip");
    let opts = ReloadOptions {
        confirm_within: Some(Duration::from_secs(3600)),
        ..ReloadOptions::default()
    };
    let pending = {
        let engine = engine_with(&dir, &rules_a(), false);
        engine
            .reload(bytes("b.toml", &rules_b()), &opts)
            .unwrap()
            .generation
    }; // dropped without a confirmation: as after a crash
       // The unconfirmed generation's file is gone (pruned, or never made it to disk).
    std::fs::remove_file(
        Store::open(&dir.join("state"), 10, false)
            .unwrap()
            .path_of(pending),
    )
    .unwrap();
    let (engine, boot) = reopen(&dir);
    assert!(boot.generation < pending);
    let c = format!("{}\n# c\n", rules_b());
    let ok = engine
        .reload(bytes("c.toml", &c), &ReloadOptions::default())
        .unwrap();
    assert!(
        ok.generation > pending,
        "generation {} was handed out before the crash; the next one is {}",
        pending,
        ok.generation
    );
}

#[test]
fn a_second_engine_on_the_same_state_directory_is_refused() {
    let dir = TempDir::new("second");
    let first = engine_with(&dir, &rules_a(), false);
    let err = Engine::open(
        &dir.join("rules.toml"),
        &dir.join("state"),
        EngineOptions::default(),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("in use by another palisade process"), "{msg}");
    assert!(msg.contains(&format!("pid {}", std::process::id())), "{msg}");
    // The first one is untouched and carries on.
    assert!(first
        .reload(bytes("b.toml", &rules_b()), &ReloadOptions::default())
        .is_ok());
    drop(first);
    assert!(Engine::open(
        &dir.join("rules.toml"),
        &dir.join("state"),
        EngineOptions::default()
    )
    .is_ok());
}

#[test]
fn a_symlinked_or_foreign_state_directory_is_refused() {
    let dir = TempDir::new("symlinked");
    std::fs::write(dir.join("rules.toml"), rules_a()).unwrap();
    std::fs::create_dir(dir.join("real")).unwrap();
    symlink(dir.join("real"), dir.join("state")).unwrap();
    let err = Engine::open(
        &dir.join("rules.toml"),
        &dir.join("state"),
        EngineOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("symbolic link"), "{err}");
    assert_eq!(
        std::fs::read_dir(dir.join("real")).unwrap().count(),
        0,
        "nothing written through it"
    );
    // Owned by another user (needs root to make one).
    let foreign = dir.join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    let chowned = Command::new("chown")
        .args(["65534:65534"])
        .arg(&foreign)
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !chowned {
        println!("SKIPPED (foreign owner part): cannot chown here (needs root)");
        return;
    }
    let err = Engine::open(&dir.join("rules.toml"), &foreign, EngineOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("owned by uid 65534"), "{err}");
}
