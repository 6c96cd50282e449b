//! [`Harness`]: a handler's callbacks driven without sockets, for unit tests.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use mio::{Poll, Token, Waker};

use crate::conn::{Conn, ConnHandle, ConnShared, Pending, SendRules};
use crate::connection::{ConnKey, Control, HalfClose};
use crate::framing::{Decoder, Step};
use crate::handler::{CloseReason, Flow, Handler};
use crate::mailbox::{Mail, Mailbox};
use crate::outbound::Outbound;
use crate::pool::BlockingPool;
use crate::server::Config;
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
    /// Deferred replies are outstanding ([`Conn::defer`]);
    /// [`wait_deferred`](Harness::wait_deferred) or
    /// [`wait_replies`](Harness::wait_replies) waits for them.
    Deferred {
        /// How many.
        outstanding: usize,
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
    session: Option<H::Session>,
    shared: Arc<ConnShared>,
    out: Outbound,
    ctl: Control,
    decoder: Decoder,
    tail: Vec<u8>,
    rx: Receiver<Mail>,
    /// Set once a callback closed the connection (or a handle asked to).
    closing: Option<CloseReason>,
    /// Deferred replies completed so far.
    released: usize,
    high_water: usize,
    /// Reading stopped for backpressure (released below half the mark).
    backpressure: bool,
    _poll: Poll,
}

impl<H: Handler> fmt::Debug for Harness<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Harness").field("closing", &self.closing).finish_non_exhaustive()
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
        stats.open.store(1, Ordering::Release);
        let rules = SendRules {
            max_outbound: config.max_outbound,
            max_outbound_total: config.max_outbound_total,
            policy: config.policy,
            framing: handler.framing(),
            blocking: Arc::new(BlockingPool::new(HARNESS_BLOCKING_THREADS, config.blocking_queue)),
        };
        let shared = ConnShared::new(
            NEXT_ID.fetch_add(1, Ordering::Relaxed),
            ConnKey::default(),
            peer,
            Arc::new(rules),
            mailbox,
            stats,
        );
        let decoder = Decoder::new(handler.framing());
        let mut h = Harness {
            handler,
            session: None,
            shared: Arc::new(shared),
            out: Outbound::default(),
            ctl: Control::default(),
            decoder,
            tail: Vec::new(),
            rx,
            closing: None,
            released: 0,
            high_water: config.high_water,
            backpressure: false,
            _poll: poll,
        };
        let held = &h.shared.stats.workers[0].queued;
        let mut conn = Conn { shared: &h.shared, out: &mut h.out, held, draining: false, ctl: &mut h.ctl };
        h.session = Some(h.handler.open(&mut conn));
        if std::mem::take(&mut h.ctl.close) {
            h.closing = Some(CloseReason::Handler);
        }
        h
    }

    /// Bytes from the peer: cut into frames by the handler's framing, each
    /// handed to [`Handler::frame`] (or `frame_error`) while the connection
    /// takes frames. Returns [`Flow::Close`] once the connection is closing.
    pub fn input(&mut self, bytes: &[u8]) -> Flow {
        self.tail.extend_from_slice(bytes);
        self.serve()
    }

    /// The peer finished sending: [`Handler::eof`], then the connection
    /// closes ([`CloseReason::PeerClosed`]) once replies are out.
    pub fn eof(&mut self) {
        if self.closing.is_none() {
            let (handler, session, mut conn) = self.parts(false);
            handler.eof(session, &mut conn);
            self.settle(Flow::Close, CloseReason::PeerClosed);
        }
    }

    /// The server starts draining: [`Handler::drain`].
    pub fn drain(&mut self) -> Flow {
        let (handler, session, mut conn) = self.parts(true);
        let flow = handler.drain(session, &mut conn);
        self.settle(flow, CloseReason::Handler)
    }

    /// Fires timer `id` if it is armed ([`Conn::set_timer`]), whatever its
    /// deadline; returns `None` if it is not armed.
    pub fn fire_timer(&mut self, id: u64) -> Option<Flow> {
        let i = self.ctl.timers.iter().position(|&(t, _)| t == id)?;
        self.ctl.timers.swap_remove(i);
        let (handler, session, mut conn) = self.parts(false);
        let flow = handler.timer(session, id, &mut conn);
        Some(self.settle(flow, CloseReason::Handler))
    }

    /// The armed timers, by id, with the time left until each.
    pub fn timers(&self) -> Vec<(u64, Duration)> {
        let now = Instant::now();
        let mut t: Vec<_> =
            self.ctl.timers.iter().map(|&(id, at)| (id, at.saturating_duration_since(now))).collect();
        t.sort();
        t
    }

    /// How much longer reading stays paused ([`Conn::pause_reading`]).
    /// Frames wait in the harness too; [`resume`](Harness::resume) ends the
    /// pause early.
    pub fn paused_for(&self) -> Option<Duration> {
        self.ctl.paused_until.map(|t| t.saturating_duration_since(Instant::now()))
    }

    /// Ends a reading pause and serves the frames that waited.
    pub fn resume(&mut self) -> Flow {
        self.ctl.paused_until = None;
        self.serve()
    }

    /// Why the connection takes no frames now, if it does not: the first
    /// of backpressure, a pause, deferred replies (as on a server).
    pub fn held_by(&self) -> Option<Held> {
        if self.backpressure {
            Some(Held::Backpressure { queued: self.shared.queued() })
        } else if let Some(until) = self.ctl.paused_until {
            Some(Held::Paused(until.saturating_duration_since(Instant::now())))
        } else if self.shared.deferred() {
            Some(Held::Deferred { outstanding: self.shared.deferred.load(Ordering::Acquire) })
        } else {
            None
        }
    }

    /// The connection's id ([`Conn::id`]).
    pub fn id(&self) -> u64 {
        self.shared.id
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
    /// use switchboard::{handler_fn, Deferred, Flow, Framing, Harness, Held};
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
    /// // "b" and "c" wait behind the reply to "a".
    /// assert_eq!(h.held_by(), Some(Held::Deferred { outstanding: 1 }));
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
            self.serve();
            if self.released >= target {
                return true;
            }
            if !self.shared.deferred() {
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
        let deadline = Instant::now() + timeout;
        self.take_mail();
        while self.shared.deferred() {
            let Ok(mail) = self.rx.recv_deadline(deadline) else { return false };
            self.apply(mail);
            self.take_mail();
        }
        self.serve();
        true
    }

    /// What the connection has sent since the last call (file regions
    /// read), including what handles sent that has arrived.
    pub fn output(&mut self) -> Vec<u8> {
        self.take_mail();
        let mut sink = Vec::new();
        if self.out.drain_into(&mut sink, &self.shared, &self.shared.stats.workers[0].queued).is_err() {
            self.closing.get_or_insert(CloseReason::FileTruncated);
        }
        if self.backpressure && self.update_backpressure() {
            // Drained: the frames that waited are served (their replies
            // come with the next call).
            self.serve();
        }
        sink
    }

    /// Whether the handler (or a handle) half-closed the connection
    /// ([`Conn::shutdown_write`]): a server would shut the write side once
    /// the output before it is written; nothing sent after it comes out.
    pub fn write_shut(&mut self) -> bool {
        self.take_mail();
        self.ctl.half_close != HalfClose::No
    }

    /// Why the connection is closing, once it is.
    pub fn closing(&self) -> Option<&CloseReason> {
        self.closing.as_ref()
    }

    /// A handle to the connection, as [`Conn::handle`] gives.
    pub fn handle(&self) -> ConnHandle {
        ConnHandle::new(Arc::clone(&self.shared))
    }

    /// Closes the connection: [`Handler::close`] with the reason it is
    /// closing for (or `reason` if none), which is returned.
    pub fn close(mut self, reason: CloseReason) -> CloseReason {
        let reason = self.closing.take().unwrap_or(reason);
        self.shared.closed.store(true, Ordering::Release);
        if let Some(session) = self.session.take() {
            self.handler.close(session, &reason);
        }
        reason
    }

    fn parts(&mut self, draining: bool) -> (&H, &mut H::Session, Conn<'_>) {
        let held = &self.shared.stats.workers[0].queued;
        let conn = Conn { shared: &self.shared, out: &mut self.out, held, draining, ctl: &mut self.ctl };
        (&self.handler, self.session.as_mut().expect("the session lives until close"), conn)
    }

    fn settle(&mut self, flow: Flow, reason: CloseReason) -> Flow {
        if flow == Flow::Close || std::mem::take(&mut self.ctl.close) {
            self.closing.get_or_insert(reason);
        }
        if self.closing.is_some() {
            Flow::Close
        } else {
            Flow::Continue
        }
    }

    /// Updates the backpressure hold from what is queued, as a server does
    /// (set above the high-water mark, cleared below half of it); returns
    /// true when it was just released.
    fn update_backpressure(&mut self) -> bool {
        let queued = self.shared.queued();
        if !self.backpressure && queued > self.high_water {
            self.backpressure = true;
        } else if self.backpressure && queued <= self.high_water / 2 {
            self.backpressure = false;
            return true;
        }
        false
    }

    fn serve(&mut self) -> Flow {
        let mut pos = 0;
        while self.closing.is_none() && self.held_by().is_none() {
            let input = std::mem::take(&mut self.tail);
            let step = self.decoder.next(&input[pos..]);
            let (flow, reason) = match step {
                Step::Incomplete => {
                    self.tail = input;
                    break;
                }
                Step::Skip(used) => {
                    pos += used;
                    self.tail = input;
                    continue;
                }
                Step::Frame(frame, used) => {
                    pos += used;
                    let (handler, session, mut conn) = self.parts(false);
                    (handler.frame(session, frame, &mut conn), CloseReason::Handler)
                }
                Step::Error(err, used) => {
                    pos += used;
                    let (handler, session, mut conn) = self.parts(false);
                    match handler.frame_error(session, err, &mut conn) {
                        Flow::Continue if !err.is_fatal() => (Flow::Continue, CloseReason::Handler),
                        _ => (Flow::Close, CloseReason::BadFrame(err)),
                    }
                }
            };
            self.tail = input;
            self.settle(flow, reason);
            self.take_mail();
            self.update_backpressure();
        }
        self.tail.drain(..pos.min(self.tail.len()));
        if self.closing.is_some() {
            Flow::Close
        } else {
            Flow::Continue
        }
    }

    fn take_mail(&mut self) {
        while let Ok(mail) = self.rx.try_recv() {
            self.apply(mail);
        }
    }

    fn apply(&mut self, mail: Mail) {
        let Mail::Inbox { .. } = mail else { return };
        let mut items = Vec::new();
        self.shared.take_inbox(&mut items);
        for item in items {
            match item {
                Pending::Send(msg) => self.out.push_message(msg, &self.shared.stats.workers[0].queued),
                Pending::SendFile { file, offset, len } => self.out.push_file(file, offset, len),
                Pending::Release => {
                    self.shared.deferred.fetch_sub(1, Ordering::AcqRel);
                    self.released += 1;
                }
                Pending::ShutdownWrite => {
                    if self.ctl.half_close == HalfClose::No {
                        self.ctl.half_close = HalfClose::Asked;
                    }
                }
                Pending::Close { slow } => {
                    self.closing.get_or_insert(if slow {
                        CloseReason::SlowConsumer
                    } else {
                        CloseReason::Handler
                    });
                }
            }
        }
    }
}
