//! Helpers shared by the integration tests: start servers on port 0, connect
//! clients with timeouts, poll for conditions with a deadline.
#![allow(dead_code, unreachable_pub)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use switchboard::{Conn, Flow, FrameError, Framing, Handler, Server, ServerBuilder};

/// How long any single wait in a test may take before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// Starts `handler` on 127.0.0.1:0 with `builder`'s settings.
pub fn start<H: Handler>(builder: ServerBuilder, handler: H) -> Server {
    init_logs();
    builder.start("127.0.0.1:0", handler).expect("server starts")
}

/// Logs to the test output when RUST_LOG is set.
pub fn init_logs() {
    let _ = env_logger::builder().is_test(true).try_init();
}

/// A blocking client with read and write timeouts.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.set_write_timeout(Some(TIMEOUT)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Polls `cond` until it holds, failing the test after [`TIMEOUT`].
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    let mut pause = Duration::from_millis(1);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Reads exactly `n` bytes.
pub fn read_exact(s: &mut impl Read, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    s.read_exact(&mut buf).expect("read reply");
    buf
}

/// Reads one line (with its newline).
pub fn read_line(r: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    r.read_line(&mut line).expect("read line");
    line
}

/// What the peer did after its last reply: a clean EOF, a reset, or more data.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    Eof,
    Reset,
    Data(usize),
    Other(io::ErrorKind),
}

/// Reads until something other than data, returns what ended the stream.
pub fn read_end(s: &mut impl Read) -> End {
    let mut buf = [0u8; 4096];
    match s.read(&mut buf) {
        Ok(0) => End::Eof,
        Ok(n) => End::Data(n),
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => End::Reset,
        Err(e) => End::Other(e.kind()),
    }
}

/// Deterministic pseudo-random bytes (xorshift64*).
pub fn random_bytes(n: usize, mut seed: u64) -> Vec<u8> {
    seed |= 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        out.extend_from_slice(&seed.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(n);
    out
}

/// Raises this process's descriptor limit to its hard limit (tests that
/// open thousands of sockets hold both ends).
pub fn raise_fd_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        let _ = setrlimit(Resource::Nofile, limit);
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// Writes all of `data`, then reads the same number of bytes back.
pub fn round_trip(s: &mut TcpStream, data: &[u8]) -> Vec<u8> {
    s.write_all(data).expect("write");
    read_exact(s, data.len())
}
/// A client socket with a small receive buffer, so the server's reply backs
/// up in the server rather than in the client's kernel.
pub fn small_window_client(addr: SocketAddr) -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_recv_buffer_size(4096).unwrap();
    s.connect(&addr.into()).unwrap();
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.set_write_timeout(Some(TIMEOUT)).unwrap();
    s
}

pub mod decode;
pub mod proc;

/// Echoes lines; answers an over-long line with an error and keeps going.
pub struct LineEcho {
    pub max: usize,
}

impl Handler for LineEcho {
    type Session = ();
    fn framing(&self) -> Framing {
        Framing::lines(self.max)
    }
    fn open(&self, _: &mut Conn<'_>) {}
    fn frame(&self, _: &mut (), line: &[u8], conn: &mut Conn<'_>) -> Flow {
        conn.send(line);
        conn.send(b"\n");
        Flow::Continue
    }
    fn frame_error(&self, _: &mut (), e: FrameError, conn: &mut Conn<'_>) -> Flow {
        conn.send(format!("! {e}\n").as_bytes());
        Flow::Continue
    }
}
