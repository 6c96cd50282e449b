//! `GET /stats.json`: the figures the status page shows, and the history
//! as rates between samples.

use serde_json::{json, Map, Value};

use super::View;

/// The whole `/stats.json` body.
pub(crate) fn render(view: &View) -> String {
    let s = view.stats.snapshot();
    let workers: Vec<Value> = view
        .stats
        .workers()
        .iter()
        .map(|w| {
            json!({
                "closed": w.closed, "timed_out": w.timed_out, "bytes_in": w.bytes_in,
                "bytes_out": w.bytes_out, "frames": w.frames, "frame_errors": w.frame_errors,
                "forced_closes": w.forced_closes, "queued_bytes": w.queued_bytes,
            })
        })
        .collect();
    let mut extra = Map::new();
    for m in view.extra_now() {
        extra.insert(m.name.to_owned(), json!(m.value));
    }
    let points = view.history.points();
    let history: Vec<Value> = points
        .windows(2)
        .map(|p| {
            let secs = (p[1].unix_ms.saturating_sub(p[0].unix_ms) as f64 / 1000.0).max(0.001);
            let rate = |a: u64, b: u64| (b.saturating_sub(a) as f64 / secs).round();
            json!({
                "unix_ms": p[1].unix_ms,
                "open": p[1].open,
                "in_bps": rate(p[0].bytes_in, p[1].bytes_in),
                "out_bps": rate(p[0].bytes_out, p[1].bytes_out),
                "frames_ps": rate(p[0].frames, p[1].frames),
            })
        })
        .collect();
    json!({
        "handler": view.handler,
        "phase": view.shutdown.phase().to_string(),
        "started_unix": view.started_unix,
        "max_connections": view.max_connections,
        "stats": {
            "open": s.open, "accepted": s.accepted, "rejected": s.rejected, "closed": s.closed,
            "timed_out": s.timed_out, "bytes_in": s.bytes_in, "bytes_out": s.bytes_out,
            "frames": s.frames, "frame_errors": s.frame_errors,
            "slow_consumer_disconnects": s.slow_consumer_disconnects,
            "messages_dropped": s.messages_dropped, "forced_closes": s.forced_closes,
            "accept_errors": s.accept_errors, "handler_panics": s.handler_panics,
            "queued_bytes": s.queued_bytes,
            "tls_handshakes": s.tls_handshakes, "tls_handshakes_refused": s.tls_handshakes_refused,
        },
        "workers": workers,
        "extra": extra,
        "history": history,
    })
    .to_string()
}
