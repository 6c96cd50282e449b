//! `switchboard-server`'s lifecycle as a user sees it: configuration errors
//! in one line with one cause, and the shutdown report on stdout.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard-server");
const TIMEOUT: Duration = Duration::from_secs(20);

/// Runs the server with `args` until it exits; fails the test (killing it)
/// if it is still running after the timeout.
fn run_to_exit(args: &[&str]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + TIMEOUT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server kept running with {args:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn a_grace_that_overflows_is_one_clear_error_at_start() {
    let out = run_to_exit(&["--listen", "127.0.0.1:0", "--grace", "18446744073709551615s"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(
            "switchboard-server: invalid configuration: grace must be at most 100 years \
             (3153600000s), not 18446744073709551615s"
        ),
        "{err}"
    );
    // Nothing was served: no "listening" line.
    assert!(out.stdout.is_empty());
}

#[test]
fn an_address_in_use_names_its_cause_once() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = run_to_exit(&["--listen", &addr]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap_or("");
    assert!(last.starts_with(&format!("switchboard-server: cannot listen on {addr}: ")), "{err}");
    assert_eq!(last.matches("in use").count(), 1, "{last}");
}

#[test]
fn the_shutdown_report_goes_to_stdout() {
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--workers", "1", "--grace", "10s"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    let addr: SocketAddr = first.trim().strip_prefix("listening on ").unwrap().parse().unwrap();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(b"x").unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).unwrap();
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    // The quiet connection drains: EOF.
    assert_eq!(s.read(&mut b).unwrap(), 0);
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the server did not exit");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success());
    assert!(rest.starts_with("shutdown complete: 1 drained, 0 forced, in "), "{rest:?}");
    assert_eq!(rest.lines().count(), 1, "{rest:?}");
}
