//! How much of the machine's CPU time is idle: whether waking another
//! worker would give it a core of its own, or only take one from a process
//! the server shares the machine with (a load generator, say).

use std::time::{Duration, Instant};

/// Reads `/proc/stat` at most once per interval and keeps the idle share of
/// the last interval.
#[derive(Debug)]
pub(crate) struct IdleCpu {
    last: Option<(u64, u64)>,
    read_at: Instant,
    /// Idle cores over the last interval, in thousandths of a core.
    idle: u32,
}

const INTERVAL: Duration = Duration::from_millis(100);

impl IdleCpu {
    pub(crate) fn new() -> IdleCpu {
        IdleCpu { last: jiffies(), read_at: Instant::now(), idle: 0 }
    }

    /// Idle cores over the last interval, in thousandths of a core;
    /// `u32::MAX` where the system does not say (then assume there is
    /// room). Called after a pause, it first takes a new baseline (and says
    /// 0 until a fresh interval is measured), so that a quiet stretch
    /// before the load does not count as room.
    pub(crate) fn idle(&mut self, now: Instant) -> u32 {
        let age = now.saturating_duration_since(self.read_at);
        if age >= INTERVAL {
            let current = jiffies();
            self.idle = match (self.last, current) {
                (_, None) => u32::MAX,
                _ if age > 3 * INTERVAL => 0,
                (Some((idle0, total0)), Some((idle1, total1))) if total1 > total0 => {
                    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
                    ((idle1.saturating_sub(idle0)) * cores * 1000 / (total1 - total0)) as u32
                }
                _ => 0,
            };
            self.last = current;
            self.read_at = now;
        }
        self.idle
    }
}

/// (idle + iowait, total) jiffies of all CPUs, from the first line of
/// `/proc/stat`.
fn jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let fields: Vec<u64> = line.split_whitespace().filter_map(|f| f.parse().ok()).collect();
    let idle = fields.get(3)? + fields.get(4).copied().unwrap_or(0);
    Some((idle, fields.iter().take(8).sum()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_machine_idle_share() {
        let (idle, total) = jiffies().expect("/proc/stat on Linux");
        assert!(idle <= total);
        let mut cpu = IdleCpu::new();
        let cores = std::thread::available_parallelism().unwrap().get() as u32;
        let start = cpu.read_at;
        assert_eq!(cpu.idle(start + INTERVAL / 2), 0, "nothing measured yet");
        let idle = cpu.idle(start + INTERVAL);
        assert!(idle <= cores * 1000, "{idle} thousandths of {cores} cores");
        // After a long pause the old baseline is not used.
        assert_eq!(cpu.idle(start + INTERVAL * 10), 0);
    }
}
