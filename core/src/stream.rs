//! The stream seam: one type for a connected byte stream, TCP or Unix
//! domain, with the address it was reached at and the peer at its other
//! end. The acceptor, the worker's mailbox and the transport (TLS, PROXY
//! header) hold a [`Stream`], never a `TcpStream`, so a new stream family
//! touches this file and the listener only; an outbound connection
//! ([`Stream::connect`]) is the same type.

use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use mio::event::Source;
use mio::net::{TcpStream, UnixStream};
use mio::{Interest, Registry, Token};

/// The prefix of a Unix domain socket's address in flags and logs:
/// `unix:/run/switchboard.sock`.
pub const UNIX_PREFIX: &str = "unix:";

/// Where a server listens or a client connects: an IP socket address or the
/// path of a Unix domain socket. Displayed as `127.0.0.1:7878` or
/// `unix:/run/switchboard.sock`, the form [`Addr::parse`] reads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Addr {
    /// TCP.
    Ip(SocketAddr),
    /// A Unix domain stream socket (a path in the file system).
    Unix(PathBuf),
}

impl Addr {
    /// Reads `unix:PATH` as a Unix socket's path and anything else as
    /// `HOST:PORT`, resolved (the first address the resolver gives). An
    /// empty path or one with a NUL byte, or a host that does not resolve,
    /// is an `InvalidInput` error naming the address.
    pub fn parse(s: &str) -> io::Result<Addr> {
        if let Some(path) = unix_path(s) {
            return Ok(Addr::Unix(path?.to_path_buf()));
        }
        let bad = |why: String| io::Error::new(io::ErrorKind::InvalidInput, format!("'{s}': {why}"));
        let mut addrs =
            s.to_socket_addrs().map_err(|e| bad(format!("not an address (HOST:PORT or unix:PATH): {e}")))?;
        addrs.next().map(Addr::Ip).ok_or_else(|| bad("resolves to no address".into()))
    }

    /// The IP socket address, if it is one.
    pub fn ip(&self) -> Option<SocketAddr> {
        match self {
            Addr::Ip(a) => Some(*a),
            Addr::Unix(_) => None,
        }
    }

    /// The Unix socket's path, if it is one.
    pub fn unix(&self) -> Option<&Path> {
        match self {
            Addr::Ip(_) => None,
            Addr::Unix(p) => Some(p),
        }
    }
}

impl From<SocketAddr> for Addr {
    fn from(a: SocketAddr) -> Addr {
        Addr::Ip(a)
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Ip(a) => a.fmt(f),
            Addr::Unix(p) => write!(f, "{UNIX_PREFIX}{}", p.display()),
        }
    }
}

/// The path of `unix:PATH`: `None` when `s` does not start with `unix:`, an
/// error when the path is empty or holds a NUL byte.
pub fn unix_path(s: &str) -> Option<io::Result<&Path>> {
    let path = s.strip_prefix(UNIX_PREFIX)?;
    let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("'{s}': {why}"));
    Some(match path {
        "" => Err(bad("no path after unix:")),
        p if p.contains('\0') => Err(bad("a Unix socket's path cannot hold a NUL byte")),
        p => Ok(Path::new(p)),
    })
}

/// Who is at the other end of a connection: an IP socket address (the
/// client's, or the one a PROXY header named), or a process on this
/// machine connected over a Unix socket, with its credentials as the kernel
/// recorded them at `connect` (`SO_PEERCRED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Peer {
    /// A TCP peer.
    Ip(SocketAddr),
    /// A Unix socket peer; `None` if the kernel did not tell.
    Unix(Option<Credentials>),
}

/// A Unix socket peer's process and user, from `SO_PEERCRED`: the
/// credentials of the process that connected, at the time it connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Credentials {
    /// The user id.
    pub uid: u32,
    /// The group id.
    pub gid: u32,
    /// The process id.
    pub pid: i32,
}

impl Peer {
    /// The IP socket address, if the peer has one.
    pub fn ip(&self) -> Option<SocketAddr> {
        match self {
            Peer::Ip(a) => Some(*a),
            Peer::Unix(_) => None,
        }
    }

    /// A Unix peer's credentials.
    pub fn credentials(&self) -> Option<Credentials> {
        match self {
            Peer::Ip(_) => None,
            Peer::Unix(c) => *c,
        }
    }

    /// The IP socket address, or for a Unix peer the unspecified address
    /// `0.0.0.0:0` (what code written for TCP peers sees of them: every
    /// local peer alike).
    pub fn ip_or_unspecified(&self) -> SocketAddr {
        self.ip().unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
    }
}

impl From<SocketAddr> for Peer {
    fn from(a: SocketAddr) -> Peer {
        Peer::Ip(a)
    }
}

/// `203.0.113.7:41234`, `unix(uid 1000, gid 1000, pid 4242)` or
/// `unix(credentials unknown)`.
impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Ip(a) => a.fmt(f),
            Peer::Unix(Some(c)) => write!(f, "unix(uid {}, gid {}, pid {})", c.uid, c.gid, c.pid),
            Peer::Unix(None) => f.write_str("unix(credentials unknown)"),
        }
    }
}

/// A connected, non-blocking byte stream: TCP or a Unix domain socket. It
/// reads, writes, half-closes and registers with a poll the same way for
/// both.
#[derive(Debug)]
pub enum Stream {
    /// TCP.
    Tcp(TcpStream),
    /// A Unix domain stream socket.
    Unix(UnixStream),
}

impl Stream {
    /// Starts connecting to `addr` without waiting (the connection is made
    /// once the stream is writable, as with [`mio::net::TcpStream::connect`];
    /// a Unix socket is usually connected at once).
    pub fn connect(addr: &Addr) -> io::Result<Stream> {
        match addr {
            Addr::Ip(a) => TcpStream::connect(*a).map(Stream::Tcp),
            Addr::Unix(p) => UnixStream::connect(p).map(Stream::Unix),
        }
    }

    /// Starts a non-blocking connect to `addr` for an outbound connection:
    /// the socket's own errors (`socket()` out of descriptors) are the
    /// outer error; the connect's (refused at once, a Unix socket's full
    /// backlog) come back beside the stream, to be reported as the link's
    /// end like a refusal that comes later. A TCP stream has Nagle's
    /// algorithm off.
    pub(crate) fn start_connect(addr: &Addr) -> io::Result<(Stream, io::Result<()>)> {
        use socket2::{Domain, SockAddr, Socket, Type};
        let (domain, to) = match addr {
            Addr::Ip(a) => (Domain::for_address(*a), SockAddr::from(*a)),
            Addr::Unix(p) => (Domain::UNIX, SockAddr::unix(p)?),
        };
        let sock = Socket::new(domain, Type::STREAM, None)?;
        sock.set_nonblocking(true)?;
        if let Addr::Ip(_) = addr {
            sock.set_nodelay(true)?;
        }
        let started = match sock.connect(&to) {
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INPROGRESS.raw_os_error()) => Ok(()),
            other => other,
        };
        let stream = match addr {
            Addr::Ip(_) => Stream::Tcp(TcpStream::from_std(std::net::TcpStream::from(sock))),
            Addr::Unix(_) => Stream::Unix(UnixStream::from_std(std::os::unix::net::UnixStream::from(sock))),
        };
        Ok((stream, started))
    }

    /// Whether a connect begun with [`start_connect`](Stream::start_connect)
    /// is done: `Ok(false)` while in progress, the connect's error if it
    /// failed. (A Unix socket connects at once or not at all.)
    pub(crate) fn connect_done(&self) -> io::Result<bool> {
        if let Some(e) = self.take_error()? {
            return Err(e);
        }
        match self {
            Stream::Tcp(s) => match s.peer_addr() {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
                Err(e) => Err(e),
            },
            Stream::Unix(_) => Ok(true),
        }
    }

    /// The peer: its IP address, or its credentials over a Unix socket.
    pub fn peer(&self) -> io::Result<Peer> {
        match self {
            Stream::Tcp(s) => s.peer_addr().map(Peer::Ip),
            Stream::Unix(s) => Ok(Peer::Unix(credentials(s))),
        }
    }

    /// Turns Nagle's algorithm off (TCP; nothing to do for a Unix socket).
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_nodelay(on),
            Stream::Unix(_) => Ok(()),
        }
    }

    /// Shuts down reading, writing or both.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(how),
            Stream::Unix(s) => s.shutdown(how),
        }
    }

    /// A connect in progress failed, or the socket has an error pending.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        match self {
            Stream::Tcp(s) => s.take_error(),
            Stream::Unix(s) => s.take_error(),
        }
    }
}

/// The credentials of a Unix socket's peer (`SO_PEERCRED`).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn credentials(s: &UnixStream) -> Option<Credentials> {
    match rustix::net::sockopt::socket_peercred(s) {
        Ok(c) => Some(Credentials { uid: c.uid.as_raw(), gid: c.gid.as_raw(), pid: c.pid.as_raw_pid() }),
        Err(e) => {
            log::debug!("cannot read a Unix peer's credentials: {e}");
            None
        }
    }
}

/// The credentials of a Unix socket's peer: not read on this system.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn credentials(_: &UnixStream) -> Option<Credentials> {
    None
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write_vectored(bufs),
            Stream::Unix(s) => s.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Stream::Tcp(s) => s.as_fd(),
            Stream::Unix(s) => s.as_fd(),
        }
    }
}

impl Source for Stream {
    fn register(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.register(registry, token, interests),
            Stream::Unix(s) => s.register(registry, token, interests),
        }
    }

    fn reregister(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.reregister(registry, token, interests),
            Stream::Unix(s) => s.reregister(registry, token, interests),
        }
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.deregister(registry),
            Stream::Unix(s) => s.deregister(registry),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_and_display_alike() {
        let a = Addr::parse("unix:/run/x.sock").unwrap();
        assert_eq!(a, Addr::Unix("/run/x.sock".into()));
        assert_eq!(a.to_string(), "unix:/run/x.sock");
        let a = Addr::parse("127.0.0.1:7878").unwrap();
        assert_eq!(a, Addr::Ip("127.0.0.1:7878".parse().unwrap()));
        assert_eq!(a.to_string(), "127.0.0.1:7878");
        for bad in ["unix:", "unix:a\0b", "nowhere"] {
            let e = Addr::parse(bad).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad:?}: {e}");
        }
    }

    #[test]
    fn a_peer_costs_a_connection_no_more_than_the_address_it_replaced() {
        assert_eq!(std::mem::size_of::<Peer>(), std::mem::size_of::<SocketAddr>());
    }

    #[test]
    fn a_unix_peer_shows_its_credentials() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let s = Stream::Unix(UnixStream::from_std(a));
        let peer = s.peer().unwrap();
        let c = peer.credentials().expect("SO_PEERCRED");
        assert_eq!(c.uid, rustix::process::getuid().as_raw());
        assert_eq!(c.pid, rustix::process::getpid().as_raw_pid());
        assert_eq!(peer.to_string(), format!("unix(uid {}, gid {}, pid {})", c.uid, c.gid, c.pid));
        assert_eq!(peer.ip_or_unspecified(), SocketAddr::from(([0, 0, 0, 0], 0)));
    }
}
