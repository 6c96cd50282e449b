//! A load connection's byte stream: plain TCP, or TLS (`--tls`) with a
//! rustls client connection over the non-blocking socket, read and written
//! through the core's [`TlsSocket`], the server's own TLS path: reads
//! return plaintext until the buffer is full or the socket is drained, so a
//! short read still means a drained socket under edge-triggered polling.

use std::io::{self, Read, Write};
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};
use switchboard::TlsSocket;

/// What a load run needs to speak TLS.
#[derive(Debug, Clone)]
pub struct LoadTls {
    /// The client configuration (trusted CAs).
    pub config: Arc<ClientConfig>,
    /// The name the server's certificate must hold.
    pub name: ServerName<'static>,
}

/// A connection's stream.
pub(crate) enum LoadStream {
    Tcp(TcpStream),
    Tls(Box<TlsSocket<ClientConnection>>),
}

impl LoadStream {
    /// Wraps a connecting socket; the handshake starts once it is connected
    /// ([`LoadStream::start`]).
    pub(crate) fn new(sock: TcpStream, tls: Option<&LoadTls>) -> io::Result<LoadStream> {
        Ok(match tls {
            None => LoadStream::Tcp(sock),
            Some(t) => {
                let conn =
                    ClientConnection::new(Arc::clone(&t.config), t.name.clone()).map_err(io::Error::other)?;
                LoadStream::Tls(Box::new(TlsSocket::new(conn, sock)))
            }
        })
    }

    pub(crate) fn sock(&self) -> &TcpStream {
        match self {
            LoadStream::Tcp(s) => s,
            LoadStream::Tls(t) => t.sock(),
        }
    }

    pub(crate) fn sock_mut(&mut self) -> &mut TcpStream {
        match self {
            LoadStream::Tcp(s) => s,
            LoadStream::Tls(t) => t.sock_mut(),
        }
    }

    /// The TLS handshake is not done yet.
    pub(crate) fn handshaking(&self) -> bool {
        matches!(self, LoadStream::Tls(t) if t.conn().is_handshaking())
    }

    /// Connected: sends the ClientHello.
    pub(crate) fn start(&mut self) -> io::Result<()> {
        match self.flush() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            other => other,
        }
    }
}

impl Read for LoadStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            LoadStream::Tcp(s) => s.read(buf),
            LoadStream::Tls(t) => t.read(buf),
        }
    }
}

impl Write for LoadStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            LoadStream::Tcp(s) => s.write(buf),
            LoadStream::Tls(t) => t.write(buf),
        }
    }

    /// Writes the TLS records made but not sent.
    fn flush(&mut self) -> io::Result<()> {
        match self {
            LoadStream::Tcp(_) => Ok(()),
            LoadStream::Tls(t) => t.flush(),
        }
    }
}
