//! Every control action leaves exactly one control event with the right outcome.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use palisade_engine::events::{ControlEvent, EventKind, Outcome};
use palisade_engine::{Engine, ReloadOptions};

fn recorder(engine: &Engine) -> Arc<Mutex<Vec<ControlEvent>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    engine.set_event_sink(Some(Arc::new(move |e: &ControlEvent| {
        sink.lock().unwrap().push(e.clone())
    })));
    seen
}

fn take(seen: &Mutex<Vec<ControlEvent>>) -> Vec<ControlEvent> {
    std::mem::take(&mut *seen.lock().unwrap())
}

#[test]
fn reload_refused_reload_confirm_rollback_and_revert_each_leave_one_event() {
    let dir = TempDir::new("events");
    let engine = engine_with(&dir, &rules_a(), false);
    let boot = engine.status();
    let seen = recorder(&engine);
    let digest_a = engine.current().digest();

    // A reload that becomes active.
    let ok = engine
        .reload_by(bytes("b.toml", &rules_b()), &ReloadOptions::default(), Some(1000))
        .unwrap();
    let e = take(&seen);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(
        (e[0].event, e[0].outcome, e[0].uid),
        (EventKind::Reload, Outcome::Ok, Some(1000))
    );
    assert_eq!((e[0].generation, e[0].digest), (ok.generation, Some(ok.digest)));
    assert!(e[0].errors.is_empty() && e[0].stage.is_none());

    // A refused reload: the active generation is named, the stage and causes given.
    let bad = bytes(
        "bad.toml",
        "version = 1\n[[bind]]\nacl = \"nope\"\nport = \"p\"\n",
    );
    engine
        .reload_by(bad, &ReloadOptions::default(), Some(0))
        .unwrap_err();
    let e = take(&seen);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(
        (e[0].event, e[0].outcome, e[0].uid),
        (EventKind::Reload, Outcome::Refused, Some(0))
    );
    assert_eq!(e[0].generation, ok.generation);
    assert_eq!(e[0].stage, Some("validate"));
    assert!(
        e[0].errors.iter().any(|m| m.starts_with("bad.toml:")),
        "{:?}",
        e[0].errors
    );

    // A commit-confirmed reload, then its confirm.
    let opts = ReloadOptions {
        confirm_within: Some(Duration::from_secs(60)),
        ..ReloadOptions::default()
    };
    let pending = engine.reload(bytes("a.toml", &rules_a()), &opts).unwrap();
    assert_eq!(take(&seen).len(), 1);
    assert_eq!(engine.confirm_by(Some(42)).unwrap(), pending.generation);
    let e = take(&seen);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(
        (e[0].event, e[0].outcome, e[0].uid),
        (EventKind::Confirm, Outcome::Ok, Some(42))
    );
    assert_eq!(e[0].generation, pending.generation);
    // A confirm with nothing pending is refused, and says why.
    engine.confirm_by(Some(42)).unwrap_err();
    let e = take(&seen);
    assert_eq!((e.len(), e[0].outcome), (1, Outcome::Refused));
    assert_eq!(e[0].errors, ["no reload is waiting for confirmation"]);

    // A rollback: to B, the rules A replaced.
    let back = engine.rollback_by(None, Some(7)).unwrap();
    let e = take(&seen);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(
        (e[0].event, e[0].outcome, e[0].uid),
        (EventKind::Rollback, Outcome::Ok, Some(7))
    );
    assert_eq!(
        (e[0].generation, e[0].digest),
        (back.generation, Some(back.digest))
    );
    // A rollback to a generation that was never kept is refused.
    engine.rollback_by(Some(999), Some(7)).unwrap_err();
    let e = take(&seen);
    assert_eq!(
        (e.len(), e[0].event, e[0].outcome),
        (1, EventKind::Rollback, Outcome::Refused)
    );
    assert_eq!(e[0].stage, Some("read"));

    // An unconfirmed reload reverts by itself: one revert event, by no client.
    let opts = ReloadOptions {
        confirm_within: Some(Duration::from_millis(200)),
        ..ReloadOptions::default()
    };
    let pending = engine.reload(bytes("a.toml", &rules_a()), &opts).unwrap();
    assert_eq!(pending.digest, digest_a.unwrap());
    assert_eq!(take(&seen).len(), 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while engine.current().number() == pending.generation && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    // The revert's event follows its publication (a busy machine showed the gap): wait for it too.
    let mut e = take(&seen);
    while e.is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        e = take(&seen);
    }
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(
        (e[0].event, e[0].outcome, e[0].uid),
        (EventKind::Revert, Outcome::Ok, None)
    );
    assert_eq!(e[0].generation, engine.current().number());
    assert_eq!(
        e[0].digest,
        Some(back.digest),
        "reverted to the rules before the pending reload"
    );
    assert!(e[0].generation > boot.generation);
}

#[test]
fn without_a_sink_nothing_is_emitted_and_nothing_breaks() {
    let dir = TempDir::new("events-none");
    let engine = engine_with(&dir, &rules_a(), false);
    let seen = recorder(&engine);
    engine.set_event_sink(None);
    engine
        .reload(bytes("b.toml", &rules_b()), &ReloadOptions::default())
        .unwrap();
    assert!(take(&seen).is_empty());
}

#[test]
fn the_control_server_names_the_clients_uid_from_the_socket() {
    use std::io::{BufRead, BufReader, Write};
    let dir = TempDir::new("events-uid");
    let engine = Arc::new(engine_with(&dir, &rules_a(), false));
    let seen = recorder(&engine);
    let (client, server) = std::os::unix::net::UnixStream::pair().unwrap();
    let e = Arc::clone(&engine);
    let t = std::thread::spawn(move || palisade_engine::control::serve_connection(&e, server, None));
    {
        let mut reader = BufReader::new(client.try_clone().unwrap());
        let mut ask = |line: &str| {
            (&client).write_all(format!("{line}\n").as_bytes()).unwrap();
            let mut reply = String::new();
            reader.read_line(&mut reply).unwrap();
            reply
        };
        let text = serde_json::to_string(&rules_b()).unwrap();
        assert!(ask(&format!(r#"{{"cmd":"reload","name":"b.toml","text":{text}}}"#)).contains("\"ok\":true"));
        assert!(ask(r#"{"cmd":"confirm"}"#).contains("\"ok\":false"));
        assert!(ask(r#"{"cmd":"rollback"}"#).contains("\"ok\":true"));
    }
    drop(client); // the connection closes: the server returns
    t.join().unwrap();
    // Our own uid: the owner of /proc/self.
    let me = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap());
    let e = take(&seen);
    let got: Vec<_> = e.iter().map(|e| (e.event, e.outcome, e.uid)).collect();
    assert_eq!(
        got,
        [
            (EventKind::Reload, Outcome::Ok, Some(me)),
            (EventKind::Confirm, Outcome::Refused, Some(me)),
            (EventKind::Rollback, Outcome::Ok, Some(me)),
        ]
    );
}
