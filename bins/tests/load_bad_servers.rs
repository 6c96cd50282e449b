//! `switchboard-load` against servers that misbehave, each a tiny fake in
//! the test: one that trickles its answer for ever (the run still ends
//! within its duration plus the drain timeout, and a signal while it waits
//! ends it within the interrupt grace), one that declares a 2^62-byte file
//! (a protocol error, reported, the connection closed), and one that never
//! accepts (the closing hint says the server did not accept before it
//! names the handler the mode needs).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::process::Signal;
use serde_json::Value;
use switchboard_bins::load::{no_answer_hint, INTERRUPT_GRACE, MAX_FILE_SIZE};
use switchboard_handlers::file::proto::{self, Header};
use switchboard_test_support::child::{run, Spawned};
use switchboard_test_support::TIMEOUT;

const LOAD: &str = env!("CARGO_BIN_EXE_switchboard-load");

/// What a fake server sends to each connection once it has read a request.
#[derive(Clone, Copy)]
enum Answer {
    /// A header declaring `size` bytes, then one byte every 20 ms.
    Trickle { size: u64 },
    /// A header declaring `size` bytes, then zeros as fast as they go.
    Flood { size: u64 },
}

/// A fake file server: each connection on a thread of its own, all of them
/// stopped (and joined) on drop.
struct Fake {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Fake {
    fn start(answer: Answer) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let accept = std::thread::spawn(move || {
            let mut conns = Vec::new();
            for s in listener.incoming() {
                if flag.load(Ordering::Acquire) {
                    break;
                }
                let Ok(s) = s else { continue };
                let flag = Arc::clone(&flag);
                conns.push(std::thread::spawn(move || serve(s, answer, &flag)));
            }
            for c in conns {
                let _ = c.join();
            }
        });
        Fake { addr, stop, accept: Some(accept) }
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wakes the accept loop, which then sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn serve(mut s: TcpStream, answer: Answer, stop: &AtomicBool) {
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.set_write_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut request = [0u8; 256];
    if !matches!(s.read(&mut request), Ok(n) if n > 0) {
        return;
    }
    let (size, pause, chunk) = match answer {
        Answer::Trickle { size } => (size, Duration::from_millis(20), 1),
        Answer::Flood { size } => (size, Duration::ZERO, 64 * 1024),
    };
    if s.write_all(&proto::encode(&Header::found("f", size, &[0; 16]))).is_err() {
        return;
    }
    let zeros = vec![0u8; chunk];
    // Bounded: at most the test's timeout's worth of trickling.
    let deadline = Instant::now() + TIMEOUT;
    while !stop.load(Ordering::Acquire) && Instant::now() < deadline {
        match s.write(&zeros) {
            Ok(_) => std::thread::sleep(pause),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {
            }
            Err(_) => return, // the client closed
        }
    }
}

fn json_of(stdout: &[u8]) -> Value {
    let text = String::from_utf8_lossy(stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn a_trickling_server_does_not_stretch_the_run_past_its_duration_and_drain_timeout() {
    let fake = Fake::start(Answer::Trickle { size: 1 << 30 });
    let (duration, drain) = (Duration::from_secs(1), Duration::from_secs(1));
    let started = Instant::now();
    let out = run(
        Command::new(LOAD).args([
            "file",
            "f",
            "-t",
            &fake.addr.to_string(),
            "-c",
            "2",
            "-d",
            "1s",
            "--drain-timeout",
            "1s",
            "-q",
            "--json",
        ]),
        TIMEOUT,
    );
    let took = started.elapsed();
    let v = json_of(&out.stdout);
    // Each connection's one download never completes: lost at the end.
    assert_eq!(v["messages"]["received"], 0, "{v}");
    assert_eq!(v["errors"]["lost"], 2, "{v}");
    assert_eq!(out.status.code(), Some(1));
    // The duration, the drain timeout, and the start and the connections of
    // a debug binary on busy cores (before: the drain went on while bytes
    // kept coming, up to 12 drain timeouts).
    let bound = duration + drain + Duration::from_secs(3);
    assert!(took < bound, "the run took {took:?}, more than {bound:?}");
}

#[test]
fn a_signal_while_waiting_for_a_trickling_server_ends_the_run_within_the_grace() {
    let fake = Fake::start(Answer::Trickle { size: 1 << 30 });
    let target = fake.addr.to_string();
    let mut cmd = Command::new(LOAD);
    cmd.args(["file", "f", "-t", &target, "-c", "2", "-d", "1s", "--drain-timeout", "10m", "-q"])
        .args(["--interval", "100ms"])
        .stdin(Stdio::null());
    let mut load = Spawned::spawn(&mut cmd);
    // The window's last interval is printed once sending has stopped: the
    // run is now waiting for the downloads in flight.
    load.line_where(TIMEOUT, |l| l.starts_with('[') && l.contains("-   1.00 s]"));
    let signalled = Instant::now();
    load.signal(Signal::INT);
    let status = load.wait(TIMEOUT);
    let took = signalled.elapsed();
    let out = load.stdout_so_far();
    assert!(out.contains("[interrupted: what ran until the signal]"), "{out}");
    // The two downloads in flight are lost: not a clean run.
    assert_eq!(status.code(), Some(1), "{out}{}", load.stderr_so_far());
    let bound = INTERRUPT_GRACE + Duration::from_secs(3);
    assert!(took < bound, "the run ended {took:?} after the signal, more than {bound:?}");
}

#[test]
fn a_header_declaring_2_pow_62_bytes_is_a_protocol_error() {
    let fake = Fake::start(Answer::Flood { size: 1 << 62 });
    let out = run(
        Command::new(LOAD).args([
            "file",
            "f",
            "-t",
            &fake.addr.to_string(),
            "-c",
            "1",
            "-d",
            "10m",
            "--drain-timeout",
            "1s",
            "-q",
            "--json",
        ]),
        TIMEOUT,
    );
    let v = json_of(&out.stdout);
    assert_eq!(v["errors"]["protocol"], 1, "{v}");
    assert_eq!(v["file"]["oversized"], 1, "{v}");
    // The size is not taken for the file's: nothing was downloaded.
    assert_eq!(v["file"]["file_size"], 0, "{v}");
    assert_eq!(v["bytes"], 0, "{v}");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let want = format!("declares {} bytes, more than {MAX_FILE_SIZE}", 1u64 << 62);
    assert!(stderr.contains(&want), "{stderr}");
    // Its one connection closed: the 10-minute run ended (the timeout of
    // `run` would have failed the test otherwise), and no hint blames the
    // protocol for a header that did come back.
    assert!(!stderr.contains("is this"), "{stderr}");
}

#[test]
fn a_server_that_never_accepts_is_named_as_such_not_the_protocol() {
    // Listening, never accepting: connections complete in the kernel's
    // backlog and nothing ever comes back.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = listener.local_addr().unwrap().to_string();
    for mode in [&["echo"][..], &["file", "f"], &["chat", "--connect-timeout", "300ms"]] {
        let hint = format!("switchboard-load: {}", no_answer_hint(mode[0]));
        let out = run(
            Command::new(LOAD).args(mode).args([
                "-t",
                &target,
                "-c",
                "2",
                "-d",
                "300ms",
                "--drain-timeout",
                "300ms",
                "-q",
            ]),
            TIMEOUT,
        );
        assert_eq!(out.status.code(), Some(1), "{mode:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let hints: Vec<&str> = stderr.lines().filter(|l| l.contains("server (switchboard-server")).collect();
        assert_eq!(hints, [hint.as_str()], "{mode:?}: {stderr}");
        assert!(hint.contains("the server did not accept them"), "{hint}");
    }
    drop(listener);
}
