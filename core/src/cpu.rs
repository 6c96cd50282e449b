//! How much of the machine's CPU time is idle: whether waking another
//! worker would give it a core of its own, or only take one from a process
//! the server shares the machine with (a load generator, say).

use std::time::{Duration, Instant};

/// Reads `/proc/stat` at most once per interval and keeps the idle share of
/// the last few intervals.
#[derive(Debug)]
pub(crate) struct IdleCpu {
    last: Option<(u64, u64)>,
    read_at: Instant,
    /// Idle cores over each of the last `SUSTAINED` intervals, in
    /// thousandths of a core, the newest at `next - 1`.
    recent: [u32; SUSTAINED],
    next: usize,
}

const INTERVAL: Duration = Duration::from_millis(100);

/// Intervals in a row a core must have been idle to count as spare. One
/// interval is not enough: when the scheduler puts a worker and a process
/// it ping-pongs with (a load generator on the same machine) on one core
/// for a moment, the other core shows idle for an interval or two, and a
/// worker woken for it would then take a core from the two for good.
/// Measured at 64 connections on 2 cores: with one interval, 3 runs in 8
/// moved connections to the second worker (at 0.52–1.44 idle cores) and
/// were the slowest of the 16 runs; with three, none moved.
const SUSTAINED: usize = 3;

impl IdleCpu {
    pub(crate) fn new() -> IdleCpu {
        IdleCpu { last: jiffies(), read_at: Instant::now(), recent: [0; SUSTAINED], next: 0 }
    }

    /// Idle cores sustained over the last `SUSTAINED` intervals (the least
    /// of them), in thousandths of a core; `u32::MAX` where the system does
    /// not say (then assume there is room). Called after a pause, it starts
    /// over (and says 0 until enough fresh intervals are measured), so that
    /// a quiet stretch before the load does not count as room.
    pub(crate) fn idle(&mut self, now: Instant) -> u32 {
        let age = now.saturating_duration_since(self.read_at);
        if age >= INTERVAL {
            let current = jiffies();
            if age > 3 * INTERVAL {
                self.recent = [0; SUSTAINED];
            }
            let idle = match (self.last, current) {
                (_, None) => u32::MAX,
                _ if age > 3 * INTERVAL => 0,
                (Some((idle0, total0)), Some((idle1, total1))) if total1 > total0 => {
                    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
                    ((idle1.saturating_sub(idle0)) * cores * 1000 / (total1 - total0)) as u32
                }
                _ => 0,
            };
            self.push(idle);
            self.last = current;
            self.read_at = now;
        }
        self.sustained()
    }

    fn push(&mut self, idle: u32) {
        self.recent[self.next] = idle;
        self.next = (self.next + 1) % SUSTAINED;
    }

    fn sustained(&self) -> u32 {
        self.recent.iter().copied().min().unwrap_or(0)
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

    #[test]
    fn a_spare_core_must_be_idle_for_several_intervals_in_a_row() {
        let mut cpu = IdleCpu::new();
        // One interval with a core and a half idle (the scheduler put the
        // worker beside the load generator for a moment) is not room.
        cpu.push(1_440);
        assert_eq!(cpu.sustained(), 0);
        cpu.push(900);
        assert_eq!(cpu.sustained(), 0);
        cpu.push(1_000);
        assert_eq!(cpu.sustained(), 900, "three intervals: the least of them");
        cpu.push(100);
        assert_eq!(cpu.sustained(), 100, "one busy interval ends it");
        cpu.push(800);
        cpu.push(800);
        assert_eq!(cpu.sustained(), 100);
        cpu.push(800);
        assert_eq!(cpu.sustained(), 800);
    }
}
