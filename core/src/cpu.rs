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
        let mut cpu = IdleCpu { last: None, read_at: Instant::now(), idle: u32::MAX };
        cpu.last = jiffies();
        cpu
    }

    /// Idle cores over the last interval, in thousandths of a core
    /// (`u32::MAX` where the system does not say: then assume there is room).
    pub(crate) fn idle(&mut self, now: Instant) -> u32 {
        if now.saturating_duration_since(self.read_at) >= INTERVAL {
            self.read_at = now;
            let current = jiffies();
            self.idle = match (self.last, current) {
                (Some((idle0, total0)), Some((idle1, total1))) if total1 > total0 => {
                    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
                    ((idle1 - idle0) * cores * 1000 / (total1 - total0)) as u32
                }
                _ => u32::MAX,
            };
            self.last = current;
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
        let later = Instant::now() + INTERVAL;
        let idle = cpu.idle(later);
        assert!(idle == u32::MAX || idle <= cores * 1000, "{idle} thousandths of {cores} cores");
    }
}
