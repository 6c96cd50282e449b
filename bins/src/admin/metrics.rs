//! `GET /metrics`: the Prometheus text exposition format (version 0.0.4).

use std::fmt::Write;

use switchboard::{Phase, Stats, WorkerStats};

use super::{Kind, View};

/// Writes one metric family: `# HELP`, `# TYPE`, then one line per sample
/// (`labels` is the text between the braces, empty for none).
pub(super) struct Family<'a> {
    pub(super) out: &'a mut String,
}

impl Family<'_> {
    fn head(&mut self, name: &str, help: &str, kind: Kind) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn one(&mut self, name: &str, help: &str, kind: Kind, value: impl std::fmt::Display) {
        self.head(name, help, kind);
        let _ = writeln!(self.out, "{name} {value}");
    }

    fn per_worker(&mut self, name: &str, help: &str, kind: Kind, values: impl Iterator<Item = u64>) {
        self.head(name, help, kind);
        for (i, v) in values.enumerate() {
            let _ = writeln!(self.out, "{name}{{worker=\"{i}\"}} {v}");
        }
    }
}

/// Every figure of [`Stats::COUNTERS`] under its metric name: one sample,
/// or one per worker (`worker="N"`) for those kept per worker.
pub(super) fn counters(f: &mut Family<'_>, s: &Stats, workers: &[WorkerStats]) {
    for c in Stats::COUNTERS {
        let kind = Kind::from(c.kind);
        if c.per_worker {
            f.per_worker(c.metric, c.help, kind, workers.iter().map(|w| w.get(c.name).unwrap_or(0)));
        } else {
            f.one(c.metric, c.help, kind, s.get(c.name).unwrap_or(0));
        }
    }
}

/// The whole `/metrics` body.
pub(crate) fn render(view: &View) -> String {
    let s = view.stats.snapshot();
    let w = view.stats.workers();
    let mut out = String::with_capacity(8 << 10);
    let mut f = Family { out: &mut out };
    use Kind::{Counter, Gauge};
    f.one("switchboard_workers", "Worker threads of the server.", Gauge, w.len());
    f.one("switchboard_connections_max", "The connection limit.", Gauge, view.max_connections);
    f.one(
        "switchboard_start_time_seconds",
        "When the server started, in seconds since the Unix epoch.",
        Gauge,
        view.started_unix,
    );
    f.head("switchboard_phase", "The server's lifecycle phase: 1 for the current one.", Gauge);
    let now = view.shutdown.phase();
    for p in [Phase::Running, Phase::Draining, Phase::Forcing, Phase::Stopped] {
        let _ = writeln!(f.out, "switchboard_phase{{phase=\"{p}\"}} {}", u8::from(p == now));
    }
    counters(&mut f, &s, &w);
    f.one(
        "switchboard_admin_waiting",
        "Connections to this admin endpoint waiting for their request.",
        Gauge,
        view.admission.waiting(),
    );
    f.one(
        "switchboard_admin_evicted_total",
        "Admin connections closed with 429 to make room for newer ones (per-address share, waiting limit).",
        Counter,
        view.admission.evicted(),
    );
    // A family's samples come one after the other: one head for them.
    let mut family = "";
    for source in &view.extra {
        for m in source() {
            if m.name != family {
                f.head(m.name, m.help, m.kind);
                family = m.name;
            }
            let _ = writeln!(f.out, "{} {}", m.series(), m.value);
        }
    }
    out
}
