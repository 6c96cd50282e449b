//! `GET /stats.json`: the figures the status page shows, and the history
//! as rates between samples.

use serde_json::{json, Map, Value};
use switchboard::{Stats, WorkerStats};

use super::View;

/// Every figure of [`Stats::COUNTERS`] by its name.
pub(super) fn stats_object(s: &Stats) -> Value {
    Value::Object(
        Stats::COUNTERS.iter().map(|c| (c.name.to_owned(), json!(s.get(c.name).unwrap_or(0)))).collect(),
    )
}

/// One worker's share: the figures kept per worker, by name.
pub(super) fn worker_object(w: &WorkerStats) -> Value {
    Value::Object(
        Stats::COUNTERS.iter().filter_map(|c| Some((c.name.to_owned(), json!(w.get(c.name)?)))).collect(),
    )
}

/// The whole `/stats.json` body.
pub(crate) fn render(view: &View) -> String {
    let s = view.stats.snapshot();
    let workers: Vec<Value> = view.stats.workers().iter().map(worker_object).collect();
    let mut extra = Map::new();
    for m in view.extra_now() {
        extra.insert(m.series(), json!(m.value));
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
        "stats": stats_object(&s),
        "workers": workers,
        "extra": extra,
        "history": history,
    })
    .to_string()
}
