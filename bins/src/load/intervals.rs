//! Figures per interval of a run (`--interval`, and the throughput curve
//! of `--plot` and `--json`): each load thread records its completions into
//! an accumulator of its own, which the coordinating thread takes and
//! resets at every interval boundary.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use hdrhistogram::Histogram;

/// What one thread completed since the last boundary.
#[derive(Debug)]
pub(crate) struct IntervalAcc {
    pub(crate) hist: Histogram<u64>,
    pub(crate) completed: u64,
    pub(crate) bytes: u64,
}

impl IntervalAcc {
    pub(crate) fn new() -> IntervalAcc {
        // Two significant figures: an interval's p99 needs no more, and the
        // histogram stays small (tens of KB) however long the run.
        let hist =
            Histogram::new_with_bounds(1, 3_600_000_000_000, 2).expect("constant histogram bounds are valid");
        IntervalAcc { hist, completed: 0, bytes: 0 }
    }

    /// One completion after `latency_ns`.
    pub(crate) fn complete(&mut self, latency_ns: u64) {
        self.hist.saturating_record(latency_ns);
        self.completed += 1;
    }
}

/// Locks an accumulator, whatever a panicking thread left in it.
pub(crate) fn lock(m: &Mutex<IntervalAcc>) -> MutexGuard<'_, IntervalAcc> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One interval of the measured window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    /// Where it starts, from the start of the window.
    pub start: Duration,
    /// How long it lasted (the last one may be shorter).
    pub length: Duration,
    /// Messages completed in it.
    pub completed: u64,
    /// Completed messages per second.
    pub throughput: f64,
    /// Payload bytes received in it.
    pub bytes: u64,
    /// Median latency of its completions (`None` if none).
    pub p50: Option<Duration>,
    /// 99th percentile latency of its completions.
    pub p99: Option<Duration>,
    /// The largest latency in it.
    pub max: Option<Duration>,
}

/// Takes what every thread accumulated since the last boundary, as the
/// interval from `start`, `length` long.
pub(crate) fn take(accs: &[Mutex<IntervalAcc>], start: Duration, length: Duration) -> Interval {
    let mut hist = IntervalAcc::new().hist;
    let (mut completed, mut bytes) = (0, 0);
    for m in accs {
        let mut a = lock(m);
        let _ = hist.add(&a.hist);
        a.hist.reset();
        completed += std::mem::take(&mut a.completed);
        bytes += std::mem::take(&mut a.bytes);
    }
    let secs = length.as_secs_f64();
    let q = |q: f64| (!hist.is_empty()).then(|| Duration::from_nanos(hist.value_at_quantile(q)));
    Interval {
        start,
        length,
        completed,
        throughput: if secs > 0.0 { completed as f64 / secs } else { 0.0 },
        bytes,
        p50: q(0.5),
        p99: q(0.99),
        max: (!hist.is_empty()).then(|| Duration::from_nanos(hist.max())),
    }
}

impl Interval {
    /// The line `--interval` prints.
    pub fn line(&self) -> String {
        let end = self.start + self.length;
        let p = |d: Option<Duration>| d.map_or("-".to_string(), super::report::human);
        let mut s = format!(
            "[{:7.2}-{:7.2} s] {:>12} msg/s  p50 {:>9}  p99 {:>9}  max {:>9}",
            self.start.as_secs_f64(),
            end.as_secs_f64(),
            super::report::group(self.throughput.round() as u64),
            p(self.p50),
            p(self.p99),
            p(self.max),
        );
        if self.bytes > 0 {
            let secs = self.length.as_secs_f64().max(1e-9);
            s.push_str(&format!("  {:.1} MB/s", self.bytes as f64 / secs / 1e6));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taking_an_interval_resets_the_accumulators() {
        let accs = [Mutex::new(IntervalAcc::new()), Mutex::new(IntervalAcc::new())];
        for ns in [1_000, 2_000, 3_000] {
            lock(&accs[0]).complete(ns);
        }
        lock(&accs[1]).complete(100_000);
        let i = take(&accs, Duration::ZERO, Duration::from_millis(500));
        assert_eq!(i.completed, 4);
        assert_eq!(i.throughput, 8.0);
        assert_eq!(i.max.map(|d| d.as_micros()), Some(100));
        let next = take(&accs, Duration::from_millis(500), Duration::from_millis(500));
        assert_eq!((next.completed, next.p99), (0, None));
        assert!(next.line().contains("p99         -"), "{}", next.line());
    }
}
