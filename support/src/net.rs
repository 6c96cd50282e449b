//! Servers in the test process and blocking clients.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use switchboard::{Handler, Server, ServerBuilder};

use crate::wait::TIMEOUT;

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

/// A blocking client whose socket is bound to `source` (port 0) before it
/// connects, so the server sees it coming from that address: any of
/// 127.0.0.0/8 plays another host on loopback.
pub fn connect_from(addr: SocketAddr, source: IpAddr) -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::new(source, 0).into()).unwrap_or_else(|e| panic!("bind {source}: {e}"));
    s.connect(&addr.into()).expect("connect");
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.set_write_timeout(Some(TIMEOUT)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// A client socket with a 4 KiB receive buffer, so the server's reply backs
/// up in the server rather than in the client's kernel.
pub fn small_window_client(addr: SocketAddr) -> TcpStream {
    small_window_client_with(addr, 4096)
}

/// A client socket with a receive buffer of `rcvbuf` bytes (which also
/// stops the kernel from growing it), with the usual timeouts and no delay.
pub fn small_window_client_with(addr: SocketAddr, rcvbuf: usize) -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None).unwrap();
    s.set_recv_buffer_size(rcvbuf).unwrap();
    s.connect(&addr.into()).unwrap();
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.set_write_timeout(Some(TIMEOUT)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Closes `s` with a reset (SO_LINGER 0), as a crashed or killed peer does.
pub fn reset(s: TcpStream) {
    let s = socket2::Socket::from(s);
    s.set_linger(Some(Duration::ZERO)).unwrap();
    drop(s);
}

/// A folder of its own under the system temp dir (`switchboard-TAG-...`),
/// removed when dropped.
pub fn temp_dir(tag: &str) -> TempDir {
    TempDir(
        tempfile::Builder::new().prefix(&format!("switchboard-{tag}-")).tempdir().expect("create a temp dir"),
    )
}

/// A unique temporary folder (from [`temp_dir`]), removed when dropped.
#[derive(Debug)]
pub struct TempDir(tempfile::TempDir);

impl TempDir {
    /// Its path.
    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// Writes `content` to `name` (a relative path; folders are created).
    pub fn write(&self, name: impl AsRef<Path>, content: &[u8]) -> PathBuf {
        let path = self.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, content).unwrap();
        path
    }

    /// A sparse file of `len` bytes (all zero, taking no disk space).
    pub fn sparse(&self, name: &str, len: u64) -> PathBuf {
        let path = self.path().join(name);
        std::fs::File::create(&path).unwrap().set_len(len).unwrap();
        path
    }

    /// The names in the folder, sorted (hidden files included).
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

/// Reads exactly `n` bytes.
pub fn read_exact(s: &mut impl Read, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    s.read_exact(&mut buf).expect("read reply");
    buf
}

/// Reads one line (with its newline).
pub fn read_line(r: &mut impl BufRead) -> String {
    let mut line = String::new();
    r.read_line(&mut line).expect("read line");
    line
}

/// A blocking client of the Unix socket at `path`, with a read timeout of
/// [`TIMEOUT`], buffered to read lines ([`read_line`]).
pub fn unix_client(path: &Path) -> BufReader<std::os::unix::net::UnixStream> {
    let s = std::os::unix::net::UnixStream::connect(path)
        .unwrap_or_else(|e| panic!("connect to {}: {e}", path.display()));
    s.set_read_timeout(Some(TIMEOUT)).expect("set a read timeout");
    BufReader::new(s)
}

/// What the peer did after its last reply: a clean EOF, a reset, or more data.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// A clean close.
    Eof,
    /// A reset.
    Reset,
    /// More bytes (how many in one read).
    Data(usize),
    /// Any other error.
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
/// open thousands of sockets hold many client ends) and returns it.
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
