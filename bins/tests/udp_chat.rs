//! Chat over UDP in the same room as TCP members: `switchboard-server
//! --handler chat --udp`.

use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use switchboard_handlers::chat::cookie_in;
use switchboard_test_support::child::Spawned;
use switchboard_test_support::{http, ChatClient, TIMEOUT};

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

    /// Joins with an empty datagram, checks the welcome (`* welcome NICK`
    /// and `* cookie HEX` in one datagram) and sends the cookie back, which
    /// proves this address receives: from then on it hears the room.
    fn join(&self, nick: &str) {
        self.send("");
        let welcome = self.datagram();
        let cookie = cookie_in(welcome.as_bytes()).unwrap_or_else(|| panic!("no cookie in {welcome:?}"));
        assert_eq!(welcome, format!("* welcome {nick}\n* cookie {cookie}\n"));
        self.send(&format!("/cookie {cookie}"));
        self.expect("* cookie accepted: you hear the room\n");
    }
}

#[test]
fn a_udp_member_and_a_tcp_member_exchange_lines_and_private_messages() {
    let (_proc, tcp, udp) = spawn(&[]);
    let (mut alice, nick) = ChatClient::join(tcp);
    assert_eq!(nick, "guest-1");
    let bob = UdpMember::new(udp);
    bob.join("guest-2");
    bob.send("/nick bob");
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
    // /help comes as datagrams of whole lines, and lists /cookie, which
    // only UDP members have (and not the accounts, which need TCP).
    bob.send("/help");
    let help = bob.datagram();
    let lines: Vec<&str> = help.lines().collect();
    assert_eq!(lines.len(), 6, "{help:?}");
    assert!(lines[0].starts_with("* /nick NAME"), "{help:?}");
    assert_eq!(lines[4], "* /quit            leave (or send exactly: quit)");
    assert_eq!(lines[5], "* /cookie HEX      prove you receive at your address, to hear the room");
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
    carol.join("guest-2");
    carol.send("/nick carol");
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
    // Her next datagram joins her again, as a new guest (her line is
    // heard; she hears nothing until she proves her address anew).
    carol.send("back");
    assert!(carol.datagram().starts_with("* welcome guest-3\n* cookie "));
    alice.expect("* guest-3 joined");
    alice.expect("<guest-3> back");
}

#[test]
fn udp_members_hear_the_server_shutting_down() {
    let (mut proc, _tcp, udp) = spawn(&["--grace", "5s"]);
    let dave = UdpMember::new(udp);
    dave.join("guest-1");
    proc.signal(rustix::process::Signal::TERM);
    dave.expect("* server shutting down\n");
    assert!(proc.wait(TIMEOUT).success());
}

/// A socket bound to `ip` (another 127.x.y.z: a "forged" source) that the
/// attack sends from and that never reads from the protocol's point of
/// view: it never sends a cookie back. What the server sends it is counted.
struct Victim(UdpSocket);

impl Victim {
    fn new(ip: &str) -> Victim {
        Victim(UdpSocket::bind((ip, 0)).unwrap())
    }

    /// Every datagram queued at the victim now (non-blocking reads).
    fn received(&self) -> Vec<Vec<u8>> {
        self.0.set_nonblocking(true).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        // Bounded: the socket's receive buffer holds a few thousand at most.
        for _ in 0..100_000 {
            match self.0.recv_from(&mut buf) {
                Ok((n, _)) => got.push(buf[..n].to_vec()),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return got,
                Err(e) => panic!("victim recv: {e}"),
            }
        }
        panic!("more than 100,000 datagrams at the victim");
    }
}

/// The next line of `c` that starts with `prefix` (others skipped: joins,
/// the forged members' lines), within 100,000 lines.
fn line_starting(c: &mut ChatClient, prefix: &str) -> String {
    for _ in 0..100_000 {
        let line = c.line();
        if line.starts_with(prefix) {
            return line;
        }
    }
    panic!("no line starting {prefix:?} in 100,000");
}

/// Bytes on the wire of datagrams over IPv4: payload + 20 + 8.
fn wire(datagrams: &[Vec<u8>]) -> usize {
    datagrams.iter().map(|d| d.len() + 28).sum()
}

#[test]
fn a_forged_join_gets_one_small_datagram_and_none_of_the_room() {
    let (_proc, tcp, udp) = spawn(&[]);
    let (mut alice, _) = ChatClient::join(tcp);
    let bob = UdpMember::new(udp);
    bob.join("guest-2");
    alice.expect("* guest-2 joined");
    // One forged 1-byte datagram (29 bytes on the wire) from 127.0.0.77.
    let victim = Victim::new("127.0.0.77");
    victim.0.send_to(b"x", udp).unwrap();
    alice.expect("* guest-3 joined");
    alice.expect("<guest-3> x");
    bob.expect("* guest-3 joined\n");
    bob.expect("<guest-3> x\n");
    // Room traffic: what used to go to the victim as well.
    for i in 0..100 {
        alice.send(&format!("line {i} {}", "y".repeat(200)));
    }
    alice.send("end");
    for i in 0..100 {
        assert!(bob.datagram().starts_with(&format!("<guest-1> line {i} ")));
    }
    bob.expect("<guest-1> end\n");
    // Whatever the room sent the victim went before "end" went to bob.
    let got = victim.received();
    assert_eq!(got.len(), 1, "one datagram in total: {got:?}");
    let welcome = String::from_utf8(got[0].clone()).unwrap();
    assert!(welcome.starts_with("* welcome guest-3\n* cookie "), "{welcome:?}");
    assert!(wire(&got) <= 3 * 29, "{} bytes on the wire for 29", wire(&got));
}

#[test]
fn who_200_times_from_a_forged_address_gets_at_most_three_times_its_bytes() {
    let (_proc, tcp, udp) = spawn(&[]);
    let (_alice, _) = ChatClient::join(tcp);
    let bob = UdpMember::new(udp);
    bob.join("guest-2");
    let victim = Victim::new("127.0.0.78");
    let attack = "/who\n".repeat(200);
    victim.0.send_to(attack.as_bytes(), udp).unwrap();
    // bob's datagram is served after the attack's, its reply sent after
    // the attack's replies.
    bob.send("/who");
    // The join the attack caused reaches bob before his own reply.
    bob.expect("* guest-3 joined\n");
    bob.expect("* online: guest-1, guest-2, guest-3\n");
    let got = victim.received();
    let sent = attack.len() + 28;
    assert!(wire(&got) <= 3 * sent, "{} bytes on the wire for {sent}", wire(&got));
    // Bounded, not silenced: the welcome, then as many answers as fit.
    let text: String = got.iter().map(|d| String::from_utf8_lossy(d).into_owned()).collect();
    assert!(text.starts_with("* welcome guest-3\n* cookie "), "{text:?}");
    let answers = text.matches("* online: guest-1, guest-2, guest-3\n").count();
    assert!((1..200).contains(&answers), "{answers} answers of 200");
}

/// The median time of 100 lines from `alice` (guest-1) to `bob` over TCP;
/// `after` runs after each line has reached bob (outside the timing).
fn tcp_line_p50(alice: &mut ChatClient, bob: &mut ChatClient, mut after: impl FnMut(&str)) -> Duration {
    let mut took = Vec::new();
    for i in 0..100 {
        let line = format!("ping {i}");
        let at = Instant::now();
        alice.send(&line);
        line_starting(bob, &format!("<guest-1> {line}"));
        took.push(at.elapsed());
        after(&line);
    }
    took.sort();
    took[took.len() / 2]
}

#[test]
fn a_thousand_forged_joins_leave_tcp_members_lines_fast() {
    assert!(switchboard_test_support::raise_fd_limit() >= 1100, "the test needs 1,000 sockets");
    let (_proc, tcp, udp) = spawn(&[]);
    let (mut alice, _) = ChatClient::join(tcp);
    let (mut bob, _) = ChatClient::join(tcp);
    alice.expect("* guest-2 joined");
    let victims: Vec<Victim> =
        (0..1000).map(|i| Victim::new(&format!("127.0.{}.{}", 10 + i / 200, 1 + i % 200))).collect();
    for v in &victims {
        v.0.send_to(b"hi", udp).unwrap();
    }
    // Every forged member is in the room (a datagram lost on the way is
    // sent again, as the attacker would).
    let deadline = Instant::now() + TIMEOUT;
    loop {
        bob.send("/who");
        let who = line_starting(&mut bob, "* online: ");
        if who.matches(", ").count() + 1 == 1002 {
            break;
        }
        assert!(Instant::now() < deadline, "the room never held 1,002 members: {who}");
        for v in &victims {
            v.0.send_to(b"hi", udp).unwrap();
        }
    }
    let p50 = tcp_line_p50(&mut alice, &mut bob, |_| {});
    assert!(p50 < Duration::from_millis(10), "p50 {p50:?} with 1,000 forged members");
    // None of those lines went to the forged addresses.
    for v in &victims {
        let got = v.received();
        assert!(got.iter().all(|d| d.starts_with(b"* welcome ")), "{got:?}");
    }
}

#[test]
fn switchboard_client_udp_proves_its_address_and_hears_the_room_a_tutorial_client_does_not() {
    let (_proc, tcp, udp) = spawn(&[]);
    let (mut alice, _) = ChatClient::join(tcp);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchboard-client"));
    cmd.args(["--udp", &udp.to_string(), "--linger", "200ms"]).stdin(Stdio::piped());
    let mut client = Spawned::spawn(&mut cmd);
    client.stdin().write_all(b"hello\n").unwrap();
    client.stdin().flush().unwrap();
    assert_eq!(client.next_line(TIMEOUT).as_deref(), Some("* welcome guest-2\n"));
    assert!(client.next_line(TIMEOUT).unwrap().starts_with("* cookie "));
    assert_eq!(client.next_line(TIMEOUT).as_deref(), Some("* cookie accepted: you hear the room\n"));
    alice.expect("* guest-2 joined");
    alice.expect("<guest-2> hello");
    // The tutorial chat client: a line out, one answer read, never a cookie.
    let carol = UdpMember::new(udp);
    carol.send("hello");
    assert!(carol.datagram().starts_with("* welcome guest-3\n* cookie "));
    alice.expect("* guest-3 joined");
    alice.expect("<guest-3> hello");
    assert_eq!(client.next_line(TIMEOUT).as_deref(), Some("* guest-3 joined\n"));
    assert_eq!(client.next_line(TIMEOUT).as_deref(), Some("<guest-3> hello\n"));
    alice.send("hi all");
    assert_eq!(client.next_line(TIMEOUT).as_deref(), Some("<guest-1> hi all\n"));
    // carol heard nothing of the room: her next datagram is her answer.
    carol.send("/who");
    carol.expect("* online: guest-1, guest-2, guest-3\n");
    client.close_stdin();
    assert!(client.wait(TIMEOUT).success());
}

#[test]
fn the_tutorial_python_chat_client_sends_a_line_and_reads_the_answer() {
    let (_proc, _tcp, udp) = spawn(&[]);
    let script = format!(
        "import socket\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.settimeout(30)\n\
         addr = ('{}', {})\n\
         for msg in [b'hello', b'/who']:\n\
         \x20   s.sendto(msg, addr)\n\
         \x20   data, _ = s.recvfrom(1024)\n\
         \x20   print(data.decode().splitlines()[0])\n\
         s.close()\n",
        udp.ip(),
        udp.port()
    );
    let out = switchboard_test_support::child::run(Command::new("python3").args(["-c", &script]), TIMEOUT);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "* welcome guest-1\n* online: guest-1\n");
}

/// The UDP figures on the admin endpoint: Prometheus and JSON (which the
/// status page shows), after a forged `/who` flood and a proven member.
#[test]
fn the_admin_endpoint_counts_udp_limited_replies_and_proven_peers() {
    let (mut proc, _tcp, udp) = spawn(&["--admin", "127.0.0.1:0"]);
    let line = proc.line_where(TIMEOUT, |l| l.starts_with("admin on "));
    let admin: SocketAddr =
        line.trim().trim_start_matches("admin on http://").trim_end_matches('/').parse().unwrap();
    let bob = UdpMember::new(udp);
    bob.join("guest-1");
    let victim = Victim::new("127.0.0.79");
    victim.0.send_to("/who\n".repeat(200).as_bytes(), udp).unwrap();
    bob.send("/who");
    bob.expect("* guest-2 joined\n");
    bob.expect("* online: guest-1, guest-2\n");
    let answered = victim.received().iter().filter(|d| d.starts_with(b"* online: ")).count();
    let metric = |body: &str, name: &str| -> u64 {
        let line =
            body.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("no {name}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let body = http::get(admin, "/metrics").body;
    assert_eq!(metric(&body, "switchboard_udp_limited_total"), 200 - answered as u64, "{body}");
    assert_eq!(metric(&body, "switchboard_udp_proven_total"), 1);
    assert_eq!(metric(&body, "switchboard_udp_peers"), 2);
    assert_eq!(metric(&body, "switchboard_udp_peers_opened_total"), 2);
    assert_eq!(metric(&body, "switchboard_udp_datagrams_in_total"), 4, "bob's three, the victim's one");
    let json: serde_json::Value = serde_json::from_str(&http::get(admin, "/stats.json").body).unwrap();
    assert_eq!(json["extra"]["switchboard_udp_limited_total"], 200 - answered as u64);
}

/// 1,000 proven UDP members hear every TCP line, and the TCP members' line
/// latency stays low: the worker relaying a line queues it to the UDP
/// thread (sent there in batches) instead of a `sendto` per member.
#[test]
fn a_thousand_proven_udp_members_hear_every_line_and_tcp_lines_stay_fast() {
    assert!(switchboard_test_support::raise_fd_limit() >= 1100, "the test needs 1,000 sockets");
    let (_proc, tcp, udp) = spawn(&[]);
    let (mut alice, _) = ChatClient::join(tcp);
    let (mut bob, _) = ChatClient::join(tcp);
    alice.expect("* guest-2 joined");
    let members: Vec<UdpMember> = (0..1000)
        .map(|i| {
            let m = UdpMember::new(udp);
            // Room for 200 joins and 100 lines, read at the end.
            rustix::net::sockopt::set_socket_recv_buffer_size(&m.s, 1 << 20).unwrap();
            m.join(&format!("guest-{}", i + 3));
            m
        })
        .collect();
    let p50 = tcp_line_p50(&mut alice, &mut bob, |line| {
        // Every member hears it (before the next line: UDP drops what a
        // sender outruns, counted, and this test is about delivery).
        let want = format!("<guest-1> {line}\n");
        for (k, m) in members.iter().enumerate() {
            // Joins of later members may come first (up to 200).
            let heard = (0..300).map(|_| m.datagram()).find(|d| d.starts_with("<guest-1> "));
            assert_eq!(heard.as_deref(), Some(want.as_str()), "member {k}");
        }
    });
    assert!(p50 < Duration::from_millis(10), "p50 {p50:?} with 1,000 UDP members");
}
