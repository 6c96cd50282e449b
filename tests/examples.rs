//! The core's examples (`core/examples/`), run as the processes a user
//! would run: each takes `--listen ADDR`, prints `listening on ADDR` first,
//! serves its protocol, and drains on SIGTERM, printing the report.

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::process::Command;

use rustix::process::Signal;
use switchboard::{Framing, Prefix};
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
