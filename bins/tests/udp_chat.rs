//! Chat over UDP in the same room as TCP members: `switchboard-server
//! --handler chat --udp`.

use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use switchboard_test_support::child::Spawned;
use switchboard_test_support::{ChatClient, TIMEOUT};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard-server");

fn spawn(args: &[&str]) -> (Spawned, SocketAddr, SocketAddr) {
    let mut cmd = Command::new(BIN);
    cmd.args(["--listen", "127.0.0.1:0", "--handler", "chat", "--udp"]).args(args).stdin(Stdio::null());
    let mut proc = Spawned::spawn(&mut cmd);
    let tcp = proc.listening_addr();
    let line = proc.next_line(TIMEOUT).expect("a second line");
    let udp = line.strip_prefix("listening on udp ").expect("listening on udp").trim().parse().unwrap();
    (proc, tcp, udp)
}

/// A UDP chat member: a datagram out per call, datagrams in as text.
struct UdpMember {
    s: UdpSocket,
    server: SocketAddr,
}

impl UdpMember {
    fn new(server: SocketAddr) -> UdpMember {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        UdpMember { s, server }
    }

    fn send(&self, text: &str) {
        self.s.send_to(text.as_bytes(), self.server).unwrap();
    }

    /// The next datagram (`recvfrom(1024)` would cut none: they are at
    /// most 1,200 bytes and the test reads up to 2,048 to check that).
    fn datagram(&self) -> String {
        let mut buf = [0u8; 2048];
        let (n, from) = self.s.recv_from(&mut buf).unwrap();
        assert_eq!(from, self.server);
        assert!(n <= 1200, "a chat datagram is at most 1,200 bytes, not {n}");
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    fn expect(&self, want: &str) {
        assert_eq!(self.datagram(), want);
    }
}

#[test]
fn a_udp_member_and_a_tcp_member_exchange_lines_and_private_messages() {
    let (_proc, tcp, udp) = spawn(&[]);
    let (mut alice, nick) = ChatClient::join(tcp);
    assert_eq!(nick, "guest-1");
    let bob = UdpMember::new(udp);
    // The first datagram joins; its line is then handled.
    bob.send("/nick bob");
    bob.expect("* welcome guest-2\n");
    bob.expect("* you are now bob\n");
    alice.expect("* guest-2 joined");
    alice.expect("* guest-2 is now bob");
    bob.send("hello from udp");
    alice.expect("<bob> hello from udp");
    alice.send("hi bob");
    bob.expect("<guest-1> hi bob\n");
    bob.send("/msg guest-1 just for you");
    alice.expect("*bob* just for you");
    alice.send("/msg BOB secret");
    bob.expect("*guest-1* secret\n");
    // Several lines in one datagram, CRLF or LF; control characters cleaned.
    bob.send("one\r\ntwo\x1b[31m\n");
    alice.expect("<bob> one");
    alice.expect("<bob> two\u{fffd}[31m");
    bob.send("/who");
    bob.expect("* online: bob, guest-1\n");
    // A line longer than a datagram comes in pieces of at most 1,200 bytes.
    let long = "x".repeat(3000);
    alice.send(&long);
    let want = format!("<guest-1> {long}\n");
    let mut got = String::new();
    while got.len() < want.len() {
        got.push_str(&bob.datagram());
    }
    assert_eq!(got, want);
    // /help comes as datagrams of whole lines.
    bob.send("/help");
    let help = bob.datagram();
    assert!(
        help.starts_with("* /nick NAME")
            && help.ends_with("* /quit            leave (or send exactly: quit)\n")
    );
    bob.send("quit");
    bob.expect("* bye\n");
    alice.expect("* bob left");
}

#[test]
fn an_idle_udp_member_is_announced_as_left_after_udp_idle() {
    let (_proc, tcp, udp) = spawn(&["--udp-idle", "1s", "--chat-who-addresses"]);
    let (mut alice, _) = ChatClient::join(tcp);
    let alice_addr = alice.stream().local_addr().unwrap();
    let carol = UdpMember::new(udp);
    let joined = Instant::now();
    carol.send("/nick carol");
    carol.expect("* welcome guest-2\n");
    carol.expect("* you are now carol\n");
    // With --chat-who-addresses, a UDP member is listed with its own address.
    carol.send("/who");
    carol.expect(&format!("* online: carol ({}), guest-1 ({alice_addr})\n", carol.s.local_addr().unwrap()));
    alice.expect("* guest-2 joined");
    alice.expect("* guest-2 is now carol");
    alice.expect("* carol left");
    let after = joined.elapsed();
    assert!(after >= Duration::from_secs(1), "left after {after:?}, before --udp-idle");
    alice.send("/who");
    alice.expect(&format!("* online: guest-1 ({alice_addr})"));
    // Her next datagram joins her again, as a new guest.
    carol.send("back");
    carol.expect("* welcome guest-3\n");
    alice.expect("* guest-3 joined");
    alice.expect("<guest-3> back");
}

#[test]
fn udp_members_hear_the_server_shutting_down() {
    let (mut proc, _tcp, udp) = spawn(&["--grace", "5s"]);
    let dave = UdpMember::new(udp);
    dave.send("");
    dave.expect("* welcome guest-1\n");
    proc.signal(rustix::process::Signal::TERM);
    dave.expect("* server shutting down\n");
    assert!(proc.wait(TIMEOUT).success());
}
