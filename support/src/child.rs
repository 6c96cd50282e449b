//! Processes a test owns: binaries run with a deadline (their output read
//! on threads while they run, so a full pipe never blocks them), and their
//! memory, descriptors and threads read through `/proc/PID`.
//!
//! This is the only place the tests read `/proc`: a test measures a process
//! it spawned, never the test process its sibling tests share.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use switchboard::Stats;
use wait_timeout::ChildExt;

use crate::wait::{poll, StatsSource, TIMEOUT};

/// A process this test spawned, to be measured through `/proc/PID`. Made
/// only from a [`Child`], so nothing else can be measured with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnedPid(u32);

impl OwnedPid {
    /// The process behind `child`.
    pub fn of(child: &Child) -> OwnedPid {
        OwnedPid(child.id())
    }

    /// The process id.
    pub fn id(self) -> u32 {
        self.0
    }

    fn path(self, what: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/{what}", self.0))
    }

    /// Open file descriptors (entries of `/proc/PID/fd`).
    pub fn open_fds(self) -> usize {
        let p = self.path("fd");
        std::fs::read_dir(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display())).count()
    }

    /// Threads (entries of `/proc/PID/task`).
    pub fn threads(self) -> usize {
        let p = self.path("task");
        std::fs::read_dir(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display())).count()
    }

    /// The names of its threads (`/proc/PID/task/*/comm`: at most 15
    /// bytes, so `switchboard-worker-0` is `switchboard-wor`), sorted.
    /// A thread that ends while they are read is left out.
    pub fn thread_names(self) -> Vec<String> {
        let p = self.path("task");
        let tasks = std::fs::read_dir(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
        let mut names: Vec<String> = tasks
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .map(|n| n.trim_end().to_owned())
            .collect();
        names.sort();
        names
    }

    /// Resident memory in bytes (`VmRSS` of `/proc/PID/status`).
    pub fn rss_bytes(self) -> u64 {
        self.status_kib("VmRSS:") * 1024
    }

    /// Peak resident memory in bytes (`VmHWM` of `/proc/PID/status`).
    pub fn peak_rss_bytes(self) -> u64 {
        self.status_kib("VmHWM:") * 1024
    }

    fn status_kib(self, field: &str) -> u64 {
        let p = self.path("status");
        let status = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{field} in {}", p.display()))
    }
}

/// Runs `cmd` to the end with its output captured, killing it and failing
/// the test if it takes longer than `timeout`. Standard input is empty.
pub fn run(cmd: &mut Command, timeout: Duration) -> Output {
    let mut p = Spawned::spawn(cmd.stdin(Stdio::null()));
    let status = p.wait(timeout);
    p.output(status)
}

/// A running child process with its stdout and stderr read on threads as
/// they come: stdout line by line (see [`Spawned::next_line`]), stderr
/// collected. Killed and reaped when dropped.
#[derive(Debug)]
pub struct Spawned {
    child: Child,
    lines: Receiver<String>,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
}

impl Spawned {
    /// Spawns `cmd` with stdout and stderr piped (and stdin piped unless
    /// the caller set it).
    pub fn spawn(cmd: &mut Command) -> Spawned {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let (tx, lines) = mpsc::channel();
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        let readers = vec![
            {
                let stdout = Arc::clone(&stdout);
                std::thread::spawn(move || {
                    let mut r = BufReader::new(out);
                    let mut line = Vec::new();
                    while matches!(r.read_until(b'\n', &mut line), Ok(n) if n > 0) {
                        stdout.lock().unwrap().extend_from_slice(&line);
                        let _ = tx.send(String::from_utf8_lossy(&line).into_owned());
                        line.clear();
                    }
                })
            },
            {
                let stderr = Arc::clone(&stderr);
                std::thread::spawn(move || {
                    let mut r = err;
                    let mut buf = [0u8; 8192];
                    while let Ok(n @ 1..) = r.read(&mut buf) {
                        stderr.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                })
            },
        ];
        Spawned { child, lines, stdout, stderr, readers }
    }

    /// The process, to measure through `/proc/PID`.
    pub fn pid(&self) -> OwnedPid {
        OwnedPid::of(&self.child)
    }

    /// The child's standard input, when piped.
    pub fn stdin(&mut self) -> &mut ChildStdin {
        self.child.stdin.as_mut().expect("stdin is piped")
    }

    /// Closes the child's standard input.
    pub fn close_stdin(&mut self) {
        drop(self.child.stdin.take());
    }

    /// The next line on stdout (with its newline), or `None` once stdout is
    /// closed; fails the test after `timeout`.
    pub fn next_line(&mut self, timeout: Duration) -> Option<String> {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => Some(line),
            Err(RecvTimeoutError::Disconnected) => None,
            Err(RecvTimeoutError::Timeout) => {
                panic!("no line on stdout within {timeout:?}; stderr so far:\n{}", self.stderr_so_far())
            }
        }
    }

    /// Skips stdout lines until one satisfies `want`, and returns it; fails
    /// the test at EOF or after `timeout` in all.
    pub fn line_where(&mut self, timeout: Duration, mut want: impl FnMut(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_line(left) {
                Some(line) if want(&line) => return line,
                Some(_) => {}
                None => panic!("stdout closed before the line awaited; stderr:\n{}", self.stderr_so_far()),
            }
        }
    }

    /// Waits for the `listening on ADDR` line the Switchboard servers print
    /// first, and returns the address.
    pub fn listening_addr(&mut self) -> SocketAddr {
        let line = self.line_where(TIMEOUT, |l| l.starts_with("listening on "));
        line["listening on ".len()..].trim().parse().unwrap_or_else(|e| panic!("{line:?}: {e}"))
    }

    /// Waits until stderr contains `what`; fails the test after `timeout`
    /// with what stderr holds.
    pub fn wait_stderr(&self, what: &str, timeout: Duration) {
        let found = poll(timeout, || self.stderr_so_far().contains(what));
        assert!(found, "stderr lacks {what:?} after {timeout:?}:\n{}", self.stderr_so_far());
    }

    /// Everything printed on stderr so far.
    pub fn stderr_so_far(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Everything printed on stdout so far.
    pub fn stdout_so_far(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned()
    }

    /// Whether the process has exited (it is reaped then).
    pub fn has_exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// Sends `signal` (e.g. `rustix::process::Signal::INT`).
    pub fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, signal).expect("signal the child");
    }

    /// Waits for the process to exit, then for its output to be read to
    /// the end, so [`Spawned::stderr_so_far`] and [`Spawned::stdout_so_far`]
    /// hold all of it; kills it and fails the test after `timeout`, showing
    /// its stderr.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let started = Instant::now();
        let status = match self.child.wait_timeout(timeout).expect("wait for the child") {
            Some(status) => status,
            None => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("still running after {timeout:?}, killed; stderr:\n{}", self.stderr_so_far())
            }
        };
        // The readers end at EOF, once every holder of the pipes is gone (a
        // process the child left behind may still hold them: bounded).
        let left = timeout.saturating_sub(started.elapsed());
        let ended = poll(left, || self.readers.iter().all(JoinHandle::is_finished));
        assert!(
            ended,
            "exited ({status}) but its output is still open after {timeout:?}; stderr:\n{}",
            self.stderr_so_far()
        );
        for r in self.readers.drain(..) {
            r.join().expect("output reader");
        }
        status
    }

    /// All the output, after [`Spawned::wait`] returned `status`.
    pub fn output(&self, status: ExitStatus) -> Output {
        Output {
            status,
            stdout: self.stdout.lock().unwrap().clone(),
            stderr: self.stderr.lock().unwrap().clone(),
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The path of a binary built beside the running test, the way Cargo lays
/// out `target/<profile>/`: tests run from `target/<profile>/deps/`.
pub fn built_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("the test's folder").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built (it is a binary of the switchboard-tests package; cargo test builds it)",
        path.display()
    );
    path
}

/// A server in a process of its own, run by `switchboard-test-server` (see
/// [`crate::test_server`]): the test reads its counters over the child's
/// stdin and stdout and its memory, descriptors and threads through
/// `/proc/PID`. Killed when dropped; [`ChildServer::stop`] shuts it down
/// gracefully.
#[derive(Debug)]
pub struct ChildServer {
    proc: Spawned,
    addr: SocketAddr,
}

impl ChildServer {
    /// Starts `switchboard-test-server` with `args` (see
    /// [`crate::test_server`] for them) on 127.0.0.1:0 and waits for its
    /// `listening on ADDR` line.
    pub fn start(args: &[&str]) -> ChildServer {
        ChildServer::start_binary(&built_binary("switchboard-test-server"), args)
    }

    /// Starts the test server at `bin`.
    pub fn start_binary(bin: &Path, args: &[&str]) -> ChildServer {
        let mut cmd = Command::new(bin);
        cmd.args(args).stdin(Stdio::piped());
        let mut proc = Spawned::spawn(&mut cmd);
        let addr = proc.listening_addr();
        ChildServer { proc, addr }
    }

    /// Where the server listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server process, to measure.
    pub fn pid(&self) -> OwnedPid {
        self.proc.pid()
    }

    /// Shuts the server down gracefully (closes its stdin) and returns its
    /// last line, `exited drained=N forced=M`.
    pub fn stop(mut self) -> String {
        self.proc.close_stdin();
        let line = self.proc.line_where(TIMEOUT, |l| l.starts_with("exited "));
        let status = self.proc.wait(TIMEOUT);
        assert!(status.success(), "the test server failed: {status}; stderr:\n{}", self.proc.stderr_so_far());
        line.trim_end().to_string()
    }
}

impl StatsSource for ChildServer {
    /// Asks the child for its counters (`stats` on its stdin, one
    /// `stats K=V ...` line back).
    fn stats(&self) -> Stats {
        stats_of(&self.proc)
    }
}

fn stats_of(proc: &Spawned) -> Stats {
    let mut stdin = proc.child.stdin.as_ref().expect("stdin is piped");
    stdin.write_all(b"stats\n").and_then(|()| stdin.flush()).expect("ask the test server for its stats");
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match proc.lines.recv_timeout(left) {
            Ok(line) => {
                if let Some(kv) = line.strip_prefix("stats ") {
                    return crate::test_server::parse_stats(kv.trim_end());
                }
            }
            Err(e) => panic!("no stats from the test server ({e}); stderr:\n{}", proc.stderr_so_far()),
        }
    }
}
