//! `switchboard-server --stats-every DURATION`: one line of figures on
//! stdout per period.

use std::time::{Duration, Instant};

use switchboard::{spawn_service, Service, Stats, StatsHandle, ThreadService};

use crate::printer::Printer;

/// The line for the period from `before` to `now`, `secs` long: totals, and
/// rates over the period.
///
/// ```
/// use switchboard::Stats;
/// use switchboard_bins::admin::stats_line;
///
/// let line = stats_line(&Stats::default(), &Stats::default(), 1.0);
/// assert!(line.starts_with("stats: open 0 accepted 0 (+0/s)"));
/// ```
pub fn stats_line(before: &Stats, now: &Stats, secs: f64) -> String {
    let secs = secs.max(1e-3);
    let rate = |a: u64, b: u64| (b.saturating_sub(a) as f64 / secs).round() as u64;
    format!(
        "stats: open {} accepted {} (+{}/s) rejected {} closed {} timed-out {} \
         in {} B/s out {} B/s frames {}/s frame-errors {} slow-consumers {} forced {} \
         panics {} accept-errors {} queued {} B",
        now.open,
        now.accepted,
        rate(before.accepted, now.accepted),
        now.rejected,
        now.closed,
        now.timed_out,
        rate(before.bytes_in, now.bytes_in),
        rate(before.bytes_out, now.bytes_out),
        rate(before.frames, now.frames),
        now.frame_errors,
        now.slow_consumer_disconnects,
        now.forced_closes,
        now.handler_panics,
        now.accept_errors,
        now.queued_bytes,
    )
}

/// A thread printing [`stats_line`] every period (to stdout's queue: it
/// never waits on a stdout nobody reads); stops when dropped.
#[derive(Debug)]
pub struct StatsTicker {
    thread: ThreadService,
}

impl StatsTicker {
    /// Starts printing the figures of `stats` to `out` every `every`.
    pub fn start(stats: StatsHandle, every: Duration, out: Printer) -> std::io::Result<StatsTicker> {
        let thread = spawn_service("stats-every", move |stop| {
            let mut before = stats.snapshot();
            let mut at = Instant::now();
            while !stop.wait(every) {
                let now = stats.snapshot();
                let line = stats_line(&before, &now, at.elapsed().as_secs_f64());
                out.line(line);
                (before, at) = (now, Instant::now());
            }
        })?;
        Ok(StatsTicker { thread })
    }

    /// Tells the thread to end, without waiting (dropping it joins it).
    pub fn stop(&mut self) {
        self.thread.stop();
    }
}
