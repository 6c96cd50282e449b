//! The bytes of a connection: the one interface through which a worker
//! reads and writes a peer, plain (a [`Stream`]: TCP or a Unix socket) or
//! TLS over it. Zero-copy file sending is
//! offered only where the bytes go to the socket as they are.
//!
//! A connection may have a preamble before its handler opens: a PROXY
//! header to read, a TLS handshake to complete. [`Transport::advance`] moves
//! it on as the socket allows; the worker opens the session when it says
//! so, and a connection whose preamble is not done by its deadline closes
//! ([`Transport::preamble_deadline`]).

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::event::Source;
use mio::{Interest, Registry, Token};

use crate::clock;
use crate::close::CloseReason;
use crate::proxy::{HeaderReader, Parsed};
use crate::stream::Stream;
use crate::tls::{Handshake, ServerConfig, TlsStream};

/// How the connections of a listener begin: with a PROXY header, with TLS.
#[derive(Debug, Clone)]
pub(crate) struct TransportConfig {
    pub(crate) tls: Option<Arc<ServerConfig>>,
    pub(crate) proxy_protocol: bool,
    /// The time a connection has for its PROXY header and TLS handshake.
    pub(crate) handshake_timeout: Duration,
    /// Threads of the TLS handshake pool (0: as many as workers).
    pub(crate) handshake_threads: usize,
    /// New TLS handshakes waiting for the pool at most.
    pub(crate) handshake_backlog: usize,
}

impl Default for TransportConfig {
    fn default() -> TransportConfig {
        TransportConfig {
            tls: None,
            proxy_protocol: false,
            handshake_timeout: Duration::from_secs(10),
            handshake_threads: 0,
            handshake_backlog: 1024,
        }
    }
}

/// A connection's bytes as they reach the worker.
#[derive(Debug)]
enum Wire {
    /// Plain bytes (TCP or a Unix socket).
    Plain(Stream),
    /// TLS over the stream.
    Tls(Box<TlsStream>),
    /// TLS whose stream is on the handshake pool for a step: no bytes move
    /// here until it is back ([`Transport::step_done`]).
    Away,
}

/// What comes before the handler's session.
#[derive(Debug)]
enum Preamble {
    /// Reading the PROXY header.
    Proxy(HeaderReader),
    /// The TLS handshake.
    Handshake,
    /// Done: the session is open.
    Done,
}

/// What a step of the preamble gave.
#[derive(Debug)]
pub(crate) enum Advance {
    /// Waiting for the peer.
    Pending,
    /// Done; the client's address if a PROXY header named one.
    Ready(Option<SocketAddr>),
    /// A TLS handshake step is due: the stream, for the handshake pool
    /// (or the worker, once begun), to come back through
    /// [`Transport::step_done`].
    Handshake(Box<TlsStream>),
}

/// A connection's byte stream and its preamble.
#[derive(Debug)]
pub(crate) struct Transport {
    stream: Wire,
    /// While a preamble (a PROXY header, a TLS handshake) or bytes read
    /// past it are left; `None` for plain TCP, whose connections, most of
    /// them idle, then carry one pointer for it.
    pre: Option<Box<Pre>>,
}

/// What a connection holds until its session opens and it has read what
/// came past the PROXY header.
#[derive(Debug)]
struct Pre {
    preamble: Preamble,
    /// When the preamble must be done.
    deadline: Instant,
    /// Plain bytes read past a PROXY header, served before the socket's.
    early: Vec<u8>,
    /// The client named by the PROXY header, until the preamble is done.
    client: Option<SocketAddr>,
    /// The socket became readable while the stream was away: another step
    /// follows when it is back.
    again: bool,
    /// A handshake step has come back from the pool: the server's costly
    /// first flight is sent.
    stepped: bool,
}

impl Transport {
    /// A new connection's transport under `config`.
    pub(crate) fn new(sock: Stream, config: &TransportConfig, now: Instant) -> io::Result<Transport> {
        let stream = match &config.tls {
            Some(tls) => {
                Wire::Tls(Box::new(TlsStream::accept(Arc::clone(tls), sock).map_err(io::Error::other)?))
            }
            None => Wire::Plain(sock),
        };
        let preamble = match (&stream, config.proxy_protocol) {
            (_, true) => Preamble::Proxy(HeaderReader::default()),
            (Wire::Tls(_) | Wire::Away, false) => Preamble::Handshake,
            (Wire::Plain(_), false) => Preamble::Done,
        };
        let pre = match preamble {
            Preamble::Done => None,
            preamble => Some(Box::new(Pre {
                preamble,
                deadline: clock::after(now, config.handshake_timeout),
                early: Vec::new(),
                client: None,
                again: false,
                stepped: false,
            })),
        };
        Ok(Transport { stream, pre })
    }

    /// A plain stream with no preamble: an outbound connection's.
    pub(crate) fn plain(sock: Stream) -> Transport {
        Transport { stream: Wire::Plain(sock), pre: None }
    }

    /// The plain stream under a transport that has no TLS.
    pub(crate) fn plain_stream(&self) -> Option<&Stream> {
        match &self.stream {
            Wire::Plain(s) => Some(s),
            Wire::Tls(_) | Wire::Away => None,
        }
    }

    /// The session may open: no preamble is left.
    pub(crate) fn is_ready(&self) -> bool {
        self.pre.as_ref().is_none_or(|p| matches!(p.preamble, Preamble::Done))
    }

    /// While the preamble is not done: its deadline, and the reason a
    /// connection past it closes with.
    pub(crate) fn preamble_deadline(&self) -> Option<(Instant, fn() -> CloseReason)> {
        let pre = self.pre.as_ref()?;
        match pre.preamble {
            Preamble::Proxy(_) => Some((pre.deadline, || CloseReason::BadProxyHeader("none in time".into()))),
            Preamble::Handshake => Some((pre.deadline, || CloseReason::HandshakeTimeout)),
            Preamble::Done => None,
        }
    }

    /// Moves the preamble on as far as the socket allows.
    pub(crate) fn advance(&mut self) -> Result<Advance, CloseReason> {
        let Some(pre) = self.pre.as_deref_mut() else { return Ok(Advance::Ready(None)) };
        loop {
            match &mut pre.preamble {
                Preamble::Done => {
                    let client = pre.client.take();
                    if pre.early.is_empty() {
                        self.pre = None;
                    }
                    return Ok(Advance::Ready(client));
                }
                Preamble::Proxy(reader) => {
                    let sock = match &mut self.stream {
                        Wire::Plain(s) => s,
                        Wire::Tls(t) => t.sock_mut(),
                        Wire::Away => return Ok(Advance::Pending),
                    };
                    let parsed = reader.read_from(sock).map_err(|e| match e.kind() {
                        io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof => {
                            CloseReason::BadProxyHeader(e.to_string().into())
                        }
                        _ => CloseReason::Io(e),
                    })?;
                    let Parsed::Header { client, rest } = parsed else { return Ok(Advance::Pending) };
                    pre.client = client;
                    match &mut self.stream {
                        Wire::Plain(_) => {
                            pre.early = rest;
                            pre.preamble = Preamble::Done;
                        }
                        Wire::Tls(t) => {
                            t.feed(&rest).map_err(reason_of)?;
                            pre.preamble = Preamble::Handshake;
                        }
                        // (Away only during the handshake, after the header.)
                        Wire::Away => return Err(CloseReason::Io(io::Error::other("TLS stream away"))),
                    }
                }
                Preamble::Handshake => {
                    return match std::mem::replace(&mut self.stream, Wire::Away) {
                        Wire::Tls(t) => Ok(Advance::Handshake(t)),
                        Wire::Away => {
                            // On the pool: one more step once it is back.
                            pre.again = true;
                            Ok(Advance::Pending)
                        }
                        Wire::Plain(s) => {
                            self.stream = Wire::Plain(s);
                            pre.preamble = Preamble::Done;
                            continue;
                        }
                    };
                }
            }
        }
    }

    /// The stream is back from a handshake step on the pool: moves the
    /// preamble on from where the step left it (another step if the socket
    /// became readable meanwhile).
    pub(crate) fn step_done(
        &mut self,
        stream: Box<TlsStream>,
        step: io::Result<Handshake>,
    ) -> Result<Advance, CloseReason> {
        self.stream = Wire::Tls(stream);
        let Some(pre) = self.pre.as_deref_mut() else { return Ok(Advance::Ready(None)) };
        pre.stepped = true;
        match step.map_err(reason_of)? {
            Handshake::Pending if std::mem::take(&mut pre.again) => self.advance(),
            Handshake::Pending => Ok(Advance::Pending),
            Handshake::PeerClosed => Err(CloseReason::PeerClosed),
            Handshake::Done => {
                pre.preamble = Preamble::Done;
                self.advance()
            }
        }
    }

    /// The connection speaks TLS.
    pub(crate) fn is_tls(&self) -> bool {
        !matches!(self.stream, Wire::Plain(_))
    }

    /// A handshake step has been done: the server's first flight (and its
    /// signature) is behind this connection.
    pub(crate) fn handshake_begun(&self) -> bool {
        self.pre.as_ref().is_some_and(|p| p.stepped)
    }

    /// A handshake step is on the pool.
    pub(crate) fn is_away(&self) -> bool {
        matches!(self.stream, Wire::Away)
    }

    /// The peer's EOF waits behind the bytes last read (TLS): read again
    /// without waiting for a socket event.
    pub(crate) fn eof_pending(&self) -> bool {
        match &self.stream {
            Wire::Plain(_) | Wire::Away => false,
            Wire::Tls(t) => t.eof_pending(),
        }
    }

    /// Bytes are waiting to be written below the replies (TLS records).
    pub(crate) fn wants_write(&self) -> bool {
        match &self.stream {
            Wire::Plain(_) | Wire::Away => false,
            Wire::Tls(t) => t.wants_write(),
        }
    }

    /// The socket to hand to `sendfile`, where bytes go out unchanged: not
    /// under TLS, where file regions are read in bounded chunks and written
    /// through the cipher.
    pub(crate) fn zero_copy(&self) -> Option<BorrowedFd<'_>> {
        match &self.stream {
            Wire::Plain(s) => Some(s.as_fd()),
            Wire::Tls(_) | Wire::Away => None,
        }
    }

    /// Ends the sending side (after the last reply): a TLS `close_notify`,
    /// then the TCP shutdown.
    pub(crate) fn shutdown_write(&mut self) -> io::Result<()> {
        match &mut self.stream {
            Wire::Plain(s) => s.shutdown(Shutdown::Write),
            Wire::Tls(t) => t.shutdown_write(),
            Wire::Away => Ok(()),
        }
    }

    pub(crate) fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        let interest = Interest::READABLE | Interest::WRITABLE;
        match &mut self.stream {
            Wire::Plain(s) => registry.register(s, token, interest),
            Wire::Tls(t) => registry.register(t.sock_mut(), token, interest),
            Wire::Away => Err(io::Error::other("the TLS stream is on the handshake pool")),
        }
    }

    pub(crate) fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match &mut self.stream {
            Wire::Plain(s) => s.deregister(registry),
            Wire::Tls(t) => t.sock_mut().deregister(registry),
            // Its socket closes with it when the pool posts it back to a
            // connection no longer there, which takes it out of the poll.
            Wire::Away => Ok(()),
        }
    }
}

/// The close reason for an I/O error of a transport: a TLS failure (rustls
/// said why) or a socket error.
pub(crate) fn reason_of(e: io::Error) -> CloseReason {
    #[cfg(feature = "tls")]
    if e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()) {
        let inner = e.into_inner().expect("checked above");
        return CloseReason::Tls(inner.to_string().into());
    }
    CloseReason::Io(e)
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut n = 0;
        if let Some(pre) = self.pre.as_deref_mut() {
            n = buf.len().min(pre.early.len());
            if n > 0 {
                buf[..n].copy_from_slice(&pre.early[..n]);
                pre.early.drain(..n);
                if pre.early.is_empty() && matches!(pre.preamble, Preamble::Done) && pre.client.is_none() {
                    self.pre = None;
                }
            }
        }
        if n == buf.len() && n > 0 {
            return Ok(n);
        }
        // Then the socket: a short read must still mean a drained socket.
        let more = match &mut self.stream {
            Wire::Plain(s) => s.read(&mut buf[n..]),
            Wire::Tls(t) => t.read(&mut buf[n..]),
            Wire::Away => Err(io::ErrorKind::WouldBlock.into()),
        };
        match more {
            Ok(m) => Ok(n + m),
            Err(_) if n > 0 => Ok(n),
            Err(e) => Err(e),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.stream {
            Wire::Plain(s) => s.write(buf),
            Wire::Tls(t) => t.write(buf),
            Wire::Away => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match &mut self.stream {
            Wire::Plain(s) => s.write_vectored(bufs),
            Wire::Tls(t) => t.write_vectored(bufs),
            Wire::Away => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    /// Writes what is pending below the replies (TLS records); would block
    /// while the socket does not take it.
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.stream {
            Wire::Plain(_) => Ok(()),
            Wire::Tls(t) => t.flush(),
            Wire::Away => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}
