//! The handler API's control of a connection: pauses from any callback,
//! deferred replies in request order, timeouts that never lose a promised
//! reply, timers, refusing in `open`, the server-wide outbound budget, and
//! the socket-free harness.

use std::io::{BufReader, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;
use switchboard::{
    handler_fn, CloseReason, Conn, ConnHandle, Flow, Framing, Handler, Harness, Held, SendError, Server,
};
use switchboard_test_support::*;

/// Echoes lines; pauses reading from `open`, `drain` or `eof` as told.
struct PauseIn {
    open: Option<Duration>,
    drain: Option<Duration>,
    eof: Option<Duration>,
    /// Told when `drain` ran.
    drained: Option<Sender<()>>,
}

impl Handler for PauseIn {
    type Session = ();
    fn framing(&self) -> Framing {
        Framing::lines(64)
    }
    fn open(&self, conn: &mut Conn<'_>) {
        if let Some(d) = self.open {
            conn.pause_reading(d);
        }
    }
    fn frame(&self, _: &mut (), line: &[u8], conn: &mut Conn<'_>) -> Flow {
        conn.send(line);
        conn.send(b"\n");
        Flow::Continue
    }
    fn drain(&self, _: &mut (), conn: &mut Conn<'_>) -> Flow {
        if let Some(d) = self.drain {
            conn.pause_reading(d);
        }
        if let Some(tx) = &self.drained {
            let _ = tx.send(());
        }
        Flow::Continue
    }
    fn eof(&self, _: &mut (), conn: &mut Conn<'_>) {
        if let Some(d) = self.eof {
            conn.pause_reading(d);
        }
        conn.send(b"bye\n");
    }
}

#[test]
fn pause_reading_from_open_resumes_when_the_pause_ends() {
    let pause = Duration::from_millis(200);
    let handler = PauseIn { open: Some(pause), drain: None, eof: None, drained: None };
    let server = start(Server::builder().workers(1).idle_timeout(Duration::from_secs(120)), handler);
    let started = Instant::now();
    let mut s = connect(server.local_addr());
    s.write_all(b"a\n").unwrap();
    // Before the fix the pause never ended: the read timed out.
    assert_eq!(read_exact(&mut s, 2), b"a\n");
    assert!(started.elapsed() >= pause, "answered after {:?}, inside the pause", started.elapsed());
}

#[test]
fn pause_reading_from_drain_resumes_and_the_frames_are_served() {
    let pause = Duration::from_millis(200);
    let (drained, drain_seen) = crossbeam_channel::unbounded();
    let handler = PauseIn { open: None, drain: Some(pause), eof: None, drained: Some(drained) };
    let server = start(Server::builder().workers(1).quiet_period(Duration::from_secs(2)), handler);
    let mut s = connect(server.local_addr());
    assert_eq!(round_trip(&mut s, b"x\n"), b"x\n");
    let shutdown = server.shutdown_handle();
    let drained = Instant::now();
    shutdown.drain();
    drain_seen.recv_timeout(TIMEOUT).expect("the handler is told of the drain");
    s.write_all(b"y\n").unwrap();
    assert_eq!(read_exact(&mut s, 2), b"y\n");
    assert!(drained.elapsed() >= pause, "answered {:?} after the drain, inside the pause", drained.elapsed());
    assert_eq!(read_end(&mut s), End::Eof);
    let report = server.wait();
    assert_eq!((report.drained, report.forced), (1, 0));
}

#[test]
fn pause_reading_from_eof_does_not_hold_the_close() {
    // A pause far longer than the client's read timeout: the close must
    // not wait for it.
    let handler = PauseIn { open: None, drain: None, eof: Some(Duration::from_secs(600)), drained: None };
    let server = start(Server::builder().workers(1), handler);
    let mut s = connect(server.local_addr());
    s.write_all(b"a\n").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut got = String::new();
    s.read_to_string(&mut got).expect("EOF before the read timeout");
    assert_eq!(got, "a\nbye\n");
}

/// `slow` lines are answered from another thread once the test says so;
/// other lines at once.
struct SlowFirst {
    go: Receiver<()>,
}

impl Handler for SlowFirst {
    type Session = ();
    fn framing(&self) -> Framing {
        Framing::lines(64)
    }
    fn open(&self, _: &mut Conn<'_>) {}
    fn frame(&self, _: &mut (), line: &[u8], conn: &mut Conn<'_>) -> Flow {
        if line == b"slow" {
            let reply = conn.defer();
            let go = self.go.clone();
            std::thread::spawn(move || {
                let _ = go.recv();
                let _ = reply.send("slow done\n");
            });
        } else {
            conn.send(line);
            conn.send(b"\n");
        }
        Flow::Continue
    }
}

#[test]
fn a_slow_deferred_request_and_fast_ones_after_it_reply_in_request_order() {
    let (go_tx, go) = crossbeam_channel::unbounded();
    let server = start(Server::builder().workers(1), SlowFirst { go });
    let mut s = connect(server.local_addr());
    s.write_all(b"fast0\nslow\nfast1\nfast2\nslow\nfast3\n").unwrap();
    assert_eq!(read_exact(&mut s, 6), b"fast0\n");
    // Pipelined: every frame is taken at once, both slow ones in progress
    // together; the fast replies after a slow one wait for it.
    wait_until("all six frames are taken", || server.stats().frames == 6);
    go_tx.send(()).unwrap();
    go_tx.send(()).unwrap();
    let want = "slow done\nfast1\nfast2\nslow done\nfast3\n";
    assert_eq!(String::from_utf8(read_exact(&mut s, want.len())).unwrap(), want);
    assert_eq!(server.stats().frames, 6);
}

/// Arms timer 1 at open (after `after`), which sends `tick` and reports;
/// records every close reason.
struct Ticker {
    after: Duration,
    fired: Sender<u64>,
    closed: Arc<Mutex<Vec<String>>>,
}

impl Handler for Ticker {
    type Session = u64;
    fn framing(&self) -> Framing {
        Framing::lines(64)
    }
    fn open(&self, conn: &mut Conn<'_>) -> u64 {
        assert!(conn.set_timer(1, self.after));
        conn.id()
    }
    fn frame(&self, _: &mut u64, line: &[u8], conn: &mut Conn<'_>) -> Flow {
        // "later N": move timer 1 to N ms from now.
        let ms: u64 = std::str::from_utf8(line).unwrap().trim_start_matches("later ").parse().unwrap();
        assert!(conn.set_timer(1, Duration::from_millis(ms)));
        Flow::Continue
    }
    fn timer(&self, id: &mut u64, timer: u64, conn: &mut Conn<'_>) -> Flow {
        conn.send(format!("tick {timer}\n").as_bytes());
        let _ = self.fired.send(*id);
        Flow::Continue
    }
    fn close(&self, _: u64, reason: &CloseReason) {
        self.closed.lock().push(format!("{reason:?}"));
    }
}

#[test]
fn a_timer_fires_and_a_closed_connections_timer_never_does() {
    let (fired, fired_rx) = crossbeam_channel::unbounded();
    let closed = Arc::new(Mutex::new(Vec::new()));
    let handler = Ticker { after: Duration::from_millis(300), fired, closed: Arc::clone(&closed) };
    let server = start(Server::builder().workers(1), handler);
    // A: closes before its timer is due.
    let a = connect(server.local_addr());
    // B: its timer moved later than A's, so it fires after A's would have.
    let mut b = connect(server.local_addr());
    b.write_all(b"later 600\n").unwrap();
    wait_until("B's frame is taken", || server.stats().frames == 1);
    drop(a);
    wait_until("A is closed", || closed.lock().len() == 1);
    let mut r = BufReader::new(b.try_clone().unwrap());
    assert_eq!(read_line(&mut r), "tick 1\n");
    let b_id = fired_rx.recv_timeout(TIMEOUT).unwrap();
    // Timers fire in deadline order on one worker: A's, had it survived
    // its close, would have come first.
    assert!(fired_rx.try_recv().is_err());
    assert_eq!(b_id, 2, "only B's timer fired");
    assert_eq!(closed.lock()[0], "PeerClosed");
}

#[test]
fn open_refuses_with_a_reason_and_close_says_handler() {
    let closed = Arc::new(Mutex::new(Vec::new()));
    struct Refuse(Arc<Mutex<Vec<String>>>);
    impl Handler for Refuse {
        type Session = ();
        fn open(&self, conn: &mut Conn<'_>) {
            conn.send(b"! not today\n");
            conn.close();
        }
        fn frame(&self, _: &mut (), _: &[u8], _: &mut Conn<'_>) -> Flow {
            panic!("a refused connection gets no frames");
        }
        fn close(&self, _: (), reason: &CloseReason) {
            self.0.lock().push(format!("{reason:?}"));
        }
    }
    let server = start(Server::builder().workers(1), Refuse(Arc::clone(&closed)));
    let mut s = connect(server.local_addr());
    s.write_all(b"hello\n").unwrap();
    assert_eq!(read_exact(&mut s, 12), b"! not today\n");
    assert_eq!(read_end(&mut s), End::Eof);
    wait_until("the connection is closed", || server.stats().open == 0);
    assert_eq!(*closed.lock(), ["Handler"]);
    assert_eq!(server.stats().frames, 0);
}

#[test]
fn the_server_wide_budget_cuts_the_largest_queues_and_spares_the_small() {
    // Four peers that never read and one that does; one budget of 256 KiB
    // for the whole server, as large as each connection's own.
    const TOTAL: usize = 256 << 10;
    let handles: Arc<Mutex<Vec<ConnHandle>>> = Arc::default();
    struct Keep(Arc<Mutex<Vec<ConnHandle>>>);
    impl Handler for Keep {
        type Session = ();
        fn open(&self, conn: &mut Conn<'_>) {
            self.0.lock().push(conn.handle());
        }
        fn frame(&self, _: &mut (), _: &[u8], _: &mut Conn<'_>) -> Flow {
            Flow::Continue
        }
    }
    let builder = Server::builder().workers(1).max_outbound(TOTAL).max_outbound_total(TOTAL);
    let server = start(builder, Keep(Arc::clone(&handles)));
    let mut peers = Vec::new();
    for i in 0..4 {
        peers.push(small_window_client(server.local_addr()));
        wait_until("the peer is open", || handles.lock().len() == i + 1);
    }
    let mut control = connect(server.local_addr());
    wait_until("the control client is open", || handles.lock().len() == 5);
    let h = handles.lock().clone();
    let chunk = vec![b'x'; 8 << 10];
    let mut refused = None;
    'rounds: for _ in 0..10_000 {
        for (i, peer) in h[..4].iter().enumerate() {
            if let Err(e) = peer.send(chunk.clone()) {
                refused = Some((i, e, peer.queued(), server.stats().queued_bytes));
                break 'rounds;
            }
        }
        // The worker takes mail in order: once the marker is read back,
        // every chunk before it is in its connection's queue.
        h[4].send(&b"m"[..]).unwrap();
        assert_eq!(read_exact(&mut control, 1), b"m");
    }
    let (_, err, queued, total) = refused.expect("the budget refuses at last");
    assert_eq!(err, SendError::Disconnected, "the largest queue is cut as a slow consumer");
    assert!(queued < TOTAL, "refused at {queued} B, below its own budget: the server-wide rule cut it");
    assert!(total <= TOTAL + 4 * chunk.len(), "queued {total} B over a {TOTAL}-byte budget");
    wait_until("one peer is cut", || server.stats().slow_consumer_disconnects == 1);
    // The reader, far below its fair share, is still served.
    h[4].send(&b"still here"[..]).unwrap();
    assert_eq!(read_exact(&mut control, 10), b"still here");
    drop(peers);
}

#[test]
fn the_harness_drives_a_handler_without_sockets_in_request_order() {
    let (go_tx, go) = crossbeam_channel::unbounded();
    let mut h = Harness::new(SlowFirst { go });
    assert_eq!(h.input(b"fast0\nslow\nfast1\n"), Flow::Continue);
    assert_eq!(h.output(), b"fast0\n");
    go_tx.send(()).unwrap();
    assert!(h.wait_deferred(TIMEOUT));
    assert_eq!(h.output(), b"slow done\nfast1\n");
    h.eof();
    assert_eq!(format!("{:?}", h.close(CloseReason::Drained)), "PeerClosed");

    let (fired, _rx) = crossbeam_channel::unbounded();
    let mut t = Harness::new(Ticker { after: Duration::from_secs(5), fired, closed: Arc::default() });
    assert_eq!(t.timers().len(), 1);
    assert_eq!(t.fire_timer(1), Some(Flow::Continue));
    assert_eq!(t.output(), b"tick 1\n");
    assert_eq!(t.fire_timer(1), None, "a timer fires once");

    let limited = handler_fn(Framing::lines(4), |line, conn| {
        conn.send(line);
        Flow::Continue
    });
    let mut l = Harness::new(limited);
    assert_eq!(l.input(b"toolong\n"), Flow::Close, "the default frame_error closes");
    assert!(matches!(l.closing(), Some(CloseReason::BadFrame(_))));
}

#[test]
fn has_deferred_holds_until_the_deferred_replies_have_reached_the_queue() {
    // Each line: promise a reply, send it at once from "another thread"
    // (here: before returning), and report what has_deferred says.
    let handler = handler_fn(Framing::lines(16), |line, conn| {
        if line == b"defer" {
            let reply = conn.defer();
            reply.send(&b"deferred\n"[..]).unwrap();
            drop(reply);
        }
        let state = format!("outstanding={}\n", conn.has_deferred());
        conn.send(state.as_bytes());
        Flow::Continue
    });
    let mut h = Harness::new(handler);
    h.input(b"plain\n");
    assert_eq!(h.output(), b"outstanding=false\n");
    // The deferred reply is on its way, not in the queue, and has_deferred
    // says so; a reply sent now waits behind it, in request order.
    h.input(b"defer\n");
    assert!(h.wait_deferred(TIMEOUT));
    assert_eq!(h.output(), b"deferred\noutstanding=true\n");
    h.input(b"plain\n");
    assert_eq!(h.output(), b"outstanding=false\n");
}

/// Every line is a job done on another thread in `work` and answered in
/// upper case through a deferred reply; `pause` pauses reading for `pause`
/// and is answered at once. Close reasons are sent to `closed`.
struct Jobs {
    work: Duration,
    pause: Duration,
    closed: Sender<String>,
}

impl Handler for Jobs {
    type Session = ();
    fn framing(&self) -> Framing {
        Framing::lines(64)
    }
    fn open(&self, _: &mut Conn<'_>) {}
    fn frame(&self, _: &mut (), line: &[u8], conn: &mut Conn<'_>) -> Flow {
        if line == b"pause" {
            conn.pause_reading(self.pause);
            conn.send(b"paused\n");
            return Flow::Continue;
        }
        let reply = conn.defer();
        let (work, mut answer) = (self.work, line.to_ascii_uppercase());
        answer.push(b'\n');
        std::thread::spawn(move || {
            // The job: a fixed time of work, as a database query would take.
            std::thread::sleep(work);
            let _ = reply.send(answer);
        });
        Flow::Continue
    }
    fn close(&self, _: (), reason: &CloseReason) {
        let _ = self.closed.send(format!("{reason:?}"));
    }
}

fn jobs(builder: switchboard::ServerBuilder, work: Duration, pause: Duration) -> (Server, Receiver<String>) {
    let (closed, closed_rx) = crossbeam_channel::unbounded();
    (start(builder.workers(1), Jobs { work, pause, closed }), closed_rx)
}

#[test]
fn pipelined_frames_behind_a_job_longer_than_the_frame_timeout_are_all_answered() {
    // The reproduction: a 1 s frame timeout, 1.5 s jobs, three requests in
    // one write. The two frames held behind the first job are complete: the
    // frame timeout used to count them as a slow sender's partial frame and
    // close the connection with zero bytes sent, the job's reply lost.
    let builder =
        Server::builder().frame_timeout(Duration::from_secs(1)).idle_timeout(Duration::from_secs(60));
    let (server, closed) = jobs(builder, Duration::from_millis(1500), Duration::ZERO);
    let mut s = connect(server.local_addr());
    s.write_all(b"a\nb\nc\n").unwrap();
    assert_eq!(read_exact(&mut s, 6), b"A\nB\nC\n");
    s.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_end(&mut s), End::Eof);
    assert_eq!(closed.recv_timeout(TIMEOUT).unwrap(), "PeerClosed");
    let stats = server.stats();
    assert_eq!((stats.timed_out, stats.frames), (0, 3), "{stats}");
}

#[test]
fn the_idle_timeout_waits_for_an_outstanding_deferred_reply() {
    // The peer sends one request and waits: the server, not the peer, is
    // busy for twice the idle timeout.
    let idle = Duration::from_millis(400);
    let builder = Server::builder().idle_timeout(idle).frame_timeout(Duration::from_secs(60));
    let (server, closed) = jobs(builder, idle * 2, Duration::ZERO);
    let mut s = connect(server.local_addr());
    let asked = Instant::now();
    s.write_all(b"q\n").unwrap();
    assert_eq!(read_exact(&mut s, 2), b"Q\n");
    assert!(asked.elapsed() >= idle * 2, "answered after {:?}, before the job was done", asked.elapsed());
    // Then the idle timeout counts from the reply: a quiet peer is closed.
    assert_eq!(read_end(&mut s), End::Eof);
    assert_eq!(closed.recv_timeout(TIMEOUT).unwrap(), "IdleTimeout");
    assert!(
        asked.elapsed() >= idle * 3,
        "closed {:?} after the request, inside the idle time",
        asked.elapsed()
    );
    assert_eq!(server.stats().timed_out, 1);
}

#[test]
fn frames_held_by_a_pause_outlast_the_frame_and_idle_timeouts() {
    // A pause three times the idle timeout and six times the frame
    // timeout, with two whole frames read and held behind it.
    let (frame, idle, pause) =
        (Duration::from_millis(200), Duration::from_millis(400), Duration::from_millis(1200));
    let builder = Server::builder().idle_timeout(idle).frame_timeout(frame);
    let (server, closed) = jobs(builder, Duration::ZERO, pause);
    let mut s = connect(server.local_addr());
    let asked = Instant::now();
    s.write_all(b"pause\nx\ny\n").unwrap();
    assert_eq!(read_exact(&mut s, 7), b"paused\n");
    assert_eq!(read_exact(&mut s, 4), b"X\nY\n");
    assert!(asked.elapsed() >= pause, "answered after {:?}, inside the pause", asked.elapsed());
    assert_eq!(server.stats().timed_out, 0);
    s.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_end(&mut s), End::Eof);
    assert_eq!(closed.recv_timeout(TIMEOUT).unwrap(), "PeerClosed");
}

#[test]
fn an_incomplete_frame_behind_a_deferred_reply_times_out_only_after_the_reply() {
    // A whole request and half of the next: the half is a slow sender's,
    // and its frame timeout closes the connection, but gracefully: the
    // reply in progress is delivered first.
    let frame = Duration::from_millis(300);
    let work = Duration::from_millis(600);
    let builder = Server::builder().frame_timeout(frame).idle_timeout(Duration::from_secs(60));
    let (server, closed) = jobs(builder, work, Duration::ZERO);
    let mut s = connect(server.local_addr());
    let asked = Instant::now();
    s.write_all(b"job\nhal").unwrap();
    assert_eq!(read_exact(&mut s, 4), b"JOB\n");
    assert!(matches!(read_end(&mut s), End::Eof | End::Reset));
    assert_eq!(closed.recv_timeout(TIMEOUT).unwrap(), "FrameTimeout");
    assert!(asked.elapsed() >= work, "closed {:?} after the request, before its reply", asked.elapsed());
    assert_eq!(server.stats().timed_out, 1);
}

#[test]
fn harnesses_have_distinct_ids_and_show_what_holds_their_frames() {
    let ids = handler_fn(Framing::lines(64), |_, conn| {
        conn.send(format!("{}\n", conn.id()));
        Flow::Continue
    });
    let (mut a, b) = (Harness::new(ids), Harness::new(handler_fn(Framing::lines(64), |_, _| Flow::Continue)));
    assert_ne!(a.id(), b.id());
    a.input(b"x\n");
    assert_eq!(a.output(), format!("{}\n", a.id()).as_bytes());
    assert_eq!(b.held_by(), None);

    // A pause holds the frames until it ends.
    let pausing = handler_fn(Framing::lines(64), |line, conn| {
        if line == b"pause" {
            conn.pause_reading(Duration::from_secs(60));
        }
        conn.send(line);
        conn.send(b"\n");
        Flow::Continue
    });
    let mut p = Harness::new(pausing);
    p.input(b"pause\nafter\n");
    assert!(matches!(p.held_by(), Some(Held::Paused(d)) if d > Duration::from_secs(50)), "{:?}", p.held_by());
    assert_eq!(p.output(), b"pause\n");
    p.resume();
    assert_eq!(p.output(), b"after\n");

    // Backpressure: a reply over the high-water mark (256 KiB) holds the
    // next frames until the output is taken.
    let big = handler_fn(Framing::lines(64), |line, conn| {
        if line == b"big" {
            conn.send(vec![b'x'; 300 << 10]);
        } else {
            conn.send(line);
        }
        Flow::Continue
    });
    let mut q = Harness::new(big);
    q.input(b"big\nsmall\n");
    assert_eq!(q.held_by(), Some(Held::Backpressure { queued: 300 << 10 }));
    assert_eq!(q.output().len(), 300 << 10);
    assert_eq!(q.held_by(), None);
    assert_eq!(q.output(), b"small");
}

#[test]
fn the_harness_waits_for_pipelined_deferred_replies_one_after_another() {
    // Three slow requests in one input, all in progress at once (up to 16
    // may be); wait_replies(3) waits for all three, and the replies leave
    // in request order.
    let (go_tx, go) = crossbeam_channel::unbounded();
    let mut h = Harness::new(SlowFirst { go });
    h.input(b"slow\nslow\nslow\nfast\n");
    assert_eq!(h.held_by(), None);
    assert_eq!(h.output(), b"", "the fast reply waits behind the slow ones");
    for _ in 0..3 {
        go_tx.send(()).unwrap();
    }
    assert!(h.wait_replies(3, TIMEOUT));
    assert_eq!(h.output(), b"slow done\nslow done\nslow done\nfast\n");
    assert_eq!(h.held_by(), None);
    assert!(!h.wait_replies(1, Duration::from_millis(10)), "nothing outstanding: no reply can come");
}

/// `bye` half-closes after a last reply; other lines are echoed and every
/// frame is reported, so the test sees what arrives after the half-close.
struct HalfCloser {
    frames: Sender<Vec<u8>>,
    handles: Sender<ConnHandle>,
    closed: Sender<String>,
}

impl Handler for HalfCloser {
    type Session = ();
    fn framing(&self) -> Framing {
        Framing::lines(64)
    }
    fn open(&self, conn: &mut Conn<'_>) {
        let _ = self.handles.send(conn.handle());
    }
    fn frame(&self, _: &mut (), line: &[u8], conn: &mut Conn<'_>) -> Flow {
        let _ = self.frames.send(line.to_vec());
        if line == b"bye" {
            conn.send("last\n");
            conn.shutdown_write();
            conn.send("never sent\n");
        } else {
            conn.send_frame(line).unwrap();
        }
        Flow::Continue
    }
    fn close(&self, _: (), reason: &CloseReason) {
        let _ = self.closed.send(format!("{reason:?}"));
    }
}

fn half_closer() -> (Server, Receiver<Vec<u8>>, Receiver<ConnHandle>, Receiver<String>) {
    let (frames, frames_rx) = crossbeam_channel::unbounded();
    let (handles, handles_rx) = crossbeam_channel::unbounded();
    let (closed, closed_rx) = crossbeam_channel::unbounded();
    let server = start(Server::builder().workers(1), HalfCloser { frames, handles, closed });
    (server, frames_rx, handles_rx, closed_rx)
}

#[test]
fn shutdown_write_sends_what_is_queued_then_eof_and_keeps_reading() {
    let (server, frames, _handles, closed) = half_closer();
    let mut s = connect(server.local_addr());
    s.write_all(b"a\nbye\n").unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).expect("EOF after the last reply");
    assert_eq!(got, b"a\nlast\n");
    // The server still reads: frames after the half-close reach the handler.
    s.write_all(b"after\n").unwrap();
    let seen: Vec<Vec<u8>> = (0..3).map(|_| frames.recv_timeout(TIMEOUT).unwrap()).collect();
    assert_eq!(seen, [b"a".to_vec(), b"bye".to_vec(), b"after".to_vec()]);
    assert_eq!(server.stats().open, 1, "open for reading");
    // The peer's EOF ends the connection.
    s.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(closed.recv_timeout(TIMEOUT).unwrap(), "PeerClosed");
}

#[test]
fn a_handle_half_closes_after_what_it_queued_and_refuses_later_sends() {
    let (server, _frames, handles, closed) = half_closer();
    let mut s = connect(server.local_addr());
    let handle = handles.recv_timeout(TIMEOUT).unwrap();
    handle.send("from another thread\n").unwrap();
    handle.shutdown_write();
    assert_eq!(handle.send("too late\n"), Err(SendError::Closed));
    let mut got = String::new();
    s.read_to_string(&mut got).expect("EOF after the handle's message");
    assert_eq!(got, "from another thread\n");
    assert!(!handle.is_closed(), "half-closed, not closed");
    drop(s);
    assert_eq!(closed.recv_timeout(TIMEOUT).unwrap(), "PeerClosed");
}

#[test]
fn the_harness_shows_a_half_close() {
    let (frames, _f) = crossbeam_channel::unbounded();
    let (handles, _h) = crossbeam_channel::unbounded();
    let (closed, _c) = crossbeam_channel::unbounded();
    let mut h = Harness::new(HalfCloser { frames, handles, closed });
    h.input(b"a\n");
    assert!(!h.write_shut());
    h.input(b"bye\nb\n");
    assert!(h.write_shut());
    assert_eq!(h.output(), b"a\nlast\n", "nothing sent after the half-close comes out");
}

#[test]
fn pipelined_deferred_replies_completed_out_of_order_leave_in_request_order() {
    // Every line is answered (with itself) by a deferred reply that the
    // test completes, in an order of its choosing; five may be in progress.
    let (jobs, taken) = crossbeam_channel::unbounded::<(Vec<u8>, switchboard::Deferred)>();
    let handler = handler_fn(Framing::lines(64), move |line, conn| {
        let _ = jobs.send((line.to_vec(), conn.defer()));
        Flow::Continue
    });
    let server = start(Server::builder().workers(1).max_deferred(5), handler);
    let mut s = connect(server.local_addr());
    s.write_all(b"1\n2\n3\n4\n5\n6\n").unwrap();
    let mut slots: Vec<Option<(Vec<u8>, switchboard::Deferred)>> =
        (0..5).map(|_| Some(taken.recv_timeout(TIMEOUT).expect("a job"))).collect();
    // Five in progress: the sixth frame waits (never an error).
    assert_eq!(server.stats().frames, 5);
    for i in [4, 2, 0, 3, 1] {
        let (line, reply) = slots[i].take().unwrap();
        reply.send([&line[..], b"\n"].concat()).unwrap();
    }
    assert_eq!(read_exact(&mut s, 10), b"1\n2\n3\n4\n5\n", "request order, not completion order");
    let (line, reply) = taken.recv_timeout(TIMEOUT).expect("the sixth, once a place was free");
    reply.send([&line[..], b"\n"].concat()).unwrap();
    drop(reply);
    assert_eq!(read_exact(&mut s, 2), b"6\n");
    assert_eq!(server.stats().frames, 6);
}

#[test]
fn max_deferred_out_of_range_is_refused_at_start() {
    for n in [0, 1025] {
        match Server::builder()
            .max_deferred(n)
            .start("127.0.0.1:0", handler_fn(Framing::Raw, |_, _| Flow::Continue))
        {
            Err(switchboard::StartError::Config(msg)) => assert!(msg.contains("1 to 1024"), "{msg}"),
            other => panic!(
                "max_deferred({n}): expected a configuration error, got {:?}",
                other.map(|s| s.local_addr())
            ),
        }
    }
}
