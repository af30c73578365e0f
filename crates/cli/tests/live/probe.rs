//! Traffic probes, run inside a namespace by re-executing the test binary as
//! `live probe KIND ARGS...`. Each prints `ready` once it can take traffic,
//! then its findings, one per line, on stdout.
//!
//! `raw-send` writes frames (VLAN tags, wrong checksums and all) raw on an
//! `AF_PACKET` socket; `sniff` reads what arrives on an interface the same
//! way, with `PACKET_AUXDATA`, and prints each frame as it was on the wire:
//! the receiving interface strips the outer VLAN tag and reports it beside
//! the frame, and the sniffer puts it back.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use pnet::packet::icmp::echo_request::MutableEchoRequestPacket;
use pnet::packet::icmp::{IcmpPacket, IcmpTypes};
use pnet::packet::ip::IpNextHeaderProtocols;
use pnet::packet::Packet;
use pnet::transport::{icmp_packet_iter, transport_channel, TransportChannelType, TransportProtocol};

fn arg<T: std::str::FromStr>(args: &[String], i: usize) -> T {
    args.get(i)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("probe: bad argument {i} in {args:?}"))
}

/// Dispatches `args` (after `probe`). Returns the process exit code.
pub fn main(args: &[String]) -> i32 {
    let kind = args.first().map(String::as_str).unwrap_or("");
    let rest = args.get(1..).unwrap_or_default();
    match kind {
        "udp-sink" => udp_sink(rest),
        "udp-send" => udp_send(rest),
        "tcp-echo" => tcp_echo(rest),
        "tcp-ping" => tcp_ping(rest),
        "icmp-ping" => icmp_ping(rest),
        "http-get" => http_get(rest),
        "raw-send" => raw_send(rest),
        "sniff" => sniff(rest),
        "tcp-sink" => tcp_sink(rest),
        "tcp-bulk" => tcp_bulk(rest),
        "udp-echo" => udp_echo(rest),
        "udp-ping" => udp_ping(rest),
        "tcp-session" => tcp_session(rest),
        "syn-flood" => syn_flood(rest),
        _ => {
            eprintln!("probe: unknown kind {kind:?}");
            2
        }
    }
}

/// `udp-sink IP PORT[,PORT...]` (IPv4 or IPv6): prints `PORT SEQ` for every datagram until killed.
fn udp_sink(args: &[String]) -> i32 {
    let ip: IpAddr = arg(args, 0);
    let ports: Vec<u16> = args[1].split(',').map(|p| p.parse().expect("port")).collect();
    let (tx, rx) = std::sync::mpsc::channel::<(u16, u32)>();
    for port in ports {
        let sock = UdpSocket::bind((ip, port)).expect("bind");
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok(n) = sock.recv(&mut buf) {
                if n >= 4 {
                    let seq = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
                    if tx.send((port, seq)).is_err() {
                        break;
                    }
                }
            }
        });
    }
    drop(tx);
    println!("ready");
    let mut out = std::io::stdout().lock();
    for (port, seq) in rx {
        if writeln!(out, "{port} {seq}").and_then(|_| out.flush()).is_err() {
            break;
        }
    }
    0
}

/// `udp-send DST_IP PORT COUNT INTERVAL_US [STOP_FILE]`: datagrams carrying sequence numbers
/// 0..COUNT, ending early once STOP_FILE exists; prints `sent N`.
fn udp_send(args: &[String]) -> i32 {
    let ip: IpAddr = arg(args, 0);
    let port: u16 = arg(args, 1);
    let count: u32 = arg(args, 2);
    let interval = Duration::from_micros(arg(args, 3));
    let stop = args.get(4).map(std::path::PathBuf::from);
    let any: IpAddr = match ip {
        IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let sock = UdpSocket::bind((any, 0)).expect("bind");
    println!("ready");
    let start = Instant::now();
    let mut payload = [0u8; 32];
    let mut sent = 0;
    for seq in 0..count {
        if stop.as_ref().is_some_and(|p| p.exists()) {
            break;
        }
        payload[..4].copy_from_slice(&seq.to_be_bytes());
        if let Err(e) = sock.send_to(&payload, (ip, port)) {
            eprintln!("probe udp-send: {e}");
        }
        sent = seq + 1;
        // Paced against the start time, so the rate holds even when a send is slow.
        let due = start + interval * (seq + 1);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    println!("sent {sent}");
    0
}

/// `tcp-echo IP PORT`: echoes every connection until killed.
fn tcp_echo(args: &[String]) -> i32 {
    let ip: Ipv4Addr = arg(args, 0);
    let port: u16 = arg(args, 1);
    let listener = TcpListener::bind((ip, port)).expect("bind");
    println!("ready");
    for mut conn in listener.incoming().flatten() {
        std::thread::spawn(move || {
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = [0u8; 1024];
            while let Ok(n) = conn.read(&mut buf) {
                if n == 0 || conn.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
    }
    0
}

/// `tcp-ping IP PORT TIMEOUT_MS`: connect, send a line, expect it back; prints `ok` or `fail ...`.
fn tcp_ping(args: &[String]) -> i32 {
    let ip: Ipv4Addr = arg(args, 0);
    let port: u16 = arg(args, 1);
    let timeout = Duration::from_millis(arg(args, 2));
    println!("ready");
    let result = (|| -> std::io::Result<()> {
        let mut s = TcpStream::connect_timeout(&SocketAddr::from((ip, port)), timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.write_all(b"palisade\n")?;
        let mut buf = [0u8; 9];
        s.read_exact(&mut buf)?;
        if &buf != b"palisade\n" {
            return Err(std::io::Error::other("echo differs"));
        }
        Ok(())
    })();
    match result {
        Ok(()) => println!("ok"),
        Err(e) => println!("fail {e}"),
    }
    0
}

/// `http-get ADDR PATH`: one HTTP/1.0 GET; prints the whole response after `ready`.
fn http_get(args: &[String]) -> i32 {
    let addr: SocketAddr = arg(args, 0);
    let path: String = arg(args, 1);
    println!("ready");
    let result = (|| -> std::io::Result<String> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())?;
        let mut reply = String::new();
        s.read_to_string(&mut reply)?;
        Ok(reply)
    })();
    match result {
        Ok(r) => print!("{r}"),
        Err(e) => println!("fail {e}"),
    }
    0
}

/// `icmp-ping IP COUNT TIMEOUT_MS`: echo requests over a raw socket; prints `replies N`.
fn icmp_ping(args: &[String]) -> i32 {
    let ip: Ipv4Addr = arg(args, 0);
    let count: u16 = arg(args, 1);
    let timeout = Duration::from_millis(arg(args, 2));
    let proto = TransportChannelType::Layer4(TransportProtocol::Ipv4(IpNextHeaderProtocols::Icmp));
    let (mut tx, mut rx) = transport_channel(4096, proto).expect("raw ICMP socket");
    println!("ready");
    let ident = (std::process::id() & 0xffff) as u16;
    let mut replies = 0;
    for seq in 0..count {
        let mut buf = [0u8; 16];
        let mut req = MutableEchoRequestPacket::new(&mut buf).expect("buffer");
        req.set_icmp_type(IcmpTypes::EchoRequest);
        req.set_identifier(ident);
        req.set_sequence_number(seq);
        let csum = pnet::packet::icmp::checksum(&IcmpPacket::new(req.packet()).expect("icmp"));
        req.set_checksum(csum);
        tx.send_to(req, ip.into()).expect("send echo request");
        let deadline = Instant::now() + timeout;
        let mut iter = icmp_packet_iter(&mut rx);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match iter.next_with_timeout(left) {
                Ok(Some((p, from)))
                    if from == std::net::IpAddr::V4(ip) && p.get_icmp_type() == IcmpTypes::EchoReply =>
                {
                    let body = p.payload();
                    if body.len() >= 4 && u16::from_be_bytes([body[0], body[1]]) == ident {
                        replies += 1;
                        break;
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }
    println!("replies {replies}");
    0
}

/// `raw-send IF HEX...`: writes each frame (hex) raw on interface IF, in order; prints `sent N`.
fn raw_send(args: &[String]) -> i32 {
    use pnet::datalink::{self, Channel};
    let ifname = &args[0];
    let iface = datalink::interfaces()
        .into_iter()
        .find(|i| &i.name == ifname)
        .unwrap_or_else(|| panic!("raw-send: no interface {ifname}"));
    let Ok(Channel::Ethernet(mut tx, _rx)) = datalink::channel(&iface, Default::default()) else {
        panic!("raw-send: cannot open {ifname}");
    };
    println!("ready");
    let mut sent = 0;
    for hex in &args[1..] {
        let frame = from_hex(hex);
        match tx.send_to(&frame, None) {
            Some(Ok(())) => sent += 1,
            other => eprintln!("probe raw-send: {other:?}"),
        }
        // Paced: a burst must not overrun the bridge's receive queue and make the test flaky.
        std::thread::sleep(Duration::from_micros(200));
    }
    println!("sent {sent}");
    0
}

/// Lowercase hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes of lowercase or uppercase hex (panics on anything else: test input).
pub fn from_hex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

/// `sniff IF MARKER`: prints, as hex, every frame arriving on IF whose bytes contain MARKER,
/// with the VLAN tag the interface stripped put back in place (from `PACKET_AUXDATA`).
fn sniff(args: &[String]) -> i32 {
    let ifname = &args[0];
    let marker = args[1].as_bytes().to_vec();
    let index = pnet::datalink::interfaces()
        .into_iter()
        .find(|i| &i.name == ifname)
        .map(|i| i.index)
        .unwrap_or_else(|| panic!("sniff: no interface {ifname}"));
    let all = (libc::ETH_P_ALL as u16).to_be() as libc::c_int;
    // SAFETY: socket(2) with constant arguments; the descriptor is owned below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, all) };
    assert!(fd >= 0, "sniff: socket: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` is a fresh descriptor owned by nobody else.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let fd = std::os::fd::AsRawFd::as_raw_fd(&sock);
    let one: libc::c_int = 1;
    for opt in [8 /* PACKET_AUXDATA */, 23 /* PACKET_IGNORE_OUTGOING */] {
        // SAFETY: setsockopt(2) reads one c_int from our stack.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_PACKET,
                opt,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(
            rc,
            0,
            "sniff: setsockopt {opt}: {}",
            std::io::Error::last_os_error()
        );
    }
    // SAFETY: sockaddr_ll is plain integers; all-zero is valid.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    addr.sll_ifindex = index as i32;
    // SAFETY: bind(2) reads `size_of::<sockaddr_ll>()` bytes of `addr` on our stack.
    let rc = unsafe {
        libc::bind(
            fd,
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "sniff: bind: {}", std::io::Error::last_os_error());
    println!("ready");
    let mut out = std::io::stdout().lock();
    let mut buf = vec![0u8; 4 + 65536 + 64];
    #[repr(C, align(8))]
    struct Control([u8; 64]);
    let mut control = Control([0; 64]);
    loop {
        let mut iov = libc::iovec {
            iov_base: buf[4..].as_mut_ptr().cast(),
            iov_len: buf.len() - 4,
        };
        // SAFETY: msghdr is plain integers and pointers; all-zero is valid.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.0.as_mut_ptr().cast();
        msg.msg_controllen = control.0.len() as _;
        // SAFETY: `msg` points at one iovec over `buf[4..]` and at `control`, both borrowed
        // for the call; the kernel writes at most their lengths.
        let n = unsafe { libc::recvmsg(fd, &mut msg, 0) };
        if n < 0 {
            eprintln!("sniff: {}", std::io::Error::last_os_error());
            return 1;
        }
        let n = n as usize;
        // struct cmsghdr (16 bytes) + struct tpacket_auxdata: status at 0, TCI at 16, TPID at 18.
        let c = &control.0;
        let level = i32::from_ne_bytes([c[8], c[9], c[10], c[11]]);
        let kind = i32::from_ne_bytes([c[12], c[13], c[14], c[15]]);
        let status = u32::from_ne_bytes([c[16], c[17], c[18], c[19]]);
        let (tci, tpid) = (
            u16::from_ne_bytes([c[32], c[33]]),
            u16::from_ne_bytes([c[34], c[35]]),
        );
        let has_control = msg.msg_controllen as usize >= 36;
        let frame: &[u8] = if has_control && level == libc::SOL_PACKET && kind == 8 && status & (1 << 4) != 0
        {
            let tpid = if status & (1 << 6) != 0 && tpid != 0 {
                tpid
            } else {
                0x8100
            };
            buf.copy_within(4..16, 0);
            buf[12..14].copy_from_slice(&tpid.to_be_bytes());
            buf[14..16].copy_from_slice(&tci.to_be_bytes());
            &buf[..n + 4]
        } else {
            &buf[4..4 + n]
        };
        if frame.windows(marker.len()).any(|w| w == marker.as_slice())
            && writeln!(out, "{}", to_hex(frame))
                .and_then(|_| out.flush())
                .is_err()
        {
            return 0;
        }
    }
}

/// `tcp-sink IP PORT`: accepts connections until killed; prints `bytes N` when each ends.
fn tcp_sink(args: &[String]) -> i32 {
    let ip: Ipv4Addr = arg(args, 0);
    let port: u16 = arg(args, 1);
    let listener = TcpListener::bind((ip, port)).expect("bind");
    println!("ready");
    for mut conn in listener.incoming().flatten() {
        let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0u64;
        let mut sum = 0u64;
        while let Ok(n) = conn.read(&mut buf) {
            if n == 0 {
                break;
            }
            total += n as u64;
            sum = buf[..n]
                .iter()
                .fold(sum, |s, &b| s.wrapping_mul(31).wrapping_add(u64::from(b)));
        }
        println!("bytes {total} sum {sum}");
    }
    0
}

/// `tcp-bulk IP PORT BYTES`: sends BYTES of a known pattern on one connection; prints
/// `sent N sum S SECS` (S: the same running sum the sink computes) or `fail ...`.
fn tcp_bulk(args: &[String]) -> i32 {
    let ip: Ipv4Addr = arg(args, 0);
    let port: u16 = arg(args, 1);
    let bytes: u64 = arg(args, 2);
    println!("ready");
    let start = Instant::now();
    let result = (|| -> std::io::Result<(u64, u64)> {
        let mut s = TcpStream::connect_timeout(&SocketAddr::from((ip, port)), Duration::from_secs(5))?;
        s.set_write_timeout(Some(Duration::from_secs(10)))?;
        let chunk: Vec<u8> = (0..1u32 << 16)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let (mut sent, mut sum) = (0u64, 0u64);
        while sent < bytes {
            let n = (bytes - sent).min(chunk.len() as u64) as usize;
            s.write_all(&chunk[..n])?;
            sum = chunk[..n]
                .iter()
                .fold(sum, |s, &b| s.wrapping_mul(31).wrapping_add(u64::from(b)));
            sent += n as u64;
        }
        s.shutdown(std::net::Shutdown::Write)?;
        // Wait for the sink to close its side: everything was received.
        let mut rest = [0u8; 16];
        let _ = s.read(&mut rest);
        Ok((sent, sum))
    })();
    match result {
        Ok((sent, sum)) => println!("sent {sent} sum {sum} {:.3}", start.elapsed().as_secs_f64()),
        Err(e) => println!("fail {e}"),
    }
    0
}

/// `udp-echo IP PORT DELAY_MS`: sends every datagram back to its sender after DELAY_MS, until killed.
fn udp_echo(args: &[String]) -> i32 {
    let ip: IpAddr = arg(args, 0);
    let port: u16 = arg(args, 1);
    let delay = Duration::from_millis(arg(args, 2));
    let sock = UdpSocket::bind((ip, port)).expect("bind");
    println!("ready");
    let mut buf = [0u8; 2048];
    while let Ok((n, from)) = sock.recv_from(&mut buf) {
        std::thread::sleep(delay);
        let _ = sock.send_to(&buf[..n], from);
    }
    0
}

/// `udp-ping IP PORT COUNT TIMEOUT_MS`: COUNT datagrams from one socket (one flow), each
/// waiting up to TIMEOUT_MS for its echo; prints `replies N refused M` (refused: an ICMP
/// port unreachable came back, which a connected socket reports as ECONNREFUSED).
fn udp_ping(args: &[String]) -> i32 {
    let ip: IpAddr = arg(args, 0);
    let port: u16 = arg(args, 1);
    let count: u32 = arg(args, 2);
    let timeout = Duration::from_millis(arg(args, 3));
    let any: IpAddr = match ip {
        IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let sock = UdpSocket::bind((any, 0)).expect("bind");
    sock.connect((ip, port)).expect("connect");
    sock.set_read_timeout(Some(timeout)).expect("timeout");
    println!("ready");
    let (mut replies, mut refused) = (0, 0);
    for seq in 0..count {
        let _ = sock.send(&seq.to_be_bytes());
        let mut buf = [0u8; 64];
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match sock.recv(&mut buf) {
                Ok(n) if n >= 4 && buf[..4] == seq.to_be_bytes() => {
                    replies += 1;
                    break;
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    refused += 1;
                    break;
                }
                Err(_) => break,
            }
        }
    }
    println!("replies {replies} refused {refused}");
    0
}

/// `tcp-session IP PORT ROUNDS INTERVAL_MS`: one connection, a line echoed every INTERVAL_MS;
/// prints `round K` after each echo, then `done N`, or `broken K` at the first round that fails.
fn tcp_session(args: &[String]) -> i32 {
    let ip: Ipv4Addr = arg(args, 0);
    let port: u16 = arg(args, 1);
    let rounds: u32 = arg(args, 2);
    let interval = Duration::from_millis(arg(args, 3));
    println!("ready");
    let mut s = match TcpStream::connect_timeout(&SocketAddr::from((ip, port)), Duration::from_secs(2)) {
        Ok(s) => s,
        Err(e) => {
            println!("broken 0 {e}");
            return 0;
        }
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(1500)));
    let mut out = std::io::stdout().lock();
    for k in 1..=rounds {
        let line = format!("round {k:06}\n");
        let mut buf = vec![0u8; line.len()];
        let ok = s
            .write_all(line.as_bytes())
            .and_then(|_| s.read_exact(&mut buf))
            .is_ok()
            && buf == line.as_bytes();
        if !ok {
            let _ = writeln!(out, "broken {k}");
            let _ = out.flush();
            return 0;
        }
        let _ = writeln!(out, "round {k}");
        let _ = out.flush();
        std::thread::sleep(interval);
    }
    let _ = writeln!(out, "done {rounds}");
    0
}

/// `syn-flood IFACE SRC_MAC DST_MAC SRC_IP DST_IP COUNT`: COUNT TCP SYNs written raw on IFACE,
/// each of another flow (source ports 1024-65023 times destination ports 1-...); prints `sent N`.
fn syn_flood(args: &[String]) -> i32 {
    use pnet::datalink::{self, Channel};
    let iface: String = arg(args, 0);
    let src_mac: pnet::util::MacAddr = arg(args, 1);
    let dst_mac: pnet::util::MacAddr = arg(args, 2);
    let src: Ipv4Addr = arg(args, 3);
    let dst: Ipv4Addr = arg(args, 4);
    let count: u32 = arg(args, 5);
    let Some(nic) = datalink::interfaces().into_iter().find(|i| i.name == iface) else {
        println!("no interface {iface}");
        return 1;
    };
    let Ok(Channel::Ethernet(mut tx, _rx)) = datalink::channel(&nic, Default::default()) else {
        println!("no channel on {iface}");
        return 1;
    };
    println!("ready");
    let mut frame = [0u8; 54];
    frame[..6].copy_from_slice(&dst_mac.octets());
    frame[6..12].copy_from_slice(&src_mac.octets());
    frame[12..14].copy_from_slice(&[0x08, 0x00]);
    frame[14..34].copy_from_slice(&[0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    frame[26..30].copy_from_slice(&src.octets());
    frame[30..34].copy_from_slice(&dst.octets());
    let mut ip_sum = 0u32;
    for c in frame[14..34].chunks(2) {
        ip_sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    while ip_sum >> 16 != 0 {
        ip_sum = (ip_sum & 0xffff) + (ip_sum >> 16);
    }
    frame[24..26].copy_from_slice(&(!(ip_sum as u16)).to_be_bytes());
    frame[46] = 0x50;
    frame[47] = 0x02; // SYN
    frame[48..50].copy_from_slice(&1024u16.to_be_bytes());
    let mut sent = 0;
    for n in 0..count {
        let sport = 1024 + (n % 64000) as u16;
        let dport = 1 + (n / 64000) as u16;
        frame[34..36].copy_from_slice(&sport.to_be_bytes());
        frame[36..38].copy_from_slice(&dport.to_be_bytes());
        // The TCP checksum is left 0: the far side drops these, the firewall does not check.
        if let Some(Ok(())) = tx.send_to(&frame, None) {
            sent += 1;
        }
    }
    println!("sent {sent}");
    0
}
