//! The benchmark runner: Switchboard against a tokio baseline (and, for file
//! downloads, a sendfile baseline), driven by `switchboard-load`, in
//! alternating rounds; prints a markdown table of medians and writes
//! BENCHMARKS.md.
//!
//! ```text
//! cargo run --release -p switchboard-benches --bin bench -- [--quick] [--rounds N] [--out FILE | --no-write]
//! ```
//!
//! Two settings, as issue 9's "done when" lines ask: both servers with their
//! defaults sharing the cores with the load generator (64, 1,000 and 10,000
//! connections: msg/s, p99, server CPU and context switches per message), and
//! both pinned to CPU 0 with one worker, the load generator on CPU 1 (64 and
//! 1,000 connections: msg/s).
//!
//! It builds nothing itself: it drives the release binaries beside its own
//! executable (`switchboard-server`, `switchboard-load`, `tokio-echo`, `tokio-chat`,
//! `sendfile-server`).

mod blockbench;
mod cluster;
mod figures;
mod filebench;
mod markdown;
mod plots;
mod procs;
mod profile;
mod proxybench;
mod tlsbench;
mod udpbench;

pub(crate) use figures::median;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use procs::{run_load, Bins, ServerProc};

/// The options of one benchmark run.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) quick: bool,
    pub(crate) rounds: usize,
    pub(crate) out: Option<PathBuf>,
    pub(crate) bin_dir: PathBuf,
    pub(crate) args: Vec<String>,
    /// Only the TLS rows (`--tls-only`).
    pub(crate) tls_only: bool,
    /// Only the profile section (`--profile-only`).
    pub(crate) profile_only: bool,
    /// Only the blocking-work rows (`--blocking-only`).
    pub(crate) blocking_only: bool,
    /// Only the echo rows whose name holds this (`--echo-only TEXT`).
    pub(crate) echo_only: Option<String>,
    /// Only the proxy rows (`--proxy-only`).
    pub(crate) proxy_only: bool,
    /// Only the chat row on one server (`--chat-only`).
    pub(crate) chat_only: bool,
}

impl Options {
    fn duration(&self) -> &'static str {
        if self.quick {
            "1s"
        } else {
            "3s"
        }
    }

    fn file_size(&self) -> u64 {
        if self.quick {
            64 << 20
        } else {
            1 << 30
        }
    }

    fn file_gets(&self) -> u32 {
        if self.quick {
            8
        } else {
            3
        }
    }
}

/// The two echo servers compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Switchboard,
    Tokio,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Switchboard => "switchboard",
            Kind::Tokio => "tokio",
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            Kind::Switchboard => 0,
            Kind::Tokio => 1,
        }
    }
}

/// Which of issue 9's targets apply to an echo load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Targets {
    /// None: the row is for reference.
    Reference,
    /// msg/s ≥ 1.2× tokio, p99 ≤ tokio's, server CPU per message ≤ 0.8×
    /// tokio's, context switches per message ≤ tokio's.
    All,
    /// msg/s ≥ 1.2× tokio only.
    Throughput,
}

/// One echo load.
#[derive(Debug, Clone)]
pub(crate) struct EchoLoad {
    pub(crate) name: String,
    pub(crate) conns: usize,
    pub(crate) depth: usize,
    /// The targets that apply to it.
    pub(crate) targets: Targets,
    /// Servers on CPU 0 with one worker, the load generator on CPU 1
    /// (otherwise: defaults, every process on every core).
    pub(crate) pinned: bool,
    /// Over a Unix domain socket (`--listen unix:PATH` on both servers)
    /// instead of TCP.
    pub(crate) unix: bool,
}

/// One echo run's numbers.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct EchoSample {
    pub(crate) msgs: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) p999_us: f64,
    pub(crate) server_cpu_us: f64,
    /// Server context switches (all threads, voluntary + nonvoluntary) per message.
    pub(crate) ctx_per_msg: f64,
    pub(crate) load_cpu_us: f64,
    pub(crate) load_cores: f64,
    pub(crate) errors: u64,
    pub(crate) failed: u64,
}

/// One idle run's numbers.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct IdleSample {
    pub(crate) rss: f64,
    pub(crate) rss_before: f64,
    pub(crate) conns: usize,
}

/// One chat run's numbers.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ChatSample {
    pub(crate) delivered: f64,
    pub(crate) sent: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) members: u64,
    pub(crate) complete: u64,
    pub(crate) errors: u64,
    pub(crate) server_cpu_us: f64,
}

/// One file round's numbers (bytes per second).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FileSample {
    /// The sendfile baseline read by the minimal blocking client.
    pub(crate) baseline: f64,
    /// The sendfile baseline read by switchboard-load (the same client as switchboard's).
    pub(crate) baseline_load: f64,
    pub(crate) switchboard: f64,
    pub(crate) errors: u64,
}

/// The md5-checked download: (md5 ok, mismatched, MB/s).
pub(crate) type Md5Check = (u64, u64, f64);

/// Everything measured.
#[derive(Debug, Default)]
pub(crate) struct Results {
    pub(crate) echo: Vec<(EchoLoad, [Vec<EchoSample>; 2])>,
    pub(crate) idle: [Vec<IdleSample>; 2],
    pub(crate) idle_conns: usize,
    pub(crate) chat: Vec<ChatSample>,
    /// The same chat load on `tokio-chat`.
    pub(crate) chat_tokio: Vec<ChatSample>,
    pub(crate) chat_members: usize,
    /// The same chat load on two servers sharing one Redis.
    pub(crate) chat_cluster: Vec<ChatSample>,
    pub(crate) file: Vec<FileSample>,
    pub(crate) file_md5: Option<Md5Check>,
    pub(crate) file_size: u64,
    /// /proc/loadavg's 1-minute figure when the run started.
    pub(crate) loadavg: String,
    /// Runs that could not be made, with why.
    pub(crate) failures: Vec<String>,
    /// The profile section (markdown).
    pub(crate) profile: String,
    /// Per echo load (as in `echo`): each server's latency curve of its
    /// last run, `(percentile, µs)`.
    pub(crate) curves: Vec<[Vec<(f64, f64)>; 2]>,
    /// The plots written: load name, path relative to the report.
    pub(crate) plots: Vec<(String, String)>,
    /// The UDP echo rows.
    pub(crate) udp: udpbench::UdpResults,
    /// The TLS section (markdown).
    pub(crate) tls: String,
    /// The blocking-work section (markdown).
    pub(crate) blocking: String,
    /// The TCP proxy section (markdown).
    pub(crate) proxy: String,
}

/// The usage text (`--help`).
const USAGE: &str = "\
usage: bench [--quick] [--rounds N] [--out FILE | --no-write] [--bin-dir DIR]

Runs switchboard-server against the tokio-echo baseline (over TCP, and over
a Unix socket against tokio-echo --listen unix:PATH; the chat handler
against tokio-chat, the file handler
against sendfile-server), driven by switchboard-load, and writes BENCHMARKS.md
with medians, their spread over the rounds and a met / not met line per target.
Run it as `cargo run --release -p switchboard-benches --bin bench -- ARGS`:
it builds the release binaries it drives first.

Settings measured (every figure from this one run, the servers alternating
within each round and swapping order between rounds):
  defaults  `switchboard-server --handler echo` (no --workers, no
            --max-connections) against `tokio-echo` (tokio's default runtime);
            the load generator shares every core with the server
  pinned    both servers on CPU 0 with one worker (`taskset -c 0 ...
            --workers 1`), the load generator on CPU 1 (`taskset -c 1`)

Options:
  --quick        1 s per load and a 64 MiB file (default: 3 s per load, 1 GiB)
  --rounds N     rounds, 1 to 20 (default 3); every figure is the median over them
  --out FILE     where to write the report (default: BENCHMARKS.md at the root)
  --no-write     print the tables only, write nothing
  --bin-dir DIR  take the binaries from DIR as they are (default: beside this
                 executable, built first when run by cargo)
  --tls-only     only the TLS rows (echo against tokio-tls-echo, file get,
                 handshakes per second); prints them, writes nothing
  --profile-only only the profile section (perf, --workers 1, the epoll and
                 io_uring floors, pinned beside them); prints it, writes nothing
  --blocking-only
                 only the blocking-work rows (the core's `blocking` example
                 against `tokio-blocking`: 100 clients × 5 pipelined 50 ms
                 jobs, and fairness); prints them, writes nothing
  --echo-only TEXT  only the echo rows whose name holds TEXT (e.g. `Unix`);
                 prints their table, writes nothing
  --proxy-only   only the TCP proxy rows (`--handler proxy` against
                 `tokio-proxy`: bulk MB/s, echo 64 B at 64 and 1,000
                 connections, RSS per relayed pair); prints them, writes nothing
  --chat-only    only the chat row on one server (switchboard against
                 tokio-chat, alternating); prints it, writes nothing
  -h, --help     this text";

fn main() -> ExitCode {
    let opts = match parse_args() {
        Ok(Some(o)) => o,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("bench: {e}");
            eprintln!("{}", USAGE.lines().next().unwrap_or_default());
            eprintln!("(bench --help explains the options)");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = build_release(&opts) {
        eprintln!("bench: {e}");
        return ExitCode::FAILURE;
    }
    let bins = match Bins::find(&opts.bin_dir) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("bench: {e}");
            return ExitCode::from(2);
        }
    };
    let (cores, _, _) = procs::machine();
    let busy = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().and_then(|x| x.parse::<f64>().ok()))
        .filter(|&l| l > cores as f64);
    if let Some(l) = busy {
        eprintln!("bench: the machine is busy (load average {l:.1} on {cores} cores): expect noisy numbers");
    }
    let started = Instant::now();
    if opts.profile_only {
        println!("{}", profile::section(&bins, if opts.quick { 2 } else { 4 }, opts.rounds));
        return ExitCode::SUCCESS;
    }
    if opts.blocking_only {
        println!("{}", blockbench::section(&opts, &bins));
        return ExitCode::SUCCESS;
    }
    if opts.proxy_only {
        println!("{}", proxybench::section(&opts, &bins));
        return ExitCode::SUCCESS;
    }
    let mut results = if opts.tls_only { Results::default() } else { run_all(&opts, &bins) };
    if opts.echo_only.is_some() || opts.chat_only {
        println!("{}", markdown::tables(&results));
        return ExitCode::SUCCESS;
    }
    if !opts.tls_only {
        eprintln!("profile");
        results.profile = profile::section(&bins, if opts.quick { 2 } else { 4 }, opts.rounds);
        if let Some(path) = &opts.out {
            match plots::write(&results, path) {
                Ok(written) => results.plots = written,
                Err(e) => results.failures.push(format!("latency plots: {e}")),
            }
        }
    }
    eprintln!("TLS");
    results.tls = tlsbench::section(&opts, &bins);
    if !opts.tls_only {
        eprintln!("blocking work");
        results.blocking = blockbench::section(&opts, &bins);
        eprintln!("TCP proxy");
        results.proxy = proxybench::section(&opts, &bins);
    }
    let md = markdown::render(&opts, &results, started.elapsed());
    if !opts.tls_only {
        println!("{}", markdown::tables(&results));
    }
    println!("{}", results.tls);
    if let Some(path) = &opts.out {
        if let Err(e) = std::fs::write(path, &md) {
            eprintln!("bench: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        eprintln!("bench: wrote {} ({:.0} s)", path.display(), started.elapsed().as_secs_f64());
    }
    ExitCode::SUCCESS
}

/// Builds the release binaries the runs need (quick when they are up to
/// date), so that one `cargo run` is the whole benchmark. Only when run by
/// cargo from this workspace's own release folder; with `--bin-dir`
/// elsewhere the binaries are taken as they are.
fn build_release(opts: &Options) -> Result<(), String> {
    let Some(cargo) = std::env::var_os("CARGO") else { return Ok(()) };
    let own = std::env::current_exe().ok().and_then(|p| p.parent().map(PathBuf::from));
    if own.as_deref() != Some(opts.bin_dir.as_path()) {
        return Ok(());
    }
    let release = opts.bin_dir.file_name().is_some_and(|n| n == "release");
    if !release {
        eprintln!("bench: not a release build: the numbers will mean little (use cargo run --release)");
    }
    eprintln!("building the binaries it runs");
    let mut build = Command::new(cargo);
    build.args(["build", "-p", "switchboard-bins", "-p", "switchboard-benches", "--bins"]);
    // The blocking rows' server.
    build.args(["-p", "switchboard", "--example", "blocking"]);
    if release {
        build.arg("--release");
    }
    let status = build.status().map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("building the release binaries failed ({status})"))
    }
}

/// The options, or `None` for `--help`.
fn parse_args() -> Result<Option<Options>, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let default_out = manifest.parent().unwrap_or(&manifest).join("BENCHMARKS.md");
    let bin_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.to_path_buf()))
        .unwrap_or_else(|| PathBuf::from("target/release"));
    let mut o = Options {
        quick: false,
        rounds: 3,
        out: Some(default_out),
        bin_dir,
        args: args.clone(),
        tls_only: false,
        profile_only: false,
        blocking_only: false,
        echo_only: None,
        proxy_only: false,
        chat_only: false,
    };
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => o.quick = true,
            "--rounds" => {
                o.rounds = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&n| (1..=20).contains(&n))
                    .ok_or("--rounds needs a number from 1 to 20")?;
            }
            "--out" => o.out = Some(PathBuf::from(it.next().ok_or("--out needs a file")?)),
            "--no-write" => o.out = None,
            "--tls-only" => o.tls_only = true,
            "--profile-only" => o.profile_only = true,
            "--blocking-only" => o.blocking_only = true,
            "--proxy-only" => o.proxy_only = true,
            "--echo-only" => o.echo_only = Some(it.next().ok_or("--echo-only needs part of a row's name")?),
            "--chat-only" => o.chat_only = true,
            "--bin-dir" => o.bin_dir = PathBuf::from(it.next().ok_or("--bin-dir needs a folder")?),
            "-h" | "--help" => return Ok(None),
            other => return Err(format!("unknown argument '{other}'")),
        }
    }
    let partial =
        [o.tls_only, o.profile_only, o.blocking_only, o.proxy_only, o.chat_only, o.echo_only.is_some()];
    if partial.iter().filter(|&&x| x).count() > 1 {
        return Err(
            "--tls-only, --profile-only, --blocking-only, --proxy-only, --chat-only and --echo-only are \
                    different partial runs: give one"
                .into(),
        );
    }
    if partial.contains(&true) {
        // A partial run never replaces the whole report.
        o.out = None;
    }
    Ok(Some(o))
}

fn run_all(opts: &Options, bins: &Bins) -> Results {
    let loadavg = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into());
    let mut r = Results { idle_conns: 10_000, chat_members: 1_000, loadavg, ..Results::default() };
    let loads = [
        ("echo 64 B, 1 connection", 1, 1, Targets::Reference, false),
        ("echo 64 B, 64 connections", 64, 1, Targets::All, false),
        ("echo 64 B, 1,000 connections", 1_000, 1, Targets::All, false),
        ("echo 64 B, 10,000 connections", 10_000, 1, Targets::All, false),
        ("echo 64 B, 64 connections, depth 16", 64, 16, Targets::Reference, false),
        ("pinned: echo 64 B, 64 connections", 64, 1, Targets::Throughput, true),
        ("pinned: echo 64 B, 1,000 connections", 1_000, 1, Targets::Throughput, true),
    ];
    let unix_loads = [
        ("Unix echo 64 B, 64 connections", 64, 1, Targets::Throughput, false),
        ("Unix echo 64 B, 1,000 connections", 1_000, 1, Targets::Throughput, false),
    ];
    let loads = loads.into_iter().map(|l| (l, false)).chain(unix_loads.into_iter().map(|l| (l, true)));
    for ((name, conns, depth, targets, pinned), unix) in loads {
        if opts.chat_only || opts.echo_only.as_ref().is_some_and(|only| !name.contains(only.as_str())) {
            continue;
        }
        let load = EchoLoad { name: name.into(), conns, depth, targets, pinned, unix };
        r.echo.push((load, [Vec::new(), Vec::new()]));
        r.curves.push([Vec::new(), Vec::new()]);
    }
    let file = match opts.chat_only {
        true => None,
        false => match filebench::BenchFile::create(opts.file_size()) {
            Ok(f) => Some(f),
            Err(e) => {
                r.failures.push(format!("file get: cannot write the test file: {e}"));
                None
            }
        },
    };
    r.file_size = opts.file_size();
    let mut chat_available = true;
    for round in 0..opts.rounds {
        let order =
            if round % 2 == 0 { [Kind::Switchboard, Kind::Tokio] } else { [Kind::Tokio, Kind::Switchboard] };
        eprintln!("round {}/{}", round + 1, opts.rounds);
        for i in 0..r.echo.len() {
            let load = r.echo[i].0.clone();
            if load.pinned && bins.taskset.is_none() {
                fail(
                    &mut r,
                    format!("{}: `taskset` is not on PATH (util-linux): pinned runs not made", load.name),
                );
                continue;
            }
            for kind in order {
                match echo_run(opts, bins, kind, &load) {
                    Ok((s, curve)) => {
                        r.curves[i][kind.index()] = curve;
                        eprintln!(
                            "  {:<38} {:<11} {:>9.0} msg/s  p99 {:>8.0} µs  server CPU {:.2} µs/msg  \
                             {:.3} cs/msg  errors {}",
                            load.name,
                            kind.name(),
                            s.msgs,
                            s.p99_us,
                            s.server_cpu_us,
                            s.ctx_per_msg,
                            s.errors + s.failed
                        );
                        r.echo[i].1[kind.index()].push(s);
                    }
                    Err(e) => fail(&mut r, format!("{} on {}: {e}", load.name, kind.name())),
                }
            }
        }
        if opts.echo_only.is_some() {
            continue;
        }
        if !opts.chat_only {
            for msg in udpbench::round(opts, bins, order, &mut r.udp) {
                fail(&mut r, msg);
            }
        }
        for kind in order.into_iter().filter(|_| !opts.chat_only) {
            match idle_run(bins, kind, r.idle_conns) {
                Ok(s) => {
                    eprintln!(
                        "  {:<38} {:<11} {} connections, RSS {:.1} MB ({:.1} MB before)",
                        "idle connections",
                        kind.name(),
                        s.conns,
                        s.rss / 1e6,
                        s.rss_before / 1e6
                    );
                    r.idle[kind.index()].push(s);
                }
                Err(e) => fail(&mut r, format!("idle connections on {}: {e}", kind.name())),
            }
        }
        if chat_available {
            for kind in order {
                match chat_run(opts, bins, kind, r.chat_members) {
                    Ok(s) => {
                        eprintln!(
                            "  {:<38} {:<11} {:>9.0} deliveries/s  p99 {:>8.0} µs  {}/{} members got everything",
                            "chat",
                            kind.name(),
                            s.delivered,
                            s.p99_us,
                            s.complete,
                            s.members
                        );
                        match kind {
                            Kind::Switchboard => r.chat.push(s),
                            Kind::Tokio => r.chat_tokio.push(s),
                        }
                    }
                    Err(e) => {
                        chat_available = false;
                        fail(&mut r, format!("chat on {}: {e}", kind.name()));
                    }
                }
            }
            if opts.chat_only {
                continue;
            }
            match cluster::chat_cluster_run(opts, bins, r.chat_members) {
                Ok(s) => {
                    eprintln!(
                        "  {:<38} {:<11} {:>9.0} deliveries/s  p99 {:>8.0} µs  {}/{} members got everything",
                        "chat, 2 servers + Redis",
                        "switchboard",
                        s.delivered,
                        s.p99_us,
                        s.complete,
                        s.members
                    );
                    r.chat_cluster.push(s);
                }
                Err(e) => fail(&mut r, format!("chat on two servers sharing Redis: {e}")),
            }
        }
        if let Some(f) = &file {
            match file_run(opts, bins, f, round == 0) {
                Ok((s, md5)) => {
                    eprintln!(
                        "  {:<38} {:<11} {:>9.0} MB/s (sendfile baseline {:.0} MB/s; {:.0} MB/s with switchboard-load)",
                        "file get",
                        "switchboard",
                        s.switchboard / 1e6,
                        s.baseline / 1e6,
                        s.baseline_load / 1e6
                    );
                    r.file.push(s);
                    if md5.is_some() {
                        r.file_md5 = md5;
                    }
                }
                Err(e) => fail(&mut r, format!("file get: {e}")),
            }
        }
    }
    r
}

fn fail(r: &mut Results, msg: String) {
    eprintln!("  ! {msg}");
    if !r.failures.contains(&msg) {
        r.failures.push(msg);
    }
}

/// Starts an echo server with its defaults, or (`pinned`) on CPU 0 with one
/// worker through `taskset -c 0` (which execs the server: the process is the
/// server's).
pub(crate) fn start_echo(bins: &Bins, kind: Kind, pinned: bool) -> Result<ServerProc, String> {
    start_echo_on(bins, kind, pinned, "127.0.0.1:0")
}

/// [`start_echo`] listening on `listen` (`127.0.0.1:0`, `unix:PATH`).
fn start_echo_on(bins: &Bins, kind: Kind, pinned: bool, listen: &str) -> Result<ServerProc, String> {
    let (bin, mut args) = match kind {
        Kind::Switchboard => (&bins.server, vec!["--handler", "echo", "--listen", listen]),
        Kind::Tokio => (&bins.tokio_echo, vec!["--listen", listen]),
    };
    if !pinned {
        return ServerProc::start(bin, &args);
    }
    args.extend(["--workers", "1"]);
    start_on_cpu0(bins, bin, &args)
}

/// Starts `bin ARGS` on CPU 0 through `taskset -c 0` (which execs it: the
/// process is the server's).
pub(crate) fn start_on_cpu0(bins: &Bins, bin: &Path, args: &[&str]) -> Result<ServerProc, String> {
    let taskset = bins.taskset.as_ref().ok_or("`taskset` is not on PATH (util-linux)")?;
    let bin = bin.to_string_lossy();
    let mut all = vec!["-c", "0", bin.as_ref()];
    all.extend(args);
    ServerProc::start(taskset, &all)
}

/// Runs the load generator with `args`, on CPU 1 through `taskset -c 1`
/// when `pinned`.
pub(crate) fn run_load_on(bins: &Bins, args: Vec<String>, pinned: bool) -> Result<Value, String> {
    if !pinned {
        return run_load(&bins.load, &args, Duration::from_secs(120));
    }
    let taskset = bins.taskset.as_ref().ok_or("`taskset` is not on PATH (util-linux)")?;
    let mut all = vec!["-c".to_string(), "1".to_string(), bins.load.to_string_lossy().into_owned()];
    all.extend(args);
    run_load(taskset, &all, Duration::from_secs(120))
}

fn f(v: &Value, path: &[&str]) -> f64 {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_f64().unwrap_or(0.0)
}

/// One echo run: its figures, and its latency percentile curve
/// (`(percentile, µs)`, from the load generator's `percentiles_us`).
fn echo_run(
    opts: &Options,
    bins: &Bins,
    kind: Kind,
    load: &EchoLoad,
) -> Result<(EchoSample, Vec<(f64, f64)>), String> {
    // A Unix row's socket file: none before the server starts, none left after.
    let unix = load.unix.then(|| UnixPath::new(format!("switchboard-bench-{}.sock", std::process::id())));
    let listen = unix.as_ref().map_or_else(|| "127.0.0.1:0".to_string(), UnixPath::listen);
    let server = start_echo_on(bins, kind, load.pinned, &listen)?;
    let cpu0 = server.cpu();
    let cs0 = server.ctx_switches();
    let args: Vec<String> = [
        "echo",
        "--target",
        &server.addr,
        "--connections",
        &load.conns.to_string(),
        "--depth",
        &load.depth.to_string(),
        "--size",
        "64",
        "--duration",
        opts.duration(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let v = run_load_on(bins, args, load.pinned)?;
    let cpu = server.cpu().saturating_sub(cpu0);
    let cs = server.ctx_switches().saturating_sub(cs0);
    let received = f(&v, &["messages", "received"]);
    let curve = v["percentiles_us"]
        .as_array()
        .map(|a| a.iter().map(|p| (f(p, &["percentile"]), f(p, &["us"]))).collect())
        .unwrap_or_default();
    let sample = EchoSample {
        msgs: f(&v, &["throughput_per_s"]),
        p50_us: f(&v, &["latency_us", "p50"]),
        p99_us: f(&v, &["latency_us", "p99"]),
        p999_us: f(&v, &["latency_us", "p99_9"]),
        server_cpu_us: if received > 0.0 { cpu.as_secs_f64() * 1e6 / received } else { 0.0 },
        ctx_per_msg: if received > 0.0 { cs as f64 / received } else { 0.0 },
        load_cpu_us: f(&v, &["cpu", "per_message_us"]),
        load_cores: f(&v, &["cpu", "cores"]),
        errors: f(&v, &["errors", "total"]) as u64,
        failed: f(&v, &["connections", "failed"]) as u64,
    };
    Ok((sample, curve))
}

/// A Unix socket's path in the temporary folder, removed before use and
/// on drop (the servers are killed, and leave their files behind).
struct UnixPath(PathBuf);

impl UnixPath {
    fn new(name: String) -> UnixPath {
        let path = std::env::temp_dir().join(name);
        let _ = std::fs::remove_file(&path);
        UnixPath(path)
    }

    /// The `--listen` value.
    fn listen(&self) -> String {
        format!("unix:{}", self.0.display())
    }
}

impl Drop for UnixPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn idle_run(bins: &Bins, kind: Kind, conns: usize) -> Result<IdleSample, String> {
    let server = start_echo(bins, kind, false)?;
    let (rss_before, rss, established) = hold_idle(bins, &server, conns, 1)?;
    Ok(IdleSample { rss, rss_before, conns: established })
}

/// Holds `conns` idle `switchboard-load` connections to `server` and
/// measures it: its RSS before and once it holds them all (or the count
/// stopped growing), and how many it held, counted in its descriptors,
/// `fds_per_conn` each (a relaying proxy holds two).
pub(crate) fn hold_idle(
    bins: &Bins,
    server: &ServerProc,
    conns: usize,
    fds_per_conn: usize,
) -> Result<(f64, f64, usize), String> {
    let base_fds = server.fds();
    let rss_before = server.rss() as f64;
    let mut load = Command::new(&bins.load)
        .args(["idle", "--target", &server.addr, "--connections", &conns.to_string(), "--duration", "60s"])
        .args(["--quiet", "--json"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start switchboard-load: {e}"))?;
    // Wait until the server holds every connection (or the count stops growing).
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut last = (0, Instant::now());
    let established = loop {
        let n = server.fds().saturating_sub(base_fds) / fds_per_conn;
        if n >= conns {
            break n;
        }
        if n != last.0 {
            last = (n, Instant::now());
        }
        let stalled = last.1.elapsed() > Duration::from_secs(5);
        if Instant::now() > deadline || stalled || load.try_wait().ok().flatten().is_some() {
            break n;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // Let the workers register what the acceptor handed them.
    std::thread::sleep(Duration::from_millis(300));
    let rss = server.rss() as f64;
    let _ = load.kill();
    let _ = load.wait();
    Ok((rss_before, rss, established))
}

/// `switchboard-server`'s arguments in the chat row: the chat handler with
/// the same limits as `tokio-chat`, which has no flood control, so the
/// member and room rates are off. (With the room's default 512 KiB/s, a
/// room of 77-byte lines relays at most about 6,800 lines a second: 6.8
/// million deliveries/s to 1,000 members, whatever the server's speed.)
pub(crate) const CHAT_SERVER_ARGS: [&str; 8] =
    ["--handler", "chat", "--chat-rate", "0", "--chat-room-rate", "0", "--listen", "127.0.0.1:0"];

fn chat_run(opts: &Options, bins: &Bins, kind: Kind, members: usize) -> Result<ChatSample, String> {
    let server = match kind {
        // Flood control off: tokio-chat has none.
        Kind::Switchboard => ServerProc::start(&bins.server, &CHAT_SERVER_ARGS)?,
        Kind::Tokio => {
            ServerProc::start(&beside(&bins.tokio_echo, "tokio-chat")?, &["--listen", "127.0.0.1:0"])?
        }
    };
    let cpu0 = server.cpu();
    let v = chat_load(opts, bins, &[&server.addr], members)?;
    let cpu = server.cpu().saturating_sub(cpu0);
    Ok(chat_sample(&v, cpu))
}

/// The baseline `name`, built beside `tokio_echo`.
pub(crate) fn beside(tokio_echo: &std::path::Path, name: &str) -> Result<std::path::PathBuf, String> {
    let p = tokio_echo.with_file_name(name);
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!(
            "{} is missing: build it with `cargo build --release -p switchboard-benches --bins`",
            p.display()
        ))
    }
}

/// switchboard-load's chat mode with `members` members spread over
/// `targets` (the first one `--target`, the others `--also-target`): its
/// JSON report.
pub(crate) fn chat_load(
    opts: &Options,
    bins: &Bins,
    targets: &[&str],
    members: usize,
) -> Result<Value, String> {
    let mut args = vec!["chat".to_string(), "--target".into(), targets[0].to_string()];
    for t in &targets[1..] {
        args.extend(["--also-target".to_string(), t.to_string()]);
    }
    args.extend(["--connections".into(), members.to_string(), "--duration".into(), opts.duration().into()]);
    run_load(&bins.load, &args, Duration::from_secs(120))
}

/// A chat run's figures from switchboard-load's JSON and the servers' CPU time.
pub(crate) fn chat_sample(v: &Value, cpu: Duration) -> ChatSample {
    let received = f(v, &["messages", "received"]);
    ChatSample {
        delivered: f(v, &["throughput_per_s"]),
        sent: f(v, &["messages", "sent"]) / f(v, &["duration_s"]).max(1e-9),
        p50_us: f(v, &["latency_us", "p50"]),
        p99_us: f(v, &["latency_us", "p99"]),
        members: f(v, &["chat", "members"]) as u64,
        complete: f(v, &["chat", "complete_members"]) as u64,
        errors: f(v, &["errors", "total"]) as u64,
        server_cpu_us: if received > 0.0 { cpu.as_secs_f64() * 1e6 / received } else { 0.0 },
    }
}

fn file_run(
    opts: &Options,
    bins: &Bins,
    file: &filebench::BenchFile,
    check_md5: bool,
) -> Result<(FileSample, Option<Md5Check>), String> {
    let gets = opts.file_gets();
    let load = |addr: &str, n: u32, md5: bool| {
        let mut args: Vec<String> = ["file", &file.name, "--target", addr, "--connections", "1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(["--messages".to_string(), n.to_string(), "--drain-timeout".into(), "20s".into()]);
        if !md5 {
            args.push("--no-md5".into());
        }
        run_load(&bins.load, &args, Duration::from_secs(300))
    };
    let errors = |v: &Value| f(v, &["errors", "total"]) as u64 + f(v, &["connections", "failed"]) as u64;
    // The baseline: its md5 is given, so nothing is computed on the first request.
    let (baseline, baseline_load, baseline_errors) = {
        let path = file.path();
        let path = path.to_string_lossy();
        let server = ServerProc::start(&bins.sendfile, &["--file", &path, "--md5", &file.md5])?;
        let raw = filebench::raw_download(&server.addr, &file.name, gets)?;
        let v = load(&server.addr, gets, false)?;
        (raw, f(&v, &["mb_per_s"]) * 1e6, errors(&v))
    };
    let dir = file.dir.to_string_lossy();
    let server =
        ServerProc::start(&bins.server, &["--handler", "file", "--root", &dir, "--listen", "127.0.0.1:0"])?;
    // Warm-up: the server computes the md5 on the first request (then caches
    // it); that download also checks the md5 in the first round.
    let warm = load(&server.addr, 1, check_md5)?;
    let md5 = check_md5.then(|| {
        (
            f(&warm, &["file", "md5_ok"]) as u64,
            f(&warm, &["file", "md5_mismatch"]) as u64,
            f(&warm, &["mb_per_s"]),
        )
    });
    let v = load(&server.addr, gets, false)?;
    let sample = FileSample {
        baseline,
        baseline_load,
        switchboard: f(&v, &["mb_per_s"]) * 1e6,
        errors: errors(&v) + errors(&warm) + baseline_errors,
    };
    Ok((sample, md5))
}
