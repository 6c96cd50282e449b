//! [`Signals`]: SIGINT and SIGTERM end a server gracefully, the way
//! systemd, Docker and Kubernetes stop a service.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::Mutex;

use crate::shutdown::ShutdownHandle;

/// How long a second signal waits for the forced shutdown before the
/// process exits anyway.
const FORCE_EXIT_AFTER: Duration = Duration::from_secs(2);

/// The exit status of a process ended by a signal before its server ran,
/// or hanging after the second signal (128 + SIGINT, as shells report it).
const EXIT_STATUS: i32 = 130;

/// The process's one signal handler, installed on first use.
static INSTALLED: OnceLock<Arc<State>> = OnceLock::new();

/// The servers a signal shuts down and how many signals came.
#[derive(Default)]
struct State {
    handles: Mutex<Vec<ShutdownHandle>>,
    received: AtomicUsize,
}

impl State {
    fn on_signal(&self) {
        let handles = self.handles.lock().clone();
        if handles.is_empty() {
            log::info!("shutdown signal before the server started; exiting");
            std::process::exit(EXIT_STATUS);
        }
        if self.received.fetch_add(1, Ordering::AcqRel) == 0 {
            log::info!("shutdown signal (SIGINT, SIGTERM or SIGHUP): draining (send again to stop now)");
            handles.iter().for_each(ShutdownHandle::drain);
            return;
        }
        log::warn!("second shutdown signal: closing every connection now");
        handles.iter().for_each(ShutdownHandle::force);
        let spawned = std::thread::Builder::new().name("switchboard-force-exit".into()).spawn(|| {
            std::thread::sleep(FORCE_EXIT_AFTER);
            log::error!("shutdown did not finish after a second signal; exiting");
            std::process::exit(EXIT_STATUS);
        });
        if let Err(e) = spawned {
            log::error!("cannot start the exit timer after a second signal ({e}); exiting now");
            std::process::exit(EXIT_STATUS);
        }
    }
}

/// Why [`Signals::install`] failed: another signal handler (the `ctrlc`
/// crate's, say) was installed in the process first, or the system refused.
#[derive(Debug)]
pub struct SignalError(String);

impl fmt::Display for SignalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot install the SIGINT/SIGTERM handler: {}", self.0)
    }
}

impl std::error::Error for SignalError {}

/// SIGINT (Ctrl-C) and SIGTERM (what `systemctl stop`, `docker stop` and
/// Kubernetes send), and SIGHUP (a closed terminal), handled with the
/// two-signal policy of `switchboard-server`: the first drains every
/// attached server ([`ShutdownHandle::drain`]: stop accepting, let
/// connections finish, force what is left at the grace deadline), so
/// [`Server::wait`](crate::Server::wait) returns the report; the second
/// forces them ([`ShutdownHandle::force`]) and, should anything hang,
/// exits the process 2 s later with status 130. A signal before any server
/// is attached exits at once with status 130.
///
/// Most servers need only
/// [`ServerBuilder::shutdown_on_signals`](crate::ServerBuilder::shutdown_on_signals),
/// which installs the handler and attaches the server. `Signals` itself is
/// for a server started another way (a
/// [`DatagramServer`](crate::datagram::DatagramServer) alone) or for
/// installing the handler before anything else opens descriptors.
///
/// The handler is the process's one: installing it again returns the same
/// one, and every server attached is shut down by the same signal. It runs
/// on a thread of its own (no work in signal context), through the `ctrlc`
/// crate, so it fails if another `ctrlc` handler was installed first.
///
/// ```no_run
/// use switchboard::{handler_fn, Flow, Framing, Server, Signals};
///
/// let signals = Signals::install()?;
/// let echo = handler_fn(Framing::Raw, |data, conn| {
///     conn.send(data);
///     Flow::Continue
/// });
/// let server = Server::builder().start("127.0.0.1:0", echo)?;
/// signals.attach(server.shutdown_handle());
/// println!("{}", server.wait()); // after SIGTERM: the drain's report
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Signals {
    state: Arc<State>,
}

impl fmt::Debug for Signals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signals")
            .field("attached", &self.state.handles.lock().len())
            .field("received", &self.state.received.load(Ordering::Acquire))
            .finish()
    }
}

impl Signals {
    /// Installs the process's handler of SIGINT, SIGTERM and SIGHUP, or
    /// returns the one installed already.
    pub fn install() -> Result<Signals, SignalError> {
        static INSTALLING: Mutex<()> = Mutex::new(());
        let _one_at_a_time = INSTALLING.lock();
        if let Some(state) = INSTALLED.get() {
            return Ok(Signals { state: Arc::clone(state) });
        }
        let state = Arc::new(State::default());
        let on_signal = Arc::clone(&state);
        ctrlc::set_handler(move || on_signal.on_signal()).map_err(|e| SignalError(e.to_string()))?;
        let _ = INSTALLED.set(Arc::clone(&state));
        Ok(Signals { state })
    }

    /// Shuts the server of `handle` down on the next signals. Handles of
    /// servers that have stopped are dropped from the list as new ones come.
    pub fn attach(&self, handle: ShutdownHandle) {
        let mut handles = self.state.handles.lock();
        handles.retain(|h| h.phase() != crate::Phase::Stopped);
        handles.push(handle);
    }
}
