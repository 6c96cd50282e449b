//! Graceful shutdown: [`ShutdownHandle`] and the [`ShutdownReport`].

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// The server is running.
pub(crate) const RUNNING: u8 = 0;
/// Graceful shutdown: no new connections, existing ones drain.
pub(crate) const DRAINING: u8 = 1;
/// Everything left is closed now.
pub(crate) const FORCING: u8 = 2;

pub(crate) struct ShutdownState {
    phase: AtomicU8,
    started: Mutex<Option<Instant>>,
    wakers: Mutex<Vec<Arc<mio::Waker>>>,
}

impl ShutdownState {
    pub(crate) fn new() -> ShutdownState {
        ShutdownState {
            phase: AtomicU8::new(RUNNING),
            started: Mutex::new(None),
            wakers: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn add_waker(&self, waker: Arc<mio::Waker>) {
        self.wakers.lock().push(waker);
    }

    pub(crate) fn phase(&self) -> u8 {
        self.phase.load(Ordering::Acquire)
    }

    pub(crate) fn started(&self) -> Option<Instant> {
        *self.started.lock()
    }

    fn advance(&self) {
        let next = match self.phase.load(Ordering::Acquire) {
            RUNNING => {
                *self.started.lock() = Some(Instant::now());
                DRAINING
            }
            _ => FORCING,
        };
        self.phase.fetch_max(next, Ordering::AcqRel);
        for w in self.wakers.lock().iter() {
            if let Err(e) = w.wake() {
                log::error!("cannot wake a server thread for shutdown: {e}");
            }
        }
    }
}

/// Starts a server's shutdown from any thread: `Clone + Send + Sync`.
///
/// The first [`shutdown`](ShutdownHandle::shutdown) is graceful: the server
/// stops accepting at once, tells every handler it is draining, keeps serving
/// the frames already sent, closes each connection once its output is flushed
/// and it has been quiet for the quiet period, and force-closes what is left
/// at the grace deadline. A second call force-closes everything at once.
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
    /// Starts a graceful shutdown, or, if one is under way, forces it.
    pub fn shutdown(&self) {
        self.state.advance();
    }

    /// Whether a shutdown has started.
    pub fn is_shutting_down(&self) -> bool {
        self.state.phase() != RUNNING
    }
}

/// How a shutdown went, returned by [`Server::wait`](crate::Server::wait)
/// and logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Connections that closed cleanly after the shutdown began, every reply
    /// delivered.
    pub drained: usize,
    /// Connections force-closed at the grace deadline or by a second signal.
    pub forced: usize,
    /// From the shutdown signal to the last thread joined.
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
