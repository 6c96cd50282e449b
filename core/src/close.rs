//! [`CloseReason`]: why a connection closed, the vocabulary every floor of
//! the core speaks (the transport decides some, the handler others).

use std::fmt;
use std::io;

use crate::framing::FrameError;

/// Why a connection closed; given to [`Handler::close`](crate::Handler::close) and logged.
#[derive(Debug)]
#[non_exhaustive]
pub enum CloseReason {
    /// The peer closed its side (EOF) and every reply was delivered.
    PeerClosed,
    /// A callback returned [`Flow::Close`](crate::Flow::Close) (or a handle asked to close); the
    /// queued replies were delivered first.
    Handler,
    /// No bytes moved either way for the idle timeout.
    IdleTimeout,
    /// A frame stayed incomplete past the frame timeout (a peer trickling
    /// bytes to hold the connection open).
    FrameTimeout,
    /// A frame was rejected and the handler closed, or the error was fatal.
    BadFrame(FrameError),
    /// The peer did not read its replies fast enough: its outbound budget was
    /// exceeded under the disconnect policy.
    SlowConsumer,
    /// The server drained the connection during shutdown.
    Drained,
    /// The grace period ran out (or a second shutdown signal came) before
    /// the connection drained.
    Forced,
    /// A file being sent shrank before its region was sent; the connection
    /// is closed rather than send bytes that are not the file.
    FileTruncated,
    /// A handler callback panicked.
    HandlerPanic,
    /// An I/O error on the socket (a reset, for example).
    Io(io::Error),
    /// TLS failed: the peer's bytes were not TLS (a plain-TCP client on a
    /// TLS port), or the handshake or a record was refused. rustls's
    /// message. The handler never opened for a failed handshake.
    Tls(Box<str>),
    /// The TLS handshake was not done within the handshake timeout.
    HandshakeTimeout,
    /// The handshake pool's queue was full (a handshake flood): the
    /// connection was closed before its handshake. The handler never opened.
    HandshakeRefused,
    /// The server expects a PROXY protocol header and got none in time, an
    /// invalid one or one over the size limit (why).
    BadProxyHeader(Box<str>),
    /// An outbound connection (a [`Link`](crate::Link)) could not be made:
    /// refused, unreachable, or the socket failed (the error).
    ConnectFailed(io::Error),
    /// An outbound connection was not made within its connect timeout
    /// ([`LinkOptions::connect_timeout`](crate::LinkOptions::connect_timeout)).
    ConnectTimeout,
}

impl CloseReason {
    /// Whether the log should say so at `info`: limits, faults and forced
    /// closes; an ordinary close or a peer's reset is only `debug`.
    pub(crate) fn is_notable(&self) -> bool {
        match self {
            CloseReason::Io(e) => !matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionAborted
            ),
            // A flood: its worker logs them once a second, with their number.
            CloseReason::HandshakeRefused => false,
            other => !other.is_normal(),
        }
    }
}

impl CloseReason {
    /// Whether this is an ordinary end of a connection rather than a limit,
    /// a fault or a forced close.
    pub fn is_normal(&self) -> bool {
        matches!(self, CloseReason::PeerClosed | CloseReason::Handler | CloseReason::Drained)
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::PeerClosed => f.write_str("closed by peer"),
            CloseReason::Handler => f.write_str("closed by handler"),
            CloseReason::IdleTimeout => f.write_str("idle timeout"),
            CloseReason::FrameTimeout => f.write_str("frame not completed in time (slow sender)"),
            CloseReason::BadFrame(e) => write!(f, "bad frame: {e}"),
            CloseReason::SlowConsumer => f.write_str("slow consumer: outbound budget exceeded"),
            CloseReason::Drained => f.write_str("drained at shutdown"),
            CloseReason::Forced => f.write_str("forced closed at shutdown"),
            CloseReason::FileTruncated => f.write_str("file shrank while being sent"),
            CloseReason::HandlerPanic => f.write_str("handler panicked"),
            CloseReason::Io(e) => write!(f, "I/O error: {e}"),
            CloseReason::Tls(e) => write!(f, "TLS error: {e}"),
            CloseReason::HandshakeTimeout => f.write_str("TLS handshake not completed in time"),
            CloseReason::HandshakeRefused => {
                f.write_str("TLS handshake refused: the handshake queue is full")
            }
            CloseReason::BadProxyHeader(why) => write!(f, "no valid PROXY protocol header: {why}"),
            CloseReason::ConnectFailed(e) => write!(f, "connect failed: {e}"),
            CloseReason::ConnectTimeout => f.write_str("connect timed out"),
        }
    }
}
