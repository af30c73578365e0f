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

/// Every JSON line of the output.
fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn verify_passes_on_the_compiled_classifier_and_catches_a_flipped_answer() {
    let Some(dir) = data() else { return };
    let filters = dir.join("cb12/fw1_1k");
    let base = [
        "bench",
        "--classbench",
        filters.to_str().unwrap(),
        "--verify",
        "--json",
        "--min-time-ms",
        "20",
    ];
    let out = palisade(&base);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v = last_json(&out);
    assert_eq!(v["mismatches"], 0);
    assert_eq!(v["verified"], v["packets"], "every line verified");
    assert_eq!(v["verify_sampled"], false);
    assert!(
        v["trace"].as_str().unwrap().ends_with("fw1_1k_trace"),
        "the trace beside the set: {v}"
    );
    // A deliberately wrong classifier: one header's answer changed.
    let mut wrong = base.to_vec();
    wrong.extend(["--flip-answer", "100"]);
    let out = palisade(&wrong);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let v = last_json(&out);
    assert!(v["mismatches"].as_u64().unwrap() >= 1, "{v}");
    // Every line with that header (bursts repeat it) is named, with both answers.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(": answer ") && err.contains(", reference "), "{err}");
}

#[test]
fn several_sets_threads_latency_and_a_plot() {
    let Some(dir) = data() else { return };
    let a = dir.join("wustl/fw1_1K");
    let b = dir.join("cb12/ipc1_1k");
    let sets = format!("{},{}", a.display(), b.display());
    let plot = scratch("sets.svg");
    let out = palisade(&[
        "bench",
        "--classbench",
        &sets,
        "--threads",
        "2",
        "--json",
        "--min-time-ms",
        "20",
        "--plot",
        plot.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 2, "one JSON line a set");
    assert_eq!(lines[0]["set"], "fw1_1K");
    assert_eq!(lines[1]["set"], "ipc1_1k");
    for v in &lines {
        assert_eq!(v["threads"], 2);
        let per: Vec<f64> = v["per_thread_mpps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_f64().unwrap())
            .collect();
        assert_eq!(per.len(), 2);
        assert!((per.iter().sum::<f64>() - v["mpps"].as_f64().unwrap()).abs() < 1e-6);
        let lat = &v["latency_ns"];
        assert!(lat["p50"].as_u64().unwrap() > 0);
        assert!(lat["p50"].as_u64() <= lat["p99"].as_u64() && lat["p99"].as_u64() <= lat["p99_9"].as_u64());
        assert!(!v["cpu_model"].as_str().unwrap().is_empty());
        assert!(v["avx512"].is_boolean());
    }
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.starts_with("<svg"), "{}", &svg[..100.min(svg.len())]);
    for text in [
        "fw1_1K",
        "ipc1_1k",
        "Mpps",
        "build time",
        "memory",
        lines[0]["cpu_model"].as_str().unwrap(),
    ] {
        assert!(svg.contains(text), "the plot names {text}");
    }
}

#[test]
fn ipv6_sets_and_traces_are_read_and_verified() {
    let filters = scratch("v6_filters");
    std::fs::write(
        &filters,
        "@2001:db8:5a1:a0b::/64\t2001:db8::/32\t0 : 65535\t80 : 80\t0x06/0xFF\t0x0000/0x0000\t\n\
         @2001:db8:5a1::/48\t::/0\t0 : 65535\t0 : 65535\t0x11/0xFF\t0x0000/0x0000\t\n\
         @10.0.0.0/8\t0.0.0.0/0\t0 : 65535\t0 : 65535\t0x00/0x00\t0x0000/0x0000\t\n",
    )
    .unwrap();
    let trace = scratch("v6_trace");
    std::fs::write(
        &trace,
        "2001:db8:5a1:a0b::7\t2001:db8::1\t4000\t80\t6\t0\t0\n\
         2001:db8:5a1:ffff::1 1:2::3 53 53 17 2\n\
         10.1.2.3\t192.0.2.1\t1\t2\t6\t0\t2\n\
         2001:db8:5a1:a0c::7 2001:db8::1 4000 80 6 -1\n",
    )
    .unwrap();
    let results = scratch("v6.out");
    let out = palisade(&[
        "bench",
        "--classbench",
        filters.to_str().unwrap(),
        "--trace",
        trace.to_str().unwrap(),
        "--results",
        results.to_str().unwrap(),
        "--verify",
        "--json",
        "--min-time-ms",
        "10",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(last_json(&out)["mismatches"], 0);
    assert_eq!(std::fs::read_to_string(&results).unwrap(), "0\n1\n2\n-1\n");
}

#[test]
fn an_ipv4_set_moved_into_an_ipv6_site_and_saved() {
    let Some(dir) = data() else { return };
    let filters = dir.join("wustl/acl1_1K");
    let save = scratch("saved");
    let out = palisade(&[
        "bench",
        "--classbench",
        filters.to_str().unwrap(),
        "--ipv6-site",
        "2001:db8:5a1::",
        "--verify",
        "--json",
        "--min-time-ms",
        "10",
        "--save",
        save.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v = last_json(&out);
    assert_eq!(v["set"], "acl1_1K-ipv6");
    assert_eq!(v["mismatches"], 0);
    // The saved set and trace read back, IPv6, with the same answers.
    let saved = save.join("acl1_1K-ipv6");
    let text = std::fs::read_to_string(&saved).unwrap();
    assert!(text.starts_with("@2001:db8:5a1:"), "{}", &text[..60]);
    let out = palisade(&[
        "bench",
        "--classbench",
        saved.to_str().unwrap(),
        "--verify",
        "--json",
        "--min-time-ms",
        "10",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(last_json(&out)["packets"], 9380);
    // The rule file passes `palisade check`.
    let out = palisade(&["check", save.join("acl1_1K-ipv6.toml").to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

const RULES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../rules/office.toml");
const CAPTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../rules/demo/office.pcap");

#[test]
fn end_to_end_replays_a_capture_through_the_policy() {
    let out = palisade(&[
        "bench",
        "--rules",
        RULES,
        "--port",
        "lan1",
        "--route",
        "lan:wan",
        "--pcap",
        CAPTURE,
        "--json",
        "--min-time-ms",
        "20",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v = last_json(&out);
    assert_eq!(v["frames"], 13);
    // As `palisade classify` decides the demo capture: 7 permit (the ARP frame
    // by lan1-in's `arp` rule: Routed ACLs are for IP).
    assert_eq!(v["permitted"], 7, "{v}");
    assert!(v["mfps"].as_f64().unwrap() > 0.0);
    assert!(v["parse_ns_per_frame"].as_f64().unwrap() > 0.0);
    assert!(v["policy_ns_per_frame"].as_f64().unwrap() > 0.0);
    let stages: Vec<&str> = v["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert_eq!(stages[0], "rescue");
    assert!(
        stages.contains(&"pacl") && stages.contains(&"racl-in"),
        "{stages:?}"
    );
}

#[test]
fn end_to_end_generates_frames_from_the_rules() {
    let out = palisade(&[
        "bench",
        "--rules",
        RULES,
        "--port",
        "lan1",
        "--generate",
        "2000",
        "--threads",
        "2",
        "--json",
        "--min-time-ms",
        "20",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v = last_json(&out);
    assert_eq!(v["frames"], 2000);
    let permitted = v["permitted"].as_u64().unwrap();
    assert!(permitted > 0 && permitted < 2000, "hits and misses: {v}");
    assert_eq!(v["per_thread_mfps"].as_array().unwrap().len(), 2);
    // A port the rules do not have.
    let out = palisade(&["bench", "--rules", RULES, "--port", "nope", "--generate", "10"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no port `nope`"));
}
