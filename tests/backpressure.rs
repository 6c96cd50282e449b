//! Backpressure for a producer on another thread (`ConnHandle::wait_below`)
//! and for the session (`Handler::on_drained`): a relay to a reader that
//! stops reading loses nothing, is never cut off as a slow consumer, and
//! keeps the server's memory bounded.

use std::io::{Read, Write};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchboard::{Conn, Flow, Framing, Handler, Server, WaitError};
use switchboard_test_support::child::Spawned;
use switchboard_test_support::*;

/// Reads `total` bytes of the relay's pattern (byte `i` is `i % 251`) and
/// then the EOF; panics on a wrong byte.
fn read_pattern(s: &mut impl Read, from: u64, total: u64) -> u64 {
    let mut buf = vec![0u8; 256 << 10];
    let mut at = from;
    while at < total {
        let n = s.read(&mut buf).expect("read the relay");
        assert!(n > 0, "EOF after {at} of {total} bytes");
        for (k, &b) in buf[..n].iter().enumerate() {
            let i = at + k as u64;
            assert_eq!(u64::from(b), i % 251, "byte {i}");
        }
        at += n as u64;
    }
    at
}

#[test]
fn a_relay_of_200_mib_to_a_reader_that_pauses_loses_nothing_in_bounded_server_memory() {
    let mut proc = Spawned::spawn(Command::new(env!("CARGO_BIN_EXE_example-relay")).args([
        "--listen",
        "127.0.0.1:0",
        "--mib",
        "200",
    ]));
    let addr = proc.listening_addr();
    let total = 200u64 << 20;
    let mut s = connect(addr);
    let got = read_pattern(&mut s, 0, 1 << 20);
    // The reader stops for 3 s: the producer must wait, not be cut off
    // (the outbound budget is 1 MiB) nor queue the rest in memory.
    std::thread::sleep(Duration::from_secs(3));
    let paused_rss = proc.pid().rss_bytes();
    assert_eq!(read_pattern(&mut s, got, total), total);
    assert_eq!(read_end(&mut s), End::Eof, "closed by the producer once all was sent");
    let peak = proc.pid().peak_rss_bytes();
    assert!(peak < 64 << 20, "server peak RSS {peak} bytes (while paused: {paused_rss})");
    proc.signal(rustix::process::Signal::TERM);
    let report = proc.line_where(TIMEOUT, |l| l.starts_with("shutdown complete"));
    // (The connection may still be lingering for the reader's EOF: then it
    // is drained, never forced.)
    assert!(report.contains(" drained, 0 forced, in "), "{report:?}");
    let status = proc.wait(TIMEOUT);
    assert!(status.success(), "{status}; stderr:\n{}", proc.stderr_so_far());
    assert!(!proc.stderr_so_far().contains("slow consumer"), "{}", proc.stderr_so_far());
}

/// Counts `on_drained` calls; every line is answered with 64 KiB.
struct Big {
    drained: Arc<AtomicUsize>,
}

impl Handler for Big {
    type Session = ();
    fn framing(&self) -> Framing {
        Framing::lines(64)
    }
    fn open(&self, _: &mut Conn<'_>) {}
    fn frame(&self, _: &mut (), _: &[u8], conn: &mut Conn<'_>) -> Flow {
        conn.send(vec![b'x'; 64 << 10]);
        Flow::Continue
    }
    fn on_drained(&self, _: &mut (), conn: &mut Conn<'_>) -> Flow {
        self.drained.fetch_add(1, Ordering::Relaxed);
        conn.send(b"drained\n");
        Flow::Continue
    }
}

#[test]
fn on_drained_runs_when_a_queue_over_the_high_water_mark_drains() {
    let drained = Arc::new(AtomicUsize::new(0));
    let builder = Server::builder().workers(1).max_outbound(1 << 20).high_water(128 << 10);
    let server = start(builder, Big { drained: Arc::clone(&drained) });
    let mut s = connect(server.local_addr());
    // 4 lines: 256 KiB of replies, over the 128 KiB mark while the client
    // does not read.
    s.write_all(b"a\nb\nc\nd\n").unwrap();
    let want = 4 * (64 << 10) + b"drained\n".len();
    let got = read_exact(&mut s, want);
    assert_eq!(got.windows(8).filter(|w| w == b"drained\n").count(), 1, "the callback's reply, once");
    assert_eq!(got.iter().filter(|&&b| b == b'x').count(), 4 * (64 << 10));
    assert_eq!(drained.load(Ordering::Relaxed), 1);
}

#[test]
fn wait_below_returns_at_once_under_the_mark_and_says_why_it_gives_up() {
    let (handles, taken) = crossbeam_channel::unbounded();
    let handler = switchboard::handler_fn(Framing::lines(64), move |_, conn| {
        let _ = handles.send(conn.handle());
        Flow::Continue
    });
    let server = start(Server::builder().workers(1).max_outbound(64 << 20), handler);
    let mut s = connect(server.local_addr());
    s.write_all(b"x\n").unwrap();
    let h = taken.recv_timeout(TIMEOUT).unwrap();
    assert_eq!(h.wait_below(1, Duration::from_secs(5)), Ok(()), "nothing queued");
    // The client reads nothing: 32 MiB is more than the loopback socket
    // buffers hold, so waiting for an empty queue times out.
    h.send(vec![0u8; 32 << 20]).unwrap();
    let started = Instant::now();
    let short = Duration::from_millis(300);
    assert_eq!(h.wait_below(1, short), Err(WaitError::TimedOut));
    assert!(started.elapsed() >= short, "gave up after {:?}", started.elapsed());
    drop(s);
    // The peer is gone: the connection closes and the waiter hears of it.
    assert_eq!(h.wait_below(1, TIMEOUT), Err(WaitError::Closed));
}
