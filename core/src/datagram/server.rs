//! [`DatagramBuilder`] and the running [`DatagramServer`].

use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token, Waker};

use super::batch::{Batch, Flushed};
use super::cookie::Cookies;
use super::gate::Gate;
use super::handler::{DatagramHandler, PeerClose, Reply};
use super::peers::{Admit, Peers};
use super::recv::{Got, Receiver};
use super::sender::{Backlogged, DatagramSender, Queued};
use super::stats::{DatagramStats, DatagramStatsHandle, DgCounters};
use super::MAX_UDP_PAYLOAD;
use crate::clock;
use crate::err::StartError;
use crate::handler::Flow;
use crate::service::Service;
use crate::shutdown::{Phase, ShutdownHandle, ShutdownState};

const SOCKET: Token = Token(0);
const WAKER: Token = Token(1);

/// Datagrams read in one pass before the thread looks at its timers.
const READS_PER_PASS: usize = 1024;

/// The receive buffer asked of the system, so a burst from many peers is
/// not lost while the thread runs callbacks (the system may grant less).
const SOCKET_BUFFER: usize = 4 << 20;

/// Configures and starts a [`DatagramServer`]; every setting is bounded and
/// [`start`](DatagramBuilder::start) checks them.
///
/// ```no_run
/// use std::time::Duration;
/// use switchboard::datagram::{DatagramHandler, DatagramServer, Reply};
/// use switchboard::{handler_fn, Flow, Framing, Server};
///
/// struct Echo;
/// impl DatagramHandler for Echo {
///     type Peer = ();
///     fn open(&self, _: &mut Reply<'_>) {}
///     fn datagram(&self, _: &mut (), data: &[u8], out: &mut Reply<'_>) -> Flow {
///         let _ = out.send(data);
///         Flow::Continue
///     }
/// }
///
/// let mut tcp = Server::builder().start("127.0.0.1:0", handler_fn(Framing::Raw, |d, c| {
///     c.send(d);
///     Flow::Continue
/// }))?;
/// // The same port number over UDP, shut down by the same handle, and
/// // joined by the TCP server's `wait`.
/// let udp = DatagramServer::builder()
///     .idle_timeout(Duration::from_secs(60))
///     .lifecycle(tcp.shutdown_handle())
///     .start(tcp.local_addr(), Echo)?;
/// tcp.beside(udp);
/// tcp.shutdown_handle().drain();
/// tcp.wait();
/// # Ok::<(), switchboard::StartError>(())
/// ```
#[derive(Debug, Clone)]
pub struct DatagramBuilder {
    max_peers: usize,
    per_prefix: Option<usize>,
    idle: Duration,
    max_datagram: usize,
    spin: Duration,
    lifecycle: Option<ShutdownHandle>,
}

impl Default for DatagramBuilder {
    fn default() -> DatagramBuilder {
        DatagramBuilder {
            max_peers: 65_536,
            per_prefix: None,
            idle: Duration::from_secs(300),
            max_datagram: MAX_UDP_PAYLOAD,
            spin: Duration::ZERO,
            lifecycle: None,
        }
    }
}

impl DatagramBuilder {
    /// Peers held at once (default 65,536; 1 to 16,777,216). A datagram from
    /// a new address while the table is full takes the place of the least
    /// recently heard peer (an unproven one if there is one), which is
    /// closed ([`PeerClose::Evicted`]) and counted in
    /// [`DatagramStats::evicted`].
    pub fn max_peers(mut self, n: usize) -> Self {
        self.max_peers = n;
        self
    }

    /// Peers held at once from one source prefix, an IPv4 /24 or an IPv6
    /// /64 (1 to [`max_peers`](DatagramBuilder::max_peers); default a
    /// sixteenth of the table, or 64 peers if that is more, or the whole
    /// table if it is smaller). A datagram from a new address of a prefix
    /// that holds its share is dropped and counted in
    /// [`DatagramStats::peers_refused`], so one network cannot fill the
    /// table with forged sources.
    pub fn max_peers_per_prefix(mut self, n: usize) -> Self {
        self.per_prefix = Some(n);
        self
    }

    fn per_prefix(&self) -> usize {
        self.per_prefix.unwrap_or((self.max_peers / 16).max(64.min(self.max_peers)))
    }

    /// A peer not heard from for this long is closed
    /// ([`PeerClose::Idle`]; default 5 minutes, checked about every quarter
    /// of it, at least every second).
    pub fn idle_timeout(mut self, d: Duration) -> Self {
        self.idle = d;
        self
    }

    /// The largest datagram taken or sent, in bytes (default and maximum
    /// [`MAX_UDP_PAYLOAD`], 65,507). A larger one received is dropped and
    /// counted in [`DatagramStats::oversize`].
    pub fn max_datagram(mut self, bytes: usize) -> Self {
        self.max_datagram = bytes;
        self
    }

    /// After serving datagrams, the thread polls again without sleeping for
    /// this long before it parks (default 0: park at once; at most 10 ms).
    /// A peer that answers within it finds the thread awake, which saves a
    /// wake-up per round trip, at the cost of CPU time after each burst.
    pub fn spin(mut self, d: Duration) -> Self {
        self.spin = d;
        self
    }

    /// Shares the lifecycle of a TCP [`Server`](crate::Server): the same
    /// [`ShutdownHandle`] drains or forces both. Without it the datagram
    /// server has a lifecycle of its own
    /// ([`DatagramServer::shutdown_handle`]).
    pub fn lifecycle(mut self, handle: ShutdownHandle) -> Self {
        self.lifecycle = Some(handle);
        self
    }

    fn validate(&self) -> Result<(), StartError> {
        let bad = |msg: String| Err(StartError::Config(msg));
        if !(1..=1 << 24).contains(&self.max_peers) {
            return bad(format!("max peers must be 1 to 16777216, not {}", self.max_peers));
        }
        if !(1..=self.max_peers).contains(&self.per_prefix()) {
            return bad(format!(
                "max peers per prefix must be 1 to max peers ({}), not {}",
                self.max_peers,
                self.per_prefix()
            ));
        }
        if self.idle.is_zero() || self.idle > clock::MAX_DURATION {
            return bad(format!(
                "udp idle time must be more than zero and at most 100 years, not {:?}",
                self.idle
            ));
        }
        if self.spin > Duration::from_millis(10) {
            return bad(format!("udp spin must be at most 10ms, not {:?}", self.spin));
        }
        if !(1..=MAX_UDP_PAYLOAD).contains(&self.max_datagram) {
            return bad(format!(
                "max datagram must be 1 to {MAX_UDP_PAYLOAD} bytes, not {}",
                self.max_datagram
            ));
        }
        Ok(())
    }

    /// Binds `addr` over UDP and starts the datagram thread.
    pub fn start<A, H>(self, addr: A, handler: H) -> Result<DatagramServer, StartError>
    where
        A: ToSocketAddrs + fmt::Display,
        H: DatagramHandler,
    {
        self.validate()?;
        let socket = bind(&addr)?;
        self.start_socket(socket, handler)
    }

    /// Serves a UDP socket bound already (for example one reserved so that a
    /// TCP server can take the same port number); it is made non-blocking.
    pub fn start_socket<H: DatagramHandler>(
        self,
        socket: UdpSocket,
        handler: H,
    ) -> Result<DatagramServer, StartError> {
        self.validate()?;
        socket.set_nonblocking(true)?;
        if let Err(e) = socket2::SockRef::from(&socket).set_recv_buffer_size(SOCKET_BUFFER) {
            log::debug!("udp: cannot enlarge the receive buffer: {e}");
        }
        let local_addr = socket.local_addr()?;
        let stats = Arc::new(DgCounters::default());
        let send_socket = socket.try_clone()?;
        let mut mio_socket = mio::net::UdpSocket::from_std(socket);
        let poll = Poll::new()?;
        poll.registry().register(&mut mio_socket, SOCKET, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (sender, queued) =
            DatagramSender::new(local_addr, Arc::clone(&waker), self.max_datagram, Arc::clone(&stats));
        let state = match &self.lifecycle {
            Some(h) => Arc::clone(&h.state),
            None => Arc::new(ShutdownState::new()),
        };
        state.add_waker(Arc::clone(&waker));
        let stop = Arc::new(AtomicBool::new(false));
        let cookies = Cookies::new()?;
        let keeps_peers = handler.keeps_peers();
        let looper = Loop {
            handler,
            poll,
            socket: mio_socket,
            send_socket,
            sender: sender.clone(),
            queued,
            peers: Peers::new(self.max_peers, self.per_prefix()),
            keeps_peers,
            cookies,
            refused_log: Every::default(),
            evicted_log: Every::default(),
            batch: Batch::default(),
            stats: Arc::clone(&stats),
            state: Arc::clone(&state),
            stop: Arc::clone(&stop),
            idle: self.idle,
            spin: self.spin,
            max: self.max_datagram,
        };
        let thread = std::thread::Builder::new()
            .name("switchboard-udp".into())
            .spawn(move || looper.run())
            .map_err(|e| {
            StartError::Io(io::Error::new(e.kind(), format!("cannot start thread switchboard-udp: {e}")))
        })?;
        if keeps_peers {
            log::info!(
                "listening on udp {local_addr}, up to {} peers ({} per prefix), idle {:?}",
                self.max_peers,
                self.per_prefix(),
                self.idle
            );
        } else {
            log::info!("listening on udp {local_addr}, stateless (no peer table)");
        }
        Ok(DatagramServer { local_addr, sender, stats, state, stop, waker, thread: Some(thread) })
    }
}

fn bind<A: ToSocketAddrs + fmt::Display>(addr: &A) -> Result<UdpSocket, StartError> {
    use socket2::{Domain, Socket, Type};
    let err = |source| StartError::Bind { addr: format!("udp {addr}"), source };
    let mut last = None;
    for sa in addr.to_socket_addrs().map_err(err)? {
        let attempt = (|| {
            let socket = Socket::new(Domain::for_address(sa), Type::DGRAM, None)?;
            socket.set_nonblocking(true)?;
            if let Err(e) = socket.set_recv_buffer_size(SOCKET_BUFFER) {
                log::debug!("udp: cannot enlarge the receive buffer: {e}");
            }
            socket.bind(&sa.into())?;
            Ok(UdpSocket::from(socket))
        })();
        match attempt {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(err(last.unwrap_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address"))))
}

/// How a datagram server's shutdown went, from [`DatagramServer::wait`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct DatagramReport {
    /// Peers closed by a graceful shutdown (after their `drain`).
    pub drained: usize,
    /// Peers closed by a forced one.
    pub forced: usize,
}

impl fmt::Display for DatagramReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "udp shutdown complete: {} peers drained, {} forced", self.drained, self.forced)
    }
}

/// A running datagram server: one thread on one UDP socket.
///
/// [`wait`](DatagramServer::wait) blocks until its lifecycle (its own
/// [`shutdown_handle`](DatagramServer::shutdown_handle), or the TCP
/// server's given to [`DatagramBuilder::lifecycle`]) leaves
/// [`Phase::Running`]. Dropping it without waiting stops it at once (forced,
/// without touching a shared lifecycle) and joins the thread.
pub struct DatagramServer {
    local_addr: SocketAddr,
    sender: DatagramSender,
    stats: Arc<DgCounters>,
    state: Arc<ShutdownState>,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<DatagramReport>>,
}

impl fmt::Debug for DatagramServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatagramServer")
            .field("local_addr", &self.local_addr)
            .field("phase", &self.state.phase())
            .finish_non_exhaustive()
    }
}

impl DatagramServer {
    /// A builder with the default settings.
    pub fn builder() -> DatagramBuilder {
        DatagramBuilder::default()
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle to send datagrams to any peer from any thread.
    pub fn sender(&self) -> DatagramSender {
        self.sender.clone()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> DatagramStats {
        self.stats.snapshot()
    }

    /// A handle to read the counters from anywhere, after this server is
    /// gone too.
    pub fn stats_handle(&self) -> DatagramStatsHandle {
        DatagramStatsHandle { counters: Arc::clone(&self.stats) }
    }

    /// The handle of the lifecycle this server follows: its own, or the one
    /// given to [`DatagramBuilder::lifecycle`].
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle { state: Arc::clone(&self.state) }
    }

    /// Blocks until the lifecycle has left [`Phase::Running`] and the thread
    /// has closed every peer and ended.
    pub fn wait(mut self) -> DatagramReport {
        let report = self.join();
        log::info!("{report}");
        report
    }

    fn join(&mut self) -> DatagramReport {
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(report)) => report,
            Some(Err(_)) => {
                log::error!("the udp thread panicked");
                DatagramReport::default()
            }
            None => DatagramReport::default(),
        }
    }
}

/// The UDP side as a [`Service`] of a TCP server
/// ([`Server::beside`](crate::Server::beside)): sharing its lifecycle
/// ([`DatagramBuilder::lifecycle`]) it drains with it and has ended, or is
/// ending, by the time the TCP server has stopped; with a lifecycle of its
/// own it is drained then. Joined (its report logged) before the TCP
/// server's report.
impl Service for DatagramServer {
    fn name(&self) -> &str {
        "udp"
    }

    fn stop(&mut self) {
        // A shared lifecycle is already past it: nothing happens.
        self.shutdown_handle().drain();
    }

    fn join(self: Box<Self>) {
        let _ = self.wait();
    }
}

impl Drop for DatagramServer {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.stop.store(true, Ordering::Release);
            if let Err(e) = self.waker.wake() {
                log::error!("cannot wake the udp thread: {e}");
            }
            let _ = self.join();
        }
    }
}

/// The datagram thread's state.
struct Loop<H: DatagramHandler> {
    handler: H,
    poll: Poll,
    socket: mio::net::UdpSocket,
    /// The same socket, for `sendmmsg` (a descriptor of its own).
    send_socket: UdpSocket,
    sender: DatagramSender,
    /// What other threads send, to go out in this thread's batches.
    queued: Queued,
    peers: Peers<H::Peer>,
    /// False for a stateless handler: no table, no `close`.
    keeps_peers: bool,
    cookies: Cookies,
    refused_log: Every,
    evicted_log: Every,
    batch: Batch,
    stats: Arc<DgCounters>,
    state: Arc<ShutdownState>,
    stop: Arc<AtomicBool>,
    idle: Duration,
    spin: Duration,
    max: usize,
}

/// Logs at most once per [`Every::PERIOD`]: what a flood makes happen
/// thousands of times a second is said, with a count, not drowned.
#[derive(Debug, Default)]
struct Every {
    last: Option<Instant>,
}

impl Every {
    const PERIOD: Duration = Duration::from_secs(10);

    fn due(&mut self, now: Instant) -> bool {
        if self.last.is_some_and(|t| now.saturating_duration_since(t) < Every::PERIOD) {
            return false;
        }
        self.last = Some(now);
        true
    }
}

/// Whether a read pass left datagrams in the socket's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backlog {
    /// The queue was empty (the next datagram brings a new edge).
    Empty,
    /// The pass stopped early: read again without waiting for an edge.
    More,
}

/// What the thread does next, decided from the lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Serve,
    Drain,
    Force,
}

impl<H: DatagramHandler> Loop<H> {
    fn next(&self) -> Next {
        if self.stop.load(Ordering::Acquire) {
            return Next::Force;
        }
        match self.state.phase() {
            Phase::Running => Next::Serve,
            Phase::Draining => Next::Drain,
            // A TCP server that drained may have stopped before this thread
            // looked: its peers are drained too, unless a force was asked.
            Phase::Stopped if !self.state.was_forced() => Next::Drain,
            _ => Next::Force,
        }
    }

    fn tick(&self) -> Duration {
        (self.idle / 4).clamp(Duration::from_millis(5), Duration::from_secs(1))
    }

    fn run(mut self) -> DatagramReport {
        let mut events = Events::with_capacity(16);
        let mut recv = Receiver::new(self.max);
        let mut got = Vec::new();
        let mut next_expiry = Instant::now() + self.tick();
        let mut writable_wait = false;
        // Datagrams may still be queued in the socket: a pass stopped at
        // its cap, or for room in the send buffer. No new edge comes for
        // them, so the next pass reads without waiting for one.
        let mut backlog = Backlog::Empty;
        // The socket's interest includes WRITABLE (set while replies wait).
        let mut watching_writable = false;
        // Until then a pass polls without sleeping (see `spin`).
        let mut spin_until: Option<Instant> = None;
        let report = loop {
            match self.next() {
                Next::Serve => {}
                Next::Drain => break self.close_all(true),
                Next::Force => break self.close_all(false),
            }
            let before = Instant::now();
            let timeout = match spin_until {
                _ if backlog == Backlog::More && !writable_wait => Duration::ZERO,
                Some(until) if before < until => Duration::ZERO,
                _ => next_expiry.saturating_duration_since(before),
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    log::error!("udp: poll failed: {e}; stopping");
                    break self.close_all(false);
                }
            }
            let mut readable = false;
            for ev in events.iter() {
                if ev.token() == SOCKET {
                    readable |= ev.is_readable();
                    if ev.is_writable() {
                        writable_wait = false;
                    }
                }
            }
            // While replies wait for room in the send buffer, nothing more
            // is read: the socket's receive buffer holds the rest.
            if readable {
                backlog = Backlog::More;
            }
            if !writable_wait && backlog == Backlog::More {
                backlog = self.read_all(&mut recv, &mut got);
                if !self.spin.is_zero() {
                    spin_until = Some(Instant::now() + self.spin);
                }
            }
            // Sends from other threads join the batch (while it waits for
            // room in the send buffer, they wait in their queue).
            if !writable_wait && self.take_queued() == Backlogged::Yes {
                backlog = Backlog::More;
            }
            if !self.batch.is_empty() && self.batch.flush(&self.send_socket, &self.stats) == Flushed::Blocked
            {
                writable_wait = true;
                if !watching_writable {
                    watching_writable = true;
                    self.interest(Interest::READABLE | Interest::WRITABLE);
                }
            } else {
                writable_wait = false;
                // Back to reading only, once: a system call per pass would
                // cost as much as the datagram it serves.
                if watching_writable {
                    watching_writable = false;
                    self.interest(Interest::READABLE);
                }
            }
            let now = Instant::now();
            if now >= next_expiry {
                self.expire(now);
                next_expiry = now + self.tick();
            }
        };
        // What other threads sent until now goes out too.
        self.sender.close();
        let _ = self.take_queued();
        let _ = self.batch.flush(&self.send_socket, &self.stats);
        report
    }

    /// Moves what other threads (or callbacks) sent through a
    /// [`DatagramSender`] into the batch, as far as it has room.
    fn take_queued(&mut self) -> Backlogged {
        let batch = &mut self.batch;
        self.queued.take(batch.room(), |addr, data| {
            batch.push_owned(addr, data);
        })
    }

    fn interest(&mut self, interest: Interest) {
        if let Err(e) = self.poll.registry().reregister(&mut self.socket, SOCKET, interest) {
            log::error!("udp: cannot change the socket's interest: {e}");
        }
    }

    /// Reads until the socket is empty, at most [`READS_PER_PASS`]
    /// datagrams, many per system call; says whether some may be left.
    fn read_all(&mut self, recv: &mut Receiver, got: &mut Vec<Got>) -> Backlog {
        let mut read = 0;
        while read < READS_PER_PASS {
            match recv.recv(&self.socket, got) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Backlog::Empty,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // An ICMP error of an earlier send (port unreachable) and the like.
                Err(e) => {
                    log::debug!("udp: recv: {e}");
                    read += 1;
                    continue;
                }
            }
            if got.is_empty() {
                return Backlog::Empty;
            }
            read += got.len();
            for (i, g) in got.iter().enumerate() {
                if g.truncated || g.len > self.max {
                    self.stats.oversize.fetch_add(1, Ordering::Relaxed);
                    log::debug!(
                        "udp: a datagram from {} is over the {}-byte limit; dropped",
                        g.from,
                        self.max
                    );
                } else {
                    self.datagram(g.from, recv.data(i, g.len));
                    // What the callback sent through a `DatagramSender` (a
                    // chat line to the room) goes out in order with its
                    // replies.
                    let _ = self.take_queued();
                }
            }
            if self.batch.len() >= 64 && self.batch.flush(&self.send_socket, &self.stats) == Flushed::Blocked
            {
                return Backlog::More;
            }
            if recv.drained_by(got.len()) {
                return Backlog::Empty;
            }
        }
        Backlog::More
    }

    fn datagram(&mut self, from: SocketAddr, data: &[u8]) {
        self.stats.datagrams_in.fetch_add(1, Ordering::Relaxed);
        self.stats.bytes_in.fetch_add(data.len() as u64, Ordering::Relaxed);
        if !self.keeps_peers {
            return self.stateless(from, data);
        }
        let now = Instant::now();
        let handler = &self.handler;
        let flow = match self.peers.heard(&from, now) {
            Some(entry) => {
                entry.gate.received(&from, data.len());
                let mut out = Reply {
                    addr: from,
                    batch: &mut self.batch,
                    sender: &self.sender,
                    draining: false,
                    gate: &mut entry.gate,
                    cookies: &self.cookies,
                    stats: &self.stats,
                    kept: true,
                };
                let state = &mut entry.state;
                catch_unwind(AssertUnwindSafe(|| handler.datagram(state, data, &mut out)))
            }
            None => {
                if !self.admit(from, now) {
                    return;
                }
                self.stats.peers_opened.fetch_add(1, Ordering::Relaxed);
                let handler = &self.handler;
                let mut gate = Gate::default();
                gate.received(&from, data.len());
                let mut out = Reply {
                    addr: from,
                    batch: &mut self.batch,
                    sender: &self.sender,
                    draining: false,
                    gate: &mut gate,
                    cookies: &self.cookies,
                    stats: &self.stats,
                    kept: true,
                };
                let opened = catch_unwind(AssertUnwindSafe(|| {
                    let mut state = handler.open(&mut out);
                    let flow = handler.datagram(&mut state, data, &mut out);
                    (state, flow)
                }));
                match opened {
                    Ok((state, flow)) => {
                        self.peers.insert(from, state, gate, now);
                        self.stats.peers.store(self.peers.len(), Ordering::Release);
                        Ok(flow)
                    }
                    Err(p) => Err(p),
                }
            }
        };
        if self.peers.settle(&from) {
            self.stats.proven.fetch_add(1, Ordering::Relaxed);
            log::debug!("udp: {from} proved it receives there");
        }
        match flow {
            Ok(Flow::Continue) => {}
            Ok(Flow::Close) => self.close(from, PeerClose::Handler),
            Err(_) => {
                self.stats.handler_panics.fetch_add(1, Ordering::Relaxed);
                log::error!("udp: the handler panicked on a datagram from {from}; closing the peer");
                self.close(from, PeerClose::HandlerPanic);
            }
        }
    }

    /// Makes room in the table for `from`, a new address: false if its
    /// prefix holds its share (the datagram is dropped).
    fn admit(&mut self, from: SocketAddr, now: Instant) -> bool {
        match self.peers.admit(&from) {
            Admit::Room => true,
            Admit::Evicted(addr, state) => {
                let n = self.stats.evicted.fetch_add(1, Ordering::Relaxed) + 1;
                if self.evicted_log.due(now) {
                    log::warn!(
                        "udp: the peer table is full ({} peers): {addr}, the least recently heard, \
                         makes room for {from} ({n} evicted so far)",
                        self.peers.len() + 1
                    );
                }
                self.close_state(addr, state, PeerClose::Evicted);
                true
            }
            Admit::PrefixFull(prefix) => {
                let n = self.stats.peers_refused.fetch_add(1, Ordering::Relaxed) + 1;
                if self.refused_log.due(now) {
                    log::warn!(
                        "udp: {prefix} holds its share of the peer table; a datagram from {from} \
                         dropped ({n} refused so far)"
                    );
                }
                false
            }
        }
    }

    /// A stateless handler: a fresh state for one datagram, its budget
    /// that datagram's.
    fn stateless(&mut self, from: SocketAddr, data: &[u8]) {
        let handler = &self.handler;
        let mut gate = Gate::default();
        gate.received(&from, data.len());
        let mut out = Reply {
            addr: from,
            batch: &mut self.batch,
            sender: &self.sender,
            draining: false,
            gate: &mut gate,
            cookies: &self.cookies,
            stats: &self.stats,
            kept: false,
        };
        let served = catch_unwind(AssertUnwindSafe(|| {
            let mut state = handler.open(&mut out);
            handler.datagram(&mut state, data, &mut out)
        }));
        if served.is_err() {
            self.stats.handler_panics.fetch_add(1, Ordering::Relaxed);
            log::error!("udp: the handler panicked on a datagram from {from}");
        }
    }

    fn close(&mut self, addr: SocketAddr, reason: PeerClose) {
        if let Some(state) = self.peers.remove(&addr) {
            self.close_state(addr, state, reason);
        }
    }

    fn close_state(&mut self, addr: SocketAddr, state: H::Peer, reason: PeerClose) {
        let handler = &self.handler;
        if catch_unwind(AssertUnwindSafe(|| handler.close(state, addr, reason))).is_err() {
            self.stats.handler_panics.fetch_add(1, Ordering::Relaxed);
            log::error!("udp: the handler panicked closing {addr}");
        }
        self.stats.peers.store(self.peers.len(), Ordering::Release);
    }

    fn expire(&mut self, now: Instant) {
        for (addr, state) in self.peers.expire(now, self.idle) {
            self.stats.expired.fetch_add(1, Ordering::Relaxed);
            log::debug!("udp: {addr} idle for {:?}; closed", self.idle);
            self.close_state(addr, state, PeerClose::Idle);
        }
    }

    /// The end: every peer gets `drain` (if graceful), its replies are sent,
    /// and it is closed.
    fn close_all(&mut self, graceful: bool) -> DatagramReport {
        let addrs = self.peers.addrs();
        if graceful {
            let handler = &self.handler;
            for addr in &addrs {
                if let Some(entry) = self.peers.get_mut(addr) {
                    let mut out = Reply {
                        addr: *addr,
                        batch: &mut self.batch,
                        sender: &self.sender,
                        draining: true,
                        gate: &mut entry.gate,
                        cookies: &self.cookies,
                        stats: &self.stats,
                        kept: true,
                    };
                    let state = &mut entry.state;
                    if catch_unwind(AssertUnwindSafe(|| handler.drain(state, &mut out))).is_err() {
                        self.stats.handler_panics.fetch_add(1, Ordering::Relaxed);
                        log::error!("udp: the handler panicked draining {addr}");
                    }
                }
            }
            let _ = self.batch.flush(&self.send_socket, &self.stats);
        }
        let reason = if graceful { PeerClose::Drained } else { PeerClose::Forced };
        for addr in &addrs {
            self.close(*addr, reason);
        }
        let n = addrs.len();
        if graceful {
            DatagramReport { drained: n, forced: 0 }
        } else {
            DatagramReport { drained: 0, forced: n }
        }
    }
}
