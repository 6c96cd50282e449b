//! The datagram side's counters, readable as a [`DatagramStats`] snapshot.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

/// A snapshot of a [`DatagramServer`](super::DatagramServer)'s counters.
///
/// A peer is counted in [`peers_opened`](DatagramStats::peers_opened) before
/// its first datagram is handled, and taken off [`peers`](DatagramStats::peers)
/// only after its handler's `close` has returned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DatagramStats {
    /// Datagrams received and handed to the handler.
    pub datagrams_in: u64,
    /// Datagrams sent (replies and sends through a
    /// [`DatagramSender`](super::DatagramSender)).
    pub datagrams_out: u64,
    /// Payload bytes received (oversize datagrams not included).
    pub bytes_in: u64,
    /// Payload bytes sent.
    pub bytes_out: u64,
    /// Datagrams received over the size limit and dropped unseen.
    pub oversize: u64,
    /// Datagrams the server could not send (send buffer full past the
    /// pending limit, or an error from the system).
    pub send_dropped: u64,
    /// Peers in the table now.
    pub peers: usize,
    /// Peers opened since start.
    pub peers_opened: u64,
    /// Datagrams from new addresses dropped because their source prefix
    /// (an IPv4 /24, an IPv6 /64) held its share of the table.
    pub peers_refused: u64,
    /// Peers taken out of the full table (the least recently heard, an
    /// unproven one first) to make room for a new address.
    pub evicted: u64,
    /// Peers that proved they receive at their address (a cookie).
    pub proven: u64,
    /// Replies not sent because they were over an unproven address's
    /// budget (three times what it sent).
    pub limited: u64,
    /// Peers closed after the idle time.
    pub expired: u64,
    /// Handler callbacks that panicked.
    pub handler_panics: u64,
}

impl fmt::Display for DatagramStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "udp in {} ({} B) out {} ({} B) oversize {} send-dropped {} peers {} opened {} refused {} evicted {} expired {} proven {} limited {}",
            self.datagrams_in,
            self.bytes_in,
            self.datagrams_out,
            self.bytes_out,
            self.oversize,
            self.send_dropped,
            self.peers,
            self.peers_opened,
            self.peers_refused,
            self.evicted,
            self.expired,
            self.proven,
            self.limited,
        )
    }
}

/// A handle to read a [`DatagramServer`](super::DatagramServer)'s counters
/// from anywhere, for as long as wanted (an admin endpoint's metrics):
/// `Clone + Send + Sync`, from
/// [`DatagramServer::stats_handle`](super::DatagramServer::stats_handle).
#[derive(Debug, Clone)]
pub struct DatagramStatsHandle {
    pub(crate) counters: std::sync::Arc<DgCounters>,
}

impl DatagramStatsHandle {
    /// A snapshot of the counters now.
    pub fn snapshot(&self) -> DatagramStats {
        self.counters.snapshot()
    }
}

/// The live counters behind [`DatagramStats`].
#[derive(Debug, Default)]
pub(crate) struct DgCounters {
    pub(crate) datagrams_in: AtomicU64,
    pub(crate) datagrams_out: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    pub(crate) oversize: AtomicU64,
    pub(crate) send_dropped: AtomicU64,
    pub(crate) peers: AtomicUsize,
    pub(crate) peers_opened: AtomicU64,
    pub(crate) peers_refused: AtomicU64,
    pub(crate) evicted: AtomicU64,
    pub(crate) proven: AtomicU64,
    pub(crate) limited: AtomicU64,
    pub(crate) expired: AtomicU64,
    pub(crate) handler_panics: AtomicU64,
}

impl DgCounters {
    pub(crate) fn sent(&self, bytes: usize) {
        self.datagrams_out.fetch_add(1, Relaxed);
        self.bytes_out.fetch_add(bytes as u64, Relaxed);
    }

    pub(crate) fn dropped(&self, n: u64) {
        self.send_dropped.fetch_add(n, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> DatagramStats {
        DatagramStats {
            peers: self.peers.load(std::sync::atomic::Ordering::Acquire),
            datagrams_in: self.datagrams_in.load(Relaxed),
            datagrams_out: self.datagrams_out.load(Relaxed),
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            oversize: self.oversize.load(Relaxed),
            send_dropped: self.send_dropped.load(Relaxed),
            peers_opened: self.peers_opened.load(Relaxed),
            peers_refused: self.peers_refused.load(Relaxed),
            evicted: self.evicted.load(Relaxed),
            proven: self.proven.load(Relaxed),
            limited: self.limited.load(Relaxed),
            expired: self.expired.load(Relaxed),
            handler_panics: self.handler_panics.load(Relaxed),
        }
    }
}
