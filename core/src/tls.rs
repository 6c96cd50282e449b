//! TLS on a worker: a `rustls` server connection over a non-blocking
//! socket. The handshake runs on the worker that owns the connection, a
//! step each time the socket is readable; plaintext goes through
//! `read`/`write` like a plain socket's bytes. Also: loading a certificate
//! chain and key from PEM files into a [`rustls::ServerConfig`].

use std::fmt;
use std::fs;
use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection};

/// Ciphertext and unsent plaintext rustls holds for one connection at
/// most; a write waits (would block) while this much is pending.
const TLS_BUFFER: usize = 64 << 10;

/// Where a handshake stands after a step.
#[derive(Debug)]
pub(crate) enum Handshake {
    /// More bytes from the peer are needed.
    Pending,
    /// Done: application data flows.
    Done,
    /// The peer closed the connection before the handshake completed.
    PeerClosed,
}

/// A TLS server connection over a non-blocking TCP socket.
pub(crate) struct TlsStream {
    conn: ServerConnection,
    sock: TcpStream,
    /// The peer's end (`close_notify` or TCP EOF) came behind the bytes the
    /// last read returned: the next read returns 0.
    eof_pending: bool,
}

impl fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsStream")
            .field("sock", &self.sock)
            .field("handshaking", &self.conn.is_handshaking())
            .finish()
    }
}

/// A rustls error as an I/O error; the worker turns it back into
/// [`CloseReason::Tls`](crate::CloseReason::Tls).
fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl TlsStream {
    pub(crate) fn new(config: Arc<ServerConfig>, sock: TcpStream) -> Result<TlsStream, rustls::Error> {
        let mut conn = ServerConnection::new(config)?;
        conn.set_buffer_limit(Some(TLS_BUFFER));
        Ok(TlsStream { conn, sock, eof_pending: false })
    }

    pub(crate) fn sock_mut(&mut self) -> &mut TcpStream {
        &mut self.sock
    }

    /// The next read returns the peer's EOF, with no new socket event.
    pub(crate) fn eof_pending(&self) -> bool {
        self.eof_pending
    }

    /// Ciphertext is waiting for the socket.
    pub(crate) fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Writes pending ciphertext until none is left or the socket would
    /// block (then `WouldBlock`).
    pub(crate) fn flush_tls(&mut self) -> io::Result<()> {
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

    /// Feeds bytes read before the handshake (past a PROXY header).
    pub(crate) fn feed(&mut self, mut early: &[u8]) -> io::Result<()> {
        while !early.is_empty() {
            if self.conn.read_tls(&mut early)? == 0 {
                return Err(io::Error::other("TLS buffer full before the handshake"));
            }
            self.conn.process_new_packets().map_err(tls_error)?;
        }
        Ok(())
    }

    /// Moves the handshake on as far as the socket allows: writes what
    /// rustls has to say, reads what the peer sent. A rustls error comes
    /// back as an `InvalidData` I/O error holding it (its alert is sent
    /// first, best effort).
    pub(crate) fn handshake(&mut self) -> io::Result<Handshake> {
        loop {
            match self.flush_tls() {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if !self.conn.is_handshaking() {
                return Ok(Handshake::Done);
            }
            match self.conn.read_tls(&mut self.sock) {
                Ok(0) => return Ok(Handshake::PeerClosed),
                Ok(_) => {
                    if let Err(e) = self.conn.process_new_packets() {
                        let _ = self.flush_tls();
                        return Err(tls_error(e));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Handshake::Pending),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends `close_notify` (best effort: it is a few bytes and the queue
    /// is empty when a connection closes), then ends the TCP sending side.
    pub(crate) fn shutdown_write(&mut self) -> io::Result<()> {
        if !self.conn.is_handshaking() {
            self.conn.send_close_notify();
            if let Err(e) = self.flush_tls() {
                log::debug!("close_notify not sent: {e}");
            }
        }
        self.sock.shutdown(Shutdown::Write)
    }
}

/// The socket as rustls reads it, noting whether the last read came back
/// short of what rustls asked: the kernel's queue was then empty, and the
/// next bytes bring a new readiness edge, so reading on to `EAGAIN` would
/// only cost a system call per message (the plain path's rule, and
/// tokio's).
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

impl Read for TlsStream {
    /// Reads plaintext until `buf` is full or the socket is drained (a read
    /// of it came back short, or would block), so a short read means the
    /// socket is drained, as with a plain socket; nothing read is
    /// `WouldBlock`. A TCP EOF without `close_notify` counts as EOF too: the
    /// frame decoders drop an incomplete frame at EOF anyway.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut filled = 0;
        let mut drained = false;
        loop {
            match self.conn.reader().read(&mut buf[filled..]) {
                Ok(0) => {
                    self.eof_pending = filled > 0;
                    return Ok(filled);
                }
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
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    self.eof_pending = filled > 0;
                    return Ok(filled);
                }
                Err(e) => return if filled > 0 { Ok(filled) } else { Err(e) },
            }
            let mut sock = Noting { sock: &mut self.sock, short: false };
            let got = self.conn.read_tls(&mut sock);
            drained = sock.short;
            match got {
                Ok(_) => {
                    // Ok(0) is the TCP EOF: rustls notes it and the reader
                    // reports it above.
                    if let Err(e) = self.conn.process_new_packets() {
                        let _ = self.flush_tls();
                        return Err(tls_error(e));
                    }
                    // Answers of its own (key updates): best effort now,
                    // the rest with the next write.
                    let _ = self.flush_tls();
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if filled > 0 && e.kind() == io::ErrorKind::WouldBlock => return Ok(filled),
                Err(e) => return Err(e),
            }
        }
    }
}

impl Write for TlsStream {
    /// Encrypts what rustls takes of `buf` once the previous ciphertext has
    /// left; would block while it has not.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.flush_tls()?;
        let n = self.conn.writer().write_vectored(bufs)?;
        if n == 0 && bufs.iter().any(|b| !b.is_empty()) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        match self.flush_tls() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(n),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_tls()
    }
}

/// Why a certificate chain and key could not be made a TLS configuration.
#[derive(Debug)]
#[non_exhaustive]
pub enum TlsConfigError {
    /// A file could not be read or holds no usable PEM item.
    Pem {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        what: String,
    },
    /// rustls refused the pair (the key does not match the certificate, an
    /// unsupported key type).
    Rustls(rustls::Error),
}

impl fmt::Display for TlsConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsConfigError::Pem { path, what } => write!(f, "{}: {what}", path.display()),
            TlsConfigError::Rustls(e) => write!(f, "certificate and key rejected: {e}"),
        }
    }
}

impl std::error::Error for TlsConfigError {}

/// A TLS server configuration (TLS 1.2 and 1.3, ring provider, no client
/// certificates) from a PEM certificate chain (the server's certificate
/// first) and a PEM private key (PKCS#8, PKCS#1 or SEC1).
///
/// ```no_run
/// let tls = switchboard::tls_config_from_pem("cert.pem", "key.pem")?;
/// let echo = switchboard::handler_fn(switchboard::Framing::Raw, |data, conn| {
///     conn.send(data);
///     switchboard::Flow::Continue
/// });
/// let server = switchboard::Server::builder().tls(tls).start("127.0.0.1:7443", echo)?;
/// # drop(server);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn tls_config_from_pem(
    cert: impl AsRef<Path>,
    key: impl AsRef<Path>,
) -> Result<Arc<ServerConfig>, TlsConfigError> {
    let (cert, key) = (cert.as_ref(), key.as_ref());
    let pem_err = |path: &Path, what: String| TlsConfigError::Pem { path: path.to_path_buf(), what };
    let cert_pem = fs::read(cert).map_err(|e| pem_err(cert, format!("cannot read: {e}")))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(cert, format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(pem_err(cert, "no CERTIFICATE in the file".into()));
    }
    let key_pem = fs::read(key).map_err(|e| pem_err(key, format!("cannot read: {e}")))?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| pem_err(key, format!("no usable PEM private key: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsConfigError::Rustls)?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(TlsConfigError::Rustls)?;
    Ok(Arc::new(config))
}
