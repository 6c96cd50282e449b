//! The datagram side's counters, readable as a [`DatagramStats`] snapshot:
//! the table that declares them, and the live atomics behind it.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

counters! {
    /// A snapshot of a [`DatagramServer`](super::DatagramServer)'s counters.
    ///
    /// A peer is counted in [`peers_opened`](DatagramStats::peers_opened) before
    /// its first datagram is handled, and taken off [`peers`](DatagramStats::peers)
    /// only after its handler's `close` has returned.
    ///
    /// Every figure is declared once, in the table of
    /// `core/src/datagram/stats.rs`, which also names it for `Display` and
    /// Prometheus ([`DatagramStats::COUNTERS`]).
    pub struct DatagramStats from DgCounters, shown as "udp ";
    /// Peers in the table now.
    // First, and acquiring: every peer's close counted before its
    // decrement is seen in the figures read after it.
    peers: usize = (acquire peers),
        "peers" "" Total,
        "switchboard_udp_peers" Gauge total,
        "UDP peers in the table now.";
    /// Datagrams received and handed to the handler.
    datagrams_in: u64 = (shared datagrams_in),
        "datagrams-in" "" Total,
        "switchboard_udp_datagrams_in_total" Counter total,
        "UDP datagrams received and handled.";
    /// Payload bytes received (oversize datagrams not included).
    bytes_in: u64 = (shared bytes_in),
        "in" "B" Total,
        "switchboard_udp_bytes_in_total" Counter total,
        "UDP payload bytes received.";
    /// Datagrams sent (replies and sends through a
    /// [`DatagramSender`](super::DatagramSender)).
    datagrams_out: u64 = (shared datagrams_out),
        "datagrams-out" "" Total,
        "switchboard_udp_datagrams_out_total" Counter total,
        "UDP datagrams sent.";
    /// Payload bytes sent.
    bytes_out: u64 = (shared bytes_out),
        "out" "B" Total,
        "switchboard_udp_bytes_out_total" Counter total,
        "UDP payload bytes sent.";
    /// Datagrams received over the size limit and dropped unseen.
    oversize: u64 = (shared oversize),
        "oversize" "" Total,
        "switchboard_udp_oversize_total" Counter total,
        "UDP datagrams over the size limit, dropped.";
    /// Datagrams the server could not send (send buffer full past the
    /// pending limit, or an error from the system).
    send_dropped: u64 = (shared send_dropped),
        "send-dropped" "" Total,
        "switchboard_udp_send_dropped_total" Counter total,
        "UDP datagrams not sent: send queue or buffer full.";
    /// Peers opened since start.
    peers_opened: u64 = (shared peers_opened),
        "opened" "" Total,
        "switchboard_udp_peers_opened_total" Counter total,
        "UDP peers opened.";
    /// Datagrams from new addresses dropped because their source prefix
    /// (an IPv4 /24, an IPv6 /64) held its share of the table.
    peers_refused: u64 = (shared peers_refused),
        "refused" "" Total,
        "switchboard_udp_peers_refused_total" Counter total,
        "New UDP addresses refused: their prefix held its share of the table.";
    /// Peers taken out of the full table (the least recently heard, an
    /// unproven one first) to make room for a new address.
    evicted: u64 = (shared evicted),
        "evicted" "" Total,
        "switchboard_udp_evicted_total" Counter total,
        "UDP peers evicted from the full table (least recently heard).";
    /// Peers closed after the idle time.
    expired: u64 = (shared expired),
        "expired" "" Total,
        "switchboard_udp_expired_total" Counter total,
        "UDP peers closed after the idle time.";
    /// Peers that proved they receive at their address (a cookie).
    proven: u64 = (shared proven),
        "proven" "" Total,
        "switchboard_udp_proven_total" Counter total,
        "UDP peers that proved their address (cookie).";
    /// Replies not sent because they were over an unproven address's
    /// budget (three times what it sent).
    limited: u64 = (shared limited),
        "limited" "" Total,
        "switchboard_udp_limited_total" Counter total,
        "UDP replies not sent: over an unproven address's 3x budget.";
    /// Handler callbacks that panicked.
    handler_panics: u64 = (shared handler_panics),
        "panics" "" Total,
        "switchboard_udp_handler_panics_total" Counter total,
        "UDP handler callbacks that panicked.";
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_udp_counter_is_in_display_and_read_by_the_snapshot() {
        let live = DgCounters::default();
        live.sent(40);
        live.handler_panics.fetch_add(2, Relaxed);
        live.peers.fetch_add(3, Relaxed);
        let s = live.snapshot();
        assert_eq!((s.datagrams_out, s.bytes_out, s.handler_panics, s.peers), (1, 40, 2, 3));
        let mut numbered = DatagramStats::default();
        for (i, c) in DatagramStats::COUNTERS.iter().enumerate() {
            assert!(numbered.set(c.name, 100 + i as u64), "{}", c.name);
            assert!(c.metric.starts_with("switchboard_udp_"), "{}", c.metric);
        }
        let text = numbered.to_string();
        assert!(text.starts_with("udp peers 100 datagrams-in 101 in 102 B"), "{text}");
        for (i, c) in DatagramStats::COUNTERS.iter().enumerate() {
            assert!(text.contains(&format!("{} {}", c.label, 100 + i)), "{}: {text}", c.name);
        }
        assert!(text.contains("panics 113"), "{text}");
    }
}
