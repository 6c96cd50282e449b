//! Limits: frame maximum, idle timeout, slow senders, the connection limit,
//! backpressure and slow consumers.

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use switchboard::{
    handler_fn, CloseReason, Conn, ConnHandle, Flow, Framing, Handler, Server, SlowConsumerPolicy,
};
use switchboard_handlers::Echo;
use switchboard_test_support::*;

#[test]
fn frame_maximum_answers_an_error_and_skips_the_frame() {
    let server = start(Server::builder().workers(1), LineEcho { max: 16 });
    let s = connect(server.local_addr());
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    w.write_all(b"short\n").unwrap();
    assert_eq!(read_line(&mut r), "short\n");
    // A line far over the maximum, sent in pieces: one error, nothing echoed.
    let long = vec![b'a'; 1 << 20];
    w.write_all(&long).unwrap();
    w.write_all(b"\nafter\n").unwrap();
    assert_eq!(read_line(&mut r), "! frame longer than the 16-byte maximum\n");
    assert_eq!(read_line(&mut r), "after\n");
    let stats = server.stats();
    assert_eq!(stats.frame_errors, 1);
    assert_eq!(stats.frames, 2);
}

#[test]
fn frame_error_closes_by_default() {
    let handler = handler_fn(Framing::lines(8), |line, conn| {
        conn.send(line);
        Flow::Continue
    });
    let server = start(Server::builder().workers(1), handler);
    let mut s = connect(server.local_addr());
    s.write_all(b"0123456789abcdef\n").unwrap();
    assert_eq!(read_end(&mut s), End::Eof);
    assert_eq!(server.stats().frame_errors, 1);
}

#[test]
fn idle_connections_time_out() {
    let idle = Duration::from_millis(300);
    let server = start(Server::builder().workers(1).idle_timeout(idle), Echo);
    let mut active = connect(server.local_addr());
    // Taken before the quiet one connects: the server opens it later.
    let before_connect = Instant::now();
    let mut quiet = connect(server.local_addr());
    let watcher = std::thread::spawn(move || (read_end(&mut quiet), before_connect.elapsed()));
    // The active one keeps talking until the quiet one is closed, and stays open.
    let deadline = Instant::now() + TIMEOUT;
    while !watcher.is_finished() {
        assert!(Instant::now() < deadline, "the quiet connection was never closed: {}", server.stats());
        assert_eq!(round_trip(&mut active, b"ping"), b"ping");
        std::thread::sleep(idle / 6);
    }
    let (end, lived) = watcher.join().unwrap();
    assert!(matches!(end, End::Eof | End::Reset), "{end:?}");
    assert!(lived >= idle, "the quiet connection lived {lived:?}, under the {idle:?} timeout");
    assert_eq!(round_trip(&mut active, b"still here"), b"still here");
    let stats = wait_stats(&server, "the quiet connection is counted closed", |s| s.closed == 1);
    assert_eq!((stats.timed_out, stats.open), (1, 1), "{stats}");
}

#[test]
fn slowloris_peer_is_cut_off() {
    let server = start(
        Server::builder()
            .workers(1)
            .idle_timeout(Duration::from_secs(30))
            .frame_timeout(Duration::from_millis(400)),
        LineEcho { max: 4096 },
    );
    let mut s = connect(server.local_addr());
    let started = Instant::now();
    // One byte every 20 ms, never a newline: never idle, never a frame.
    let mut cut = false;
    for _ in 0..500 {
        if s.write_all(b"x").is_err() {
            cut = true;
            break;
        }
        if server.stats().timed_out == 1 {
            cut = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(cut, "the trickling peer was never cut off");
    assert!(started.elapsed() >= Duration::from_millis(400));
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert!(matches!(read_end(&mut s), End::Eof | End::Reset));
    let stats = wait_stats(&server, "the trickling peer is counted closed", |s| s.closed == 1);
    assert_eq!((stats.timed_out, stats.open), (1, 0), "{stats}");
}

#[test]
fn server_busy_at_max_connections() {
    let server = start(Server::builder().workers(2).max_connections(2), Echo);
    let addr = server.local_addr();
    let mut a = connect(addr);
    let mut b = connect(addr);
    wait_stats(&server, "two connections open", |s| s.accepted == 2 && s.open == 2);
    let mut c = connect(addr);
    let mut reply = String::new();
    c.read_to_string(&mut reply).unwrap();
    assert_eq!(reply, "! server busy\n");
    let stats = wait_stats(&server, "the third is rejected", |s| s.rejected == 1);
    assert_eq!((stats.accepted, stats.open), (2, 2), "{stats}");
    // The two admitted ones are served; once one leaves, a new one gets in.
    assert_eq!(round_trip(&mut a, b"a"), b"a");
    assert_eq!(round_trip(&mut b, b"b"), b"b");
    drop(a);
    wait_stats(&server, "one connection closed", |s| s.closed == 1 && s.open == 1);
    let mut d = connect(addr);
    assert_eq!(round_trip(&mut d, b"d"), b"d");
}

#[test]
fn backpressure_stops_reading_from_a_peer_that_does_not_read() {
    let high_water = 64 << 10;
    let read_buffer = 16 << 10;
    let server = start(
        Server::builder().workers(1).high_water(high_water).max_outbound(1 << 20).read_buffer(read_buffer),
        Echo,
    );
    let mut s = connect(server.local_addr());
    s.set_nonblocking(true).unwrap();
    // Push until the kernel buffers on both sides are full and the server
    // has stopped reading; bounded at 256 MiB.
    let chunk = vec![7u8; 64 << 10];
    let mut sent = 0usize;
    let mut stalled_since: Option<Instant> = None;
    while sent < 256 << 20 {
        match s.write(&chunk) {
            Ok(n) => {
                sent += n;
                stalled_since = None;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let t = *stalled_since.get_or_insert_with(Instant::now);
                if t.elapsed() > Duration::from_millis(500) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("write failed: {e}"),
        }
    }
    assert!(sent < 256 << 20, "the server never stopped reading");
    let stats = server.stats();
    // What the server holds for this peer is what it read and did not write.
    let held = stats.bytes_in - stats.bytes_out;
    assert!(
        held <= (high_water + 2 * read_buffer) as u64,
        "server holds {held} bytes for a peer that does not read"
    );
    // Once the peer reads, everything comes back.
    s.set_nonblocking(false).unwrap();
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    while got < sent {
        got += s.read(&mut buf).unwrap();
        if got >= sent.saturating_sub(1) {
            break;
        }
    }
    assert!(got >= sent.saturating_sub(1));
}

/// Sends every frame to every connection (itself included) through handles.
struct Broadcast {
    members: Arc<Mutex<Vec<ConnHandle>>>,
}

impl Handler for Broadcast {
    type Session = ();
    fn framing(&self) -> Framing {
        Framing::lines(64 << 10)
    }
    fn open(&self, conn: &mut Conn<'_>) {
        self.members.lock().push(conn.handle());
    }
    fn frame(&self, _: &mut (), line: &[u8], _conn: &mut Conn<'_>) -> Flow {
        let mut msg = line.to_vec();
        msg.push(b'\n');
        let msg = switchboard::Message::from(msg);
        let members: Vec<ConnHandle> = self.members.lock().clone();
        for m in members {
            let _ = m.send(msg.clone());
        }
        Flow::Continue
    }
    fn close(&self, _: (), reason: &CloseReason) {
        let _ = reason;
        self.members.lock().retain(|h| !h.is_closed());
    }
}

#[test]
fn slow_consumer_is_cut_off_while_a_fast_one_keeps_going() {
    let members = Arc::new(Mutex::new(Vec::new()));
    let server = start(
        Server::builder().workers(1).max_outbound(256 << 10).slow_consumer(SlowConsumerPolicy::Disconnect),
        Broadcast { members: Arc::clone(&members) },
    );
    let addr = server.local_addr();
    // The slow one connects first and never reads; a small receive buffer
    // makes the kernel absorb little of its backlog.
    let slow = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    slow.set_recv_buffer_size(4096).unwrap();
    slow.connect(&addr.into()).unwrap();
    let mut slow: TcpStream = slow.into();
    let fast = connect(addr);
    wait_until("both are members", || members.lock().len() == 2);
    let mut r = BufReader::new(fast.try_clone().unwrap());
    let mut w = fast;
    let line = format!("{}\n", "m".repeat(1023));
    let rounds = 20_000; // 20 MiB through the fast client, far past every buffer
    let started = Instant::now();
    let mut cut_at = None;
    for i in 0..rounds {
        w.write_all(line.as_bytes()).unwrap();
        assert_eq!(read_line(&mut r), line, "round {i}");
        if cut_at.is_none() && server.stats().slow_consumer_disconnects == 1 {
            cut_at = Some(i);
        }
    }
    let elapsed = started.elapsed();
    let cut_at = cut_at.expect("the slow consumer was never cut off");
    eprintln!(
        "fast client: {rounds} round trips in {:.2}s, slow one cut off at round {cut_at}",
        elapsed.as_secs_f64()
    );
    assert!(cut_at < rounds / 2);
    // The slow one gets what was queued before the cut, then the end.
    slow.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut sink = Vec::new();
    let _ = slow.read_to_end(&mut sink);
    assert!(sink.len() < 16 << 20);
    assert_eq!(members.lock().len(), 1);
    assert_eq!(server.stats().slow_consumer_disconnects, 1);
}

#[test]
fn drop_policy_drops_messages_and_keeps_the_connection() {
    let members = Arc::new(Mutex::new(Vec::new()));
    let server = start(
        Server::builder()
            .workers(1)
            .max_outbound(64 << 10)
            .high_water(32 << 10)
            .slow_consumer(SlowConsumerPolicy::DropMessage),
        Broadcast { members: Arc::clone(&members) },
    );
    let addr = server.local_addr();
    let slow = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    slow.set_recv_buffer_size(4096).unwrap();
    slow.connect(&addr.into()).unwrap();
    let slow: TcpStream = slow.into();
    let fast = connect(addr);
    wait_until("both are members", || members.lock().len() == 2);
    let mut r = BufReader::new(fast.try_clone().unwrap());
    let mut w = fast;
    let line = format!("{}\n", "d".repeat(1023));
    for _ in 0..20_000 {
        w.write_all(line.as_bytes()).unwrap();
        assert_eq!(read_line(&mut r), line);
        if server.stats().messages_dropped > 0 {
            break;
        }
    }
    assert!(server.stats().messages_dropped > 0);
    assert_eq!(server.stats().slow_consumer_disconnects, 0);
    assert_eq!(members.lock().len(), 2);
    assert!(!members.lock().iter().any(|h| h.is_closed()));
    drop(slow);
}

#[test]
fn frame_timeout_spares_a_peer_whose_frames_keep_completing() {
    let frame_timeout = Duration::from_millis(200);
    let server = start(Server::builder().workers(1).frame_timeout(frame_timeout), LineEcho { max: 4096 });
    let s = connect(server.local_addr());
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    // Every write ends in the middle of a line, for five frame timeouts.
    let started = Instant::now();
    let mut i = 0;
    w.write_all(b"l0-").unwrap();
    while started.elapsed() < frame_timeout * 5 {
        w.write_all(format!("end\nl{}-", i + 1).as_bytes()).unwrap();
        assert_eq!(read_line(&mut r), format!("l{i}-end\n"));
        i += 1;
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(server.stats().timed_out, 0);
}
