//! `switchboard-server`'s lifecycle as a user sees it: configuration errors
//! in one line with one cause, the shutdown report on stdout, and every
//! thread beside the server joined before it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rustix::process::Signal;
use switchboard_test_support::child::Spawned;
use switchboard_test_support::redis::TestRedis;
use switchboard_test_support::temp_dir;

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

/// What the server logs just before its report when every thread of its own
/// was joined: only the stdout writer and the signal thread are left.
const ALL_JOINED: &str = r#"every server thread joined; left beside main: ["ctrl-c", "stdout"]"#;

/// Runs the server with `args` (its stdin open to the end, as a terminal
/// nobody types on: one end of a socket pair the test holds, since a piped
/// stdin is closed when the test waits for the exit),
/// waits until its threads are exactly `running` (the names the system
/// keeps: 15 bytes at most), sends SIGTERM and checks that the report comes
/// once every thread but the stdout writer and the signal thread is joined.
/// With `drained` 1 a client connects first, sends `hello` and reads a
/// first byte of the answer.
fn threads_joined_before_the_report(args: &[&str], running: &[&str], drained: usize, hello: &[u8]) {
    let (terminal, stdin) = UnixStream::pair().unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", "info,switchboard_bins::threads=debug")
        .stdin(Stdio::from(OwnedFd::from(stdin)));
    let mut proc = Spawned::spawn(&mut cmd);
    let addr = proc.listening_addr();
    let member = (drained > 0).then(|| {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s.write_all(hello).unwrap();
        let mut first = [0u8; 1];
        s.read_exact(&mut first).unwrap();
        s
    });
    let mut want: Vec<String> = running.iter().map(|s| s.to_string()).collect();
    want.sort();
    let pid = proc.pid();
    // Connection attempts to Redis run on short-lived threads: wait for the
    // set to settle on exactly the threads of the server.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let now = pid.thread_names();
        if now == want {
            break;
        }
        assert!(Instant::now() < deadline, "threads {now:?}, want {want:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    proc.signal(Signal::TERM);
    let status = proc.wait(TIMEOUT);
    let out = proc.output(status);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{}\n{stderr}", out.status);
    assert!(stderr.contains(ALL_JOINED), "{stderr}");
    assert!(!stderr.contains("threads still running"), "{stderr}");
    let report = stdout.lines().last().unwrap_or("");
    assert!(report.starts_with(&format!("shutdown complete: {drained} drained, 0 forced")), "{stdout}");
    drop((member, terminal));
}

#[test]
fn chat_with_udp_admin_console_and_cluster_joins_every_thread_before_the_report() {
    let redis = TestRedis::start();
    let url = redis.url();
    let args = [
        "--handler",
        "chat",
        "--workers",
        "2",
        "--udp",
        "--admin",
        "127.0.0.1:0",
        "--stats-every",
        "1h",
        "--console",
        "--redis",
        &url,
    ];
    let running = [
        "switchboard-ser", // main
        "stdout",
        "ctrl-c",
        // The server: acceptor and two workers.
        "switchboard-acc",
        "switchboard-wor",
        "switchboard-wor",
        "switchboard-udp",
        // The admin endpoint (a server of one worker) and its sampler.
        "switchboard-acc",
        "switchboard-wor",
        "admin-history",
        "stats-every",
        // The console: input and output.
        "switchboard-con",
        "switchboard-con",
        // The chat's own: the cluster bridge and the account threads.
        "cluster-out",
        "cluster-in",
        "accounts-0",
        "accounts-1",
    ];
    threads_joined_before_the_report(&args, &running, 1, b"");
}

#[test]
fn the_blocking_pool_of_the_file_handler_is_joined_before_the_report() {
    let dir = temp_dir("lifecycle-file");
    std::fs::write(dir.path().join("a.txt"), b"hello\n").unwrap();
    let root = dir.path().to_str().unwrap().to_owned();
    let args = ["--handler", "file", "--root", &root, "--workers", "1", "--admin", "127.0.0.1:0"];
    let running = [
        "switchboard-ser",
        "stdout",
        "ctrl-c",
        "switchboard-acc",
        "switchboard-wor",
        // The core's blocking pool: one thread, started for the `get`.
        "switchboard-blo",
        "switchboard-acc",
        "switchboard-wor",
        "admin-history",
    ];
    threads_joined_before_the_report(&args, &running, 1, b"get a.txt\n");
}
