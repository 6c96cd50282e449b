//! The admin endpoint of `switchboard-server --admin ADDR`: a small HTTP
//! server, itself a Switchboard [`Server`] with one worker and a connection
//! limit of its own, so a flood on it cannot take a worker or a connection
//! slot from the main port.
//!
//! Routes: `GET /metrics` (Prometheus text format), `GET /healthz` (200
//! while running, 503 once draining), `GET /stats.json` (the figures and
//! the last minutes of history, read by the page), `GET /` (a status page
//! that refreshes itself, with no external assets). `HEAD` works on each;
//! other methods get 405, other paths 404. A request is read whole within
//! [`REQUEST_TIMEOUT`] and [`MAX_REQUEST`] bytes, then answered and closed.
//!
//! Sockets that hold the endpoint without asking anything cannot make a
//! health check fail: a request sent at once is answered at once; a
//! connection silent past [`JOIN_AFTER`] takes one of [`MAX_WAITING`]
//! places, [`PER_ADDRESS`] per client address, from the oldest waiting
//! connection of its address or of the address holding the most (which
//! gets `429`). Busy is `429`, never the `503` of draining.
//! [`Admin::start_proxied`] expects a PROXY protocol header first, as
//! behind a load balancer's `send-proxy`; the address it names is the one
//! counted.
//!
//! ```no_run
//! use switchboard::{handler_fn, Flow, Framing, Server};
//! use switchboard_bins::admin::{Admin, View};
//!
//! let echo = handler_fn(Framing::Raw, |data, conn| {
//!     conn.send(data);
//!     Flow::Continue
//! });
//! let server = Server::builder().start("127.0.0.1:0", echo)?;
//! let admin = Admin::start("127.0.0.1:9100", View::new(&server, "echo"))?;
//! println!("metrics on http://{}/metrics", admin.local_addr());
//! server.wait();
//! admin.stop();
//! # Ok::<(), switchboard::StartError>(())
//! ```

mod admission;
mod history;
mod http;
mod json;
mod metrics;
mod shared;
mod ticker;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use switchboard::{spawn_service, Server, Service, ShutdownHandle, StartError, StatsHandle};

use crate::printer::Printer;

pub use admission::{JOIN_AFTER, MAX_WAITING, PER_ADDRESS};
pub use history::{History, Point};
pub use shared::Shared;
pub use ticker::{stats_line, StatsTicker};

/// Connections the admin endpoint holds at once (waiting for their request,
/// new, or being answered or turned away and closing); past it a client
/// gets `429` and is closed. Twice [`MAX_WAITING`]: room for the ones that
/// hold no waiting place.
pub const MAX_CONNECTIONS: usize = 2 * MAX_WAITING;

/// The largest request (request line and headers) the admin endpoint reads;
/// a longer one gets `431`.
pub const MAX_REQUEST: usize = 8 << 10;

/// How long a client has to send its whole request (and, with
/// [`Admin::start_proxied`], its PROXY header); past it, `408`.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether a figure only grows (a counter) or goes up and down (a gauge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only grows; its name ends in `_total`.
    Counter,
    /// Goes up and down.
    Gauge,
}

impl From<switchboard::CounterKind> for Kind {
    fn from(kind: switchboard::CounterKind) -> Kind {
        match kind {
            switchboard::CounterKind::Counter => Kind::Counter,
            switchboard::CounterKind::Gauge => Kind::Gauge,
        }
    }
}

/// One handler-specific figure, as a [`Source`] reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    /// The metric name, `switchboard_` first (counters end in `_total`).
    pub name: &'static str,
    /// One line saying what it counts.
    pub help: &'static str,
    /// Counter or gauge.
    pub kind: Kind,
    /// The value now.
    pub value: u64,
    /// Labels telling the samples of one family apart (`backend="HOST:PORT"`),
    /// empty for a family of one sample. The samples of a family come one
    /// after the other, with the same help and kind.
    pub labels: Vec<(&'static str, String)>,
}

impl Metric {
    /// The sample's name with its labels, as Prometheus writes it:
    /// `name{backend="127.0.0.1:7001"}` (the name alone without labels),
    /// its key in `/stats.json`'s `extra`.
    pub fn series(&self) -> String {
        if self.labels.is_empty() {
            return self.name.to_owned();
        }
        let labels: Vec<String> = self
            .labels
            .iter()
            .map(|(k, v)| {
                format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n"))
            })
            .collect();
        format!("{}{{{}}}", self.name, labels.join(","))
    }
}

/// Reads a handler's own figures when `/metrics` or `/stats.json` is
/// asked for (chat members, file bytes sent, md5 cache hits): typically a
/// closure over an `Arc` the binary kept (see [`Shared`]).
pub type Source = Box<dyn Fn() -> Vec<Metric> + Send + Sync>;

/// What the admin endpoint shows: the main server's counters and phase,
/// and the handler's own figures.
pub struct View {
    stats: StatsHandle,
    shutdown: ShutdownHandle,
    max_connections: usize,
    handler: String,
    started_unix: u64,
    extra: Vec<Source>,
    history: History,
    admission: admission::Admission,
}

impl fmt::Debug for View {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("View").field("handler", &self.handler).field("extra", &self.extra.len()).finish()
    }
}

impl View {
    /// The figures of `server`, which serves `handler` (a name shown on the
    /// page).
    pub fn new(server: &Server, handler: &str) -> View {
        View {
            stats: server.stats_handle(),
            shutdown: server.shutdown_handle(),
            max_connections: server.max_connections(),
            handler: handler.to_owned(),
            started_unix: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            extra: Vec::new(),
            history: History::new(history::KEEP),
            admission: admission::Admission::default(),
        }
    }

    /// Adds a source of handler-specific figures.
    pub fn source(mut self, source: Source) -> View {
        self.extra.push(source);
        self
    }

    /// The handler's own figures now, from every source.
    fn extra_now(&self) -> Vec<Metric> {
        self.extra.iter().flat_map(|s| s()).collect()
    }
}

/// A running admin endpoint; [`stop`](Admin::stop) it after the main
/// server has stopped (dropping it stops it too). `switchboard-server`
/// runs it as a [`Service`] of the main server ([`Watch`]).
pub struct Admin {
    /// Its own server, the history sampler a service beside it.
    server: Option<Server>,
    addr: SocketAddr,
}

impl fmt::Debug for Admin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admin").field("addr", &self.addr).finish()
    }
}

impl Admin {
    /// Binds `addr` and serves `view` there, with one worker,
    /// [`MAX_CONNECTIONS`] connections at most, and a thread that samples
    /// the history once a second.
    pub fn start(addr: &str, view: View) -> Result<Admin, StartError> {
        Admin::launch(addr, view, false)
    }

    /// [`Admin::start`] for a port behind a load balancer that sends the
    /// PROXY protocol (v1 or v2) first on each connection: the client it
    /// names is the one logged and counted against [`PER_ADDRESS`]; a
    /// connection without a valid header within [`REQUEST_TIMEOUT`] is
    /// closed.
    pub fn start_proxied(addr: &str, view: View) -> Result<Admin, StartError> {
        Admin::launch(addr, view, true)
    }

    fn launch(addr: &str, view: View, proxy_protocol: bool) -> Result<Admin, StartError> {
        let view = Arc::new(view);
        view.history.sample(&view.stats);
        let mut server = Server::builder()
            .workers(1)
            .max_connections(MAX_CONNECTIONS)
            .idle_timeout(REQUEST_TIMEOUT * 2)
            .grace(Duration::from_secs(1))
            .quiet_period(Duration::from_millis(100))
            .linger(Duration::from_millis(500))
            .max_outbound(1 << 20)
            .max_outbound_total(MAX_CONNECTIONS << 20)
            .proxy_protocol(proxy_protocol)
            .handshake_timeout(REQUEST_TIMEOUT)
            .start(addr, http::AdminHttp::new(Arc::clone(&view)))?;
        let addr = server.local_addr();
        let sampler = spawn_service("admin-history", move |stop| {
            while !stop.wait(history::EVERY) {
                view.history.sample(&view.stats);
            }
        });
        server.beside(sampler.map_err(StartError::Io)?);
        Ok(Admin { server: Some(server), addr })
    }

    /// The address the endpoint listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes the endpoint's connections now and joins its threads.
    pub fn stop(mut self) {
        self.stop_now();
    }

    /// Starts closing the endpoint's connections, without waiting.
    fn force(&self) {
        if let Some(server) = &self.server {
            server.shutdown_handle().force();
        }
    }

    fn stop_now(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown_handle().force();
            server.wait();
        }
    }
}

impl Drop for Admin {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// What `switchboard-server` was asked to show: `--admin ADDR`
/// (`--admin-proxy-protocol`) and `--stats-every DURATION`.
#[derive(Debug, Clone, Default)]
pub struct Observe {
    /// Where to serve the admin endpoint, if anywhere.
    pub admin: Option<String>,
    /// Whether the admin endpoint expects a PROXY protocol header first.
    pub admin_proxy_protocol: bool,
    /// How often to print a line of figures, if at all.
    pub stats_every: Option<Duration>,
}

impl Observe {
    /// The same, for a server running the handler called `handler`.
    pub fn named(&self, handler: &str) -> Observing {
        Observing { observe: self.clone(), handler: handler.to_owned(), sources: Vec::new() }
    }
}

/// [`Observe`] for one handler, with the handler's own figures.
pub struct Observing {
    observe: Observe,
    handler: String,
    sources: Vec<Source>,
}

impl fmt::Debug for Observing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Observing").field("observe", &self.observe).field("handler", &self.handler).finish()
    }
}

/// The admin endpoint and the stats line of a running server: a
/// [`Service`] of that server (they keep going while it drains, and stop
/// once it has stopped); dropping it stops both too.
#[derive(Debug)]
pub struct Watch {
    admin: Option<Admin>,
    ticker: Option<StatsTicker>,
}

impl Observing {
    /// Adds a source of the handler's own figures.
    pub fn source(mut self, source: Source) -> Observing {
        self.sources.push(source);
        self
    }

    /// Starts what was asked for on `server`; prints `admin on http://ADDR/`
    /// to `out` once the endpoint listens, and the stats lines.
    pub fn start(self, server: &Server, out: &Printer) -> std::io::Result<Watch> {
        let admin = match &self.observe.admin {
            None => None,
            Some(addr) => {
                let view = self.sources.into_iter().fold(View::new(server, &self.handler), View::source);
                let admin = if self.observe.admin_proxy_protocol {
                    Admin::start_proxied(addr, view)
                } else {
                    Admin::start(addr, view)
                };
                let admin = admin.map_err(|e| std::io::Error::other(format!("admin: {e}")))?;
                out.line(format_args!("admin on http://{}/", admin.local_addr()));
                Some(admin)
            }
        };
        let ticker = match self.observe.stats_every {
            None => None,
            Some(every) => Some(StatsTicker::start(server.stats_handle(), every, out.clone())?),
        };
        Ok(Watch { admin, ticker })
    }
}

impl Service for Watch {
    fn name(&self) -> &str {
        "admin"
    }

    fn stop(&mut self) {
        if let Some(ticker) = &mut self.ticker {
            ticker.stop();
        }
        if let Some(admin) = &self.admin {
            admin.force();
        }
    }

    fn join(self: Box<Self>) {
        drop(self);
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        drop(self.ticker.take());
        drop(self.admin.take());
    }
}

/// The chat handler's figures: `switchboard_chat_members`.
pub fn chat_source(chat: Arc<switchboard_handlers::Chat>) -> Source {
    Box::new(move || {
        vec![Metric {
            name: "switchboard_chat_members",
            help: "Members in the chat room now.",
            kind: Kind::Gauge,
            value: chat.members() as u64,
            labels: Vec::new(),
        }]
    })
}

/// The UDP side's figures (`--udp`): datagrams and bytes in and out, what
/// was dropped and why, the peer table.
pub fn udp_source(udp: switchboard::datagram::DatagramStatsHandle) -> Source {
    Box::new(move || {
        let s = udp.snapshot();
        switchboard::datagram::DatagramStats::COUNTERS
            .iter()
            .map(|c| Metric {
                name: c.metric,
                help: c.help,
                kind: Kind::from(c.kind),
                value: s.get(c.name).unwrap_or(0),
                labels: Vec::new(),
            })
            .collect()
    })
}

/// The file handler's figures: file bytes sent, md5 cache hits and sums
/// computed.
pub fn file_source(meters: Arc<switchboard_handlers::file::FileMeters>) -> Source {
    Box::new(move || {
        vec![
            Metric {
                name: "switchboard_file_bytes_sent_total",
                help: "Bytes of files queued to clients (whole files of the gets answered).",
                kind: Kind::Counter,
                value: meters.file_bytes_sent(),
                labels: Vec::new(),
            },
            Metric {
                name: "switchboard_file_md5_cache_hits_total",
                help: "Gets whose md5 came from the cache.",
                kind: Kind::Counter,
                value: meters.md5_cache_hits(),
                labels: Vec::new(),
            },
            Metric {
                name: "switchboard_file_md5_computed_total",
                help: "md5 sums computed (cache misses).",
                kind: Kind::Counter,
                value: meters.md5_computed(),
                labels: Vec::new(),
            },
        ]
    })
}

/// The proxy's figures per backend, each sample labelled
/// `backend="HOST:PORT"` (or `unix:PATH`): connections, open, bytes each
/// way, connect failures, connect time (a sum over the connections), and
/// whether it is up.
pub fn proxy_source(proxy: Arc<switchboard_handlers::Proxy>) -> Source {
    use switchboard_handlers::proxy::BackendStats;
    type Field = fn(&BackendStats) -> u64;
    const FAMILIES: [(&str, &str, Kind, Field); 7] = [
        (
            "switchboard_proxy_backend_connections_total",
            "Clients relayed to the backend (connects that succeeded).",
            Kind::Counter,
            |b| b.connections,
        ),
        (
            "switchboard_proxy_backend_open",
            "Relayed connections to the backend open now.",
            Kind::Gauge,
            |b| b.open,
        ),
        (
            "switchboard_proxy_backend_sent_bytes_total",
            "Bytes from clients relayed to the backend (counted in 64 KiB steps and when a connection ends).",
            Kind::Counter,
            |b| b.bytes_to_backend,
        ),
        (
            "switchboard_proxy_backend_received_bytes_total",
            "Bytes from the backend relayed to clients (counted in 64 KiB steps and when a connection ends).",
            Kind::Counter,
            |b| b.bytes_from_backend,
        ),
        (
            "switchboard_proxy_backend_connect_failures_total",
            "Connects to the backend that failed: refused, timed out or another error.",
            Kind::Counter,
            |b| b.connect_failures,
        ),
        (
            "switchboard_proxy_backend_connect_microseconds_total",
            "The time the backend's successful connects took, summed (divide by connections for the mean).",
            Kind::Counter,
            |b| (b.connect_seconds * 1e6).round() as u64,
        ),
        (
            "switchboard_proxy_backend_up",
            "1 while the backend takes clients, 0 while it is skipped after a failed connect.",
            Kind::Gauge,
            |b| u64::from(b.up),
        ),
    ];
    Box::new(move || {
        let backends = proxy.backend_stats();
        let mut out = Vec::with_capacity(FAMILIES.len() * backends.len());
        for (name, help, kind, field) in FAMILIES {
            for b in &backends {
                out.push(Metric {
                    name,
                    help,
                    kind,
                    value: field(b),
                    labels: vec![("backend", b.addr.clone())],
                });
            }
        }
        out
    })
}

#[cfg(test)]
mod counter_outputs {
    //! Every counter of the table in `core/src/stats.rs` in every output:
    //! `Display`, the stats line, JSON, Prometheus and the test kit's
    //! `key=value` form, each with its own value.

    use switchboard::{LineForm, Stats, WorkerStats};

    /// Every figure set to a value of its own; two workers, each figure
    /// kept per worker split as (value, 1).
    fn numbered() -> (Stats, Vec<WorkerStats>) {
        let (mut s, mut w0, mut w1) = (Stats::default(), WorkerStats::default(), WorkerStats::default());
        for (i, c) in Stats::COUNTERS.iter().enumerate() {
            let v = 1000 + 10 * i as u64;
            assert!(s.set(c.name, v));
            assert_eq!(w0.set(c.name, v - 1), c.per_worker);
            assert_eq!(w1.set(c.name, 1), c.per_worker);
        }
        (s, vec![w0, w1])
    }

    fn value(i: usize) -> u64 {
        1000 + 10 * i as u64
    }

    #[test]
    fn display_shows_every_counter() {
        let (s, _) = numbered();
        let text = s.to_string();
        for (i, c) in Stats::COUNTERS.iter().enumerate() {
            assert!(text.contains(&format!("{} {}", c.label, value(i))), "{}: {text}", c.name);
        }
    }

    #[test]
    fn the_stats_line_shows_every_counter() {
        let (s, _) = numbered();
        // Over 2 s from all zeros: a rate is half the value.
        let line = super::stats_line(&Stats::default(), &s, 2.0);
        for (i, c) in Stats::COUNTERS.iter().enumerate() {
            let unit = if c.unit.is_empty() { String::new() } else { format!(" {}", c.unit) };
            let want = match c.line {
                LineForm::Total => format!(" {} {}{unit}", c.label, value(i)),
                LineForm::Rate => format!(" {} {}{unit}/s", c.label, value(i) / 2),
                LineForm::TotalAndRate => format!(" {} {}{unit} (+{}/s)", c.label, value(i), value(i) / 2),
            };
            assert!(line.contains(&want), "{want:?} not in {line}");
        }
        assert!(line.contains(" panics ") && line.contains(" dropped ") && line.contains(" tls-refused "));
    }

    #[test]
    fn json_has_every_counter_and_every_per_worker_share() {
        let (s, w) = numbered();
        let stats = super::json::stats_object(&s);
        let share = super::json::worker_object(&w[0]);
        for (i, c) in Stats::COUNTERS.iter().enumerate() {
            assert_eq!(stats[c.name].as_u64(), Some(value(i)), "{}", c.name);
            let want = c.per_worker.then(|| value(i) - 1);
            assert_eq!(share.get(c.name).and_then(|v| v.as_u64()), want, "{}", c.name);
        }
        assert_eq!(stats.as_object().unwrap().len(), Stats::COUNTERS.len());
    }

    #[test]
    fn prometheus_has_every_counter_per_worker_where_kept_so() {
        let (s, w) = numbered();
        let mut out = String::new();
        super::metrics::counters(&mut super::metrics::Family { out: &mut out }, &s, &w);
        for (i, c) in Stats::COUNTERS.iter().enumerate() {
            assert!(out.contains(&format!("# HELP {} {}\n", c.metric, c.help)), "{}", c.metric);
            let samples: Vec<String> = if c.per_worker {
                vec![
                    format!("{}{{worker=\"0\"}} {}\n", c.metric, value(i) - 1),
                    format!("{}{{worker=\"1\"}} 1\n", c.metric),
                ]
            } else {
                vec![format!("{} {}\n", c.metric, value(i))]
            };
            for sample in samples {
                assert!(out.contains(&sample), "{sample:?} not in the metrics");
            }
        }
        let parsed = prometheus_parse::Scrape::parse(out.lines().map(|l| Ok(l.to_owned()))).unwrap();
        let families: std::collections::BTreeSet<_> =
            parsed.samples.iter().map(|s| s.metric.as_str()).collect();
        assert_eq!(families.len(), Stats::COUNTERS.len());
    }

    #[test]
    fn the_udp_source_has_every_udp_counter() {
        use switchboard::datagram::{DatagramServer, DatagramStats};
        let udp = DatagramServer::builder().start("127.0.0.1:0", switchboard_handlers::Echo).unwrap();
        let metrics = super::udp_source(udp.stats_handle())();
        assert_eq!(metrics.len(), DatagramStats::COUNTERS.len());
        for c in DatagramStats::COUNTERS {
            let m = metrics.iter().find(|m| m.name == c.metric).unwrap_or_else(|| panic!("{}", c.metric));
            assert_eq!((m.help, m.kind, m.value), (c.help, super::Kind::from(c.kind), 0), "{}", c.metric);
        }
        udp.shutdown_handle().force();
        udp.wait();
    }

    #[test]
    fn the_proxy_source_has_every_figure_once_per_backend_labelled() {
        let backends = ["127.0.0.1:7001", "unix:/run/b.sock"].map(|a| switchboard::Addr::parse(a).unwrap());
        let proxy = std::sync::Arc::new(switchboard_handlers::Proxy::new(backends.to_vec()));
        let metrics = super::proxy_source(proxy)();
        assert_eq!(metrics.len(), 7 * 2);
        // Family by family, each backend's sample one after the other.
        for pair in metrics.chunks(2) {
            assert_eq!(pair[0].name, pair[1].name);
            assert!(pair[0].name.starts_with("switchboard_proxy_backend_"), "{}", pair[0].name);
            assert_eq!(
                pair[0].name.ends_with("_total"),
                pair[0].kind == super::Kind::Counter,
                "{}",
                pair[0].name
            );
        }
        let series: Vec<String> = metrics.iter().take(2).map(|m| m.series()).collect();
        assert_eq!(
            series,
            [
                r#"switchboard_proxy_backend_connections_total{backend="127.0.0.1:7001"}"#,
                r#"switchboard_proxy_backend_connections_total{backend="unix:/run/b.sock"}"#
            ]
        );
        let up: Vec<u64> =
            metrics.iter().filter(|m| m.name == "switchboard_proxy_backend_up").map(|m| m.value).collect();
        assert_eq!(up, [1, 1]);
        assert!(metrics.iter().filter(|m| m.name != "switchboard_proxy_backend_up").all(|m| m.value == 0));
    }

    #[test]
    fn the_test_kits_key_value_form_round_trips_every_counter() {
        let (s, _) = numbered();
        let text = switchboard_test_support::test_server::format_stats(&s);
        for c in Stats::COUNTERS {
            assert!(text.contains(&format!("{}=", c.name)), "{}: {text}", c.name);
        }
        assert_eq!(switchboard_test_support::test_server::parse_stats(&text), s);
    }
}
