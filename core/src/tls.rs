//! TLS on a worker: a `rustls` server connection over a non-blocking
//! socket. The handshake moves on a step each time the socket is readable,
//! the first (costly) one on the handshake pool (`core/src/handshakes.rs`),
//! the rest on the worker; plaintext
//! goes through `read`/`write` like a plain socket's bytes. Also: loading a certificate
//! chain and key from PEM files into a [`rustls::ServerConfig`].

use std::fmt;
use std::fs;
use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
pub(crate) use rustls::ServerConfig;
use rustls::{ConnectionCommon, ServerConnection, SideData};

use crate::stream::Stream;

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

/// A rustls connection, server or client side, over a non-blocking socket,
/// read and written like the socket itself under edge-triggered polling:
///
/// - `read` returns plaintext until the buffer is full or the socket is
///   drained (a read of it came back short, or would block). A short read
///   therefore means a drained socket, as with plain TCP, without a read to
///   `EAGAIN` per message; nothing to read is `WouldBlock`. A TCP EOF
///   without `close_notify` counts as EOF too.
/// - `write` encrypts what rustls takes once the previous ciphertext has
///   left, and would block while it has not; rustls holds at most 64 KiB
///   of ciphertext and unsent plaintext per connection.
///
/// The server runs every TLS connection through one; a mio-based client
/// (the load generator is one) can do the same with a
/// [`ClientConnection`](rustls::ClientConnection): the handshake then
/// moves on with each `read` and `flush`.
pub struct TlsSocket<C, S = TcpStream> {
    conn: C,
    sock: S,
    /// The peer's end (`close_notify` or TCP EOF) came behind the bytes the
    /// last read returned: the next read returns 0.
    eof_pending: bool,
}

/// The server side over a connection's stream (TCP or a Unix socket), as a
/// worker holds it.
pub(crate) type TlsStream = TlsSocket<ServerConnection, Stream>;

impl<C, D, S> fmt::Debug for TlsSocket<C, S>
where
    C: Deref<Target = ConnectionCommon<D>>,
    D: SideData,
    S: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSocket")
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

impl<C, D, S> TlsSocket<C, S>
where
    C: DerefMut<Target = ConnectionCommon<D>>,
    D: SideData,
    S: Read + Write,
{
    /// Puts `conn` over `sock` (connected, or connecting: nothing is sent
    /// before the first `flush`, `read` or `write`).
    pub fn new(mut conn: C, sock: S) -> TlsSocket<C, S> {
        conn.set_buffer_limit(Some(TLS_BUFFER));
        TlsSocket { conn, sock, eof_pending: false }
    }

    /// The rustls connection (handshake state, negotiated parameters).
    pub fn conn(&self) -> &C {
        &self.conn
    }

    /// The rustls connection, to send `close_notify` or export keying
    /// material; ciphertext it makes leaves with the next `flush`.
    pub fn conn_mut(&mut self) -> &mut C {
        &mut self.conn
    }

    /// The socket, to register it with a poll.
    pub fn sock(&self) -> &S {
        &self.sock
    }

    /// The socket, to register it with a poll.
    pub fn sock_mut(&mut self) -> &mut S {
        &mut self.sock
    }

    /// The next read returns the peer's EOF, with no new socket event.
    pub fn eof_pending(&self) -> bool {
        self.eof_pending
    }

    /// Ciphertext is waiting for the socket.
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Writes pending ciphertext until none is left or the socket would
    /// block (then `WouldBlock`).
    pub fn flush_tls(&mut self) -> io::Result<()> {
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

impl TlsSocket<ServerConnection, Stream> {
    pub(crate) fn accept(config: Arc<ServerConfig>, sock: Stream) -> Result<TlsStream, rustls::Error> {
        Ok(TlsSocket::new(ServerConnection::new(config)?, sock))
    }

    /// Hands rustls bytes read before the handshake (past a PROXY header, a
    /// few hundred bytes at most); the next [`handshake`](Self::handshake)
    /// step processes them, on the handshake pool like the rest.
    pub(crate) fn feed(&mut self, mut early: &[u8]) -> io::Result<()> {
        while !early.is_empty() {
            if self.conn.read_tls(&mut early)? == 0 {
                return Err(io::Error::other("TLS buffer full before the handshake"));
            }
        }
        Ok(())
    }

    /// Moves the handshake on as far as the socket allows: processes what
    /// was fed, writes what rustls has to say, reads what the peer sent. A
    /// rustls error comes back as an `InvalidData` I/O error holding it
    /// (its alert is sent first, best effort). The first step is the costly
    /// part of a connection (the server's signature, the key exchange): the
    /// handshake pool runs it, never a worker.
    pub(crate) fn handshake(&mut self) -> io::Result<Handshake> {
        if let Err(e) = self.conn.process_new_packets() {
            let _ = self.flush_tls();
            return Err(tls_error(e));
        }
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
struct Noting<'a, S> {
    sock: &'a mut S,
    short: bool,
}

impl<S: Read> Read for Noting<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.sock.read(buf)?;
        self.short = n < buf.len();
        Ok(n)
    }
}

impl<C, D, S> Read for TlsSocket<C, S>
where
    C: DerefMut<Target = ConnectionCommon<D>>,
    D: SideData,
    S: Read + Write,
{
    /// Plaintext until `buf` is full or the socket is drained; see the
    /// type's documentation. A rustls error (a bad record, a failed
    /// handshake) is an `InvalidData` error holding it, its alert sent
    /// first, best effort.
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
                    // Its own answers (the handshake's next flight, key
                    // updates): best effort now, the rest with the next
                    // write or flush, which report a failure.
                    let _ = self.flush_tls();
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if filled > 0 && e.kind() == io::ErrorKind::WouldBlock => return Ok(filled),
                Err(e) => return Err(e),
            }
        }
    }
}

impl<C, D, S> Write for TlsSocket<C, S>
where
    C: DerefMut<Target = ConnectionCommon<D>>,
    D: SideData,
    S: Read + Write,
{
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

    /// Sends the ciphertext made but not sent (the handshake's first
    /// flight, for a client).
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
