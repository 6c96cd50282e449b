//! What runs beside a server and ends with it: the [`Service`] trait, the
//! group a [`Server`](crate::Server) keeps of them, and [`spawn_service`],
//! a thread that runs until it is told to stop.
//!
//! One lifecycle for everything: a service is added to a running server
//! with [`Server::beside`](crate::Server::beside); when the server's
//! shutdown begins (its acceptor has stopped) every service hears
//! [`draining`](Service::draining); once every connection is closed and
//! every worker joined, every service is told to [`stop`](Service::stop),
//! then each is [joined](Service::join), then the handler's own threads
//! end ([`Handler::stop`](crate::Handler::stop)), and only then does
//! [`Server::wait`](crate::Server::wait) return its report. Dropping the
//! server does the same after forcing the shutdown.

use std::fmt;
use std::io;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

/// Something that runs beside a server (a UDP side, an admin endpoint, an
/// operator console, a sampler thread) and ends with it.
///
/// The server calls, from the thread that runs
/// [`Server::wait`](crate::Server::wait) (or drops the server):
/// 1. [`draining`](Service::draining) once, when the shutdown begins (the
///    acceptor has stopped; connections drain). Keep serving unless there
///    is a reason not to: an admin endpoint answers health checks with 503
///    meanwhile.
/// 2. [`stop`](Service::stop) once, when every connection is closed and
///    every worker joined: ask the service's threads to end, without
///    waiting for them.
/// 3. [`join`](Service::join) once, after every service was told to stop:
///    wait for its threads. The server's report comes after.
///
/// None of them may block on the network or a terminal: a thread that
/// reads something that may never end (a terminal) must poll for its stop.
pub trait Service: Send {
    /// A short name for the logs (`udp`, `admin`, `console`).
    fn name(&self) -> &str;

    /// The server's shutdown has begun. Default: nothing.
    fn draining(&mut self) {}

    /// The server has stopped serving: end now, without waiting.
    fn stop(&mut self);

    /// Waits for the service's threads to end (after [`stop`](Service::stop)).
    fn join(self: Box<Self>);
}

/// Tells a thread started with [`spawn_service`] to end: it is stopped once
/// its service is stopped (or dropped). `Send`, to be moved into the thread.
#[derive(Debug)]
pub struct Stop {
    rx: Receiver<()>,
}

impl Stop {
    /// Whether the thread was told to stop.
    pub fn is_stopped(&self) -> bool {
        matches!(self.rx.try_recv(), Err(crossbeam_channel::TryRecvError::Disconnected))
    }

    /// Waits at most `d`; `true` once the thread was told to stop (at once,
    /// without waiting out `d`).
    pub fn wait(&self, d: Duration) -> bool {
        matches!(self.rx.recv_timeout(d), Err(RecvTimeoutError::Disconnected))
    }
}

/// A [`Service`] that is one thread: [`stop`](Service::stop) tells it
/// through its [`Stop`], [`join`](Service::join) joins it.
pub struct ThreadService {
    name: String,
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for ThreadService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadService")
            .field("name", &self.name)
            .field("running", &self.thread.is_some())
            .finish()
    }
}

/// Runs `body` on a thread named `name` until it returns; `body` is given
/// the [`Stop`] it must watch. Add the result to a server with
/// [`Server::beside`](crate::Server::beside).
///
/// ```no_run
/// use std::time::Duration;
/// use switchboard::{handler_fn, spawn_service, Flow, Framing, Server};
///
/// let echo = handler_fn(Framing::Raw, |data, conn| {
///     conn.send(data);
///     Flow::Continue
/// });
/// let mut server = Server::builder().start("127.0.0.1:0", echo)?;
/// let stats = server.stats_handle();
/// server.beside(spawn_service("sampler", move |stop| {
///     while !stop.wait(Duration::from_secs(1)) {
///         println!("{}", stats.snapshot());
///     }
/// })?);
/// server.wait(); // the sampler has been joined
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn spawn_service(name: &str, body: impl FnOnce(Stop) + Send + 'static) -> io::Result<ThreadService> {
    let (tx, rx) = crossbeam_channel::bounded::<()>(0);
    let thread = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || body(Stop { rx }))
        .map_err(|e| io::Error::new(e.kind(), format!("cannot start thread {name}: {e}")))?;
    Ok(ThreadService { name: name.to_owned(), stop: Some(tx), thread: Some(thread) })
}

impl Service for ThreadService {
    fn name(&self) -> &str {
        &self.name
    }

    fn stop(&mut self) {
        drop(self.stop.take());
    }

    fn join(mut self: Box<Self>) {
        self.end();
    }
}

impl ThreadService {
    fn end(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                log::error!("{}: the thread panicked", self.name);
            }
        }
    }
}

impl Drop for ThreadService {
    fn drop(&mut self) {
        self.end();
    }
}

/// The services of one server, in the order they were added.
#[derive(Default)]
pub(crate) struct Group {
    services: Vec<Box<dyn Service>>,
    draining: bool,
}

impl Group {
    pub(crate) fn add(&mut self, service: Box<dyn Service>) {
        log::debug!("service {} runs beside the server", service.name());
        self.services.push(service);
    }

    pub(crate) fn len(&self) -> usize {
        self.services.len()
    }

    /// Tells every service the shutdown began (once).
    pub(crate) fn draining(&mut self) {
        if std::mem::replace(&mut self.draining, true) {
            return;
        }
        for s in &mut self.services {
            s.draining();
        }
    }

    /// Stops every service, then joins each; the group is empty after.
    pub(crate) fn stop_and_join(&mut self) {
        self.draining();
        for s in &mut self.services {
            s.stop();
        }
        for s in self.services.drain(..) {
            let name = s.name().to_owned();
            s.join();
            log::debug!("service {name} stopped and joined");
        }
    }
}

impl fmt::Debug for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.services.iter().map(|s| s.name())).finish()
    }
}
