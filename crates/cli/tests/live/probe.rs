//! Traffic probes, run inside a namespace by re-executing the test binary as
//! `live probe KIND ARGS...`. Each prints `ready` once it can take traffic,
//! then its findings, one per line, on stdout.

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
