//! [`DatagramHandler`]: what a datagram server does with each peer.

use std::fmt;
use std::net::SocketAddr;

use super::batch::Batch;
use super::cookie::Cookies;
use super::gate::Gate;
use super::sender::{DatagramSendError, DatagramSender};
use super::stats::DgCounters;
use crate::handler::Flow;

/// Why a peer's state was closed; given to [`DatagramHandler::close`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerClose {
    /// No datagram came from the peer for the idle time.
    Idle,
    /// A callback returned [`Flow::Close`].
    Handler,
    /// The server shut down gracefully ([`drain`](DatagramHandler::drain)
    /// was called first).
    Drained,
    /// The server was forced to stop.
    Forced,
    /// A handler callback panicked.
    HandlerPanic,
    /// The table was full and the peer was the least recently heard: it
    /// made room for a new address.
    Evicted,
}

impl fmt::Display for PeerClose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PeerClose::Idle => "idle",
            PeerClose::Handler => "closed by handler",
            PeerClose::Drained => "drained at shutdown",
            PeerClose::Forced => "forced closed at shutdown",
            PeerClose::HandlerPanic => "handler panicked",
            PeerClose::Evicted => "evicted from the full peer table",
        })
    }
}

/// The protocol logic of a datagram server: one value shared by the server
/// thread and whoever holds it elsewhere (`Send + Sync`); per-peer state in
/// [`DatagramHandler::Peer`], keyed by the peer's address.
///
/// # Lifecycle
///
/// All callbacks run on the server's datagram thread, in the order the
/// datagrams arrived:
/// 1. [`open`](DatagramHandler::open) once, for the first datagram from an
///    address the table does not hold, which creates the peer's state;
/// 2. [`datagram`](DatagramHandler::datagram) for that datagram and every
///    later one from the address; returning [`Flow::Close`] forgets the
///    peer (its next datagram opens it anew);
/// 3. [`drain`](DatagramHandler::drain) once if the server shuts down
///    gracefully;
/// 4. [`close`](DatagramHandler::close) exactly once, with the reason:
///    after the idle time, [`Flow::Close`], or at shutdown.
///
/// Callbacks must not block. A panic in one is caught and logged: the peer
/// is closed ([`PeerClose::HandlerPanic`]), the server carries on.
///
/// # Stateless handlers
///
/// A handler whose [`keeps_peers`](DatagramHandler::keeps_peers) is false
/// (echo, upper) has no peer table: each datagram gets `open` and
/// `datagram` on a fresh state dropped right after, with no `drain`,
/// `close` or idle time, so no number of source addresses holds memory.
///
/// # Unproven addresses
///
/// A datagram's source address may be forged. Until a peer has proven
/// that it receives at its address ([`Reply::prove`], with the cookie of
/// [`Reply::cookie`] it was sent), what [`Reply::send`] sends it stays
/// within [`AMPLIFICATION`](super::AMPLIFICATION) times what it sent,
/// counted on the wire (payload and IP and UDP headers); a reply past that
/// is not sent ([`DatagramSendError::Limited`]). A stateless handler's
/// budget is the one datagram's.
pub trait DatagramHandler: Send + Sync + 'static {
    /// Per-peer state, created by [`open`](DatagramHandler::open).
    type Peer: Send + 'static;

    /// A datagram came from a new address ([`Reply::addr`]); create its
    /// state. Replies sent here go out before those of the datagram.
    fn open(&self, out: &mut Reply<'_>) -> Self::Peer;

    /// One datagram (at most the configured maximum) from the peer.
    fn datagram(&self, peer: &mut Self::Peer, data: &[u8], out: &mut Reply<'_>) -> Flow;

    /// The server started a graceful shutdown: the place to say goodbye.
    /// Default: nothing.
    fn drain(&self, peer: &mut Self::Peer, out: &mut Reply<'_>) {
        let _ = (peer, out);
    }

    /// The peer's state is closed, for `reason`; it is dropped after this.
    /// Default: nothing.
    fn close(&self, peer: Self::Peer, addr: SocketAddr, reason: PeerClose) {
        let _ = (peer, addr, reason);
    }

    /// Whether the server keeps a table of peers (default true); false for
    /// a handler that needs no state between datagrams (see "Stateless
    /// handlers" above).
    fn keeps_peers(&self) -> bool {
        true
    }
}

/// Replying from inside a [`DatagramHandler`] callback: datagrams queued
/// here are sent in order, in batches (`sendmmsg`), once the callback has
/// returned.
pub struct Reply<'a> {
    pub(crate) addr: SocketAddr,
    pub(crate) batch: &'a mut Batch,
    pub(crate) sender: &'a DatagramSender,
    pub(crate) draining: bool,
    /// The peer's budget (a stateless handler's: this datagram's).
    pub(crate) gate: &'a mut Gate,
    pub(crate) cookies: &'a Cookies,
    pub(crate) stats: &'a DgCounters,
    /// Whether the peer is kept in a table (and so can be proven).
    pub(crate) kept: bool,
}

impl fmt::Debug for Reply<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reply").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl Reply<'_> {
    /// The peer's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Queues `data` as one datagram to the peer; refused if it is over the
    /// server's datagram limit, or over the peer's budget while it is
    /// unproven ([`DatagramSendError::Limited`], counted in
    /// [`DatagramStats::limited`](super::DatagramStats::limited)).
    pub fn send(&mut self, data: &[u8]) -> Result<(), DatagramSendError> {
        let addr = self.addr;
        self.send_to(addr, data)
    }

    /// Queues `data` as one datagram to any address. To the peer's own
    /// address it is [`send`](Reply::send), budget included; another
    /// address's budget is not known here: sending to it is the handler's
    /// choice (to peers that proved themselves, say).
    pub fn send_to(&mut self, addr: SocketAddr, data: &[u8]) -> Result<(), DatagramSendError> {
        self.sender.check_len(data.len())?;
        if addr == self.addr && !self.gate.spend(&addr, data.len()) {
            self.stats.limited.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Err(DatagramSendError::Limited);
        }
        if !self.batch.push(addr, data) {
            self.stats.dropped(1);
            return Err(DatagramSendError::Dropped);
        }
        Ok(())
    }

    /// Whether the peer has proven that it receives at its address.
    pub fn is_proven(&self) -> bool {
        self.gate.is_proven()
    }

    /// The peer's return-routability cookie ([`COOKIE_LEN`](super::COOKIE_LEN)
    /// lower-case hex digits): send it to the peer; whoever sends it back
    /// from the same address received it there ([`prove`](Reply::prove)).
    /// Valid for one to two [`COOKIE_PERIOD`](super::COOKIE_PERIOD)s; the
    /// server keeps nothing to check it.
    pub fn cookie(&self) -> String {
        self.cookies.make(&self.addr)
    }

    /// Checks a cookie the peer sent back; if it is the peer's, the peer is
    /// proven from now on: its replies have no budget. Always false for a
    /// stateless handler (nothing is kept to remember it).
    pub fn prove(&mut self, cookie: &[u8]) -> bool {
        if self.gate.is_proven() {
            return true;
        }
        if !self.kept || !self.cookies.check(&self.addr, cookie) {
            return false;
        }
        self.gate.prove();
        true
    }

    /// A handle to send datagrams from any thread, later.
    pub fn sender(&self) -> DatagramSender {
        self.sender.clone()
    }

    /// Whether the server is shutting down.
    pub fn is_draining(&self) -> bool {
        self.draining
    }
}
