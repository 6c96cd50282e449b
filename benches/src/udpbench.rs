//! UDP echo rows: `switchboard-server --handler echo --udp` against the
//! `tokio-udp-echo` baseline, driven by `switchboard-load udp-echo` (64 B
//! datagrams, closed loop, depth 1) from 1 and 64 peers, switchboard with its
//! defaults and with `--spin 200us`; datagrams echoed a second, loss, p99 and
//! server CPU per datagram. Target: ≥ 1.2× tokio's datagrams a second.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::Value;

use crate::figures::med_spread;
use crate::procs::{run_load, Bins, ServerProc};
use crate::{median, Kind, Options};

/// A row: peers, and the spin switchboard runs with (`None`: defaults).
type Row = (usize, Option<&'static str>);

/// The rows. Each row runs tokio too, so every ratio pairs runs made side by side.
const ROWS: [Row; 4] = [(1, None), (1, Some("200us")), (64, None), (64, Some("200us"))];

/// One run's numbers.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct UdpSample {
    pub(crate) per_sec: f64,
    pub(crate) loss_pct: f64,
    pub(crate) lost: u64,
    pub(crate) p99_us: f64,
    pub(crate) server_cpu_us: f64,
}

/// Every UDP run: per peer count, switchboard's and tokio's samples.
#[derive(Debug, Default)]
pub(crate) struct UdpResults {
    pub(crate) rows: Vec<(Row, [Vec<UdpSample>; 2])>,
}

fn index(kind: Kind) -> usize {
    match kind {
        Kind::Switchboard => 0,
        Kind::Tokio => 1,
    }
}

/// One round: every row, the servers in `order`. Failures are returned.
pub(crate) fn round(opts: &Options, bins: &Bins, order: [Kind; 2], res: &mut UdpResults) -> Vec<String> {
    let mut failures = Vec::new();
    if res.rows.is_empty() {
        res.rows = ROWS.iter().map(|&r| (r, [Vec::new(), Vec::new()])).collect();
    }
    for ((peers, spin), samples) in &mut res.rows {
        for kind in order {
            match run(opts, bins, kind, *peers, *spin) {
                Ok(s) => {
                    eprintln!(
                        "  {:<38} {:<11} {:>9.0} datagrams/s  lost {} ({:.3}%)  p99 {:>8.0} µs  server CPU {:.2} µs/datagram",
                        label(*peers, *spin),
                        kind.name(),
                        s.per_sec,
                        s.lost,
                        s.loss_pct,
                        s.p99_us,
                        s.server_cpu_us
                    );
                    samples[index(kind)].push(s);
                }
                Err(e) => failures.push(format!("{} on {}: {e}", label(*peers, *spin), kind.name())),
            }
        }
    }
    failures
}

/// A row's name: `udp echo 64 B, 64 peers, switchboard --spin 200us`.
fn label(peers: usize, spin: Option<&str>) -> String {
    let mut s = format!("udp echo 64 B, {peers} peer{}", if peers == 1 { "" } else { "s" });
    if let Some(spin) = spin {
        let _ = write!(s, ", switchboard --spin {spin}");
    }
    s
}

fn run(
    opts: &Options,
    bins: &Bins,
    kind: Kind,
    peers: usize,
    spin: Option<&str>,
) -> Result<UdpSample, String> {
    let server = match kind {
        Kind::Switchboard => {
            let mut args = vec!["--handler", "echo", "--udp", "--listen", "127.0.0.1:0"];
            if let Some(spin) = spin {
                args.extend(["--spin", spin]);
            }
            ServerProc::start(&bins.server, &args)?
        }
        Kind::Tokio => {
            let bin = crate::beside(&bins.tokio_echo, "tokio-udp-echo")?;
            ServerProc::start(&bin, &["--listen", "127.0.0.1:0"])?
        }
    };
    let cpu0 = server.cpu();
    let args: Vec<String> =
        ["udp-echo", "--target", &server.addr, "-c", &peers.to_string(), "--size", "64", "--duration"]
            .iter()
            .map(|s| s.to_string())
            .chain([opts.duration().to_string(), "--drain-timeout".into(), "1s".into()])
            .collect();
    let v: Value = run_load(&bins.load, &args, Duration::from_secs(120))?;
    let cpu = server.cpu().saturating_sub(cpu0);
    let f = |k: &str| v[k].as_f64().unwrap_or(0.0);
    let received = f("received");
    Ok(UdpSample {
        per_sec: f("per_sec"),
        loss_pct: f("loss_pct"),
        lost: f("lost") as u64,
        p99_us: v["latency_us"]["p99"].as_f64().unwrap_or(0.0),
        server_cpu_us: if received > 0.0 { cpu.as_secs_f64() * 1e6 / received } else { 0.0 },
    })
}

/// The UDP table (empty when nothing ran).
pub(crate) fn table(res: &UdpResults) -> String {
    let mut s = String::new();
    if res.rows.iter().all(|(_, v)| v[0].is_empty() && v[1].is_empty()) {
        return s;
    }
    s.push_str(
        "\nUDP echo, 64 B datagrams, closed loop (`switchboard-load udp-echo`), target ≥ 1.2× tokio. \
         Each row runs tokio beside switchboard; the `--spin 200us` rows run switchboard with that flag \
         (after a datagram its thread polls 200 µs before it parks, saving a wake-up per round trip at \
         the cost of CPU time; a spin shorter than the peer's round trip, wake-up included, parks anyway: \
         50 µs did in two rounds of three here), the others with its defaults. Datagrams/s are medians (min–max over the rounds):\n\n",
    );
    s.push_str("| load | switchboard datagrams/s | tokio datagrams/s | ratio | target | switchboard loss | tokio loss | switchboard p99 | tokio p99 | server CPU per datagram (sb / tokio) |\n");
    s.push_str("|---|---:|---:|---:|---|---:|---:|---:|---:|---:|\n");
    for ((peers, spin), v) in &res.rows {
        let m = |i: usize, f: fn(&UdpSample) -> f64| median(v[i].iter().map(f).collect());
        let spread = |i: usize| med_spread(&v[i], |x| x.per_sec, |n| format!("{n:.0}"));
        let (sb, tk) = (m(0, |x| x.per_sec), m(1, |x| x.per_sec));
        let met = if v[0].is_empty() || v[1].is_empty() {
            "not met (a run is missing)"
        } else if sb >= 1.2 * tk {
            "met"
        } else {
            "not met"
        };
        let ratio = if tk > 0.0 { format!("{:.2}×", sb / tk) } else { "–".into() };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {ratio} | {met} | {:.3}% | {:.3}% | {:.0} µs | {:.0} µs | {:.2} / {:.2} µs |",
            label(*peers, *spin),
            spread(0),
            spread(1),
            m(0, |x| x.loss_pct),
            m(1, |x| x.loss_pct),
            m(0, |x| x.p99_us),
            m(1, |x| x.p99_us),
            m(0, |x| x.server_cpu_us),
            m(1, |x| x.server_cpu_us),
        );
    }
    s
}
