//! `palisade bench --classbench` end to end, through the built binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const CLASSBENCH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/classbench");

fn palisade(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(args)
        .output()
        .unwrap()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("palisade-bench-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn data() -> Option<PathBuf> {
    let dir = Path::new(CLASSBENCH);
    if dir.is_dir() {
        Some(dir.to_path_buf())
    } else {
        println!("SKIPPED: ../shared/classbench not present");
        None
    }
}

fn last_json(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {stdout}"))
}

#[test]
fn json_figures_and_results_match_the_wustl_answers() {
    let Some(dir) = data() else { return };
    let filters = dir.join("wustl/acl1_1K");
    let trace = dir.join("wustl/acl1_1K_trace");
    for classifier in ["compiled", "linear"] {
        let results = scratch(&format!("acl1_1K_{classifier}.out"));
        let out = palisade(&[
            "bench",
            "--classbench",
            filters.to_str().unwrap(),
            "--trace",
            trace.to_str().unwrap(),
            "--results",
            results.to_str().unwrap(),
            "--json",
            "--classifier",
            classifier,
            "--min-time-ms",
            "20",
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v = last_json(&out);
        for key in [
            "rules",
            "packets",
            "build_ms",
            "memory_bytes",
            "mpps",
            "ns_per_packet",
        ] {
            assert!(v.get(key).is_some(), "missing {key} in {v}");
        }
        assert_eq!(v["rules"], 917);
        assert_eq!(v["packets"], 9380);
        assert_eq!(v["classifier"], classifier);
        assert!(v["mpps"].as_f64().unwrap() > 0.0);
        assert!(v["memory_bytes"].as_u64().unwrap() > 0);
        // The wustl trace's last column is the 1-based first match.
        let got = std::fs::read_to_string(&results).unwrap();
        let want = std::fs::read_to_string(&trace).unwrap();
        let got: Vec<&str> = got.lines().collect();
        assert_eq!(got.len(), 9380);
        for (i, (g, line)) in got.iter().zip(want.lines()).enumerate() {
            let tag: i64 = line.split_whitespace().last().unwrap().parse().unwrap();
            assert_eq!(
                g.parse::<i64>().unwrap(),
                tag - 1,
                "{classifier}: trace line {}",
                i + 1
            );
        }
    }
}

#[test]
fn generated_trace_and_no_match_is_minus_one() {
    let filters = scratch("two_rules");
    std::fs::write(
        &filters,
        "@10.0.0.0/8\t0.0.0.0/0\t0 : 65535\t80 : 80\t0x06/0xFF\t0x0000/0x0000\t\n\
         @192.168.0.0/16 0.0.0.0/0 0 : 65535 0 : 65535 0x11/0xFF\n",
    )
    .unwrap();
    let results = scratch("two_rules.out");
    let out = palisade(&[
        "bench",
        "--classbench",
        filters.to_str().unwrap(),
        "--results",
        results.to_str().unwrap(),
        "--json",
        "--min-time-ms",
        "10",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v = last_json(&out);
    assert_eq!(v["rules"], 2);
    let lines: Vec<i64> = std::fs::read_to_string(&results)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(lines.len() as u64, v["packets"].as_u64().unwrap());
    assert!(
        lines.contains(&0) && lines.contains(&1) && lines.contains(&-1),
        "{lines:?}"
    );
}

#[test]
fn errors_name_the_file_and_line_and_exit_2() {
    let out = palisade(&["bench", "--classbench", "/nonexistent/filters"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/filters"));

    let bad = scratch("bad_filters");
    std::fs::write(
        &bad,
        "@0.0.0.0/0 0.0.0.0/0 0 : 65535 0 : 65535 0x00/0x00\n@1.2.3.4/40 0.0.0.0/0 0 : 1 0 : 1 0x06/0xFF\n",
    )
    .unwrap();
    let out = palisade(&["bench", "--classbench", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:2: ", bad.display())), "{err}");
    assert!(err.contains("prefix length"), "{err}");

    let good = scratch("good_filters");
    std::fs::write(&good, "@0.0.0.0/0 0.0.0.0/0 0 : 65535 0 : 65535 0x00/0x00\n").unwrap();
    let trace = scratch("bad_trace");
    std::fs::write(&trace, "1 2 3 4 6 1\n1 2 3 4\n").unwrap();
    let out = palisade(&[
        "bench",
        "--classbench",
        good.to_str().unwrap(),
        "--trace",
        trace.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:2: ", trace.display())), "{err}");
}

#[test]
fn memory_cap_refusal_exits_1() {
    let Some(dir) = data() else { return };
    let filters = dir.join("wustl/fw1_1K");
    let out = palisade(&[
        "bench",
        "--classbench",
        filters.to_str().unwrap(),
        "--memory-cap-mib",
        "0",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("memory cap"));
}
