//! `switchboard-server --stats-every DURATION`: one line of figures on
//! stdout per period.

use std::fmt::Write;
use std::time::{Duration, Instant};

use switchboard::{spawn_service, LineForm, Service, Stats, StatsHandle, ThreadService};

use crate::printer::Printer;

/// The line for the period from `before` to `now`, `secs` long: every
/// figure of [`Stats::COUNTERS`] by its label, as a total, a rate over the
/// period, or both, as the table says.
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
    let mut line = String::from("stats:");
    for c in Stats::COUNTERS {
        let (a, b) = (before.get(c.name).unwrap_or(0), now.get(c.name).unwrap_or(0));
        let rate = (b.saturating_sub(a) as f64 / secs).round() as u64;
        let unit = if c.unit.is_empty() { String::new() } else { format!(" {}", c.unit) };
        let _ = match c.line {
            LineForm::Total => write!(line, " {} {b}{unit}", c.label),
            LineForm::Rate => write!(line, " {} {rate}{unit}/s", c.label),
            LineForm::TotalAndRate => write!(line, " {} {b}{unit} (+{rate}/s)", c.label),
        };
    }
    line
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
