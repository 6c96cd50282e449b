//! [`DatagramHandler`]: what a datagram server does with each peer.

use std::fmt;
use std::net::SocketAddr;

use super::batch::Batch;
use super::sender::{DatagramSendError, DatagramSender};
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
}

impl fmt::Display for PeerClose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PeerClose::Idle => "idle",
            PeerClose::Handler => "closed by handler",
            PeerClose::Drained => "drained at shutdown",
            PeerClose::Forced => "forced closed at shutdown",
            PeerClose::HandlerPanic => "handler panicked",
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
}

/// Replying from inside a [`DatagramHandler`] callback: datagrams queued
/// here are sent in order, in batches (`sendmmsg`), once the callback has
/// returned.
pub struct Reply<'a> {
    pub(crate) addr: SocketAddr,
    pub(crate) batch: &'a mut Batch,
    pub(crate) sender: &'a DatagramSender,
    pub(crate) draining: bool,
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
    /// server's datagram limit.
    pub fn send(&mut self, data: &[u8]) -> Result<(), DatagramSendError> {
        let addr = self.addr;
        self.send_to(addr, data)
    }

    /// Queues `data` as one datagram to any address.
    pub fn send_to(&mut self, addr: SocketAddr, data: &[u8]) -> Result<(), DatagramSendError> {
        self.sender.check_len(data.len())?;
        self.batch.push(addr, data);
        Ok(())
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
