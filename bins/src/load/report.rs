//! The result of a run: a summary table for a person, one JSON object for a
//! script.

use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

/// What a run measured. Errors are counted by kind, never left out.
#[derive(Debug, Clone)]
pub struct Report {
    /// `echo`, `chat`, `file` or `idle`.
    pub mode: &'static str,
    /// The server loaded.
    pub target: switchboard::Addr,
    /// Event-loop threads used.
    pub threads: usize,
    /// Open-loop rate (messages per second in total), or `None` for the closed loop.
    pub rate: Option<f64>,
    /// Closed loop: messages in flight per connection.
    pub depth: usize,
    /// Connections asked for.
    pub connections: usize,
    /// Connections established (chat: and welcomed).
    pub connected: u64,
    /// Connections that could not be established (or were never welcomed).
    pub connect_failures: u64,
    /// The measured window: from the moment every connection was ready to
    /// the stop (`--duration`), or to the last reply (`--messages`).
    pub window: Duration,
    /// Messages sent (file: requests).
    pub sent: u64,
    /// Messages completed (echo: replies; chat: deliveries to members; file: downloads).
    pub received: u64,
    /// Of those, completed within the window (the throughput counts these).
    pub in_window: u64,
    /// Completed messages per second over the window.
    pub throughput: f64,
    /// Payload bytes received (file mode).
    pub bytes: u64,
    /// Payload bytes per second over the window (file mode).
    pub bytes_per_sec: f64,
    /// Latency of completed messages; `None` if nothing completed.
    pub latency: Option<Latency>,
    /// Errors, by kind.
    pub errors: ErrorCounts,
    /// CPU time (user + system) this process used over the window.
    pub cpu: Duration,
    /// `cpu` divided by the messages completed in the window.
    pub cpu_per_message: Option<Duration>,
    /// Chat mode: who received what.
    pub chat: Option<ChatSummary>,
    /// File mode: what was downloaded.
    pub file: Option<FileSummary>,
    /// Echo and chat: the bytes of one message.
    pub message_size: Option<usize>,
    /// The run was stopped early (a signal): the figures cover what ran.
    pub interrupted: bool,
    /// Something came back from the server on some connection (a byte, or
    /// a close); false when it never accepted them or never answered.
    pub heard: bool,
    /// The window cut into intervals ([`Config::interval`](super::Config::interval)).
    pub intervals: Vec<super::Interval>,
    /// Every completed message's latency, in nanoseconds.
    pub histogram: Histogram<u64>,
}

/// Latency percentiles. Closed loop: from send to reply. Open loop: from
/// the scheduled send time, so time spent queued behind a slow server counts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    /// Messages measured.
    pub samples: u64,
    /// Median.
    pub p50: Duration,
    /// 90th percentile.
    pub p90: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// 99.9th percentile.
    pub p999: Duration,
    /// The largest.
    pub max: Duration,
    /// The mean.
    pub mean: Duration,
}

impl Latency {
    pub(crate) fn from_histogram(h: &Histogram<u64>) -> Option<Latency> {
        if h.is_empty() {
            return None;
        }
        let q = |q: f64| Duration::from_nanos(h.value_at_quantile(q));
        Some(Latency {
            samples: h.len(),
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
            max: Duration::from_nanos(h.max()),
            mean: Duration::from_nanos(h.mean() as u64),
        })
    }
}

/// Errors by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ErrorCounts {
    /// Replies that differ from what was expected (echo bytes, file md5,
    /// chat messages out of order or twice).
    pub mismatches: u64,
    /// Replies that break the protocol, or error replies from the server.
    pub protocol: u64,
    /// Connections the server closed, or that failed, during the run.
    pub disconnects: u64,
    /// Messages sent whose reply never came (chat: deliveries missing).
    pub lost: u64,
    /// Open loop: scheduled messages not sent (their connection was gone,
    /// or too far behind).
    pub skipped: u64,
}

impl ErrorCounts {
    /// All errors.
    pub fn total(&self) -> u64 {
        self.mismatches + self.protocol + self.disconnects + self.lost + self.skipped
    }
}

/// Chat mode: the check that every member received every other member's messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChatSummary {
    /// Members in the room (welcomed).
    pub members: u64,
    /// Deliveries expected: for each member, every message the others sent.
    pub expected: u64,
    /// Deliveries received.
    pub received: u64,
    /// Deliveries that never arrived.
    pub missing: u64,
    /// Members that received every message of every other member.
    pub complete_members: u64,
    /// Messages received out of order or twice.
    pub out_of_order: u64,
}

/// File mode: downloads and their checks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileSummary {
    /// The size the server announced.
    pub file_size: u64,
    /// Whether md5s were checked.
    pub verified: bool,
    /// Downloads whose md5 matched the header's.
    pub md5_ok: u64,
    /// Downloads whose md5 did not.
    pub md5_mismatch: u64,
    /// Error responses (`not found` and the like).
    pub error_replies: u64,
    /// Headers that declared more than [`MAX_FILE_SIZE`](super::MAX_FILE_SIZE)
    /// bytes (protocol errors: their connection was closed).
    pub oversized: u64,
}

impl Report {
    /// Whether the run saw no error and no failed connection.
    pub fn is_clean(&self) -> bool {
        self.errors.total() == 0 && self.connect_failures == 0
    }

    /// The report as one JSON object (latencies in microseconds, rates per second).
    pub fn to_json(&self) -> Value {
        let us = |d: Duration| d.as_nanos() as f64 / 1e3;
        let latency = self.latency.map(|l| {
            json!({
                "samples": l.samples,
                "p50": us(l.p50), "p90": us(l.p90), "p99": us(l.p99),
                "p99_9": us(l.p999), "max": us(l.max), "mean": us(l.mean),
            })
        });
        let secs = self.window.as_secs_f64();
        json!({
            "mode": self.mode,
            "target": self.target.to_string(),
            "threads": self.threads,
            "loop": if self.rate.is_some() { "open" } else { "closed" },
            "rate": self.rate,
            "depth": self.depth,
            "connections": {
                "requested": self.connections,
                "established": self.connected,
                "failed": self.connect_failures,
            },
            "duration_s": secs,
            "messages": { "sent": self.sent, "received": self.received, "in_window": self.in_window },
            "throughput_per_s": self.throughput,
            "bytes": self.bytes,
            "mb_per_s": self.bytes_per_sec / 1e6,
            "latency_us": latency,
            "errors": {
                "total": self.errors.total(),
                "mismatches": self.errors.mismatches,
                "protocol": self.errors.protocol,
                "disconnects": self.errors.disconnects,
                "lost": self.errors.lost,
                "skipped": self.errors.skipped,
            },
            "cpu": {
                "seconds": self.cpu.as_secs_f64(),
                "per_message_us": self.cpu_per_message.map(us),
                "cores": if secs > 0.0 { self.cpu.as_secs_f64() / secs } else { 0.0 },
            },
            "chat": self.chat.map(|c| json!({
                "members": c.members,
                "expected": c.expected,
                "received": c.received,
                "missing": c.missing,
                "complete_members": c.complete_members,
                "out_of_order": c.out_of_order,
            })),
            "message_size": self.message_size,
            "interrupted": self.interrupted,
            "percentiles_us": super::output::percentile_points(&self.histogram)
                .iter()
                .map(|&(p, ns)| json!({ "percentile": p, "us": ns as f64 / 1e3 }))
                .collect::<Vec<_>>(),
            "intervals": self.intervals.iter().map(|i| json!({
                "start_s": i.start.as_secs_f64(),
                "length_s": i.length.as_secs_f64(),
                "completed": i.completed,
                "throughput_per_s": i.throughput,
                "bytes": i.bytes,
                "p50_us": i.p50.map(us),
                "p99_us": i.p99.map(us),
                "max_us": i.max.map(us),
            })).collect::<Vec<_>>(),
            "file": self.file.map(|f| json!({
                "file_size": f.file_size,
                "verified": f.verified,
                "md5_ok": f.md5_ok,
                "md5_mismatch": f.md5_mismatch,
                "error_replies": f.error_replies,
                "oversized": f.oversized,
            })),
        })
    }

    /// The summary table for a person.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let lp = match self.rate {
            Some(r) => format!("open loop, {} msg/s scheduled", group(r as u64)),
            None => format!("closed loop, depth {}", self.depth),
        };
        let _ = writeln!(
            s,
            "switchboard-load {} -> {}  ({} connections, {lp}, {} thread{}){}",
            self.mode,
            self.target,
            group(self.connections as u64),
            self.threads,
            if self.threads == 1 { "" } else { "s" },
            if self.interrupted { "  [interrupted: what ran until the signal]" } else { "" }
        );
        let _ = writeln!(
            s,
            "  connections  {} established, {} failed",
            group(self.connected),
            group(self.connect_failures)
        );
        let _ = writeln!(s, "  window       {:.2} s", self.window.as_secs_f64());
        let what = match self.mode {
            "chat" => "delivered",
            "file" => "downloaded",
            _ => "received",
        };
        let _ = writeln!(
            s,
            "  messages     {} sent, {} {what} ({} in the window)",
            group(self.sent),
            group(self.received),
            group(self.in_window)
        );
        let _ = write!(s, "  throughput   {} msg/s", group(self.throughput.round() as u64));
        if let Some(size) = self.message_size {
            let _ = write!(s, " of {} B", group(size as u64));
        }
        if self.bytes > 0 {
            let _ = write!(s, ", {:.1} MB/s", self.bytes_per_sec / 1e6);
        }
        s.push('\n');
        match &self.latency {
            Some(l) => {
                let _ = writeln!(
                    s,
                    "  latency      p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
                    human(l.p50),
                    human(l.p90),
                    human(l.p99),
                    human(l.p999),
                    human(l.max)
                );
            }
            None => s.push_str("  latency      (nothing completed)\n"),
        }
        let e = &self.errors;
        let _ = writeln!(
            s,
            "  errors       {} (mismatches {}, protocol {}, disconnects {}, lost {}, skipped {})",
            group(e.total()),
            group(e.mismatches),
            group(e.protocol),
            group(e.disconnects),
            group(e.lost),
            group(e.skipped)
        );
        if let Some(c) = &self.chat {
            let _ = writeln!(
                s,
                "  chat         {} members; {} of {} deliveries received, {} missing; {}/{} members got everything; {} out of order",
                group(c.members),
                group(c.received),
                group(c.expected),
                group(c.missing),
                group(c.complete_members),
                group(c.members),
                group(c.out_of_order)
            );
        }
        if let Some(f) = &self.file {
            let md5 = if f.verified {
                format!("md5 ok {}, mismatched {}", group(f.md5_ok), group(f.md5_mismatch))
            } else {
                "md5 not checked".to_string()
            };
            let _ = writeln!(
                s,
                "  file         {} bytes each; {md5}; {} error replies",
                group(f.file_size),
                group(f.error_replies)
            );
            if f.oversized > 0 {
                let _ = writeln!(
                    s,
                    "               {} headers declared more than {} bytes (protocol errors)",
                    group(f.oversized),
                    group(super::MAX_FILE_SIZE)
                );
            }
        }
        let secs = self.window.as_secs_f64();
        let cores = if secs > 0.0 { self.cpu.as_secs_f64() / secs } else { 0.0 };
        let per = self.cpu_per_message.map_or("-".to_string(), human);
        let _ = writeln!(
            s,
            "  own CPU      {:.2} s, {per} per message ({cores:.2} cores)",
            self.cpu.as_secs_f64()
        );
        s
    }
}

/// `1234567` as `1,234,567`.
pub(crate) fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// A duration in the unit that reads best.
pub(crate) fn human(d: Duration) -> String {
    let ns = d.as_nanos() as f64;
    if ns < 1e3 {
        format!("{ns:.0} ns")
    } else if ns < 1e6 {
        format!("{:.0} µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_digits() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(1234567), "1,234,567");
    }

    #[test]
    fn humanizes_durations() {
        assert_eq!(human(Duration::from_nanos(500)), "500 ns");
        assert_eq!(human(Duration::from_micros(120)), "120 µs");
        assert_eq!(human(Duration::from_micros(12_345)), "12.35 ms");
        assert_eq!(human(Duration::from_millis(2500)), "2.50 s");
    }
}
