//! Waiting for a condition with a deadline.

use std::time::{Duration, Instant};

use switchboard::{Server, Stats};

/// How long any single wait in a test may take before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// Polls `cond` until it holds, failing the test after [`TIMEOUT`] with
/// `what`. Prefer [`wait_stats`] when the condition is on a server's
/// counters: its failure message shows them.
pub fn wait_until(what: &str, cond: impl FnMut() -> bool) {
    assert!(poll(TIMEOUT, cond), "timed out after {TIMEOUT:?} waiting until {what}");
}

/// Polls `cond` (at growing intervals, up to 50 ms) until it holds, or
/// `timeout` passes; returns whether it held.
pub(crate) fn poll(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    while !cond() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
    true
}

/// Something whose counters a test can read: a [`Server`] in the test
/// process or a [`ChildServer`](crate::child::ChildServer).
pub trait StatsSource {
    /// The counters now.
    fn stats(&self) -> Stats;
}

impl StatsSource for Server {
    fn stats(&self) -> Stats {
        Server::stats(self)
    }
}

/// Polls `server`'s counters until `cond` holds and returns the snapshot
/// that satisfied it; after [`TIMEOUT`] fails with `what` and the last
/// counters seen.
pub fn wait_stats(server: &impl StatsSource, what: &str, mut cond: impl FnMut(&Stats) -> bool) -> Stats {
    let mut last = Stats::default();
    let held = poll(TIMEOUT, || {
        last = server.stats();
        cond(&last)
    });
    assert!(held, "timed out after {TIMEOUT:?} waiting until {what}: {last}");
    last
}
