//! `switchboard-server`: runs one of the built-in handlers.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use switchboard::datagram::{DatagramBuilder, DatagramServer};
use switchboard::{Handler, Server, ServerBuilder};
use switchboard_bins::admin::{self, Observe, Observing};
use switchboard_bins::beside::{console, reserve, Beside};
use switchboard_bins::printer::Printer;
use switchboard_bins::server_args::{HandlerConfig, Invocation, RawArgs, ServerConfig, Tool};
use switchboard_bins::threads;
use switchboard_handlers::{Chat, Echo, FileGet, Proxy, Upper};

fn main() -> ExitCode {
    // The logger first: validating the flags may log.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let invocation = RawArgs::from_command_line();
    let config = match invocation {
        Invocation::Tool(Tool::Accounts(cmd)) => return switchboard_bins::accounts::run(cmd),
        Invocation::Serve(config) => config,
    };
    match run(*config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchboard-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Serves the validated configuration (every flag was checked by
/// [`RawArgs::validate`]; what is left to fail is the world: addresses,
/// files, Redis).
fn run(config: ServerConfig) -> anyhow::Result<()> {
    let ServerConfig { common, handler, udp_idle, edge, observe } = config;
    // The core derives the high-water mark from the outbound budget.
    let mut builder = Server::builder()
        .idle_timeout(common.idle_timeout)
        .grace(common.grace)
        .max_outbound(common.max_outbound)
        .max_outbound_total(common.max_outbound_total)
        .spin(common.spin);
    if let Some(n) = common.workers {
        builder = builder.workers(n);
    }
    if let Some(n) = common.max_connections {
        builder = builder.max_connections(n);
    }
    if let Some(mode) = common.unix_mode {
        builder = builder.unix_mode(mode);
    }
    // Chat and file: a partial line quiet this long is a line (the core's
    // framer; a last line at EOF is one anyway).
    if let HandlerConfig::Chat { lines, .. } | HandlerConfig::File { lines, .. } = &handler {
        if let Some(wait) = lines.accept_unterminated {
            builder = builder.accept_unterminated(wait);
        }
    }
    // TLS, PROXY protocol: a certificate or key that cannot be used is one
    // line and exit status 2, like a bad flag.
    let builder = edge.apply(builder).unwrap_or_else(|e| {
        eprintln!("switchboard-server: {e}");
        std::process::exit(2)
    });
    let observe = Observe {
        admin: observe.admin,
        admin_proxy_protocol: observe.admin_proxy_protocol,
        stats_every: observe.stats_every,
    };
    let out = Printer::stdout()?;
    let udp = udp_idle.is_some();
    // --udp with port 0: a port number free for both TCP and UDP.
    let (listen, reserved) = reserve(&common.listen, udp)?;
    // Used only with --udp.
    let udp_settings = || udp_builder(udp_idle.unwrap_or_default(), common.spin);
    let observe = observe.named(handler.name());
    match handler {
        HandlerConfig::Echo => serve(builder, &listen, &out, Echo, observe, |s| {
            Beside::udp_if(udp, s, udp_settings(), reserved, Echo)
        }),
        HandlerConfig::Upper => serve(builder, &listen, &out, Upper::new(), observe, |s| {
            Beside::udp_if(udp, s, udp_settings(), reserved, Upper::new())
        }),
        HandlerConfig::Chat { lines, chat: args } => {
            let rate = args.chat_room_rate as u64;
            let chat = Chat::new(lines.max_frame)
                .rate_limit(args.chat_rate)
                .room_rate(rate, rate / 2)
                .who_addresses(args.chat_who_addresses);
            let chat = args.cluster.apply(chat)?;
            let chat = Arc::new(chat);
            let observe = observe.source(admin::chat_source(Arc::clone(&chat)));
            serve(builder, &listen, &out, Arc::clone(&chat), observe, |s| {
                let beside = Beside::udp_if(udp, s, udp_settings(), reserved, Arc::clone(&chat))?;
                Ok(if args.console {
                    beside.with_console(console(chat, args.console_nick.clone(), out.clone()))
                } else {
                    beside
                })
            })
        }
        HandlerConfig::File { lines, root } => {
            let handler = FileGet::new(&root, lines.max_frame)?;
            log::info!("serving files under {}", handler.root().display());
            let observe = observe.source(admin::file_source(handler.meters()));
            serve(builder, &listen, &out, handler, observe, |_| Ok(Beside::none()))
        }
        HandlerConfig::Proxy { backends, proxy_protocol_out, connect_timeout } => {
            let proxy =
                Proxy::new(backends).proxy_protocol(proxy_protocol_out).connect_timeout(connect_timeout);
            let proxy = Arc::new(proxy);
            let observe = observe.source(admin::proxy_source(Arc::clone(&proxy)));
            serve(builder, &listen, &out, Arc::clone(&proxy), observe, |s| {
                // The destination the PROXY header names.
                if let Some(addr) = s.addr().ip() {
                    proxy.listening_on(addr);
                }
                Ok(Beside::none())
            })
        }
    }
}

/// The UDP server's settings from the flags (`--udp-idle`, `--spin`).
fn udp_builder(idle: Duration, spin: Duration) -> DatagramBuilder {
    DatagramServer::builder().idle_timeout(idle).spin(spin)
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
    let mut server = match switchboard::unix_path(listen) {
        Some(path) => builder.start_unix(path?, handler)?,
        None => builder.start(listen, handler)?,
    };
    let beside = beside(&server)?;
    out.line(format_args!("listening on {}", server.addr()));
    let observe = match beside.udp_stats() {
        Some(udp) => observe.source(admin::udp_source(udp)),
        None => observe,
    };
    // The UDP side, the console, the admin endpoint and the stats line
    // are services of the server: `wait` joins them, and the handler's own
    // threads, before it returns the report.
    beside.start(&mut server, out)?;
    let watch = observe.start(&server, out)?;
    server.beside(watch);
    let report = server.wait();
    threads::check_joined();
    // Logged by `wait`; also on stdout, for whoever ran the server (a
    // closed or blocked stdout is no failure: the log has it, and the
    // process exits without waiting for it past FINISH_OUTPUT).
    out.line(report);
    if let Err(e) = out.finish(FINISH_OUTPUT) {
        log::warn!("{e}");
    }
    Ok(())
}
