//! The chat's memory with thousands of members that never read, measured
//! on a `switchboard-server` child this test owns (PROTOCOLS.md "chat").

use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use switchboard_test_support::child::Spawned;
use switchboard_test_support::{raise_fd_limit, ChatClient};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard-server");
const TIMEOUT: Duration = Duration::from_secs(60);
/// Members that connect and never read a byte.
const IDLE: usize = 5_000;
/// The server's resident memory must stay under this, peak included.
const RSS_LIMIT: u64 = 256 << 20;

/// The next line that is not a join notice.
fn next_not_joined(m: &mut ChatClient) -> String {
    loop {
        let line = m.line();
        if !(line.starts_with("* guest-") && line.ends_with(" joined")) {
            return line;
        }
    }
}

#[test]
fn thousands_of_members_that_never_read_stay_within_memory() {
    let limit = raise_fd_limit();
    assert!(limit >= IDLE as u64 + 100, "needs {} descriptors, the hard limit is {limit}", IDLE + 100);
    let mut cmd = Command::new(BIN);
    cmd.args(["--listen", "127.0.0.1:0", "--handler", "chat", "--workers", "2"]).stdin(Stdio::null());
    let mut server = Spawned::spawn(&mut cmd);
    let addr = server.listening_addr();
    let pid = server.pid();
    let (mut reader, _) = ChatClient::join(addr);
    let (mut writer, _) = ChatClient::join(addr);
    assert_eq!(reader.line(), "* guest-2 joined");

    let idle: Vec<TcpStream> =
        (0..IDLE).map(|_| TcpStream::connect(addr).expect("connect an idle member")).collect();
    // Wait until all are in the room: the writer's /who counts them.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        writer.send("/who");
        let who = next_not_joined(&mut writer);
        let n = who.strip_prefix("* online: ").expect("a /who answer").split(", ").count();
        if n == IDLE + 2 {
            break;
        }
        assert!(Instant::now() < deadline, "only {n} members after {TIMEOUT:?}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // The room works for the member who reads: every line, in order, and
    // a private message.
    for i in 0..100 {
        writer.send(&format!("line {i}"));
    }
    writer.send("/msg guest-1 just for you");
    for i in 0..100 {
        assert_eq!(next_not_joined(&mut reader), format!("<guest-2> line {i}"));
    }
    assert_eq!(next_not_joined(&mut reader), "*guest-2* just for you");
    reader.send("/who");
    let who = next_not_joined(&mut reader);
    assert_eq!(who.split(", ").count(), IDLE + 2, "members were lost");

    let rss = pid.rss_bytes();
    let peak = pid.peak_rss_bytes();
    eprintln!("server with {} members: VmRSS {} KiB, VmHWM {} KiB", IDLE + 2, rss >> 10, peak >> 10);
    assert!(peak < RSS_LIMIT, "server peak RSS {} MiB, over {} MiB", peak >> 20, RSS_LIMIT >> 20);
    drop(idle);
}
