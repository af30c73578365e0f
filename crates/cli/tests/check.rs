//! `palisade check`: every example rule set passes, errors exit 1 with
//! `file:line:col`, unreadable files exit 2; the fuzz corpus replays
//! through parse + compile + expects without a panic.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use palisade_engine::policy::{Context, Policy};

fn palisade(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(args)
        .output()
        .expect("run palisade")
}

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(p)
}

fn tmp(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("palisade-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn every_example_rule_set_passes_check() {
    let mut n = 0;
    for entry in std::fs::read_dir(repo("rules")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        n += 1;
        let out = palisade(&["check", path.to_str().unwrap()]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}:\n{stdout}\n{stderr}",
            path.display()
        );
        let bytes = std::fs::read(&path).unwrap();
        // The rule file's SHA-256, or with set files the digest over them all.
        let loaded = palisade_rules::load(&path).unwrap();
        if loaded.files.is_empty() {
            assert_eq!(loaded.digest, palisade_rules::Digest::of(&bytes));
        }
        assert!(stdout.contains(&format!("digest: {}", loaded.digest)), "{stdout}");
        assert!(
            stdout.contains("failed)") && stdout.contains(" 0 failed"),
            "{stdout}"
        );
        assert!(
            loaded.ruleset.expects.len() >= 10,
            "{}: too few [[expect]] vectors",
            path.display()
        );
        assert!(!loaded.ruleset.rescue.is_empty());
    }
    assert!(n >= 3, "expected at least three example rule sets, found {n}");
}

#[test]
fn summary_counts() {
    let out = palisade(&["check", repo("rules/office.toml").to_str().unwrap()]);
    let s = String::from_utf8_lossy(&out.stdout);
    for line in [
        "ports:      2",
        "interfaces: 3",
        "acls:       6",
        "bindings:   6",
        "rescue:     1",
    ] {
        assert!(s.contains(line), "missing {line:?} in\n{s}");
    }
}

#[test]
fn invalid_file_exits_1_with_every_error_located() {
    let p = tmp(
        "bad.toml",
        "version = 1\n[[acl]]\nname = \"a\"\n  [[acl.rule]]\n  action = \"permit\"\n  dst_prot = 22\n  src = \"10.0.0.1/8\"\n",
    );
    let out = palisade(&["check", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let f = p.display();
    assert!(
        err.contains(&format!("{f}:6:3: unknown key \"dst_prot\"")),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{f}:7:9: acl \"a\" rule 1: src: prefix \"10.0.0.1/8\" has host bits set"
        )),
        "{err}"
    );
    assert!(err.contains("invalid: 2 errors"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn failing_expect_exits_1_at_its_line() {
    let text = std::fs::read_to_string(repo("rules/office.toml")).unwrap();
    let broken = text.replacen("rule = \"no-ssh-out\"", "rule = \"web\"", 1);
    // Expect 2 is the second vector naming rule "web" now; its [[expect]] header is the nearest above.
    let lines: Vec<&str> = broken.lines().collect();
    let line = (0..lines.len())
        .filter(|&i| lines[i] == "rule = \"web\"")
        .nth(1)
        .unwrap();
    let header = (0..line).rev().find(|&i| lines[i] == "[[expect]]").unwrap() + 1;
    let p = tmp("office-broken.toml", &broken);
    let out = palisade(&["check", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:{header}:1: expect 2: tcp 10.0.10.5:40001 -> 198.51.100.7:22: expected deny by rule web, got deny", p.display())),
        "{err}"
    );
}

#[test]
fn missing_file_exits_2() {
    let out = palisade(&["check", "/nonexistent/rules.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/rules.toml: cannot read"));
}

#[test]
fn usage_error_exits_2() {
    assert_eq!(palisade(&["check"]).status.code(), Some(2));
}

#[test]
fn fuzz_corpus_replays_through_compile() {
    let dir = repo("fuzz/corpus/parse_rules");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        n += 1;
        let r = std::panic::catch_unwind(|| {
            if let Ok(loaded) = palisade_rules::parse("fuzz.toml", &bytes) {
                if let Ok(policy) = Policy::compile(&loaded.ruleset) {
                    let _ = policy.check_expects(&loaded);
                    for e in &loaded.ruleset.expects {
                        let ctx = Context {
                            port: policy.port(&e.port).unwrap_or(u32::MAX),
                            route: None,
                        };
                        let _ = policy.evaluate(&e.packet, &ctx);
                    }
                }
            }
        });
        assert!(r.is_ok(), "panic on {}", path.display());
    }
    assert!(n >= 10);
}

#[test]
fn strict_makes_warnings_fail() {
    // Valid, with one warning (the second rule is shadowed by the first).
    let text = "version = 1\n[[port]]\nname = \"p\"\n[[acl]]\nname = \"a\"\n  [[acl.rule]]\n  action = \"deny\"\n  proto = \"tcp\"\n\
                  [[acl.rule]]\n  action = \"permit\"\n  proto = \"tcp\"\n  dst_port = 22\n[[bind]]\nacl = \"a\"\nport = \"p\"\n";
    let path = tmp("strict.toml", text);
    let p = path.to_str().unwrap();
    let out = palisade(&["check", p]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("warning"));
    let out = palisade(&["check", "--strict", p]);
    assert_eq!(out.status.code(), Some(1), "--strict: a warning fails");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning") && err.contains("refused by --strict: 1 warning"),
        "{err}"
    );
    // Without warnings --strict passes.
    let out = palisade(&["check", "--strict", repo("rules/office.toml").to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn lists_of_protocols_and_icmp_types_check_and_explain() {
    // Before: `proto = ["tcp", "udp"]` failed with "expected an integer, found array".
    let text = "version = 1\n[[port]]\nname = \"p\"\n[[acl]]\nname = \"a\"\n\
                  [[acl.rule]]\n  id = \"dns\"\n  action = \"permit\"\n  proto = [\"tcp\", \"udp\"]\n  dst_port = 53\n\
                  [[acl.rule]]\n  id = \"ping\"\n  action = \"permit\"\n  proto = [\"icmp\", \"icmpv6\"]\n  icmp_type = [8, 128]\n\
                [[bind]]\nacl = \"a\"\nport = \"p\"\n\
                [[expect]]\nport = \"p\"\npacket = { proto = \"udp\", src = \"10.0.0.1\", dst = \"10.0.0.2\", dst_port = 53 }\nverdict = \"permit\"\nrule = \"dns\"\n\
                [[expect]]\nport = \"p\"\npacket = { proto = \"tcp\", src = \"10.0.0.1\", dst = \"10.0.0.2\", dst_port = 53 }\nverdict = \"permit\"\nrule = \"dns\"\n\
                [[expect]]\nport = \"p\"\npacket = { proto = \"sctp\", src = \"10.0.0.1\", dst = \"10.0.0.2\" }\nverdict = \"deny\"\n\
                [[expect]]\nport = \"p\"\npacket = { proto = \"icmpv6\", src = \"2001:db8::1\", dst = \"2001:db8::2\", icmp_type = 128 }\nverdict = \"permit\"\nrule = \"ping\"\n\
                [[expect]]\nport = \"p\"\npacket = { proto = \"icmp\", src = \"10.0.0.1\", dst = \"10.0.0.2\", icmp_type = 3 }\nverdict = \"deny\"\n";
    let path = tmp("lists.toml", text);
    let p = path.to_str().unwrap();
    let out = palisade(&["check", "--strict", p]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("expects:    5 (5 passed, 0 failed)"));
    let out = palisade(&[
        "explain",
        p,
        "--port",
        "p",
        "--json",
        "udp 10.0.0.1:5000 -> 10.0.0.2:53",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["verdict"].as_str(), v["rule"].as_str()),
        (Some("permit"), Some("dns")),
        "{v}"
    );
}
