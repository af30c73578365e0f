//! Agreement with the tshark truth files in `../shared/pcaps`.
//!
//! For every capture, every frame that tshark did not flag (`ws_malformed`,
//! `ws_short`, `ws_unreassembled`, expert severity `error`) must agree with
//! the truth CSV in every column `palisade inspect` prints; a flagged frame
//! must agree or carry a non-ok status. The README of that directory explains
//! why flagged frames are not compared field by field.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use palisade_packet::{parse, CsvRow, CSV_HEADER};
use pcap_file::pcap::PcapParser;

const PCAPS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/pcaps");

/// The frames of a classic pcap file (all shared captures are classic pcap).
fn frames(path: &Path) -> Vec<Vec<u8>> {
    let data = std::fs::read(path).unwrap();
    let (mut rem, parser) = PcapParser::new(&data).unwrap();
    let mut out = Vec::new();
    while !rem.is_empty() {
        let (r, pkt) = parser.next_raw_packet(rem).unwrap();
        out.push(pkt.data.into_owned());
        rem = r;
    }
    out
}

fn captures() -> Option<Vec<PathBuf>> {
    let dir = Path::new(PCAPS);
    if !dir.is_dir() {
        println!("SKIPPED: ../shared/pcaps not present");
        return None;
    }
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pcap"))
        .collect();
    v.sort();
    Some(v)
}

#[test]
fn every_capture_agrees_with_tshark_truth() {
    let Some(caps) = captures() else { return };
    assert!(!caps.is_empty());
    let ours_cols: Vec<&str> = CSV_HEADER.split(',').collect();
    let (mut compared, mut flagged, mut failures) = (0usize, 0usize, Vec::new());
    for cap in &caps {
        let truth_path = cap.with_extension("truth.csv");
        let truth = std::fs::read_to_string(&truth_path).unwrap();
        let mut lines = truth.lines();
        let header: Vec<&str> = lines.next().unwrap().split(',').collect();
        let rows: Vec<HashMap<&str, &str>> = lines
            .map(|l| header.iter().copied().zip(l.split(',')).collect())
            .collect();
        let frames = frames(cap);
        assert_eq!(rows.len(), frames.len(), "{}: frame count", cap.display());
        for (i, (frame, t)) in frames.iter().zip(&rows).enumerate() {
            let key = parse(frame);
            let row = CsvRow {
                frame: i as u64 + 1,
                key: &key,
            }
            .to_string();
            let ours: HashMap<&str, &str> = ours_cols.iter().copied().zip(row.split(',')).collect();
            let is_flagged = t["ws_malformed"] == "1"
                || t["ws_short"] == "1"
                || t["ws_unreassembled"] == "1"
                || t["expert_max"] == "error";
            let diffs: Vec<String> = ours_cols[..ours_cols.len() - 1]
                .iter()
                .filter(|c| ours[*c] != t[*c])
                .map(|c| format!("{c}: ours {:?} truth {:?}", ours[c], t[c]))
                .collect();
            let name = cap.file_name().unwrap().to_string_lossy();
            if is_flagged {
                flagged += 1;
                if !diffs.is_empty() && key.status.is_ok() {
                    failures.push(format!(
                        "{name} frame {} (flagged, status ok): {}",
                        i + 1,
                        diffs.join("; ")
                    ));
                }
            } else {
                compared += 1;
                if !diffs.is_empty() {
                    failures.push(format!(
                        "{name} frame {} [{}]: {}",
                        i + 1,
                        key.status,
                        diffs.join("; ")
                    ));
                }
            }
        }
    }
    println!(
        "{} captures, {compared} frames compared, {flagged} flagged",
        caps.len()
    );
    assert!(
        failures.is_empty(),
        "{} disagreements:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
