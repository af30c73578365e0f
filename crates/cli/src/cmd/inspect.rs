//! `palisade inspect CAPTURE`: one CSV row per frame.
//!
//! Columns (header row first): `frame,outer_vlan,inner_vlan,ethertype,
//! ip_version,ip_src,ip_dst,l4_proto,is_fragment,frag_offset,more_fragments,
//! src_port,dst_port,icmp_type,icmp_code,tcp_flags,status`, with the value
//! conventions of the tshark truth files in `../shared/pcaps` (empty cell when
//! absent, hex ethertype and TCP flags, fragment offset in bytes).
//!
//! `status` is `ok`, or `truncated:LAYER` (the frame ended inside that
//! layer's header, or before the end its IP length field announces) or
//! `malformed:LAYER` (a field is inconsistent; `malformed:fragment` is also a
//! first fragment too short for its L4 header). LAYER is one of `ethernet`,
//! `vlan`, `ipv4`, `ipv6`, `ipv6-ext`, `fragment`, `tcp`, `udp`, `icmp`,
//! `icmpv6`.
//!
//! A missing file, a file that is not pcap/pcapng, or a non-Ethernet link
//! type: one line on stderr, exit 2, nothing on stdout. A capture cut in the
//! middle of a record: the complete frames before it are printed, then one
//! line on stderr, exit 2.

use std::io::{BufWriter, ErrorKind, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use palisade_packet::{parse, CsvRow, CSV_HEADER};

use crate::capture;

/// Arguments of `palisade inspect`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Output: CSV with the header row
  frame,outer_vlan,inner_vlan,ethertype,ip_version,ip_src,ip_dst,l4_proto,is_fragment,
  frag_offset,more_fragments,src_port,dst_port,icmp_type,icmp_code,tcp_flags,status
Empty cell = absent. status: ok | truncated:LAYER | malformed:LAYER, LAYER one of
  ethernet vlan ipv4 ipv6 ipv6-ext fragment tcp udp icmp icmpv6
  (malformed:fragment also marks a first fragment too short for its L4 header).
Exit 2 with a one-line error for a missing, non-pcap/pcapng or cut capture
(frames before the cut are printed first).")]
pub struct Args {
    /// A classic pcap or pcapng capture (Ethernet link type).
    pub capture: PathBuf,
}

/// Runs `palisade inspect`.
pub fn run(args: Args) -> ExitCode {
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut write_err: Option<std::io::Error> = None;
    let mut header_done = false;
    let res = capture::for_each_frame(&args.capture, |frame| {
        if write_err.is_some() {
            return;
        }
        let key = parse(frame.data);
        let r = if header_done {
            writeln!(
                out,
                "{}",
                CsvRow {
                    frame: frame.number,
                    key: &key
                }
            )
        } else {
            header_done = true;
            writeln!(out, "{CSV_HEADER}").and_then(|()| {
                writeln!(
                    out,
                    "{}",
                    CsvRow {
                        frame: frame.number,
                        key: &key
                    }
                )
            })
        };
        if let Err(e) = r {
            write_err = Some(e);
        }
    });
    if write_err.is_none() && res.is_ok() && !header_done {
        // An empty but valid capture still gets its header row.
        if let Err(e) = writeln!(out, "{CSV_HEADER}") {
            write_err = Some(e);
        }
    }
    if write_err.is_none() {
        if let Err(e) = out.flush() {
            write_err = Some(e);
        }
    }
    if let Some(e) = write_err {
        if e.kind() == ErrorKind::BrokenPipe {
            // The reader went away (e.g. `| head`): not an error of ours.
            return ExitCode::SUCCESS;
        }
        eprintln!("palisade inspect: writing output: {e}");
        return ExitCode::from(2);
    }
    match res {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) if e.frames_before > 0 => {
            eprintln!(
                "palisade inspect: {e} ({} frames printed before it)",
                e.frames_before
            );
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("palisade inspect: {e}");
            ExitCode::from(2)
        }
    }
}
