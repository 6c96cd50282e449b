//! A load connection's byte stream: plain (TCP or a Unix socket, the core's
//! [`Stream`]), or TLS (`--tls`) with a rustls client connection over it, read and written
//! through the core's [`TlsSocket`], the server's own TLS path: reads
//! return plaintext until the buffer is full or the socket is drained, so a
//! short read still means a drained socket under edge-triggered polling.

use std::io::{self, Read, Write};
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};
use switchboard::{Stream, TlsSocket};

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
    Plain(Stream),
    Tls(Box<TlsSocket<ClientConnection, Stream>>),
}

impl LoadStream {
    /// Wraps a connecting socket; the handshake starts once it is connected
    /// ([`LoadStream::start`]).
    pub(crate) fn new(sock: Stream, tls: Option<&LoadTls>) -> io::Result<LoadStream> {
        Ok(match tls {
            None => LoadStream::Plain(sock),
            Some(t) => {
                let conn =
                    ClientConnection::new(Arc::clone(&t.config), t.name.clone()).map_err(io::Error::other)?;
                LoadStream::Tls(Box::new(TlsSocket::new(conn, sock)))
            }
        })
    }

    pub(crate) fn sock(&self) -> &Stream {
        match self {
            LoadStream::Plain(s) => s,
            LoadStream::Tls(t) => t.sock(),
        }
    }

    pub(crate) fn sock_mut(&mut self) -> &mut Stream {
        match self {
            LoadStream::Plain(s) => s,
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
            LoadStream::Plain(s) => s.read(buf),
            LoadStream::Tls(t) => t.read(buf),
        }
    }
}

impl Write for LoadStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            LoadStream::Plain(s) => s.write(buf),
            LoadStream::Tls(t) => t.write(buf),
        }
    }

    /// Writes the TLS records made but not sent.
    fn flush(&mut self) -> io::Result<()> {
        match self {
            LoadStream::Plain(_) => Ok(()),
            LoadStream::Tls(t) => t.flush(),
        }
    }
}
