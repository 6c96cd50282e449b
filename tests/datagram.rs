//! The datagram side of the core: a `DatagramHandler` on a UDP socket, its
//! peer table, limits, counters, reply path and shared shutdown.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use switchboard::datagram::{
    DatagramHandler, DatagramSendError, DatagramServer, PeerClose, Reply, MAX_UDP_PAYLOAD,
};
use switchboard::{handler_fn, Flow, Framing, Phase, Server};
use switchboard_test_support::{wait_until, TIMEOUT};

/// Echoes each datagram; `close` sends nothing back, `bye` asks to be
/// forgotten; records every close; says goodbye on drain.
#[derive(Default)]
struct Echo {
    closed: Mutex<Vec<(SocketAddr, PeerClose, u64)>>,
}

impl DatagramHandler for Echo {
    /// Datagrams seen from the peer.
    type Peer = u64;

    fn open(&self, _out: &mut Reply<'_>) -> u64 {
        0
    }

    fn datagram(&self, seen: &mut u64, data: &[u8], out: &mut Reply<'_>) -> Flow {
        *seen += 1;
        if data == b"bye" {
            return Flow::Close;
        }
        if data == b"too big" {
            let big = vec![0u8; out.sender().max_datagram() + 1];
            let err = out.send(&big).unwrap_err();
            let _ = out.send(err.to_string().as_bytes());
            return Flow::Continue;
        }
        out.send(data).unwrap();
        Flow::Continue
    }

    fn drain(&self, _: &mut u64, out: &mut Reply<'_>) {
        let _ = out.send(b"goodbye");
    }

    fn close(&self, seen: u64, addr: SocketAddr, reason: PeerClose) {
        self.closed.lock().push((addr, reason, seen));
    }
}

fn client() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s
}

/// The tutorial client: `sendto(msg, addr)`, then `recvfrom(1024)`.
fn ask(s: &UdpSocket, to: SocketAddr, msg: &[u8]) -> Vec<u8> {
    s.send_to(msg, to).unwrap();
    let mut buf = [0u8; 1024];
    let (n, from) = s.recv_from(&mut buf).unwrap();
    assert_eq!(from, to, "the reply comes from the server's address");
    buf[..n].to_vec()
}

#[test]
fn echo_counts_and_peers() {
    let handler = Arc::new(Echo::default());
    let server = DatagramServer::builder().start("127.0.0.1:0", Arc::clone(&handler)).unwrap();
    let addr = server.local_addr();
    let a = client();
    let b = client();
    assert_eq!(ask(&a, addr, b"hello server."), b"hello server.");
    assert_eq!(ask(&b, addr, b"x"), b"x");
    assert_eq!(ask(&a, addr, b""), b"", "an empty datagram is a datagram");
    // A reply is counted once `sendmmsg` returns, which may be after the
    // peer has it.
    wait_until("3 replies counted", || server.stats().datagrams_out == 3);
    let s = server.stats();
    assert_eq!((s.datagrams_in, s.datagrams_out), (3, 3));
    assert_eq!((s.bytes_in, s.bytes_out), (14, 14));
    assert_eq!((s.peers, s.peers_opened, s.oversize), (2, 2, 0));
    // The reply path from another thread, to a peer that asked nothing.
    let sender = server.sender();
    let to = b.local_addr().unwrap();
    std::thread::spawn(move || sender.send_to(to, b"from elsewhere")).join().unwrap().unwrap();
    let mut buf = [0u8; 1024];
    let (n, _) = b.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"from elsewhere");
    // A reply over the limit is refused, not truncated.
    let expect = DatagramSendError::TooLarge { len: MAX_UDP_PAYLOAD + 1, max: MAX_UDP_PAYLOAD }.to_string();
    assert_eq!(ask(&a, addr, b"too big"), expect.as_bytes());
    // Flow::Close forgets the peer; its next datagram opens it anew.
    a.send_to(b"bye", addr).unwrap();
    wait_until("the peer closed", || handler.closed.lock().len() == 1);
    assert_eq!(
        handler.closed.lock()[0],
        (a.local_addr().unwrap(), PeerClose::Handler, 4),
        "hello, the empty one, too big, bye"
    );
    assert_eq!(ask(&a, addr, b"again"), b"again");
    assert_eq!(server.stats().peers_opened, 3);
    drop(server);
}

#[test]
fn the_largest_ipv4_payload_is_echoed_and_a_larger_one_counted_as_oversize() {
    let server = DatagramServer::builder().start("127.0.0.1:0", Echo::default()).unwrap();
    let addr = server.local_addr();
    let c = client();
    let big: Vec<u8> = (0..MAX_UDP_PAYLOAD).map(|i| (i % 251) as u8).collect();
    c.send_to(&big, addr).unwrap();
    let mut buf = vec![0u8; 70_000];
    let (n, _) = c.recv_from(&mut buf).unwrap();
    assert_eq!(n, MAX_UDP_PAYLOAD);
    assert!(buf[..n] == big[..]);
    drop(server);

    // With a smaller limit, one byte over is dropped unseen and counted.
    let server = DatagramServer::builder().max_datagram(1000).start("127.0.0.1:0", Echo::default()).unwrap();
    let addr = server.local_addr();
    c.send_to(&[7u8; 1001], addr).unwrap();
    wait_until("the oversize datagram counted", || server.stats().oversize == 1);
    assert_eq!(
        ask(&c, addr, &[8u8; 1000]),
        vec![8u8; 1000],
        "the next reply is to the datagram in the limit"
    );
    let s = server.stats();
    assert_eq!((s.datagrams_in, s.peers_opened, s.bytes_in), (1, 1, 1000));
}

#[test]
fn a_full_peer_table_evicts_the_least_recently_heard_and_idle_peers_expire() {
    let handler = Arc::new(Echo::default());
    let server = DatagramServer::builder()
        .max_peers(2)
        // Long enough that b and c are still there when asked, however
        // busy the machine.
        .idle_timeout(Duration::from_secs(2))
        .start("127.0.0.1:0", Arc::clone(&handler))
        .unwrap();
    let addr = server.local_addr();
    let (a, b, c) = (client(), client(), client());
    assert_eq!(ask(&a, addr, b"a"), b"a");
    assert_eq!(ask(&b, addr, b"b"), b"b");
    assert_eq!(ask(&a, addr, b"a"), b"a", "a heard again: b is now the least recently heard");
    assert_eq!(ask(&c, addr, b"c"), b"c", "a new peer is answered when the table is full");
    let s = server.stats();
    assert_eq!((s.peers, s.evicted, s.peers_refused), (2, 1, 0));
    assert_eq!(handler.closed.lock().as_slice(), &[(b.local_addr().unwrap(), PeerClose::Evicted, 1)]);
    // Both left expire after the idle time.
    wait_until("both peers expired", || server.stats().expired == 2);
    let closed = handler.closed.lock().clone();
    assert_eq!(closed.len(), 3);
    assert!(closed[1..].iter().all(|&(_, reason, _)| reason == PeerClose::Idle), "{closed:?}");
    assert_eq!(server.stats().peers, 0);
}

/// One /24 holds at most its share of the table; a new address from it past
/// that is refused and counted, while another /24 still gets in.
#[test]
fn a_source_prefix_holds_at_most_its_share_of_the_table() {
    let server = DatagramServer::builder()
        .max_peers(100)
        .max_peers_per_prefix(2)
        .start("127.0.0.1:0", Echo::default())
        .unwrap();
    let addr = server.local_addr();
    let (a, b, c) = (client(), client(), client());
    assert_eq!(ask(&a, addr, b"a"), b"a");
    assert_eq!(ask(&b, addr, b"b"), b"b");
    c.send_to(b"c", addr).unwrap();
    wait_until("the third peer of 127.0.0.0/24 refused", || server.stats().peers_refused == 1);
    let other = UdpSocket::bind("127.0.1.1:0").unwrap();
    other.set_read_timeout(Some(TIMEOUT)).unwrap();
    assert_eq!(ask(&other, addr, b"d"), b"d", "127.0.1.0/24 is another prefix");
    assert_eq!(ask(&a, addr, b"a"), b"a", "peers already in are served");
    let s = server.stats();
    assert_eq!((s.peers, s.peers_refused, s.evicted), (3, 1, 0));
}

/// A spinning thread still serves every datagram in order, expires idle
/// peers on time (its poll without sleep must not skip the expiry tick) and
/// drains.
#[test]
fn a_spinning_server_serves_expires_and_drains() {
    let handler = Arc::new(Echo::default());
    let server = DatagramServer::builder()
        .spin(Duration::from_millis(10))
        .idle_timeout(Duration::from_millis(300))
        .start("127.0.0.1:0", Arc::clone(&handler))
        .unwrap();
    let addr = server.local_addr();
    let a = client();
    for i in 0..200u32 {
        let msg = i.to_be_bytes();
        assert_eq!(ask(&a, addr, &msg), msg);
    }
    wait_until("the peer expired", || server.stats().expired == 1);
    assert_eq!(handler.closed.lock().as_slice(), &[(a.local_addr().unwrap(), PeerClose::Idle, 200)]);
    let b = client();
    assert_eq!(ask(&b, addr, b"b"), b"b");
    server.shutdown_handle().drain();
    let mut buf = [0u8; 64];
    let (n, _) = b.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"goodbye");
    let report = server.wait();
    assert_eq!((report.drained, report.forced), (1, 0));
}

#[test]
fn bad_settings_are_errors() {
    for b in [
        DatagramServer::builder().max_peers(0),
        DatagramServer::builder().max_peers_per_prefix(0),
        DatagramServer::builder().max_peers(10).max_peers_per_prefix(11),
        DatagramServer::builder().max_datagram(MAX_UDP_PAYLOAD + 1),
        DatagramServer::builder().max_datagram(0),
        DatagramServer::builder().idle_timeout(Duration::ZERO),
        DatagramServer::builder().spin(Duration::from_millis(11)),
    ] {
        let err = b.start("127.0.0.1:0", Echo::default()).unwrap_err();
        assert!(err.to_string().starts_with("invalid configuration: "), "{err}");
    }
}

#[test]
fn one_shutdown_handle_drains_tcp_and_udp() {
    let tcp = Server::builder()
        .start(
            "127.0.0.1:0",
            handler_fn(Framing::Raw, |d, c| {
                c.send(d);
                Flow::Continue
            }),
        )
        .unwrap();
    let handler = Arc::new(Echo::default());
    let udp = DatagramServer::builder()
        .lifecycle(tcp.shutdown_handle())
        .start(tcp.local_addr(), Arc::clone(&handler))
        .unwrap();
    assert_eq!(udp.local_addr().port(), tcp.local_addr().port(), "the same port number");
    let c = client();
    assert_eq!(ask(&c, udp.local_addr(), b"hi"), b"hi");
    let sender = udp.sender();
    let handle = tcp.shutdown_handle();
    handle.drain();
    let mut buf = [0u8; 1024];
    let (n, _) = c.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"goodbye", "drain was called for the peer");
    let report = udp.wait();
    assert_eq!((report.drained, report.forced), (1, 0));
    tcp.wait();
    assert_eq!(handle.phase(), Phase::Stopped);
    assert_eq!(handler.closed.lock()[0].1, PeerClose::Drained);
    assert_eq!(sender.send_to(c.local_addr().unwrap(), b"late"), Err(DatagramSendError::Closed));
}

/// Beside a TCP server, the UDP side is a service: the TCP server's `wait`
/// joins its thread (every peer closed, the sender closed) before it
/// returns; with a lifecycle of its own it is drained then.
#[test]
fn the_udp_side_beside_a_tcp_server_is_joined_by_its_wait() {
    for shared in [true, false] {
        let mut tcp =
            Server::builder().start("127.0.0.1:0", handler_fn(Framing::Raw, |_, _| Flow::Continue)).unwrap();
        let handler = Arc::new(Echo::default());
        let builder = DatagramServer::builder();
        let builder = if shared { builder.lifecycle(tcp.shutdown_handle()) } else { builder };
        let udp = builder.start("127.0.0.1:0", Arc::clone(&handler)).unwrap();
        let (sender, udp_handle) = (udp.sender(), udp.shutdown_handle());
        let c = client();
        assert_eq!(ask(&c, udp.local_addr(), b"hi"), b"hi");
        tcp.beside(udp);
        tcp.shutdown_handle().drain();
        tcp.wait();
        // Joined: the peer was closed and the thread has ended.
        assert_eq!(handler.closed.lock().len(), 1, "shared: {shared}");
        assert_eq!(handler.closed.lock()[0].1, PeerClose::Drained, "shared: {shared}");
        assert_ne!(udp_handle.phase(), Phase::Running, "shared: {shared}");
        assert_eq!(sender.send_to(c.local_addr().unwrap(), b"late"), Err(DatagramSendError::Closed));
    }
}

/// A panicking callback closes its peer only.
#[test]
fn a_panic_closes_the_peer_only() {
    struct Boom;
    impl DatagramHandler for Boom {
        type Peer = ();
        fn open(&self, _: &mut Reply<'_>) {}
        fn datagram(&self, _: &mut (), data: &[u8], out: &mut Reply<'_>) -> Flow {
            assert_ne!(data, b"panic", "asked to panic");
            out.send(data).unwrap();
            Flow::Continue
        }
    }
    let server = DatagramServer::builder().start("127.0.0.1:0", Boom).unwrap();
    let addr = server.local_addr();
    let c = client();
    c.send_to(b"panic", addr).unwrap();
    wait_until("the panic counted", || server.stats().handler_panics == 1);
    assert_eq!(server.stats().peers, 0);
    assert_eq!(ask(&c, addr, b"ok"), b"ok");
}

/// The TCP side may stop before the datagram thread looks at the phase:
/// its peers are still drained after a drain, and forced after a force.
#[test]
fn a_tcp_server_that_stopped_first_leaves_the_udp_peers_drained_or_forced() {
    for force in [false, true] {
        let tcp =
            Server::builder().start("127.0.0.1:0", handler_fn(Framing::Raw, |_, _| Flow::Continue)).unwrap();
        let handler = Arc::new(Echo::default());
        let udp = DatagramServer::builder()
            .lifecycle(tcp.shutdown_handle())
            .start("127.0.0.1:0", Arc::clone(&handler))
            .unwrap();
        let c = client();
        assert_eq!(ask(&c, udp.local_addr(), b"hi"), b"hi");
        let handle = tcp.shutdown_handle();
        if force {
            handle.force();
        } else {
            handle.drain();
        }
        tcp.wait();
        let report = udp.wait();
        let want = if force { (0, 1, PeerClose::Forced) } else { (1, 0, PeerClose::Drained) };
        assert_eq!((report.drained, report.forced, handler.closed.lock()[0].1), want);
    }
}

/// A burst larger than one read pass (1,024 datagrams) queued while the
/// thread is busy is answered in full, without a further datagram to bring
/// a new readiness edge: the read loop comes back for what it left queued.
#[test]
fn a_burst_queued_while_busy_is_answered_in_full_without_a_further_datagram() {
    /// Echoes; the datagram `hold` blocks the thread until the test lets go.
    struct Held(Mutex<std::sync::mpsc::Receiver<()>>);
    impl DatagramHandler for Held {
        type Peer = ();
        fn open(&self, _: &mut Reply<'_>) {}
        fn datagram(&self, _: &mut (), data: &[u8], out: &mut Reply<'_>) -> Flow {
            if data == b"hold" {
                self.0.lock().recv_timeout(TIMEOUT).expect("the test lets go");
            }
            let _ = out.send(data);
            Flow::Continue
        }
    }
    const BURST: u32 = 3000;
    let (go, held) = std::sync::mpsc::channel();
    let server = DatagramServer::builder().start("127.0.0.1:0", Held(Mutex::new(held))).unwrap();
    let addr = server.local_addr();
    let c = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    // Room for every echo, so none is lost on this side.
    c.set_recv_buffer_size(4 << 20).unwrap();
    c.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into()).unwrap();
    let c: UdpSocket = c.into();
    c.set_read_timeout(Some(TIMEOUT)).unwrap();
    c.send_to(b"hold", addr).unwrap();
    wait_until("the thread holds", || server.stats().datagrams_in == 1);
    for i in 0..BURST {
        c.send_to(&i.to_be_bytes(), addr).unwrap();
    }
    go.send(()).unwrap();
    let mut seen = vec![false; BURST as usize];
    let mut buf = [0u8; 64];
    let (n, _) = c.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"hold");
    for _ in 0..BURST {
        let (n, _) = c.recv_from(&mut buf).expect("every datagram of the burst answered");
        let i = u32::from_be_bytes(buf[..n].try_into().unwrap());
        assert!(!std::mem::replace(&mut seen[i as usize], true), "datagram {i} answered twice");
    }
    let s = server.stats();
    assert_eq!((s.datagrams_in, s.oversize), (u64::from(BURST) + 1, 0));
}

/// 70,000 forged sources (more than the 65,536-peer table; each from its
/// own address, a socket that sends once and never reads) against the chat,
/// which keeps a peer per address: a new genuine peer is still answered
/// within a second, the least recently heard forged peers making room.
#[test]
fn seventy_thousand_forged_sources_do_not_lock_out_a_new_peer() {
    use switchboard_handlers::Chat;
    const FORGED: u32 = 70_000;
    const TABLE: u64 = 65_536;
    let server = DatagramServer::builder().start("127.0.0.1:0", Chat::default()).unwrap();
    let addr = server.local_addr();
    // In steps the server keeps up with (the socket's receive buffer holds
    // a few thousand), so every forged datagram is served.
    let mut sent = 0u32;
    while sent < FORGED {
        for _ in 0..2000.min(FORGED - sent) {
            // 127.1.0.1 on: 274 /24s, each within its share of the table.
            let ip = std::net::Ipv4Addr::from(0x7f01_0001 + sent);
            let s = UdpSocket::bind((ip, 0)).unwrap();
            // An empty datagram joins (no line to relay to the room).
            s.send_to(b"", addr).unwrap();
            sent += 1;
        }
        wait_until("the forged datagrams served", || server.stats().datagrams_in == u64::from(sent));
    }
    let s = server.stats();
    assert_eq!((s.peers as u64, s.peers_refused), (TABLE, 0));
    assert_eq!(s.evicted, u64::from(FORGED) - TABLE);
    let genuine = client();
    let at = std::time::Instant::now();
    genuine.send_to(b"hello", addr).unwrap();
    let mut buf = [0u8; 1024];
    let (n, _) = genuine.recv_from(&mut buf).unwrap();
    let took = at.elapsed();
    assert!(
        buf[..n].starts_with(b"* welcome guest-70001\n* cookie "),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    assert!(took < Duration::from_secs(1), "answered after {took:?}");
    assert_eq!(server.stats().evicted, u64::from(FORGED) - TABLE + 1);
}

/// Sends from other threads go to a bounded queue that the datagram thread
/// sends in its batches: while the thread is held, the queue takes
/// `MAX_QUEUED` datagrams and drops (and counts) the rest; once let go the
/// thread sends every one it took, the caller never having sent one itself.
#[test]
fn sends_from_other_threads_are_queued_bounded_and_sent_by_the_datagram_thread() {
    use switchboard::datagram::MAX_QUEUED;
    struct Held(Mutex<std::sync::mpsc::Receiver<()>>);
    impl DatagramHandler for Held {
        type Peer = ();
        fn open(&self, _: &mut Reply<'_>) {}
        fn datagram(&self, _: &mut (), _: &[u8], _: &mut Reply<'_>) -> Flow {
            self.0.lock().recv_timeout(TIMEOUT).expect("the test lets go");
            Flow::Continue
        }
    }
    let (go, held) = std::sync::mpsc::channel();
    let server = DatagramServer::builder().start("127.0.0.1:0", Held(Mutex::new(held))).unwrap();
    let c = client();
    c.send_to(b"hold", server.local_addr()).unwrap();
    wait_until("the thread holds", || server.stats().datagrams_in == 1);
    let to = c.local_addr().unwrap();
    let sender = server.sender();
    let extra = 1000;
    let results: Vec<_> = (0..MAX_QUEUED + extra).map(|_| sender.send_to(to, b"q")).collect();
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), MAX_QUEUED);
    assert!(results[MAX_QUEUED..].iter().all(|r| *r == Err(DatagramSendError::Dropped)));
    let s = server.stats();
    assert_eq!((s.send_dropped, s.datagrams_out), (extra as u64, 0), "nothing sent by the caller");
    go.send(()).unwrap();
    wait_until("every queued datagram sent", || server.stats().datagrams_out == MAX_QUEUED as u64);
    assert_eq!(server.stats().send_dropped, extra as u64);
}
