//! Crash safety: a writer killed with SIGKILL at random instants never leaves a
//! torn last-known-good; the newest kept generation is always complete.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;

use palisade_engine::lkg::{Kept, Store};
use palisade_engine::{BootSource, Engine, EngineOptions, GenerationState, ReloadOptions};

const CHILD_ENV: &str = "PALISADE_CRASH_CHILD_DIR";
const ENGINE_CHILD_ENV: &str = "PALISADE_CRASH_ENGINE_CHILD_DIR";

/// Rule set variant `i`: A or B, padded with a comment of varying length.
fn variant(i: usize) -> String {
    let base = if i & 1 == 0 {
        common::rules_a()
    } else {
        common::rules_b()
    };
    format!("{base}\n# {}\n", "x".repeat((i % 5) * 8192))
}

/// Not a test of its own: the child of `kill_9_during_engine_reloads_leaves_a_bootable_last_known_good`.
#[test]
fn crash_child_engine() {
    let Ok(dir) = std::env::var(ENGINE_CHILD_ENV) else {
        return;
    };
    let dir = Path::new(&dir);
    let (engine, _) = Engine::open(
        &dir.join("missing.toml"),
        &dir.join("state"),
        EngineOptions::default(),
    )
    .unwrap();
    for i in 0.. {
        let src = common::bytes("crash.toml", &variant(i));
        engine.reload(src, &ReloadOptions::default()).unwrap();
    }
}

#[test]
fn kill_9_during_engine_reloads_leaves_a_bootable_last_known_good() {
    let dir = common::TempDir::new("crash-engine");
    let digests: Vec<String> = (0..10)
        .map(|i| palisade_rules::Digest::of(variant(i).as_bytes()).to_string())
        .collect();
    let mut newest_seen = 0;
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for round in 0..100 {
        let state = dir.join("state");
        kill_9_mid_write(
            "crash_child_engine",
            ENGINE_CHILD_ENV,
            dir.path(),
            &state,
            newest_seen,
            20_000,
            &mut rng,
        );

        let (engine, boot) = Engine::open(
            &dir.join("missing.toml"),
            &dir.join("state"),
            EngineOptions::default(),
        )
        .unwrap();
        // The newest generation is always complete: it runs as it ran, not as last-known-good.
        assert_eq!(
            (boot.state, boot.source),
            (GenerationState::Active, BootSource::StateDirectory),
            "round {round}: {boot:?}"
        );
        let st = engine.status();
        assert!(
            digests.contains(st.digest.as_ref().unwrap()),
            "round {round}: unknown digest"
        );
        assert!(
            st.generation > newest_seen,
            "round {round}: the child's reloads were kept"
        );
        newest_seen = max_on_disk(&dir.join("state"));
    }
}

/// The deterministic content of generation `g`: large enough that a write takes a while.
fn content(g: u64) -> Vec<u8> {
    let len = 48 * 1024 + (g as usize % 7) * 4096;
    (0..len)
        .map(|i| (i as u64).wrapping_mul(31).wrapping_add(g) as u8)
        .collect()
}

/// Not a test of its own: the child process of `kill_9_while_persisting_never_tears_the_last_known_good`.
#[test]
fn crash_child_writer() {
    let Ok(dir) = std::env::var(CHILD_ENV) else { return };
    let store = Store::open_locked(Path::new(&dir), 10, true).unwrap();
    loop {
        let g = store.next_generation(0).unwrap();
        store.save(&Kept::new(g, "crash.toml", content(g), true)).unwrap();
        store.prune(&[g]);
    }
}

/// The highest generation number whose file is in place (names only: the child may be writing).
fn max_on_disk(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix("gen-")?.strip_suffix(".lkg")?.parse().ok()
        })
        .max()
        .unwrap_or(0)
}

/// Runs the child test `child` (a writer looping over generations, given
/// `child_dir` by the environment variable `env`), lets it get into its
/// write loop (a generation past `newest_seen` in `state_dir`), then kills it
/// (SIGKILL) at a random instant of the next `within_us` microseconds of
/// writes (`rng` steps).
fn kill_9_mid_write(
    child: &str,
    env: &str,
    child_dir: &Path,
    state_dir: &Path,
    newest_seen: u64,
    within_us: u64,
    rng: &mut u64,
) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", child, "--nocapture", "--test-threads", "1"])
        .env(env, child_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while max_on_disk(state_dir) <= newest_seen && t0.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_micros(200));
    }
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    std::thread::sleep(Duration::from_micros(*rng % within_us));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

/// The generation files in `dir`.
fn generation_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".lkg"))
        .count()
}

#[test]
fn kill_9_while_persisting_never_tears_the_last_known_good() {
    let dir = std::env::temp_dir().join(format!("palisade-engine-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let rounds = 300;
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut newest_seen = 0;
    let mut advanced = 0;
    for round in 0..rounds {
        kill_9_mid_write(
            "crash_child_writer",
            CHILD_ENV,
            &dir,
            &dir,
            newest_seen,
            5_000,
            &mut rng,
        );
        let store = Store::open(&dir, 10, true).unwrap();
        let files = generation_files(&dir);
        let kept = store.list();
        assert_eq!(kept.len(), files, "round {round}: a kept file is torn");
        if let Some(newest) = store.newest(true) {
            assert_eq!(newest.bytes, content(newest.generation), "round {round}");
            assert!(newest.generation >= newest_seen, "round {round}: went backwards");
            if newest.generation > newest_seen {
                advanced += 1;
            }
            newest_seen = newest.generation;
        }
    }
    assert!(
        advanced == rounds,
        "the child persisted in every round ({advanced} of {rounds})"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

const SETS_CHILD_ENV: &str = "PALISADE_CRASH_SETS_CHILD_DIR";

/// The set file of generation `g`: a 120 KB list that changes every 6
/// generations (stored whole), with `g % 6` lines appended (stored as deltas).
fn set_content(g: u64) -> Vec<u8> {
    let epoch = g / 6;
    let mut out = Vec::new();
    for i in 0..8_000u64 {
        let x = i.wrapping_mul(2654435761).wrapping_add(epoch * 977) % (1 << 24);
        out.extend_from_slice(format!("10.{}.{}.0/24\n", x >> 16 & 255, x >> 8 & 255).as_bytes());
    }
    for i in 0..g % 6 {
        out.extend_from_slice(format!("198.18.{}.{i}\n", g % 256).as_bytes());
    }
    out
}

const SET_RULES: &[u8] = b"version = 1\n";

/// Not a test of its own: the child of `kill_9_while_persisting_set_files_never_tears_a_generation`.
#[test]
fn crash_child_set_writer() {
    use palisade_engine::lkg::{KeptInfo, Outcome, PartRef};
    use palisade_rules::Digest;
    let Ok(dir) = std::env::var(SETS_CHILD_ENV) else {
        return;
    };
    let store = Store::open_locked(Path::new(&dir), 4, true).unwrap();
    loop {
        let g = store.next_generation(0).unwrap();
        let (set, before) = (set_content(g), set_content(g - 1));
        let part = PartRef {
            name: "bl.txt",
            digest: Digest::of(&set),
            bytes: &set,
        };
        let base = PartRef {
            name: "bl.txt",
            digest: Digest::of(&before),
            bytes: &before,
        };
        let info = KeptInfo {
            generation: g,
            digest: Digest::of_manifest(Digest::of(SET_RULES), &[("bl.txt", part.digest)]),
            source: "crash.toml".into(),
            saved_at: 0,
            outcome: Outcome::Confirmed,
        };
        store.save_parts(&info, SET_RULES, &[part], &[base]).unwrap();
        store.prune(&[g]);
    }
}

#[test]
fn kill_9_while_persisting_set_files_never_tears_a_generation() {
    let dir = std::env::temp_dir().join(format!("palisade-engine-crash-sets-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let rounds = 150;
    let mut rng = 0x1234_5678_9abc_def1u64;
    let (mut newest_seen, mut deltas_seen) = (0, false);
    for round in 0..rounds {
        kill_9_mid_write(
            "crash_child_set_writer",
            SETS_CHILD_ENV,
            &dir,
            &dir,
            newest_seen,
            5_000,
            &mut rng,
        );
        // Every generation file in place reads back whole, set file included.
        let store = Store::open(&dir, 4, true).unwrap();
        let files = generation_files(&dir);
        let kept = store.list();
        assert_eq!(
            kept.len(),
            files,
            "round {round}: a kept generation is torn: {:?}",
            store.scan().refused
        );
        for k in &kept {
            assert_eq!(k.companions.len(), 1, "round {round}");
            assert!(
                k.companions[0].bytes == set_content(k.generation),
                "round {round}: generation {} has the wrong set file",
                k.generation
            );
        }
        let newest = store.newest(true).expect("a generation is kept");
        assert!(newest.generation >= newest_seen, "round {round}: went backwards");
        newest_seen = newest.generation;
        let objects = dir.join("objects");
        deltas_seen |= std::fs::read_dir(&objects)
            .unwrap()
            .flatten()
            .any(|e| std::fs::read(e.path()).is_ok_and(|b| b.starts_with(b"palisade-object 1 delta")));
    }
    assert!(deltas_seen, "the set files were stored as deltas too");
    let _ = std::fs::remove_dir_all(&dir);
}
