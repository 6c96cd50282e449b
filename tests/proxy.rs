//! The PROXY protocol (v1 and v2) in front of a handler: the client named
//! by the header is the connection's `peer_addr` from `open` on; bytes after
//! the header are the stream's; a missing, invalid, oversized or late
//! header closes the connection before the handler sees it; without
//! `proxy_protocol` a header is only data.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ppp::v2;
use switchboard::{Conn, Flow, Framing, Handler, Server, ServerBuilder};
use switchboard_test_support::{connect, start, wait_stats, TIMEOUT};

/// Says the peer's address on open, then echoes lines.
#[derive(Default, Clone)]
struct PeerEcho {
    opened: Arc<AtomicUsize>,
}

impl Handler for PeerEcho {
    type Session = ();
    fn framing(&self) -> Framing {
        Framing::lines(1024)
    }
    fn open(&self, conn: &mut Conn<'_>) {
        self.opened.fetch_add(1, Ordering::SeqCst);
        conn.send(format!("{}\n", conn.peer_addr()).as_bytes());
    }
    fn frame(&self, _: &mut (), line: &[u8], conn: &mut Conn<'_>) -> Flow {
        conn.send(line);
        conn.send(b"\n");
        Flow::Continue
    }
}

fn proxy_server(handler: PeerEcho) -> Server {
    start(ServerBuilder::default().workers(2).proxy_protocol(true), handler)
}

fn lines(s: TcpStream) -> BufReader<TcpStream> {
    BufReader::new(s)
}

fn line(r: &mut BufReader<TcpStream>) -> String {
    let mut l = String::new();
    r.read_line(&mut l).expect("a line");
    l
}

fn v2_header(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    v2::Builder::with_addresses(v2::Version::Two | v2::Command::Proxy, v2::Protocol::Stream, (src, dst))
        .build()
        .unwrap()
}

/// The connection is closed with nothing sent: EOF (or a reset).
fn assert_closed_silently(s: &mut TcpStream) {
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert!(got.is_empty(), "got {:?}", String::from_utf8_lossy(&got));
}

#[test]
fn a_v1_header_names_the_client_and_the_bytes_after_it_are_the_stream() {
    let server = proxy_server(PeerEcho::default());
    let mut s = connect(server.local_addr());
    // Header and first line in one write: the line must not be lost.
    s.write_all(b"PROXY TCP4 203.0.113.7 192.0.2.1 51234 7000\r\nhello\n").unwrap();
    let mut r = lines(s);
    assert_eq!(line(&mut r), "203.0.113.7:51234\n");
    assert_eq!(line(&mut r), "hello\n");
    r.get_mut().write_all(b"again\n").unwrap();
    assert_eq!(line(&mut r), "again\n");
}

#[test]
fn a_v2_header_names_an_ipv6_client_even_split_over_writes() {
    let server = proxy_server(PeerEcho::default());
    let header = v2_header("[2001:db8::5]:4000".parse().unwrap(), "[2001:db8::1]:7000".parse().unwrap());
    let mut s = connect(server.local_addr());
    for part in [&header[..3], &header[3..20], &header[20..]] {
        s.write_all(part).unwrap();
        s.flush().unwrap();
    }
    s.write_all(b"x\n").unwrap();
    let mut r = lines(s);
    assert_eq!(line(&mut r), "[2001:db8::5]:4000\n");
    assert_eq!(line(&mut r), "x\n");
}

#[test]
fn a_v2_local_header_keeps_the_socket_peer() {
    let server = proxy_server(PeerEcho::default());
    let local = v2::Builder::with_addresses(
        v2::Version::Two | v2::Command::Local,
        v2::Protocol::Unspecified,
        v2::Addresses::Unspecified,
    )
    .build()
    .unwrap();
    let mut s = connect(server.local_addr());
    let me = s.local_addr().unwrap();
    s.write_all(&local).unwrap();
    let mut r = lines(s);
    assert_eq!(line(&mut r), format!("{me}\n"));
}

#[test]
fn no_header_an_invalid_or_an_oversized_one_closes_before_open() {
    let handler = PeerEcho::default();
    let opened = Arc::clone(&handler.opened);
    let server = proxy_server(handler);
    let mut oversized = b"\r\n\r\n\0\r\nQUIT\n\x21\x11".to_vec();
    oversized.extend_from_slice(&u16::MAX.to_be_bytes());
    oversized.resize(8192, 0);
    let inputs: [&[u8]; 4] =
        [b"hello\n", b"PROXY TCP4 1.2.3.4 nonsense\r\n", b"PROXY TCP4 1.2.3.4\r\nhi\n", &oversized];
    for (i, input) in inputs.into_iter().enumerate() {
        let mut s = connect(server.local_addr());
        let _ = s.write_all(input);
        assert_closed_silently(&mut s);
        wait_stats(&server, "the connection closed", |st| st.closed == i as u64 + 1);
    }
    assert_eq!(opened.load(Ordering::SeqCst), 0, "the handler never opened");
}

#[test]
fn a_header_that_does_not_come_is_cut_at_the_handshake_timeout() {
    let handler = PeerEcho::default();
    let opened = Arc::clone(&handler.opened);
    let timeout = Duration::from_millis(400);
    let server =
        start(ServerBuilder::default().workers(1).proxy_protocol(true).handshake_timeout(timeout), handler);
    let mut s = connect(server.local_addr());
    let started = Instant::now();
    s.write_all(b"PROXY TCP4 ").unwrap();
    assert_closed_silently(&mut s);
    let waited = started.elapsed();
    assert!(waited >= timeout && waited < TIMEOUT, "closed after {waited:?}");
    assert_eq!(opened.load(Ordering::SeqCst), 0);
}

#[test]
fn without_proxy_protocol_a_forged_header_is_data() {
    let server = start(ServerBuilder::default().workers(1), PeerEcho::default());
    let mut s = connect(server.local_addr());
    let me = s.local_addr().unwrap();
    s.write_all(b"PROXY TCP4 203.0.113.7 192.0.2.1 51234 7000\r\n").unwrap();
    let mut r = lines(s);
    assert_eq!(line(&mut r), format!("{me}\n"));
    assert_eq!(line(&mut r), "PROXY TCP4 203.0.113.7 192.0.2.1 51234 7000\n");
}

#[test]
fn a_v2_tlv_that_runs_past_the_header_closes_before_open() {
    let handler = PeerEcho::default();
    let opened = Arc::clone(&handler.opened);
    let server = proxy_server(handler);
    let (src, dst) = ("198.51.100.9:40000".parse().unwrap(), "127.0.0.1:7000".parse().unwrap());
    let with_tlv =
        v2::Builder::with_addresses(v2::Version::Two | v2::Command::Proxy, v2::Protocol::Stream, (src, dst))
            .write_tlv(0x04, b"noop")
            .unwrap()
            .build()
            .unwrap();
    // A well-formed TLV is taken.
    let mut s = connect(server.local_addr());
    s.write_all(&with_tlv).unwrap();
    let mut r = lines(s);
    assert_eq!(line(&mut r), "198.51.100.9:40000\n");
    // The TLV's length says 300 bytes where the header holds 4: the bytes
    // after the header (the stream's) must not be read as the TLV's.
    let mut forged = with_tlv.clone();
    let at = forged.len() - 6;
    forged[at..at + 2].copy_from_slice(&300u16.to_be_bytes());
    forged.extend_from_slice(&[b'x'; 300]);
    let mut s = connect(server.local_addr());
    s.write_all(&forged).unwrap();
    assert_closed_silently(&mut s);
    wait_stats(&server, "the forged header's connection closed", |st| st.closed == 1);
    assert_eq!(opened.load(Ordering::SeqCst), 1, "the handler opened only the good one");
}

#[test]
fn an_ipv4_mapped_client_is_named_as_ipv4() {
    let server = proxy_server(PeerEcho::default());
    let mut s = connect(server.local_addr());
    s.write_all(b"PROXY TCP6 ::ffff:203.0.113.7 ::ffff:192.0.2.1 51234 7000\r\n").unwrap();
    let mut r = lines(s);
    assert_eq!(line(&mut r), "203.0.113.7:51234\n");
    let header = v2_header("[::ffff:198.51.100.9]:4000".parse().unwrap(), "[::1]:7000".parse().unwrap());
    let mut s = connect(server.local_addr());
    s.write_all(&header).unwrap();
    let mut r = lines(s);
    assert_eq!(line(&mut r), "198.51.100.9:4000\n");
}
