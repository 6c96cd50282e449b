//! The settings of a server ([`Config`], checked at start) and what its
//! acceptor and workers share ([`Shared`]): the floor under both, so
//! neither imports the server that starts them.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::clock;
use crate::conn::SlowConsumerPolicy;
use crate::connection::Timeouts;
use crate::err::StartError;
use crate::listener::ListenerConfig;
use crate::pool::{self, BlockingPool};
use crate::shutdown::ShutdownState;
use crate::stats::Counters;
use crate::transport::TransportConfig;

/// The settings of a server, all bounded.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) workers: usize,
    /// The connection limit in force (set at start from the builder and
    /// the descriptor budget).
    pub(crate) max_connections: usize,
    pub(crate) idle_timeout: Duration,
    pub(crate) frame_timeout: Duration,
    pub(crate) grace: Duration,
    pub(crate) quiet: Duration,
    /// Line framing: a partial line quiet this long is a line, and a last
    /// line without its ending at EOF too (`None`: both dropped).
    pub(crate) accept_unterminated: Option<Duration>,
    /// Deferred replies in progress at most per connection.
    pub(crate) max_deferred: usize,
    pub(crate) linger: Duration,
    pub(crate) max_outbound: usize,
    pub(crate) max_outbound_total: usize,
    pub(crate) high_water: usize,
    pub(crate) policy: SlowConsumerPolicy,
    pub(crate) read_buffer: usize,
    pub(crate) backlog: i32,
    /// How long a worker keeps polling without sleeping after socket
    /// events, before it parks in `epoll_wait`.
    pub(crate) spin: Duration,
    /// How busy (per mille of its time) a worker may be before the acceptor
    /// gives new connections to the next one.
    pub(crate) activate_above: u32,
    /// Idle CPU of the machine, in thousandths of a core, needed before a
    /// busy worker's load is given to another.
    pub(crate) idle_to_activate: u32,
    /// Turned-away sockets lingering at once in the acceptor (set at start
    /// from the descriptor reserve); past it they are closed straight away.
    pub(crate) max_lingering: usize,
    /// TLS, PROXY header and their timeout.
    pub(crate) transport: TransportConfig,
    /// `SO_REUSEPORT`, an inherited listener.
    pub(crate) listener: ListenerConfig,
    /// Threads of the blocking pool at most, and jobs waiting for one.
    pub(crate) blocking_threads: usize,
    pub(crate) blocking_queue: usize,
}

/// The most deferred replies in progress per connection, whatever the
/// builder says.
const MAX_DEFERRED: usize = 1024;

/// The most turned-away sockets lingering at once, whatever the budget.
pub(crate) const MAX_LINGERING: usize = 1024;

/// The high-water mark when none is given, or the outbound budget if smaller.
const DEFAULT_HIGH_WATER: usize = 256 << 10;

/// The high-water mark in force for an outbound budget of `max_outbound`
/// bytes: `requested` lowered to the budget (a queue cannot hold more than
/// its budget, so a mark above it would never stop reading), or, when none
/// was asked for, 256 KiB or the budget if smaller. Zero is refused.
pub(crate) fn high_water(requested: Option<usize>, max_outbound: usize) -> Result<usize, StartError> {
    match requested {
        None => Ok(DEFAULT_HIGH_WATER.min(max_outbound)),
        Some(0) => Err(StartError::Config("the high-water mark must be more than zero".into())),
        Some(n) if n > max_outbound => {
            log::warn!(
                "high-water mark {n} B is more than the outbound budget ({max_outbound} B); using {max_outbound} B"
            );
            Ok(max_outbound)
        }
        Some(n) => Ok(n),
    }
}

impl Default for Config {
    fn default() -> Config {
        Config {
            workers: thread::available_parallelism().map_or(2, |n| n.get()),
            max_connections: usize::MAX,
            idle_timeout: Duration::from_secs(300),
            frame_timeout: Duration::from_secs(30),
            grace: Duration::from_secs(30),
            quiet: Duration::from_secs(1),
            accept_unterminated: None,
            max_deferred: 16,
            linger: Duration::from_secs(2),
            max_outbound: 1 << 20,
            max_outbound_total: 256 << 20,
            high_water: DEFAULT_HIGH_WATER,
            policy: SlowConsumerPolicy::Disconnect,
            read_buffer: 64 << 10,
            backlog: 4096,
            spin: Duration::ZERO,
            activate_above: 700,
            idle_to_activate: 500,
            max_lingering: MAX_LINGERING,
            transport: TransportConfig::default(),
            listener: ListenerConfig::default(),
            blocking_threads: pool::DEFAULT_THREADS,
            blocking_queue: pool::DEFAULT_QUEUE,
        }
    }
}

impl Config {
    pub(crate) fn validate(&self) -> Result<(), StartError> {
        let bad = |msg: String| Err(StartError::Config(msg));
        if !(1..=1024).contains(&self.workers) {
            return bad(format!("workers must be 1 to 1024, not {}", self.workers));
        }
        if self.max_connections == 0 {
            return bad("max connections must be at least 1".into());
        }
        for (name, d) in [
            ("idle timeout", self.idle_timeout),
            ("frame timeout", self.frame_timeout),
            ("quiet period", self.quiet),
            ("linger", self.linger),
            ("handshake timeout", self.transport.handshake_timeout),
        ] {
            if d.is_zero() {
                return bad(format!("{name} must be more than zero"));
            }
        }
        if self.max_outbound_total < self.max_outbound {
            return bad(format!(
                "the server-wide outbound budget ({} B) must be at least the per-connection one ({} B)",
                self.max_outbound_total, self.max_outbound
            ));
        }
        if !(0..=1024).contains(&self.transport.handshake_threads) {
            return bad(format!(
                "handshake threads must be 0 to 1024, not {}",
                self.transport.handshake_threads
            ));
        }
        if !(1..=1 << 20).contains(&self.transport.handshake_backlog) {
            return bad(format!(
                "the handshake backlog must be 1 to 1048576, not {}",
                self.transport.handshake_backlog
            ));
        }
        if !(1..=pool::MAX_THREADS).contains(&self.blocking_threads) {
            return bad(format!(
                "blocking threads must be 1 to {}, not {}",
                pool::MAX_THREADS,
                self.blocking_threads
            ));
        }
        if !(1..=pool::MAX_QUEUE).contains(&self.blocking_queue) {
            return bad(format!(
                "the blocking queue must be 1 to {} jobs, not {}",
                pool::MAX_QUEUE,
                self.blocking_queue
            ));
        }
        if self.spin > Duration::from_millis(10) {
            return bad(format!("spin must be at most 10ms, not {:?}", self.spin));
        }
        if self.activate_above > 1000 {
            return bad(format!(
                "activation threshold is per mille: at most 1000, not {}",
                self.activate_above
            ));
        }
        for (name, d) in [
            ("grace", self.grace),
            ("idle timeout", self.idle_timeout),
            ("frame timeout", self.frame_timeout),
            ("quiet period", self.quiet),
            ("linger", self.linger),
            ("handshake timeout", self.transport.handshake_timeout),
        ] {
            if d > clock::MAX_DURATION || Instant::now().checked_add(d).is_none() {
                return bad(format!(
                    "{name} must be at most 100 years ({}s), not {}s",
                    clock::MAX_DURATION.as_secs(),
                    d.as_secs()
                ));
            }
        }
        if self.max_outbound == 0 || self.high_water == 0 {
            return bad("outbound budget and high-water mark must be more than zero".into());
        }
        if self.high_water > self.max_outbound {
            return bad(format!(
                "high-water mark ({} B) must not exceed the outbound budget ({} B)",
                self.high_water, self.max_outbound
            ));
        }
        if !(1..=MAX_DEFERRED).contains(&self.max_deferred) {
            return bad(format!(
                "deferred replies in progress per connection must be 1 to {MAX_DEFERRED}, not {}",
                self.max_deferred
            ));
        }
        if let Some(d) = self.accept_unterminated {
            if d.is_zero() || d >= self.frame_timeout {
                return bad(format!(
                    "the wait before an unterminated line is taken ({d:?}) must be more than zero and \
                     shorter than the frame timeout ({:?})",
                    self.frame_timeout
                ));
            }
        }
        if let Some(mode) = self.listener.unix_mode.filter(|&m| m > 0o777) {
            return bad(format!("a Unix socket's mode is at most 0o777, not {mode:#o}"));
        }
        if !(512..=16 << 20).contains(&self.read_buffer) {
            return bad(format!("read buffer must be 512 B to 16 MiB, not {}", self.read_buffer));
        }
        Ok(())
    }

    /// The limits a worker's sweep checks on each connection.
    pub(crate) fn timeouts(&self) -> Timeouts {
        Timeouts {
            idle: self.idle_timeout,
            frame: self.frame_timeout,
            quiet: self.quiet,
            unterminated: self.accept_unterminated,
        }
    }

    /// How often a worker checks its timeouts.
    pub(crate) fn tick(&self) -> Duration {
        let shortest = self.idle_timeout.min(self.frame_timeout).min(self.quiet).min(self.linger);
        let shortest = shortest.min(self.transport.handshake_timeout);
        let shortest = self.accept_unterminated.map_or(shortest, |d| shortest.min(d));
        (shortest / 4).clamp(Duration::from_millis(5), Duration::from_millis(250))
    }
}

/// What the acceptor and the workers share.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) stats: Arc<Counters>,
    pub(crate) shutdown: Arc<ShutdownState>,
    pub(crate) next_id: AtomicU64,
    pub(crate) acceptor_done: AtomicBool,
    /// Idle CPU of the machine, in thousandths of a core, as busy workers
    /// last read it (0 until one has; `u32::MAX`: the system does not say).
    pub(crate) idle_cpu: std::sync::atomic::AtomicU32,
    /// Where handlers' blocking jobs run: stopped once the workers are done.
    pub(crate) blocking: Arc<BlockingPool>,
}
