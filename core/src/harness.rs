//! [`Harness`]: a handler's callbacks driven without sockets, for unit tests.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use mio::{Poll, Token, Waker};

use crate::admission::{Admission, Load};
use crate::close::CloseReason;
use crate::config::Config;
use crate::conn::{ConnHandle, ConnShared, HalfClose, SendRules};
use crate::connection::{Connection, Cx, End, Hold, Next, Scripted, Wake, Writing};
use crate::framer::Framer;
use crate::handler::{Flow, Handler};
use crate::mailbox::{ConnKey, Mail, Mailbox, Pending};
use crate::pool::BlockingPool;
use crate::stats::Counters;
use crate::stream::Peer;

/// Threads of a harness's blocking pool at most ([`Conn::spawn_blocking`]
/// runs jobs on a pool of the harness's own, joined when it is dropped).
const HARNESS_BLOCKING_THREADS: usize = 4;

/// Connection ids of harnesses, distinct in the process as on a server.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Why a [`Harness`]'s connection takes no frames now
/// ([`Harness::held_by`]); frames sent meanwhile wait, as on a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Held {
    /// More than the high-water mark is queued for the peer (256 KiB, the
    /// server's default): [`output`](Harness::output) takes it.
    Backpressure {
        /// Bytes queued.
        queued: usize,
    },
    /// The handler paused reading ([`Conn::pause_reading`]) for this much
    /// longer; [`resume`](Harness::resume) ends it.
    Paused(Duration),
    /// As many deferred replies as a connection may have in progress are
    /// outstanding ([`Conn::defer`]; 16, the server's default);
    /// [`wait_deferred`](Harness::wait_deferred) or
    /// [`wait_replies`](Harness::wait_replies) waits for them.
    Deferred {
        /// How many.
        outstanding: usize,
    },
    /// More than the high-water mark is queued for the connection's link
    /// ([`Conn::connect`](crate::Conn::connect)).
    Link {
        /// Bytes queued for the link.
        queued: usize,
    },
}

/// Runs a [`Handler`] as one connection would, with no socket and no
/// thread: bytes in (cut by the handler's framing), replies and [`Flow`]
/// out. Replies promised with [`Conn::defer`] and sent from other threads
/// arrive through [`wait_deferred`](Harness::wait_deferred); frames after a
/// deferred reply wait for it, as on a server.
///
/// ```
/// use switchboard::{handler_fn, Flow, Framing, Harness};
///
/// let upper = handler_fn(Framing::lines(64), |line, conn| {
///     conn.send(&line.to_ascii_uppercase());
///     conn.send(b"\n");
///     Flow::Continue
/// });
/// let mut h = Harness::new(upper);
/// assert_eq!(h.input(b"hello\nwor"), Flow::Continue);
/// assert_eq!(h.output(), b"HELLO\n");
/// h.input(b"ld\n");
/// assert_eq!(h.output(), b"WORLD\n");
/// ```
pub struct Harness<H: Handler> {
    handler: H,
    /// The connection, the same code a worker drives, over a stream with
    /// nothing to read (bytes come through [`input`](Harness::input)) that
    /// keeps what is written for [`output`](Harness::output).
    c: Connection<H::Session, Scripted>,
    stats: Arc<Counters>,
    rx: Receiver<Mail>,
    /// Why the connection ended at once (a panic, a slow consumer, a file
    /// that shrank), where a worker would have removed it.
    ended: Option<CloseReason>,
    /// Deferred replies completed so far.
    released: usize,
    high_water: usize,
    scratch: Vec<u8>,
    _poll: Poll,
}

/// What the connection's transitions borrow from harness `$h`.
macro_rules! cx {
    ($h:ident, $draining:expr) => {
        Cx {
            handler: &$h.handler,
            stats: &$h.stats,
            counters: &$h.stats.workers[0],
            high_water: $h.high_water,
            linger: Duration::from_secs(2),
            draining: $draining,
            now: Instant::now(),
        }
    };
}

impl<H: Handler> fmt::Debug for Harness<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Harness").field("closing", &self.closing()).finish_non_exhaustive()
    }
}

impl<H: Handler> Harness<H> {
    /// Opens a connection from 127.0.0.1:40000 with the server's default
    /// budgets: calls [`Handler::open`]. Each harness's connection has an id
    /// of its own ([`Conn::id`]), as connections of a server do.
    pub fn new(handler: H) -> Harness<H> {
        Harness::with_peer(handler, SocketAddr::from(([127, 0, 0, 1], 40000)))
    }

    /// As [`new`](Harness::new), with the given peer: an address, or a
    /// [`Peer::Unix`](crate::Peer::Unix) with credentials.
    pub fn with_peer(handler: H, peer: impl Into<Peer>) -> Harness<H> {
        let peer = peer.into();
        let poll = Poll::new().expect("an epoll instance for the harness's waker");
        let waker = Arc::new(Waker::new(poll.registry(), Token(0)).expect("a waker for the harness"));
        let (tx, rx) = crossbeam_channel::unbounded();
        let mailbox = Arc::new(Mailbox { tx, waker, pending: AtomicBool::new(false) });
        let config = Config::default();
        let stats = Arc::new(Counters::new(1));
        let rules = SendRules {
            max_outbound: config.max_outbound,
            max_outbound_total: config.max_outbound_total,
            policy: config.policy,
            framing: handler.framing(),
            max_deferred: handler.max_deferred().unwrap_or(config.max_deferred).clamp(1, 1024),
            blocking: Arc::new(BlockingPool::new(HARNESS_BLOCKING_THREADS, config.blocking_queue)),
            stats: Arc::clone(&stats),
        };
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let shared = ConnShared::new(id, ConnKey::default(), peer, Arc::new(rules), mailbox);
        let admission = Admission::new(&Load::new(&stats));
        let framer = Framer::new(handler.framing()).unterminated(handler.last_line_at_eof());
        let c = Connection::new(Scripted::default(), Arc::new(shared), framer, admission, Instant::now());
        let mut h = Harness {
            handler,
            c,
            stats,
            rx,
            ended: None,
            released: 0,
            high_water: config.high_water,
            scratch: vec![0; 4096],
            _poll: poll,
        };
        let next = h.c.open_session(&cx!(h, false));
        h.after(next);
        h
    }

    /// Bytes from the peer: cut into frames by the handler's framing, each
    /// handed to [`Handler::frame`] (or `frame_error`) while the connection
    /// takes frames. Returns [`Flow::Close`] once the connection is closing.
    pub fn input(&mut self, bytes: &[u8]) -> Flow {
        if self.ended.is_none() {
            if let Err(next) = self.c.serve(&cx!(self, false), bytes) {
                self.after(next);
            }
            self.take_mail();
        }
        self.flow()
    }

    /// The peer finished sending: [`Handler::eof`], then the connection
    /// closes ([`CloseReason::PeerClosed`]) once replies are out.
    pub fn eof(&mut self) {
        if self.ended.is_none() && self.c.writing() == Writing::Open {
            let next = self.c.eof(&cx!(self, false));
            self.after(next);
        }
    }

    /// The server starts draining: [`Handler::drain`].
    pub fn drain(&mut self) -> Flow {
        if self.ended.is_none() {
            let next = self.c.drain(&cx!(self, true));
            self.after(next);
        }
        self.flow()
    }

    /// Fires timer `id` if it is armed ([`Conn::set_timer`]), whatever its
    /// deadline; returns `None` if it is not armed.
    pub fn fire_timer(&mut self, id: u64) -> Option<Flow> {
        let &(_, at) = self.c.ctl.timers().iter().find(|&&(t, _)| t == id)?;
        if self.ended.is_none() {
            let next = self.c.wake(&cx!(self, false), at, Wake::Timer(id));
            self.after(next);
        }
        Some(self.flow())
    }

    /// The armed timers, by id, with the time left until each.
    pub fn timers(&self) -> Vec<(u64, Duration)> {
        let now = Instant::now();
        let mut t: Vec<_> =
            self.c.ctl.timers().iter().map(|&(id, at)| (id, at.saturating_duration_since(now))).collect();
        t.sort();
        t
    }

    /// How much longer reading stays paused ([`Conn::pause_reading`]).
    /// Frames wait in the harness too; [`resume`](Harness::resume) ends the
    /// pause early.
    pub fn paused_for(&self) -> Option<Duration> {
        self.c.ctl.paused_until().map(|t| t.saturating_duration_since(Instant::now()))
    }

    /// Ends a reading pause and serves the frames that waited.
    pub fn resume(&mut self) -> Flow {
        if let Some(at) = self.c.ctl.paused_until() {
            self.c.ctl.timing().pause_scheduled = Some(at);
            let next = self.c.wake(&cx!(self, false), at, Wake::Resume);
            self.after(next);
        }
        self.flow()
    }

    /// Why the connection takes no frames now, if it does not: the first
    /// of backpressure, a pause, deferred replies (as on a server).
    pub fn held_by(&self) -> Option<Held> {
        Some(match self.c.hold()? {
            Hold::Backpressure => Held::Backpressure { queued: self.c.shared.queued() },
            Hold::PausedUntil(t) => Held::Paused(t.saturating_duration_since(Instant::now())),
            Hold::Deferred => {
                Held::Deferred { outstanding: self.c.shared.deferred.load(Ordering::Acquire) as usize }
            }
            Hold::Link => Held::Link { queued: self.c.link.as_ref().map_or(0, |l| l.queued()) },
        })
    }

    /// The connection's id ([`Conn::id`]).
    pub fn id(&self) -> u64 {
        self.c.shared.id
    }

    /// Waits up to `timeout` until `n` more deferred replies have completed
    /// (each [`Deferred`](crate::Deferred) dropped, everything it sent
    /// arrived), serving the frames that waited after each, as a server
    /// does: frames pipelined behind a deferred reply that defer in turn are
    /// counted as they complete. Returns whether `n` completed.
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use std::time::Duration;
    /// use switchboard::{handler_fn, Deferred, Flow, Framing, Harness};
    ///
    /// // Every line is answered by another thread, once it is told to go.
    /// let (jobs, queue) = mpsc::channel::<(Vec<u8>, Deferred)>();
    /// let (go, told) = mpsc::channel::<()>();
    /// std::thread::spawn(move || {
    ///     let _ = told.recv();
    ///     for (line, reply) in queue {
    ///         let _ = reply.send([&line[..], b"\n"].concat());
    ///     }
    /// });
    /// let later = handler_fn(Framing::lines(64), move |line, conn| {
    ///     let _ = jobs.send((line.to_vec(), conn.defer()));
    ///     Flow::Continue
    /// });
    /// let mut h = Harness::new(later);
    /// h.input(b"a\nb\nc\n");
    /// // All three are in progress at once (up to 16 may be): none waits.
    /// assert_eq!(h.held_by(), None);
    /// go.send(()).unwrap();
    /// assert!(h.wait_replies(3, Duration::from_secs(10)));
    /// assert_eq!(h.output(), b"a\nb\nc\n");
    /// assert_eq!(h.held_by(), None);
    /// ```
    pub fn wait_replies(&mut self, n: usize, timeout: Duration) -> bool {
        let deadline = crate::clock::after(Instant::now(), timeout);
        let target = self.released.saturating_add(n);
        loop {
            self.take_mail();
            if self.released >= target {
                return true;
            }
            if !self.c.shared.deferred() {
                // Nothing outstanding: no more can complete.
                return false;
            }
            let Ok(mail) = self.rx.recv_deadline(deadline) else { return false };
            self.apply(mail);
        }
    }

    /// Waits up to `timeout` until no deferred reply is outstanding, taking
    /// what handles and deferred replies sent; then serves the frames that
    /// waited. Returns whether none is outstanding. A frame served then may
    /// defer again: [`wait_replies`](Harness::wait_replies) waits for a
    /// number of replies.
    pub fn wait_deferred(&mut self, timeout: Duration) -> bool {
        let deadline = crate::clock::after(Instant::now(), timeout);
        self.take_mail();
        while self.c.shared.deferred() {
            let Ok(mail) = self.rx.recv_deadline(deadline) else { return false };
            self.apply(mail);
            self.take_mail();
        }
        true
    }

    /// What the connection has sent since the last call (file regions
    /// read), including what handles sent that has arrived.
    pub fn output(&mut self) -> Vec<u8> {
        self.take_mail();
        let next = self.c.flush(&cx!(self, false), &mut self.scratch);
        let written = std::mem::take(&mut self.c.sock.written);
        // (A released backpressure hold serves the frames that waited:
        // their replies come with the next call.)
        self.after(next);
        written
    }

    /// Whether the handler (or a handle) half-closed the connection
    /// ([`Conn::shutdown_write`]): a server would shut the write side once
    /// the output before it is written; nothing sent after it comes out.
    pub fn write_shut(&mut self) -> bool {
        self.take_mail();
        self.c.ctl.half_close != HalfClose::No
    }

    /// Why the connection is closing, once it is.
    pub fn closing(&self) -> Option<&CloseReason> {
        self.ended.as_ref().or_else(|| self.c.closing_reason())
    }

    /// A handle to the connection, as [`Conn::handle`] gives.
    pub fn handle(&self) -> ConnHandle {
        ConnHandle::new(Arc::clone(&self.c.shared))
    }

    /// Closes the connection: [`Handler::close`] with the reason it is
    /// closing for (or `reason` if none), which is returned.
    pub fn close(self, reason: CloseReason) -> CloseReason {
        let Harness { handler, mut c, ended, .. } = self;
        c.shared.closed.store(true, Ordering::Release);
        let end = match ended {
            Some(reason) => End::Now(reason),
            None if c.closing_reason().is_some() => {
                // Its graceful close is over: the reason it began with.
                c.start_linger(Instant::now());
                End::Lingered
            }
            None => End::Now(reason),
        };
        let (session, reason, _admission) = c.end(end);
        if let Some(session) = session {
            handler.close(session, &reason);
        }
        reason
    }

    /// Whether the connection is closing, as a callback's [`Flow`].
    fn flow(&self) -> Flow {
        if self.closing().is_some() {
            Flow::Close
        } else {
            Flow::Continue
        }
    }

    /// Applies what a transition said to do next, as a worker does.
    fn after(&mut self, next: Next) {
        match next {
            Next::End(End::Now(reason)) => {
                self.ended.get_or_insert(reason);
            }
            Next::Read => {
                // Serves what waited (nothing more to read here).
                let next = self.c.readable(&cx!(self, false), &mut self.scratch, true);
                return self.after(next);
            }
            Next::End(End::Lingered) | Next::Preamble | Next::Handshake(_) | Next::Open | Next::Wait => {}
        }
        // Timers are read from the connection's control; nothing to
        // schedule.
        self.c.schedule(|_, _| {});
    }

    fn take_mail(&mut self) {
        while let Ok(mail) = self.rx.try_recv() {
            self.apply(mail);
        }
    }

    /// Takes what the connection's inbox holds, in order, as a worker
    /// does.
    fn apply(&mut self, mail: Mail) {
        let Mail::Inbox { .. } = mail else { return };
        let mut items = Vec::new();
        self.c.shared.take_inbox(&mut items);
        for item in items {
            if self.ended.is_some() {
                break;
            }
            if let Pending::Release { .. } = item {
                self.released += 1;
            }
            let next = self.c.take(&cx!(self, false), item);
            self.after(next);
        }
    }
}
