//! [`DatagramSender`]: the reply path to any peer, from any thread.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use mio::Waker;

use super::stats::DgCounters;

/// Datagrams waiting in the queue from other threads to the datagram
/// thread, at most.
pub const MAX_QUEUED: usize = 16_384;

/// Bytes waiting in that queue, at most.
pub const MAX_QUEUED_BYTES: usize = 4 << 20;

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
/// [`Reply::sender`](super::Reply::sender). A send never blocks and makes
/// no system call but, at most, one wake-up of the datagram thread: the
/// datagram goes to a bounded queue ([`MAX_QUEUED`] datagrams,
/// [`MAX_QUEUED_BYTES`] bytes) that the datagram thread empties into its
/// batches (`sendmmsg`), so a thread that sends one line to a thousand
/// peers (a chat worker) spends no `sendto` on them. Past the queue's
/// bounds, or when the socket's send buffer stays full, a datagram is
/// dropped and counted in
/// [`DatagramStats::send_dropped`](super::DatagramStats::send_dropped).
#[derive(Clone)]
pub struct DatagramSender {
    inner: Arc<Inner>,
}

struct Inner {
    queue: Sender<(SocketAddr, Vec<u8>)>,
    /// Bytes in the queue now.
    queued: AtomicUsize,
    waker: Arc<Waker>,
    /// A wake-up is on its way (cleared by the thread before it empties the
    /// queue): one per batch of sends, not one per send.
    wake_pending: AtomicBool,
    local_addr: SocketAddr,
    max: usize,
    closed: AtomicBool,
    stats: Arc<DgCounters>,
}

impl fmt::Debug for DatagramSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatagramSender")
            .field("local_addr", &self.inner.local_addr)
            .field("max", &self.inner.max)
            .finish()
    }
}

/// The datagram thread's end of the queue.
#[derive(Debug)]
pub(crate) struct Queued {
    rx: Receiver<(SocketAddr, Vec<u8>)>,
    sender: DatagramSender,
}

impl Queued {
    /// Takes up to `n` queued datagrams, in order; a wake-up that comes
    /// after this call brings the next ones.
    pub(crate) fn take(&self, n: usize, mut f: impl FnMut(SocketAddr, Vec<u8>)) -> Backlogged {
        let inner = &self.sender.inner;
        inner.wake_pending.store(false, Ordering::Release);
        for _ in 0..n {
            match self.rx.try_recv() {
                Ok((addr, data)) => {
                    inner.queued.fetch_sub(data.len(), Ordering::AcqRel);
                    f(addr, data);
                }
                Err(_) => return Backlogged::No,
            }
        }
        if self.rx.is_empty() {
            Backlogged::No
        } else {
            Backlogged::Yes
        }
    }
}

/// Whether [`Queued::take`] left datagrams in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backlogged {
    No,
    Yes,
}

impl DatagramSender {
    /// A sender to the thread woken by `waker`, and the thread's end.
    pub(crate) fn new(
        local_addr: SocketAddr,
        waker: Arc<Waker>,
        max: usize,
        stats: Arc<DgCounters>,
    ) -> (DatagramSender, Queued) {
        let (tx, rx) = crossbeam_channel::bounded(MAX_QUEUED);
        let sender = DatagramSender {
            inner: Arc::new(Inner {
                queue: tx,
                queued: AtomicUsize::new(0),
                waker,
                wake_pending: AtomicBool::new(false),
                local_addr,
                max,
                closed: AtomicBool::new(false),
                stats,
            }),
        };
        let queued = Queued { rx, sender: sender.clone() };
        (sender, queued)
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

    /// Queues `data` as one datagram to `addr`, sent by the datagram
    /// thread in its next batch; dropped and counted
    /// ([`DatagramSendError::Dropped`]) when the queue is full.
    pub fn send_to(&self, addr: SocketAddr, data: &[u8]) -> Result<(), DatagramSendError> {
        let inner = &self.inner;
        if self.is_closed() {
            return Err(DatagramSendError::Closed);
        }
        self.check_len(data.len())?;
        if inner.queued.fetch_add(data.len(), Ordering::AcqRel) + data.len() > MAX_QUEUED_BYTES {
            inner.queued.fetch_sub(data.len(), Ordering::AcqRel);
            inner.stats.dropped(1);
            return Err(DatagramSendError::Dropped);
        }
        match inner.queue.try_send((addr, data.to_vec())) {
            Ok(()) => {}
            Err(e) => {
                inner.queued.fetch_sub(data.len(), Ordering::AcqRel);
                if let TrySendError::Disconnected(_) = e {
                    return Err(DatagramSendError::Closed);
                }
                inner.stats.dropped(1);
                return Err(DatagramSendError::Dropped);
            }
        }
        if !inner.wake_pending.swap(true, Ordering::AcqRel) {
            if let Err(e) = inner.waker.wake() {
                log::error!("udp: cannot wake the datagram thread: {e}");
            }
        }
        Ok(())
    }
}
