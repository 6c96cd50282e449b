//! A load connection's byte stream: plain TCP, or TLS (`--tls`) with a
//! rustls client connection over the non-blocking socket. Reads return
//! plaintext until the buffer is full or the socket is drained (a read of
//! it came back short, or would block), so a short read still means a
//! drained socket under edge-triggered polling, without a read to `EAGAIN`
//! per message.

use std::io::{self, Read, Write};
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

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
    Tls(Box<TlsConn>),
}

pub(crate) struct TlsConn {
    conn: ClientConnection,
    sock: TcpStream,
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
                LoadStream::Tls(Box::new(TlsConn { conn, sock }))
            }
        })
    }

    pub(crate) fn sock(&self) -> &TcpStream {
        match self {
            LoadStream::Tcp(s) => s,
            LoadStream::Tls(t) => &t.sock,
        }
    }

    pub(crate) fn sock_mut(&mut self) -> &mut TcpStream {
        match self {
            LoadStream::Tcp(s) => s,
            LoadStream::Tls(t) => &mut t.sock,
        }
    }

    /// The TLS handshake is not done yet.
    pub(crate) fn handshaking(&self) -> bool {
        matches!(self, LoadStream::Tls(t) if t.conn.is_handshaking())
    }

    /// Connected: sends the ClientHello.
    pub(crate) fn start(&mut self) -> io::Result<()> {
        match self.flush() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            other => other,
        }
    }
}

impl TlsConn {
    fn flush_tls(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.sock) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// The socket as rustls reads it, noting whether the last read came back
/// short of what rustls asked (the kernel's queue was empty then).
struct Noting<'a> {
    sock: &'a mut TcpStream,
    short: bool,
}

impl Read for Noting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.sock.read(buf)?;
        self.short = n < buf.len();
        Ok(n)
    }
}

impl Read for LoadStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let t = match self {
            LoadStream::Tcp(s) => return s.read(buf),
            LoadStream::Tls(t) => t,
        };
        let mut filled = 0;
        let mut drained = false;
        loop {
            match t.conn.reader().read(&mut buf[filled..]) {
                Ok(0) => return Ok(filled),
                Ok(n) => {
                    filled += n;
                    if filled == buf.len() {
                        return Ok(filled);
                    }
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if drained {
                        return if filled > 0 { Ok(filled) } else { Err(e) };
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(filled),
                Err(e) => return if filled > 0 { Ok(filled) } else { Err(e) },
            }
            let mut sock = Noting { sock: &mut t.sock, short: false };
            let got = t.conn.read_tls(&mut sock);
            drained = sock.short;
            match got {
                Ok(_) => {
                    t.conn
                        .process_new_packets()
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                    // The handshake's next flight, key updates.
                    match t.flush_tls() {
                        Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
                        _ => {}
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if filled > 0 && e.kind() == io::ErrorKind::WouldBlock => return Ok(filled),
                Err(e) => return Err(e),
            }
        }
    }
}

impl Write for LoadStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let t = match self {
            LoadStream::Tcp(s) => return s.write(buf),
            LoadStream::Tls(t) => t,
        };
        t.flush_tls()?;
        let n = t.conn.writer().write(buf)?;
        if n == 0 && !buf.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        match t.flush_tls() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(n),
        }
    }

    /// Writes the TLS records made but not sent.
    fn flush(&mut self) -> io::Result<()> {
        match self {
            LoadStream::Tcp(_) => Ok(()),
            LoadStream::Tls(t) => t.flush_tls(),
        }
    }
}
