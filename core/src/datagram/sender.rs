//! [`DatagramSender`]: the reply path to any peer, from any thread.

use std::fmt;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::stats::DgCounters;

/// Why a datagram was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DatagramSendError {
    /// Over the server's datagram limit; nothing was sent.
    TooLarge {
        /// The datagram's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The socket's send buffer was full (or the system refused it): the
    /// datagram was dropped and counted.
    Dropped,
    /// The server has stopped.
    Closed,
    /// Over the budget of an address that has not proven it receives
    /// there; nothing was sent.
    Limited,
}

impl fmt::Display for DatagramSendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatagramSendError::TooLarge { len, max } => {
                write!(f, "datagram of {len} bytes is over the {max}-byte limit")
            }
            DatagramSendError::Dropped => f.write_str("send buffer full: datagram dropped"),
            DatagramSendError::Closed => f.write_str("datagram server stopped"),
            DatagramSendError::Limited => f.write_str("over the budget of an unproven address: not sent"),
        }
    }
}

impl std::error::Error for DatagramSendError {}

/// Sends datagrams from the server's socket to any address, from any
/// thread: `Clone + Send + Sync`, from
/// [`DatagramServer::sender`](super::DatagramServer::sender) or
/// [`Reply::sender`](super::Reply::sender). Each send is one `sendto`
/// without waiting: when the socket's send buffer is full the datagram is
/// dropped and counted, never queued, so a sender never blocks and holds no
/// memory for a peer.
#[derive(Clone)]
pub struct DatagramSender {
    inner: Arc<Inner>,
}

struct Inner {
    socket: UdpSocket,
    max: usize,
    closed: AtomicBool,
    stats: Arc<DgCounters>,
}

impl fmt::Debug for DatagramSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatagramSender")
            .field("local_addr", &self.inner.socket.local_addr().ok())
            .field("max", &self.inner.max)
            .finish()
    }
}

impl DatagramSender {
    /// `socket` is a non-blocking clone of the server's socket.
    pub(crate) fn new(socket: UdpSocket, max: usize, stats: Arc<DgCounters>) -> DatagramSender {
        DatagramSender { inner: Arc::new(Inner { socket, max, closed: AtomicBool::new(false), stats }) }
    }

    /// The largest datagram the server sends or takes.
    pub fn max_datagram(&self) -> usize {
        self.inner.max
    }

    pub(crate) fn check_len(&self, len: usize) -> Result<(), DatagramSendError> {
        if len > self.inner.max {
            return Err(DatagramSendError::TooLarge { len, max: self.inner.max });
        }
        Ok(())
    }

    pub(crate) fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
    }

    /// Whether the server has stopped (every send is then refused).
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    /// Sends `data` as one datagram to `addr` now.
    pub fn send_to(&self, addr: SocketAddr, data: &[u8]) -> Result<(), DatagramSendError> {
        if self.is_closed() {
            return Err(DatagramSendError::Closed);
        }
        self.check_len(data.len())?;
        loop {
            match self.inner.socket.send_to(data, addr) {
                Ok(_) => {
                    self.inner.stats.sent(data.len());
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if e.kind() != io::ErrorKind::WouldBlock {
                        log::debug!("udp: send to {addr}: {e}");
                    }
                    self.inner.stats.dropped(1);
                    return Err(DatagramSendError::Dropped);
                }
            }
        }
    }
}
