//! `switchboard-load`: drives thousands of connections against a Switchboard
//! server from one event-driven process and reports throughput, latency
//! percentiles, errors and its own CPU cost per message.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use switchboard::Addr;
use switchboard_bins::cli::{parse_duration, parse_size};
use switchboard_bins::load::{
    hgrm, mismatch_hint, plot_svg, run_watched, udp, write_atomically, Config, Interval, LoadError, Mode,
    Stop, Watch,
};

/// Load generator for Switchboard servers.
///
/// One process, a few event-loop threads (one by default), thousands of
/// connections. Connections open at --connect-rate; once all are ready (chat:
/// welcomed) the measured window starts. Closed loop by default: each
/// connection keeps --depth messages in flight. With --rate it is an open
/// loop: messages go out on a fixed schedule and latency counts from the
/// scheduled time, so a server that stalls shows its queueing.
///
/// Ctrl-C or SIGTERM stops sending, waits at most 1s (or --drain-timeout if
/// shorter) for what is in flight, also when the run was already waiting for
/// it, and prints the report of what ran (a second one exits at once).
///
/// Exit status: 0 for a clean run (an interrupted one included); 1 if the
/// run saw errors or failed connections (the summary says which); 2 if it
/// could not start (bad arguments, target unreachable).
#[derive(Debug, Parser)]
#[command(name = "switchboard-load", version)]
struct Cli {
    #[command(subcommand)]
    mode: ModeCmd,

    #[command(flatten)]
    common: Common,

    // TLS (switchboard_bins::tls).
    #[command(flatten)]
    tls: switchboard_bins::tls::TlsArgs,
}

#[derive(Debug, Args)]
struct Common {
    /// The server to load: HOST:PORT, or unix:PATH for a Unix domain socket
    /// (the TCP modes; udp-echo needs HOST:PORT).
    #[arg(long, short = 't', global = true, value_name = "ADDR", default_value = "127.0.0.1:7878")]
    target: String,

    /// Also load this server, the connections taking the targets in turn
    /// (chat: a cluster of servers sharing one room); repeatable.
    #[arg(long, global = true, value_name = "ADDR")]
    also_target: Vec<String>,

    /// Connections to open (chat: members of the room).
    #[arg(long, short = 'c', global = true, value_name = "N", default_value_t = 10)]
    connections: usize,

    /// Event-loop threads driving the connections.
    #[arg(long, global = true, value_name = "N", default_value_t = 1)]
    threads: usize,

    /// New connections per second while ramping up.
    #[arg(long, global = true, value_name = "PER_SEC", default_value_t = 5000.0)]
    connect_rate: f64,

    /// How long to send, from the moment every connection is ready (e.g. 500ms, 10s, 1m) [default: 10s].
    #[arg(long, short = 'd', global = true, value_name = "DURATION", value_parser = parse_duration,
          conflicts_with = "messages")]
    duration: Option<Duration>,

    /// Stop after this many messages in total (chat: sent; file: downloads) instead of a duration.
    #[arg(long, short = 'n', global = true, value_name = "N")]
    messages: Option<u64>,

    /// Open loop: this many messages per second in total, on a fixed schedule.
    #[arg(long, global = true, value_name = "PER_SEC")]
    rate: Option<f64>,

    /// After sending stops, how long at most to wait for what is in flight before it counts as lost:
    /// a run ends within its duration plus this, however slowly the server trickles.
    #[arg(long, global = true, value_name = "DURATION", value_parser = parse_duration, default_value = "5s")]
    drain_timeout: Duration,

    /// How long a connection may take to connect (chat: and be welcomed).
    #[arg(long, global = true, value_name = "DURATION", value_parser = parse_duration, default_value = "10s")]
    connect_timeout: Duration,

    /// Print one JSON object with the results on stdout instead of the table.
    #[arg(long, global = true)]
    json: bool,

    /// No progress line, even on a terminal.
    #[arg(long, short = 'q', global = true)]
    quiet: bool,

    // Reports: per-interval lines, the histogram file, the plot.
    /// Print a line per interval (e.g. 1s): msg/s and the latency
    /// percentiles of that interval (on stderr with --json). It is also the
    /// period of the throughput series in --json and --plot [default: 1s].
    #[arg(long, global = true, value_name = "DURATION", value_parser = parse_duration)]
    interval: Option<Duration>,

    /// Write the latency histogram to FILE in HdrHistogram's percentile
    /// distribution format (.hgrm, values in ms).
    #[arg(long, global = true, value_name = "FILE")]
    hdr_out: Option<PathBuf>,

    /// Draw the latency percentile curve and the throughput over time to
    /// FILE as SVG.
    #[arg(long, global = true, value_name = "FILE")]
    plot: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum ModeCmd {
    /// Ping-pong against the echo handler; every echoed byte is checked.
    /// Needs `switchboard-server --handler echo` (the default).
    Echo {
        /// Bytes per message (e.g. 64, 4KiB).
        #[arg(long, short = 's', value_name = "BYTES", value_parser = parse_size, default_value = "64")]
        size: usize,
        /// Messages in flight per connection (closed loop pipelining).
        #[arg(long, value_name = "K", default_value_t = 1)]
        depth: usize,
    },
    /// Every member of one chat room sends; every member checks it receives
    /// every other member's messages, and measures send-to-receive latency.
    /// Needs `switchboard-server --handler chat`.
    Chat {
        /// Length of each message line, at most 4000 (the text carries sender, sequence and send time).
        #[arg(long, short = 's', value_name = "BYTES", value_parser = parse_size, default_value = "64")]
        size: usize,
        /// Messages per member still on their way to some member (closed loop).
        #[arg(long, value_name = "K", default_value_t = 1)]
        depth: usize,
    },
    /// `get NAME` downloads from the file handler; MB/s, md5 checked against the header.
    /// Needs `switchboard-server --handler file --root DIR`. A header declaring more than
    /// 1 TiB is a protocol error (counted, its connection closed).
    File {
        /// The file to request (relative to the server's root).
        name: String,
        /// Requests in flight per connection.
        #[arg(long, value_name = "K", default_value_t = 1)]
        depth: usize,
        /// Count bytes without computing md5 (measures the server, not this machine's md5 speed).
        #[arg(long)]
        no_md5: bool,
    },
    /// Connections that only stay open (to measure what idle connections cost the server).
    /// Works against any handler.
    Idle,
    /// Datagrams against a UDP echo server (`switchboard-server --udp`): -c
    /// sockets (peers); loss, reordering and bad echoes counted.
    UdpEcho {
        /// Bytes per datagram, 16 to 65507.
        #[arg(long, short = 's', value_name = "BYTES", value_parser = parse_size, default_value = "64")]
        size: usize,
        /// Datagrams in flight per peer (closed loop).
        #[arg(long, value_name = "K", default_value_t = 1)]
        depth: usize,
        /// Closed loop: a datagram not echoed in this long stops counting as in flight.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "200ms")]
        loss_timeout: Duration,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    if let ModeCmd::UdpEcho { size, depth, loss_timeout } = cli.mode {
        if let Some(flag) = not_for_udp(&cli) {
            eprintln!("switchboard-load: udp-echo does not take {flag} (a TCP mode's flag)");
            return ExitCode::from(2);
        }
        return udp_echo(&cli.common, size, depth, loss_timeout);
    }
    let cfg = match config(cli.mode, &cli.common).and_then(|mut c| {
        c.tls = cli.tls.load_tls(&cli.common.target).map_err(LoadError::Invalid)?;
        Ok(c)
    }) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("switchboard-load: {e}");
            return ExitCode::from(2);
        }
    };
    let progress = !cli.common.quiet && std::io::stderr().is_terminal();
    let interrupt = Arc::new(AtomicBool::new(false));
    if let Err(e) = stop_on_signals(Arc::clone(&interrupt)) {
        eprintln!("switchboard-load: {e}");
        return ExitCode::from(2);
    }
    let json = cli.common.json;
    let print_intervals = cli.common.interval.is_some();
    let mut on_interval = |i: &Interval| print_interval(json, i);
    let watch = Watch {
        progress,
        on_interval: print_intervals.then_some(&mut on_interval as &mut dyn FnMut(&Interval)),
        interrupt: Some(interrupt),
    };
    let report = match run_watched(&cfg, watch) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("switchboard-load: {e}");
            return ExitCode::from(2);
        }
    };
    let text = if json { format!("{}\n", report.to_json()) } else { report.table() };
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("switchboard-load: cannot write the report: {e}");
            return ExitCode::from(2);
        }
    }
    if let Some(hint) = mismatch_hint(&report) {
        eprintln!("switchboard-load: {hint}");
    }
    if let Some(path) = &cli.common.hdr_out {
        if let Err(e) = write_atomically(path, hgrm(&report.histogram).as_bytes()) {
            eprintln!("switchboard-load: cannot write {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    if let Some(path) = &cli.common.plot {
        let written = plot_svg(&report)
            .map_err(std::io::Error::other)
            .and_then(|svg| write_atomically(path, svg.as_bytes()));
        if let Err(e) = written {
            eprintln!("switchboard-load: cannot write {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        if cli.common.json {
            eprintln!(
                "switchboard-load: {} errors, {} failed connections",
                report.errors.total(),
                report.connect_failures
            );
        }
        ExitCode::from(1)
    }
}

fn config(mode: ModeCmd, c: &Common) -> Result<Config, LoadError> {
    let target = resolve(&c.target)?;
    let mode = match mode {
        ModeCmd::Echo { size, depth } => Mode::Echo { size, depth },
        ModeCmd::Chat { size, depth } => Mode::Chat { size, depth },
        ModeCmd::File { name, depth, no_md5 } => Mode::File { name, depth, verify_md5: !no_md5 },
        ModeCmd::Idle => Mode::Idle,
        ModeCmd::UdpEcho { .. } => return Err(LoadError::Invalid("udp-echo is not a TCP mode".into())),
    };
    if c.rate.is_some() && matches!(mode, Mode::Idle) {
        return Err(LoadError::Invalid("idle mode sends nothing: --rate does not apply".into()));
    }
    let mut cfg = Config::new(target, c.connections, mode);
    cfg.also = c.also_target.iter().map(|t| resolve(t)).collect::<Result<_, _>>()?;
    cfg.threads = c.threads;
    cfg.connect_rate = c.connect_rate;
    cfg.stop = match (c.messages, c.duration) {
        (Some(n), _) => Stop::Messages(n),
        (None, Some(d)) => Stop::Duration(d),
        (None, None) => Stop::Duration(Duration::from_secs(10)),
    };
    cfg.rate = c.rate;
    cfg.drain_timeout = c.drain_timeout;
    cfg.connect_timeout = c.connect_timeout;
    if let Some(i) = c.interval {
        cfg.interval = i;
    }
    cfg.validate().map_err(LoadError::Invalid)?;
    Ok(cfg)
}

/// The first flag given that only the TCP modes use.
fn not_for_udp(cli: &Cli) -> Option<&'static str> {
    let c = &cli.common;
    [
        (cli.tls.tls, "--tls"),
        (!c.also_target.is_empty(), "--also-target"),
        (c.threads != 1, "--threads"),
        (c.hdr_out.is_some(), "--hdr-out"),
        (c.plot.is_some(), "--plot"),
    ]
    .into_iter()
    .find_map(|(given, flag)| given.then_some(flag))
}

/// An interval's line: on stdout, or on stderr when stdout carries the
/// JSON report.
fn print_interval(json: bool, i: &Interval) {
    if json {
        eprintln!("{}", i.line());
    } else {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", i.line()).and_then(|()| out.flush());
    }
}

/// `udp-echo`: its own runner (no connections), its own report.
fn udp_echo(c: &Common, size: usize, depth: usize, loss_timeout: Duration) -> ExitCode {
    let target = match resolve(&c.target).map(|t| t.ip()) {
        Ok(Some(t)) => t,
        Ok(None) => {
            eprintln!("switchboard-load: udp-echo needs HOST:PORT, not a Unix socket ({})", c.target);
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("switchboard-load: {e}");
            return ExitCode::from(2);
        }
    };
    let interrupt = Arc::new(AtomicBool::new(false));
    if let Err(e) = stop_on_signals(Arc::clone(&interrupt)) {
        eprintln!("switchboard-load: {e}");
        return ExitCode::from(2);
    }
    let cfg = udp::UdpConfig {
        target,
        peers: c.connections,
        size,
        depth,
        rate: c.rate,
        stop: match (c.messages, c.duration) {
            (Some(n), _) => Stop::Messages(n),
            (None, Some(d)) => Stop::Duration(d),
            (None, None) => Stop::Duration(Duration::from_secs(10)),
        },
        drain_timeout: c.drain_timeout,
        loss_timeout,
        interrupt: Some(interrupt),
        interval: c.interval,
    };
    let report = match udp::run(&cfg, &mut |i: &Interval| print_interval(c.json, i)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("switchboard-load: {e}");
            return ExitCode::from(2);
        }
    };
    let text = if c.json { format!("{}\n", report.to_json()) } else { report.table() };
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("switchboard-load: cannot write the report: {e}");
            return ExitCode::from(2);
        }
    }
    // Loss is a measurement over UDP, not an error; nothing echoed at all,
    // or echoes that are not what was sent, are.
    if report.received == 0 || report.bad > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// `HOST:PORT` resolved, or `unix:PATH`.
fn resolve(target: &str) -> Result<Addr, LoadError> {
    Addr::parse(target).map_err(|e| LoadError::Invalid(e.to_string()))
}

/// Ctrl-C / SIGTERM: the first stops sending, awaits what is in flight for
/// at most the interrupt grace and prints the report of what ran; the
/// second exits at once (status 130).
fn stop_on_signals(interrupt: Arc<AtomicBool>) -> Result<(), String> {
    ctrlc::set_handler(move || {
        if interrupt.swap(true, Ordering::AcqRel) {
            eprintln!("switchboard-load: second signal; exiting without a report");
            std::process::exit(130);
        }
        eprintln!("switchboard-load: signal: stopping; the report follows (again to exit now)");
    })
    .map_err(|e| format!("cannot install the signal handler: {e}"))
}
