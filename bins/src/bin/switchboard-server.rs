//! `switchboard-server`: runs one of the built-in handlers.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use switchboard::datagram::{DatagramBuilder, DatagramServer};
use switchboard::{Handler, Server, ServerBuilder};
use switchboard_bins::admin::{self, Observe, Observing};
use switchboard_bins::beside::{console, reserve, Beside};
use switchboard_bins::cli::{
    parse_args, parse_count, parse_duration, parse_positive_duration, parse_positive_size, parse_size,
    parse_spin, parse_unix_mode, parse_workers,
};
use switchboard_bins::printer::Printer;
use switchboard_handlers::{Chat, Echo, FileGet, Upper};

/// A multithreaded TCP server: pick a handler, and Switchboard runs the
/// accept loop, the worker pool, the limits and a graceful shutdown
/// (Ctrl-C, SIGTERM or SIGHUP once: drain; twice: stop now).
#[derive(Debug, Parser)]
#[command(name = "switchboard-server", version, args_conflicts_with_subcommands = true)]
struct Args {
    /// Instead of serving: a tool (`switchboard-server accounts delete NAME ...`).
    #[command(subcommand)]
    tool: Option<Tool>,

    /// The protocol to serve.
    #[arg(long, value_enum, default_value_t = HandlerName::Echo)]
    handler: HandlerName,

    /// The address to listen on: HOST:PORT (port 0 picks a free port), or
    /// unix:PATH for a Unix domain socket. A socket file left at PATH by a
    /// server that is gone is replaced; one a server listens on is refused
    /// (exit 1). The file is removed when the server stops accepting. Each
    /// Unix peer's uid, gid and pid are in the debug log (RUST_LOG=debug).
    #[arg(long, default_value = "127.0.0.1:7878", value_name = "ADDR")]
    listen: String,

    /// With --listen unix:PATH: the socket file's permissions in octal, as
    /// chmod takes them (660: its owner and group may connect), set before
    /// the server accepts [default: what the umask gives].
    #[arg(long, value_name = "OCTAL", value_parser = parse_unix_mode)]
    unix_mode: Option<u32>,

    /// Worker threads, each an event loop over many connections [default: available cores].
    #[arg(long, value_name = "N", value_parser = parse_workers)]
    workers: Option<usize>,

    /// Connections open at once; past it a client gets the handler's busy reply
    /// (`! server busy` for the line handlers) and is closed [default: what the
    /// descriptor limit allows]. At start the soft descriptor limit is raised to
    /// the hard one (`ulimit -Hn`); the default is that limit minus the descriptors
    /// already open (standard streams, the signal pipe), minus the server's own
    /// (4 + 2 per worker), minus a reserve for the handler's files of
    /// max(64, limit/8): 179 under `ulimit -n 256` with 2 workers and 5 open. The
    /// log's first line shows the figures. A value above that default is lowered
    /// to it with a warning.
    #[arg(long, value_name = "N", value_parser = parse_count)]
    max_connections: Option<usize>,

    /// After socket events a worker (and the UDP thread) polls again without
    /// sleeping for this long before it parks (at most 10ms; 0: park at once).
    /// Saves wake-ups of request-response loads on dedicated cores, at the cost
    /// of CPU while idle.
    #[arg(long, value_name = "DURATION", value_parser = parse_spin, default_value = "0s")]
    spin: Duration,

    /// Close a connection after this long with no bytes either way (e.g. 500ms, 30s, 5m).
    #[arg(long, value_name = "DURATION", value_parser = parse_positive_duration, default_value = "5m")]
    idle_timeout: Duration,

    /// On shutdown, how long connections may drain before they are forced closed
    /// (at most 100 years, like every duration).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "30s")]
    grace: Duration,

    /// The largest frame accepted (chat: a line; file: a request line), e.g. 4096 or 64KiB.
    #[arg(long, value_name = "BYTES", value_parser = parse_positive_size, default_value = "4096")]
    max_frame: usize,

    /// Chat: lines a second each member may send (bursts of twice that); past it
    /// the server stops reading from the member for a while. 0: no limit.
    #[arg(long, value_name = "LINES", default_value_t = switchboard_handlers::chat::DEFAULT_RATE)]
    chat_rate: u32,

    /// Chat: bytes of lines a second the whole room may relay (bursts of half
    /// that); past it a sender is paused, losing nothing. It keeps every member
    /// that reads at that pace within its outbound budget. 0: no limit.
    #[arg(long, value_name = "BYTES", value_parser = parse_size,
          default_value_t = switchboard_handlers::chat::DEFAULT_ROOM_RATE as usize)]
    chat_room_rate: usize,

    /// Chat: `/who` lists each member with its address, `alice (203.0.113.7:41234)`
    /// (behind --proxy-protocol, the client's). Off by default: it tells every
    /// member where the others connect from.
    #[arg(long)]
    chat_who_addresses: bool,

    /// Bytes that may wait for one reader: a chat member past it is cut off as
    /// too slow. (Echo and upper stop reading from a peer whose replies back up
    /// past 256 KiB, or past this if smaller.)
    #[arg(long, value_name = "BYTES", value_parser = parse_positive_size, default_value = "1MiB")]
    max_outbound: usize,

    /// Bytes that may wait for all readers together: past it, the connections
    /// holding more than their share are cut off first, so peers that do not
    /// read cannot exhaust memory. At least --max-outbound.
    #[arg(long, value_name = "BYTES", value_parser = parse_positive_size, default_value = "256MiB")]
    max_outbound_total: usize,

    /// The folder the file handler serves; nothing outside it is ever sent.
    #[arg(long, value_name = "DIR", required_if_eq("handler", "file"))]
    root: Option<PathBuf>,

    // Observability: the admin endpoint and the periodic figures.
    /// Serve HTTP on this address (e.g. 127.0.0.1:9100): /metrics in the
    /// Prometheus text format, /healthz (200 while running, 503 while
    /// draining, 429 when busy), and a live status page at /. It has its own
    /// thread and at most 64 connections, apart from the main port; at most
    /// 32 may wait for their request (2s each), 8 per client address, a
    /// newcomer taking the place of the oldest: silent sockets cannot make
    /// a health check fail.
    #[arg(long, value_name = "ADDR")]
    admin: Option<String>,

    /// Expect a PROXY protocol header (v1 or v2) first on every admin
    /// connection, as a load balancer's health checks with send-proxy send
    /// it; the address it names is the one logged and counted per address.
    #[arg(long, requires = "admin")]
    admin_proxy_protocol: bool,

    /// Print one line of figures on stdout every DURATION (e.g. 10s): totals,
    /// and the rates over the period.
    #[arg(long, value_name = "DURATION", value_parser = parse_positive_duration)]
    stats_every: Option<Duration>,

    // --- UDP and the operator console ---
    /// Also serve the handler over UDP on the same port number (echo, upper,
    /// chat): a datagram per message. The second stdout line is then
    /// `listening on udp ADDR`.
    #[arg(long)]
    udp: bool,

    /// UDP: a peer (a chat member) not heard from for this long is forgotten
    /// (the chat announces it as left).
    #[arg(long, value_name = "DURATION", value_parser = parse_positive_duration, default_value = "5m")]
    udp_idle: Duration,

    /// Chat: a partial line that has waited this long with no more bytes is
    /// taken as a complete line, for clients that send `hello` with no newline
    /// and wait for the answer (e.g. 200ms). Off by default: a line split
    /// across TCP segments by a slow link would be cut in two.
    #[arg(long, value_name = "DURATION", value_parser = parse_positive_duration)]
    accept_unterminated: Option<Duration>,

    /// Chat: the person at this terminal is a member of the room: what they
    /// type goes to the room (or `/msg NAME`), and the room's lines are printed
    /// on stdout after the `listening on` lines. End of input (Ctrl-D) leaves
    /// the room; the server keeps running.
    #[arg(long)]
    console: bool,

    /// Chat: the console member's nick.
    #[arg(long, value_name = "NAME", default_value = switchboard_handlers::chat::CONSOLE_NICK)]
    console_nick: String,

    // Chat cluster and accounts: --redis, --redis-lease, --redis-queue, --accounts.
    #[command(flatten)]
    cluster: switchboard_bins::cluster::ClusterArgs,

    // TLS, PROXY protocol, --reuse-port, LISTEN_FDS (switchboard_bins::edge).
    #[command(flatten)]
    edge: switchboard_bins::edge::EdgeArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum HandlerName {
    /// Every byte back unchanged (binary-safe, no framing).
    Echo,
    /// Text back in Unicode upper case as it arrives (no newline needed).
    Upper,
    /// One chat room: lines go to every other member; /nick, /who, /msg, /help, /quit.
    Chat,
    /// Serves the files under --root: `get NAME` and `list`, length + JSON header + raw bytes.
    File,
}

/// What the server binary does besides serving.
#[derive(Debug, Subcommand)]
enum Tool {
    /// The chat's accounts (--handler chat with --accounts or --redis).
    #[command(subcommand)]
    Accounts(switchboard_bins::accounts::AccountsCommand),
}

fn main() -> ExitCode {
    let args: Args = parse_args();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    if let Some(Tool::Accounts(cmd)) = args.tool {
        return switchboard_bins::accounts::run(cmd);
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchboard-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let mut builder = Server::builder()
        .idle_timeout(args.idle_timeout)
        .grace(args.grace)
        .max_outbound(args.max_outbound)
        .high_water((256 << 10).min(args.max_outbound))
        .max_outbound_total(args.max_outbound_total)
        .spin(args.spin);
    if let Some(n) = args.workers {
        builder = builder.workers(n);
    }
    if let Some(n) = args.max_connections {
        builder = builder.max_connections(n);
    }
    let unix = match switchboard::unix_path(&args.listen) {
        Some(Err(e)) => usage_error(ErrorKind::InvalidValue, format!("--listen {e}")),
        Some(Ok(_)) => true,
        None => false,
    };
    if let Some(mode) = args.unix_mode {
        if !unix {
            usage_error(
                ErrorKind::ArgumentConflict,
                "--unix-mode sets a Unix socket's mode: it needs --listen unix:PATH".into(),
            );
        }
        builder = builder.unix_mode(mode);
    }
    if unix && args.udp {
        usage_error(
            ErrorKind::ArgumentConflict,
            "--udp serves UDP on --listen's port: it cannot go with --listen unix:PATH".into(),
        );
    }
    if args.udp && args.edge.tls_cert.is_some() {
        anyhow::bail!("--udp serves plain datagrams (no DTLS): it cannot go with --tls-cert");
    }
    if args.udp && args.edge.proxy_protocol {
        anyhow::bail!("--udp cannot go with --proxy-protocol (a datagram carries no PROXY header)");
    }
    if args.max_outbound_total < args.max_outbound {
        Args::command()
            .error(
                ErrorKind::ArgumentConflict,
                format!(
                    "--max-outbound-total ({} B) must be at least --max-outbound ({} B)",
                    args.max_outbound_total, args.max_outbound
                ),
            )
            .exit();
    }
    if args.console && args.handler != HandlerName::Chat {
        anyhow::bail!("--console needs --handler chat");
    }
    if args.console && !switchboard_handlers::chat::valid_nick(&args.console_nick) {
        anyhow::bail!("--console-nick {:?} is not 1-32 letters, digits, _ or -", args.console_nick);
    }
    if args.accept_unterminated.is_some() && args.handler != HandlerName::Chat {
        log::warn!("--accept-unterminated is used only by --handler chat; ignoring it");
    }
    // TLS, PROXY protocol: a certificate or key that cannot be used is one
    // line and exit status 2, like a bad flag.
    let builder = args.edge.apply(builder).unwrap_or_else(|e| {
        eprintln!("switchboard-server: {e}");
        std::process::exit(2)
    });
    if args.root.is_some() && args.handler != HandlerName::File {
        log::warn!("--root is used only by --handler file; ignoring it");
    }
    if args.cluster.any() && args.handler != HandlerName::Chat {
        log::warn!("--redis and --accounts are used only by --handler chat; ignoring them");
    }
    let observe = Observe {
        admin: args.admin.clone(),
        admin_proxy_protocol: args.admin_proxy_protocol,
        stats_every: args.stats_every,
    };
    let out = Printer::stdout()?;
    // --udp with port 0: a port number free for both TCP and UDP.
    let (listen, reserved) = reserve(&args.listen, args.udp)?;
    match args.handler {
        HandlerName::Echo => serve(builder, &listen, &out, Echo, observe.named("echo"), |s| {
            Beside::udp_if(args.udp, s, udp_builder(&args), reserved, Echo)
        }),
        HandlerName::Upper => serve(builder, &listen, &out, Upper::new(), observe.named("upper"), |s| {
            Beside::udp_if(args.udp, s, udp_builder(&args), reserved, Upper::new())
        }),
        HandlerName::Chat => {
            let rate = args.chat_room_rate as u64;
            let chat = Chat::new(args.max_frame)
                .rate_limit(args.chat_rate)
                .room_rate(rate, rate / 2)
                .who_addresses(args.chat_who_addresses);
            let chat = args.cluster.apply(chat)?;
            let chat = match args.accept_unterminated {
                Some(d) => chat.accept_unterminated(d),
                None => chat,
            };
            let chat = Arc::new(chat);
            let observe = observe.named("chat").source(admin::chat_source(Arc::clone(&chat)));
            serve(builder, &listen, &out, Arc::clone(&chat), observe, |s| {
                let beside = Beside::udp_if(args.udp, s, udp_builder(&args), reserved, Arc::clone(&chat))?;
                Ok(if args.console {
                    beside.with_console(console(chat, args.console_nick.clone(), out.clone()))
                } else {
                    beside
                })
            })
        }
        HandlerName::File => {
            if args.udp {
                anyhow::bail!("--udp serves echo, upper and chat; the file handler is TCP only");
            }
            let root = args.root.unwrap_or_default();
            let handler = FileGet::new(&root, args.max_frame)?;
            log::info!("serving files under {}", handler.root().display());
            let observe = observe.named("file").source(admin::file_source(handler.meters()));
            serve(builder, &args.listen, &out, handler, observe, |_| Ok(Beside::none()))
        }
    }
}

/// A flag (or pair) that cannot be used: the message and the usage on
/// stderr, exit status 2.
fn usage_error(kind: ErrorKind, msg: String) -> ! {
    Args::command().error(kind, msg).exit()
}

/// The UDP server's settings from the flags (`--udp-idle`, `--spin`).
fn udp_builder(args: &Args) -> DatagramBuilder {
    DatagramServer::builder().idle_timeout(args.udp_idle).spin(args.spin)
}

/// How long, once the server has stopped, the shutdown report and the lines
/// before it may take to reach a stdout that is not being read.
const FINISH_OUTPUT: Duration = Duration::from_millis(500);

fn serve<H: Handler>(
    builder: ServerBuilder,
    listen: &str,
    out: &Printer,
    handler: H,
    observe: Observing,
    beside: impl FnOnce(&Server) -> anyhow::Result<Beside>,
) -> anyhow::Result<()> {
    // SIGINT/SIGTERM: the first drains (the UDP side too, which shares the
    // TCP server's lifecycle), the second forces.
    let builder = builder.shutdown_on_signals();
    let server = match switchboard::unix_path(listen) {
        Some(path) => builder.start_unix(path?, handler)?,
        None => builder.start(listen, handler)?,
    };
    let mut beside = beside(&server)?;
    out.line(format_args!("listening on {}", server.addr()));
    beside.announce(out)?;
    let observe = match beside.udp_stats() {
        Some(udp) => observe.source(admin::udp_source(udp)),
        None => observe,
    };
    let watch = observe.start(&server, out)?;
    let report = server.wait();
    beside.wait();
    drop(watch);
    // Logged by `wait`; also on stdout, for whoever ran the server (a
    // closed or blocked stdout is no failure: the log has it, and the
    // process exits without waiting for it past FINISH_OUTPUT).
    out.line(report);
    if let Err(e) = out.finish(FINISH_OUTPUT) {
        log::warn!("{e}");
    }
    Ok(())
}
