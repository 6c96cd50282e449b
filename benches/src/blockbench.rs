//! The blocking-work rows: the core's `blocking` example (each line
//! answered after a 50 ms blocking job on the server's pool) against
//! `tokio-blocking` (`spawn_blocking`, 16 jobs in flight per connection),
//! the servers alternating within each round.
//!
//! - 100 clients, each writing 5 lines in one write and reading the 5
//!   replies: the total time until the last client has its replies, and
//!   the median of the clients' own times. Target: both within 1.1× of
//!   the baseline's.
//! - Fairness: one connection writes 1,000 lines at once; once its first
//!   reply is back, another connection asks once. Its wait beyond its own
//!   job must be at most one job. Run on the servers' defaults and, for
//!   switchboard, on a pool of one thread too (where a backlog could
//!   starve the other connection if the pool were not fair).

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use crate::procs::{Bins, ServerProc};
use crate::{median, Options};

/// Each request's blocking job.
const JOB: Duration = Duration::from_millis(50);
/// Clients and the lines each pipelines.
const CLIENTS: usize = 100;
const PIPELINED: usize = 5;
/// The backlog of the fairness row's busy connection.
const BACKLOG: usize = 1_000;
/// The longest any reply may take before the run is called failed.
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// The servers compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Server {
    Switchboard,
    /// Switchboard with one pool thread (the fairness row only).
    SwitchboardOneThread,
    Tokio,
}

impl Server {
    fn name(self) -> &'static str {
        match self {
            Server::Switchboard => "switchboard",
            Server::SwitchboardOneThread => "switchboard, 1 pool thread",
            Server::Tokio => "tokio",
        }
    }
}

/// The `blocking` example: built by the runner as `examples/blocking`, or
/// by the tests' package as `example-blocking`.
fn example(bins: &Bins) -> Result<PathBuf, String> {
    let dir = bins.server.parent().unwrap_or(Path::new("."));
    [dir.join("examples").join("blocking"), dir.join("example-blocking")]
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "the blocking example is missing in {}: build it with `cargo build --release -p switchboard --example blocking`",
                dir.display()
            )
        })
}

fn start(bins: &Bins, server: Server) -> Result<ServerProc, String> {
    let ms = JOB.as_millis().to_string();
    match server {
        Server::Switchboard => {
            ServerProc::start(&example(bins)?, &["--listen", "127.0.0.1:0", "--job-ms", &ms])
        }
        Server::SwitchboardOneThread => ServerProc::start(
            &example(bins)?,
            &["--listen", "127.0.0.1:0", "--job-ms", &ms, "--threads", "1"],
        ),
        Server::Tokio => ServerProc::start(&bins.server.with_file_name("tokio-blocking"), &["--job-ms", &ms]),
    }
}

/// A server's figures over the rounds: the pipelined row's (total, client
/// median) and the fairness row's wait.
#[derive(Default)]
struct Figures {
    pipelined: Vec<(Duration, Duration)>,
    fairness: Vec<Duration>,
}

/// A client: its socket and its reader.
fn connect(addr: &str) -> Result<(TcpStream, BufReader<TcpStream>), String> {
    let s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(REPLY_TIMEOUT)).map_err(|e| e.to_string())?;
    let _ = s.set_nodelay(true);
    let r = BufReader::new(s.try_clone().map_err(|e| e.to_string())?);
    Ok((s, r))
}

/// Reads one reply and checks it answers `query`.
fn expect(r: &mut BufReader<TcpStream>, query: &str) -> Result<(), String> {
    let mut line = String::new();
    r.read_line(&mut line).map_err(|e| format!("reading the reply to {query}: {e}"))?;
    if line.trim_end() != format!("RESULT {query}") {
        return Err(format!("asked {query}, got {line:?}"));
    }
    Ok(())
}

/// The pipelined row once: (total, median of the clients' times).
fn pipelined(addr: &str) -> Result<(Duration, Duration), String> {
    let clients = (0..CLIENTS).map(|_| connect(addr)).collect::<Result<Vec<_>, _>>()?;
    let start = Arc::new(Barrier::new(CLIENTS + 1));
    let threads: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(c, (mut s, mut r))| {
            let start = Arc::clone(&start);
            std::thread::spawn(move || -> Result<(Instant, Instant), String> {
                let queries: Vec<String> = (0..PIPELINED).map(|i| format!("c{c}-q{i}")).collect();
                let mut batch = queries.join("\n");
                batch.push('\n');
                start.wait();
                let asked = Instant::now();
                s.write_all(batch.as_bytes()).map_err(|e| e.to_string())?;
                for q in &queries {
                    expect(&mut r, q)?;
                }
                Ok((asked, Instant::now()))
            })
        })
        .collect();
    start.wait();
    let began = Instant::now();
    let mut own = Vec::new();
    let mut last = began;
    for t in threads {
        let (asked, done) = t.join().map_err(|_| "a client thread panicked".to_string())??;
        own.push(done.duration_since(asked).as_secs_f64());
        last = last.max(done);
    }
    Ok((last.duration_since(began), Duration::from_secs_f64(median(own))))
}

/// The fairness row once: the single request's wait beyond its own job.
fn fairness(addr: &str) -> Result<Duration, String> {
    let (mut busy, mut busy_r) = connect(addr)?;
    let backlog: String = (0..BACKLOG).map(|i| format!("b{i}\n")).collect();
    busy.write_all(backlog.as_bytes()).map_err(|e| e.to_string())?;
    expect(&mut busy_r, "b0")?;
    let (mut one, mut one_r) = connect(addr)?;
    let asked = Instant::now();
    one.write_all(b"single\n").map_err(|e| e.to_string())?;
    expect(&mut one_r, "single")?;
    Ok(asked.elapsed().saturating_sub(JOB))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The rows as a markdown section.
pub(crate) fn section(opts: &Options, bins: &Bins) -> String {
    let mut s = String::from("\n## Blocking work per request\n\n");
    let mut failures = Vec::new();
    // Per server: (total, client median) per round; fairness delays.
    let mut rows: Vec<(Server, Figures)> = [Server::Switchboard, Server::Tokio, Server::SwitchboardOneThread]
        .into_iter()
        .map(|k| (k, Figures::default()))
        .collect();
    for round in 0..opts.rounds {
        let order: Vec<usize> = if round % 2 == 0 { vec![0, 1, 2] } else { vec![1, 0, 2] };
        for i in order {
            let server = rows[i].0;
            if server != Server::SwitchboardOneThread {
                match start(bins, server).and_then(|srv| pipelined(&srv.addr)) {
                    Ok((total, own)) => {
                        eprintln!(
                            "  {CLIENTS} clients × {PIPELINED} pipelined 50 ms jobs  {:<12} total {:>6.0} ms  client median {:>6.0} ms",
                            server.name(),
                            ms(total),
                            ms(own)
                        );
                        rows[i].1.pipelined.push((total, own));
                    }
                    Err(e) => failures.push(format!("pipelined jobs on {}: {e}", server.name())),
                }
            }
            // A fresh server: the last row's backlog is not drained.
            match start(bins, server).and_then(|srv| fairness(&srv.addr)) {
                Ok(delay) => {
                    eprintln!(
                        "  fairness {:<28} the single job waited {:>6.1} ms beyond its own",
                        server.name(),
                        ms(delay)
                    );
                    rows[i].1.fairness.push(delay);
                }
                Err(e) => failures.push(format!("fairness on {}: {e}", server.name())),
            }
        }
    }
    let med = |v: Vec<f64>| if v.is_empty() { f64::NAN } else { median(v) };
    let pipelined_of = |i: usize| -> (f64, f64) {
        let v = &rows[i].1.pipelined;
        (med(v.iter().map(|x| ms(x.0)).collect()), med(v.iter().map(|x| ms(x.1)).collect()))
    };
    let (sb, tk) = (pipelined_of(0), pipelined_of(1));
    let verdict = |ours: f64, theirs: f64| if ours <= 1.1 * theirs { "met" } else { "not met" };
    let _ = write!(
        s,
        "The core's `blocking` example (`--job-ms 50`, the default pool of up to 512 threads) against \
         `tokio-blocking` (`spawn_blocking`, 16 jobs in flight per connection, as `try_buffered(16)`); \
         medians over {} rounds, the servers alternating. Target: within 1.1× of the baseline.\n\n\
         | load | figure | switchboard ms | tokio ms | ratio | target |\n|---|---|---:|---:|---:|---|\n",
        opts.rounds
    );
    for (figure, ours, theirs) in [("total", sb.0, tk.0), ("client median", sb.1, tk.1)] {
        let _ = writeln!(
            s,
            "| {CLIENTS} clients × {PIPELINED} pipelined 50 ms jobs | {figure} | {ours:.0} | {theirs:.0} | {:.2}× | {} |",
            ours / theirs,
            verdict(ours, theirs)
        );
    }
    let _ = write!(
        s,
        "\nFairness: one connection writes {BACKLOG} requests at once; once its first reply is back, another \
         connection asks once. Its wait beyond its own 50 ms job (median over the rounds); target: at most one \
         job (50 ms).\n\n| server | wait beyond its own job, ms | target |\n|---|---:|---|\n"
    );
    for (server, figures) in &rows {
        let d = med(figures.fairness.iter().map(|&d| ms(d)).collect());
        let met = if d <= ms(JOB) { "met" } else { "not met" };
        let _ = writeln!(s, "| {} | {d:.1} | {met} |", server.name());
    }
    if !failures.is_empty() {
        s.push_str("\nRuns that failed:\n\n");
        for f in failures {
            eprintln!("  ! {f}");
            let _ = writeln!(s, "- {f}");
        }
    }
    s
}
