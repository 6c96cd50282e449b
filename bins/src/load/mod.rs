//! The event-driven load generator behind `switchboard-load`.
//!
//! A few threads (one by default), each a `mio` event loop over its share of
//! the connections, so one process drives 10,000 connections. A run goes
//! through three phases: the connections are opened at `connect_rate` (and,
//! for chat, welcomed); once every one is ready the measured window starts
//! and messages flow, closed loop (each connection keeps `depth` in flight)
//! or open loop (a fixed schedule of `rate` messages per second, latency
//! counted from the scheduled time, so a stalled server cannot hide its
//! queueing); at the stop, sending ends and what is still in flight is
//! awaited for at most [`Config::drain_timeout`] (at most
//! [`INTERRUPT_GRACE`] after an interrupt) and otherwise counted as lost.
//!
//! ```no_run
//! use switchboard_bins::load::{run, Config, Mode, Stop};
//!
//! // Or a Unix socket: switchboard::Addr::Unix("/run/echo.sock".into()).
//! let target: std::net::SocketAddr = "127.0.0.1:7878".parse().unwrap();
//! let mut cfg = Config::new(target, 64, Mode::Echo { size: 64, depth: 1 });
//! cfg.stop = Stop::Duration(std::time::Duration::from_secs(5));
//! let report = run(&cfg)?;
//! print!("{}", report.table());
//! # Ok::<(), switchboard_bins::load::LoadError>(())
//! ```

mod chat;
mod config;
mod diagnose;
mod echo;
mod file;
mod idle;
mod intervals;
mod output;
mod progress;
mod report;
mod shared;
mod stream;
mod sys;
mod timer;
pub mod udp;
mod worker;

use std::fmt;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use mio::{Poll, Waker};

pub use config::{Config, Mode, Stop};
pub use diagnose::{mismatch_hint, no_answer_hint};
pub use file::MAX_FILE_SIZE;
pub use intervals::Interval;
pub use output::{hgrm, plot_svg, write_atomically, PERCENTILES};
pub use report::{ChatSummary, ErrorCounts, FileSummary, Latency, Report};
pub use stream::LoadTls;
pub use sys::{process_cpu_time, raise_fd_limit};

use shared::{Shared, RUN, STOP};

/// After an interrupt ([`Watch::interrupt`]), the longest what is in flight
/// is awaited (or the drain timeout, if shorter), whatever phase the run
/// is in.
pub const INTERRUPT_GRACE: Duration = Duration::from_secs(1);
use worker::{Protocol, Tally, WorkerResult, WAKE};

/// Why a run could not be made.
#[derive(Debug)]
pub enum LoadError {
    /// The configuration cannot work.
    Invalid(String),
    /// Nothing answers at the target.
    Unreachable {
        /// The target.
        addr: switchboard::Addr,
        /// Why.
        error: std::io::Error,
    },
    /// The process could not set itself up (threads, poll).
    Setup(std::io::Error),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Invalid(s) => f.write_str(s),
            LoadError::Unreachable { addr, error } => write!(f, "cannot connect to {addr}: {error}"),
            LoadError::Setup(e) => write!(f, "cannot start the load threads: {e}"),
        }
    }
}

impl std::error::Error for LoadError {}

/// What a thread's protocol hands back, whatever the mode.
enum ModeOutput {
    None,
    Chat(chat::ChatOutput),
    File(file::FileOutput),
}

/// Runs the load described by `cfg` and reports what it measured (no
/// progress line; see [`run_with_progress`]).
pub fn run(cfg: &Config) -> Result<Report, LoadError> {
    run_with_progress(cfg, false)
}

/// Like [`run`], with a progress line on stderr once a second when
/// `progress` is true (meant for a terminal).
pub fn run_with_progress(cfg: &Config, progress: bool) -> Result<Report, LoadError> {
    run_watched(cfg, Watch { progress, ..Watch::default() })
}

/// What a caller of [`run_watched`] sees while the run goes.
#[derive(Default)]
pub struct Watch<'a> {
    /// A progress line on stderr once a second (meant for a terminal).
    pub progress: bool,
    /// Called at the end of each interval of the window ([`Config::interval`]).
    pub on_interval: Option<&'a mut dyn FnMut(&Interval)>,
    /// Once set (by a signal handler, say), sending stops, what is in
    /// flight is awaited for at most [`INTERRUPT_GRACE`] (also when the
    /// run was already draining), and the report covers what ran
    /// ([`Report::interrupted`]).
    pub interrupt: Option<Arc<AtomicBool>>,
}

impl fmt::Debug for Watch<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watch").field("progress", &self.progress).finish_non_exhaustive()
    }
}

/// Like [`run`], watched: a progress line, a callback per interval, and a
/// flag that ends the run early with a report.
pub fn run_watched(cfg: &Config, mut watch: Watch<'_>) -> Result<Report, LoadError> {
    let progress = watch.progress;
    cfg.validate().map_err(LoadError::Invalid)?;
    let probe_timeout = cfg.connect_timeout.min(Duration::from_secs(5));
    let probe = match &cfg.target {
        switchboard::Addr::Ip(a) => TcpStream::connect_timeout(a, probe_timeout).map(drop),
        switchboard::Addr::Unix(p) => std::os::unix::net::UnixStream::connect(p).map(drop),
    };
    if let Err(error) = probe {
        return Err(LoadError::Unreachable { addr: cfg.target.clone(), error });
    }
    let fd_limit = raise_fd_limit();
    if (cfg.connections as u64).saturating_add(32) > fd_limit {
        log::warn!(
            "the descriptor limit is {fd_limit}: not all {} connections can open (raise `ulimit -n`)",
            cfg.connections
        );
    }

    let mut cfg = cfg.clone();
    cfg.threads = cfg.threads.min(cfg.connections);
    let cfg = Arc::new(cfg);
    let budget = match cfg.stop {
        Stop::Messages(n) => Some(n),
        Stop::Duration(_) => None,
    };
    let chat_members = matches!(cfg.mode, Mode::Chat { .. }).then_some(cfg.connections);
    let interrupt = watch.interrupt.take().unwrap_or_default();
    let shared = Arc::new(Shared::new(cfg.threads, budget, chat_members));
    let interrupted = || interrupt.load(Ordering::Acquire);
    let grace_ns = worker::duration_ns(INTERRUPT_GRACE.min(cfg.drain_timeout));
    // Once interrupted: the drain ends within the grace.
    let cut = |shared: &Shared| {
        let now = shared.now_ns();
        let _ = shared.cut_ns.compare_exchange(
            u64::MAX,
            now.saturating_add(grace_ns),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    };

    let mut handles = Vec::with_capacity(cfg.threads);
    let mut wakers = Vec::with_capacity(cfg.threads);
    for t in 0..cfg.threads {
        let globals: Vec<usize> = (t..cfg.connections).step_by(cfg.threads).collect();
        let poll = Poll::new().map_err(LoadError::Setup)?;
        wakers.push(Waker::new(poll.registry(), WAKE).map_err(LoadError::Setup)?);
        let handle = match &cfg.mode {
            Mode::Echo { size, .. } => {
                spawn(t, globals, echo::Echo::new(*size), &cfg, &shared, poll, |()| ModeOutput::None)
            }
            Mode::Chat { size, .. } => {
                let proto = chat::Chat::new(*size, cfg.connections, shared.clone());
                spawn(t, globals, proto, &cfg, &shared, poll, ModeOutput::Chat)
            }
            Mode::File { name, verify_md5, .. } => {
                let proto = file::FileGet::new(name, *verify_md5);
                spawn(t, globals, proto, &cfg, &shared, poll, ModeOutput::File)
            }
            Mode::Idle => spawn(t, globals, idle::Idle, &cfg, &shared, poll, |()| ModeOutput::None),
        };
        match handle {
            Ok(h) => handles.push(h),
            Err(e) => {
                // Let the threads already started end at once.
                shared.stop_ns.store(shared.now_ns(), Ordering::Release);
                shared.phase.store(STOP, Ordering::Release);
                shared.run_start_ns.store(shared.now_ns(), Ordering::Release);
                wakers.iter().for_each(|w| drop(w.wake()));
                return Err(LoadError::Setup(e));
            }
        }
    }
    let wake_all = || wakers.iter().for_each(|w| drop(w.wake()));
    let all_done = || shared.progress.iter().all(|p| p.done.load(Ordering::Acquire));
    let mut line = progress::Line::new(progress, shared.clone(), cfg.connections);

    // Phase 1: connect (and be welcomed).
    while shared.workers_ready.load(Ordering::Acquire) < cfg.threads && !all_done() && !interrupted() {
        std::thread::sleep(Duration::from_millis(10));
        line.tick("connecting");
    }
    // Phase 2: the measured window.
    let run_start_ns = shared.now_ns();
    let cpu_start = process_cpu_time();
    shared.run_start_ns.store(run_start_ns, Ordering::Release);
    shared.phase.store(RUN, Ordering::Release);
    wake_all();
    let mut series = Series::new(run_start_ns, cfg.interval, &mut watch.on_interval);
    let mut cpu_end = None;
    let mut stop_ns = None;
    let end_ns = match cfg.stop {
        Stop::Duration(d) => run_start_ns.saturating_add(worker::duration_ns(d)),
        Stop::Messages(_) => u64::MAX,
    };
    loop {
        let now = shared.now_ns();
        if now >= end_ns || all_done() || interrupted() {
            break;
        }
        series.tick(now, &shared);
        let to_tick = series.next_ns.saturating_sub(now).max(1_000_000);
        let left = Duration::from_nanos((end_ns - now).min(to_tick)).min(Duration::from_millis(20));
        std::thread::sleep(left);
        line.tick("running");
    }
    if interrupted() {
        cut(&shared);
    }
    if matches!(cfg.stop, Stop::Duration(_)) || interrupted() {
        cpu_end = Some(process_cpu_time());
        let now = shared.now_ns();
        stop_ns = Some(now);
        shared.stop_ns.store(now, Ordering::Release);
        shared.phase.store(STOP, Ordering::Release);
        wake_all();
    }
    let window_end = stop_ns.unwrap_or_else(|| shared.now_ns());
    series.finish(window_end, &shared);
    // Phase 3: drain.
    while !all_done() {
        if interrupted() && shared.cut_ns.load(Ordering::Acquire) == u64::MAX {
            // A signal while draining ends the drain within the grace.
            cut(&shared);
            wake_all();
        }
        std::thread::sleep(Duration::from_millis(10));
        line.tick(if stop_ns.is_some() { "draining" } else { "running" });
    }
    let cpu_end = cpu_end.unwrap_or_else(process_cpu_time);
    shared.phase.store(STOP, Ordering::Release);
    line.finish();
    let intervals = series.points;

    let mut results = Vec::with_capacity(handles.len());
    for h in handles {
        match h.join() {
            Ok(r) => results.push(r),
            Err(_) => return Err(LoadError::Setup(std::io::Error::other("a load thread panicked"))),
        }
    }
    let mut report = build_report(&cfg, results, run_start_ns, stop_ns, cpu_end.saturating_sub(cpu_start));
    report.interrupted = interrupted();
    report.intervals = intervals;
    if let Some(size) = cfg.mode.message_size() {
        // Echo and chat: every completed message carried `size` bytes.
        report.bytes = report.received * size as u64;
        let secs = report.window.as_secs_f64();
        report.bytes_per_sec = if secs > 0.0 { (report.in_window * size as u64) as f64 / secs } else { 0.0 };
        for i in &mut report.intervals {
            i.bytes = i.completed * size as u64;
        }
    }
    Ok(report)
}

/// The per-interval figures, taken at each boundary of the window.
struct Series<'w, 'a> {
    start_ns: u64,
    every_ns: u64,
    /// The start of the interval under way.
    from_ns: u64,
    next_ns: u64,
    points: Vec<Interval>,
    on_interval: &'w mut Option<&'a mut dyn FnMut(&Interval)>,
}

impl<'w, 'a> Series<'w, 'a> {
    fn new(
        start_ns: u64,
        every: Duration,
        on_interval: &'w mut Option<&'a mut dyn FnMut(&Interval)>,
    ) -> Self {
        let every_ns = worker::duration_ns(every).max(1);
        Series {
            start_ns,
            every_ns,
            from_ns: start_ns,
            next_ns: start_ns + every_ns,
            points: Vec::new(),
            on_interval,
        }
    }

    /// Takes the intervals that ended by `now_ns`.
    fn tick(&mut self, now_ns: u64, shared: &Shared) {
        while now_ns >= self.next_ns {
            self.take(self.next_ns, shared);
            self.next_ns += self.every_ns;
        }
    }

    /// Takes the last interval, cut at `end_ns`.
    fn finish(&mut self, end_ns: u64, shared: &Shared) {
        self.tick(end_ns, shared);
        // A remainder under a tenth of an interval is too short for a rate.
        if end_ns.saturating_sub(self.from_ns) >= self.every_ns / 10 {
            self.take(end_ns, shared);
        }
    }

    fn take(&mut self, to_ns: u64, shared: &Shared) {
        let start = Duration::from_nanos(self.from_ns - self.start_ns);
        let length = Duration::from_nanos(to_ns.saturating_sub(self.from_ns));
        let point = intervals::take(&shared.intervals, start, length);
        if let Some(f) = self.on_interval.as_mut() {
            f(&point);
        }
        self.points.push(point);
        self.from_ns = to_ns;
    }
}

fn spawn<P, F>(
    index: usize,
    globals: Vec<usize>,
    proto: P,
    cfg: &Arc<Config>,
    shared: &Arc<Shared>,
    poll: Poll,
    wrap: F,
) -> std::io::Result<JoinHandle<WorkerResult<ModeOutput>>>
where
    P: Protocol + 'static,
    F: FnOnce(P::Output) -> ModeOutput + Send + 'static,
{
    let (cfg, shared) = (cfg.clone(), shared.clone());
    std::thread::Builder::new().name(format!("load-{index}")).spawn(move || {
        let r = worker::run(index, globals, proto, cfg, shared, poll);
        WorkerResult { tally: r.tally, hist: r.hist, output: wrap(r.output) }
    })
}

fn build_report(
    cfg: &Config,
    results: Vec<WorkerResult<ModeOutput>>,
    run_start_ns: u64,
    stop_ns: Option<u64>,
    cpu: Duration,
) -> Report {
    let mut tally = Tally::default();
    let mut hist = worker::new_histogram();
    let mut chats = Vec::new();
    let mut files = Vec::new();
    for r in results {
        let t = &r.tally;
        tally.connected += t.connected;
        tally.connect_failures += t.connect_failures;
        tally.sent += t.sent;
        tally.received += t.received;
        tally.in_window += t.in_window;
        tally.bytes += t.bytes;
        tally.bytes_in_window += t.bytes_in_window;
        tally.last_completion_ns = tally.last_completion_ns.max(t.last_completion_ns);
        tally.heard |= t.heard;
        tally.errors.add(&t.errors);
        let _ = hist.add(&r.hist);
        match r.output {
            ModeOutput::None => {}
            ModeOutput::Chat(c) => chats.push(c),
            ModeOutput::File(f) => files.push(f),
        }
    }
    let end_ns = stop_ns.unwrap_or(tally.last_completion_ns).max(run_start_ns);
    let window = Duration::from_nanos(end_ns - run_start_ns);
    let secs = window.as_secs_f64();
    let per_sec = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };

    let mut errors = ErrorCounts {
        mismatches: tally.errors.mismatches,
        protocol: tally.errors.protocol,
        disconnects: tally.errors.disconnects,
        lost: tally.errors.lost,
        skipped: tally.errors.skipped,
    };
    let chat = matches!(cfg.mode, Mode::Chat { .. }).then(|| {
        let ck = chat::check(&chats);
        errors.lost += ck.missing;
        ChatSummary {
            members: ck.members,
            expected: ck.expected,
            received: ck.received,
            missing: ck.missing,
            complete_members: ck.complete_members,
            out_of_order: ck.out_of_order,
        }
    });
    let file = match &cfg.mode {
        Mode::File { verify_md5, .. } => Some(FileSummary {
            file_size: files.iter().map(|f| f.file_size).max().unwrap_or(0),
            verified: *verify_md5,
            md5_ok: files.iter().map(|f| f.md5_ok).sum(),
            md5_mismatch: files.iter().map(|f| f.md5_mismatch).sum(),
            error_replies: files.iter().map(|f| f.error_replies).sum(),
            oversized: files.iter().map(|f| f.oversized).sum(),
        }),
        _ => None,
    };
    let cpu_per_message = (tally.in_window > 0)
        .then(|| Duration::from_nanos((cpu.as_nanos() / u128::from(tally.in_window)) as u64));
    Report {
        mode: cfg.mode.name(),
        target: cfg.target.clone(),
        threads: cfg.threads,
        rate: cfg.rate,
        depth: cfg.mode.depth(),
        connections: cfg.connections,
        connected: tally.connected,
        connect_failures: tally.connect_failures,
        window,
        sent: tally.sent,
        received: tally.received,
        in_window: tally.in_window,
        throughput: per_sec(tally.in_window),
        bytes: tally.bytes,
        bytes_per_sec: per_sec(tally.bytes_in_window),
        latency: Latency::from_histogram(&hist),
        errors,
        cpu,
        cpu_per_message,
        chat,
        file,
        message_size: cfg.mode.message_size(),
        interrupted: false,
        heard: tally.heard,
        intervals: Vec::new(),
        histogram: hist,
    }
}
