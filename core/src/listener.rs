//! The listening socket: TCP or a Unix domain socket, bound here (TCP with
//! `SO_REUSEADDR`, and `SO_REUSEPORT` when several processes share the
//! port), or handed down already listening (systemd socket activation, a
//! parent process). It accepts [`Stream`]s, the seam every later stage
//! holds.
//!
//! A Unix socket's file: one left by a server that died is replaced (a
//! connect to it is refused), one a server is listening on is refused with
//! an error; the file is made with the mode asked for before the socket
//! listens, and removed when the listener closes, if it is still the file
//! this listener made.

use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mio::event::Source;
use mio::net::{TcpListener, UnixListener};
use mio::{Interest, Registry, Token};
use socket2::{Domain, SockAddr, SockRef, Socket, Type};

use crate::err::StartError;
use crate::stream::{Addr, Peer, Stream};

/// Where the listener comes from.
#[derive(Debug, Clone, Default)]
pub(crate) struct ListenerConfig {
    /// Bind with `SO_REUSEPORT`: other processes (with it too) may listen on
    /// the same address, and the kernel spreads new connections over them.
    pub(crate) reuse_port: bool,
    /// A socket already listening, served instead of binding.
    pub(crate) inherited: Option<Inherited>,
    /// The permissions of a Unix socket's file this server makes.
    pub(crate) unix_mode: Option<u32>,
}

/// A listening socket handed down.
#[derive(Debug, Clone)]
pub(crate) enum Inherited {
    Tcp(Arc<std::net::TcpListener>),
    Unix(Arc<std::os::unix::net::UnixListener>),
}

/// What to bind when nothing is handed down.
#[derive(Debug)]
pub(crate) enum Bind {
    /// The addresses `shown` resolved to, tried in turn.
    Tcp { addrs: Vec<SocketAddr>, shown: String },
    /// A Unix socket's path.
    Unix(PathBuf),
}

impl Bind {
    fn shown(&self) -> String {
        match self {
            Bind::Tcp { shown, .. } => shown.clone(),
            Bind::Unix(p) => Addr::Unix(p.clone()).to_string(),
        }
    }
}

/// A listening socket.
#[derive(Debug)]
pub(crate) enum Listener {
    Tcp(TcpListener),
    /// With the file to remove on close, when this listener made it.
    Unix(UnixListener, Option<SocketFile>),
}

impl Listener {
    /// Accepts a connection: the stream and its peer (a Unix peer with its
    /// credentials).
    pub(crate) fn accept(&self) -> io::Result<(Stream, Peer)> {
        match self {
            Listener::Tcp(l) => l.accept().map(|(s, a)| (Stream::Tcp(s), Peer::Ip(a))),
            Listener::Unix(l, _) => {
                let (s, _) = l.accept()?;
                let s = Stream::Unix(s);
                let peer = s.peer()?;
                Ok((s, peer))
            }
        }
    }

    /// The address it listens on.
    pub(crate) fn local_addr(&self) -> io::Result<Addr> {
        match self {
            Listener::Tcp(l) => l.local_addr().map(Addr::Ip),
            Listener::Unix(l, file) => match file {
                Some(f) => Ok(Addr::Unix(f.path.clone())),
                None => {
                    let a = l.local_addr()?;
                    let path = a.as_pathname().map_or_else(|| PathBuf::from("(unnamed)"), Path::to_path_buf);
                    Ok(Addr::Unix(path))
                }
            },
        }
    }
}

impl Source for Listener {
    fn register(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.register(registry, token, interests),
            Listener::Unix(l, _) => l.register(registry, token, interests),
        }
    }

    fn reregister(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.reregister(registry, token, interests),
            Listener::Unix(l, _) => l.reregister(registry, token, interests),
        }
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.deregister(registry),
            Listener::Unix(l, _) => l.deregister(registry),
        }
    }
}

/// The file of a Unix socket this server bound: removed on drop if the
/// path still names it (not a file another process put there since).
#[derive(Debug)]
pub(crate) struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        match std::fs::symlink_metadata(&self.path) {
            Ok(m) if m.dev() == self.dev && m.ino() == self.ino => match std::fs::remove_file(&self.path) {
                Ok(()) => log::debug!("removed the socket file {}", self.path.display()),
                Err(e) => log::warn!("cannot remove the socket file {}: {e}", self.path.display()),
            },
            Ok(_) => log::info!("{} is another file now; left in place", self.path.display()),
            Err(e) => log::debug!("socket file {}: {e}", self.path.display()),
        }
    }
}

/// The listener to serve: the inherited one, or `bind` bound.
pub(crate) fn listen(bind: &Bind, backlog: i32, config: &ListenerConfig) -> Result<Listener, StartError> {
    match &config.inherited {
        Some(l) => {
            if config.unix_mode.is_some() {
                log::warn!("the socket was handed down: its file's mode is left as it is");
            }
            adopt(l).map_err(|source| StartError::Bind { addr: "an inherited listener".into(), source })
        }
        None => {
            let err = |source| StartError::Bind { addr: bind.shown(), source };
            match bind {
                Bind::Tcp { addrs, .. } => bind_tcp(addrs, backlog, config.reuse_port).map_err(err),
                Bind::Unix(path) => bind_unix(path, backlog, config.unix_mode).map_err(err),
            }
        }
    }
}

/// A listening socket handed down: checked, made non-blocking. Its file
/// (a Unix socket's) is not this server's to remove.
fn adopt(l: &Inherited) -> io::Result<Listener> {
    let not_listening = || io::Error::new(io::ErrorKind::InvalidInput, "the socket is not listening");
    match l {
        Inherited::Tcp(l) => {
            let l = l.try_clone()?;
            if !SockRef::from(&l).is_listener()? {
                return Err(not_listening());
            }
            l.set_nonblocking(true)?;
            Ok(Listener::Tcp(TcpListener::from_std(l)))
        }
        Inherited::Unix(l) => {
            let l = l.try_clone()?;
            if !SockRef::from(&l).is_listener()? {
                return Err(not_listening());
            }
            l.set_nonblocking(true)?;
            Ok(Listener::Unix(UnixListener::from_std(l), None))
        }
    }
}

fn bind_tcp(addrs: &[SocketAddr], backlog: i32, reuse_port: bool) -> io::Result<Listener> {
    let mut last = None;
    for &sa in addrs {
        let attempt = (|| {
            let socket = Socket::new(Domain::for_address(sa), Type::STREAM, None)?;
            socket.set_reuse_address(true)?;
            if reuse_port {
                socket.set_reuse_port(true)?;
            }
            socket.set_nonblocking(true)?;
            socket.bind(&sa.into())?;
            socket.listen(backlog)?;
            Ok(Listener::Tcp(TcpListener::from_std(socket.into())))
        })();
        match attempt {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address")))
}

/// Binds a Unix socket at `path`, replacing a stale socket file and
/// refusing a live one; the mode is set before it listens, so no client
/// connects through wider permissions.
fn bind_unix(path: &Path, backlog: i32, mode: Option<u32>) -> io::Result<Listener> {
    clear_stale(path)?;
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    socket.bind(&SockAddr::unix(path)?)?;
    let meta = std::fs::symlink_metadata(path)?;
    // From here on the file is ours: removed if anything below fails.
    let file = SocketFile { path: path.to_path_buf(), dev: meta.dev(), ino: meta.ino() };
    if let Some(mode) = mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    socket.listen(backlog)?;
    let l: std::os::unix::net::UnixListener = socket.into();
    Ok(Listener::Unix(UnixListener::from_std(l), Some(file)))
}

/// Makes way for a new socket at `path`: nothing there, or a socket file
/// no server listens on any more (connecting is refused), which is
/// removed. A live socket, or a file that is no socket, is an error.
fn clear_stale(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(io::ErrorKind::AlreadyExists, "the path exists and is not a socket"));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "a server is listening on this socket (a connect succeeded); stop it or choose another path",
        )),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            log::info!("{}: replacing a stale socket file (no server listens on it)", path.display());
            std::fs::remove_file(path).or_else(|e| match e.kind() {
                io::ErrorKind::NotFound => Ok(()),
                _ => Err(e),
            })
        }
        Err(e) => {
            Err(io::Error::new(e.kind(), format!("the socket file is there and connecting to it fails: {e}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_unix_socket_replaces_a_stale_file_refuses_a_live_one_and_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        // A stale file: a socket bound, its listener gone.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let l = bind_unix(&path, 16, Some(0o600)).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(l.local_addr().unwrap(), Addr::Unix(path.clone()));
        let e = bind_unix(&path, 16, None).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{e}");
        assert!(path.exists(), "the refusal left the live socket's file");
        drop(l);
        assert!(!path.exists(), "the file is removed with the listener");
        std::fs::write(&path, b"not a socket").unwrap();
        let e = bind_unix(&path, 16, None).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{e}");
    }
}
