//! Processes the runner starts and what it reads about them from /proc.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Clock ticks per second of /proc/PID/stat (USER_HZ; 100 on Linux's
/// mainstream architectures).
const TICKS_PER_SEC: f64 = 100.0;

/// A server under test; killed when dropped.
#[derive(Debug)]
pub(crate) struct ServerProc {
    child: Child,
    /// Keeps the pipe open so the server never writes into a closed pipe.
    _stdout: BufReader<ChildStdout>,
    pub(crate) addr: String,
}

impl ServerProc {
    /// Starts `bin ARGS` and waits (bounded) for its `listening on ADDR` line.
    pub(crate) fn start(bin: &Path, args: &[&str]) -> Result<ServerProc, String> {
        let mut child = Command::new(bin)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            return Err("no stdout".into());
        };
        // Read the first line on a thread so a server that never prints cannot hang us.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            let res = r.read_line(&mut line).map(|_| line);
            let _ = tx.send((res, r));
        });
        let (line, reader) = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok((Ok(line), r)) => (line, r),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{} did not say where it listens", bin.display()));
            }
        };
        let Some(addr) = line.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            let status = child.wait().ok().and_then(|s| s.code());
            return Err(format!(
                "{} {}: exited ({status:?}) without listening",
                bin.display(),
                args.join(" ")
            ));
        };
        Ok(ServerProc { addr: addr.to_string(), child, _stdout: reader })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// User + system CPU time so far.
    pub(crate) fn cpu(&self) -> Duration {
        cpu_time(self.pid()).unwrap_or_default()
    }

    /// Resident memory (VmRSS), bytes.
    pub(crate) fn rss(&self) -> u64 {
        rss(self.pid()).unwrap_or(0)
    }

    /// Context switches (voluntary + nonvoluntary) summed over the
    /// process's live threads.
    pub(crate) fn ctx_switches(&self) -> u64 {
        ctx_switches(self.pid())
    }

    /// Open descriptors.
    pub(crate) fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).map(|d| d.count()).unwrap_or(0)
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// utime + stime of a process, from /proc/PID/stat.
pub(crate) fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: split after it.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // rest starts at field 3 (state); utime is field 14, stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_secs_f64((utime + stime) as f64 / TICKS_PER_SEC))
}

/// `voluntary_ctxt_switches` + `nonvoluntary_ctxt_switches` summed over
/// /proc/PID/task/*/status (every live thread of the process; a thread that
/// has exited no longer counts).
pub(crate) fn ctx_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    let mut total = 0;
    for task in tasks.flatten() {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else { continue };
        for line in status.lines() {
            if let Some(v) = line
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                total += v.trim().parse::<u64>().unwrap_or(0);
            }
        }
    }
    total
}

/// VmRSS of a process in bytes.
pub(crate) fn rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Runs `switchboard-load ARGS --json --quiet` and parses its result.
pub(crate) fn run_load(bin: &Path, args: &[String], limit: Duration) -> Result<Value, String> {
    let mut child = Command::new(bin)
        .args(args)
        .args(["--json", "--quiet"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let status = wait_bounded(&mut child, limit)?;
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut err);
    }
    serde_json::from_str(out.trim())
        .map_err(|_| format!("switchboard-load {} failed ({status}): {}", args.join(" "), err.trim()))
}

/// Waits for a child at most `limit`, killing it past that.
pub(crate) fn wait_bounded(child: &mut Child, limit: Duration) -> Result<std::process::ExitStatus, String> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Ok(s),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("timed out after {limit:?}"));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// The machine, for the report: cores, CPU model, kernel.
pub(crate) fn machine() -> (usize, String, String) {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    (cores, model, kernel)
}

/// The release binaries the runner drives, found beside its own executable.
#[derive(Debug)]
pub(crate) struct Bins {
    pub(crate) server: PathBuf,
    pub(crate) load: PathBuf,
    pub(crate) tokio_echo: PathBuf,
    pub(crate) sendfile: PathBuf,
    /// `taskset` (util-linux), for the pinned runs; `None` when not on PATH.
    pub(crate) taskset: Option<PathBuf>,
}

impl Bins {
    pub(crate) fn find(dir: &Path) -> Result<Bins, String> {
        let get = |name: &str| {
            let p = dir.join(name);
            if p.is_file() {
                Ok(p)
            } else {
                Err(format!(
                    "{} is missing: run the benchmark with `cargo run --release -p switchboard-benches --bin bench`, which builds them, or build them with `cargo build --release --workspace`",
                    p.display()
                ))
            }
        };
        Ok(Bins {
            server: get("switchboard-server")?,
            load: get("switchboard-load")?,
            tokio_echo: get("tokio-echo")?,
            sendfile: get("sendfile-server")?,
            taskset: in_path("taskset"),
        })
    }
}

/// The first executable file called `name` in the folders of PATH.
fn in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}
