//! `switchboard-server` as a user runs it: flags, the first line, signals,
//! exit codes.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rustix::process::Signal;
use switchboard_test_support::child::{run, Spawned};
use switchboard_test_support::{connect, temp_dir, DescriptorBudget, TIMEOUT};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard-server");

/// A running `switchboard-server` and the address it printed.
struct Running {
    proc: Spawned,
    addr: SocketAddr,
}

fn spawn(args: &[&str]) -> Running {
    let mut cmd = Command::new(BIN);
    cmd.args(["--listen", "127.0.0.1:0"]).args(args).stdin(Stdio::null());
    let mut proc = Spawned::spawn(&mut cmd);
    let addr = proc.listening_addr();
    Running { proc, addr }
}

fn run_bin(args: &[&str]) -> Output {
    run(Command::new(BIN).args(args), TIMEOUT)
}

#[test]
fn echo_by_default_and_sigterm_drains_with_a_report() {
    let mut server = spawn(&["--workers", "2", "--grace", "5s"]);
    let mut s = connect(server.addr);
    s.write_all(b"hello\n").unwrap();
    let mut buf = [0u8; 6];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hello\n");
    server.proc.signal(Signal::TERM);
    // The idle client is drained after the quiet period: a clean EOF.
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    let status = server.proc.wait(TIMEOUT);
    assert!(status.success(), "{status}");
    let err = server.proc.stderr_so_far();
    assert!(err.contains("shutdown complete: 1 drained, 0 forced"), "{err}");
}

#[test]
fn sighup_drains_like_sigterm() {
    let mut server = spawn(&["--workers", "1", "--grace", "5s"]);
    let mut s = connect(server.addr);
    s.write_all(b"hello\n").unwrap();
    let mut buf = [0u8; 6];
    s.read_exact(&mut buf).unwrap();
    server.proc.signal(Signal::HUP);
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "a clean EOF, got {rest:?}");
    let status = server.proc.wait(TIMEOUT);
    assert!(status.success(), "{status}");
    let err = server.proc.stderr_so_far();
    assert!(err.contains("shutdown signal (SIGINT, SIGTERM or SIGHUP): draining"), "{err}");
    assert!(err.contains("shutdown complete: 1 drained, 0 forced"), "{err}");
    let out = server.proc.stdout_so_far();
    assert!(out.lines().last().unwrap().starts_with("shutdown complete: 1 drained, 0 forced"), "{out}");
}

#[test]
fn second_signal_forces_the_exit() {
    // A quiet period and grace far longer than the test: only the second
    // signal can end it in time.
    let mut server = spawn(&["--grace", "10m"]);
    let mut s = connect(server.addr);
    s.write_all(b"x").unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).unwrap();
    // Keep the connection busy so it never goes quiet.
    let addr = server.addr;
    let keep_busy = std::thread::spawn(move || {
        let deadline = Instant::now() + TIMEOUT;
        while Instant::now() < deadline {
            if s.write_all(b"y").is_err() || s.read_exact(&mut b).is_err() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    });
    server.proc.signal(Signal::INT);
    // The first signal closes the listener: wait for the server to say so,
    // then a new connection is refused while the busy one is still served.
    server.proc.wait_stderr("stopped accepting; draining connections", TIMEOUT);
    let refused = TcpStream::connect(addr).map(drop).map_err(|e| e.kind());
    assert_eq!(refused, Err(std::io::ErrorKind::ConnectionRefused), "a connect after the listener closed");
    assert!(!keep_busy.is_finished(), "the busy connection ended before the second signal");
    server.proc.signal(Signal::INT);
    let status = server.proc.wait(TIMEOUT);
    assert!(status.success(), "{status}");
    assert!(keep_busy.join().unwrap(), "the busy connection was not closed");
    // The busy connection, the only one, is forced.
    let err = server.proc.stderr_so_far();
    assert!(err.contains("shutdown complete: 0 drained, 1 forced"), "{err}");
}

#[test]
fn bad_flags_exit_2_with_usage() {
    for args in [&["--workers", "many"][..], &["--idle-timeout", "10"], &["--handler", "nope"], &["--bogus"]]
    {
        let out = run_bin(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("Usage") || err.contains("usage"), "{args:?}: {err}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn invalid_settings_are_refused_before_listening() {
    // Zero or out of range, for every numeric flag that cannot take it: the
    // usage and exit 2, never a server that listens.
    let cases: &[(&[&str], &str)] = &[
        (&["--workers", "0"], "'0' must be 1 to 1024"),
        (&["--workers", "1025"], "'1025' must be 1 to 1024"),
        (&["--max-connections", "0"], "'0' must be at least 1"),
        (&["--idle-timeout", "0s"], "'0s' must be more than 0"),
        (&["--udp-idle", "0ms"], "'0ms' must be more than 0"),
        (&["--stats-every", "0s"], "'0s' must be more than 0"),
        (&["--handshake-timeout", "0s"], "'0s' must be more than 0"),
        (&["--spin", "11ms"], "more than the 10ms"),
        (&["--handler", "chat", "--max-frame", "0"], "'0' must be at least 1 byte"),
        (&["--max-outbound", "0"], "'0' must be at least 1 byte"),
        (&["--max-outbound-total", "0B"], "'0B' must be at least 1 byte"),
        (
            &["--max-outbound", "2MiB", "--max-outbound-total", "1MiB"],
            "--max-outbound-total (1048576 B) must be at least --max-outbound (2097152 B)",
        ),
    ];
    for (args, why) in cases {
        let out = run_bin(&[&["--listen", "127.0.0.1:0"], *args].concat());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(why), "{args:?}: {err}");
        assert!(err.contains("Usage: switchboard-server"), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?} listened");
    }
    // Zero where it means something is taken: no chat rate limit, no spin,
    // no grace (force at once).
    let mut cmd = Command::new(BIN);
    cmd.args(["--listen", "127.0.0.1:0", "--handler", "chat", "--chat-rate", "0", "--spin", "0s"])
        .args(["--chat-room-rate", "0", "--grace", "0s"])
        .stdin(Stdio::null());
    let mut proc = Spawned::spawn(&mut cmd);
    proc.listening_addr();
    proc.signal(Signal::TERM);
    assert!(proc.wait(TIMEOUT).success());
}

#[test]
fn help_describes_the_handlers() {
    let out = run_bin(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for word in
        ["--handler", "--listen", "--workers", "--max-connections", "--idle-timeout", "--grace", "echo"]
    {
        assert!(help.contains(word), "--help lacks {word}");
    }
}

#[test]
fn a_low_descriptor_limit_turns_clients_away_and_recovers() {
    // A descriptor limit the server cannot raise: the connection budget is
    // derived from it, and clients beyond it are told so at once.
    let mut cmd = Command::new("bash");
    cmd.args(["-c", &format!("ulimit -n 32 && exec {BIN} --listen 127.0.0.1:0 --workers 1")])
        .stdin(Stdio::null());
    let mut proc = Spawned::spawn(&mut cmd);
    let addr = proc.listening_addr();
    let wait_log = |what: &str| proc.wait_stderr(what, TIMEOUT);
    // 32 − those open at start (standard streams, inherited pipes) − 4 − 2
    // − a reserve of half the rest: 11 when 5 were open.
    wait_log(" for connections");
    let log = proc.stderr_so_far();
    let budget =
        DescriptorBudget::from_log(&log).unwrap_or_else(|| panic!("no budget in {log}")).check(32, 1);
    wait_log(&format!("up to {budget} connections"));
    // More clients than descriptors; each says hello.
    let mut clients: Vec<TcpStream> = (0..40).map(|_| connect(addr)).collect();
    for c in clients.iter_mut() {
        c.write_all(b"hi").unwrap();
    }
    // Each is served or told the server is busy; none waits in the backlog.
    let mut served = Vec::new();
    for (i, mut c) in clients.drain(..).enumerate() {
        let mut b = [0u8; 2];
        c.read_exact(&mut b).unwrap_or_else(|e| panic!("client {i} left hanging: {e}"));
        if &b == b"hi" {
            served.push(c);
        } else {
            let mut rest = Vec::new();
            let _ = c.read_to_end(&mut rest);
            assert_eq!([&b[..], &rest].concat(), b"! server busy\n", "client {i}");
        }
    }
    assert_eq!(served.len(), budget);
    wait_log(&format!("connection limit ({budget}) reached"));
    // Free the budget: new clients are served.
    drop(served);
    let deadline = Instant::now() + TIMEOUT;
    let mut fresh = Vec::new();
    while fresh.len() < budget {
        assert!(Instant::now() < deadline, "only {} new clients served", fresh.len());
        let mut c = connect(addr);
        c.write_all(b"ok").unwrap();
        let mut b = [0u8; 2];
        if c.read_exact(&mut b).is_ok() && &b == b"ok" {
            fresh.push(c);
        } else {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[test]
fn each_handler_is_selected_by_its_flag() {
    let upper = spawn(&["--handler", "upper"]);
    let mut s = connect(upper.addr);
    s.write_all("straße".as_bytes()).unwrap();
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, "STRASSE".as_bytes());

    let chat = spawn(&["--handler", "chat", "--max-frame", "16"]);
    let s = connect(chat.addr);
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "* welcome guest-1\n");
    // --max-frame is the chat's line limit.
    w.write_all(b"0123456789abcdefg\n/who\n").unwrap();
    line.clear();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "! line too long\n");
    line.clear();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "* online: guest-1\n");
}

#[test]
fn file_handler_serves_the_client_a_verified_download() {
    let base = temp_dir("server-file");
    let (root, dest) = (base.path().join("root"), base.path().join("dest"));
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&dest).unwrap();
    let content: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(root.join("data 数据.bin"), &content).unwrap();
    let server = spawn(&["--handler", "file", "--root", root.to_str().unwrap()]);
    let client = env!("CARGO_BIN_EXE_switchboard-client");
    let addr = server.addr.to_string();
    let out = run(
        Command::new(client).args([&addr, "get", "data 数据.bin", "-o", dest.to_str().unwrap()]),
        TIMEOUT,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read(dest.join("data 数据.bin")).unwrap(), content);
    let out = run(Command::new(client).args([&addr, "list"]), TIMEOUT);
    assert!(out.status.success());
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.contains("300000") && listing.contains("data 数据.bin"), "{listing}");
    let out = run(
        Command::new(client).args([&addr, "get", "../etc/passwd", "-o", dest.to_str().unwrap()]),
        TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("outside root"));
    assert!(!dest.join("passwd").exists());
}

#[test]
fn file_handler_needs_a_usable_root() {
    let out = run_bin(&["--handler", "file"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--root"));
    let out =
        run_bin(&["--handler", "file", "--listen", "127.0.0.1:0", "--root", "/nonexistent/switchboard"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.trim_end().lines().last().unwrap().starts_with("switchboard-server: file root"), "{err}");
}
