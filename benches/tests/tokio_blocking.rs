//! The blocking-work baseline speaks the `blocking` example's protocol:
//! each line `q` answered `RESULT q` after the job, in request order, with
//! a connection's pipelined jobs running side by side (up to 16).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use switchboard_test_support::child::Spawned;

#[test]
fn answers_pipelined_lines_in_order_with_jobs_side_by_side() {
    let mut server = Spawned::spawn(Command::new(env!("CARGO_BIN_EXE_tokio-blocking")).args([
        "--listen",
        "127.0.0.1:0",
        "--job-ms",
        "200",
    ]));
    let addr = server.listening_addr();
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    let asked = Instant::now();
    (&s).write_all(b"a\nb\nc\nd\ne\n").expect("send");
    for q in ["a", "b", "c", "d", "e"] {
        let mut line = String::new();
        r.read_line(&mut line).expect("a reply within the deadline");
        assert_eq!(line, format!("RESULT {q}\n"));
    }
    let took = asked.elapsed();
    // Five jobs of 200 ms: at least one job's time, far less than five.
    assert!(took >= Duration::from_millis(200), "{took:?}");
    assert!(took < Duration::from_millis(800), "five pipelined jobs took {took:?}: not side by side");
    server.signal(rustix::process::Signal::KILL);
}

#[test]
fn refuses_a_bad_job_length() {
    let out = switchboard_test_support::child::run(
        Command::new(env!("CARGO_BIN_EXE_tokio-blocking")).args(["--job-ms", "soon"]),
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "tokio-blocking: --job-ms needs a number from 0 to 60000\n"
    );
}
