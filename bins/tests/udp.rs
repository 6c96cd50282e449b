//! `switchboard-server --udp`: echo and upper over UDP on the same port
//! number, answered the way the socket tutorials' clients expect
//! (`sendto`, then `recvfrom(1024)`).

use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::Duration;

use rustix::process::Signal;
use switchboard_test_support::child::{run, Spawned};
use switchboard_test_support::{raise_fd_limit, TIMEOUT};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard-server");

/// A running server and its two addresses.
struct Running {
    proc: Spawned,
    tcp: SocketAddr,
    udp: SocketAddr,
}

fn spawn(args: &[&str]) -> Running {
    let mut cmd = Command::new(BIN);
    cmd.args(["--listen", "127.0.0.1:0", "--udp"]).args(args).stdin(Stdio::null());
    let mut proc = Spawned::spawn(&mut cmd);
    let tcp = proc.listening_addr();
    let line = proc.next_line(TIMEOUT).expect("a second line");
    let udp = line
        .strip_prefix("listening on udp ")
        .unwrap_or_else(|| panic!("second line {line:?}"))
        .trim()
        .parse()
        .unwrap();
    Running { proc, tcp, udp }
}

fn client() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s
}

/// The tutorial client, transcribed: `s.sendto(msg, addr)`, then
/// `data, addr = s.recvfrom(1024)`.
fn sendto_recvfrom(s: &UdpSocket, to: SocketAddr, msg: &[u8]) -> Vec<u8> {
    s.send_to(msg, to).unwrap();
    let mut buf = [0u8; 1024];
    let (n, from) = s.recv_from(&mut buf).unwrap();
    assert_eq!(from, to);
    buf[..n].to_vec()
}

#[test]
fn udp_echo_answers_the_tutorial_python_client_on_the_tcp_port_number() {
    let server = spawn(&[]);
    assert_eq!(server.udp, server.tcp, "the same address and port number over UDP");
    // The tutorial's UDP echo client, as written there.
    let script = format!(
        "import socket\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.settimeout(30)\n\
         s.sendto(b'hello server.', ('{}', {}))\n\
         data, addr = s.recvfrom(1024)\n\
         print(data)\n\
         s.close()\n",
        server.udp.ip(),
        server.udp.port()
    );
    let out = run(Command::new("python3").args(["-c", &script]), TIMEOUT);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "b'hello server.'\n");
}

#[test]
fn udp_upper_follows_the_unicode_rules_of_tcp() {
    let server = spawn(&["--handler", "upper"]);
    let s = client();
    assert_eq!(sendto_recvfrom(&s, server.udp, "straße".as_bytes()), b"STRASSE");
    assert_eq!(sendto_recvfrom(&s, server.udp, b"hello server."), b"HELLO SERVER.");
    // Invalid UTF-8 and a cut character pass through, as over TCP.
    assert_eq!(sendto_recvfrom(&s, server.udp, b"a\xffb\xc3"), b"A\xffB\xc3");
    // Never longer than the datagram: `ΐ` (2 bytes) is `Ϊ́` (6) in upper
    // case, cut at the last whole character within 2 bytes.
    assert_eq!(sendto_recvfrom(&s, server.udp, "ΐ".as_bytes()), "Ι".as_bytes());
    assert_eq!(sendto_recvfrom(&s, server.udp, "xΐ".as_bytes()), "XΙ".as_bytes());
}

#[test]
fn a_thousand_udp_peers_at_once_are_all_answered() {
    assert!(raise_fd_limit() >= 1100, "the test needs 1,000 sockets");
    let server = spawn(&[]);
    let peers: Vec<UdpSocket> = (0..1000).map(|_| client()).collect();
    for (i, s) in peers.iter().enumerate() {
        s.send_to(format!("peer {i}").as_bytes(), server.udp).unwrap();
    }
    // UDP may lose a datagram under a burst (a full receive buffer on
    // either side): a peer not answered within 500 ms asks again, as a
    // UDP client must, at most 20 times.
    let mut resent = 0;
    for (i, s) in peers.iter().enumerate() {
        s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        let want = format!("peer {i}");
        let mut buf = [0u8; 1024];
        let mut tries = 0;
        let got = loop {
            match s.recv_from(&mut buf) {
                Ok((n, _)) => break buf[..n].to_vec(),
                Err(e) if tries < 20 => {
                    assert!(matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ));
                    tries += 1;
                    resent += 1;
                    s.send_to(want.as_bytes(), server.udp).unwrap();
                }
                Err(e) => panic!("peer {i} never answered: {e}"),
            }
        };
        assert_eq!(got, want.as_bytes(), "peer {i}");
    }
    eprintln!("1000 peers answered; {resent} datagrams sent again");
}

#[test]
fn the_largest_ipv4_udp_payload_is_echoed_whole() {
    let server = spawn(&[]);
    let s = client();
    let big: Vec<u8> = (0..65_507u32).map(|i| (i % 253) as u8).collect();
    s.send_to(&big, server.udp).unwrap();
    let mut buf = vec![0u8; 65_536];
    let (n, _) = s.recv_from(&mut buf).unwrap();
    assert_eq!(n, 65_507);
    assert!(buf[..n] == big[..]);
    // A tutorial client reading with recvfrom(1024) gets the first 1,024
    // bytes (the system drops the rest of that datagram).
    s.send_to(&big, server.udp).unwrap();
    let mut small = [0u8; 1024];
    let (n, _) = s.recv_from(&mut small).unwrap();
    assert_eq!(&small[..n], &big[..1024]);
}

#[test]
fn sigterm_drains_the_udp_side_too() {
    // Chat keeps its peers (echo keeps none): the one here is drained.
    let mut server = spawn(&["--grace", "5s", "--handler", "chat"]);
    let s = client();
    assert!(sendto_recvfrom(&s, server.udp, b"").starts_with(b"* welcome guest-1\n"));
    server.proc.signal(Signal::TERM);
    let status = server.proc.wait(TIMEOUT);
    assert!(status.success(), "{status}");
    let err = server.proc.stderr_so_far();
    assert!(err.contains("udp shutdown complete: 1 peers drained, 0 forced"), "{err}");
    assert!(err.contains("shutdown complete: 0 drained, 0 forced"), "{err}");
}

#[test]
fn udp_with_the_file_handler_is_refused() {
    let out = run(
        Command::new(BIN).args(["--listen", "127.0.0.1:0", "--udp", "--handler", "file", "--root", "/tmp"]),
        TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--udp applies to --handler echo, upper or chat, not file"), "{err}");
}

#[test]
fn switchboard_client_udp_sends_a_datagram_per_line() {
    let server = spawn(&["--handler", "upper"]);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchboard-client"));
    cmd.args(["--udp", &server.udp.to_string(), "--linger", "200ms"]).stdin(Stdio::piped());
    let mut client = Spawned::spawn(&mut cmd);
    client.stdin().write_all("hello\r\nstraße\n".as_bytes()).unwrap();
    client.stdin().flush().unwrap();
    // One reply datagram per line, printed with a newline added.
    assert_eq!(client.next_line(TIMEOUT).as_deref(), Some("HELLO\n"));
    assert_eq!(client.next_line(TIMEOUT).as_deref(), Some("STRASSE\n"));
    client.stdin().write_all(b"esc \x1b[2J\n").unwrap();
    client.stdin().flush().unwrap();
    assert_eq!(client.next_line(TIMEOUT).as_deref(), Some("ESC \\u{1b}[2J\n"), "control characters escaped");
    client.close_stdin();
    let status = client.wait(TIMEOUT);
    assert!(status.success(), "{status}: {}", client.stderr_so_far());
}

#[test]
fn a_udp_port_taken_by_another_socket_is_one_clear_error() {
    // A UDP port taken by this test whose TCP port number is free (other
    // tests' connections use TCP ports of the same range: try again then).
    let (_taken, addr) = (0..32)
        .find_map(|_| {
            let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
            let addr = taken.local_addr().unwrap();
            std::net::TcpListener::bind(addr).ok().map(|_| (taken, addr.to_string()))
        })
        .expect("a port number free for TCP in 32 tries");
    let out = run(Command::new(BIN).args(["--listen", &addr, "--udp"]), TIMEOUT);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("cannot listen on udp {addr}: Address already in use")), "{err}");
}
