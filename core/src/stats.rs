//! Server counters, readable at any time as a [`Stats`] snapshot.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

/// A snapshot of a server's counters, from [`Server::stats`](crate::Server::stats).
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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Connections open now (accepted and not yet closed).
    pub open: usize,
    /// Connections accepted since start (rejected ones not included).
    pub accepted: u64,
    /// Connections turned away at the connection limit with `! server busy`.
    pub rejected: u64,
    /// Connections closed since start, for any reason.
    pub closed: u64,
    /// Connections closed by the idle timeout, the frame timeout or the TLS
    /// handshake timeout.
    pub timed_out: u64,
    /// Bytes read from peers.
    pub bytes_in: u64,
    /// Bytes written to peers (file regions included).
    pub bytes_out: u64,
    /// Frames handed to handlers.
    pub frames: u64,
    /// Frames rejected by the framing (over the maximum, bad length).
    pub frame_errors: u64,
    /// Connections cut off as slow consumers (disconnect policy).
    pub slow_consumer_disconnects: u64,
    /// Messages dropped for slow consumers (drop policy).
    pub messages_dropped: u64,
    /// Connections force-closed at the shutdown grace deadline.
    pub forced_closes: u64,
    /// Errors from `accept` (descriptor exhaustion and the like).
    pub accept_errors: u64,
    /// Handler callbacks that panicked.
    pub handler_panics: u64,
    /// Bytes queued for all connections and not yet written (file regions
    /// not included).
    pub queued_bytes: usize,
    /// TLS handshakes completed (sessions opened over TLS).
    pub tls_handshakes: u64,
    /// TLS connections closed before their handshake because the handshake
    /// queue was full ([`CloseReason::HandshakeRefused`](crate::CloseReason::HandshakeRefused)).
    pub tls_handshakes_refused: u64,
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "open {} accepted {} rejected {} closed {} timed-out {} in {} B out {} B \
             frames {} frame-errors {} slow-consumers {} dropped {} forced {} accept-errors {} queued {} B \
             tls-handshakes {} tls-refused {}",
            self.open,
            self.accepted,
            self.rejected,
            self.closed,
            self.timed_out,
            self.bytes_in,
            self.bytes_out,
            self.frames,
            self.frame_errors,
            self.slow_consumer_disconnects,
            self.messages_dropped,
            self.forced_closes,
            self.accept_errors,
            self.queued_bytes,
            self.tls_handshakes,
            self.tls_handshakes_refused,
        )
    }
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

    pub(crate) fn snapshot(&self) -> Stats {
        let sum = |f: fn(&WorkerCounters) -> &AtomicU64| -> u64 {
            self.workers.iter().map(|w| f(w).load(Relaxed)).sum()
        };
        Stats {
            // First, and acquiring: every close counted before this decrement is seen below.
            open: self.open.load(std::sync::atomic::Ordering::Acquire),
            accepted: self.accepted.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
            closed: self.closed.load(Relaxed) + sum(|w| &w.closed),
            timed_out: sum(|w| &w.timed_out),
            bytes_in: sum(|w| &w.bytes_in),
            bytes_out: sum(|w| &w.bytes_out),
            frames: sum(|w| &w.frames),
            frame_errors: sum(|w| &w.frame_errors),
            slow_consumer_disconnects: self.slow_consumer_disconnects.load(Relaxed),
            messages_dropped: self.messages_dropped.load(Relaxed),
            forced_closes: sum(|w| &w.forced_closes),
            accept_errors: self.accept_errors.load(Relaxed),
            handler_panics: self.handler_panics.load(Relaxed),
            queued_bytes: self.queued(),
            tls_handshakes: sum(|w| &w.tls_handshakes),
            tls_handshakes_refused: sum(|w| &w.tls_handshakes_refused),
        }
    }
}
