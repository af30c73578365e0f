//! Status, confirm, rollback and the commit-confirmed timer never wait behind
//! a running reload's compile (here: a 20,000-rule set, held 3 s in its compile stage).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use palisade_engine::{GenerationState, ReloadOptions, ReloadStage, RollbackOptions};

/// Rule set A plus an ACL of `n` rules, each its own /24 and port (slow to compile).
fn big(n: usize) -> String {
    let mut t = rules_a();
    t += "\n[[acl]]\nname = \"big\"\ndefault = \"permit\"\n";
    for i in 0..n {
        t += &format!(
            "  [[acl.rule]]\n  id = \"r{i}\"\n  action = \"deny\"\n  proto = \"tcp\"\n  src = \"10.{}.{}.0/24\"\n  dst_port = {}\n",
            (i / 256) % 256,
            i % 256,
            1 + (i * 7919) % 65000
        );
    }
    t += "[[bind]]\nacl = \"big\"\ninterface = \"wan\"\ndirection = \"in\"\n";
    t
}

#[test]
fn confirm_rollback_status_and_the_revert_timer_never_wait_behind_a_20k_rule_reload() {
    let dir = TempDir::new("latency");
    let engine = Arc::new(engine_with(&dir, &rules_a(), false));
    let b = engine
        .reload(
            bytes("b.toml", &rules_b()),
            &ReloadOptions {
                confirm_within: Some(Duration::from_secs(3600)),
                ..ReloadOptions::default()
            },
        )
        .unwrap();
    let text = big(20_000);
    let slow = {
        let engine = Arc::clone(&engine);
        std::thread::spawn(move || {
            // (held 3 s as it starts compiling: a fast machine builds 20,000 rules in a blink)
            let opts = ReloadOptions {
                hold_at: Some((ReloadStage::Compile, Duration::from_secs(3))),
                ..ReloadOptions::default()
            };
            let r = engine.reload(bytes("big.toml", &text), &opts);
            (r, Instant::now())
        })
    };
    // Wait until it is in its slow stages (validate, compile, ...); status says which.
    let t0 = Instant::now();
    loop {
        let st = engine.status();
        let building = [ReloadStage::Validate, ReloadStage::Compile, ReloadStage::SelfTest];
        if st.reloading.as_ref().is_some_and(|p| building.contains(&p.stage)) {
            assert_eq!(st.reloading.as_ref().unwrap().source, "big.toml");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the big reload never reached validate"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let reloading = |what: &str| {
        let st = engine.status();
        assert!(
            st.reloading.is_some(),
            "{what} had to wait for the big reload (it finished first)"
        );
    };
    // Confirm answers while the compile runs.
    assert_eq!(engine.confirm(), Ok(b.generation));
    reloading("confirm");
    // A rollback (commit-confirmed) answers while the compile runs...
    let opts = RollbackOptions {
        confirm_within: Some(Duration::from_millis(300)),
    };
    let asked = Instant::now();
    let back = engine.rollback_with(None, &opts).unwrap();
    let answered = asked.elapsed();
    assert_eq!(back.state, GenerationState::PendingConfirm);
    reloading("rollback");
    // ...and its window's revert fires on time, not after the compile.
    let t0 = Instant::now();
    while engine.status().generation == back.generation {
        assert!(t0.elapsed() < Duration::from_secs(30), "no revert");
        std::thread::sleep(Duration::from_millis(5));
    }
    let reverted_at = Instant::now();
    println!(
        "during the big reload: rollback answered in {} ms; its 300 ms window reverted after {} ms",
        answered.as_millis(),
        (reverted_at - asked).as_millis()
    );
    let st = engine.status();
    assert_eq!(
        (st.state, st.digest.clone()),
        (GenerationState::Active, Some(b.digest.to_string()))
    );
    let (res, finished_at) = slow.join().unwrap();
    let ok = res.unwrap();
    assert!(
        reverted_at < finished_at,
        "the revert waited for the big reload to finish"
    );
    // The big reload became active after all of that, with the next number.
    assert!(ok.generation > st.generation);
    assert_eq!(engine.status().generation, ok.generation);
    assert!(engine.status().reloading.is_none());
}
