//! The live progress line: once a second on stderr, rewritten in place.

use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::report::group;
use super::shared::Shared;

/// The progress line of one run.
#[derive(Debug)]
pub(crate) struct Line {
    enabled: bool,
    shared: Arc<Shared>,
    connections: usize,
    start: Instant,
    last: Instant,
    last_received: u64,
    printed: bool,
}

impl Line {
    pub(crate) fn new(enabled: bool, shared: Arc<Shared>, connections: usize) -> Line {
        let now = Instant::now();
        Line { enabled, shared, connections, start: now, last: now, last_received: 0, printed: false }
    }

    /// Prints the line if a second has passed since the last one.
    pub(crate) fn tick(&mut self, phase: &str) {
        if !self.enabled || self.last.elapsed() < Duration::from_secs(1) {
            return;
        }
        let dt = self.last.elapsed().as_secs_f64();
        self.last = Instant::now();
        let sum = |f: fn(&super::shared::Progress) -> u64| self.shared.progress.iter().map(f).sum::<u64>();
        let connected = sum(|p| p.connected.load(Ordering::Relaxed));
        let failed = sum(|p| p.failed.load(Ordering::Relaxed));
        let sent = sum(|p| p.sent.load(Ordering::Relaxed));
        let received = sum(|p| p.received.load(Ordering::Relaxed));
        let errors = sum(|p| p.errors.load(Ordering::Relaxed));
        let rate = (received.saturating_sub(self.last_received)) as f64 / dt;
        self.last_received = received;
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[K{phase} {:>4}s  conns {}/{} ({} failed)  sent {}  recv {}  errors {}  {} msg/s",
            self.start.elapsed().as_secs(),
            group(connected),
            group(self.connections as u64),
            group(failed),
            group(sent),
            group(received),
            group(errors),
            group(rate as u64)
        );
        let _ = err.flush();
        self.printed = true;
    }

    /// Clears the line before the summary.
    pub(crate) fn finish(&mut self) {
        if self.printed {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[K");
            let _ = err.flush();
        }
    }
}
