//! The chat's memory with thousands of members that never read, measured
//! on a `switchboard-server` child this test owns (PROTOCOLS.md "chat").

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard-server");
const TIMEOUT: Duration = Duration::from_secs(60);
/// Members that connect and never read a byte.
const IDLE: usize = 5_000;
/// The server's resident memory must stay under this, peak included.
const RSS_LIMIT: u64 = 256 << 20;

struct Running {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(args: &[&str]) -> Running {
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run switchboard-server");
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    let addr = first
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("first line was {first:?}"))
        .trim()
        .parse()
        .unwrap();
    Running { child, addr }
}

/// A field of /proc/PID/status in bytes (`VmRSS`, `VmHWM`).
fn status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    let line = status.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("no {field}"));
    let kb: u64 = line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("a number of kB");
    kb * 1024
}

/// Raises this process's descriptor limit to its hard limit; returns it.
fn raise_fd_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        let _ = setrlimit(Resource::Nofile, limit);
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

struct Member {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Member {
    fn join(addr: SocketAddr) -> Member {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        let writer = s.try_clone().unwrap();
        let mut m = Member { reader: BufReader::new(s), writer };
        let welcome = m.line();
        assert!(welcome.starts_with("* welcome "), "{welcome:?}");
        m
    }

    fn send(&mut self, line: &str) {
        self.writer.write_all(format!("{line}\n").as_bytes()).expect("write");
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).expect("read a line");
        assert!(n > 0, "EOF where a line was expected");
        line.pop();
        line
    }

    /// The next line that is not a join notice.
    fn next_not_joined(&mut self) -> String {
        loop {
            let line = self.line();
            if !(line.starts_with("* guest-") && line.ends_with(" joined")) {
                return line;
            }
        }
    }
}

#[test]
fn thousands_of_members_that_never_read_stay_within_memory() {
    let limit = raise_fd_limit();
    assert!(limit >= IDLE as u64 + 100, "needs {} descriptors, the hard limit is {limit}", IDLE + 100);
    let server = spawn(&["--handler", "chat", "--workers", "2"]);
    let pid = server.child.id();
    let mut reader = Member::join(server.addr);
    let mut writer = Member::join(server.addr);
    assert_eq!(reader.line(), "* guest-2 joined");

    let idle: Vec<TcpStream> =
        (0..IDLE).map(|_| TcpStream::connect(server.addr).expect("connect an idle member")).collect();
    // Wait until all are in the room: the writer's /who counts them.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        writer.send("/who");
        let who = writer.next_not_joined();
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
        assert_eq!(reader.next_not_joined(), format!("<guest-2> line {i}"));
    }
    assert_eq!(reader.next_not_joined(), "*guest-2* just for you");
    reader.send("/who");
    let who = reader.next_not_joined();
    assert_eq!(who.split(", ").count(), IDLE + 2, "members were lost");

    let rss = status_bytes(pid, "VmRSS:");
    let peak = status_bytes(pid, "VmHWM:");
    eprintln!("server with {} members: VmRSS {} KiB, VmHWM {} KiB", IDLE + 2, rss >> 10, peak >> 10);
    assert!(peak < RSS_LIMIT, "server peak RSS {} MiB, over {} MiB", peak >> 20, RSS_LIMIT >> 20);
    drop(idle);
}
