//! The balancing policy: a worker measures how busy its loop is, publishes
//! it for the acceptor, and when it has been saturated for a while while
//! another worker is idle and the machine has a core for it, moves some of
//! its connections there ([`migrate`](super::migrate) does the moving).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::handler::Handler;
use crate::mailbox::ConnKey;

use super::Worker;

/// How often a worker publishes how busy it is.
const BUSY_WINDOW: Duration = Duration::from_millis(20);
/// A worker busy this share of its time (per mille) is saturated.
const SATURATED: u32 = 900;
/// Windows in a row a worker must be saturated before it moves connections.
const HOT_WINDOWS: u32 = 5;
/// Windows after moving connections before it moves more.
const COOL_WINDOWS: u32 = 25;
/// Connections moved at most at once.
const MAX_MIGRATIONS: usize = 256;

/// How busy the loop was over the current window, and how long it has
/// been saturated.
#[derive(Debug)]
pub(super) struct Busy {
    window_start: Instant,
    /// Time spent waiting in `epoll_wait` in this window.
    waited: Duration,
    /// Saturated windows in a row.
    hot: u32,
    /// Windows left before moving connections again.
    cool: u32,
}

impl Busy {
    pub(super) fn new(now: Instant) -> Busy {
        Busy { window_start: now, waited: Duration::ZERO, hot: 0, cool: 0 }
    }
}

impl<H: Handler> Worker<H> {
    /// After a poll that began at `before`: counts the wait, and at the end
    /// of a window publishes how busy the worker was, samples the
    /// machine's idle CPU when busy, and rebalances when saturated long
    /// enough.
    pub(super) fn measure(&mut self, before: Instant) {
        let b = &mut self.balance;
        b.waited += self.now - before;
        if self.now - b.window_start < BUSY_WINDOW {
            return;
        }
        let window = self.now - b.window_start;
        let busy = window.saturating_sub(b.waited).as_micros() * 1000 / window.as_micros().max(1);
        let busy = busy.min(1000) as u32;
        self.busy.store(busy, Ordering::Relaxed);
        b.window_start = self.now;
        b.waited = Duration::ZERO;
        b.cool = b.cool.saturating_sub(1);
        b.hot = if busy >= SATURATED { b.hot + 1 } else { 0 };
        let rebalance = b.hot >= HOT_WINDOWS && b.cool == 0;
        if rebalance {
            b.hot = 0;
            b.cool = COOL_WINDOWS;
        }
        if busy >= self.shared.config.activate_above {
            // Busy: is there a core for another worker?
            let idle = self.idle_cpu.idle(self.now);
            self.shared.idle_cpu.store(idle, Ordering::Relaxed);
        }
        if rebalance {
            self.rebalance();
        }
    }

    /// This worker has been saturated for a while: if another is idle and
    /// the machine has a core for it, move some connections there.
    fn rebalance(&mut self) {
        let idle = self.shared.idle_cpu.load(Ordering::Relaxed);
        if self.draining || idle < self.shared.config.idle_to_activate || self.conns.len() < 2 {
            return;
        }
        let threshold = self.shared.config.activate_above;
        if threshold >= 1000 {
            return;
        }
        let mine = self.conns.len();
        let target = self
            .peers
            .iter()
            .enumerate()
            .filter(|(i, w)| *i != self.index && w.busy.load(Ordering::Relaxed) < threshold)
            .map(|(_, w)| w)
            .min_by_key(|w| w.load.get())
            .cloned();
        let Some(target) = target else { return };
        let theirs = target.load.get();
        if theirs + 1 >= mine {
            return;
        }
        let count = ((mine - theirs) / 4).clamp(1, MAX_MIGRATIONS);
        let keys: Vec<ConnKey> = self.conns.keys().take(count).collect();
        let moved = keys.into_iter().filter(|&key| self.migrate_out(key, &target)).count();
        log::debug!(
            "worker {}: saturated; moved {moved} of {mine} connections to a quieter worker ({:.2} cores idle)",
            self.index,
            f64::from(idle) / 1000.0
        );
    }
}
