//! The core's examples (`core/examples/`), run as the processes a user
//! would run: each takes `--listen ADDR`, prints `listening on ADDR` first,
//! serves its protocol, and drains on SIGTERM, printing the report.

use std::net::TcpStream;
use std::process::Command;

use rustix::process::Signal;
use switchboard_test_support::child::Spawned;
use switchboard_test_support::*;

/// Starts the example built as `bin` on a free loopback port.
fn example(bin: &str) -> (Spawned, std::net::SocketAddr) {
    let mut proc = Spawned::spawn(Command::new(bin).args(["--listen", "127.0.0.1:0"]));
    let first = proc.next_line(TIMEOUT).expect("a first line on stdout");
    assert!(first.starts_with("listening on "), "first line: {first:?}");
    let addr = first["listening on ".len()..].trim().parse().unwrap();
    (proc, addr)
}

/// SIGTERM: the open connection `open` (quiet, every reply delivered) is
/// drained, the report says so, and the process exits 0.
fn sigterm_drains(mut proc: Spawned, mut open: TcpStream) {
    proc.signal(Signal::TERM);
    assert_eq!(read_end(&mut open), End::Eof, "the connection is closed cleanly");
    let report = proc.line_where(TIMEOUT, |l| l.starts_with("shutdown complete"));
    assert!(report.starts_with("shutdown complete: 1 drained, 0 forced, in "), "{report:?}");
    let status = proc.wait(TIMEOUT);
    assert!(status.success(), "{status}; stderr:\n{}", proc.stderr_so_far());
}

#[test]
fn reverse_answers_and_drains_on_sigterm() {
    let (proc, addr) = example(env!("CARGO_BIN_EXE_example-reverse"));
    let mut s = connect(addr);
    assert_eq!(round_trip(&mut s, "héllo\n".as_bytes()), "olléh\n".as_bytes());
    sigterm_drains(proc, s);
}

#[test]
fn reverse_refuses_a_bad_flag_with_its_usage() {
    let out = child::run(Command::new(env!("CARGO_BIN_EXE_example-reverse")).arg("--port"), TIMEOUT);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "usage: reverse [--listen ADDR]\n");
}
