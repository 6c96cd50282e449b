//! [`ServerBuilder`] and the running [`Server`].

use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::acceptor::Acceptor;
use crate::budget;
use crate::config::{high_water, Config, Shared, MAX_LINGERING};
use crate::conn::SlowConsumerPolicy;
use crate::err::StartError;
use crate::handler::Handler;
use crate::handshakes::{self, Pool};
use crate::listener::{self, Bind, Inherited};
use crate::pool::BlockingPool;
use crate::service::{Group, Service};
use crate::shutdown::{Phase, ShutdownHandle, ShutdownReport, ShutdownState};
use crate::signals::Signals;
use crate::stats::{Counters, Stats, StatsHandle};
use crate::stream::Addr;
use crate::worker::{Worker, WorkerReport};

/// Configures and starts a [`Server`]. Every setting has a bounded default;
/// [`start`](ServerBuilder::start) checks them and returns an error rather
/// than panic.
///
/// At start the server raises the process's soft descriptor limit
/// (`RLIMIT_NOFILE`) to the hard limit and derives its connection budget
/// from it; see [`max_connections`](ServerBuilder::max_connections).
///
/// ```no_run
/// use std::time::Duration;
/// use switchboard::{handler_fn, Flow, Framing, Server};
///
/// let echo_lines = handler_fn(Framing::lines(4096), |line, conn| {
///     conn.send(line);
///     conn.send(b"\n");
///     Flow::Continue
/// });
/// let server = Server::builder()
///     .workers(2)
///     .max_connections(1000)
///     .idle_timeout(Duration::from_secs(60))
///     .start("127.0.0.1:7878", echo_lines)?;
/// println!("listening on {}", server.local_addr());
/// let report = server.wait(); // until a ShutdownHandle is used
/// println!("{report}");
/// # Ok::<(), switchboard::StartError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct ServerBuilder {
    config: Config,
    max_connections: Option<usize>,
    /// The high-water mark asked for, if any ([`ServerBuilder::high_water`]);
    /// `start` derives it from the outbound budget otherwise.
    high_water: Option<usize>,
    probe: Option<StartProbe>,
    signals: bool,
}

impl ServerBuilder {
    /// Shut the server down on SIGINT, SIGTERM and SIGHUP: the first drains
    /// (so [`Server::wait`] returns the report), the second forces. This is
    /// what makes a server graceful under systemd, Docker and Kubernetes,
    /// which stop a service with SIGTERM; see [`Signals`] for the details.
    /// The handler is installed when `start` begins (a failure is
    /// [`StartError::Signals`]) and the server attached once it runs.
    ///
    /// ```no_run
    /// use switchboard::{handler_fn, Flow, Framing, Server};
    ///
    /// let echo = handler_fn(Framing::Raw, |data, conn| {
    ///     conn.send(data);
    ///     Flow::Continue
    /// });
    /// let server = Server::builder().shutdown_on_signals().start("127.0.0.1:7878", echo)?;
    /// println!("{}", server.wait()); // after SIGTERM: the drain's report
    /// # Ok::<(), switchboard::StartError>(())
    /// ```
    pub fn shutdown_on_signals(mut self) -> Self {
        self.signals = true;
        self
    }

    /// Worker threads, each with its own event loop (default: available cores).
    pub fn workers(mut self, n: usize) -> Self {
        self.config.workers = n;
        self
    }

    /// Connections open at once. Past it the acceptor sends the handler's
    /// [`busy_reply`](Handler::busy_reply) and closes; counted in
    /// [`Stats::rejected`].
    ///
    /// The default is what the descriptor limit allows: the soft
    /// `RLIMIT_NOFILE` (raised to the hard limit at start) minus the
    /// descriptors the process holds when `start` begins (at least the 3
    /// standard streams), minus the server's own (4 + 2 per worker:
    /// listener, pollers, wakers, a spare), minus a reserve for handlers'
    /// own descriptors (files, pipes) of max(64, limit / 8), the reserve at
    /// most half of what is left. With `ulimit -n 1024`, 3 descriptors open
    /// and 2 workers that is 1024 − 3 − 8 − 128 = 885. A value above it is
    /// clamped to it with a
    /// warning: more connections than descriptors would fail at the OS, in
    /// the middle of serving, instead of with a busy reply.
    /// [`Server::max_connections`] tells the limit in force.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = Some(n);
        self
    }

    /// Close a connection when no byte has moved either way for this long
    /// (default 5 minutes; at most 100 years, like every duration here).
    pub fn idle_timeout(mut self, d: Duration) -> Self {
        self.config.idle_timeout = d;
        self
    }

    /// Close a connection whose frame stays incomplete this long, however
    /// slowly bytes trickle in: the minimum-progress rule against slowloris
    /// peers (default 30 s).
    pub fn frame_timeout(mut self, d: Duration) -> Self {
        self.config.frame_timeout = d;
        self
    }

    /// How long a graceful shutdown may take before the remaining
    /// connections are force-closed (default 30 s).
    pub fn grace(mut self, d: Duration) -> Self {
        self.config.grace = d;
        self
    }

    /// Deferred replies ([`Conn::defer`](crate::Conn::defer)) in progress at
    /// most per connection (default 16, at most 1024): a client that
    /// pipelines requests answered by blocking work gets them worked on at
    /// once, and its replies still leave in request order. Its frames past
    /// that many wait until one completes (backpressure, never an error).
    /// 1 serves one request at a time, as a server without pipelining.
    pub fn max_deferred(mut self, n: usize) -> Self {
        self.config.max_deferred = n;
        self
    }

    /// With line framing ([`Framing::Lines`](crate::Framing::Lines)), take
    /// a partial line as a whole line once no byte has come for `after`,
    /// and a last line without its ending when the peer closes its side
    /// (default: off; both dropped). For clients that send a request with
    /// no newline and wait for the answer, like the socket tutorials'
    /// (`sock.send(b"get a.txt")`, then `recv`). Off by default because a
    /// line split across TCP segments by a slow link would be cut in two.
    /// It must be shorter than the [frame timeout](ServerBuilder::frame_timeout);
    /// the timeouts are checked every quarter of the shortest of them, so a
    /// partial line is taken `after` to `1.25 × after` after its last byte.
    /// Other framings ignore it.
    pub fn accept_unterminated(mut self, after: Duration) -> Self {
        self.config.accept_unterminated = Some(after);
        self
    }

    /// While draining, a connection closes once its output is flushed and
    /// nothing has arrived from it for this long (default 1 s).
    pub fn quiet_period(mut self, d: Duration) -> Self {
        self.config.quiet = d;
        self
    }

    /// After shutting down its write side, how long a closing connection
    /// reads (and discards) before closing, so the peer never gets a reset
    /// that destroys replies it was sent (default 2 s).
    pub fn linger(mut self, d: Duration) -> Self {
        self.config.linger = d;
        self
    }

    /// The outbound budget per connection in bytes (default 1 MiB): a
    /// [`ConnHandle::send`](crate::ConnHandle::send) past it applies the
    /// slow-consumer policy.
    pub fn max_outbound(mut self, bytes: usize) -> Self {
        self.config.max_outbound = bytes;
        self
    }

    /// The outbound budget of the whole server in bytes (default 256 MiB):
    /// while the bytes queued for all connections together exceed it, a
    /// [`ConnHandle::send`](crate::ConnHandle::send) to a connection that
    /// holds more than its fair share (this budget divided by the open
    /// connections) applies the slow-consumer policy. So peers that do not
    /// read cannot, together, hold more than about this much memory, and
    /// the largest queues are cut first.
    pub fn max_outbound_total(mut self, bytes: usize) -> Self {
        self.config.max_outbound_total = bytes;
        self
    }

    /// After handling socket events, a worker polls again without sleeping
    /// for this long before it parks (default 0: park at once; at most
    /// 10 ms). Spinning saves the wake-up of a request-response load at the
    /// cost of CPU time while idle.
    pub fn spin(mut self, d: Duration) -> Self {
        self.config.spin = d;
        self
    }

    /// New connections go to the first worker (in order) whose event loop
    /// was busy less than this share of the time, in per mille (default
    /// 700): light loads run on one worker and pay no cross-core wake-ups,
    /// and more workers join as load grows. A worker saturated for 100 ms
    /// moves some of its connections to a worker below this threshold (see
    /// [`idle_to_activate`](ServerBuilder::idle_to_activate)). 1000 spreads
    /// connections by count alone and never moves them.
    pub fn activate_above(mut self, per_mille: u32) -> Self {
        self.config.activate_above = per_mille;
        self
    }

    /// How much of the machine's CPU must be idle, in thousandths of a core,
    /// before a busy worker's load is given to the next worker (default
    /// 500: half a core), in each of three 100 ms intervals in a row (a
    /// moment when the scheduler puts two threads on one core is not
    /// room). Where the server shares its cores with other busy
    /// processes, another worker would only take CPU time from the busy one;
    /// 0 activates workers on their own busyness alone.
    pub fn idle_to_activate(mut self, thousandths_of_a_core: u32) -> Self {
        self.config.idle_to_activate = thousandths_of_a_core;
        self
    }

    /// While more than this many bytes are queued for a connection, the
    /// server stops reading from it (default 256 KiB, or the
    /// [outbound budget](ServerBuilder::max_outbound) if smaller). A value
    /// above the outbound budget is lowered to it, with a warning; zero is
    /// an error at [`start`](ServerBuilder::start).
    pub fn high_water(mut self, bytes: usize) -> Self {
        self.high_water = Some(bytes);
        self
    }

    /// What to do with a connection over its outbound budget (default:
    /// disconnect).
    pub fn slow_consumer(mut self, policy: SlowConsumerPolicy) -> Self {
        self.config.policy = policy;
        self
    }

    /// The size of each worker's read buffer (default 64 KiB).
    pub fn read_buffer(mut self, bytes: usize) -> Self {
        self.config.read_buffer = bytes;
        self
    }

    /// Serves TLS (1.2 and 1.3) with this configuration: each connection's
    /// costly first handshake step runs on the handshake pool (see
    /// [`handshake_threads`](ServerBuilder::handshake_threads)), and the
    /// handler opens on its worker once it is done.
    /// [`tls_config_from_pem`](crate::tls_config_from_pem) makes one from
    /// PEM files. Under TLS, file regions are read in bounded chunks and
    /// encrypted instead of `sendfile`d, and a graceful close sends
    /// `close_notify` before the TCP close. (Cargo feature `tls`.)
    #[cfg(feature = "tls")]
    pub fn tls(mut self, config: std::sync::Arc<rustls::ServerConfig>) -> Self {
        self.config.transport.tls = Some(config);
        self
    }

    /// Expects a PROXY protocol header (v1 or v2, at most 4 KiB) first on
    /// every connection, as a load balancer sends it (HAProxy `send-proxy`,
    /// nginx `proxy_protocol on`): the client address it names is the
    /// connection's [`peer_addr`](crate::Conn::peer_addr), in logs and to
    /// the handler. A connection without a valid header within the
    /// [`handshake_timeout`](ServerBuilder::handshake_timeout) is closed
    /// ([`CloseReason::BadProxyHeader`](crate::CloseReason::BadProxyHeader)).
    /// Only for a port that load balancers alone can reach: any client may
    /// send a header.
    pub fn proxy_protocol(mut self, on: bool) -> Self {
        self.config.transport.proxy_protocol = on;
        self
    }

    /// The time a new connection has for its PROXY header and TLS handshake
    /// before it is closed (default 10 s).
    pub fn handshake_timeout(mut self, d: Duration) -> Self {
        self.config.transport.handshake_timeout = d;
        self
    }

    /// Threads of the blocking pool at most (default 512, as tokio's;
    /// 1 to 4,096), where [`Conn::spawn_blocking`](crate::Conn::spawn_blocking)
    /// runs handlers' jobs. They start on demand, when a job finds none
    /// idle, so a server that runs no job has none; they are joined when
    /// the server stops (jobs still running are waited for up to the
    /// [`grace`](ServerBuilder::grace) period; a stuck one is then left
    /// behind, logged). Jobs that mostly wait (a database call) want many;
    /// jobs that burn CPU want about as many as cores.
    pub fn blocking_threads(mut self, n: usize) -> Self {
        self.config.blocking_threads = n;
        self
    }

    /// Jobs waiting for a blocking pool thread at most (default 65,536;
    /// 1 to 4,194,304). Past it [`Conn::spawn_blocking`](crate::Conn::spawn_blocking)
    /// refuses new jobs with [`SpawnError::Busy`](crate::SpawnError::Busy) and
    /// the handler answers at once.
    pub fn blocking_queue(mut self, n: usize) -> Self {
        self.config.blocking_queue = n;
        self
    }

    /// Threads of the TLS handshake pool (default 0: as many as workers).
    /// Under TLS, the costly first step of each handshake (the server's
    /// signature and key exchange) runs there, at a lower priority than the
    /// workers, so a flood of handshakes does not stall the reads and
    /// writes of established connections.
    pub fn handshake_threads(mut self, n: usize) -> Self {
        self.config.transport.handshake_threads = n;
        self
    }

    /// New TLS handshakes waiting for the handshake pool at most (default
    /// 1024); past it a new handshake is refused: the connection is closed
    /// ([`CloseReason::HandshakeRefused`](crate::CloseReason::HandshakeRefused)),
    /// counted in [`Stats::tls_handshakes_refused`] and logged once a
    /// second with the number refused.
    pub fn handshake_backlog(mut self, n: usize) -> Self {
        self.config.transport.handshake_backlog = n;
        self
    }

    /// Binds with `SO_REUSEPORT` (default off): several server processes
    /// started with it share one address and the kernel spreads new
    /// connections over them. A process that drains (SIGTERM) stops
    /// accepting and serves the connections it accepted to their end; the
    /// others keep taking new ones. (Connections still in its accept queue
    /// when it closes the listener are reset by the kernel.)
    pub fn reuse_port(mut self, on: bool) -> Self {
        self.config.listener.reuse_port = on;
        self
    }

    /// Serves `listener`, a socket already listening (handed down by
    /// systemd socket activation or a parent process), instead of binding
    /// the address given to [`start`](ServerBuilder::start), which is then
    /// ignored. `start` fails if the socket is not listening.
    pub fn listener(mut self, listener: std::net::TcpListener) -> Self {
        self.config.listener.inherited = Some(Inherited::Tcp(Arc::new(listener)));
        self
    }

    /// Serves `listener`, a Unix domain socket already listening (systemd
    /// socket activation with `ListenStream=/path`), like
    /// [`listener`](ServerBuilder::listener). Its file is not this server's:
    /// it is left in place on exit, and its mode as it is.
    pub fn unix_listener(mut self, listener: std::os::unix::net::UnixListener) -> Self {
        self.config.listener.inherited = Some(Inherited::Unix(Arc::new(listener)));
        self
    }

    /// The permissions of the Unix socket file [`start_unix`](ServerBuilder::start_unix)
    /// makes (for example `0o660`: the owner and the group may connect),
    /// set before the socket listens; at most `0o777`. Default: what the
    /// process's umask gives.
    pub fn unix_mode(mut self, mode: u32) -> Self {
        self.config.listener.unix_mode = Some(mode);
        self
    }

    /// Test seam: injects start failures and counts the server's threads.
    #[doc(hidden)]
    pub fn probe(mut self, probe: StartProbe) -> Self {
        self.probe = Some(probe);
        self
    }

    /// Binds `addr` (port 0 picks a free port) and starts the acceptor and
    /// the workers. Returns once the server is accepting. On any failure
    /// every thread already started has been stopped and joined.
    pub fn start<A, H>(self, addr: A, handler: H) -> Result<Server, StartError>
    where
        A: ToSocketAddrs + fmt::Display,
        H: Handler,
    {
        let shown = addr.to_string();
        let addrs = match addr.to_socket_addrs() {
            Ok(addrs) => addrs.collect(),
            // Served anyway from a socket handed down.
            Err(_) if self.config.listener.inherited.is_some() => Vec::new(),
            Err(source) => return Err(StartError::Bind { addr: shown, source }),
        };
        self.start_on(Bind::Tcp { addrs, shown }, handler)
    }

    /// Listens on a Unix domain socket at `path` and starts, like
    /// [`start`](ServerBuilder::start). A socket file left there by a
    /// server that is gone (connecting to it is refused) is replaced; one a
    /// server listens on is refused ([`StartError::Bind`], `AddrInUse`), and
    /// so is a file that is no socket. The file gets the
    /// [`unix_mode`](ServerBuilder::unix_mode) and is removed when the
    /// server stops accepting (when it starts to drain, or on drop). Handlers
    /// see each peer's credentials in [`Conn::peer`](crate::Conn::peer).
    pub fn start_unix<P, H>(self, path: P, handler: H) -> Result<Server, StartError>
    where
        P: AsRef<Path>,
        H: Handler,
    {
        self.start_on(Bind::Unix(path.as_ref().to_path_buf()), handler)
    }

    /// Starts on `addr`: [`start`](ServerBuilder::start) for an IP address,
    /// [`start_unix`](ServerBuilder::start_unix) for a Unix socket's path.
    pub fn start_at<H: Handler>(self, addr: &Addr, handler: H) -> Result<Server, StartError> {
        match addr {
            Addr::Ip(a) => self.start(*a, handler),
            Addr::Unix(p) => self.start_unix(p, handler),
        }
    }

    fn start_on<H: Handler>(self, bind: Bind, handler: H) -> Result<Server, StartError> {
        let ServerBuilder { mut config, max_connections, high_water: asked, probe, signals } = self;
        if max_connections == Some(0) {
            return Err(StartError::Config("max connections must be at least 1".into()));
        }
        if config.max_outbound == 0 {
            return Err(StartError::Config("the outbound budget must be more than zero".into()));
        }
        config.high_water = high_water(asked, config.max_outbound)?;
        config.validate()?;
        // Before the budget: the handler's descriptors count in it.
        let signals = if signals { Some(Signals::install().map_err(StartError::Signals)?) } else { None };
        let nofile = budget::raise_nofile();
        let open = budget::open_now();
        let (allowed, reserve) = budget::connection_limit(nofile, open, config.workers);
        if let Some(limit) = nofile {
            // Where the default connection limit comes from, so an operator
            // (and a test) can check it against the descriptor limit.
            log::info!(
                "descriptor limit {limit}: {open} open at start, {} for the server, {reserve} kept for handlers, {allowed} for connections",
                budget::FIXED + budget::PER_WORKER * config.workers
            );
        }
        // Turned-away sockets linger from the reserve: a quarter of it at most.
        config.max_lingering = (reserve / 4).min(MAX_LINGERING);
        config.max_connections = match max_connections {
            Some(n) if n > allowed => {
                log::warn!(
                    "max connections {n} is more than the descriptor limit ({}) allows; using {allowed}",
                    nofile.map_or_else(|| "unlimited".into(), |n| n.to_string())
                );
                allowed
            }
            Some(n) => n,
            None => allowed,
        };
        let listener = listener::listen(&bind, config.backlog, &config.listener)?;
        let local_addr = listener.local_addr()?;
        // Under TLS the busy reply would come before any handshake, as
        // plaintext a TLS client cannot read: such a client is only closed.
        let busy = if config.transport.tls.is_some() { Vec::new() } else { handler.busy_reply() };
        let shutdown = Arc::new(ShutdownState::new());
        let stats = Arc::new(Counters::new(config.workers));
        let shared = Arc::new(Shared {
            stats,
            shutdown: Arc::clone(&shutdown),
            next_id: AtomicU64::new(1),
            acceptor_done: AtomicBool::new(false),
            idle_cpu: std::sync::atomic::AtomicU32::new(0),
            blocking: Arc::new(BlockingPool::new(config.blocking_threads, config.blocking_queue)),
            config,
        });
        let handler = Arc::new(handler);
        // Told once the workers are joined: the handler's own threads end
        // before the report.
        let stop_handler: Box<dyn FnOnce() + Send> = {
            let handler = Arc::clone(&handler);
            Box::new(move || handler.stop())
        };
        let mut links = Vec::new();
        let mut workers = Vec::new();
        for i in 0..shared.config.workers {
            let (worker, link) = Worker::new(i, Arc::clone(&handler), Arc::clone(&shared))?;
            shutdown.add_waker(Arc::clone(&link.mailbox.waker));
            links.push(link);
            workers.push(worker);
        }
        for worker in &mut workers {
            worker.set_peers(links.clone());
        }
        let transport = &shared.config.transport;
        let handshakers = match transport.tls {
            Some(_) => {
                let (pool, rx) = Pool::new(transport.handshake_backlog);
                for worker in &mut workers {
                    worker.set_handshake_pool(pool.clone());
                }
                // The workers hold the pool's only senders: its threads end
                // once the workers have.
                drop(pool);
                let threads = match transport.handshake_threads {
                    0 => shared.config.workers,
                    n => n,
                };
                Some((rx, threads))
            }
            None => None,
        };
        let acceptor = Acceptor::new(listener, links, Arc::clone(&shared), busy)?;
        shutdown.add_waker(acceptor.waker());
        // From here on `threads` owns every thread started: on an early
        // return its drop forces the shutdown and joins them.
        let mut threads = Threads {
            shared: Arc::clone(&shared),
            acceptor: None,
            workers: Vec::new(),
            handshakers: Vec::new(),
            services: Group::default(),
            stop_handler: Some(stop_handler),
        };
        let probe = probe.unwrap_or_default();
        for (i, worker) in workers.into_iter().enumerate() {
            let fail = probe.fail_worker == Some(i);
            let t =
                spawn(format!("switchboard-worker-{i}"), fail, &probe.live_threads, move || worker.run())?;
            threads.workers.push(t);
        }
        // After the workers: a failed start joins these once the workers,
        // which hold the pool's senders, have ended.
        if let Some((rx, n)) = handshakers {
            for i in 0..n {
                let rx = rx.clone();
                let t = spawn(format!("switchboard-handshake-{i}"), false, &probe.live_threads, move || {
                    handshakes::run(rx)
                })?;
                threads.handshakers.push(t);
            }
        }
        let t = spawn("switchboard-acceptor".into(), probe.fail_acceptor, &probe.live_threads, move || {
            acceptor.run()
        })?;
        threads.acceptor = Some(t);
        log::info!(
            "listening on {local_addr} with {} workers, up to {} connections",
            shared.config.workers,
            shared.config.max_connections
        );
        let server = Server { addr: local_addr, shared, threads };
        if let Some(signals) = signals {
            signals.attach(server.shutdown_handle());
        }
        Ok(server)
    }
}

/// Test seam for [`ServerBuilder::probe`]: makes a thread spawn fail in
/// `start` and counts the server threads alive, so a test can show that
/// every failure path joins what it started.
#[doc(hidden)]
#[derive(Debug, Clone, Default)]
pub struct StartProbe {
    /// Spawning the worker with this index fails.
    pub fail_worker: Option<usize>,
    /// Spawning the acceptor fails.
    pub fail_acceptor: bool,
    /// The server threads running now: each adds one as it starts and
    /// takes it back as it ends.
    pub live_threads: Arc<AtomicUsize>,
}

/// Counts a thread as alive while it exists.
struct Alive(Arc<AtomicUsize>);

impl Alive {
    fn new(count: Arc<AtomicUsize>) -> Alive {
        count.fetch_add(1, Ordering::AcqRel);
        Alive(count)
    }
}

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn spawn<T, F>(name: String, fail: bool, live: &Arc<AtomicUsize>, f: F) -> Result<JoinHandle<T>, StartError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let failed =
        |e: io::Error| StartError::Io(io::Error::new(e.kind(), format!("cannot start thread {name}: {e}")));
    if fail {
        return Err(failed(io::Error::other("injected failure")));
    }
    let live = Arc::clone(live);
    thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            let _alive = Alive::new(live);
            f()
        })
        .map_err(failed)
}

/// The server's threads, with one owner: joining them (in
/// [`wait`](Server::wait), or on drop after forcing the shutdown) is the
/// only way they end. The services beside the server and the handler's
/// own threads end here too, after the workers.
struct Threads {
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
    workers: Vec<JoinHandle<WorkerReport>>,
    /// The TLS handshake pool: they end once the workers have.
    handshakers: Vec<JoinHandle<()>>,
    /// What runs beside the server ([`Server::beside`]).
    services: Group,
    /// [`Handler::stop`] of the server's handler, called once.
    stop_handler: Option<Box<dyn FnOnce() + Send>>,
}

impl Threads {
    /// Joins every thread (some shutdown must be under way), marks the
    /// server stopped, then stops and joins the services beside it and the
    /// handler's own threads.
    fn join(&mut self) -> ShutdownReport {
        let mut report = ShutdownReport::default();
        if let Some(a) = self.acceptor.take() {
            if a.join().is_err() {
                log::error!("the acceptor thread panicked");
            }
        }
        // The acceptor ends when the shutdown begins.
        self.services.draining();
        // The workers wait for the acceptor to be done; it is (or it never
        // ran, or it panicked).
        self.shared.acceptor_done.store(true, Ordering::Release);
        self.shared.shutdown.wake_all();
        for w in self.workers.drain(..) {
            match w.join() {
                Ok(r) => {
                    report.drained += r.drained;
                    report.forced += r.forced;
                }
                Err(_) => log::error!("a worker thread panicked"),
            }
        }
        for h in self.handshakers.drain(..) {
            if h.join().is_err() {
                log::error!("a TLS handshake thread panicked");
            }
        }
        self.shared.shutdown.advance(Phase::Stopped);
        // Services first: they may still use the handler (a UDP side of the
        // same chat), whose threads end last.
        self.services.stop_and_join();
        if let Some(stop) = self.stop_handler.take() {
            stop();
        }
        // The workers have waited for the jobs whose replies they drained;
        // what is left is dropped, running jobs end (the handler's stop has
        // told long ones to give up) and their threads join (within the
        // grace period: a stuck job is left behind, logged).
        self.shared.blocking.stop(self.shared.config.grace);
        report.elapsed = self.shared.shutdown.started().map_or(Duration::ZERO, |s| s.elapsed());
        report
    }

    fn running(&self) -> bool {
        self.acceptor.is_some()
            || !self.workers.is_empty()
            || !self.handshakers.is_empty()
            || self.services.len() > 0
            || self.stop_handler.is_some()
    }
}

impl Drop for Threads {
    fn drop(&mut self) {
        if self.running() {
            self.shared.shutdown.advance(Phase::Forcing);
            let _ = self.join();
        }
    }
}

/// A running server: an acceptor thread and a pool of workers.
///
/// [`wait`](Server::wait) blocks until a [`ShutdownHandle`] ends it and
/// returns the [`ShutdownReport`]; meanwhile a [`StatsHandle`] reads the
/// counters from any thread. Dropping a `Server` without waiting forces
/// the shutdown (connections are closed at once) and joins its threads; no
/// thread outlives it.
pub struct Server {
    addr: Addr,
    shared: Arc<Shared>,
    threads: Threads,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.addr)
            .field("workers", &self.threads.workers.len())
            .field("max_connections", &self.shared.config.max_connections)
            .field("phase", &self.shared.shutdown.phase())
            .field("beside", &self.threads.services)
            .finish()
    }
}

impl Server {
    /// A builder with the default settings.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// The TCP address the server listens on (with the real port if 0 was
    /// asked): a convenience for the common TCP server. A server on a Unix
    /// socket has no such address and this returns the unspecified address
    /// `0.0.0.0:0`, which no client can connect to and which binds a random
    /// port on every interface: code that may run on a Unix socket asks
    /// [`addr`](Server::addr) (`addr().ip()` is `None` there).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr.ip().unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Where the server listens: its TCP address, or its Unix socket's path
    /// (displayed `unix:/path`).
    pub fn addr(&self) -> &Addr {
        &self.addr
    }

    /// The connection limit in force: the one asked for, or derived from the
    /// descriptor limit (see [`ServerBuilder::max_connections`]).
    pub fn max_connections(&self) -> usize {
        self.shared.config.max_connections
    }

    /// A handle to shut the server down from anywhere (a signal handler, a
    /// test, another thread).
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle { state: Arc::clone(&self.shared.shutdown) }
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.shared.stats.snapshot()
    }

    /// A handle to read the counters from any thread, also while
    /// [`wait`](Server::wait) runs and after it returned.
    pub fn stats_handle(&self) -> StatsHandle {
        StatsHandle { counters: Arc::clone(&self.shared.stats) }
    }

    /// Starts a graceful shutdown ([`ShutdownHandle::drain`]) and waits for
    /// it ([`wait`](Server::wait)).
    pub fn shutdown(self) -> ShutdownReport {
        self.shutdown_handle().drain();
        self.wait()
    }

    /// Runs `service` beside the server, under its shutdown: it is told
    /// when the shutdown begins, stopped once every worker is joined and
    /// joined before [`wait`](Server::wait) returns (or the server is
    /// dropped). See [`Service`] for the order of the calls.
    pub fn beside(&mut self, service: impl Service + 'static) {
        self.threads.services.add(Box::new(service));
    }

    /// Blocks until the server has shut down (some [`ShutdownHandle`] must
    /// start it) and all its threads are joined: the workers (the phase is
    /// then [`Phase::Stopped`]), the services [`beside`](Server::beside) it,
    /// and the handler's own ([`Handler::stop`]). Returns and logs the
    /// report.
    pub fn wait(mut self) -> ShutdownReport {
        let report = self.threads.join();
        log::info!("{report}");
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn high_water_is_derived_from_the_outbound_budget_and_clamped_to_it() {
        // None asked: 256 KiB, or the budget if smaller.
        assert_eq!(high_water(None, 1 << 20).unwrap(), 256 << 10);
        assert_eq!(high_water(None, 64 << 10).unwrap(), 64 << 10);
        assert_eq!(high_water(None, 1).unwrap(), 1);
        // Asked: kept within the budget, lowered to it above.
        assert_eq!(high_water(Some(16 << 10), 64 << 10).unwrap(), 16 << 10);
        assert_eq!(high_water(Some(64 << 10), 64 << 10).unwrap(), 64 << 10);
        assert_eq!(high_water(Some(1 << 20), 64 << 10).unwrap(), 64 << 10);
        match high_water(Some(0), 64 << 10) {
            Err(StartError::Config(msg)) => assert!(msg.contains("high-water mark"), "{msg}"),
            other => panic!("zero taken: {other:?}"),
        }
    }

    #[test]
    fn a_server_starts_with_a_high_water_mark_above_its_budget() {
        let echo = crate::handler_fn(crate::Framing::Raw, |data, conn| {
            conn.send(data);
            crate::Flow::Continue
        });
        let server = Server::builder()
            .workers(1)
            .max_outbound(8 << 10)
            .high_water(1 << 20)
            .max_outbound_total(1 << 20)
            .start("127.0.0.1:0", echo)
            .expect("the mark is lowered to the budget, not refused");
        server.shutdown();
    }
}
