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
        assert!(Instant::now() < deadline, "no {want:?} within {TIMEOUT:?}; got {:?}", String::from_utf8_lossy(&got));
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
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--accept-unterminated must be more than 0s"));
}
