//! Where the time goes: `perf` on each echo server (defaults) under the same
//! load, and switchboard with one worker beside its defaults (the load
//! generator shares the cores). Written into BENCHMARKS.md by the same run.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::figures::med_spread;
use crate::procs::{run_load, Bins, ServerProc};
use crate::Kind;

/// Connections of the profiled load.
const CONNS: usize = 64;

/// The profile section, in markdown.
pub(crate) fn section(bins: &Bins, secs: u64, rounds: usize) -> String {
    let mut s = String::from("## Profile\n\n");
    let _ = writeln!(
        s,
        "Echo, 64 B, {CONNS} connections, {secs} s per server, measured by this run. `perf stat` counts \
         the server's context switches; `perf record -g` samples where its CPU time goes (by binary, then \
         the top symbols). Both servers with their defaults. Then switchboard with `--workers 1` beside \
         its defaults, the tokio baseline with its defaults, and `floor-echo`: one thread that makes only \
         the system calls an echo needs (a `recv` and a `send` per message, an `epoll_wait` per batch) \
         and nothing else, the floor of server CPU per message on this kernel; and `uring-floor-echo`, \
         the same with io_uring (one multishot `recv` per connection into provided buffers, a `send` \
         entry per message, one `io_uring_enter` per loop pass): what an io_uring engine could save. \
         The rows marked pinned repeat the echo table's pinned set-up (server on CPU 0 with one worker, \
         load generator on CPU 1) with the two floors beside the two servers: what a server that costs \
         nothing but its system calls would score there.\n"
    );
    if Command::new("perf").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
        s.push_str("`perf` is not installed here (Debian: `linux-perf`): no profile taken.\n\n");
    } else {
        for kind in [Kind::Switchboard, Kind::Tokio] {
            match profile_one(bins, kind, secs) {
                Ok(text) => s.push_str(&text),
                Err(e) => {
                    let _ = writeln!(s, "- {}: profile failed: {e}\n", kind.name());
                }
            }
        }
    }
    s.push_str(&workers_table(bins, secs, rounds));
    s
}

/// The servers of the workers table, with their labels.
const SERVERS: [(&str, Which); 9] = [
    ("switchboard --workers 1", Which::OneWorker),
    ("switchboard (defaults)", Which::Defaults(Kind::Switchboard)),
    ("tokio (defaults)", Which::Defaults(Kind::Tokio)),
    (FLOOR, Which::Floor(Floor::Epoll)),
    (URING_FLOOR, Which::Floor(Floor::Uring)),
    ("switchboard, pinned", Which::Pinned(Kind::Switchboard)),
    ("tokio, pinned", Which::Pinned(Kind::Tokio)),
    ("floor-echo, pinned", Which::FloorPinned(Floor::Epoll)),
    ("uring-floor-echo, pinned", Which::FloorPinned(Floor::Uring)),
];

const FLOOR: &str = "floor-echo (the system calls alone)";
const URING_FLOOR: &str = "uring-floor-echo (the same with io_uring)";

/// One run of the workers table: msg/s, p99 µs, server CPU µs per message.
type Sample = (f64, f64, f64);

/// Every server of [`SERVERS`] at 64 and 1,000 connections, `rounds` times
/// (the order reversed every other round); medians with their spread.
fn workers_table(bins: &Bins, secs: u64, rounds: usize) -> String {
    let mut s = format!(
        "Medians over {rounds} rounds (lowest and highest round in parentheses), the servers \
         alternating within each round:\n\n"
    );
    s.push_str("| server | connections | msg/s | p99 | server CPU/msg |\n|---|---:|---:|---:|---:|\n");
    // samples[conns index][server index]
    let conns_set = [CONNS, 1000];
    let mut samples: Vec<Vec<Vec<Sample>>> = vec![vec![Vec::new(); SERVERS.len()]; conns_set.len()];
    let mut failures = Vec::new();
    for round in 0..rounds {
        for (ci, &conns) in conns_set.iter().enumerate() {
            let mut order: Vec<usize> = (0..SERVERS.len()).collect();
            if round % 2 == 1 {
                order.reverse();
            }
            for i in order {
                let (label, which) = SERVERS[i];
                match workers_run(bins, which, conns, secs) {
                    Ok(sample) => samples[ci][i].push(sample),
                    Err(e) => failures.push(format!("{label}, {conns} connections: {e}")),
                }
            }
        }
    }
    let med = |v: &[Sample], f: fn(&Sample) -> f64| crate::median(v.iter().map(f).collect());
    for (ci, &conns) in conns_set.iter().enumerate() {
        for (i, (label, _)) in SERVERS.iter().enumerate() {
            let v = &samples[ci][i];
            if v.is_empty() {
                let _ = writeln!(s, "| {label} | {conns} | failed | | |");
                continue;
            }
            let _ = writeln!(
                s,
                "| {label} | {conns} | {} | {} | {} |",
                med_spread(v, |x| x.0, |x| format!("{x:.0}")),
                med_spread(v, |x| x.1, |x| format!("{:.2} ms", x / 1e3)),
                med_spread(v, |x| x.2, |x| format!("{x:.2} µs")),
            );
        }
    }
    s.push('\n');
    for (ci, &conns) in conns_set.iter().enumerate() {
        let get = |label: &str, f: fn(&Sample) -> f64| {
            SERVERS
                .iter()
                .position(|(l, _)| *l == label)
                .map(|i| &samples[ci][i])
                .filter(|v| !v.is_empty())
                .map(|v| med(v, f))
        };
        let msgs = |label: &str| get(label, |x| x.0);
        let cpu = |label: &str| get(label, |x| x.2);
        if let (Some(w1), Some(w2), Some(t)) =
            (msgs("switchboard --workers 1"), msgs("switchboard (defaults)"), msgs("tokio (defaults)"))
        {
            let _ = writeln!(
                s,
                "- {conns} connections: switchboard with 1 worker does {:.2}× tokio's messages per second, \
                 with its defaults {:.2}×.",
                w1 / t.max(1.0),
                w2 / t.max(1.0)
            );
        }
        if let (Some(f), Some(u), Some(t), Some(sb)) =
            (cpu(FLOOR), cpu(URING_FLOOR), cpu("tokio (defaults)"), cpu("switchboard (defaults)"))
        {
            let t = t.max(f64::MIN_POSITIVE);
            let _ = writeln!(
                s,
                "- {conns} connections, server CPU per message: floor-echo {:.2}× tokio's, uring-floor-echo \
                 {:.2}×, switchboard {:.2}× tokio's and {:.2}× the floor's.",
                f / t,
                u / t,
                sb / t,
                sb / f.max(f64::MIN_POSITIVE)
            );
        }
        if let (Some(sb), Some(t), Some(f), Some(u)) = (
            msgs("switchboard, pinned"),
            msgs("tokio, pinned"),
            msgs("floor-echo, pinned"),
            msgs("uring-floor-echo, pinned"),
        ) {
            let t = t.max(1.0);
            let _ = writeln!(
                s,
                "- {conns} connections, pinned: switchboard does {:.2}× tokio's messages per second, \
                 floor-echo {:.2}×, uring-floor-echo {:.2}×.",
                sb / t,
                f / t,
                u / t
            );
        }
    }
    for f in failures {
        let _ = writeln!(s, "- failed: {f}");
    }
    s.push('\n');
    s
}

/// A server of the workers table.
#[derive(Debug, Clone, Copy)]
enum Which {
    /// An echo server with its defaults.
    Defaults(Kind),
    /// switchboard with one worker (on every core, unlike the pinned runs).
    OneWorker,
    /// A floor: one thread making only the system calls an echo needs, the
    /// least CPU per message any server of that design can spend.
    Floor(Floor),
    /// An echo server on CPU 0 with one worker, the load generator on CPU 1,
    /// as in the pinned rows of the echo table.
    Pinned(Kind),
    /// A floor on CPU 0, the load generator on CPU 1: what the pinned rows
    /// would show for a server that costs nothing but its system calls.
    FloorPinned(Floor),
}

/// The two yard sticks.
#[derive(Debug, Clone, Copy)]
enum Floor {
    /// `floor-echo`: epoll, a `recv` and a `send` per message.
    Epoll,
    /// `uring-floor-echo`: io_uring, multishot `recv`, a `send` entry per message.
    Uring,
}

impl Floor {
    fn bin_name(self) -> &'static str {
        match self {
            Floor::Epoll => "floor-echo",
            Floor::Uring => "uring-floor-echo",
        }
    }
}

impl Which {
    fn pinned(self) -> bool {
        matches!(self, Which::Pinned(_) | Which::FloorPinned(_))
    }
}

fn start(bins: &Bins, which: Which) -> Result<ServerProc, String> {
    match which {
        Which::Defaults(kind) => crate::start_echo(bins, kind, false),
        Which::OneWorker => ServerProc::start(
            &bins.server,
            &["--handler", "echo", "--listen", "127.0.0.1:0", "--workers", "1"],
        ),
        Which::Pinned(kind) => crate::start_echo(bins, kind, true),
        Which::Floor(f) => ServerProc::start(&floor_bin(bins, f)?, &["--listen", "127.0.0.1:0"]),
        Which::FloorPinned(f) => {
            crate::start_on_cpu0(bins, &floor_bin(bins, f)?, &["--listen", "127.0.0.1:0"])
        }
    }
}

fn floor_bin(bins: &Bins, floor: Floor) -> Result<std::path::PathBuf, String> {
    let bin = bins.tokio_echo.with_file_name(floor.bin_name());
    if !bin.is_file() {
        return Err(format!(
            "{} is missing: build it with `cargo build --release -p switchboard-benches --bins`",
            bin.display()
        ));
    }
    Ok(bin)
}

fn load_args(addr: &str, conns: usize, secs: u64) -> Vec<String> {
    [
        "echo",
        "--target",
        addr,
        "--connections",
        &conns.to_string(),
        "--size",
        "64",
        "--duration",
        &format!("{secs}s"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn profile_one(bins: &Bins, kind: Kind, secs: u64) -> Result<String, String> {
    let server = start(bins, Which::Defaults(kind))?;
    let pid = server.pid().to_string();
    let dir = std::env::temp_dir().join(format!("switchboard-bench-perf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let data = dir.join(format!("{}.data", kind.name()));
    let stat_out = dir.join(format!("{}.stat", kind.name()));
    let window = format!("{}", secs.saturating_sub(1).max(1));
    let mut stat = Command::new("perf")
        .args(["stat", "-x,", "-e", "context-switches,task-clock", "-o"])
        .arg(&stat_out)
        .args(["-p", &pid, "--", "sleep", &window])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("perf stat: {e}"))?;
    let mut record = Command::new("perf")
        .args(["record", "-F", "999", "-g", "-o"])
        .arg(&data)
        .args(["-p", &pid, "--", "sleep", &window])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("perf record: {e}"))?;
    let v = run_load(&bins.load, &load_args(&server.addr, CONNS, secs), Duration::from_secs(60));
    let _ = crate::procs::wait_bounded(&mut stat, Duration::from_secs(30));
    let _ = crate::procs::wait_bounded(&mut record, Duration::from_secs(30));
    drop(server);
    let v = v?;
    let msgs = v["messages"]["received"].as_f64().unwrap_or(0.0);
    let mut s = String::new();
    let _ = writeln!(s, "### {} ({msgs:.0} messages echoed in {secs} s)\n", kind.name());
    let stat = std::fs::read_to_string(&stat_out).unwrap_or_default();
    for line in stat.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let cols: Vec<&str> = line.split(',').collect();
        if cols.len() > 2 {
            let unit = cols[1].trim();
            let unit = if unit.is_empty() { String::new() } else { format!(" {unit}") };
            let _ = writeln!(s, "- perf stat: {}{unit} {} over the window", cols[0].trim(), cols[2].trim());
        }
    }
    s.push('\n');
    for (title, sort, limit) in [("by binary", "dso", 4), ("top symbols", "sym", 12)] {
        let text = report(&data, sort, limit);
        if sort == "dso" {
            if let Some(k) = text.lines().find(|l| l.contains("[kernel")) {
                let pct = k.split_whitespace().next().unwrap_or("?");
                let _ = writeln!(
                    s,
                    "- {pct} of the sampled server time is in the kernel (TCP on loopback, scheduling)\n"
                );
            }
        }
        let _ = writeln!(s, "{title}:\n\n```");
        s.push_str(&text);
        s.push_str("```\n\n");
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(s)
}

/// The first `limit` lines of `perf report --sort SORT`.
fn report(data: &Path, sort: &str, limit: usize) -> String {
    let out = Command::new("perf")
        .args(["report", "--stdio", "--no-children", "--sort", sort, "-g", "none", "-i"])
        .arg(data)
        .stderr(Stdio::null())
        .output();
    let Ok(out) = out else { return "perf report failed\n".into() };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut s = String::new();
    for line in
        text.lines().filter(|l| l.trim_start().chars().next().is_some_and(|c| c.is_ascii_digit())).take(limit)
    {
        let _ = writeln!(s, "{}", line.trim_end());
    }
    s
}

fn workers_run(bins: &Bins, which: Which, conns: usize, secs: u64) -> Result<Sample, String> {
    let server = start(bins, which)?;
    let cpu0 = server.cpu();
    let v = crate::run_load_on(bins, load_args(&server.addr, conns, secs), which.pinned())?;
    let cpu = server.cpu().saturating_sub(cpu0);
    let received = v["messages"]["received"].as_f64().unwrap_or(0.0).max(1.0);
    let msgs = v["throughput_per_s"].as_f64().unwrap_or(0.0);
    let p99 = v["latency_us"]["p99"].as_f64().unwrap_or(0.0);
    Ok((msgs, p99, cpu.as_secs_f64() * 1e6 / received))
}
