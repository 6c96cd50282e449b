//! `GET /metrics`: the Prometheus text exposition format (version 0.0.4).

use std::fmt::Write;

use switchboard::Phase;

use super::{Kind, View};

/// Writes one metric family: `# HELP`, `# TYPE`, then one line per sample
/// (`labels` is the text between the braces, empty for none).
struct Family<'a> {
    out: &'a mut String,
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
    f.one("switchboard_connections_open", "Connections open now.", Gauge, s.open);
    f.one("switchboard_connections_accepted_total", "Connections accepted.", Counter, s.accepted);
    f.one(
        "switchboard_connections_rejected_total",
        "Connections turned away at the connection limit.",
        Counter,
        s.rejected,
    );
    f.per_worker(
        "switchboard_connections_closed_total",
        "Connections closed, for any reason, by each worker.",
        Counter,
        w.iter().map(|w| w.closed),
    );
    f.per_worker(
        "switchboard_connections_timed_out_total",
        "Connections closed by the idle or frame timeout.",
        Counter,
        w.iter().map(|w| w.timed_out),
    );
    f.per_worker(
        "switchboard_bytes_in_total",
        "Bytes read from peers.",
        Counter,
        w.iter().map(|w| w.bytes_in),
    );
    f.per_worker(
        "switchboard_bytes_out_total",
        "Bytes written to peers, file regions included.",
        Counter,
        w.iter().map(|w| w.bytes_out),
    );
    f.per_worker(
        "switchboard_frames_total",
        "Frames handed to the handler.",
        Counter,
        w.iter().map(|w| w.frames),
    );
    f.per_worker(
        "switchboard_frame_errors_total",
        "Frames rejected by the framing (too long, bad length).",
        Counter,
        w.iter().map(|w| w.frame_errors),
    );
    f.one(
        "switchboard_slow_consumer_disconnects_total",
        "Connections cut off as slow consumers.",
        Counter,
        s.slow_consumer_disconnects,
    );
    f.one(
        "switchboard_slow_consumer_messages_dropped_total",
        "Messages dropped for slow consumers.",
        Counter,
        s.messages_dropped,
    );
    f.per_worker(
        "switchboard_forced_closes_total",
        "Connections force-closed at the shutdown grace deadline.",
        Counter,
        w.iter().map(|w| w.forced_closes),
    );
    f.one("switchboard_handler_panics_total", "Handler callbacks that panicked.", Counter, s.handler_panics);
    f.one("switchboard_accept_errors_total", "Errors from accept.", Counter, s.accept_errors);
    f.one("switchboard_tls_handshakes_total", "TLS handshakes completed.", Counter, s.tls_handshakes);
    f.one(
        "switchboard_tls_handshakes_refused_total",
        "TLS connections closed before their handshake: the handshake queue was full.",
        Counter,
        s.tls_handshakes_refused,
    );
    f.per_worker(
        "switchboard_outbound_queued_bytes",
        "Bytes queued for connections and not yet written (file regions not included).",
        Gauge,
        w.iter().map(|w| w.queued_bytes as u64),
    );
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
    for source in &view.extra {
        for m in source() {
            f.one(m.name, m.help, m.kind, m.value);
        }
    }
    out
}
