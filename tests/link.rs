//! Outbound connections (links): `core/examples/forward.rs` run as a user
//! would run it, relaying to small backends in the test process, measured
//! through `/proc/PID`.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::Signal;
use switchboard_test_support::child::Spawned;
use switchboard_test_support::*;

/// The forwarder, relaying to `backend`, on a free loopback port.
fn forward(backend: &str) -> (Spawned, SocketAddr) {
    let bin = env!("CARGO_BIN_EXE_example-forward");
    let mut cmd = Command::new(bin);
    cmd.args(["--listen", "127.0.0.1:0", "--backend", backend]).env("RUST_LOG", "info");
    let mut proc = Spawned::spawn(&mut cmd);
    let first = proc.next_line(TIMEOUT).expect("a first line on stdout");
    assert!(first.starts_with("listening on "), "first line: {first:?}");
    let addr = first["listening on ".len()..].trim().parse().unwrap();
    (proc, addr)
}

/// Stops the forwarder with SIGTERM; returns its report line and stats line.
fn stop(mut proc: Spawned) -> (String, String) {
    proc.signal(Signal::TERM);
    let report = proc.line_where(TIMEOUT, |l| l.starts_with("shutdown complete"));
    let stats = proc.line_where(TIMEOUT, |l| l.starts_with("stats: "));
    let status = proc.wait(TIMEOUT);
    assert!(status.success(), "{status}; stderr:\n{}", proc.stderr_so_far());
    (report, stats)
}

/// The figure `label` of a stats line (`... link-failures 2 ...`).
fn figure(stats: &str, label: &str) -> u64 {
    let mut words = stats.split_whitespace();
    while let Some(w) = words.next() {
        if w == label {
            return words.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{label} in {stats}"));
        }
    }
    panic!("no {label} in {stats}")
}

/// A backend on a free loopback port that runs `serve` on a thread per
/// connection; returns its address and how many it accepted.
fn backend<F>(serve: F) -> (SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(TcpStream) + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    let serve = Arc::new(serve);
    thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(s) = s else { continue };
            count.fetch_add(1, Ordering::SeqCst);
            let serve = Arc::clone(&serve);
            thread::spawn(move || serve(s));
        }
    });
    (addr, accepted)
}

/// Echoes until EOF, then half-closes.
fn echo(mut s: TcpStream) {
    let mut buf = vec![0; 64 << 10];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if s.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
    let _ = s.shutdown(Shutdown::Write);
}

/// Writes `data` on one thread while reading as many bytes back on this
/// one; returns them.
fn echo_through(s: TcpStream, data: Arc<Vec<u8>>) -> Vec<u8> {
    let mut w = s.try_clone().unwrap();
    let sent = Arc::clone(&data);
    let writer = thread::spawn(move || {
        for chunk in sent.chunks(16 << 10) {
            w.write_all(chunk).unwrap();
        }
    });
    let mut got = vec![0; data.len()];
    (&s).read_exact(&mut got).unwrap();
    writer.join().unwrap();
    got
}

#[test]
fn bytes_go_both_ways_in_order_for_100_clients_at_once() {
    let (back, _) = backend(echo);
    let (proc, addr) = forward(&back.to_string());
    let clients: Vec<_> = (0..100u64)
        .map(|i| {
            thread::spawn(move || {
                let data = Arc::new(random_bytes(1 << 20, i + 1));
                let s = connect(addr);
                let got = echo_through(s.try_clone().unwrap(), Arc::clone(&data));
                assert!(got == *data, "client {i}: the bytes came back changed");
                s.shutdown(Shutdown::Write).unwrap();
                assert_eq!(read_end(&mut &s), End::Eof, "client {i}: a clean end");
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let (_, stats) = stop(proc);
    assert_eq!(figure(&stats, "links"), 100, "{stats}");
    assert_eq!(figure(&stats, "link-failures"), 0, "{stats}");
    assert_eq!(figure(&stats, "in"), 100 << 20, "{stats}");
    assert_eq!(figure(&stats, "link-in"), 100 << 20, "{stats}");
}

#[test]
fn a_unix_socket_backend_is_relayed_like_a_tcp_one() {
    let dir = temp_dir("link");
    let path = dir.path().join("backend.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        got.reverse();
        s.write_all(&got).unwrap();
    });
    let (proc, addr) = forward(&format!("unix:{}", path.display()));
    let mut s = connect(addr);
    s.write_all(b"over a unix socket").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).unwrap();
    assert_eq!(reply, b"tekcos xinu a revo");
    let (_, stats) = stop(proc);
    assert_eq!((figure(&stats, "links"), figure(&stats, "link-out")), (1, 18), "{stats}");
}

#[test]
fn after_the_backend_half_closes_the_clients_later_bytes_still_reach_it() {
    let (got_tx, got_rx) = mpsc::channel();
    let got_tx = Mutex::new(got_tx);
    let (back, _) = backend(move |mut s| {
        s.write_all(b"hello").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        got_tx.lock().unwrap().send(got).unwrap();
    });
    let (proc, addr) = forward(&back.to_string());
    let mut s = connect(addr);
    assert_eq!(read_exact(&mut s, 5), b"hello");
    assert_eq!(read_end(&mut s), End::Eof, "the backend's EOF is passed on");
    let later = random_bytes(1000, 7);
    s.write_all(&later).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(got_rx.recv_timeout(TIMEOUT).unwrap(), later);
    assert_eq!(read_end(&mut s), End::Eof);
    stop(proc);
}

#[test]
fn after_the_client_half_closes_the_backends_late_reply_reaches_it() {
    let (back, _) = backend(|mut s| {
        let mut request = Vec::new();
        s.read_to_end(&mut request).unwrap();
        let mut reply = b"late reply to ".to_vec();
        reply.extend_from_slice(&request);
        s.write_all(&reply).unwrap();
    });
    let (proc, addr) = forward(&back.to_string());
    let mut s = connect(addr);
    s.write_all(b"a request").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).unwrap();
    assert_eq!(reply, b"late reply to a request");
    let (_, stats) = stop(proc);
    assert_eq!(figure(&stats, "out"), reply.len() as u64, "{stats}");
}

/// Byte `i` of the firehose.
fn pattern(i: u64) -> u8 {
    (i.wrapping_mul(7) ^ (i >> 12)) as u8
}

#[test]
fn a_client_that_stops_reading_loses_nothing_and_the_server_stays_small() {
    const TOTAL: u64 = 200 << 20;
    let (back, _) = backend(|mut s| {
        // (Read what the client sent: a close with unread bytes is a reset.)
        assert_eq!(read_exact(&mut s, 2), b"go");
        let mut buf = vec![0; 64 << 10];
        let mut at = 0u64;
        while at < TOTAL {
            for (j, b) in buf.iter_mut().enumerate() {
                *b = pattern(at + j as u64);
            }
            s.write_all(&buf).unwrap();
            at += buf.len() as u64;
        }
    });
    let (proc, addr) = forward(&back.to_string());
    let mut s = connect(addr);
    s.write_all(b"go").unwrap();
    // The client reads nothing for 3 s (the scenario, not a wait).
    thread::sleep(Duration::from_secs(3));
    let mut buf = vec![0; 256 << 10];
    let mut at = 0u64;
    loop {
        let n = s.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        for (j, &b) in buf[..n].iter().enumerate() {
            assert_eq!(b, pattern(at + j as u64), "byte {}", at + j as u64);
        }
        at += n as u64;
    }
    assert_eq!(at, TOTAL, "every byte arrived");
    let peak = proc.pid().peak_rss_bytes();
    let (_, stats) = stop(proc);
    assert!(peak < 64 << 20, "peak RSS {peak} B");
    assert_eq!(figure(&stats, "slow-consumers"), 0, "{stats}");
    assert_eq!(figure(&stats, "out"), TOTAL, "{stats}");
}

#[test]
fn a_refused_or_silent_backend_closes_the_client_cleanly_with_the_reason_logged_and_counted() {
    // Refused: a port nothing listens on any more.
    let refused = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let (proc, addr) = forward(&refused.to_string());
    let mut s = connect(addr);
    assert_eq!(read_end(&mut s), End::Eof, "a clean close, no reset");
    proc.wait_stderr(&format!("link to {refused} failed: Connection refused"), TIMEOUT);
    let (_, stats) = stop(proc);
    assert_eq!((figure(&stats, "link-failures"), figure(&stats, "links")), (1, 0), "{stats}");

    // Silent: a listener that never accepts, its backlog full, so the
    // connect never completes (the connect timeout, 5 s, ends it).
    let silent = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    silent.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
    silent.listen(1).unwrap();
    let at = silent.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    loop {
        match TcpStream::connect_timeout(&at, Duration::from_millis(300)) {
            Ok(s) => fillers.push(s),
            Err(_) => break,
        }
        assert!(fillers.len() < 64, "the backlog never filled");
    }
    let (proc, addr) = forward(&at.to_string());
    let started = Instant::now();
    let mut s = connect(addr);
    assert_eq!(read_end(&mut s), End::Eof, "a clean close, no reset");
    assert!(started.elapsed() >= Duration::from_millis(4500), "closed after {:?}", started.elapsed());
    proc.wait_stderr(&format!("link to {at} failed: connect timed out"), TIMEOUT);
    let (_, stats) = stop(proc);
    assert_eq!((figure(&stats, "link-failures"), figure(&stats, "links")), (1, 0), "{stats}");
}

#[test]
fn sigterm_lets_every_relayed_transfer_finish() {
    const CLIENTS: usize = 8;
    const EACH: usize = 16 << 20;
    let (back, _) = backend(echo);
    let (mut proc, addr) = forward(&back.to_string());
    let moved: Arc<Vec<AtomicUsize>> = Arc::new((0..CLIENTS).map(|_| AtomicUsize::new(0)).collect());
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let moved = Arc::clone(&moved);
            let s = connect(addr);
            thread::spawn(move || {
                let data = random_bytes(EACH, i as u64 + 100);
                let mut w = s.try_clone().unwrap();
                let writer = thread::spawn(move || {
                    // Paced (the scenario, not a wait): 16 MiB take over 2 s,
                    // so every transfer is in progress when SIGTERM comes,
                    // and never quiet for the drain's quiet period.
                    for chunk in data.chunks(64 << 10) {
                        w.write_all(chunk).unwrap();
                        thread::sleep(Duration::from_millis(8));
                    }
                    w.shutdown(Shutdown::Write).unwrap();
                    data
                });
                let mut got = Vec::with_capacity(EACH);
                let mut buf = vec![0; 64 << 10];
                loop {
                    let n = (&s).read(&mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..n]);
                    moved[i].fetch_add(n, Ordering::SeqCst);
                }
                let data = writer.join().unwrap();
                assert!(
                    got == data,
                    "client {i}: {} of {} bytes came back, or changed",
                    got.len(),
                    data.len()
                );
            })
        })
        .collect();
    wait_until("every transfer is under way", || moved.iter().all(|m| m.load(Ordering::SeqCst) >= 1 << 20));
    proc.signal(Signal::TERM);
    for c in clients {
        if c.join().is_err() {
            panic!("a relayed transfer failed; the forwarder's stderr:\n{}", proc.stderr_so_far());
        }
    }
    let report = proc.line_where(TIMEOUT, |l| l.starts_with("shutdown complete"));
    assert!(report.starts_with(&format!("shutdown complete: {CLIENTS} drained, 0 forced")), "{report}");
    assert!(proc.wait(TIMEOUT).success());
}

#[test]
fn the_thread_count_is_the_same_with_no_and_with_1000_relayed_connections() {
    raise_fd_limit();
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = Arc::clone(&held);
    // A backlog for every connection at once: past a full accept queue a
    // connect completes on the connecting side only.
    let listener = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    listener.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
    listener.listen(1024).unwrap();
    let listener = TcpListener::from(listener);
    let back = listener.local_addr().unwrap();
    thread::spawn(move || {
        for s in listener.incoming().flatten() {
            keep.lock().unwrap().push(s);
        }
    });
    let (proc, addr) = forward(&back.to_string());
    let idle = proc.pid().threads();
    let mut clients = Vec::new();
    for batch in 1..=10 {
        clients.extend((0..100).map(|_| connect(addr)));
        wait_until("the backend has every relayed connection", || held.lock().unwrap().len() == batch * 100);
    }
    // One byte each way through every pair.
    for c in &clients {
        (&*c).write_all(b"x").unwrap();
    }
    for b in held.lock().unwrap().iter_mut() {
        b.set_read_timeout(Some(TIMEOUT)).unwrap();
        assert_eq!(read_exact(b, 1), b"x");
        b.write_all(b"y").unwrap();
    }
    for mut c in clients.iter() {
        assert_eq!(read_exact(&mut c, 1), b"y");
    }
    assert_eq!(proc.pid().threads(), idle, "threads with 1000 relayed connections");
    drop(clients);
    let (_, stats) = stop(proc);
    assert_eq!(figure(&stats, "links"), 1000, "{stats}");
}
