//! The core's examples (`core/examples/`), run as the processes a user
//! would run: each takes `--listen ADDR`, prints `listening on ADDR` first,
//! serves its protocol, and drains on SIGTERM, printing the report.

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use rustix::process::Signal;
use switchboard::{Framing, Prefix};
use switchboard_test_support::child::Spawned;
use switchboard_test_support::*;

/// Starts the example built as `bin` on a free loopback port.
fn example(bin: &str) -> (Spawned, std::net::SocketAddr) {
    example_with(bin, &[])
}

/// As [`example`], with more flags.
fn example_with(bin: &str, flags: &[&str]) -> (Spawned, std::net::SocketAddr) {
    let mut proc = Spawned::spawn(Command::new(bin).args(["--listen", "127.0.0.1:0"]).args(flags));
    let first = proc.next_line(TIMEOUT).expect("a first line on stdout");
    assert!(first.starts_with("listening on "), "first line: {first:?}");
    let addr = first["listening on ".len()..].trim().parse().unwrap();
    (proc, addr)
}

/// SIGTERM: the connections `open` (quiet, every reply delivered) are
/// drained, the report says so, and the process exits 0.
fn sigterm_drains(mut proc: Spawned, open: Vec<TcpStream>) {
    proc.signal(Signal::TERM);
    for mut s in open.iter() {
        assert_eq!(read_end(&mut s), End::Eof, "the connection is closed cleanly");
    }
    let report = proc.line_where(TIMEOUT, |l| l.starts_with("shutdown complete"));
    let want = format!("shutdown complete: {} drained, 0 forced, in ", open.len());
    assert!(report.starts_with(&want), "{report:?}");
    let status = proc.wait(TIMEOUT);
    assert!(status.success(), "{status}; stderr:\n{}", proc.stderr_so_far());
}

#[test]
fn reverse_answers_and_drains_on_sigterm() {
    let (proc, addr) = example(env!("CARGO_BIN_EXE_example-reverse"));
    let mut s = connect(addr);
    assert_eq!(round_trip(&mut s, "héllo\n".as_bytes()), "olléh\n".as_bytes());
    sigterm_drains(proc, vec![s]);
}

#[test]
fn kv_stores_expires_and_broadcasts_changes_to_watchers() {
    let (proc, addr) = example(env!("CARGO_BIN_EXE_example-kv"));
    let watcher = connect(addr);
    let mut w = BufReader::new(watcher.try_clone().unwrap());
    (&watcher).write_all(b"WATCH\n").unwrap();
    assert_eq!(read_line(&mut w), "OK\n");
    let client = connect(addr);
    let mut c = BufReader::new(client.try_clone().unwrap());
    let mut ask = |line: &str| {
        (&client).write_all(line.as_bytes()).unwrap();
        read_line(&mut c)
    };
    assert_eq!(ask("GET colour\n"), "NONE\n");
    assert_eq!(ask("SET colour deep blue\n"), "OK\n");
    // From the broadcaster's thread, through the watcher's handle.
    assert_eq!(read_line(&mut w), "CHANGED colour\n");
    assert_eq!(ask("GET colour\n"), "VALUE deep blue\n");
    assert_eq!(ask("EXPIRE colour 100\n"), "OK\n");
    // The connection's timer fires and the watcher hears of it.
    assert_eq!(read_line(&mut w), "EXPIRED colour\n");
    assert_eq!(ask("GET colour\n"), "NONE\n");
    assert_eq!(ask("EXPIRE colour 100\n"), "NONE\n");
    assert_eq!(ask("FLY away\n"), "ERR usage: SET key value | GET key | DEL key | EXPIRE key ms | WATCH\n");
    // A value that cannot go back out as a line is refused, not sent broken.
    assert_eq!(ask("SET cr x\r\r\n"), "OK\n");
    assert_eq!(read_line(&mut w), "CHANGED cr\n");
    assert_eq!(ask("GET cr\n"), "ERR the reply cannot be sent: a line ending at byte 7 inside a line\n");
    sigterm_drains(proc, vec![watcher, client]);
}

/// One request or reply frame of the RPC example: a 4-byte big-endian
/// length, then the body.
fn rpc_frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    Framing::length_prefixed(Prefix::U32Be, 64 * 1024).encode(body, &mut out).unwrap();
    out
}

fn rpc_reply(s: &mut TcpStream) -> String {
    let len = u32::from_be_bytes(read_exact(s, 4).try_into().unwrap());
    String::from_utf8(read_exact(s, len as usize)).unwrap()
}

#[test]
fn rpc_answers_in_frames_skips_a_small_overrun_and_closes_on_a_huge_claim() {
    let (proc, addr) = example(env!("CARGO_BIN_EXE_example-rpc"));
    let mut s = connect(addr);
    // Three requests in one write: three replies, in order.
    let mut requests = rpc_frame(b"echo hi there");
    requests.extend(rpc_frame(b"sum 40 2 -5"));
    requests.extend(rpc_frame("upper straße".as_bytes()));
    s.write_all(&requests).unwrap();
    assert_eq!(rpc_reply(&mut s), "ok hi there");
    assert_eq!(rpc_reply(&mut s), "ok 37");
    assert_eq!(rpc_reply(&mut s), "ok STRASSE");
    // One byte over the maximum: an error reply, the body skipped, and
    // the connection goes on.
    let mut over = (64u32 * 1024 + 1).to_be_bytes().to_vec();
    over.extend(vec![b'x'; 64 * 1024 + 1]);
    over.extend(rpc_frame(b"sum 1 1"));
    s.write_all(&over).unwrap();
    assert_eq!(rpc_reply(&mut s), "err a 65537-byte request, over the 65536-byte maximum");
    assert_eq!(rpc_reply(&mut s), "ok 2");
    // An upper-cased text that outgrows the maximum: an error, not a
    // broken frame.
    let mut grows = b"upper ".to_vec();
    // (ΐ: 2 bytes; in upper case three code points of 2 bytes each.)
    grows.extend("ΐ".repeat(20_000).as_bytes());
    s.write_all(&rpc_frame(&grows)).unwrap();
    assert_eq!(
        rpc_reply(&mut s),
        "err the reply cannot be sent: a 120003-byte frame, over the 65536-byte maximum"
    );
    // The attack: a 4 GiB claim, then bytes as fast as the server reads.
    // The connection closes at once instead of reading 4 GiB to skip them.
    let mut attacker = connect(addr);
    attacker.write_all(&u32::MAX.to_be_bytes()).unwrap();
    let chunk = vec![b'y'; 64 * 1024];
    let mut sent = 0usize;
    while attacker.write_all(&chunk).is_ok() {
        sent += chunk.len();
        assert!(sent < 256 << 20, "still accepted after {sent} bytes of a 4 GiB claim");
    }
    assert!(matches!(read_end(&mut attacker), End::Eof | End::Reset));
    proc.wait_stderr("a 4294967295-byte frame announced, over the 65536-byte maximum; closing", TIMEOUT);
    sigterm_drains(proc, vec![s]);
}

#[test]
fn every_example_refuses_a_bad_flag_with_its_usage() {
    for (bin, name) in [
        (env!("CARGO_BIN_EXE_example-reverse"), "reverse"),
        (env!("CARGO_BIN_EXE_example-kv"), "kv"),
        (env!("CARGO_BIN_EXE_example-rpc"), "rpc"),
    ] {
        let out = child::run(Command::new(bin).arg("--port"), TIMEOUT);
        assert_eq!(out.status.code(), Some(2), "{name}");
        assert_eq!(String::from_utf8_lossy(&out.stderr), format!("usage: {name} [--listen ADDR]\n"));
    }
}

/// A client of the blocking example: lines out, lines back.
struct LineClient {
    s: TcpStream,
    r: BufReader<TcpStream>,
}

impl LineClient {
    fn connect(addr: std::net::SocketAddr) -> LineClient {
        let s = connect(addr);
        let r = BufReader::new(s.try_clone().unwrap());
        LineClient { s, r }
    }
    fn send(&mut self, text: &str) {
        self.s.write_all(text.as_bytes()).unwrap();
    }
    fn line(&mut self) -> String {
        read_line(&mut self.r)
    }
}

/// An example whose every line `q` is answered `{answer} q` after `job`:
/// three lines in one write are answered in order, no sooner than a job;
/// 30 connections asking at once are answered side by side (far sooner
/// than 30 jobs one after the other); SIGTERM drains them all.
fn answers_in_order_and_side_by_side(proc: Spawned, addr: std::net::SocketAddr, answer: &str, job: Duration) {
    let mut c = LineClient::connect(addr);
    let asked = Instant::now();
    c.send("alpha\nbeta\ngamma\n");
    for q in ["alpha", "beta", "gamma"] {
        assert_eq!(c.line(), format!("{answer} {q}\n"));
    }
    assert!(asked.elapsed() >= job, "answered in {:?}, before a job's time", asked.elapsed());
    let mut many: Vec<LineClient> = (0..30).map(|_| LineClient::connect(addr)).collect();
    let asked = Instant::now();
    for (i, c) in many.iter_mut().enumerate() {
        c.send(&format!("q{i}\n"));
    }
    for (i, c) in many.iter_mut().enumerate() {
        assert_eq!(c.line(), format!("{answer} q{i}\n"));
    }
    let took = asked.elapsed();
    assert!(took < job * 15, "30 requests of {job:?} took {took:?}: not side by side");
    let mut open = vec![c.s];
    open.extend(many.into_iter().map(|c| c.s));
    sigterm_drains(proc, open);
}

/// SIGTERM right after a request whose answer (`{answer} late`) takes a
/// while: it still comes, then a clean EOF, and the report counts the
/// connection drained. (A first answer shows the connection accepted: one
/// still in the listen backlog when the drain starts is reset.)
fn sigterm_delivers_the_answer_in_progress(mut proc: Spawned, addr: std::net::SocketAddr, answer: &str) {
    let mut c = LineClient::connect(addr);
    c.send("first\n");
    assert_eq!(c.line(), format!("{answer} first\n"));
    c.send("late\n");
    proc.signal(Signal::TERM);
    assert_eq!(c.line(), format!("{answer} late\n"));
    assert_eq!(read_end(&mut c.r), End::Eof);
    let report = proc.line_where(TIMEOUT, |l| l.starts_with("shutdown complete"));
    assert!(report.starts_with("shutdown complete: 1 drained, 0 forced, in "), "{report:?}");
    let status = proc.wait(TIMEOUT);
    assert!(status.success(), "{status}; stderr:\n{}", proc.stderr_so_far());
}

#[test]
fn blocking_answers_in_order_and_runs_connections_side_by_side() {
    let (proc, addr) = example_with(env!("CARGO_BIN_EXE_example-blocking"), &["--job-ms", "100"]);
    answers_in_order_and_side_by_side(proc, addr, "RESULT", Duration::from_millis(100));
}

#[test]
fn blocking_pool_serves_a_new_request_before_another_connections_backlog() {
    // One pool thread: a connection with a backlog and one with a single
    // request share it in turn.
    let job = Duration::from_millis(300);
    let (proc, addr) =
        example_with(env!("CARGO_BIN_EXE_example-blocking"), &["--job-ms", "300", "--threads", "1"]);
    let mut heavy = LineClient::connect(addr);
    heavy.send(&(0..20).map(|i| format!("h{i}\n")).collect::<String>());
    assert_eq!(heavy.line(), "RESULT h0\n");
    let mut light = LineClient::connect(addr);
    let asked = Instant::now();
    light.send("one\n");
    assert_eq!(light.line(), "RESULT one\n");
    let waited = asked.elapsed();
    // Its own job and at most one of the backlog's (and some slack for a
    // busy machine), not the 19 left.
    assert!(waited < job * 2 + Duration::from_millis(400), "the single request waited {waited:?}");
    for i in 1..20 {
        assert_eq!(heavy.line(), format!("RESULT h{i}\n"));
    }
    sigterm_drains(proc, vec![heavy.s, light.s]);
}

#[test]
fn blocking_frame_timeout_does_not_lose_replies_held_behind_a_job() {
    // Jobs longer than the frame timeout, with requests held behind them:
    // every reply arrives, none is cut off as a slow sender.
    let (proc, addr) =
        example_with(env!("CARGO_BIN_EXE_example-blocking"), &["--job-ms", "1500", "--frame-timeout", "1s"]);
    let mut c = LineClient::connect(addr);
    c.send("a\nb\nc\n");
    for want in ["RESULT a\n", "RESULT b\n", "RESULT c\n"] {
        assert_eq!(c.line(), want);
    }
    sigterm_drains(proc, vec![c.s]);
}

#[test]
fn blocking_sigterm_waits_for_the_job_in_progress() {
    let (proc, addr) = example_with(env!("CARGO_BIN_EXE_example-blocking"), &["--job-ms", "500"]);
    sigterm_delivers_the_answer_in_progress(proc, addr, "RESULT");
}

#[test]
fn blocking_refuses_bad_flags_with_its_usage() {
    let bin = env!("CARGO_BIN_EXE_example-blocking");
    for (args, why) in [
        (&["--port", "1"][..], "unknown flag --port"),
        (&["--job-ms", "soon"][..], "--job-ms: \"soon\" is not a number"),
        (&["--job-ms", "60001"][..], "--job-ms: at most 60000, not 60001"),
        (&["--frame-timeout", "1h"][..], "--frame-timeout: \"1h\" is not a duration like 500ms or 2s"),
        (&["--listen"][..], "--listen needs a value"),
    ] {
        let out = child::run(Command::new(bin).args(args), TIMEOUT);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with(&format!("blocking: {why}\nusage: blocking ")), "{args:?}: {err}");
    }
    let out = child::run(Command::new(bin).args(["--threads", "0"]), TIMEOUT);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "blocking: invalid configuration: blocking threads must be 1 to 4096, not 0\n"
    );
}

#[test]
fn async_backend_answers_in_order_from_its_tokio_backend_and_drains() {
    let (proc, addr) = example_with(env!("CARGO_BIN_EXE_example-async-backend"), &["--delay-ms", "100"]);
    answers_in_order_and_side_by_side(proc, addr, "VALUE", Duration::from_millis(100));
}

#[test]
fn async_backend_sigterm_waits_for_a_lookup_in_flight() {
    let (proc, addr) = example_with(env!("CARGO_BIN_EXE_example-async-backend"), &["--delay-ms", "500"]);
    sigterm_delivers_the_answer_in_progress(proc, addr, "VALUE");
}

#[test]
fn async_backend_bounds_lookups_in_flight_and_reports_a_failed_backend() {
    // One lookup in flight at most: of two clients asking at once, one is
    // answered, the other told BUSY at once.
    let (proc, addr) = example_with(
        env!("CARGO_BIN_EXE_example-async-backend"),
        &["--delay-ms", "2000", "--max-lookups", "1"],
    );
    let mut a = LineClient::connect(addr);
    let mut b = LineClient::connect(addr);
    a.send("a\n");
    b.send("b\n");
    let got = [a.line(), b.line()];
    let one_busy =
        matches!((got[0].as_str(), got[1].as_str()), ("VALUE a\n", "BUSY b\n") | ("BUSY a\n", "VALUE b\n"));
    assert!(one_busy, "{got:?}");
    sigterm_drains(proc, vec![a.s, b.s]);

    // A backend that refuses connections: an error reply, the connection kept.
    let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let backend = gone.local_addr().unwrap().to_string();
    drop(gone);
    let (proc, addr) = example_with(env!("CARGO_BIN_EXE_example-async-backend"), &["--backend", &backend]);
    let mut c = LineClient::connect(addr);
    c.send("x\n");
    let line = c.line();
    assert!(line.starts_with("ERROR x: ") && line.contains("refused"), "{line:?}");
    sigterm_drains(proc, vec![c.s]);
}
