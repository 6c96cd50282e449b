//! `switchboard-server`'s flags: declared once, in groups by the handlers
//! they apply to, and turned into a [`ServerConfig`] in one validation step
//! (ripgrep's low and high arguments).
//!
//! A flag's owner is the group it is declared in: the flags of
//! [`ChatArgs`] apply to `--handler chat`, those of [`LineArgs`] to chat and
//! file, and so on ([`SCOPES`]). A flag given on the command line to a
//! handler it does not apply to is a usage error (exit 2) naming the
//! handlers it belongs to, never a warning or silently ignored.

use std::path::PathBuf;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, Parser, Subcommand, ValueEnum};

use crate::cli::{
    parse_count, parse_duration, parse_positive_duration, parse_positive_size, parse_size, parse_spin,
    parse_unix_mode, parse_unterminated_wait, parse_workers,
};
use crate::cluster::ClusterArgs;
use crate::edge::EdgeArgs;

/// A multithreaded TCP server: pick a handler, and Switchboard runs the
/// accept loop, the worker pool, the limits and a graceful shutdown
/// (Ctrl-C, SIGTERM or SIGHUP once: drain; twice: stop now).
// The flags as given (the low level); `RawArgs::validate` makes the
// `ServerConfig` the server runs with.
#[derive(Debug, Parser)]
#[command(name = "switchboard-server", version, args_conflicts_with_subcommands = true)]
pub struct RawArgs {
    /// Instead of serving: a tool (`switchboard-server accounts delete NAME ...`).
    #[command(subcommand)]
    pub tool: Option<Tool>,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: CommonArgs,

    #[command(flatten, next_help_heading = "Line handlers (--handler chat, file)")]
    #[allow(missing_docs)]
    pub lines: LineArgs,

    #[command(flatten, next_help_heading = "Chat (--handler chat)")]
    #[allow(missing_docs)]
    pub chat: ChatArgs,

    #[command(flatten, next_help_heading = "File (--handler file)")]
    #[allow(missing_docs)]
    pub file: FileArgs,

    #[command(flatten, next_help_heading = "Proxy (--handler proxy)")]
    #[allow(missing_docs)]
    pub proxy: ProxyArgs,

    #[command(flatten, next_help_heading = "UDP (--handler echo, upper, chat)")]
    #[allow(missing_docs)]
    pub udp: UdpArgs,

    #[command(flatten, next_help_heading = "TLS, PROXY protocol, shared ports (every handler)")]
    #[allow(missing_docs)]
    pub edge: EdgeArgs,

    #[command(flatten, next_help_heading = "Observability (every handler)")]
    #[allow(missing_docs)]
    pub observe: ObserveArgs,
}

/// The built-in handlers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HandlerName {
    /// Every byte back unchanged (binary-safe, no framing).
    Echo,
    /// Text back in Unicode upper case as it arrives (no newline needed).
    Upper,
    /// One chat room: lines go to every other member; /nick, /who, /msg, /help, /quit.
    Chat,
    /// Serves the files under --root: `get NAME` and `list`, length + JSON header + raw bytes.
    File,
    /// Relays every client to a --backend, round robin, bytes both ways unchanged.
    Proxy,
}

impl HandlerName {
    /// The name as `--handler` takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            HandlerName::Echo => "echo",
            HandlerName::Upper => "upper",
            HandlerName::Chat => "chat",
            HandlerName::File => "file",
            HandlerName::Proxy => "proxy",
        }
    }
}

/// What the server binary does besides serving.
#[derive(Debug, Subcommand)]
pub enum Tool {
    /// The chat's accounts (--handler chat with --accounts or --redis).
    #[command(subcommand)]
    Accounts(crate::accounts::AccountsCommand),
}

/// The flags of every handler: where to listen, threads, limits, shutdown.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// The protocol to serve.
    #[arg(long, value_enum, default_value_t = HandlerName::Echo)]
    pub handler: HandlerName,

    /// The address to listen on: HOST:PORT (port 0 picks a free port), or
    /// unix:PATH for a Unix domain socket. A socket file left at PATH by a
    /// server that is gone is replaced; one a server listens on is refused
    /// (exit 1). The file is removed when the server stops accepting. Each
    /// Unix peer's uid, gid and pid are in the debug log (RUST_LOG=debug).
    #[arg(long, default_value = "127.0.0.1:7878", value_name = "ADDR")]
    pub listen: String,

    /// With --listen unix:PATH: the socket file's permissions in octal, as
    /// chmod takes them (660: its owner and group may connect), set before
    /// the server accepts [default: what the umask gives].
    #[arg(long, value_name = "OCTAL", value_parser = parse_unix_mode)]
    pub unix_mode: Option<u32>,

    /// Worker threads, each an event loop over many connections [default: available cores].
    #[arg(long, value_name = "N", value_parser = parse_workers)]
    pub workers: Option<usize>,

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
    pub max_connections: Option<usize>,

    /// After socket events a worker (and the UDP thread) polls again without
    /// sleeping for this long before it parks (at most 10ms; 0: park at once).
    /// Saves wake-ups of request-response loads on dedicated cores, at the cost
    /// of CPU while idle.
    #[arg(long, value_name = "DURATION", value_parser = parse_spin, default_value = "0s")]
    pub spin: Duration,

    /// Close a connection after this long with no bytes either way (e.g. 500ms, 30s, 5m).
    #[arg(long, value_name = "DURATION", value_parser = parse_positive_duration, default_value = "5m")]
    pub idle_timeout: Duration,

    /// On shutdown, how long connections may drain before they are forced closed
    /// (at most 100 years, like every duration).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "30s")]
    pub grace: Duration,

    /// Bytes that may wait for one reader: a chat member past it is cut off as
    /// too slow. Every handler stops reading from a peer whose replies back up
    /// past 256 KiB, or past this if smaller.
    #[arg(long, value_name = "BYTES", value_parser = parse_positive_size, default_value = "1MiB")]
    pub max_outbound: usize,

    /// Bytes that may wait for all readers together: past it, the connections
    /// holding more than their share are cut off first, so peers that do not
    /// read cannot exhaust memory. At least --max-outbound.
    #[arg(long, value_name = "BYTES", value_parser = parse_positive_size, default_value = "256MiB")]
    pub max_outbound_total: usize,
}

/// The flags of the handlers that read lines: chat and file.
#[derive(Debug, Clone, Args)]
pub struct LineArgs {
    /// The largest frame accepted (chat: a line; file: a request line), e.g. 4096 or 64KiB.
    #[arg(long, value_name = "BYTES", value_parser = parse_positive_size, default_value = "4096")]
    pub max_frame: usize,

    /// A partial line that has waited this long with no more bytes is taken
    /// as a complete line, for clients that send `hello` or `get a.txt` with
    /// no newline and wait for the answer (e.g. 200ms; under the 30s frame
    /// timeout). Off by default: a
    /// line split across TCP segments by a slow link would be cut in two. A
    /// last line ended by EOF is answered with or without it.
    #[arg(long, value_name = "DURATION", value_parser = parse_unterminated_wait)]
    pub accept_unterminated: Option<Duration>,
}

/// The chat's own flags.
#[derive(Debug, Clone, Args)]
pub struct ChatArgs {
    /// Lines a second each member may send (bursts of twice that); past it
    /// the server stops reading from the member for a while. 0: no limit.
    #[arg(long, value_name = "LINES", default_value_t = switchboard_handlers::chat::DEFAULT_RATE)]
    pub chat_rate: u32,

    /// Bytes of lines a second the whole room may relay (bursts of half
    /// that); past it a sender is paused, losing nothing. It keeps every member
    /// that reads at that pace within its outbound budget. 0: no limit.
    #[arg(long, value_name = "BYTES", value_parser = parse_size,
          default_value_t = switchboard_handlers::chat::DEFAULT_ROOM_RATE as usize)]
    pub chat_room_rate: usize,

    /// `/who` lists each member with its address, `alice (203.0.113.7:41234)`
    /// (behind --proxy-protocol, the client's; over a Unix socket the
    /// process's credentials, `unix:uid=1000,pid=4242`). Off by default: it tells every
    /// member where the others connect from.
    #[arg(long)]
    pub chat_who_addresses: bool,

    /// The person at this terminal is a member of the room: what they type
    /// goes to the room (or `/msg NAME`), and the room's lines are printed on
    /// stdout after the `listening on` lines. End of input (Ctrl-D) leaves the
    /// room; the server keeps running.
    #[arg(long)]
    pub console: bool,

    /// The console member's nick.
    #[arg(long, value_name = "NAME", default_value = switchboard_handlers::chat::CONSOLE_NICK)]
    pub console_nick: String,

    // Cluster and accounts: --redis, --redis-url-file, --redis-ca,
    // --redis-lease, --redis-queue, --accounts.
    #[command(flatten)]
    #[allow(missing_docs)]
    pub cluster: ClusterArgs,
}

/// The file handler's flags.
#[derive(Debug, Clone, Args)]
pub struct FileArgs {
    /// The folder the file handler serves; nothing outside it is ever sent.
    #[arg(long, value_name = "DIR", required_if_eq("handler", "file"))]
    pub root: Option<PathBuf>,
}

/// The proxy's flags.
#[derive(Debug, Clone, Args)]
pub struct ProxyArgs {
    /// The servers to relay clients to, HOST:PORT or unix:PATH, comma
    /// separated; each new client goes to the next one in turn. A backend
    /// whose connect fails (refused, timed out) is skipped for 2s, doubling
    /// for each failure in a row up to 30s; when every one is down, the one
    /// that failed longest ago is tried. A client whose backend fails is
    /// closed, the reason logged.
    #[arg(long, value_name = "ADDR[,ADDR...]", value_delimiter = ',')]
    pub backend: Vec<String>,

    /// Send a PROXY protocol header first to the backend, naming the client
    /// (the backend expects it: HAProxy's accept-proxy, switchboard-server
    /// --proxy-protocol, nginx's proxy_protocol). A client over a Unix socket
    /// is sent as UNKNOWN (v1) or LOCAL (v2).
    #[arg(long, value_name = "VERSION")]
    pub proxy_protocol_out: Option<ProxyOut>,

    /// How long a backend has to accept a connection before it counts as
    /// failed (e.g. 500ms, 5s).
    #[arg(long, value_name = "DURATION", value_parser = parse_positive_duration, default_value = "5s")]
    pub backend_connect_timeout: Duration,
}

/// `--proxy-protocol-out`'s versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProxyOut {
    /// Version 1: a text line.
    V1,
    /// Version 2: binary.
    V2,
}

impl From<ProxyOut> for switchboard::ProxyVersion {
    fn from(v: ProxyOut) -> switchboard::ProxyVersion {
        match v {
            ProxyOut::V1 => switchboard::ProxyVersion::V1,
            ProxyOut::V2 => switchboard::ProxyVersion::V2,
        }
    }
}

/// Serving the handler over UDP too.
#[derive(Debug, Clone, Args)]
pub struct UdpArgs {
    /// Also serve the handler over UDP on the same port number: a datagram
    /// per message. The second stdout line is then `listening on udp ADDR`.
    #[arg(long)]
    pub udp: bool,

    /// A peer (a chat member) not heard from for this long is forgotten
    /// (the chat announces it as left).
    #[arg(long, value_name = "DURATION", value_parser = parse_positive_duration, default_value = "5m")]
    pub udp_idle: Duration,
}

/// The admin endpoint and the periodic figures.
#[derive(Debug, Clone, Args)]
pub struct ObserveArgs {
    /// Serve HTTP on this address (e.g. 127.0.0.1:9100): /metrics in the
    /// Prometheus text format, /healthz (200 while running, 503 while
    /// draining, 429 when busy), and a live status page at /. It has its own
    /// thread and at most 64 connections, apart from the main port; at most
    /// 32 may wait for their request (2s each), 8 per client address, a
    /// newcomer taking the place of the oldest: silent sockets cannot make
    /// a health check fail.
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<String>,

    /// Expect a PROXY protocol header (v1 or v2) first on every admin
    /// connection, as a load balancer's health checks with send-proxy send
    /// it; the address it names is the one logged and counted per address.
    #[arg(long, requires = "admin")]
    pub admin_proxy_protocol: bool,

    /// Print one line of figures on stdout every DURATION (e.g. 10s): totals,
    /// and the rates over the period.
    #[arg(long, value_name = "DURATION", value_parser = parse_positive_duration)]
    pub stats_every: Option<Duration>,
}

/// A group of flags and the handlers they apply to.
#[derive(Debug, Clone, Copy)]
pub struct Scope {
    /// Adds the group's flags to a command (clap's `Args::augment_args`).
    pub flags: fn(clap::Command) -> clap::Command,
    /// The handlers the group's flags apply to.
    pub handlers: &'static [HandlerName],
}

/// Every handler-specific group of flags and whom it belongs to; a flag
/// outside these groups applies to every handler.
pub const SCOPES: &[Scope] = &[
    Scope { flags: LineArgs::augment_args, handlers: &[HandlerName::Chat, HandlerName::File] },
    Scope { flags: ChatArgs::augment_args, handlers: &[HandlerName::Chat] },
    Scope { flags: FileArgs::augment_args, handlers: &[HandlerName::File] },
    Scope { flags: ProxyArgs::augment_args, handlers: &[HandlerName::Proxy] },
    Scope {
        flags: UdpArgs::augment_args,
        handlers: &[HandlerName::Echo, HandlerName::Upper, HandlerName::Chat],
    },
];

/// Every handler-specific flag (its long name, without `--`) and the
/// handlers it applies to, in declaration order.
pub fn handler_flags() -> Vec<(String, &'static [HandlerName])> {
    let mut flags = Vec::new();
    for scope in SCOPES {
        let group = (scope.flags)(clap::Command::new("group"));
        for arg in group.get_arguments() {
            if let Some(long) = arg.get_long() {
                flags.push((long.to_owned(), scope.handlers));
            }
        }
    }
    flags
}

/// "chat", "chat or file", "echo, upper or chat".
fn list(handlers: &[HandlerName]) -> String {
    match handlers {
        [] => String::new(),
        [one] => one.as_str().to_owned(),
        [rest @ .., last] => {
            let rest: Vec<_> = rest.iter().map(|h| h.as_str()).collect();
            format!("{} or {}", rest.join(", "), last.as_str())
        }
    }
}

/// What the server runs: the validated flags (the high level).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Listening, threads, limits, shutdown.
    pub common: CommonArgs,
    /// The handler and its own settings.
    pub handler: HandlerConfig,
    /// `--udp-idle` when the handler is also served over UDP (`--udp`).
    pub udp_idle: Option<Duration>,
    /// TLS, PROXY protocol, shared ports, inherited listeners.
    pub edge: EdgeArgs,
    /// The admin endpoint and the periodic figures.
    pub observe: ObserveArgs,
}

/// The handler to serve, with the flags that apply to it.
#[derive(Debug, Clone)]
pub enum HandlerConfig {
    /// `--handler echo`.
    Echo,
    /// `--handler upper`.
    Upper,
    /// `--handler chat`.
    Chat {
        /// `--max-frame`, `--accept-unterminated`.
        lines: LineArgs,
        /// The chat's flags; `--console-nick` is a valid nick.
        chat: ChatArgs,
    },
    /// `--handler file`.
    File {
        /// `--max-frame`, `--accept-unterminated`.
        lines: LineArgs,
        /// The folder served.
        root: PathBuf,
    },
    /// `--handler proxy`.
    Proxy {
        /// The backends, resolved, in the order given (at least one).
        backends: Vec<switchboard::Addr>,
        /// `--proxy-protocol-out`.
        proxy_protocol_out: Option<switchboard::ProxyVersion>,
        /// `--backend-connect-timeout`.
        connect_timeout: Duration,
    },
}

impl HandlerConfig {
    /// The handler's name, as `--handler` takes it.
    pub fn name(&self) -> &'static str {
        match self {
            HandlerConfig::Echo => "echo",
            HandlerConfig::Upper => "upper",
            HandlerConfig::Chat { .. } => "chat",
            HandlerConfig::File { .. } => "file",
            HandlerConfig::Proxy { .. } => "proxy",
        }
    }
}

impl RawArgs {
    /// Turns the flags as given into what the server runs with; `given`
    /// are the matches they were parsed from (which flags were on the
    /// command line rather than defaults). The error is a usage error: one
    /// sentence per problem, for exit status 2.
    pub fn validate(self, given: &ArgMatches) -> Result<ServerConfig, String> {
        let handler = self.common.handler;
        let on_command_line = |id: &str| {
            matches!(given.try_contains_id(id), Ok(true))
                && given.value_source(id) == Some(ValueSource::CommandLine)
        };
        let mut problems = Vec::new();
        for scope in SCOPES {
            if scope.handlers.contains(&handler) {
                continue;
            }
            let group = (scope.flags)(clap::Command::new("group"));
            for arg in group.get_arguments() {
                let (Some(long), id) = (arg.get_long(), arg.get_id().as_str()) else { continue };
                if on_command_line(id) {
                    problems.push(format!(
                        "--{long} applies to --handler {}, not {}",
                        list(scope.handlers),
                        handler.as_str()
                    ));
                }
            }
        }
        let unix = match switchboard::unix_path(&self.common.listen) {
            Some(Err(e)) => {
                problems.push(format!("--listen {e}"));
                true
            }
            Some(Ok(_)) => true,
            None => false,
        };
        if self.common.unix_mode.is_some() && !unix {
            problems.push("--unix-mode sets a Unix socket's mode: it needs --listen unix:PATH".into());
        }
        if unix && self.udp.udp {
            problems.push("--udp serves UDP on --listen's port: it cannot go with --listen unix:PATH".into());
        }
        if on_command_line("udp_idle") && !self.udp.udp {
            problems.push("--udp-idle applies with --udp (it is the UDP peers' idle time)".into());
        }
        if self.udp.udp && self.edge.tls_cert.is_some() {
            problems.push("--udp serves plain datagrams (no DTLS): it cannot go with --tls-cert".into());
        }
        if self.udp.udp && self.edge.proxy_protocol {
            problems
                .push("--udp cannot go with --proxy-protocol (a datagram carries no PROXY header)".into());
        }
        let common = self.common;
        if common.max_outbound_total < common.max_outbound {
            problems.push(format!(
                "--max-outbound-total ({} B) must be at least --max-outbound ({} B)",
                common.max_outbound_total, common.max_outbound
            ));
        }
        if handler == HandlerName::Chat
            && self.chat.console
            && !switchboard_handlers::chat::valid_nick(&self.chat.console_nick)
        {
            problems.push(format!(
                "--console-nick {:?} is not 1-32 letters, digits, _ or -",
                self.chat.console_nick
            ));
        }
        let mut backends = Vec::new();
        if handler == HandlerName::Proxy {
            if self.proxy.backend.is_empty() {
                problems.push(
                    "--handler proxy needs --backend HOST:PORT[,HOST:PORT...]: the servers to relay clients to"
                        .into(),
                );
            }
            for b in &self.proxy.backend {
                match switchboard::Addr::parse(b.trim()) {
                    Ok(addr) => backends.push(addr),
                    Err(e) => problems.push(format!("--backend {e}")),
                }
            }
        }
        if !problems.is_empty() {
            return Err(problems.join("\n"));
        }
        if handler != HandlerName::Chat && self.chat.cluster.redis.is_some() {
            // Only from the environment (on the command line it is refused above).
            log::info!("{} is set; only --handler chat uses it", crate::cluster::REDIS_URL_ENV);
        }
        let lines = self.lines;
        let handler = match handler {
            HandlerName::Echo => HandlerConfig::Echo,
            HandlerName::Upper => HandlerConfig::Upper,
            HandlerName::Chat => HandlerConfig::Chat { lines, chat: self.chat },
            // clap requires --root with --handler file.
            HandlerName::File => HandlerConfig::File { lines, root: self.file.root.unwrap_or_default() },
            HandlerName::Proxy => HandlerConfig::Proxy {
                backends,
                proxy_protocol_out: self.proxy.proxy_protocol_out.map(Into::into),
                connect_timeout: self.proxy.backend_connect_timeout,
            },
        };
        Ok(ServerConfig {
            common,
            handler,
            udp_idle: self.udp.udp.then_some(self.udp.udp_idle),
            edge: self.edge,
            observe: self.observe,
        })
    }

    /// Parses the process's command line: a tool to run, or the validated
    /// configuration. A bad flag, value or combination prints the error and
    /// the usage on stderr and exits with status 2.
    pub fn from_command_line() -> Invocation {
        let (raw, matches) = crate::cli::parse_args_and_matches::<RawArgs>();
        if let Some(tool) = raw.tool {
            return Invocation::Tool(tool);
        }
        match raw.validate(&matches) {
            Ok(config) => Invocation::Serve(Box::new(config)),
            Err(why) => crate::cli::usage_error::<RawArgs>(&why),
        }
    }
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Invocation {
    /// Run a tool and exit.
    Tool(Tool),
    /// Serve.
    Serve(Box<ServerConfig>),
}

/// The matches and raw flags of `args` (the program name first), for tests.
pub fn try_parse_from<I, T>(args: I) -> Result<(RawArgs, ArgMatches), clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    use clap::FromArgMatches;
    let matches = RawArgs::command().try_get_matches_from(args)?;
    let raw = RawArgs::from_arg_matches(&matches)?;
    Ok((raw, matches))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate(args: &[&str]) -> Result<ServerConfig, String> {
        let (raw, matches) =
            try_parse_from(std::iter::once("switchboard-server").chain(args.iter().copied()))
                .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        raw.validate(&matches)
    }

    #[test]
    fn every_handler_flag_has_one_owner_group() {
        let flags = handler_flags();
        let names: Vec<&str> = flags.iter().map(|(f, _)| f.as_str()).collect();
        for want in [
            "max-frame",
            "accept-unterminated",
            "chat-rate",
            "console",
            "redis",
            "root",
            "udp",
            "backend",
            "proxy-protocol-out",
            "backend-connect-timeout",
        ] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "a flag in two groups: {names:?}");
        // The common flags are in no group.
        for common in ["listen", "workers", "max-outbound", "admin", "tls-cert", "handler"] {
            assert!(!names.contains(&common), "{common} is handler-specific");
        }
    }

    #[test]
    fn a_flag_of_another_handler_is_refused_naming_its_owner() {
        assert_eq!(
            validate(&["--handler", "file", "--root", "/tmp", "--chat-rate", "5"]).unwrap_err(),
            "--chat-rate applies to --handler chat, not file"
        );
        assert_eq!(
            validate(&["--handler", "echo", "--max-frame", "100"]).unwrap_err(),
            "--max-frame applies to --handler chat or file, not echo"
        );
        assert_eq!(
            validate(&["--handler", "file", "--root", "/tmp", "--udp"]).unwrap_err(),
            "--udp applies to --handler echo, upper or chat, not file"
        );
        // Every problem, one line each.
        let err = validate(&["--handler", "upper", "--root", "/tmp", "--console"]).unwrap_err();
        assert_eq!(err.lines().count(), 2, "{err}");
        // A default is not "given".
        assert!(matches!(validate(&["--handler", "echo"]).unwrap().handler, HandlerConfig::Echo));
    }

    #[test]
    fn the_flags_of_the_handler_are_taken() {
        let config =
            validate(&["--handler", "chat", "--max-frame", "100", "--chat-rate", "7", "--udp"]).unwrap();
        let HandlerConfig::Chat { lines, chat } = config.handler else { panic!("not chat") };
        assert_eq!((lines.max_frame, chat.chat_rate), (100, 7));
        assert_eq!(config.udp_idle, Some(Duration::from_secs(300)));
        let config =
            validate(&["--handler", "file", "--root", "/srv", "--accept-unterminated", "200ms"]).unwrap();
        let HandlerConfig::File { lines, root } = config.handler else { panic!("not file") };
        assert_eq!(
            (lines.accept_unterminated, root),
            (Some(Duration::from_millis(200)), PathBuf::from("/srv"))
        );
        assert_eq!(config.udp_idle, None);
    }

    #[test]
    fn the_proxy_needs_backends_and_takes_its_flags() {
        assert_eq!(
            validate(&["--handler", "proxy"]).unwrap_err(),
            "--handler proxy needs --backend HOST:PORT[,HOST:PORT...]: the servers to relay clients to"
        );
        let err = validate(&["--handler", "proxy", "--backend", "127.0.0.1:1,nowhere"]).unwrap_err();
        assert!(err.starts_with("--backend 'nowhere': not an address (HOST:PORT or unix:PATH)"), "{err}");
        assert_eq!(
            validate(&["--handler", "echo", "--backend", "127.0.0.1:1"]).unwrap_err(),
            "--backend applies to --handler proxy, not echo"
        );
        let config = validate(&[
            "--handler",
            "proxy",
            "--backend",
            "127.0.0.1:7001,unix:/run/b.sock",
            "--proxy-protocol-out",
            "v2",
            "--backend-connect-timeout",
            "750ms",
        ])
        .unwrap();
        let HandlerConfig::Proxy { backends, proxy_protocol_out, connect_timeout } = config.handler else {
            panic!("not proxy")
        };
        assert_eq!(
            backends,
            [
                switchboard::Addr::Ip("127.0.0.1:7001".parse().unwrap()),
                switchboard::Addr::Unix("/run/b.sock".into())
            ]
        );
        assert_eq!(proxy_protocol_out, Some(switchboard::ProxyVersion::V2));
        assert_eq!(connect_timeout, Duration::from_millis(750));
        let config = validate(&["--handler", "proxy", "--backend", "127.0.0.1:7001"]).unwrap();
        let HandlerConfig::Proxy { proxy_protocol_out, connect_timeout, .. } = config.handler else {
            panic!("not proxy")
        };
        assert_eq!((proxy_protocol_out, connect_timeout), (None, Duration::from_secs(5)));
    }

    #[test]
    fn flags_that_cannot_go_together_are_refused() {
        assert!(validate(&["--max-outbound", "2MiB", "--max-outbound-total", "1MiB"])
            .unwrap_err()
            .contains("--max-outbound-total (1048576 B) must be at least --max-outbound (2097152 B)"));
        assert!(validate(&["--handler", "chat", "--console", "--console-nick", "a b"])
            .unwrap_err()
            .contains("--console-nick \"a b\" is not"));
        assert!(validate(&["--udp", "--proxy-protocol"]).unwrap_err().contains("no PROXY header"));
        assert_eq!(
            validate(&["--udp-idle", "1m"]).unwrap_err(),
            "--udp-idle applies with --udp (it is the UDP peers' idle time)"
        );
        assert!(validate(&["--udp-idle", "1m", "--udp"]).is_ok());
    }
}
