//! `palisade inspect` end to end, through the built binary; and the demo
//! capture `rules/demo/office.pcap` is exactly what its generator writes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[allow(dead_code)]
#[path = "../examples/make_demo_capture.rs"]
mod demo;

const DEMO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../rules/demo/office.pcap");
const PCAPS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/pcaps");

const HEADER: &str = "frame,outer_vlan,inner_vlan,ethertype,ip_version,ip_src,ip_dst,l4_proto,is_fragment,\
frag_offset,more_fragments,src_port,dst_port,icmp_type,icmp_code,tcp_flags,status";

/// The demo capture's expected rows (the frame list is in the generator's docs).
const DEMO_ROWS: [&str; 13] = [
    "1,,,0x0800,4,10.0.10.5,198.51.100.7,6,0,0,0,50000,443,,,0x0002,ok",
    "2,,,0x0800,4,10.0.10.5,198.51.100.7,6,0,0,0,50001,22,,,0x0002,ok",
    "3,,,0x0800,4,10.0.10.5,10.0.10.1,17,0,0,0,53000,53,,,,ok",
    "4,,,0x0800,4,10.0.10.5,198.51.100.7,1,0,0,0,,,8,0,,ok",
    "5,,,0x0800,4,10.0.10.5,198.51.100.7,6,0,0,0,50000,443,,,0x0018,ok",
    "6,20,,0x0800,4,192.168.20.7,198.51.100.7,6,0,0,0,40000,443,,,0x0002,ok",
    "7,20,,0x0800,4,192.168.20.7,10.0.10.5,6,0,0,0,40001,22,,,0x0002,ok",
    "8,20,,0x0800,4,192.168.20.7,10.0.10.1,17,0,0,0,40002,53,,,,ok",
    "9,,,0x86dd,6,2001:db8:10::5,2001:db8:ffff::7,6,0,0,0,50002,443,,,0x0002,ok",
    "10,,,0x0800,4,10.0.10.5,198.51.100.7,17,1,1480,0,,,,,,ok",
    "11,,,0x0800,4,10.0.10.5,198.51.100.7,6,1,0,1,,,,,,malformed:fragment",
    "12,,,0x0800,4,10.0.10.5,198.51.100.7,6,0,0,0,50003,443,,,,truncated:tcp",
    "13,,,0x0806,,,,,,,,,,,,,ok",
];

fn inspect(path: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_palisade"))
        .arg("inspect")
        .arg(path)
        .output()
        .expect("run palisade")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// A scratch file unique to this test process and `name`.
fn scratch(name: &str, bytes: &[u8]) -> PathBuf {
    let p = std::env::temp_dir().join(format!("palisade-inspect-{}-{name}", std::process::id()));
    std::fs::write(&p, bytes).unwrap();
    p
}

fn expected_demo_output() -> String {
    let mut s = format!("{HEADER}\n");
    for r in DEMO_ROWS {
        s.push_str(r);
        s.push('\n');
    }
    s
}

#[test]
fn committed_demo_capture_is_what_the_generator_writes() {
    let committed = std::fs::read(DEMO).expect("rules/demo/office.pcap is committed");
    assert!(
        committed == demo::demo_capture(),
        "rules/demo/office.pcap differs from the generator; rerun \
         `cargo run -p palisade --example make_demo_capture -- rules/demo/office.pcap`"
    );
}

#[test]
fn inspect_demo_capture() {
    let o = inspect(Path::new(DEMO));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), expected_demo_output());
    assert!(o.stderr.is_empty());
}

#[test]
fn snap_length_zero_is_not_an_error() {
    let mut bytes = std::fs::read(DEMO).unwrap();
    bytes[16..20].copy_from_slice(&0u32.to_le_bytes()); // global header snaplen
    let p = scratch("snap0.pcap", &bytes);
    let o = inspect(&p);
    std::fs::remove_file(&p).unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), expected_demo_output());
}

#[test]
fn pcapng_gives_the_same_rows() {
    use pcap_file::pcap::PcapReader;
    use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
    use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionBlock;
    use pcap_file::pcapng::PcapNgWriter;
    use pcap_file::DataLink;

    let mut r = PcapReader::new(std::fs::File::open(DEMO).unwrap()).unwrap();
    let mut w = PcapNgWriter::new(Vec::new()).unwrap();
    w.write_pcapng_block(InterfaceDescriptionBlock::new(DataLink::ETHERNET, 0))
        .unwrap();
    while let Some(pkt) = r.next_packet() {
        let pkt = pkt.unwrap();
        let epb = EnhancedPacketBlock {
            interface_id: 0,
            timestamp: pkt.timestamp,
            original_len: pkt.orig_len,
            data: pkt.data,
            options: vec![],
        };
        w.write_pcapng_block(epb).unwrap();
    }
    let p = scratch("demo.pcapng", &w.into_inner());
    let o = inspect(&p);
    std::fs::remove_file(&p).unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), expected_demo_output());
}

#[test]
fn missing_file_is_one_line_exit_2() {
    let p = std::env::temp_dir().join("palisade-inspect-does-not-exist.pcap");
    let o = inspect(&p);
    assert_eq!(o.status.code(), Some(2));
    assert!(o.stdout.is_empty());
    let e = stderr(&o);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(
        e.contains("palisade-inspect-does-not-exist.pcap") && e.contains("no such file"),
        "{e}"
    );
    assert!(!e.contains("panicked"));
}

#[test]
fn garbage_file_is_one_line_exit_2() {
    for (name, bytes) in [
        ("text.pcap", b"this is not a capture at all\n".to_vec()),
        ("empty.pcap", Vec::new()),
        ("short.pcap", vec![0xd4, 0xc3]),
        // A pcap magic with a header cut short.
        ("header.pcap", vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0]),
    ] {
        let p = scratch(name, &bytes);
        let o = inspect(&p);
        std::fs::remove_file(&p).unwrap();
        assert_eq!(o.status.code(), Some(2), "{name}");
        assert!(o.stdout.is_empty(), "{name}");
        let e = stderr(&o);
        assert_eq!(e.lines().count(), 1, "{name}: {e}");
        assert!(e.contains(name), "{name}: {e}");
        assert!(!e.contains("panicked"), "{name}: {e}");
    }
}

#[test]
fn a_device_is_refused_not_read_forever() {
    let o = inspect(Path::new("/dev/zero"));
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains("/dev/zero") && e.contains("not a regular file"), "{e}");
}

#[test]
fn truncated_capture_prints_complete_frames_then_fails() {
    let bytes = std::fs::read(DEMO).unwrap();
    // Cut 10 bytes into the 4th record: skip the 24-byte header and three records.
    let mut cut = 24;
    for _ in 0..3 {
        let incl = u32::from_le_bytes(bytes[cut + 8..cut + 12].try_into().unwrap()) as usize;
        cut += 16 + incl;
    }
    cut += 10;
    let p = scratch("cut.pcap", &bytes[..cut]);
    let o = inspect(&p);
    std::fs::remove_file(&p).unwrap();
    assert_eq!(o.status.code(), Some(2));
    let want: String = [HEADER, DEMO_ROWS[0], DEMO_ROWS[1], DEMO_ROWS[2]]
        .iter()
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(stdout(&o), want);
    let e = stderr(&o);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(
        e.contains("cut.pcap") && e.contains("truncated capture") && e.contains("record 4"),
        "{e}"
    );
}

#[test]
fn shared_capture_matches_truth_columns() {
    let cap = Path::new(PCAPS).join("pp_VlanPackets.pcap");
    if !cap.exists() {
        println!("SKIPPED: ../shared/pcaps not present");
        return;
    }
    let o = inspect(&cap);
    assert_eq!(o.status.code(), Some(0));
    let out = stdout(&o);
    let truth = std::fs::read_to_string(cap.with_extension("truth.csv")).unwrap();
    let mut t = truth.lines();
    let th: Vec<&str> = t.next().unwrap().split(',').collect();
    let mut ours = out.lines();
    let oh: Vec<&str> = ours.next().unwrap().split(',').collect();
    assert_eq!(oh.join(","), HEADER);
    let mut n = 0;
    for (tl, ol) in t.zip(ours) {
        let tv: Vec<&str> = tl.split(',').collect();
        let ov: Vec<&str> = ol.split(',').collect();
        for (i, col) in oh.iter().enumerate().filter(|(_, c)| **c != "status") {
            let j = th.iter().position(|c| c == col).unwrap();
            assert_eq!(ov[i], tv[j], "frame {} column {col}", ov[0]);
        }
        n += 1;
    }
    assert_eq!(n, 26);
}

#[test]
fn a_closed_stdout_pipe_ends_the_output_quietly() {
    // `palisade inspect cap | head -0`: the reader is gone before the first
    // row is written. The command must end as `cat` would, without a panic.
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let capture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../rules/demo/office.pcap");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_palisade"))
        .arg("inspect")
        .arg(&capture)
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run palisade");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGPIPE),
        "{:?} {stderr}",
        out.status
    );
}
