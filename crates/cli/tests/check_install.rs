//! What an operator installs: shell completions, the man page, the systemd
//! unit (checked with `systemd-analyze verify` where that tool exists), and a
//! release binary without debug info.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_palisade");

fn palisade(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run palisade")
}

fn tmp(tag: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("palisade-install-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

const COMMANDS: [&str; 12] = [
    "check",
    "inspect",
    "classify",
    "explain",
    "bench",
    "run",
    "status",
    "reload",
    "confirm",
    "rollback",
    "completions",
    "manpage",
];

#[test]
fn completions_for_bash_zsh_and_fish_name_every_command() {
    for shell in ["bash", "zsh", "fish"] {
        let out = palisade(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        for c in COMMANDS {
            assert!(script.contains(c), "{shell} completions lack {c}");
        }
        assert!(
            script.contains("confirm-within") && script.contains("strict"),
            "{shell}"
        );
        // Syntax-check with the shell itself where it is installed.
        if have(shell) {
            let dir = tmp(shell);
            let file = dir.join("palisade.completion");
            std::fs::write(&file, &script).unwrap();
            let check = match shell {
                "fish" => Command::new("fish").arg("--no-execute").arg(&file).output(),
                _ => Command::new(shell).arg("-n").arg(&file).output(),
            }
            .unwrap();
            assert!(
                check.status.success(),
                "{shell}: {}",
                String::from_utf8_lossy(&check.stderr)
            );
            let _ = std::fs::remove_dir_all(&dir);
        } else {
            println!("SKIPPED ({shell} syntax check): {shell} not installed");
        }
    }
    let out = palisade(&["completions", "powershell"]);
    assert_eq!(out.status.code(), Some(2), "only bash, zsh and fish");
}

#[test]
fn the_man_page_is_roff_and_covers_every_command() {
    let out = palisade(&["manpage"]);
    assert_eq!(out.status.code(), Some(0));
    let page = String::from_utf8(out.stdout).unwrap();
    assert!(
        page.contains(".TH palisade 1"),
        "{}",
        &page[..page.len().min(300)]
    );
    for c in COMMANDS {
        assert!(page.contains(c), "palisade(1) lacks {c}");
    }
    let dir = tmp("man");
    let out = palisade(&["manpage", "--dir", dir.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for c in COMMANDS {
        let sub = std::fs::read_to_string(dir.join(format!("palisade-{c}.1"))).unwrap();
        assert!(
            sub.contains(&format!(".TH PALISADE-{} 1", c.to_uppercase())),
            "{c}"
        );
    }
    let run = std::fs::read_to_string(dir.join("palisade-run.1")).unwrap();
    assert!(
        run.contains("boot\\-from\\-config"),
        "palisade-run(1) documents --boot-from-config"
    );
    if have("man") {
        let rendered = Command::new("man")
            .arg("-l")
            .arg(dir.join("palisade-run.1"))
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "100")
            .output()
            .unwrap();
        assert!(
            rendered.status.success(),
            "{}",
            String::from_utf8_lossy(&rendered.stderr)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn unit() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("dist/palisade.service")).unwrap()
}

#[test]
fn the_systemd_unit_is_hardened_and_runs_flags_palisade_knows() {
    let unit = unit();
    for need in [
        "ProtectSystem=strict",
        "CapabilityBoundingSet=CAP_NET_RAW CAP_NET_ADMIN",
        "StateDirectory=palisade",
        "StateDirectoryMode=0700",
        "NoNewPrivileges=yes",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(unit.lines().any(|l| l.trim() == need), "the unit lacks {need}");
    }
    // Every flag of ExecStart is a flag of `palisade run`, and the command line parses.
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap()
        .replace("$PALISADE_ARGS", "");
    let words: Vec<&str> = exec.split_whitespace().collect();
    assert_eq!(words[..2], ["/usr/local/bin/palisade", "run"]);
    let help = String::from_utf8(palisade(&["run", "--help"]).stdout).unwrap();
    for flag in words.iter().filter(|w| w.starts_with("--")) {
        assert!(help.contains(flag), "palisade run has no {flag}");
    }
    // With an interface that cannot exist, the command line is refused before anything is touched.
    let dir = tmp("unit-args");
    let mut args: Vec<String> = words[1..].iter().map(|w| w.to_string()).collect();
    for a in args.iter_mut() {
        if a.starts_with("/etc/") || a.starts_with("/run/") || a.starts_with("/var/") {
            *a = dir
                .join(Path::new(a.as_str()).file_name().unwrap())
                .display()
                .to_string();
        }
    }
    args.extend(["--bridge".into(), "palisade-no-such0,palisade-no-such1".into()]);
    let out = Command::new(BIN).args(&args).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such interface"));
    assert!(
        !dir.join("palisade").exists(),
        "the state directory was not touched"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn systemd_analyze_verifies_the_unit() {
    if !have("systemd-analyze") {
        println!("SKIPPED: systemd-analyze not installed");
        return;
    }
    // The unit names the installed path; verify it against the binary under test.
    let dir = tmp("verify");
    let file = dir.join("palisade.service");
    std::fs::write(&file, unit().replace("/usr/local/bin/palisade", BIN)).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    // Unknown or mistyped settings are only warnings: there must be none.
    let ours: Vec<&str> = err.lines().filter(|l| l.contains("palisade.service")).collect();
    assert!(ours.is_empty(), "systemd-analyze complains: {ours:#?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Names of the ELF sections of `path`.
fn elf_sections(path: &str) -> Vec<String> {
    let data = std::fs::read(path).unwrap();
    assert_eq!(&data[..4], b"\x7fELF");
    assert_eq!(data[4], 2, "64-bit ELF");
    let u16_at = |o: usize| u16::from_le_bytes(data[o..o + 2].try_into().unwrap()) as usize;
    let u32_at = |o: usize| u32::from_le_bytes(data[o..o + 4].try_into().unwrap()) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(data[o..o + 8].try_into().unwrap()) as usize;
    let (shoff, shentsize, shnum, shstrndx) = (u64_at(0x28), u16_at(0x3a), u16_at(0x3c), u16_at(0x3e));
    let header = |i: usize| shoff + i * shentsize;
    let strtab = u64_at(header(shstrndx) + 0x18);
    (0..shnum)
        .map(|i| {
            let name = strtab + u32_at(header(i));
            let end = data[name..].iter().position(|&b| b == 0).unwrap();
            String::from_utf8_lossy(&data[name..name + end]).into_owned()
        })
        .collect()
}

#[test]
fn a_release_binary_carries_no_debug_info() {
    if cfg!(debug_assertions) {
        println!("SKIPPED: a debug build (the release profile is what gets installed)");
        return;
    }
    let sections = elf_sections(BIN);
    assert!(sections.iter().any(|s| s == ".text"), "{sections:?}");
    let debug: Vec<&String> = sections.iter().filter(|s| s.starts_with(".debug_")).collect();
    assert!(
        debug.is_empty(),
        "debug sections in the release binary: {debug:?}"
    );
    assert!(
        sections.iter().any(|s| s == ".symtab"),
        "symbols are kept (backtraces name functions)"
    );
}
