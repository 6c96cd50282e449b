//! State the event-loop threads and the coordinating thread share.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::time::Instant;

/// Connections are being opened (and, for chat, welcomed).
pub(crate) const CONNECTING: u8 = 0;
/// Every connection is ready: send.
pub(crate) const RUN: u8 = 1;
/// Stop sending; wait for what is in flight.
pub(crate) const STOP: u8 = 2;

/// Shared by all threads of one run.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Time zero of the run; every timestamp is nanoseconds since it.
    pub(crate) epoch: Instant,
    /// CONNECTING, RUN or STOP.
    pub(crate) phase: AtomicU8,
    /// When RUN began (ns since epoch).
    pub(crate) run_start_ns: AtomicU64,
    /// When STOP began (ns since epoch); `u64::MAX` before.
    pub(crate) stop_ns: AtomicU64,
    /// After a signal: when waiting for what is in flight ends at the
    /// latest (ns since epoch); `u64::MAX` before.
    pub(crate) cut_ns: AtomicU64,
    /// Messages left to send in `--messages` mode.
    budget: Option<AtomicU64>,
    /// Threads whose every connection is ready or has failed.
    pub(crate) workers_ready: AtomicUsize,
    /// The reason of a connection that failed before it was ready has been
    /// shown (once per run).
    pub(crate) warned_unready: std::sync::atomic::AtomicBool,
    /// Connections ready at the start of RUN, over all threads (chat: members).
    pub(crate) ready_total: AtomicUsize,
    /// Live counters, one set per thread.
    pub(crate) progress: Vec<Progress>,
    /// Chat only: deliveries still expected, per sender and in total.
    pub(crate) chat: Option<ChatShared>,
    /// Per thread: what it completed in the current interval.
    pub(crate) intervals: Vec<std::sync::Mutex<super::intervals::IntervalAcc>>,
}

/// Live counters of one thread, published once per loop turn.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    pub(crate) connected: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) sent: AtomicU64,
    pub(crate) received: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) bytes: AtomicU64,
    pub(crate) done: AtomicBool,
}

/// The closed loop of the chat mode: a sender may go on while fewer than
/// `depth` of its messages are still on their way to some member.
#[derive(Debug)]
pub(crate) struct ChatShared {
    /// Per member (global index): deliveries of its messages not yet seen.
    pub(crate) outstanding: Vec<AtomicI64>,
    /// The sum of `outstanding`.
    pub(crate) total: AtomicI64,
}

impl Shared {
    pub(crate) fn new(threads: usize, budget: Option<u64>, chat_members: Option<usize>) -> Shared {
        Shared {
            epoch: Instant::now(),
            phase: AtomicU8::new(CONNECTING),
            run_start_ns: AtomicU64::new(0),
            stop_ns: AtomicU64::new(u64::MAX),
            cut_ns: AtomicU64::new(u64::MAX),
            budget: budget.map(AtomicU64::new),
            workers_ready: AtomicUsize::new(0),
            warned_unready: std::sync::atomic::AtomicBool::new(false),
            ready_total: AtomicUsize::new(0),
            progress: (0..threads).map(|_| Progress::default()).collect(),
            chat: chat_members.map(|n| ChatShared {
                outstanding: (0..n).map(|_| AtomicI64::new(0)).collect(),
                total: AtomicI64::new(0),
            }),
            intervals: (0..threads)
                .map(|_| std::sync::Mutex::new(super::intervals::IntervalAcc::new()))
                .collect(),
        }
    }

    /// Nanoseconds since the epoch.
    pub(crate) fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Takes one message from the `--messages` budget; false once it is spent.
    pub(crate) fn take_budget(&self) -> bool {
        match &self.budget {
            None => true,
            Some(b) => b.fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| r.checked_sub(1)).is_ok(),
        }
    }

    /// Whether the `--messages` budget is spent.
    pub(crate) fn budget_spent(&self) -> bool {
        self.budget.as_ref().is_some_and(|b| b.load(Ordering::Acquire) == 0)
    }
}
