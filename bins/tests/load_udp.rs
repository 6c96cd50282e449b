//! `switchboard-load udp-echo`: what it counts against servers whose
//! behaviour the test sets (every datagram echoed, every tenth dropped,
//! pairs swapped); its per-interval lines and report at a signal.

use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};

use rustix::process::Signal;
use serde_json::Value;
use switchboard::datagram::{DatagramHandler, DatagramServer, Reply};
use switchboard::Flow;
use switchboard_test_support::child::{run, Spawned};
use switchboard_test_support::TIMEOUT;

const BIN: &str = env!("CARGO_BIN_EXE_switchboard-load");

/// How the test server treats the load's datagrams (numbered from 0 by
/// their first 8 bytes, little-endian).
#[derive(Clone, Copy)]
enum Behaviour {
    Echo,
    DropEveryTenth,
    SwapPairs,
}

struct TestServer(Behaviour);

impl DatagramHandler for TestServer {
    /// A datagram held back (swap pairs).
    type Peer = Option<Vec<u8>>;

    fn open(&self, _: &mut Reply<'_>) -> Option<Vec<u8>> {
        None
    }

    fn datagram(&self, held: &mut Option<Vec<u8>>, data: &[u8], out: &mut Reply<'_>) -> Flow {
        let seq = u64::from_le_bytes(data[..8].try_into().unwrap());
        match self.0 {
            Behaviour::Echo => out.send(data).unwrap(),
            Behaviour::DropEveryTenth if seq % 10 == 0 => {}
            Behaviour::DropEveryTenth => out.send(data).unwrap(),
            Behaviour::SwapPairs => match held.take() {
                None => *held = Some(data.to_vec()),
                Some(first) => {
                    out.send(data).unwrap();
                    out.send(&first).unwrap();
                }
            },
        }
        Flow::Continue
    }
}

fn load(addr: SocketAddr, args: &[&str]) -> (Output, Value) {
    let out = run(
        Command::new(BIN)
            .args(["udp-echo", "-t", &addr.to_string(), "--json", "--drain-timeout", "2s"])
            .args(args),
        TIMEOUT,
    );
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (out, json)
}

fn n(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("{key} in {v}"))
}

#[test]
fn closed_loop_gets_every_datagram_back_from_an_echo_server() {
    let server = DatagramServer::builder().start("127.0.0.1:0", TestServer(Behaviour::Echo)).unwrap();
    let (out, v) = load(server.local_addr(), &["-c", "4", "-n", "2000", "--depth", "2"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!((n(&v, "sent"), n(&v, "received"), n(&v, "lost"), n(&v, "bad")), (2000, 2000, 0, 0), "{v}");
    assert_eq!(server.stats().peers, 4, "one peer per socket");
}

#[test]
fn open_loop_counts_exactly_the_datagrams_the_server_dropped() {
    let server =
        DatagramServer::builder().start("127.0.0.1:0", TestServer(Behaviour::DropEveryTenth)).unwrap();
    let (out, v) = load(server.local_addr(), &["-c", "1", "-n", "1000", "--rate", "5000"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!((n(&v, "sent"), n(&v, "received"), n(&v, "lost")), (1000, 900, 100), "{v}");
    assert!((v["loss_pct"].as_f64().unwrap() - 10.0).abs() < 1e-9);
}

#[test]
fn reordered_echoes_are_counted() {
    let server = DatagramServer::builder().start("127.0.0.1:0", TestServer(Behaviour::SwapPairs)).unwrap();
    let (out, v) = load(server.local_addr(), &["-c", "1", "-n", "1000", "--rate", "5000"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!((n(&v, "received"), n(&v, "lost"), n(&v, "reordered")), (1000, 0, 500), "{v}");
}

#[test]
fn nothing_echoed_is_a_failure() {
    let server = DatagramServer::builder().start("127.0.0.1:0", TestServer(Behaviour::SwapPairs)).unwrap();
    // One datagram: held for ever by the server.
    let out = run(
        Command::new(BIN)
            .args(["udp-echo", "-t", &server.local_addr().to_string(), "-c", "1", "-n", "1"])
            .args(["--drain-timeout", "300ms"]),
        TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("sent 1  received 0  lost 1 (100.000%)"), "{text}");
}

/// `--interval` prints a line per interval while it runs; the first signal
/// stops sending, awaits what is in flight and prints the report of what
/// ran (exit 0), as in the TCP modes.
#[test]
fn intervals_then_sigint_report_what_ran() {
    let server = DatagramServer::builder().start("127.0.0.1:0", TestServer(Behaviour::Echo)).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["udp-echo", "-t", &server.local_addr().to_string(), "-c", "2", "-d", "10m"])
        .args(["--interval", "100ms", "--drain-timeout", "2s"])
        .stdin(Stdio::null());
    let mut load = Spawned::spawn(&mut cmd);
    // Running: two interval lines have come, each with a rate.
    for _ in 0..2 {
        let line = load.line_where(TIMEOUT, |l| l.starts_with('['));
        assert!(line.contains(" msg/s  p50 "), "{line}");
    }
    load.signal(Signal::INT);
    let status = load.wait(TIMEOUT);
    let out = load.stdout_so_far();
    assert!(status.success(), "{status}: {out}{}", load.stderr_so_far());
    assert!(out.contains("[interrupted: what ran until the signal]"), "{out}");
    // Every datagram sent before the signal came back: nothing lost.
    let counts = out.lines().find(|l| l.starts_with("sent ")).unwrap_or_else(|| panic!("{out}"));
    let field = |name: &str| -> u64 {
        let at = counts.find(name).unwrap_or_else(|| panic!("{name} in {counts}")) + name.len();
        counts[at..].split_whitespace().next().unwrap().parse().unwrap()
    };
    assert!(field("sent ") > 0, "{counts}");
    assert_eq!(field("sent "), field("received "), "{counts}");
    assert_eq!(field("lost "), 0, "{counts}");
}

#[test]
fn tcp_only_flags_are_refused() {
    for flag in [["--plot", "x.svg"], ["--threads", "2"], ["--hdr-out", "x.hgrm"]] {
        let out = run(Command::new(BIN).args(["udp-echo", "-t", "127.0.0.1:9"]).args(flag), TIMEOUT);
        assert_eq!(out.status.code(), Some(2), "{flag:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("udp-echo does not take {}", flag[0])), "{err}");
    }
}
