//! The acceptor thread: owns the listener, applies the connection limit and
//! hands each socket to the least-loaded worker.
//!
//! It keeps one spare descriptor (`/dev/null`, opened at start). When
//! accepting fails because the process or the system is out of descriptors
//! (`EMFILE`, `ENFILE`), it closes the spare, accepts one client, sends it
//! the busy reply, closes it and reopens the spare, until the backlog is
//! empty: no client is left hanging in the backlog (the libev/nginx trick).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token, Waker};
use rustix::io::Errno;

use crate::admission::Admission;
use crate::config::Shared;
use crate::listener::Listener;
use crate::mailbox::{Mail, WorkerLink};
use crate::shutdown::Phase;
use crate::stats::bump;
use crate::stream::{Peer, Stream};

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const FIRST_REJECTED: usize = 2;
/// How long a rejected socket may linger.
const REJECT_LINGER: Duration = Duration::from_secs(1);
/// Accepts per turn before lingering sockets get a turn.
const ACCEPTS_PER_TURN: usize = 1024;
const BACKOFF_MIN: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

pub(crate) struct Acceptor {
    poll: Poll,
    waker: Arc<Waker>,
    listener: Listener,
    workers: Vec<WorkerLink>,
    shared: Arc<Shared>,
    /// Rejected sockets being closed without a reset, by token.
    rejected: HashMap<usize, (Stream, Instant)>,
    next_token: usize,
    /// While accepting fails for lack of resources: when to retry, and the
    /// current backoff.
    backoff: Option<(Instant, Duration)>,
    /// Rejections not yet logged, and when the last log line was written.
    unlogged_rejections: u64,
    /// Clients turned away for lack of descriptors, not yet logged.
    unlogged_exhausted: u64,
    last_reject_log: Option<Instant>,
    /// What a client the server cannot take gets ([`Handler::busy_reply`]).
    ///
    /// [`Handler::busy_reply`]: crate::Handler::busy_reply
    busy: Vec<u8>,
    /// The descriptor given up to answer a client at `EMFILE`.
    spare: Option<File>,
}

impl Acceptor {
    pub(crate) fn new(
        mut listener: Listener,
        workers: Vec<WorkerLink>,
        shared: Arc<Shared>,
        busy: Vec<u8>,
    ) -> io::Result<Self> {
        let poll = Poll::new()?;
        let spare = open_spare()?;
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        Ok(Acceptor {
            poll,
            waker,
            listener,
            workers,
            shared,
            rejected: HashMap::new(),
            next_token: FIRST_REJECTED,
            backoff: None,
            unlogged_rejections: 0,
            unlogged_exhausted: 0,
            last_reject_log: None,
            busy,
            spare: Some(spare),
        })
    }

    pub(crate) fn waker(&self) -> Arc<Waker> {
        Arc::clone(&self.waker)
    }

    pub(crate) fn run(mut self) {
        let mut events = Events::with_capacity(256);
        let mut accept_now = true;
        loop {
            let timeout =
                if accept_now && self.backoff.is_none() { Some(Duration::ZERO) } else { self.timeout() };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    log::error!("acceptor: poll failed: {e}");
                    std::thread::sleep(BACKOFF_MIN);
                }
                continue;
            }
            if self.shared.shutdown.phase() != Phase::Running {
                break;
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => accept_now = true,
                    WAKER => {}
                    Token(t) => self.linger(t),
                }
            }
            let now = Instant::now();
            let backing_off = self.backoff.is_some_and(|(retry, _)| now < retry);
            if self.backoff.is_some() && !backing_off {
                accept_now = true;
            }
            if accept_now && !backing_off {
                accept_now = self.accept_some();
            }
            self.rejected.retain(|_, (_, until)| *until > now);
            self.log_rejections(now, false);
        }
        // Stop accepting at once: new connects are refused from here on.
        let _ = self.poll.registry().deregister(&mut self.listener);
        self.rejected.clear();
        self.log_rejections(Instant::now(), true);
        drop(self.listener);
        log::info!("stopped accepting; draining connections");
        self.shared.acceptor_done.store(true, Ordering::Release);
        for w in &self.workers {
            let _ = w.mailbox.waker.wake();
        }
    }

    fn timeout(&self) -> Option<Duration> {
        let now = Instant::now();
        let retry = self.backoff.map(|(at, _)| at);
        let linger = self.rejected.values().map(|(_, until)| *until).min();
        // Rejections not yet logged are logged within a second.
        let log = (self.unlogged_rejections + self.unlogged_exhausted > 0)
            .then(|| self.last_reject_log.map_or(now, |t| t + Duration::from_secs(1)));
        [retry, linger, log].into_iter().flatten().min().map(|t| t.saturating_duration_since(now))
    }

    /// Accepts until the backlog is empty, the turn is over or accepting
    /// fails; returns whether to come back at once.
    fn accept_some(&mut self) -> bool {
        for _ in 0..ACCEPTS_PER_TURN {
            match self.listener.accept() {
                Ok((sock, peer)) => {
                    if let Some((_, d)) = self.backoff.take() {
                        log::info!("accepting again (backed off up to {d:?})");
                    }
                    self.dispatch(sock, peer);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if let Some((_, d)) = self.backoff.take() {
                        log::info!("accepting again (backed off up to {d:?})");
                    }
                    return false;
                }
                Err(e) if transient(&e) => {}
                Err(e) if out_of_descriptors(&e) && self.spare.is_some() => match self.turn_away_one() {
                    Spare::TurnedAway => {}
                    Spare::BacklogEmpty => return false,
                    Spare::NoLuck => return self.back_off(&e),
                },
                Err(e) => return self.back_off(&e),
            }
        }
        true
    }

    /// Out of descriptors: gives up the spare to accept one client, tells it
    /// the server is busy, closes it and takes the spare back.
    fn turn_away_one(&mut self) -> Spare {
        self.spare = None;
        let outcome = match self.listener.accept() {
            Ok((mut sock, peer)) => {
                bump(&self.shared.stats.rejected);
                self.unlogged_exhausted += 1;
                log::debug!("{peer}: out of descriptors; turned away");
                let _ = sock.write(&self.busy);
                let _ = sock.shutdown(Shutdown::Write);
                Spare::TurnedAway
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Spare::BacklogEmpty,
            Err(e) if transient(&e) => Spare::TurnedAway,
            Err(_) => Spare::NoLuck,
        };
        match open_spare() {
            Ok(f) => self.spare = Some(f),
            Err(e) => {
                log::warn!("cannot reopen the spare descriptor: {e}");
                return Spare::NoLuck;
            }
        }
        outcome
    }

    /// Accepting fails for want of resources: retry later, backing off.
    /// Returns false (do not come back at once).
    fn back_off(&mut self, e: &io::Error) -> bool {
        bump(&self.shared.stats.accept_errors);
        let delay = match self.backoff {
            None => {
                log::warn!("accept failed: {e}; backing off and retrying");
                BACKOFF_MIN
            }
            Some((_, d)) => (d * 2).min(BACKOFF_MAX),
        };
        self.backoff = Some((Instant::now() + delay, delay));
        if self.spare.is_none() {
            self.spare = open_spare().ok();
        }
        false
    }

    fn dispatch(&mut self, sock: Stream, peer: Peer) {
        let stats = &self.shared.stats;
        if stats.open.load(Ordering::Acquire) >= self.shared.config.max_connections {
            return self.reject(sock);
        }
        if let Err(e) = sock.set_nodelay(true) {
            log::debug!("{peer}: cannot set TCP_NODELAY: {e}");
        }
        let spare = self.shared.idle_cpu.load(Ordering::Relaxed) >= self.shared.config.idle_to_activate;
        let Some(worker) = pick(&self.workers, self.shared.config.activate_above, spare) else {
            return;
        };
        bump(&stats.accepted);
        let admission = Admission::new(&worker.load);
        if worker.mailbox.post(Mail::Conn(sock, peer, admission)).is_err() {
            // (The mail, its admission with it, is dropped: counted off.)
            log::error!("{peer}: a worker has stopped; closing the connection");
            bump(&stats.closed);
        }
    }

    /// Over the limit: one line, shut down writing, read to EOF (bounded)
    /// so the peer sees the line rather than a reset.
    fn reject(&mut self, mut sock: Stream) {
        bump(&self.shared.stats.rejected);
        self.unlogged_rejections += 1;
        let _ = sock.write(&self.busy);
        let _ = sock.shutdown(Shutdown::Write);
        if self.rejected.len() >= self.shared.config.max_lingering {
            return;
        }
        let token = self.next_token;
        self.next_token = if token == usize::MAX - 1 { FIRST_REJECTED } else { token + 1 };
        if self.poll.registry().register(&mut sock, Token(token), Interest::READABLE).is_ok() {
            self.rejected.insert(token, (sock, Instant::now() + REJECT_LINGER));
        }
    }

    fn linger(&mut self, token: usize) {
        let Some((sock, _)) = self.rejected.get_mut(&token) else { return };
        let mut buf = [0u8; 1024];
        loop {
            match sock.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        self.rejected.remove(&token);
    }

    /// One log line per second at most for rejections.
    fn log_rejections(&mut self, now: Instant, force: bool) {
        if self.unlogged_rejections == 0 && self.unlogged_exhausted == 0 {
            return;
        }
        let due = self.last_reject_log.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1));
        if due || force {
            if self.unlogged_rejections > 0 {
                log::warn!(
                    "connection limit ({}) reached: {} connection(s) turned away with the busy reply",
                    self.shared.config.max_connections,
                    self.unlogged_rejections
                );
            }
            if self.unlogged_exhausted > 0 {
                log::warn!(
                    "out of file descriptors: {} connection(s) turned away with the busy reply",
                    self.unlogged_exhausted
                );
            }
            self.unlogged_rejections = 0;
            self.unlogged_exhausted = 0;
            self.last_reject_log = Some(now);
        }
    }
}

/// The worker for a new connection: the first (in order) that is not busy,
/// so that a light load runs on one event loop and more join as load grows
/// (a worker busy past the threshold passes new connections on only while
/// the machine has a spare core for the next one: otherwise waking it would
/// only take CPU from the busy one). When all are busy, the one with the
/// fewest connections.
fn pick(workers: &[WorkerLink], activate_above: u32, spare_core: bool) -> Option<&WorkerLink> {
    if activate_above < 1000 {
        for (i, w) in workers.iter().enumerate() {
            if w.busy.load(Ordering::Relaxed) < activate_above {
                return Some(w);
            }
            if !spare_core {
                // No core for another worker: stay among the active ones.
                return workers[..=i].iter().min_by_key(|w| w.busy.load(Ordering::Relaxed));
            }
        }
    }
    workers.iter().min_by_key(|w| w.load.get())
}

/// What giving up the spare descriptor achieved.
enum Spare {
    /// A client was accepted and turned away (or vanished): try the next.
    TurnedAway,
    /// Nobody was waiting.
    BacklogEmpty,
    /// Still no descriptor: back off.
    NoLuck,
}

/// The spare descriptor.
fn open_spare() -> io::Result<File> {
    File::open("/dev/null")
}

/// The process or the system has no descriptor left.
fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(Errno::from_io_error(e), Some(Errno::MFILE | Errno::NFILE))
}

/// Accept errors that concern one connection only: try the next.
fn transient(e: &io::Error) -> bool {
    if e.kind() == io::ErrorKind::Interrupted || e.kind() == io::ErrorKind::ConnectionAborted {
        return true;
    }
    matches!(Errno::from_io_error(e), Some(Errno::CONNABORTED | Errno::PROTO | Errno::PERM | Errno::INTR))
}
