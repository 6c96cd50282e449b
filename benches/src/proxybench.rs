//! The proxy rows: `switchboard-server --handler proxy` against
//! `tokio-proxy` (tokio's `copy_bidirectional`, a task per client), both in
//! front of the same backend, the proxies alternating within each round.
//!
//! - Bulk: a file (1 GiB; 64 MiB with `--quick`) from `sendfile-server`
//!   downloaded through the proxy by `switchboard-load file --no-md5`, MB/s.
//!   Target: ≥ 1.0× tokio.
//! - Echo 64 B at 64 and 1,000 connections through the proxy to
//!   `switchboard-server --handler echo`: msg/s, p50, p99. Target: msg/s
//!   ≥ 1.2× tokio with p99 ≤ tokio's.
//! - Idle: the proxy's RSS growth per relayed pair (a client and its
//!   backend connection) with `switchboard-load idle` holding connections
//!   through it, for reference.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::Value;

use crate::filebench::BenchFile;
use crate::procs::{run_load, Bins, ServerProc};
use crate::{median, Options};

/// The proxies compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proxy {
    Switchboard,
    Tokio,
}

impl Proxy {
    fn name(self) -> &'static str {
        match self {
            Proxy::Switchboard => "switchboard",
            Proxy::Tokio => "tokio",
        }
    }

    fn start(self, bins: &Bins, backend: &str) -> Result<ServerProc, String> {
        match self {
            Proxy::Switchboard => ServerProc::start(
                &bins.server,
                &["--handler", "proxy", "--backend", backend, "--listen", "127.0.0.1:0"],
            ),
            Proxy::Tokio => {
                ServerProc::start(&crate::beside(&bins.tokio_echo, "tokio-proxy")?, &["--backend", backend])
            }
        }
    }
}

/// One echo run through a proxy.
#[derive(Debug, Clone, Copy, Default)]
struct Echo {
    msgs: f64,
    p50_us: f64,
    p99_us: f64,
}

/// A proxy's figures over the rounds.
#[derive(Debug, Default)]
struct Figures {
    /// Bulk bytes per second.
    bulk: Vec<f64>,
    /// Per echo load (as [`ECHO_LOADS`]).
    echo: [Vec<Echo>; 2],
    /// RSS growth per relayed pair, bytes; the pairs held.
    idle: Vec<(f64, usize)>,
}

/// The echo loads: name, connections.
const ECHO_LOADS: [(&str, usize); 2] =
    [("echo 64 B, 64 connections", 64), ("echo 64 B, 1,000 connections", 1_000)];

fn f(v: &Value, path: &[&str]) -> f64 {
    path.iter().fold(v, |cur, p| &cur[*p]).as_f64().unwrap_or(0.0)
}

fn errors(v: &Value) -> u64 {
    f(v, &["errors", "total"]) as u64 + f(v, &["connections", "failed"]) as u64
}

/// The bulk row once: the file downloaded `gets` times through `proxy`.
fn bulk(bins: &Bins, proxy: Proxy, file: &BenchFile, gets: u32) -> Result<f64, String> {
    let path = file.path();
    let backend =
        ServerProc::start(&bins.sendfile, &["--file", &path.to_string_lossy(), "--md5", &file.md5])?;
    let proxy = proxy.start(bins, &backend.addr)?;
    let args: Vec<String> = ["file", &file.name, "--target", &proxy.addr, "--connections", "1", "--no-md5"]
        .iter()
        .map(|s| s.to_string())
        .chain(["--messages".into(), gets.to_string(), "--drain-timeout".into(), "20s".into()])
        .collect();
    let v = run_load(&bins.load, &args, Duration::from_secs(300))?;
    match errors(&v) {
        0 => Ok(f(&v, &["mb_per_s"]) * 1e6),
        n => Err(format!("{n} errors")),
    }
}

/// An echo row once: `conns` connections through `proxy` for the run's
/// duration.
fn echo(opts: &Options, bins: &Bins, proxy: Proxy, conns: usize) -> Result<Echo, String> {
    let backend = ServerProc::start(&bins.server, &["--handler", "echo", "--listen", "127.0.0.1:0"])?;
    let proxy = proxy.start(bins, &backend.addr)?;
    let conns = conns.to_string();
    let args: Vec<String> = [
        "echo",
        "--target",
        &proxy.addr,
        "--connections",
        &conns,
        "--size",
        "64",
        "--duration",
        opts.duration(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let v = run_load(&bins.load, &args, Duration::from_secs(120))?;
    match errors(&v) {
        0 => Ok(Echo {
            msgs: f(&v, &["throughput_per_s"]),
            p50_us: f(&v, &["latency_us", "p50"]),
            p99_us: f(&v, &["latency_us", "p99"]),
        }),
        n => Err(format!("{n} errors")),
    }
}

/// The idle row once: `pairs` idle clients held through `proxy`; the
/// proxy's RSS growth per pair and the pairs it held.
fn idle(bins: &Bins, proxy: Proxy, pairs: usize) -> Result<(f64, usize), String> {
    let backend = ServerProc::start(&bins.server, &["--handler", "echo", "--listen", "127.0.0.1:0"])?;
    let proxy = proxy.start(bins, &backend.addr)?;
    // Each pair is two descriptors of the proxy: the client's and the
    // backend's.
    let (rss0, rss, held) = crate::hold_idle(bins, &proxy, pairs, 2)?;
    if held == 0 {
        return Err("no relayed connection was established".into());
    }
    Ok(((rss - rss0) / held as f64, held))
}

fn med(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        median(v.to_vec())
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "not met"
    }
}

/// The proxy rows as a markdown section.
pub(crate) fn section(opts: &Options, bins: &Bins) -> String {
    let mut failures = Vec::new();
    let mut figures = [Figures::default(), Figures::default()];
    let pairs = if opts.quick { 1_000 } else { 4_000 };
    let (size, gets) = (opts.file_size(), if opts.quick { 4 } else { 2 });
    let file = match BenchFile::create(size) {
        Ok(file) => Some(file),
        Err(e) => {
            failures.push(format!("proxy bulk: cannot write the test file: {e}"));
            None
        }
    };
    for round in 0..opts.rounds {
        let order = if round % 2 == 0 {
            [Proxy::Switchboard, Proxy::Tokio]
        } else {
            [Proxy::Tokio, Proxy::Switchboard]
        };
        eprintln!("proxy round {}/{}", round + 1, opts.rounds);
        for proxy in order {
            let fig = &mut figures[proxy as usize];
            if let Some(file) = &file {
                match bulk(bins, proxy, file, gets) {
                    Ok(bps) => {
                        eprintln!("  {:<38} {:<11} {:>9.0} MB/s", "proxy bulk", proxy.name(), bps / 1e6);
                        fig.bulk.push(bps);
                    }
                    Err(e) => failures.push(format!("proxy bulk on {}: {e}", proxy.name())),
                }
            }
            for (i, (name, conns)) in ECHO_LOADS.iter().enumerate() {
                match echo(opts, bins, proxy, *conns) {
                    Ok(e) => {
                        eprintln!(
                            "  proxy {:<32} {:<11} {:>9.0} msg/s  p50 {:>6.0} µs  p99 {:>8.0} µs",
                            name,
                            proxy.name(),
                            e.msgs,
                            e.p50_us,
                            e.p99_us
                        );
                        fig.echo[i].push(e);
                    }
                    Err(e) => failures.push(format!("proxy {name} on {}: {e}", proxy.name())),
                }
            }
            match idle(bins, proxy, pairs) {
                Ok((per, held)) => {
                    eprintln!(
                        "  {:<38} {:<11} {held} pairs, {:.0} B per pair",
                        "proxy idle pairs",
                        proxy.name(),
                        per
                    );
                    fig.idle.push((per, held));
                }
                Err(e) => failures.push(format!("proxy idle pairs on {}: {e}", proxy.name())),
            }
        }
    }
    render(opts, &figures, size, gets, pairs, &failures)
}

fn render(
    opts: &Options,
    figures: &[Figures; 2],
    size: u64,
    gets: u32,
    pairs: usize,
    failures: &[String],
) -> String {
    let (sb, tk) = (&figures[0], &figures[1]);
    let mut s = String::from("\n## TCP proxy\n\n");
    let _ = write!(
        s,
        "`switchboard-server --handler proxy --backend ADDR` (defaults: a link per client on the client's \
         worker) against `tokio-proxy` (in `benches/`: tokio's default runtime, a task per client, \
         `copy_bidirectional`), both in front of the same backend, a fresh set of processes per run, the \
         proxies alternating within each round; medians over {} round{}. Bulk: a {} MiB file from \
         `sendfile-server` downloaded {gets} times over one connection through the proxy by \
         `switchboard-load file --no-md5`. Echo: `switchboard-load echo --size 64` through the proxy to \
         `switchboard-server --handler echo`. Idle: {pairs} clients of `switchboard-load idle` held \
         through the proxy; the proxy's VmRSS growth divided by the pairs (client + backend connection) \
         it held.\n\n",
        opts.rounds,
        if opts.rounds == 1 { "" } else { "s" },
        size >> 20
    );
    s.push_str("| load | figure | switchboard | tokio | ratio | target |\n|---|---|---:|---:|---:|---|\n");
    let (b_sb, b_tk) = (med(&sb.bulk) / 1e6, med(&tk.bulk) / 1e6);
    let _ = writeln!(
        s,
        "| bulk {} MiB | MB/s | {b_sb:.0} | {b_tk:.0} | {:.2}× | ≥ 1.0×: {} |",
        size >> 20,
        b_sb / b_tk,
        verdict(b_sb >= b_tk)
    );
    for (i, (name, _)) in ECHO_LOADS.iter().enumerate() {
        let get =
            |fig: &Figures, pick: fn(&Echo) -> f64| med(&fig.echo[i].iter().map(pick).collect::<Vec<_>>());
        let (m_sb, m_tk) = (get(sb, |e| e.msgs), get(tk, |e| e.msgs));
        let (p50_sb, p50_tk) = (get(sb, |e| e.p50_us), get(tk, |e| e.p50_us));
        let (p99_sb, p99_tk) = (get(sb, |e| e.p99_us), get(tk, |e| e.p99_us));
        let _ = writeln!(
            s,
            "| {name} | msg/s | {m_sb:.0} | {m_tk:.0} | {:.2}× | ≥ 1.2×: {} |",
            m_sb / m_tk,
            verdict(m_sb >= 1.2 * m_tk)
        );
        let _ = writeln!(s, "| {name} | p50 µs | {p50_sb:.0} | {p50_tk:.0} | {:.2}× | |", p50_sb / p50_tk);
        let _ = writeln!(
            s,
            "| {name} | p99 µs | {p99_sb:.0} | {p99_tk:.0} | {:.2}× | ≤ tokio's: {} |",
            p99_sb / p99_tk,
            verdict(p99_sb <= p99_tk)
        );
    }
    let per = |fig: &Figures| med(&fig.idle.iter().map(|x| x.0).collect::<Vec<_>>());
    let held = |fig: &Figures| med(&fig.idle.iter().map(|x| x.1 as f64).collect::<Vec<_>>());
    let _ = writeln!(
        s,
        "| idle, {} pairs held (switchboard) / {} (tokio) | RSS per relayed pair, B | {:.0} | {:.0} | {:.2}× | reference |",
        held(sb),
        held(tk),
        per(sb),
        per(tk),
        per(sb) / per(tk)
    );
    if !failures.is_empty() {
        s.push_str("\nRuns that failed:\n\n");
        for f in failures {
            eprintln!("  ! {f}");
            let _ = writeln!(s, "- {f}");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> Options {
        Options {
            quick: true,
            rounds: 1,
            out: None,
            bin_dir: ".".into(),
            args: Vec::new(),
            tls_only: false,
            blocking_only: false,
            proxy_only: true,
            chat_only: false,
            profile_only: false,
            echo_only: None,
        }
    }

    fn echo(msgs: f64, p99_us: f64) -> Echo {
        Echo { msgs, p50_us: p99_us / 2.0, p99_us }
    }

    #[test]
    fn each_target_is_judged_from_the_medians_and_a_missing_run_is_not_met() {
        let sb = Figures {
            bulk: vec![1.1e9, 0.9e9, 1.0e9],
            echo: [vec![echo(130.0, 90.0)], vec![echo(119.0, 50.0)]],
            idle: vec![(900.0, 4000)],
        };
        let tk = Figures {
            bulk: vec![1.0e9],
            echo: [vec![echo(100.0, 100.0)], vec![echo(100.0, 100.0)]],
            idle: vec![(18000.0, 4000)],
        };
        let md = render(&opts(), &[sb, tk], 64 << 20, 4, 4000, &[]);
        let row = |start: &str| {
            md.lines().find(|l| l.starts_with(start)).unwrap_or_else(|| panic!("{start}: {md}"))
        };
        assert_eq!(row("| bulk 64 MiB | MB/s"), "| bulk 64 MiB | MB/s | 1000 | 1000 | 1.00× | ≥ 1.0×: met |");
        assert!(row("| echo 64 B, 64 connections | msg/s").ends_with("| 1.30× | ≥ 1.2×: met |"), "{md}");
        assert!(row("| echo 64 B, 64 connections | p99").ends_with("≤ tokio's: met |"), "{md}");
        assert!(
            row("| echo 64 B, 1,000 connections | msg/s").ends_with("| 1.19× | ≥ 1.2×: not met |"),
            "{md}"
        );
        assert!(row("| echo 64 B, 1,000 connections | p99").ends_with("≤ tokio's: met |"), "{md}");
        assert!(row("| idle").contains("| 900 | 18000 | 0.05× |"), "{md}");

        let none = [Figures::default(), Figures::default()];
        let md = render(&opts(), &none, 64 << 20, 4, 4000, &["proxy bulk on tokio: refused".to_string()]);
        assert!(md.lines().filter(|l| l.contains("not met")).count() == 5, "{md}");
        assert!(md.contains("- proxy bulk on tokio: refused"), "{md}");
    }
}
