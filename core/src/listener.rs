//! The listening socket: bound here (with `SO_REUSEADDR`, and
//! `SO_REUSEPORT` when several processes share the port), or handed down
//! already listening (systemd socket activation, a parent process).

use std::fmt;
use std::io;
use std::net::ToSocketAddrs;
use std::sync::Arc;

use socket2::{Domain, SockRef, Socket, Type};

use crate::err::StartError;

/// Where the listener comes from.
#[derive(Debug, Clone, Default)]
pub(crate) struct ListenerConfig {
    /// Bind with `SO_REUSEPORT`: other processes (with it too) may listen on
    /// the same address, and the kernel spreads new connections over them.
    pub(crate) reuse_port: bool,
    /// A socket already listening, served instead of binding.
    pub(crate) inherited: Option<Arc<std::net::TcpListener>>,
}

/// The listener to serve: the inherited one, or `addr` bound.
pub(crate) fn listen<A: ToSocketAddrs + fmt::Display>(
    addr: &A,
    backlog: i32,
    config: &ListenerConfig,
) -> Result<mio::net::TcpListener, StartError> {
    match &config.inherited {
        Some(l) => {
            adopt(l).map_err(|source| StartError::Bind { addr: "an inherited listener".into(), source })
        }
        None => bind(addr, backlog, config.reuse_port),
    }
}

/// A listening socket handed down: checked, made non-blocking.
fn adopt(l: &std::net::TcpListener) -> io::Result<mio::net::TcpListener> {
    let l = l.try_clone()?;
    if !SockRef::from(&l).is_listener()? {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "the socket is not listening"));
    }
    l.set_nonblocking(true)?;
    Ok(mio::net::TcpListener::from_std(l))
}

fn bind<A: ToSocketAddrs + fmt::Display>(
    addr: &A,
    backlog: i32,
    reuse_port: bool,
) -> Result<mio::net::TcpListener, StartError> {
    let err = |source| StartError::Bind { addr: addr.to_string(), source };
    let mut last = None;
    for sa in addr.to_socket_addrs().map_err(err)? {
        let attempt = (|| {
            let socket = Socket::new(Domain::for_address(sa), Type::STREAM, None)?;
            socket.set_reuse_address(true)?;
            if reuse_port {
                socket.set_reuse_port(true)?;
            }
            socket.set_nonblocking(true)?;
            socket.bind(&sa.into())?;
            socket.listen(backlog)?;
            Ok(mio::net::TcpListener::from_std(socket.into()))
        })();
        match attempt {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(err(last.unwrap_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address"))))
}
