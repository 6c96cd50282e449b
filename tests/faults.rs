//! Connection faults: peers that reset in the middle of a reply or of a
//! file, bursts of connections that close at once, connections that never
//! send. The server keeps serving everyone else, closes what it must, and
//! its counters add up.
//!
//! Covered elsewhere: a peer that half-closes after sending still gets its
//! replies (`shutdown.rs`, `half_closed_client_gets_its_replies_before_the_close`);
//! descriptor exhaustion (`bins/tests/server.rs`,
//! `descriptor_exhaustion_backs_off_and_recovers`).

mod util;

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use switchboard::{CloseReason, Conn, Flow, Framing, Handler, Server};
use util::*;

/// Why each connection closed, as the handler saw it.
type Closes = Arc<Mutex<Vec<String>>>;

/// Echoes raw bytes; `get\n` alone in a read sends the file instead.
/// Records every close reason.
struct Recording {
    closes: Closes,
    file: Option<(Arc<File>, u64)>,
}

impl Handler for Recording {
    type Session = ();
    fn framing(&self) -> Framing {
        Framing::Raw
    }
    fn open(&self, _: &mut Conn<'_>) {}
    fn frame(&self, _: &mut (), data: &[u8], conn: &mut Conn<'_>) -> Flow {
        match &self.file {
            Some((file, len)) if data == b"get\n" => conn.send_file(Arc::clone(file), 0, *len),
            _ => conn.send(data),
        }
        Flow::Continue
    }
    fn close(&self, _: (), reason: &CloseReason) {
        self.closes.lock().push(reason.to_string());
    }
}

fn recording(file: Option<(Arc<File>, u64)>) -> (Recording, Closes) {
    let closes = Closes::default();
    (Recording { closes: Arc::clone(&closes), file }, closes)
}

/// A client socket with a small receive buffer, so the server's reply backs
/// up in the server rather than in the client's kernel.
fn small_window_client(addr: SocketAddr) -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_recv_buffer_size(4096).unwrap();
    s.connect(&addr.into()).unwrap();
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.set_write_timeout(Some(TIMEOUT)).unwrap();
    s
}

/// Closes `s` with a reset (SO_LINGER 0), as a crashed or killed peer does.
fn reset(s: TcpStream) {
    let s = socket2::Socket::from(s);
    s.set_linger(Some(Duration::ZERO)).unwrap();
    drop(s);
}

fn temp_dir(name: &str) -> PathBuf {
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    let n = COUNT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("switchboard-faults-{}-{n}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
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
    let reason = closes.lock()[0].clone();
    assert!(reason.starts_with("I/O error"), "closed for {reason:?}");
    assert_eq!(server.stats().open, 1);
    // The worker that was writing to the reset peer still serves others.
    assert_eq!(round_trip(&mut bystander, b"after"), b"after");
    let mut late = connect(addr);
    assert_eq!(round_trip(&mut late, b"new"), b"new");
}

#[test]
fn reset_in_the_middle_of_a_file() {
    let dir = temp_dir("midfile");
    let path = dir.join("big");
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
        let reason = closes.lock()[round].clone();
        assert!(reason.starts_with("I/O error"), "round {round}: closed for {reason:?}");
    }
    let stats = server.stats();
    assert_eq!(stats.open, 0);
    assert!(stats.bytes_out < 3 * len, "{stats}");

    let mut whole = connect(addr);
    whole.write_all(b"get\n").unwrap();
    let got = read_exact(&mut whole, len as usize);
    assert!(got == random_bytes(len as usize, 21), "a later download differs");
    drop(whole);
    wait_until("all closed", || server.stats().open == 0);
    std::fs::remove_dir_all(dir).unwrap();
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
    wait_until("every burst connection is closed", || server.stats().open == 1);
    assert_eq!(round_trip(&mut steady, b"still"), b"still");
    let stats = server.stats();
    assert_eq!(stats.accepted, total as u64 + 1, "{stats}");
    assert_eq!(stats.rejected, 0);
    assert_eq!(stats.accept_errors, 0);
    assert_eq!(stats.closed, total as u64);
    assert_eq!(closes.lock().len(), total);
    drop(steady);
    wait_until("all closed", || server.stats().open == 0);
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
    wait_until("all are open", || server.stats().open == silent + 1);
    let started = Instant::now();
    // The active one keeps talking while the silent ones time out.
    let mut i = 0;
    while server.stats().timed_out < silent as u64 {
        assert!(started.elapsed() < TIMEOUT, "silent connections not closed: {}", server.stats());
        let msg = format!("ping {i}");
        assert_eq!(round_trip(&mut active, msg.as_bytes()), msg.as_bytes());
        i += 1;
        std::thread::sleep(idle / 8);
    }
    assert!(started.elapsed() >= idle / 2);
    for q in quiet.iter_mut() {
        assert!(matches!(read_end(q), End::Eof | End::Reset));
    }
    assert_eq!(round_trip(&mut active, b"alive"), b"alive");
    let stats = server.stats();
    assert_eq!(stats.timed_out, silent as u64);
    assert_eq!(stats.open, 1);
    let timeouts = closes.lock().iter().filter(|r| *r == &CloseReason::IdleTimeout.to_string()).count();
    assert_eq!(timeouts, silent);
}

/// One chat member floods the room as fast as it can and never reads; two
/// others read everything, one of them chatting. The readers keep receiving
/// (the chatter's lines arrive whole and in order in the flood), the flooder
/// is throttled (the server stops reading it once replies to it back up) and
/// then cut off as a slow consumer, and the server's memory stays within its
/// per-connection budgets however much is flooded.
///
/// Fails on the current core: the readers are cut off as slow consumers
/// within the first megabyte (in a release build after a handful of lines),
/// however fast they read. A worker reads up to 16 x 64 KiB from the flooder
/// in one turn, and the chat turns that into about 1 MiB of broadcasts per
/// member before any member's queue is flushed: the whole default outbound
/// budget.
#[test]
#[ignore = "core: one turn of a flooder's input overflows every reader's outbound budget"]
fn a_chat_flooder_is_cut_off_and_the_others_keep_receiving() {
    use std::io::{BufRead, BufReader};
    use std::sync::atomic::{AtomicBool, AtomicU64};
    use switchboard_handlers::Chat;
    use util::proc::rss_bytes;

    let server = start(Server::builder().workers(2), Chat::new(4096));
    let addr = server.local_addr();
    let mut flooder = small_window_client(addr);
    flooder.write_all(b"/nick flooder\n").unwrap();
    let reader = connect(addr);
    let mut chatter = connect(addr);
    chatter.write_all(b"/nick bob\n").unwrap();
    wait_until("three members", || server.stats().open == 3);

    // The reader reads everything until bob's last line. A flood line is
    // checked by its length and last byte, not byte by byte, so that this
    // reader keeps up with the server even in an unoptimised build.
    const FLOOD_LINE: usize = "<flooder> ".len() + 1000 + 1;
    let reading = std::thread::spawn(move || {
        let mut r = reader;
        let (mut flood_lines, mut markers, mut flooder_left) = (0u64, Vec::new(), false);
        let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
        let mut chunk = vec![0u8; 256 << 10];
        loop {
            let n = r.read(&mut chunk).expect("the reader keeps receiving");
            assert!(n > 0, "the reader was disconnected after {flood_lines} flood lines");
            buf.extend_from_slice(&chunk[..n]);
            let mut pos = 0;
            loop {
                let rest = &buf[pos..];
                let len = if rest.starts_with(b"<flooder> ") {
                    if rest.len() < FLOOD_LINE {
                        break;
                    }
                    assert_eq!(rest[FLOOD_LINE - 1], b'\n', "a flood line of the wrong length");
                    flood_lines += 1;
                    FLOOD_LINE
                } else {
                    let Some(i) = rest.iter().position(|&b| b == b'\n') else { break };
                    let line = String::from_utf8_lossy(&rest[..=i]);
                    if let Some(m) = line.strip_prefix("<bob> marker ") {
                        markers.push(m.split(' ').next().unwrap().parse::<usize>().unwrap());
                    } else if line == "<bob> done\n" {
                        return (flood_lines, markers, flooder_left, r, buf[pos + i + 1..].to_vec());
                    } else if line == "* flooder left (too slow)\n" {
                        flooder_left = true;
                    }
                    i + 1
                };
                pos += len;
            }
            buf.drain(..pos);
        }
    });
    // The chatter reads (and drops) everything sent to it.
    let mut chatter_in = chatter.try_clone().unwrap();
    let draining = std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        let mut total = 0u64;
        while let Ok(n) = chatter_in.read(&mut buf) {
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        total
    });

    let rss_before = rss_bytes();
    let flooded = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let flooding = {
        let (flooded, stop) = (Arc::clone(&flooded), Arc::clone(&stop));
        let mut f = flooder.try_clone().unwrap();
        std::thread::spawn(move || {
            let line = format!("{}\n", "f".repeat(1000));
            while !stop.load(Ordering::Relaxed) && flooded.load(Ordering::Relaxed) < 1 << 30 {
                if f.write_all(line.as_bytes()).is_err() {
                    break;
                }
                flooded.fetch_add(line.len() as u64, Ordering::Relaxed);
            }
        })
    };
    let mut rss_peak = rss_before;
    let flood_target = 32u64 << 20;
    wait_until("32 MiB flooded", || {
        rss_peak = rss_peak.max(rss_bytes());
        flooded.load(Ordering::Relaxed) >= flood_target
    });

    // Now bob talks: his lines reach the reader through the flood, and back
    // up in the flooder's queue until it is cut off.
    let payload = "b".repeat(2000);
    let mut sent = 0;
    while server.stats().slow_consumer_disconnects == 0 {
        assert!(sent < 20_000, "the flooder was never cut off: {}", server.stats());
        chatter.write_all(format!("marker {sent} {payload}\n").as_bytes()).unwrap();
        sent += 1;
        rss_peak = rss_peak.max(rss_bytes());
    }
    chatter.write_all(b"done\n").unwrap();
    let (flood_lines, markers, flooder_left, reader, rest) = reading.join().expect("reader");
    stop.store(true, Ordering::Relaxed);
    flooding.join().unwrap();
    rss_peak = rss_peak.max(rss_bytes());

    let total = flooded.load(Ordering::Relaxed);
    eprintln!(
        "flooded {} MiB, reader got {flood_lines} flood lines and {} markers; RSS {} -> peak {} MiB",
        total >> 20,
        markers.len(),
        rss_before >> 20,
        rss_peak >> 20
    );
    assert!(total >= flood_target);
    assert!(flood_lines > 1000);
    assert_eq!(markers, (0..sent).collect::<Vec<_>>(), "bob's lines, whole and in order");
    // The cut-off notice may follow bob's last line; wait for it if so.
    let flooder_left = flooder_left || {
        let mut r = BufReader::new(std::io::Cursor::new(rest).chain(reader));
        (0..100_000).any(|_| {
            let mut line = String::new();
            r.read_line(&mut line).unwrap_or(0) > 0 && line == "* flooder left (too slow)\n"
        })
    };
    assert!(flooder_left, "the others were not told the flooder left");
    let stats = server.stats();
    assert_eq!(stats.slow_consumer_disconnects, 1, "only the flooder is cut off: {stats}");
    assert!(matches!(read_end(&mut flooder), End::Eof | End::Reset | End::Data(_)));
    // Memory: three 1 MiB budgets and buffers, not the flood.
    assert!(
        rss_peak.saturating_sub(rss_before) < 48 << 20,
        "RSS grew from {} to {} MiB while {} MiB were flooded",
        rss_before >> 20,
        rss_peak >> 20,
        total >> 20
    );
    chatter.shutdown(std::net::Shutdown::Both).unwrap();
    draining.join().unwrap();
}

/// What holds today under a chat flood: whatever the flood does to the
/// members who cannot keep up, the server's memory stays within its
/// per-connection budgets, every member cut off is announced, and the room
/// still works for a member who joins afterwards.
#[test]
fn a_chat_flood_leaves_memory_bounded_and_the_room_usable() {
    use std::io::BufReader;
    use switchboard_handlers::Chat;
    use util::proc::rss_bytes;

    let server = start(Server::builder().workers(2), Chat::new(4096));
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
    wait_until("three members", || server.stats().open == 3);
    let rss_before = rss_bytes();
    let mut rss_peak = rss_before;
    let line = format!("{}\n", "f".repeat(4000));
    let flood = 64usize << 20;
    let mut sent = 0;
    while sent < flood {
        if flooder.write_all(line.as_bytes()).is_err() {
            break;
        }
        sent += line.len();
        if sent % (1 << 20) < line.len() {
            rss_peak = rss_peak.max(rss_bytes());
        }
    }
    assert!(sent >= flood, "the flooder was cut off after {sent} bytes");
    wait_until("the flood is processed", || server.stats().bytes_in >= flood as u64);
    rss_peak = rss_peak.max(rss_bytes());
    eprintln!(
        "flooded {} MiB; RSS {} -> peak {} MiB; {}",
        sent >> 20,
        rss_before >> 20,
        rss_peak >> 20,
        server.stats()
    );
    assert!(
        rss_peak.saturating_sub(rss_before) < 48 << 20,
        "RSS grew from {} to {} MiB while {} MiB were flooded",
        rss_before >> 20,
        rss_peak >> 20,
        sent >> 20
    );
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
    drop(server);
    for reader in readers.drain(..) {
        reader.join().unwrap();
    }
}
