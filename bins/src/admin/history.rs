//! The last minutes of a server's figures, sampled once a second, for the
//! status page's chart.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::sync::Mutex;
use switchboard::StatsHandle;

/// How often the history is sampled.
pub(crate) const EVERY: Duration = Duration::from_secs(1);

/// How many samples are kept: five minutes.
pub(crate) const KEEP: usize = 300;

/// One sample of the cumulative figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Point {
    /// When, in milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// Connections open.
    pub open: usize,
    /// Bytes read since start.
    pub bytes_in: u64,
    /// Bytes written since start.
    pub bytes_out: u64,
    /// Frames since start.
    pub frames: u64,
}

/// A bounded ring of [`Point`]s, oldest first.
#[derive(Debug)]
pub struct History {
    keep: usize,
    points: Mutex<VecDeque<Point>>,
}

impl History {
    /// An empty history of at most `keep` points.
    pub fn new(keep: usize) -> History {
        History { keep: keep.max(2), points: Mutex::new(VecDeque::with_capacity(keep.max(2))) }
    }

    /// Adds a sample of `stats` now, dropping the oldest past the bound.
    pub fn sample(&self, stats: &StatsHandle) {
        let s = stats.snapshot();
        let unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        self.push(Point {
            unix_ms,
            open: s.open,
            bytes_in: s.bytes_in,
            bytes_out: s.bytes_out,
            frames: s.frames,
        });
    }

    /// Adds `p`, dropping the oldest past the bound.
    pub fn push(&self, p: Point) {
        let mut points = self.lock();
        if points.len() == self.keep {
            points.pop_front();
        }
        points.push_back(p);
    }

    /// The points, oldest first.
    pub fn points(&self) -> Vec<Point> {
        self.lock().iter().copied().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Point>> {
        self.points.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_points() {
        let h = History::new(3);
        for i in 0..5 {
            h.push(Point { unix_ms: i, open: 0, bytes_in: 0, bytes_out: 0, frames: 0 });
        }
        let ms: Vec<u64> = h.points().iter().map(|p| p.unix_ms).collect();
        assert_eq!(ms, [2, 3, 4]);
    }
}
