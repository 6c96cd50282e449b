//! Outbound connections on the worker: a connection's *link*. A handler
//! opens one with [`Conn::connect`] from any callback; it lives on the
//! worker of the connection that opened it (its owner), in the owner's
//! slot of the worker's table, registered in the same poll: no thread, no
//! mailbox hop per chunk. Its bytes, EOF, drained queue and end come to the
//! owner's session through [`Handler::link`](crate::Handler::link); the
//! handler writes to it through [`Conn::link`].
//!
//! The two are linked both ways: reading from the owner's peer stops while
//! the link's queue is over the high-water mark and resumes when it drains
//! below half of it, and reading from the upstream stops while the owner's
//! queue is over it (no polling, no slow-consumer cut-off for a peer that
//! reads); an EOF from either side is an event, not a close, so a
//! half-close passes through both ways; the link ends when both its
//! directions are done, and the owner hears [`LinkEvent::Closed`]. A drain
//! waits for the link too: a relayed pair is quiet only when both sides
//! are.
//!
//! ```no_run
//! use switchboard::{Addr, Conn, Flow, Handler, LinkOptions, Server};
//!
//! /// Relays every connection to a backend (the default `Handler::link`
//! /// relays the backend's bytes, EOF and end back).
//! struct Forward(Addr);
//!
//! impl Handler for Forward {
//!     type Session = ();
//!     fn open(&self, conn: &mut Conn<'_>) {
//!         if conn.connect(&self.0, &LinkOptions::default()).is_err() {
//!             conn.close();
//!         }
//!     }
//!     fn frame(&self, _: &mut (), data: &[u8], conn: &mut Conn<'_>) -> Flow {
//!         if let Some(mut link) = conn.link() {
//!             let _ = link.send(data);
//!         }
//!         Flow::Continue
//!     }
//!     fn eof(&self, _: &mut (), conn: &mut Conn<'_>) {
//!         if let Some(mut link) = conn.link() {
//!             link.shutdown_write();
//!         }
//!     }
//! }
//!
//! let backend = Addr::parse("127.0.0.1:6379")?;
//! let server = Server::builder().shutdown_on_signals().start("127.0.0.1:7000", Forward(backend))?;
//! println!("{}", server.wait());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::close::CloseReason;
use crate::conn::{Conn, SendError, SendRules, SlowConsumerPolicy};
use crate::framing::Framing;
use crate::message::Payload;
use crate::stream::{Addr, Peer, Stream};

pub(crate) mod state;

use state::{LinkState, Phase, WriteSide};

/// How to open a link ([`Conn::connect`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LinkOptions {
    /// How long the connect may take before the link ends with
    /// [`CloseReason::ConnectTimeout`]. Default: 5 s.
    pub connect_timeout: Duration,
    /// How the upstream's bytes are cut into [`LinkEvent::Frame`]s, and
    /// what [`Link::send_frame`] encodes with. Default: [`Framing::Raw`]
    /// (each read is one frame: a relay).
    pub framing: Framing,
}

impl Default for LinkOptions {
    fn default() -> LinkOptions {
        LinkOptions { connect_timeout: Duration::from_secs(5), framing: Framing::Raw }
    }
}

impl LinkOptions {
    /// The default options with this connect timeout.
    pub fn connect_timeout(mut self, d: Duration) -> LinkOptions {
        self.connect_timeout = d;
        self
    }

    /// The default options with this framing.
    pub fn framing(mut self, framing: Framing) -> LinkOptions {
        self.framing = framing;
        self
    }
}

/// What happened on a connection's link (its outbound connection), as
/// [`Handler::link`](crate::Handler::link) hears it.
#[derive(Debug)]
#[non_exhaustive]
pub enum LinkEvent<'a> {
    /// The connect completed, this long after [`Conn::connect`].
    Connected {
        /// The time the connect took.
        took: Duration,
    },
    /// Bytes (raw framing) or a frame from the upstream, as
    /// [`LinkOptions::framing`] cuts them.
    Frame(&'a [u8]),
    /// The upstream finished sending (it may still read).
    Eof,
    /// The link's queue drained below the low-water mark (half the
    /// high-water mark) after it had gone over the high-water mark.
    Drained,
    /// The link ended: the connect failed or timed out, a reset, both
    /// directions done ([`CloseReason::PeerClosed`]), [`Link::close`]
    /// ([`CloseReason::Handler`]), ... After this, [`Conn::link`] is `None`
    /// and [`Conn::connect`] may open another.
    Closed(&'a CloseReason),
}

/// Why [`Conn::connect`] opened no link.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConnectError {
    /// The connection has a link already (one at a time; another may be
    /// opened once the last one's [`LinkEvent::Closed`] came).
    AlreadyLinked,
    /// The connection is closing.
    Closing,
    /// No socket could be made (out of descriptors: `EMFILE`). A connect
    /// that fails later (refused, timed out) is a [`LinkEvent::Closed`].
    Io(io::Error),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::AlreadyLinked => f.write_str("the connection has a link already"),
            ConnectError::Closing => f.write_str("the connection is closing"),
            ConnectError::Io(e) => write!(f, "cannot open a socket: {e}"),
        }
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConnectError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl Conn<'_> {
    /// Opens this connection's link: a non-blocking connect to `to` (TCP,
    /// or a Unix socket), on this connection's worker. Its events come to
    /// [`Handler::link`](crate::Handler::link): [`LinkEvent::Connected`],
    /// then its frames, or [`LinkEvent::Closed`] if the connect fails or
    /// takes longer than [`LinkOptions::connect_timeout`]. Bytes sent
    /// through [`link`](Conn::link) before it is connected are queued and go
    /// out once it is. One link per connection at a time.
    ///
    /// While a connection has a link, its peer's EOF does not close it:
    /// [`Handler::eof`](crate::Handler::eof) runs (a relay half-closes the
    /// link there) and the connection stays open for the upstream's late
    /// reply, until the link ends. A connection with a link stays on its
    /// worker.
    pub fn connect(&mut self, to: &Addr, opts: &LinkOptions) -> Result<(), ConnectError> {
        if self.link.is_some() {
            return Err(ConnectError::AlreadyLinked);
        }
        if self.closing || self.ctl.close {
            return Err(ConnectError::Closing);
        }
        let (sock, started) = Stream::start_connect(to).map_err(ConnectError::Io)?;
        let state =
            LinkState::new(sock, to.clone(), opts.framing, opts.connect_timeout, started, Instant::now());
        *self.link = Some(Box::new(state));
        Ok(())
    }

    /// The connection's link, from [`connect`](Conn::connect) until it
    /// ends (`None` from the moment it has failed or finished, so inside
    /// [`LinkEvent::Closed`] too).
    pub fn link(&mut self) -> Option<Link<'_>> {
        let state = self.link.as_deref_mut()?;
        if let Phase::Failed(_) = state.phase {
            return None;
        }
        Some(Link { state, held: self.held, rules: &self.shared.rules })
    }
}

/// A connection's link inside a callback ([`Conn::link`]): what is sent
/// through it goes to the upstream, in order.
pub struct Link<'a> {
    state: &'a mut LinkState,
    /// The worker's count of queued bytes.
    held: &'a AtomicUsize,
    rules: &'a SendRules,
}

impl fmt::Debug for Link<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link")
            .field("addr", &self.state.addr)
            .field("connected", &self.is_connected())
            .field("queued", &self.queued())
            .finish()
    }
}

impl Link<'_> {
    /// Queues `data` for the upstream (before the link is connected too:
    /// it goes out once it is). Borrowed bytes are copied into the link's
    /// queue. The link has the server's outbound budget
    /// ([`max_outbound`](crate::ServerBuilder::max_outbound)) and
    /// slow-consumer policy; a relay never meets them, since reading from
    /// the owner's peer stops while the link's queue is over the high-water
    /// mark. Fails with [`SendError::Closed`] once the link is closing or
    /// its write side is shut.
    pub fn send<'p>(&mut self, data: impl Into<Payload<'p>>) -> Result<(), SendError> {
        let s = &mut *self.state;
        if !s.takes_bytes() {
            return Err(SendError::Closed);
        }
        let data = data.into();
        let len = data.len();
        if len == 0 {
            return Ok(());
        }
        let before = s.queued();
        if before.saturating_add(len) > self.rules.max_outbound {
            return Err(match self.rules.policy {
                SlowConsumerPolicy::DropMessage => SendError::Dropped,
                SlowConsumerPolicy::Disconnect => {
                    log::info!(
                        "link to {}: slow consumer, {before} bytes queued of a {}-byte budget; closing",
                        s.addr,
                        self.rules.max_outbound
                    );
                    s.fail(CloseReason::SlowConsumer, self.held);
                    SendError::Disconnected
                }
            });
        }
        s.queued.fetch_add(len, Ordering::AcqRel);
        match data {
            Payload::Borrowed(b) => s.out.push_bytes(b, self.held),
            Payload::Shared(m) => s.out.push_message(m, self.held),
        }
        Ok(())
    }

    /// Queues `body` as one frame of the link's framing
    /// ([`LinkOptions::framing`]); a body the framing cannot carry is
    /// refused ([`SendError::Frame`]) and nothing is queued.
    pub fn send_frame(&mut self, body: &[u8]) -> Result<(), SendError> {
        let framing = self.state.framer.framing();
        let (head, tail) = framing.frame_parts(body).map_err(SendError::Frame)?;
        let mut frame = Vec::with_capacity(head.as_slice().len() + body.len() + tail.len());
        frame.extend_from_slice(head.as_slice());
        frame.extend_from_slice(body);
        frame.extend_from_slice(tail);
        self.send(frame)
    }

    /// Half-closes the link: what is queued is written, then its write side
    /// is shut (the upstream reads EOF); the upstream's bytes keep coming.
    /// The link ends once the upstream's EOF has come too.
    pub fn shutdown_write(&mut self) {
        if self.state.write == WriteSide::Open {
            self.state.write = WriteSide::Asked;
        }
    }

    /// Closes the link gracefully: no more frames from it; what is queued
    /// is written, then it is shut and ends ([`LinkEvent::Closed`] with
    /// [`CloseReason::Handler`]) at the upstream's EOF or after the
    /// server's linger.
    pub fn close(&mut self) {
        self.state.begin_close(CloseReason::Handler);
    }

    /// Bytes queued for the upstream and not yet written.
    pub fn queued(&self) -> usize {
        self.state.queued()
    }

    /// The address the link connects (or connected) to.
    pub fn addr(&self) -> &Addr {
        &self.state.addr
    }

    /// The upstream, once connected: its IP address, or a Unix socket's
    /// credentials.
    pub fn peer(&self) -> Option<Peer> {
        self.state.peer
    }

    /// Whether the connect has completed (and the link is not closing).
    pub fn is_connected(&self) -> bool {
        self.state.is_open()
    }
}
