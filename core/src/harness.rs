//! [`Harness`]: a handler's callbacks driven without sockets, for unit tests.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use mio::{Poll, Token, Waker};

use crate::conn::{Conn, ConnHandle, ConnShared, Pending};
use crate::connection::{ConnKey, Control};
use crate::framing::{Decoder, Step};
use crate::handler::{CloseReason, Flow, Handler};
use crate::mailbox::{Mail, Mailbox};
use crate::outbound::Outbound;
use crate::server::Config;
use crate::stats::Counters;

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
    _poll: Poll,
}

impl<H: Handler> fmt::Debug for Harness<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Harness").field("closing", &self.closing).finish_non_exhaustive()
    }
}

impl<H: Handler> Harness<H> {
    /// Opens a connection from 127.0.0.1:40000 with the server's default
    /// budgets: calls [`Handler::open`].
    pub fn new(handler: H) -> Harness<H> {
        Harness::with_peer(handler, SocketAddr::from(([127, 0, 0, 1], 40000)))
    }

    /// As [`new`](Harness::new), with the given peer address.
    pub fn with_peer(handler: H, peer: SocketAddr) -> Harness<H> {
        let poll = Poll::new().expect("an epoll instance for the harness's waker");
        let waker = Arc::new(Waker::new(poll.registry(), Token(0)).expect("a waker for the harness"));
        let (tx, rx) = crossbeam_channel::unbounded();
        let mailbox = Arc::new(Mailbox { tx, waker, pending: AtomicBool::new(false) });
        let config = Config::default();
        let stats = Arc::new(Counters::new(1));
        stats.open.store(1, Ordering::Release);
        let shared = ConnShared::new(
            1,
            ConnKey::default(),
            peer,
            config.max_outbound,
            config.max_outbound_total,
            config.policy,
            mailbox,
            stats,
            handler.framing(),
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

    /// Waits up to `timeout` until no deferred reply is outstanding, taking
    /// what handles and deferred replies sent; then serves the frames that
    /// waited. Returns whether none is outstanding.
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
        sink
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

    fn serve(&mut self) -> Flow {
        let mut pos = 0;
        while self.closing.is_none() && self.ctl.paused_until.is_none() && !self.shared.deferred() {
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
