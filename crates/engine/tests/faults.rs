//! A failed update changes nothing: fault injection at every stage, real
//! refusals, rescue protection, commit-confirmed, rollback, boot fallbacks.

mod common;

use std::time::Duration;

use common::*;
use palisade_engine::lkg::Store;
use palisade_engine::policy::Decision;
use palisade_engine::{
    BootSource, Engine, EngineOptions, GenerationState, ReloadOptions, ReloadSource, ReloadStage,
};

/// The parts of status a refused reload must not touch.
fn fingerprint(engine: &Engine) -> String {
    let st = engine.status();
    let acls = serde_json::to_string(&st.acls).unwrap();
    format!(
        "{} {:?} {:?} {} {acls}",
        st.generation, st.digest, st.source, st.state
    )
}

fn traffic(engine: &Engine) {
    let keys = packets();
    let mut h = engine.handle();
    let mut out = vec![Decision::default(); keys.len()];
    let ctx = h.batch().context("lan1", None).unwrap();
    h.classify_batch(&keys, &ctx, &mut out);
}

#[test]
fn a_fault_at_any_stage_changes_nothing() {
    let dir = TempDir::new("faults");
    let engine = engine_with(&dir, &rules_a(), true);
    traffic(&engine);
    let keys = packets();
    let verdicts_a = verdicts(&engine, &keys);
    let kept_before = engine.store().list();
    for stage in ReloadStage::ALL {
        let before = fingerprint(&engine);
        let opts = ReloadOptions {
            fail_at: Some(stage),
            ..ReloadOptions::default()
        };
        let err = engine.reload(bytes("b.toml", &rules_b()), &opts).unwrap_err();
        assert_eq!(err.stage, stage);
        assert_eq!(
            fingerprint(&engine),
            before,
            "stage {stage} changed the active generation or its counters"
        );
        let st = engine.status();
        let lr = st.last_reload.expect("last_reload recorded");
        assert!(!lr.ok);
        assert_eq!(lr.stage, Some(stage));
        assert_eq!(verdicts(&engine, &keys), verdicts_a, "stage {stage}");
        assert_eq!(
            engine.store().list(),
            kept_before,
            "stage {stage} left a kept generation behind"
        );
    }
    // And the very same update without a fault goes through.
    let ok = engine
        .reload(bytes("b.toml", &rules_b()), &ReloadOptions::default())
        .unwrap();
    assert_ne!(verdicts(&engine, &keys), verdicts_a);
    assert_eq!(engine.status().generation, ok.generation);
}

#[test]
fn real_refusals_name_their_stage_and_place() {
    let dir = TempDir::new("refusals");
    let engine = engine_with(&dir, &rules_a(), false);
    let before = fingerprint(&engine);
    let cases: Vec<(ReloadSource, &str, &str)> = vec![
        (ReloadSource::Path(dir.join("nope.toml")), "read", "nope.toml"),
        (
            bytes("syntax.toml", "version = 1\n[[acl]\nname = 1\n"),
            "parse",
            "syntax.toml:2:",
        ),
        (
            bytes(
                "missing.toml",
                &rules_a().replace("interface = \"wan\"", "interface = \"wan9\""),
            ),
            "validate",
            "missing.toml:",
        ),
        (
            bytes(
                "expect.toml",
                &rules_a().replace("verdict = \"permit\"\n", "verdict = \"deny\"\n"),
            ),
            "self-test",
            "expect.toml:",
        ),
        (
            bytes(
                "future.toml",
                &rules_a().replace("version = 1", "version = 1\nrequires = \">=99.0\""),
            ),
            "validate",
            "future.toml:",
        ),
    ];
    for (src, stage, place) in cases {
        let err = engine.reload(src, &ReloadOptions::default()).unwrap_err();
        assert_eq!(err.stage.as_str(), stage, "{err}");
        assert!(
            err.errors.iter().any(|e| e.contains(place)),
            "{stage}: {:?}",
            err.errors
        );
        assert_eq!(fingerprint(&engine), before);
        assert_eq!(engine.status().last_reload.unwrap().stage, Some(err.stage));
    }
}

#[test]
fn rescue_rules_change_only_when_allowed() {
    let dir = TempDir::new("rescue");
    let engine = engine_with(&dir, &rules_a(), false);
    let no_rescue = rules_a().replace(
        "[[rescue]]\nid = \"mgmt-ssh\"\nproto = \"tcp\"\ndst_port = 22\nsrc = \"192.0.2.0/28\"\n",
        "",
    );
    assert_ne!(no_rescue, rules_a());
    let err = engine
        .reload(bytes("r.toml", &no_rescue), &ReloadOptions::default())
        .unwrap_err();
    assert_eq!(err.stage, ReloadStage::Validate);
    assert!(err.errors[0].contains("allow-rescue-change"), "{:?}", err.errors);
    let widened = rules_a().replace("192.0.2.0/28", "192.0.2.0/24");
    assert!(engine
        .reload(bytes("r.toml", &widened), &ReloadOptions::default())
        .is_err());
    let opts = ReloadOptions {
        allow_rescue_change: true,
        ..ReloadOptions::default()
    };
    engine.reload(bytes("r.toml", &no_rescue), &opts).unwrap();
    assert_eq!(engine.status().rescue, 0);
}

#[test]
fn an_unconfirmed_reload_reverts_as_a_new_generation_and_a_confirmed_one_stays() {
    let dir = TempDir::new("confirm");
    let engine = engine_with(&dir, &rules_a(), false);
    let keys = packets();
    let a = engine.status();
    let va = verdicts(&engine, &keys);
    let opts = ReloadOptions {
        confirm_within: Some(Duration::from_millis(300)),
        ..ReloadOptions::default()
    };
    let ok = engine.reload(bytes("b.toml", &rules_b()), &opts).unwrap();
    assert_eq!(ok.state, GenerationState::PendingConfirm);
    let st = engine.status();
    assert_eq!(st.state, GenerationState::PendingConfirm);
    assert!(st.confirm_deadline.is_some());
    assert_ne!(verdicts(&engine, &keys), va);
    // Boot never picks an unconfirmed generation.
    assert_eq!(
        engine.store().newest(true).unwrap().digest.to_string(),
        a.digest.clone().unwrap()
    );
    std::thread::sleep(Duration::from_millis(900));
    let st = engine.status();
    assert_eq!(st.state, GenerationState::Active);
    assert_eq!(st.digest, a.digest, "reverted to the old digest");
    assert!(st.generation > ok.generation, "as a new generation number");
    assert_eq!(st.last_reload.as_ref().unwrap().stage, Some(ReloadStage::Confirm));
    assert_eq!(verdicts(&engine, &keys), va);
    assert!(engine.confirm().is_err(), "nothing left to confirm");

    // Confirmed in time: stays.
    let ok = engine.reload(bytes("b.toml", &rules_b()), &opts).unwrap();
    assert_eq!(engine.confirm().unwrap(), ok.generation);
    std::thread::sleep(Duration::from_millis(600));
    let st = engine.status();
    assert_eq!(
        (st.generation, st.state),
        (ok.generation, GenerationState::Active)
    );
    assert!(engine.store().load(ok.generation).unwrap().is_confirmed());
}

#[test]
fn rollback_goes_back_as_a_new_generation() {
    let dir = TempDir::new("rollback");
    let engine = engine_with(&dir, &rules_a(), false);
    let a = engine.status();
    let b = engine
        .reload(bytes("b.toml", &rules_b()), &ReloadOptions::default())
        .unwrap();
    let kept: Vec<u64> = engine.status().kept.iter().map(|k| k.generation).collect();
    assert!(
        kept.contains(&b.generation) && kept.contains(&a.generation),
        "{kept:?}"
    );
    let back = engine.rollback(None).unwrap();
    assert!(back.generation > b.generation);
    assert_eq!(Some(back.digest.to_string()), a.digest);
    let again = engine.rollback(Some(b.generation)).unwrap();
    assert_eq!(again.digest, b.digest);
    // After a restart the same generation runs (B, not the config A), and rollback
    // takes the one confirmed before it (A).
    drop(engine);
    let engine = engine_with(&dir, &rules_a(), false);
    assert_eq!(engine.status().generation, again.generation);
    let after_boot = engine.rollback(None).unwrap();
    assert_eq!(Some(after_boot.digest.to_string()), a.digest);
    let err = engine.rollback(Some(9999)).unwrap_err();
    assert_eq!(err.stage, ReloadStage::Read);
    assert!(
        err.errors[0].starts_with("generation 9999 is not kept (kept: "),
        "{:?}",
        err.errors
    );
    assert_eq!(engine.status().generation, after_boot.generation);
}

#[test]
fn boot_runs_the_kept_generation_whatever_the_config_and_last_known_good_loudly_when_the_newest_is_unreadable(
) {
    let dir = TempDir::new("boot");
    let keys = packets();
    let (gen_a, va) = {
        let engine = engine_with(&dir, &rules_a(), true);
        (engine.status(), verdicts(&engine, &keys))
    };
    let config = dir.join("rules.toml");
    let b_text = rules_b();
    for (what, content) in [
        ("empty", Some("")),
        ("corrupt", Some("version = 1\n[[acl\n")),
        ("other rules", Some(b_text.as_str())),
        ("missing", None),
    ] {
        match content {
            Some(c) => std::fs::write(&config, c).unwrap(),
            None => std::fs::remove_file(&config).unwrap(),
        }
        let (engine, boot) = Engine::open(&config, &dir.join("state"), EngineOptions::default()).unwrap();
        assert_eq!(boot.state, GenerationState::Active, "{what}");
        assert_eq!(boot.source, BootSource::StateDirectory, "{what}");
        assert!(
            boot.config_error.is_none(),
            "{what}: the config is not even tried"
        );
        let st = engine.status();
        assert_eq!(
            (st.state, st.generation),
            (GenerationState::Active, gen_a.generation),
            "{what}"
        );
        assert_eq!(st.digest, gen_a.digest, "{what}");
        assert!(st.config.differs, "{what}: status says the config differs");
        assert_eq!(verdicts(&engine, &keys), va, "{what}");
    }
    // With --boot-from-config, a broken config falls back to last-known-good, loudly.
    std::fs::write(&config, "version = 1\n[[acl\n").unwrap();
    let opts = EngineOptions {
        boot_from_config: true,
        ..EngineOptions::default()
    };
    let (engine, boot) = Engine::open(&config, &dir.join("state"), opts).unwrap();
    assert_eq!(boot.state, GenerationState::LastKnownGood);
    assert!(boot.config_error.is_some());
    assert_eq!(engine.status().state, GenerationState::LastKnownGood);
    assert!(
        !engine.status().last_reload.unwrap().ok,
        "status says the config was refused"
    );
    drop(engine);
    // The newest generation unreadable: the one before it runs, as last-known-good.
    std::fs::write(&config, rules_b()).unwrap();
    let b = {
        let (engine, _) = Engine::open(&config, &dir.join("state"), EngineOptions::default()).unwrap();
        engine
            .reload(ReloadSource::Config, &ReloadOptions::default())
            .unwrap()
    };
    let newest = Store::open(&dir.join("state"), 10, true)
        .unwrap()
        .path_of(b.generation);
    let mut data = std::fs::read(&newest).unwrap();
    let last = data.len() - 1;
    data[last] ^= 0x20;
    std::fs::write(&newest, &data).unwrap();
    let (engine, boot) = Engine::open(&config, &dir.join("state"), EngineOptions::default()).unwrap();
    assert_eq!(boot.state, GenerationState::LastKnownGood);
    assert!(
        boot.lkg_errors.iter().any(|e| e.contains("digest mismatch")),
        "{:?}",
        boot.lkg_errors
    );
    let st = engine.status();
    assert_eq!(
        (st.state, st.digest),
        (GenerationState::LastKnownGood, gen_a.digest)
    );
    assert_eq!(st.kept_refused.len(), 1, "{:?}", st.kept_refused);
}

/// Mounts a tiny tmpfs (root only); `None` when that is not possible here.
fn tiny_tmpfs(dir: &std::path::Path, opts: &str) -> Option<()> {
    std::fs::create_dir_all(dir).ok()?;
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
        .arg(dir)
        .stderr(std::process::Stdio::null())
        .status()
        .ok()?
        .success();
    ok.then_some(())
}

fn umount(dir: &std::path::Path) {
    let _ = std::process::Command::new("umount").arg(dir).status();
}

#[test]
fn a_full_or_read_only_state_directory_is_a_clear_error_not_a_lost_generation() {
    let dir = TempDir::new("full");
    let state = dir.join("state");
    if tiny_tmpfs(&state, "size=64k").is_none() {
        println!("SKIPPED: cannot mount a tmpfs here (needs root)");
        return;
    }
    let config = dir.join("rules.toml");
    std::fs::write(&config, rules_a()).unwrap();
    let result = std::panic::catch_unwind(|| {
        let (engine, boot) = Engine::open(&config, &state, EngineOptions::default()).unwrap();
        assert_eq!(boot.state, GenerationState::Active);
        let before = fingerprint(&engine);
        let kept = engine.store().list();
        // Fill the file system.
        let filler = vec![0u8; 4096];
        let mut f = std::fs::File::create(state.join("filler")).unwrap();
        use std::io::Write;
        while f.write_all(&filler).is_ok() {}
        drop(f);
        let err = engine
            .reload(bytes("b.toml", &rules_b()), &ReloadOptions::default())
            .unwrap_err();
        assert_eq!(err.stage, ReloadStage::Persist);
        assert!(err.errors[0].contains("No space left"), "{:?}", err.errors);
        assert_eq!(fingerprint(&engine), before);
        assert_eq!(engine.store().list(), kept, "the kept generations are intact");
        // Read-only.
        std::fs::remove_file(state.join("filler")).unwrap();
        let ro = std::process::Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&state)
            .status()
            .unwrap();
        assert!(ro.success());
        let err = engine
            .reload(bytes("b.toml", &rules_b()), &ReloadOptions::default())
            .unwrap_err();
        assert_eq!(err.stage, ReloadStage::Persist);
        assert!(err.errors[0].contains("Read-only"), "{:?}", err.errors);
        assert_eq!(fingerprint(&engine), before);
        assert_eq!(
            engine.store().newest(true).unwrap().generation,
            kept.last().unwrap().generation
        );
    });
    umount(&state);
    result.unwrap();
}

#[test]
fn restarting_on_an_unchanged_config_keeps_its_generation_number() {
    let dir = TempDir::new("restart");
    let first = engine_with(&dir, &rules_a(), false).status().generation;
    let again = engine_with(&dir, &rules_a(), false);
    assert_eq!(again.status().generation, first);
    assert!(!again.status().config.differs);
    assert_eq!(again.store().list().len(), 1, "no duplicate kept generation");
    drop(again);
    // A changed config is not applied by a restart, only by an explicit reload.
    let changed = engine_with(&dir, &rules_b(), false);
    assert_eq!(changed.status().generation, first);
    assert!(changed.status().config.differs);
    let ok = changed
        .reload(ReloadSource::Config, &ReloadOptions::default())
        .unwrap();
    assert!(ok.generation > first);
    assert!(!changed.status().config.differs);
}
