//! The server's lifecycle: [`Phase`], the [`ShutdownHandle`] that moves it
//! forward and the [`ShutdownReport`] at the end.

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Where a server is in its life. Phases only move forward:
/// `Running` → `Draining` → `Forcing` → `Stopped` (a phase may be skipped:
/// [`ShutdownHandle::force`] on a running server goes straight to
/// `Forcing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Phase {
    /// Accepting and serving connections.
    Running,
    /// Graceful shutdown: no new connections; existing ones are served until
    /// they are flushed and quiet, or until the grace deadline.
    Draining,
    /// Every connection left is being closed now, without waiting for it.
    Forcing,
    /// The acceptor, the workers and the handshake threads have exited and
    /// been joined; the services beside the server and the handler's own
    /// threads are stopped and joined next, before
    /// [`Server::wait`](crate::Server::wait) returns.
    Stopped,
}

impl Phase {
    fn from_u8(n: u8) -> Phase {
        match n {
            0 => Phase::Running,
            1 => Phase::Draining,
            2 => Phase::Forcing,
            _ => Phase::Stopped,
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Running => "running",
            Phase::Draining => "draining",
            Phase::Forcing => "forcing",
            Phase::Stopped => "stopped",
        })
    }
}

pub(crate) struct ShutdownState {
    phase: AtomicU8,
    started: Mutex<Option<Instant>>,
    wakers: Mutex<Vec<Arc<mio::Waker>>>,
    /// Whether [`Phase::Forcing`] was asked for (a server that drained
    /// reaches `Stopped` without it): read by the datagram side, which may
    /// first look after the TCP side has stopped.
    forced: std::sync::atomic::AtomicBool,
}

impl ShutdownState {
    pub(crate) fn new() -> ShutdownState {
        ShutdownState {
            phase: AtomicU8::new(Phase::Running as u8),
            started: Mutex::new(None),
            wakers: Mutex::new(Vec::new()),
            forced: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub(crate) fn add_waker(&self, waker: Arc<mio::Waker>) {
        self.wakers.lock().push(waker);
    }

    pub(crate) fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Acquire))
    }

    /// Whether a forced shutdown was asked for.
    pub(crate) fn was_forced(&self) -> bool {
        self.forced.load(Ordering::Acquire)
    }

    /// When the shutdown began (the first move out of `Running`).
    pub(crate) fn started(&self) -> Option<Instant> {
        *self.started.lock()
    }

    /// Moves to `to` unless the server is already there or further on;
    /// wakes every server thread when the phase changed.
    pub(crate) fn advance(&self, to: Phase) {
        if to == Phase::Forcing {
            self.forced.store(true, Ordering::Release);
        }
        {
            let mut started = self.started.lock();
            if started.is_none() && to > Phase::Running {
                *started = Some(Instant::now());
            }
        }
        let before = Phase::from_u8(self.phase.fetch_max(to as u8, Ordering::AcqRel));
        if before < to {
            self.wake_all();
        }
    }

    pub(crate) fn wake_all(&self) {
        for w in self.wakers.lock().iter() {
            if let Err(e) = w.wake() {
                log::error!("cannot wake a server thread: {e}");
            }
        }
    }
}

/// Moves a server through its shutdown from any thread: `Clone + Send + Sync`.
///
/// [`drain`](ShutdownHandle::drain) is graceful: the server stops accepting
/// at once, tells every handler it is draining, keeps serving the frames
/// already sent, closes each connection once its output is flushed and it
/// has been quiet for the quiet period, and force-closes what is left at the
/// grace deadline. [`force`](ShutdownHandle::force) closes every connection
/// now, whether or not a drain is under way. Both return at once;
/// [`Server::wait`](crate::Server::wait) returns when the server has
/// stopped. A signal handler typically drains on the first signal and
/// forces on the second.
///
/// ```no_run
/// use switchboard::{handler_fn, Flow, Framing, Phase, Server};
///
/// let echo = handler_fn(Framing::Raw, |data, conn| {
///     conn.send(data);
///     Flow::Continue
/// });
/// let server = Server::builder().start("127.0.0.1:0", echo)?;
/// let handle = server.shutdown_handle();
/// assert_eq!(handle.phase(), Phase::Running);
/// handle.drain();
/// assert_eq!(handle.phase(), Phase::Draining);
/// handle.force();
/// let report = server.wait();
/// assert_eq!(handle.phase(), Phase::Stopped);
/// # Ok::<(), switchboard::StartError>(())
/// ```
#[derive(Clone)]
pub struct ShutdownHandle {
    pub(crate) state: Arc<ShutdownState>,
}

impl fmt::Debug for ShutdownHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShutdownHandle").field("phase", &self.state.phase()).finish()
    }
}

impl ShutdownHandle {
    /// Starts a graceful shutdown ([`Phase::Draining`]). Does nothing if a
    /// shutdown is already under way.
    pub fn drain(&self) {
        self.state.advance(Phase::Draining);
    }

    /// Closes every connection now ([`Phase::Forcing`]), during a drain or
    /// instead of one; the closes count as forced in the report. Does
    /// nothing if the server is already forcing or stopped.
    pub fn force(&self) {
        self.state.advance(Phase::Forcing);
    }

    /// The server's current phase.
    pub fn phase(&self) -> Phase {
        self.state.phase()
    }

    /// Whether a shutdown has started (the phase is past `Running`).
    pub fn is_shutting_down(&self) -> bool {
        self.state.phase() != Phase::Running
    }
}

/// How a shutdown went, returned by [`Server::wait`](crate::Server::wait),
/// logged, and printed by `switchboard-server`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Connections that closed cleanly after the shutdown began, every reply
    /// delivered.
    pub drained: usize,
    /// Connections force-closed at the grace deadline or by
    /// [`ShutdownHandle::force`].
    pub forced: usize,
    /// From the start of the shutdown to the last thread joined.
    pub elapsed: Duration,
}

impl fmt::Display for ShutdownReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "shutdown complete: {} drained, {} forced, in {:.3}s",
            self.drained,
            self.forced,
            self.elapsed.as_secs_f64()
        )
    }
}
