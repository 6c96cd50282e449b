//! Server counters, readable at any time as a [`Stats`] snapshot: the
//! table that declares them, and the live atomics behind it.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

counters! {
    /// A snapshot of a server's counters, from [`Server::stats`](crate::Server::stats).
    ///
    /// Every figure is declared once, in the table of `core/src/stats.rs`,
    /// which also names it for `Display`, the stats line, JSON, Prometheus
    /// and the test kit ([`Stats::COUNTERS`]).
    ///
    /// # Order of updates
    ///
    /// When a connection closes, its worker first counts it in [`closed`](Stats::closed)
    /// (and [`timed_out`](Stats::timed_out) or [`forced_closes`](Stats::forced_closes)),
    /// then runs [`Handler::close`](crate::Handler::close), and only then takes it
    /// off [`open`](Stats::open). A connection is counted in
    /// [`accepted`](Stats::accepted) before it is counted in `open`. So once a
    /// snapshot shows `open == k`, every connection not among those `k` has been
    /// counted as closed and its handler's `close` has returned: a test may wait
    /// for `accepted == n && closed == n - k` and then assert on what `close` did.
    pub struct Stats from Counters, shown as "",
    per worker:
    /// One worker's share of the counters in [`Stats`]: summed over every
    /// worker they give the snapshot's figures of the same name (but
    /// `closed`: the acceptor's own closes, when a worker was gone, are in
    /// no worker's share). The fields are the
    /// [`per_worker`](crate::CounterInfo::per_worker) lines of [`Stats::COUNTERS`].
    pub struct WorkerStats from WorkerCounters;
    /// Connections open now (accepted and not yet closed).
    // First, and acquiring: every close counted before this decrement is
    // seen in the figures read after it.
    open: usize = (acquire open),
        "open" "" Total,
        "switchboard_connections_open" Gauge total,
        "Connections open now.";
    /// Connections accepted since start (rejected ones not included).
    accepted: u64 = (shared accepted),
        "accepted" "" TotalAndRate,
        "switchboard_connections_accepted_total" Counter total,
        "Connections accepted.";
    /// Connections turned away at the connection limit with `! server busy`.
    rejected: u64 = (shared rejected),
        "rejected" "" Total,
        "switchboard_connections_rejected_total" Counter total,
        "Connections turned away at the connection limit.";
    /// Connections closed since start, for any reason.
    closed: u64 = (both closed),
        "closed" "" Total,
        "switchboard_connections_closed_total" Counter per_worker,
        "Connections closed, for any reason, by each worker.";
    /// Connections closed by the idle timeout, the frame timeout or the TLS
    /// handshake timeout.
    timed_out: u64 = (workers timed_out),
        "timed-out" "" Total,
        "switchboard_connections_timed_out_total" Counter per_worker,
        "Connections closed by the idle or frame timeout.";
    /// Bytes read from peers.
    bytes_in: u64 = (workers bytes_in),
        "in" "B" Rate,
        "switchboard_bytes_in_total" Counter per_worker,
        "Bytes read from peers.";
    /// Bytes written to peers (file regions included).
    bytes_out: u64 = (workers bytes_out),
        "out" "B" Rate,
        "switchboard_bytes_out_total" Counter per_worker,
        "Bytes written to peers, file regions included.";
    /// Frames handed to handlers.
    frames: u64 = (workers frames),
        "frames" "" Rate,
        "switchboard_frames_total" Counter per_worker,
        "Frames handed to the handler.";
    /// Frames rejected by the framing (over the maximum, bad length).
    frame_errors: u64 = (workers frame_errors),
        "frame-errors" "" Total,
        "switchboard_frame_errors_total" Counter per_worker,
        "Frames rejected by the framing (too long, bad length).";
    /// Connections cut off as slow consumers (disconnect policy).
    slow_consumer_disconnects: u64 = (shared slow_consumer_disconnects),
        "slow-consumers" "" Total,
        "switchboard_slow_consumer_disconnects_total" Counter total,
        "Connections cut off as slow consumers.";
    /// Messages dropped for slow consumers (drop policy).
    messages_dropped: u64 = (shared messages_dropped),
        "dropped" "" Total,
        "switchboard_slow_consumer_messages_dropped_total" Counter total,
        "Messages dropped for slow consumers.";
    /// Connections force-closed at the shutdown grace deadline.
    forced_closes: u64 = (workers forced_closes),
        "forced" "" Total,
        "switchboard_forced_closes_total" Counter per_worker,
        "Connections force-closed at the shutdown grace deadline.";
    /// Handler callbacks that panicked.
    handler_panics: u64 = (shared handler_panics),
        "panics" "" Total,
        "switchboard_handler_panics_total" Counter total,
        "Handler callbacks that panicked.";
    /// Errors from `accept` (descriptor exhaustion and the like).
    accept_errors: u64 = (shared accept_errors),
        "accept-errors" "" Total,
        "switchboard_accept_errors_total" Counter total,
        "Errors from accept.";
    /// Bytes queued for all connections and not yet written (file regions
    /// not included).
    queued_bytes: usize = (queued),
        "queued" "B" Total,
        "switchboard_outbound_queued_bytes" Gauge per_worker,
        "Bytes queued for connections and not yet written (file regions not included).";
    /// TLS handshakes completed (sessions opened over TLS).
    tls_handshakes: u64 = (workers tls_handshakes),
        "tls-handshakes" "" Total,
        "switchboard_tls_handshakes_total" Counter total,
        "TLS handshakes completed.";
    /// TLS connections closed before their handshake because the handshake
    /// queue was full ([`CloseReason::HandshakeRefused`](crate::CloseReason::HandshakeRefused)).
    tls_handshakes_refused: u64 = (workers tls_handshakes_refused),
        "tls-refused" "" Total,
        "switchboard_tls_handshakes_refused_total" Counter total,
        "TLS connections closed before their handshake: the handshake queue was full.";
    /// Links (outbound connections, [`Conn::connect`](crate::Conn::connect))
    /// whose connect completed.
    links_opened: u64 = (workers links_opened),
        "links" "" Total,
        "switchboard_links_opened_total" Counter per_worker,
        "Outbound connections (links) connected.";
    /// Links whose connect failed: refused, timed out, or another error.
    link_connect_failures: u64 = (workers link_connect_failures),
        "link-failures" "" Total,
        "switchboard_link_connect_failures_total" Counter per_worker,
        "Outbound connections (links) whose connect was refused, timed out or failed.";
    /// Bytes read from links' upstreams (not in `bytes_in`).
    link_bytes_in: u64 = (workers link_bytes_in),
        "link-in" "B" Rate,
        "switchboard_link_bytes_in_total" Counter per_worker,
        "Bytes read from outbound connections (links).";
    /// Bytes written to links' upstreams (not in `bytes_out`).
    link_bytes_out: u64 = (workers link_bytes_out),
        "link-out" "B" Rate,
        "switchboard_link_bytes_out_total" Counter per_worker,
        "Bytes written to outbound connections (links).";
}

/// The live counters behind [`Stats`]. Those bumped on every read, write
/// or frame are per worker, each on its own cache line, so workers never
/// contend for them; a snapshot adds them up.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) open: AtomicUsize,
    pub(crate) accepted: AtomicU64,
    pub(crate) rejected: AtomicU64,
    /// Connections the acceptor had to close itself (a worker was gone).
    pub(crate) closed: AtomicU64,
    pub(crate) slow_consumer_disconnects: AtomicU64,
    pub(crate) messages_dropped: AtomicU64,
    pub(crate) accept_errors: AtomicU64,
    pub(crate) handler_panics: AtomicU64,
    pub(crate) workers: Box<[WorkerCounters]>,
}

/// The counters one worker bumps.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct WorkerCounters {
    pub(crate) closed: AtomicU64,
    pub(crate) timed_out: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    pub(crate) frames: AtomicU64,
    pub(crate) frame_errors: AtomicU64,
    pub(crate) forced_closes: AtomicU64,
    pub(crate) tls_handshakes: AtomicU64,
    pub(crate) tls_handshakes_refused: AtomicU64,
    pub(crate) links_opened: AtomicU64,
    pub(crate) link_connect_failures: AtomicU64,
    pub(crate) link_bytes_in: AtomicU64,
    pub(crate) link_bytes_out: AtomicU64,
    /// Bytes held in the queues of this worker's connections (the
    /// server-wide outbound budget adds them up). Only the worker changes
    /// it, so the line is never contended.
    pub(crate) queued: AtomicUsize,
}

/// Adds `n` to a counter.
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Relaxed);
}

/// Adds one to a counter.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Relaxed);
}

impl Counters {
    pub(crate) fn new(workers: usize) -> Counters {
        Counters { workers: (0..workers).map(|_| WorkerCounters::default()).collect(), ..Counters::default() }
    }

    /// Bytes held in every connection's queue.
    pub(crate) fn queued(&self) -> usize {
        self.workers.iter().map(|w| w.queued.load(Relaxed)).sum()
    }
}

/// Reads a server's counters from any thread: `Clone + Send + Sync`, from
/// [`Server::stats_handle`]. It keeps only the counters alive, not the
/// server.
///
/// ```no_run
/// use switchboard::{handler_fn, Flow, Framing, Server};
///
/// let echo = handler_fn(Framing::Raw, |data, conn| {
///     conn.send(data);
///     Flow::Continue
/// });
/// let server = Server::builder().start("127.0.0.1:0", echo)?;
/// let stats = server.stats_handle();
/// std::thread::spawn(move || loop {
///     println!("{}", stats.snapshot());
///     std::thread::sleep(std::time::Duration::from_secs(10));
/// });
/// server.wait();
/// # Ok::<(), switchboard::StartError>(())
/// ```
#[derive(Clone)]
pub struct StatsHandle {
    pub(crate) counters: Arc<Counters>,
}

impl StatsHandle {
    /// A snapshot of the counters now.
    pub fn snapshot(&self) -> Stats {
        self.counters.snapshot()
    }
}

impl fmt::Debug for StatsHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatsHandle").field("stats", &self.snapshot()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::CounterKind;

    /// Every figure set to a value of its own (its place in the table, + 1000).
    fn numbered() -> Stats {
        let mut s = Stats::default();
        for (i, c) in Stats::COUNTERS.iter().enumerate() {
            assert!(s.set(c.name, 1000 + i as u64), "{}", c.name);
        }
        s
    }

    #[test]
    fn every_counter_is_shown_by_display_with_its_value() {
        let s = numbered();
        let text = s.to_string();
        for (i, c) in Stats::COUNTERS.iter().enumerate() {
            let unit = if c.unit.is_empty() { String::new() } else { format!(" {}", c.unit) };
            let want = format!("{} {}{unit}", c.label, 1000 + i);
            assert!(text.contains(&want), "{want:?} not in {text:?}");
        }
        assert!(text.contains("panics 1012"), "{text}");
        assert!(
            text.starts_with("open 1000 accepted 1001 rejected 1002 closed 1003 timed-out 1004 in 1005 B")
        );
    }

    #[test]
    fn names_are_unique_and_get_returns_what_set_stored() {
        let s = numbered();
        for (i, c) in Stats::COUNTERS.iter().enumerate() {
            assert_eq!(s.get(c.name), Some(1000 + i as u64), "{}", c.name);
            assert_eq!(Stats::COUNTERS.iter().filter(|d| d.name == c.name).count(), 1);
            assert_eq!(Stats::COUNTERS.iter().filter(|d| d.label == c.label).count(), 1);
            assert_eq!(Stats::COUNTERS.iter().filter(|d| d.metric == c.metric).count(), 1);
            assert_eq!(c.kind == CounterKind::Counter, c.metric.ends_with("_total"), "{}", c.metric);
        }
        assert_eq!(s.get("nothing"), None);
        assert!(!Stats::default().set("nothing", 1));
    }

    #[test]
    fn the_per_worker_counters_are_the_fields_of_a_worker_share() {
        let counters = Counters::new(2);
        bump(&counters.workers[1].frames);
        add(&counters.workers[1].bytes_in, 7);
        counters.workers[0].queued.store(5, Relaxed);
        let share = counters.workers[1].share();
        assert_eq!((share.frames, share.bytes_in, share.queued_bytes), (1, 7, 0));
        assert_eq!(counters.workers[0].share().queued_bytes, 5);
        let mut w = WorkerStats::default();
        for c in Stats::COUNTERS {
            assert_eq!(w.set(c.name, 3), c.per_worker, "{}", c.name);
            assert_eq!(w.get(c.name), c.per_worker.then_some(3), "{}", c.name);
        }
        let snapshot = counters.snapshot();
        assert_eq!((snapshot.frames, snapshot.bytes_in, snapshot.queued_bytes), (1, 7, 5));
    }
}
