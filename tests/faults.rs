//! Connection faults: peers that reset in the middle of a reply or of a
//! file, bursts of connections that close at once, connections that never
//! send. The server keeps serving everyone else, closes what it must, and
//! its counters add up.
//!
//! Covered elsewhere: a peer that half-closes after sending still gets its
//! replies (`shutdown.rs`, `half_closed_client_gets_its_replies_before_the_close`);
//! descriptor exhaustion (`bins/tests/server.rs`,
//! `descriptor_exhaustion_backs_off_and_recovers`).

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use switchboard::{CloseReason, Conn, Flow, Framing, Handler, Server};
use switchboard_test_support::child::ChildServer;
use switchboard_test_support::*;

/// How each connection closed, as the handler saw it: the reason and how
/// long the connection lived.
type Closes = Arc<Mutex<Vec<(CloseReason, Duration)>>>;

/// Echoes raw bytes; `get\n` alone in a read sends the file instead.
/// Records every close.
struct Recording {
    closes: Closes,
    file: Option<(Arc<File>, u64)>,
}

impl Handler for Recording {
    /// When the connection opened.
    type Session = Instant;
    fn framing(&self) -> Framing {
        Framing::Raw
    }
    fn open(&self, _: &mut Conn<'_>) -> Instant {
        Instant::now()
    }
    fn frame(&self, _: &mut Instant, data: &[u8], conn: &mut Conn<'_>) -> Flow {
        match &self.file {
            Some((file, len)) if data == b"get\n" => conn.send_file(Arc::clone(file), 0, *len),
            _ => conn.send(data),
        }
        Flow::Continue
    }
    fn close(&self, opened: Instant, reason: &CloseReason) {
        self.closes.lock().push((copy_reason(reason), opened.elapsed()));
    }
}

/// The same reason (`CloseReason` is not `Clone`: it may hold an `io::Error`).
fn copy_reason(r: &CloseReason) -> CloseReason {
    match r {
        CloseReason::Io(e) => CloseReason::Io(e.kind().into()),
        CloseReason::BadFrame(e) => CloseReason::BadFrame(*e),
        CloseReason::PeerClosed => CloseReason::PeerClosed,
        CloseReason::Handler => CloseReason::Handler,
        CloseReason::IdleTimeout => CloseReason::IdleTimeout,
        CloseReason::FrameTimeout => CloseReason::FrameTimeout,
        CloseReason::SlowConsumer => CloseReason::SlowConsumer,
        CloseReason::Drained => CloseReason::Drained,
        CloseReason::Forced => CloseReason::Forced,
        CloseReason::FileTruncated => CloseReason::FileTruncated,
        CloseReason::HandlerPanic => CloseReason::HandlerPanic,
        other => panic!("a close reason this test does not know: {other}"),
    }
}

/// A reset as a peer's reset is seen by the writer or the reader.
fn is_reset(r: &CloseReason) -> bool {
    matches!(r, CloseReason::Io(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe))
}

fn recording(file: Option<(Arc<File>, u64)>) -> (Recording, Closes) {
    let closes = Closes::default();
    (Recording { closes: Arc::clone(&closes), file }, closes)
}

#[test]
fn reset_in_the_middle_of_a_large_reply() {
    let (handler, closes) = recording(None);
    let server = start(Server::builder().workers(1).high_water(256 << 10), handler);
    let addr = server.local_addr();
    let mut bystander = connect(addr);
    assert_eq!(round_trip(&mut bystander, b"before"), b"before");

    // Send without reading until the server holds an echo it cannot write:
    // the reply is being written when the peer resets.
    let mut s = small_window_client(addr);
    s.set_nonblocking(true).unwrap();
    let chunk = vec![b'r'; 64 << 10];
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let stats = server.stats();
        if stats.bytes_out > 0 && stats.bytes_in - stats.bytes_out >= 128 << 10 {
            break;
        }
        assert!(Instant::now() < deadline, "the server never backed up: {stats}");
        match s.write(&chunk) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(2)),
            Err(e) => panic!("write: {e}"),
        }
    }
    reset(s);

    wait_until("the reset connection is closed", || closes.lock().len() == 1);
    let stats = wait_stats(&server, "the reset connection is counted closed", |s| s.closed == 1);
    assert!(is_reset(&closes.lock()[0].0), "closed for {:?}", closes.lock()[0].0);
    assert_eq!((stats.accepted, stats.open), (2, 1), "{stats}");
    // The worker that was writing to the reset peer still serves others.
    assert_eq!(round_trip(&mut bystander, b"after"), b"after");
    let mut late = connect(addr);
    assert_eq!(round_trip(&mut late, b"new"), b"new");
}

#[test]
fn reset_in_the_middle_of_a_file() {
    let dir = temp_dir("midfile");
    let path = dir.path().join("big");
    let len = 32u64 << 20;
    std::fs::write(&path, random_bytes(len as usize, 21)).unwrap();
    let file = Arc::new(File::open(&path).unwrap());
    let (handler, closes) = recording(Some((file, len)));
    let server = start(Server::builder().workers(1), handler);
    let addr = server.local_addr();

    // Three downloads cut off by a reset after a few hundred KiB each, with
    // a whole download in between: the file's own descriptor is shared, so a
    // cut transfer must not disturb the next one's offset.
    for round in 0..3 {
        let mut s = small_window_client(addr);
        s.write_all(b"get\n").unwrap();
        let mut got = 0;
        let mut buf = vec![0u8; 64 << 10];
        while got < 256 << 10 {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "round {round}: early EOF");
            got += n;
        }
        reset(s);
        wait_until("the reset download is closed", || closes.lock().len() == round + 1);
        let closes = closes.lock();
        assert!(is_reset(&closes[round].0), "round {round}: closed for {:?}", closes[round].0);
    }
    let rounds = 3;
    let stats = wait_stats(&server, "the three downloads are counted closed", |s| s.closed == rounds);
    assert_eq!(stats.open, 0);
    // Each cut download sent what the client read plus at most what the
    // kernel buffers held: far less than the file each time.
    assert!(stats.bytes_out < rounds * len, "{stats}");

    let mut whole = connect(addr);
    whole.write_all(b"get\n").unwrap();
    let got = read_exact(&mut whole, len as usize);
    assert!(got == random_bytes(len as usize, 21), "a later download differs");
    drop(whole);
    wait_stats(&server, "all closed", |s| s.closed == rounds + 1 && s.open == 0);
}

#[test]
fn a_burst_of_two_thousand_connect_and_close() {
    let (handler, closes) = recording(None);
    let server = start(Server::builder().workers(2), handler);
    let addr = server.local_addr();
    let mut steady = connect(addr);
    assert_eq!(round_trip(&mut steady, b"0"), b"0");

    let threads = 4;
    let per_thread = 500;
    let burst: Vec<_> = (0..threads)
        .map(|_| {
            std::thread::spawn(move || {
                for _ in 0..per_thread {
                    drop(TcpStream::connect(addr).expect("connect in the burst"));
                }
            })
        })
        .collect();
    // The steady client is served all through the burst.
    let mut i = 0u32;
    while burst.iter().any(|t| !t.is_finished()) && i < 100_000 {
        let msg = i.to_string();
        assert_eq!(round_trip(&mut steady, msg.as_bytes()), msg.as_bytes());
        i += 1;
    }
    for t in burst {
        t.join().unwrap();
    }
    let total = threads * per_thread;
    // Every burst connection accepted and closed (the acceptor may still
    // have the backlog to drain when the clients are done).
    let stats = wait_stats(&server, "every burst connection is accepted and closed", |s| {
        s.accepted == total as u64 + 1 && s.closed == total as u64 && s.open == 1
    });
    assert_eq!(round_trip(&mut steady, b"still"), b"still");
    assert_eq!((stats.rejected, stats.accept_errors), (0, 0), "{stats}");
    // `closed` is counted and `Handler::close` runs before `open` drops.
    let closes = closes.lock();
    assert_eq!(closes.len(), total);
    // The burst clients close without sending: every one is a clean EOF.
    let not_eof: Vec<_> = closes.iter().filter(|(r, _)| !matches!(r, CloseReason::PeerClosed)).collect();
    assert!(not_eof.is_empty(), "{} closed for another reason, first {:?}", not_eof.len(), not_eof[0].0);
    drop(closes);
    drop(steady);
    wait_stats(&server, "all closed", |s| s.closed == total as u64 + 1 && s.open == 0);
}

#[test]
fn connections_that_never_send_are_closed_by_the_idle_timeout() {
    let idle = Duration::from_millis(400);
    let (handler, closes) = recording(None);
    let server = start(Server::builder().workers(2).idle_timeout(idle), handler);
    let addr = server.local_addr();
    let silent = 100;
    let mut quiet: Vec<TcpStream> = (0..silent).map(|_| connect(addr)).collect();
    let mut active = connect(addr);
    wait_stats(&server, "all are open", |s| s.accepted == silent as u64 + 1 && s.open == silent + 1);
    // The active one keeps talking while the silent ones time out.
    let mut i = 0;
    let deadline = Instant::now() + TIMEOUT;
    while server.stats().timed_out < silent as u64 {
        assert!(Instant::now() < deadline, "silent connections not closed: {}", server.stats());
        let msg = format!("ping {i}");
        assert_eq!(round_trip(&mut active, msg.as_bytes()), msg.as_bytes());
        i += 1;
        std::thread::sleep(idle / 8);
    }
    for q in quiet.iter_mut() {
        assert!(matches!(read_end(q), End::Eof | End::Reset));
    }
    assert_eq!(round_trip(&mut active, b"alive"), b"alive");
    let stats = wait_stats(&server, "the silent connections are closed", |s| {
        s.closed == silent as u64 && s.open == 1
    });
    assert_eq!(stats.timed_out, silent as u64, "{stats}");
    // Every silent connection, and only those, closed for the idle timeout,
    // and lived at least the timeout.
    let closes = closes.lock();
    assert_eq!(closes.len(), silent);
    for (reason, lived) in closes.iter() {
        assert!(matches!(reason, CloseReason::IdleTimeout), "closed for {reason}");
        assert!(*lived >= idle, "closed for {reason} after {lived:?}, under the {idle:?} timeout");
    }
}

/// One chat member floods the room as fast as it can and never reads; two
/// others read everything, one of them chatting. The readers keep receiving
/// (the chatter's lines arrive whole and in order in the flood), the flooder
/// is throttled (the server stops reading it once replies to it back up) and
/// then cut off as a slow consumer, and the server's memory stays within its
/// per-connection budgets however much is flooded.
///
/// The server runs in a process of its own (`switchboard-test-server`), so
/// its memory is read through `/proc/PID` and no sibling test's is counted.
#[test]
fn a_chat_flooder_is_slowed_down_and_the_others_keep_receiving() {
    use std::io::{BufRead, BufReader};
    use std::sync::atomic::{AtomicBool, AtomicU64};
    let rate = 200u32;
    let server = ChildServer::start(&chat_server_args(&rate.to_string()));
    let addr = server.local_addr();
    // The flooder never reads; the reader reads everything; bob talks.
    let mut flooder = small_window_client(addr);
    flooder.write_all(b"/nick flooder\n").unwrap();
    let reader = connect(addr);
    let mut bob = connect(addr);
    bob.write_all(b"/nick bob\n").unwrap();
    wait_stats(&server, "three members", |s| s.accepted == 3 && s.open == 3);
    let rss_before = server.pid().rss_bytes();
    let started = Instant::now();

    let stop = Arc::new(AtomicBool::new(false));
    let flooded = Arc::new(AtomicU64::new(0));
    let flooding = {
        let (stop, flooded) = (Arc::clone(&stop), Arc::clone(&flooded));
        let mut f = flooder.try_clone().unwrap();
        f.set_write_timeout(Some(Duration::from_millis(50))).unwrap();
        std::thread::spawn(move || {
            let line = format!("{}\n", "f".repeat(1000));
            let mut pending: &[u8] = line.as_bytes();
            while !stop.load(Ordering::Relaxed) {
                match f.write(pending) {
                    Ok(n) => {
                        flooded.fetch_add(n as u64, Ordering::Relaxed);
                        pending = &pending[n..];
                        if pending.is_empty() {
                            pending = line.as_bytes();
                        }
                    }
                    // Blocked: the server has stopped reading from us.
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(_) => break,
                }
            }
        })
    };

    // The reader sees the flood, and bob's lines get through it, in order.
    let mut r = BufReader::new(reader);
    let (mut flood_lines, mut markers) = (0u64, Vec::new());
    let markers_sent = 50;
    let mut line = String::new();
    loop {
        line.clear();
        assert!(r.read_line(&mut line).expect("the reader keeps receiving") > 0, "the reader was cut off");
        if line.starts_with("<flooder> ") {
            flood_lines += 1;
            if flood_lines == 300 {
                for i in 0..markers_sent {
                    bob.write_all(format!("marker {i}\n").as_bytes()).unwrap();
                }
                bob.write_all(b"done\n").unwrap();
            }
        } else if let Some(m) = line.strip_prefix("<bob> marker ") {
            markers.push(m.trim_end().parse::<usize>().unwrap());
        } else if line == "<bob> done\n" {
            break;
        }
    }
    assert_eq!(markers, (0..markers_sent).collect::<Vec<_>>(), "bob's lines, whole and in order");
    // Keep flooding a while longer: the flood is held to the rate.
    while started.elapsed() < Duration::from_millis(1500) {
        line.clear();
        r.read_line(&mut line).expect("the reader keeps receiving");
    }
    stop.store(true, Ordering::Relaxed);
    flooding.join().unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    let stats = server.stats();
    // Lines relayed: what the rate allows (a burst of twice the rate, then
    // the rate), plus the others' few lines.
    let allowed = (f64::from(rate) * (2.0 + elapsed)) as u64 + markers_sent as u64 + 10;
    assert!(stats.frames <= allowed, "{} frames in {elapsed:.2}s at {rate}/s: {stats}", stats.frames);
    // The flooder was slowed by TCP: it got far less in than it tried.
    let written = flooded.load(Ordering::Relaxed);
    assert!(stats.bytes_in < 32 << 20, "the server read {} bytes of flood", stats.bytes_in);
    eprintln!(
        "flooder wrote {} KiB in {elapsed:.2}s; server read {} KiB, relayed {} frames; reader got {flood_lines} flood lines",
        written >> 10,
        stats.bytes_in >> 10,
        stats.frames
    );
    // Nobody was cut off, and memory stayed within the budgets.
    assert_eq!(stats.slow_consumer_disconnects, 0, "{stats}");
    assert_rss_within_budgets(&server, rss_before, 3);
    drop(flooder);
}

/// The core's budgets under an unlimited chat flood (flood control off):
/// whatever the flood does to the members who cannot keep up, the server's memory stays within its
/// per-connection budgets, every member cut off is announced, and the room
/// still works for a member who joins afterwards.
#[test]
fn a_chat_flood_leaves_memory_bounded_and_the_room_usable() {
    use std::io::BufReader;

    let server = ChildServer::start(&chat_server_args("0"));
    let addr = server.local_addr();
    let mut flooder = small_window_client(addr);
    flooder.write_all(b"/nick flooder\n").unwrap();
    let mut readers: Vec<_> = (0..2)
        .map(|_| {
            let mut s = connect(addr);
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 256 << 10];
                let mut total = 0u64;
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    total += n as u64;
                }
                total
            })
        })
        .collect();
    wait_stats(&server, "three members", |s| s.accepted == 3 && s.open == 3);
    let rss_before = server.pid().rss_bytes();
    let line = format!("{}\n", "f".repeat(4000));
    let flood = 64usize << 20;
    let mut sent = 0;
    while sent < flood {
        if flooder.write_all(line.as_bytes()).is_err() {
            break;
        }
        sent += line.len();
    }
    assert!(sent >= flood, "the flooder was cut off after {sent} bytes");
    // Everything the flooder sent was read (and relayed or dropped).
    let nick = b"/nick flooder\n".len() as u64;
    wait_stats(&server, "the flood is read", |s| s.bytes_in == nick + sent as u64);
    assert_rss_within_budgets(&server, rss_before, 3);
    // A newcomer is welcomed and sees everyone still connected.
    let s = connect(addr);
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    let welcome = read_line(&mut r);
    assert!(welcome.starts_with("* welcome guest-"), "{welcome:?}");
    w.write_all(b"/who\n").unwrap();
    let who = loop {
        let l = read_line(&mut r);
        if l.starts_with("* online: ") {
            break l;
        }
    };
    assert!(who.contains("flooder"), "{who:?}");
    let cut = server.stats().slow_consumer_disconnects;
    assert_eq!(who.matches(", ").count() + 1, 4 - cut as usize, "{who:?} after {cut} cut off");
    drop((r, w, flooder));
    server.stop();
    for reader in readers.drain(..) {
        reader.join().unwrap();
    }
}

/// The outbound budget the chat servers of these tests run with.
const MAX_OUTBOUND: u64 = 1 << 20;
/// The core's read buffer per connection.
const READ_BUFFER: u64 = 64 << 10;
/// What the allocator and the kernel may add over the budgets: arenas of
/// the worker threads, freed memory not yet given back.
const RSS_SLACK: u64 = 8 << 20;

/// A chat server's arguments; a `rate` of "0" turns flood control off
/// (the member and the room limit).
fn chat_server_args(rate: &str) -> Vec<&str> {
    let room = if rate == "0" { "0" } else { "524288" }; // the default room rate
    vec![
        "--chat-room-rate",
        room,
        "--handler",
        "chat",
        "--workers",
        "2",
        "--max-frame",
        "4096",
        "--chat-rate",
        rate,
        "--max-outbound",
        "1048576",
    ]
}

/// The server's peak resident memory grew by at most what `members`
/// connections may hold (outbound budget and read buffer each) plus
/// [`RSS_SLACK`].
fn assert_rss_within_budgets(server: &ChildServer, rss_before: u64, members: u64) {
    let peak = server.pid().peak_rss_bytes();
    let budget = members * (MAX_OUTBOUND + READ_BUFFER) + RSS_SLACK;
    eprintln!(
        "RSS {} KiB before, peak {} KiB; allowed growth {} KiB",
        rss_before >> 10,
        peak >> 10,
        budget >> 10
    );
    assert!(
        peak.saturating_sub(rss_before) <= budget,
        "peak RSS grew by {} KiB, over {members} x ({MAX_OUTBOUND} + {READ_BUFFER}) B + {RSS_SLACK} B slack",
        peak.saturating_sub(rss_before) >> 10
    );
}
