//! Server counters, readable at any time as a [`Stats`] snapshot.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

/// Whether a figure only grows (a counter) or goes up and down (a gauge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CounterKind {
    /// Only grows; its metric name ends in `_total`.
    Counter,
    /// Goes up and down.
    Gauge,
}

/// How the periodic stats line (`switchboard-server --stats-every`) shows
/// a figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineForm {
    /// The figure now: `closed 3`.
    Total,
    /// Its rate over the period: `frames 120/s`, `in 4096 B/s`.
    Rate,
    /// Both: `accepted 7 (+2/s)`.
    TotalAndRate,
}

/// One figure of [`Stats`] and the names every output gives it, from the
/// one table in `core/src/stats.rs` ([`Stats::COUNTERS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CounterInfo {
    /// The field of [`Stats`] (and of [`WorkerStats`] when
    /// [`per_worker`](CounterInfo::per_worker)): also its key in JSON and in
    /// the test kit's `key=value` form.
    pub name: &'static str,
    /// Its word in [`Stats`]'s `Display` and in the stats line: `frame-errors`.
    pub label: &'static str,
    /// Its unit after the figure, `B` for bytes, or empty.
    pub unit: &'static str,
    /// How the stats line shows it.
    pub line: LineForm,
    /// Its Prometheus metric name.
    pub metric: &'static str,
    /// Counter or gauge.
    pub kind: CounterKind,
    /// Kept per worker ([`WorkerStats`]); the metric has one sample per
    /// worker, labelled `worker="N"`.
    pub per_worker: bool,
    /// The metric's help text.
    pub help: &'static str,
}

/// A figure's value as a `u64`, whatever its type.
trait Figure: Copy {
    fn to_u64(self) -> u64;
    fn from_u64(n: u64) -> Self;
}

impl Figure for u64 {
    fn to_u64(self) -> u64 {
        self
    }
    fn from_u64(n: u64) -> u64 {
        n
    }
}

impl Figure for usize {
    fn to_u64(self) -> u64 {
        self as u64
    }
    fn from_u64(n: u64) -> usize {
        usize::try_from(n).unwrap_or(usize::MAX)
    }
}

/// The table of counters: each line declares a figure of [`Stats`] once,
/// with where it is kept, its words in `Display` and the stats line, its
/// Prometheus name, kind and help, and whether it is kept per worker. From
/// it come [`Stats`], [`WorkerStats`], their `get`/`set` by name,
/// `Display`, [`Stats::COUNTERS`] and the snapshots.
///
/// `= (where)`: `open` (the open count, read first and acquiring), `shared
/// F` (`Counters::F`), `workers F` (the sum of every `WorkerCounters::F`),
/// `both F` (`Counters::F` plus that sum), `queued` (the bytes queued).
/// `per_worker` or `total`: whether [`WorkerStats`] has it.
macro_rules! counters {
    ($(
        $(#[doc = $doc:literal])*
        $name:ident: $ty:ty = ($($read:tt)*),
            $label:literal $unit:literal $line:ident,
            $metric:literal $kind:ident $shape:ident,
            $help:literal;
    )*) => {
        /// A snapshot of a server's counters, from [`Server::stats`](crate::Server::stats).
        ///
        /// Every figure is declared once, in the table of
        /// `core/src/stats.rs`, which also names it for `Display`, the stats
        /// line, JSON, Prometheus and the test kit ([`Stats::COUNTERS`]).
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
            $( $(#[doc = $doc])* pub $name: $ty, )*
        }

        impl Stats {
            /// Every figure, in the order `Display` shows them.
            pub const COUNTERS: &'static [CounterInfo] = &[$(
                CounterInfo {
                    name: stringify!($name),
                    label: $label,
                    unit: $unit,
                    line: LineForm::$line,
                    metric: $metric,
                    kind: CounterKind::$kind,
                    per_worker: counters!(@per_worker $shape),
                    help: $help,
                },
            )*];

            /// The figure named `name` (a [`CounterInfo::name`]).
            pub fn get(&self, name: &str) -> Option<u64> {
                match name {
                    $( stringify!($name) => Some(Figure::to_u64(self.$name)), )*
                    _ => None,
                }
            }

            /// Sets the figure named `name`; false if there is none.
            pub fn set(&mut self, name: &str, value: u64) -> bool {
                match name {
                    $( stringify!($name) => self.$name = Figure::from_u64(value), )*
                    _ => return false,
                }
                true
            }
        }

        impl fmt::Display for Stats {
            /// `open 1 accepted 5 ... in 120 B out 120 B ...`: every figure
            /// by its label, with its unit.
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                for (i, c) in Stats::COUNTERS.iter().enumerate() {
                    let sep = if i == 0 { "" } else { " " };
                    let value = self.get(c.name).unwrap_or_default();
                    match c.unit {
                        "" => write!(f, "{sep}{} {value}", c.label)?,
                        unit => write!(f, "{sep}{} {value} {unit}", c.label)?,
                    }
                }
                Ok(())
            }
        }

        impl Counters {
            pub(crate) fn snapshot(&self) -> Stats {
                // In table order: `open` first, acquiring, so every close
                // counted before its decrement is seen in the figures after it.
                Stats { $( $name: counters!(@read self, $($read)*), )* }
            }
        }

        counters!(@worker w [] [] [] $( $shape [$(#[doc = $doc])*] $name $ty = ($($read)*); )*);
    };

    (@per_worker per_worker) => { true };
    (@per_worker total) => { false };

    (@read $c:ident, open) => { $c.open.load(std::sync::atomic::Ordering::Acquire) };
    (@read $c:ident, shared $f:ident) => { $c.$f.load(Relaxed) };
    (@read $c:ident, workers $f:ident) => { $c.workers.iter().map(|w| w.$f.load(Relaxed)).sum() };
    (@read $c:ident, both $f:ident) => {
        $c.$f.load(Relaxed) + $c.workers.iter().map(|w| w.$f.load(Relaxed)).sum::<u64>()
    };
    (@read $c:ident, queued) => { $c.queued() };

    // One worker's share: only what the worker keeps.
    (@wread $w:ident, workers $f:ident) => { $w.$f.load(Relaxed) };
    (@wread $w:ident, both $f:ident) => { $w.$f.load(Relaxed) };
    (@wread $w:ident, queued) => { $w.queued.load(Relaxed) };

    // WorkerStats: the per_worker lines, gathered one by one.
    (@worker $w:ident [$($fields:tt)*] [$($reads:tt)*] [$($names:ident)*]
        per_worker [$($doc:tt)*] $name:ident $ty:ty = ($($read:tt)*); $($rest:tt)*) => {
        counters!(@worker $w
            [$($fields)* $($doc)* pub $name: $ty,]
            [$($reads)* $name: counters!(@wread $w, $($read)*),]
            [$($names)* $name]
            $($rest)*);
    };
    (@worker $w:ident [$($fields:tt)*] [$($reads:tt)*] [$($names:ident)*]
        total [$($doc:tt)*] $name:ident $ty:ty = ($($read:tt)*); $($rest:tt)*) => {
        counters!(@worker $w [$($fields)*] [$($reads)*] [$($names)*] $($rest)*);
    };
    (@worker $w:ident [$($fields:tt)*] [$($reads:tt)*] [$($names:ident)*]) => {
        /// One worker's share of the counters in [`Stats`]: summed over
        /// every worker they give the snapshot's figures of the same name
        /// (but `closed`: the acceptor's own closes, when a worker was gone,
        /// are in no worker's share). The fields are the
        /// [`per_worker`](CounterInfo::per_worker) lines of
        /// [`Stats::COUNTERS`].
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct WorkerStats {
            $($fields)*
        }

        impl WorkerStats {
            /// The figure named `name`, if it is kept per worker.
            pub fn get(&self, name: &str) -> Option<u64> {
                let $w = self;
                match name {
                    $( stringify!($names) => Some(Figure::to_u64($w.$names)), )*
                    _ => None,
                }
            }

            /// Sets the figure named `name`; false if it is not kept per worker.
            pub fn set(&mut self, name: &str, value: u64) -> bool {
                let $w = self;
                match name {
                    $( stringify!($names) => $w.$names = Figure::from_u64(value), )*
                    _ => return false,
                }
                true
            }
        }

        impl WorkerCounters {
            /// This worker's share now.
            pub(crate) fn share(&self) -> WorkerStats {
                let $w = self;
                WorkerStats { $($reads)* }
            }
        }
    };
}

counters! {
    /// Connections open now (accepted and not yet closed).
    open: usize = (open),
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
