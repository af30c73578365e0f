//! A generation is the rule file plus its set files: last-known-good keeps
//! them (as companion files), boot and rollback run the sets a generation ran
//! with even when the files on disk changed or are gone, the digest covers
//! them all, and a set file that is not a regular file is refused at once.

mod common;

use common::{mkfifo, reopen, within, TempDir};
use palisade_engine::events::{ControlEvent, EventKind, Outcome};
use palisade_engine::{BootSource, Engine, EngineOptions, ReloadOptions, ReloadSource, ReloadStage};
use palisade_rules::{Digest, SetOp};
use std::sync::{Arc, Mutex};

const RULES: &str = r#"version = 1
[[port]]
name = "p"
[[set]]
name = "bl"
file = "bl.txt"
[[acl]]
name = "a"
default = "permit"
  [[acl.rule]]
  id = "blocked"
  action = "deny"
  src = "@bl"
[[bind]]
acl = "a"
port = "p"
"#;

const BL: &str = "# bans\n203.0.113.0/24\n";

fn open(dir: &TempDir) -> Engine {
    std::fs::write(dir.join("rules.toml"), RULES).unwrap();
    std::fs::write(dir.join("bl.txt"), BL).unwrap();
    let opts = EngineOptions {
        durable: false,
        ..EngineOptions::default()
    };
    let (engine, boot) = Engine::open(&dir.join("rules.toml"), &dir.join("state"), opts).unwrap();
    assert!(boot.config_error.is_none(), "{:?}", boot.config_error);
    engine
}

/// The rule that decides a TCP packet from `src` on port `p`.
fn rule_for(engine: &Engine, src: &str) -> String {
    let key = palisade_rules::parse_packet_spec(&format!("tcp {src}:1000 -> 198.18.0.1:80")).unwrap();
    engine.probe("p", None, &key).unwrap().rule
}

fn add(engine: &Engine, element: &str) -> palisade_engine::SetChanged {
    engine
        .change_set("bl", SetOp::Add, &[element.into()], &ReloadOptions::default())
        .unwrap()
}

#[test]
fn the_digest_is_of_the_rule_file_and_its_set_files_and_last_known_good_keeps_them() {
    let dir = TempDir::new("setgen-digest");
    let engine = open(&dir);
    let want = Digest::of_parts(RULES.as_bytes(), &[("bl.txt", BL.as_bytes())]);
    let st = engine.status();
    assert_eq!(st.digest.as_deref(), Some(want.to_string().as_str()));
    assert_ne!(want, Digest::of(RULES.as_bytes()), "the set file is covered");
    assert!(!st.config.differs, "the config and its set file are what runs");
    // The kept generation carries the set file, under the same digest.
    let kept = engine.current().companions();
    assert_eq!(kept.len(), 1);
    assert_eq!(
        (kept[0].name.as_str(), kept[0].bytes.as_slice()),
        ("bl.txt", BL.as_bytes())
    );
    assert_eq!(st.kept.last().unwrap().digest, want.to_string());
    // A set change: the digest follows the new file, and the config (rewritten through) still matches.
    let ch = add(&engine, "198.51.100.7");
    let now = std::fs::read(dir.join("bl.txt")).unwrap();
    let want2 = Digest::of_parts(RULES.as_bytes(), &[("bl.txt", &now)]);
    assert_eq!(ch.reload.digest, want2);
    let st = engine.status();
    assert_eq!(st.kept.last().unwrap().digest, want2.to_string());
    assert!(!st.config.differs);
    // An edit of the set file on disk is a config that differs from what runs.
    std::fs::write(dir.join("bl.txt"), format!("{BL}192.0.2.0/24\n")).unwrap();
    assert!(
        engine.status().config.differs,
        "an edited set file is not what runs"
    );
}

#[test]
fn a_restart_with_the_set_files_gone_runs_the_sets_the_generation_ran_with() {
    let dir = TempDir::new("setgen-lkg");
    let engine = open(&dir);
    let ch = add(&engine, "198.51.100.7");
    assert_eq!(rule_for(&engine, "198.51.100.7"), "blocked");
    drop(engine);
    std::fs::remove_file(dir.join("bl.txt")).unwrap();
    let (engine, boot) = reopen(&dir);
    assert_eq!(boot.source, BootSource::StateDirectory);
    assert_eq!(boot.generation, ch.reload.generation);
    let st = engine.status();
    assert_eq!(st.digest.as_deref(), Some(ch.reload.digest.to_string().as_str()));
    assert_eq!(st.sets[0].elements, 2);
    assert_eq!(rule_for(&engine, "203.0.113.9"), "blocked");
    assert_eq!(rule_for(&engine, "198.51.100.7"), "blocked");
    assert!(
        st.config.error.as_deref().unwrap_or("").contains("bl.txt"),
        "status says the config's set file cannot be read: {:?}",
        st.config
    );
}

#[test]
fn rollback_runs_the_sets_the_older_generation_ran_with() {
    let dir = TempDir::new("setgen-rollback");
    let engine = open(&dir);
    let g1 = engine.status();
    add(&engine, "198.51.100.7");
    assert_eq!(rule_for(&engine, "198.51.100.7"), "blocked");
    // The newer set file on disk is not what the older generation ran with.
    let ok = engine.rollback(None).unwrap();
    assert_eq!(Some(ok.digest.to_string()), g1.digest);
    assert_eq!(rule_for(&engine, "198.51.100.7"), "default");
    assert_eq!(rule_for(&engine, "203.0.113.9"), "blocked");
    assert_eq!(engine.status().sets[0].elements, 1);
}

#[test]
fn a_set_file_that_is_a_fifo_is_refused_at_once_and_nothing_changes() {
    let dir = TempDir::new("setgen-fifo");
    let engine = Arc::new(open(&dir));
    let seen = Arc::new(Mutex::new(Vec::<ControlEvent>::new()));
    let sink = Arc::clone(&seen);
    engine.set_event_sink(Some(Arc::new(move |e: &ControlEvent| {
        sink.lock().unwrap().push(e.clone())
    })));
    let before = engine.status();
    std::fs::remove_file(dir.join("bl.txt")).unwrap();
    mkfifo(&dir.join("bl.txt"));
    // A reload reads the set file: refused, not waited on.
    let e = Arc::clone(&engine);
    let err = within(10, "reload with a FIFO set file", move || {
        e.reload(ReloadSource::Config, &ReloadOptions::default())
    })
    .unwrap_err();
    assert_eq!(err.stage, ReloadStage::Validate, "{err}");
    assert!(
        err.errors
            .iter()
            .any(|l| l.contains("bl.txt") && l.contains("not a regular file")),
        "{:?}",
        err.errors
    );
    // A set change writes the set file through: refused, the FIFO left as it is.
    let e = Arc::clone(&engine);
    let err = within(10, "set add with a FIFO set file", move || {
        e.change_set_by(
            "bl",
            SetOp::Add,
            &["198.51.100.7".into()],
            &ReloadOptions::default(),
            Some(4242),
        )
    })
    .unwrap_err();
    assert!(
        err.errors
            .iter()
            .any(|l| l.contains("bl.txt") && l.contains("not a regular file")),
        "{:?}",
        err.errors
    );
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::symlink_metadata(dir.join("bl.txt"))
        .unwrap()
        .file_type()
        .is_fifo());
    let e = Arc::clone(&engine);
    let after = within(10, "status with a FIFO set file", move || e.status());
    assert_eq!(
        (after.generation, &after.digest),
        (before.generation, &before.digest)
    );
    assert_eq!(
        after.kept.len(),
        before.kept.len(),
        "no generation kept for a refused change"
    );
    assert_eq!(rule_for(&engine, "198.51.100.7"), "default");
    // Both refusals are control events; the set change names its client.
    let seen = seen.lock().unwrap();
    let kinds: Vec<_> = seen.iter().map(|e| (e.event, e.outcome, e.uid)).collect();
    assert_eq!(
        kinds,
        [
            (EventKind::Reload, Outcome::Refused, None),
            (EventKind::SetChange, Outcome::Refused, Some(4242))
        ]
    );
}

#[test]
fn set_changes_keep_a_big_set_file_once_and_each_change_as_a_delta_and_a_restart_without_it_runs_the_last() {
    let dir = TempDir::new("setgen-objects");
    let engine = open(&dir);
    // A set file of 12,000 prefixes (about 170 KB), then five one-element changes.
    let big: String = (0..12_000u32)
        .map(|i| format!("10.{}.{}.0/24\n", i / 256, i % 256))
        .collect();
    std::fs::write(dir.join("bl.txt"), &big).unwrap();
    engine
        .reload(ReloadSource::Config, &ReloadOptions::default())
        .unwrap();
    let mut last = None;
    for i in 1..=4 {
        last = Some(add(&engine, &format!("198.51.100.{i}")));
    }
    engine
        .change_set(
            "bl",
            SetOp::Del,
            &["198.51.100.2".into()],
            &ReloadOptions::default(),
        )
        .unwrap();
    let last_add = last.unwrap();
    let kept = engine.status().kept.len();
    assert!(kept >= 6, "{kept} generations kept");
    // One object holds the whole file; each change after it is a delta of a few dozen bytes.
    let sizes: Vec<u64> = std::fs::read_dir(dir.join("state").join("objects"))
        .unwrap()
        .flatten()
        .map(|e| e.metadata().unwrap().len())
        .collect();
    let whole: Vec<&u64> = sizes.iter().filter(|&&s| s > big.len() as u64).collect();
    assert_eq!(whole.len(), 1, "one whole copy of the set file: {sizes:?}");
    assert!(
        sizes.iter().filter(|&&s| s < 200).count() >= 5,
        "the changes are deltas: {sizes:?}"
    );
    let generations: u64 = std::fs::read_dir(dir.join("state"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".lkg"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(
        generations < 4096 * kept as u64,
        "no generation file holds the set file: {generations} bytes"
    );
    let want = engine.status().digest;
    drop(engine);
    // Gone from disk: boot resolves the deltas and runs the last generation's set.
    std::fs::remove_file(dir.join("bl.txt")).unwrap();
    let (engine, boot) = reopen(&dir);
    assert_eq!(boot.source, BootSource::StateDirectory);
    assert!(boot.lkg_errors.is_empty(), "{:?}", boot.lkg_errors);
    assert_eq!(engine.status().digest, want);
    assert!(last_add.reload.generation < boot.generation);
    assert_eq!(engine.status().sets[0].elements, 12_003);
    for (src, rule) in [
        ("10.46.223.9", "blocked"),
        ("198.51.100.1", "blocked"),
        ("198.51.100.2", "default"),
        ("198.51.100.4", "blocked"),
        ("198.51.100.5", "default"),
    ] {
        assert_eq!(rule_for(&engine, src), rule, "{src}");
    }
}

/// The names in the state directory's objects directory, sorted.
fn objects_of(dir: &TempDir) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("state").join("objects"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_refused_set_change_leaves_no_object_of_its_set_file_behind() {
    let dir = TempDir::new("setgen-refused");
    let engine = open(&dir);
    let before = objects_of(&dir);
    assert_eq!(before.len(), 1, "the active generation's set file: {before:?}");
    for stage in [ReloadStage::Compile, ReloadStage::SelfTest, ReloadStage::Persist] {
        let opts = ReloadOptions {
            fail_at: Some(stage),
            ..ReloadOptions::default()
        };
        engine
            .change_set("bl", SetOp::Add, &["198.51.100.9".into()], &opts)
            .unwrap_err();
        assert_eq!(objects_of(&dir), before, "refused at {stage:?}");
        assert_eq!(std::fs::read_to_string(dir.join("bl.txt")).unwrap(), BL);
    }
    // Accepted: its set file is kept beside the one before.
    let ch = add(&engine, "198.51.100.9");
    let now = objects_of(&dir);
    assert_eq!(now.len(), 2, "{now:?}");
    assert!(now.contains(&ch.file_digest.to_string()), "{now:?}");
}

#[test]
fn a_staged_set_file_left_by_a_kill_is_removed_at_boot_and_nothing_else() {
    let dir = TempDir::new("setgen-leftover");
    drop(open(&dir));
    // (what a kill -9 while a set change compiles, or while a revert restores, leaves)
    let leftovers = [".bl.txt.palisade-tmp", ".bl.txt.palisade-restore-tmp"];
    for name in leftovers {
        std::fs::write(dir.join(name), "198.51.100.0/24\n").unwrap();
    }
    let others = [
        ".bl.txt.palisade-tmp.keep",
        ".other.txt.palisade-tmp",
        "bl.txt.palisade-tmp",
    ];
    for name in others {
        std::fs::write(dir.join(name), "mine\n").unwrap();
    }
    let (engine, boot) = reopen(&dir);
    assert!(boot.lkg_errors.is_empty(), "{:?}", boot.lkg_errors);
    for name in leftovers {
        assert!(!dir.join(name).exists(), "{name} removed");
    }
    for name in others {
        assert_eq!(
            std::fs::read_to_string(dir.join(name)).unwrap(),
            "mine\n",
            "{name} kept"
        );
    }
    assert_eq!(std::fs::read_to_string(dir.join("bl.txt")).unwrap(), BL);
    assert_eq!(rule_for(&engine, "203.0.113.9"), "blocked");
}
