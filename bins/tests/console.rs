//! The tutorials' console servers on `switchboard-server --handler chat`:
//! `--accept-unterminated` for clients that send no newline, and the
//! operator console (`--console`).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use switchboard_test_support::child::{run, Spawned};
use switchboard_test_support::{connect, ChatClient, TIMEOUT};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard-server");

fn spawn(args: &[&str], stdin: Stdio) -> (Spawned, SocketAddr) {
    let mut cmd = Command::new(BIN);
    cmd.args(["--listen", "127.0.0.1:0", "--handler", "chat"]).args(args).stdin(stdin);
    let mut proc = Spawned::spawn(&mut cmd);
    let addr = proc.listening_addr();
    (proc, addr)
}

/// `recv(1024)` until `want` has arrived; returns everything read.
fn recv_until(s: &mut TcpStream, want: &str) -> String {
    let mut got = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    while !String::from_utf8_lossy(&got).contains(want) {
        assert!(
            Instant::now() < deadline,
            "no {want:?} within {TIMEOUT:?}; got {:?}",
            String::from_utf8_lossy(&got)
        );
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).expect("recv(1024)");
        assert!(n > 0, "closed before {want:?}; got {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(got).unwrap()
}

#[test]
fn with_accept_unterminated_a_line_without_newline_is_taken_after_the_quiet_time() {
    let (_proc, addr) = spawn(&["--accept-unterminated", "200ms"], Stdio::null());
    let (mut alice, _) = ChatClient::join(addr);
    let mut tutorial = connect(addr);
    recv_until(&mut tutorial, "* welcome guest-2\n");
    alice.expect("* guest-2 joined");
    let sent = Instant::now();
    tutorial.write_all(b"hello").unwrap();
    alice.expect("<guest-2> hello");
    assert!(sent.elapsed() >= Duration::from_millis(200), "taken before the quiet time");
    // A line ended at EOF is taken too.
    tutorial.write_all(b"last words").unwrap();
    tutorial.shutdown(Shutdown::Write).unwrap();
    alice.expect("<guest-2> last words");
    alice.expect("* guest-2 left");
}

#[test]
fn without_accept_unterminated_a_line_waits_for_its_newline() {
    let (_proc, addr) = spawn(&[], Stdio::null());
    let (mut alice, _) = ChatClient::join(addr);
    let (mut bob, _) = ChatClient::join(addr);
    alice.expect("* guest-2 joined");
    bob.send_raw(b"hel");
    // Longer than the 200 ms a server with the option would wait; then
    // alice asks her own question: its answer comes first, so bob's
    // partial line was not taken in between.
    std::thread::sleep(Duration::from_millis(300));
    alice.send("/who");
    alice.expect("* online: guest-1, guest-2");
    bob.send_raw(b"lo\n");
    alice.expect("<guest-2> hello");
}

#[test]
fn a_zero_wait_is_refused() {
    let out = run(Command::new(BIN).args(["--handler", "chat", "--accept-unterminated", "0s"]), TIMEOUT);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("'--accept-unterminated <DURATION>': '0s' must be more than 0"), "{err}");
    assert!(err.contains("Usage: switchboard-server"), "{err}");
}

#[test]
fn a_wait_not_shorter_than_the_frame_timeout_is_refused() {
    let out = run(Command::new(BIN).args(["--handler", "chat", "--accept-unterminated", "30s"]), TIMEOUT);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("'30s' is not shorter than the 30s frame timeout"), "{err}");
}

#[test]
fn the_operator_console_answers_a_tutorial_client_that_sends_no_newline() {
    let (mut server, addr) = spawn(&["--console", "--accept-unterminated", "200ms"], Stdio::piped());
    assert_eq!(
        server.next_line(TIMEOUT).as_deref(),
        Some("* welcome operator\n"),
        "after the listening line"
    );
    // The tutorial client: send the message with no newline, recv(1024).
    let mut client = connect(addr);
    client.write_all(b"hello").unwrap();
    recv_until(&mut client, "* welcome guest-1\n");
    server.line_where(TIMEOUT, |l| l == "* guest-1 joined\n");
    server.line_where(TIMEOUT, |l| l == "<guest-1> hello\n");
    // The operator types a reply at the server's console.
    server.stdin().write_all(b"hi there\n").unwrap();
    server.stdin().flush().unwrap();
    recv_until(&mut client, "<operator> hi there\n");
    server.stdin().write_all(b"/msg guest-1 just you\n").unwrap();
    server.stdin().flush().unwrap();
    recv_until(&mut client, "*operator* just you\n");
    // `quit` from the client (no newline either) ends it.
    client.write_all(b"quit").unwrap();
    recv_until(&mut client, "* bye\n");
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "EOF after the bye, got {rest:?}");
    server.line_where(TIMEOUT, |l| l == "* guest-1 left\n");
    // EOF on stdin: the operator leaves, the server keeps running.
    server.close_stdin();
    server.wait_stderr("console: input ended; operator left the room", TIMEOUT);
    let (mut later, nick) = ChatClient::join(addr);
    later.send("/who");
    later.expect(&format!("* online: {nick}"));
    assert!(server.has_exited().is_none());
}

#[test]
fn console_nick_and_udp_lines_come_after_both_listening_lines() {
    let (mut server, addr) = spawn(&["--udp", "--console", "--console-nick", "sysop"], Stdio::piped());
    let second = server.next_line(TIMEOUT).unwrap();
    assert!(second.starts_with("listening on udp "), "{second:?}");
    assert_eq!(server.next_line(TIMEOUT).as_deref(), Some("* welcome sysop\n"));
    let (mut alice, _) = ChatClient::join(addr);
    server.line_where(TIMEOUT, |l| l == "* guest-1 joined\n");
    alice.send("/who");
    alice.expect("* online: guest-1, sysop");
    server.stdin().write_all(b"/nick bad nick\n").unwrap();
    server.stdin().flush().unwrap();
    server.line_where(TIMEOUT, |l| l == "! invalid nick\n");
}

#[test]
fn console_flags_are_checked() {
    let out = run(Command::new(BIN).args(["--handler", "echo", "--console"]), TIMEOUT);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--console applies to --handler chat, not echo"));
    let out =
        run(Command::new(BIN).args(["--handler", "chat", "--console", "--console-nick", "a b"]), TIMEOUT);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--console-nick \"a b\" is not"));
}

/// A child killed and reaped when dropped (the test reads its stdout, or
/// deliberately not).
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn a_stdout_nobody_reads_does_not_hold_up_the_shutdown() {
    use std::io::{BufRead, BufReader};
    use std::sync::{Arc, Mutex};

    let grace = Duration::from_secs(1);
    let mut child = Killed(
        Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--handler", "chat", "--console", "--grace", "1s"])
            .args(["--chat-rate", "0", "--chat-room-rate", "0"])
            .args(["--stats-every", "20ms"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = Arc::new(Mutex::new(String::new()));
    let mut err = child.0.stderr.take().unwrap();
    let log = Arc::clone(&stderr);
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = err.read(&mut buf) {
            log.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    // The first line, then stdout is never read again: a pipe that fills.
    let mut stdout = BufReader::new(child.0.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let addr: SocketAddr = first.trim().trim_start_matches("listening on ").parse().unwrap();

    // The room's traffic goes to the console: more than the pipe holds.
    let (mut alice, _) = ChatClient::join(addr);
    let (mut bob, _) = ChatClient::join(addr);
    let line = "x".repeat(200);
    for i in 0..1500 {
        alice.send(&format!("{i} {line}"));
    }
    let last = format!("<guest-1> 1499 {line}");
    let relayed = (0..2000).any(|_| bob.line() == last);
    assert!(relayed, "bob got the room's lines");
    let full = || rustix::io::ioctl_fionread(stdout.get_ref()).unwrap();
    switchboard_test_support::wait_until("stdout's pipe is full", || full() >= 60_000);

    let pid = rustix::process::Pid::from_child(&child.0);
    let signalled = Instant::now();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let mut status = None;
    switchboard_test_support::wait_until("the server exits", || {
        status = child.0.try_wait().unwrap();
        status.is_some()
    });
    let took = signalled.elapsed();
    assert!(took <= grace + Duration::from_secs(1), "exited {took:?} after SIGTERM, grace {grace:?}");
    assert!(status.unwrap().success(), "{status:?}");
    reader.join().unwrap();
    let log = stderr.lock().unwrap().clone();
    assert!(log.contains("shutdown complete"), "{log}");
    assert!(log.contains("standard output is not being read"), "{log}");
    drop(stdout);
}
