//! Operations that never surprise: a restart keeps what ran, rollback skips
//! what was reverted and can itself be commit-confirmed, a confirmation is
//! reported only once it is durable.

mod common;

use std::time::{Duration, Instant};

use common::*;
use palisade_engine::lkg::{Outcome, Store};
use palisade_engine::{
    BootSource, Engine, EngineOptions, GenerationState, ReloadOptions, ReloadSource, RollbackOptions,
};

fn window(ms: u64) -> ReloadOptions {
    ReloadOptions {
        confirm_within: Some(Duration::from_millis(ms)),
        ..ReloadOptions::default()
    }
}

/// Polls status until `done` holds (at most `secs`).
fn wait_for(engine: &Engine, secs: u64, what: &str, done: impl Fn(&palisade_engine::Status) -> bool) {
    let t0 = Instant::now();
    while !done(&engine.status()) {
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "{what}: {:?}",
            engine.status()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn digest(text: &str) -> Option<String> {
    Some(palisade_rules::Digest::of(text.as_bytes()).to_string())
}

#[test]
fn a_restart_runs_what_ran_and_the_config_only_when_asked() {
    let dir = TempDir::new("restart");
    let keys = packets();
    let vb = {
        let engine = engine_with(&dir, &rules_a(), true);
        engine
            .reload(bytes("pushed.toml", &rules_b()), &ReloadOptions::default())
            .unwrap();
        verdicts(&engine, &keys)
    }; // stopped as by kill -9: nothing is written on the way out
       // Restart with --config A: B (what ran) is enforced, and status says the config differs.
    let (engine, boot) = reopen(&dir);
    assert_eq!(
        (boot.state, boot.source),
        (GenerationState::Active, BootSource::StateDirectory)
    );
    assert_eq!(boot.config_differs, Some(true));
    let st = engine.status();
    assert_eq!(st.digest, digest(&rules_b()));
    assert!(st.config.differs);
    assert_eq!(st.config.digest, digest(&rules_a()));
    assert_eq!(verdicts(&engine, &keys), vb);
    // SIGHUP (reload without a file) applies A explicitly.
    let ok = engine
        .reload(ReloadSource::Config, &ReloadOptions::default())
        .unwrap();
    assert!(ok.generation > boot.generation);
    assert_eq!(engine.status().digest, digest(&rules_a()));
    assert!(!engine.status().config.differs);
    drop(engine);
    // --boot-from-config: the config boots even though the state directory has generations.
    std::fs::write(dir.join("rules.toml"), rules_b()).unwrap();
    let opts = EngineOptions {
        boot_from_config: true,
        durable: false,
        ..EngineOptions::default()
    };
    let (engine, boot) = Engine::open(&dir.join("rules.toml"), &dir.join("state"), opts).unwrap();
    assert_eq!(boot.source, BootSource::Config);
    assert_eq!(engine.status().digest, digest(&rules_b()));
}

#[test]
fn a_restart_with_a_confirm_window_open_boots_the_confirmed_generation() {
    let dir = TempDir::new("restart-pending");
    let pending = {
        let engine = engine_with(&dir, &rules_a(), true);
        engine
            .reload(bytes("b.toml", &rules_b()), &window(3_600_000))
            .unwrap()
    };
    let (engine, boot) = reopen(&dir);
    assert_eq!(boot.state, GenerationState::Active);
    assert!(boot.generation < pending.generation);
    let st = engine.status();
    assert_eq!(
        st.digest,
        digest(&rules_a()),
        "the unconfirmed generation is not booted"
    );
    let k = st
        .kept
        .iter()
        .find(|k| k.generation == pending.generation)
        .unwrap();
    assert_eq!(k.outcome, Outcome::Unconfirmed);
}

#[test]
fn rollback_after_an_auto_revert_never_lands_on_the_reverted_rules() {
    let dir = TempDir::new("rollback-revert");
    let engine = engine_with(&dir, &rules_a(), false);
    let c = format!("{}\n# c\n", rules_a().replace("dst_port = 23", "dst_port = 2323"));
    engine
        .reload(bytes("c.toml", &c), &ReloadOptions::default())
        .unwrap();
    let b = engine.reload(bytes("b.toml", &rules_b()), &window(200)).unwrap();
    wait_for(&engine, 10, "revert", |s| {
        s.state == GenerationState::Active && s.generation > b.generation
    });
    assert_eq!(engine.status().digest, digest(&c));
    let kept = engine.status().kept;
    assert_eq!(
        kept.iter()
            .find(|k| k.generation == b.generation)
            .unwrap()
            .outcome,
        Outcome::Reverted
    );
    // Rollback goes to what was confirmed before C (A), never to the reverted B.
    let back = engine.rollback(None).unwrap();
    assert_eq!(Some(back.digest.to_string()), digest(&rules_a()));
    assert_eq!(back.state, GenerationState::Active);
    // An explicit --to of the reverted generation is the operator's choice: allowed.
    let again = engine.rollback(Some(b.generation)).unwrap();
    assert_eq!(again.digest, b.digest);
    // --to a generation that is not kept says so.
    let err = engine.rollback(Some(99)).unwrap_err();
    assert!(
        err.errors[0].starts_with("generation 99 is not kept"),
        "{:?}",
        err.errors
    );
}

#[test]
fn a_rollback_with_a_confirm_window_reverts_by_itself() {
    let dir = TempDir::new("rollback-window");
    let engine = engine_with(&dir, &rules_a(), false);
    engine
        .reload(bytes("b.toml", &rules_b()), &ReloadOptions::default())
        .unwrap();
    let opts = RollbackOptions {
        confirm_within: Some(Duration::from_millis(300)),
    };
    let back = engine.rollback_with(None, &opts).unwrap();
    assert_eq!(back.state, GenerationState::PendingConfirm);
    assert_eq!(Some(back.digest.to_string()), digest(&rules_a()));
    assert_eq!(engine.status().state, GenerationState::PendingConfirm);
    wait_for(&engine, 10, "the rollback reverts", |s| {
        s.generation > back.generation
    });
    let st = engine.status();
    assert_eq!(
        (st.state, st.digest.clone()),
        (GenerationState::Active, digest(&rules_b()))
    );
    // Confirmed in time, it stays.
    let back = engine.rollback_with(None, &opts).unwrap();
    assert_eq!(engine.confirm().unwrap(), back.generation);
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(engine.status().generation, back.generation);
}

/// Mounts a tmpfs of `size` at `dir` (root only); `None` when that is not possible here.
fn tmpfs(dir: &std::path::Path, size: &str) -> Option<()> {
    std::fs::create_dir_all(dir).ok()?;
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
        .arg(dir)
        .stderr(std::process::Stdio::null())
        .status()
        .ok()?
        .success();
    ok.then_some(())
}

fn fill(dir: &std::path::Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(dir.join("filler")).unwrap();
    let block = vec![0u8; 4096];
    while f.write_all(&block).is_ok() {}
    let _ = f.write_all(&[0]);
}

#[test]
fn a_confirmation_that_cannot_be_persisted_is_an_error_and_a_crash_boots_the_previous_generation() {
    let dir = TempDir::new("confirm-full");
    let state = dir.join("state");
    if tmpfs(&state, "256k").is_none() {
        println!("SKIPPED: cannot mount a tmpfs here (needs root)");
        return;
    }
    std::fs::write(dir.join("rules.toml"), rules_a()).unwrap();
    let result = std::panic::catch_unwind(|| {
        let opts = EngineOptions::default;
        let (engine, _) = Engine::open(&dir.join("rules.toml"), &state, opts()).unwrap();
        let b = engine
            .reload(bytes("b.toml", &rules_b()), &window(3_600_000))
            .unwrap();
        fill(&state);
        let err = engine.confirm().unwrap_err();
        assert!(
            err.contains("NOT persisted") && err.contains("No space left"),
            "{err}"
        );
        let st = engine.status();
        assert!(!st.confirm_persisted);
        assert!(
            st.confirm_error.as_deref().unwrap().contains("No space left"),
            "{st:?}"
        );
        assert_eq!(
            st.kept
                .iter()
                .find(|k| k.generation == b.generation)
                .unwrap()
                .outcome,
            Outcome::Pending
        );
        drop(engine); // as a crash: nothing more is written
        let (engine, boot) = Engine::open(&dir.join("rules.toml"), &state, opts()).unwrap();
        assert_eq!(engine.status().digest, digest(&rules_a()), "{boot:?}");
        drop(engine);
        // With room again, a confirmation is durable and answered ok.
        std::fs::remove_file(state.join("filler")).unwrap();
        let (engine, _) = Engine::open(&dir.join("rules.toml"), &state, opts()).unwrap();
        let b = engine
            .reload(bytes("b.toml", &rules_b()), &window(3_600_000))
            .unwrap();
        fill(&state);
        assert!(engine.confirm().is_err());
        std::fs::remove_file(state.join("filler")).unwrap();
        assert_eq!(
            engine.confirm(),
            Ok(b.generation),
            "confirm again retries the write"
        );
        assert!(engine.status().confirm_persisted);
        assert!(Store::open(&state, 10, false)
            .unwrap()
            .load(b.generation)
            .unwrap()
            .is_confirmed());
    });
    let _ = std::process::Command::new("umount").arg(&state).status();
    result.unwrap();
}
