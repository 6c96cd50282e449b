//! The connection's transitions: it reads, serves frames, calls its
//! handler, writes and lingers by itself, and each transition returns what
//! its worker must do next ([`Next`]). Nothing here touches the worker's
//! table, timers or poll, and no transition calls back into one that could
//! remove the connection: the worker applies a [`Next`] in one place.

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::clock;
use crate::close::CloseReason;
use crate::conn::{Conn, HalfClose};
use crate::framer::{Fed, Framer, Item};
use crate::handler::{Flow, Handler};
use crate::mailbox::Pending;
use crate::order::{Order, Parked};
use crate::outbound::WriteError;
use crate::stats::{add, bump, Counters, WorkerCounters};
use crate::tls::TlsStream;
use crate::transport::reason_of;

use super::{ByteStream, Closing, Connection, End, Wake, Writing};

/// Reads per readiness event before other connections get a turn.
const READS_PER_TURN: usize = 16;
/// Bytes a lingering close reads and discards at most.
const LINGER_BYTES: u32 = 1 << 20;

/// What a connection's transitions borrow from its worker for one call.
pub(crate) struct Cx<'a, H> {
    pub(crate) handler: &'a H,
    /// The server's counters (`handler_panics`).
    pub(crate) stats: &'a Counters,
    /// The worker's counters (bytes, frames, the queued bytes it holds).
    pub(crate) counters: &'a WorkerCounters,
    pub(crate) high_water: usize,
    pub(crate) linger: Duration,
    pub(crate) draining: bool,
    /// The time of this loop turn.
    pub(crate) now: Instant,
}

/// What the worker must do next for a connection, after a transition.
#[derive(Debug)]
#[must_use]
pub(crate) enum Next {
    /// Nothing more now: wait for the socket, mail or a deadline (a flush,
    /// if [`Connection::wants_flush`] says so).
    Wait,
    /// Read (and serve what waited) again in the loop's next pass: frames
    /// were released, or the turn ran out.
    Read,
    /// The preamble (PROXY header, TLS handshake) moves on
    /// ([`Connection::advance`]).
    Preamble,
    /// A TLS handshake step is due: the worker runs it on its handshake
    /// pool (or at once, once the handshake has begun), and the stream
    /// comes back through [`Connection::stepped`].
    Handshake(Box<TlsStream>),
    /// The preamble is done: the worker opens the session
    /// ([`Connection::open_session`]) and reads what came with the end of
    /// the preamble.
    Open,
    /// Remove the connection.
    End(End),
}

/// What a callback's result means for its connection.
#[derive(Debug)]
pub(super) enum Outcome {
    /// Go on.
    Continue,
    /// Close gracefully: deliver what is queued, then close.
    Close(CloseReason),
    /// Close at once (a panic).
    Abort(CloseReason),
}

impl From<Flow> for Outcome {
    fn from(flow: Flow) -> Outcome {
        match flow {
            Flow::Continue => Outcome::Continue,
            Flow::Close => Outcome::Close(CloseReason::Handler),
        }
    }
}

/// Runs handler code with a panic caught and counted (`None`).
pub(crate) fn guarded<R>(stats: &Counters, f: impl FnOnce() -> R) -> Option<R> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => Some(v),
        Err(_) => {
            bump(&stats.handler_panics);
            None
        }
    }
}

impl<S, T: ByteStream> Connection<S, T> {
    /// Calls the handler with the session and a [`Conn`]: the one place a
    /// callback runs on a session. A panic becomes an abort. `None`: no
    /// session (still in its preamble), nothing called.
    pub(super) fn call<H>(
        &mut self,
        cx: &Cx<'_, H>,
        f: impl FnOnce(&H, &mut S, &mut Conn<'_>) -> Outcome,
    ) -> Option<Outcome>
    where
        H: Handler<Session = S>,
    {
        let (session, mut conn) = self.parts(&cx.counters.queued, cx.draining);
        let session = session?;
        let outcome = guarded(cx.stats, || f(cx.handler, session, &mut conn));
        Some(outcome.unwrap_or(Outcome::Abort(CloseReason::HandlerPanic)))
    }

    /// Applies what a callback returned and asked through its `Conn`: the
    /// one place a callback's wishes become the connection's state.
    pub(super) fn settle(&mut self, outcome: Outcome, high_water: usize) -> Next {
        let asked = std::mem::take(&mut self.ctl.close);
        let close = match outcome {
            Outcome::Abort(reason) => return Next::End(End::Now(reason)),
            Outcome::Close(reason) => Some(reason),
            Outcome::Continue if asked => Some(CloseReason::Handler),
            Outcome::Continue => None,
        };
        self.update_backpressure(high_water);
        match close {
            Some(reason) => self.close(reason),
            None => Next::Wait,
        }
    }

    /// Starts a graceful close for `reason` (the worker flushes it: see
    /// [`wants_flush`](Connection::wants_flush)).
    pub(crate) fn close(&mut self, reason: CloseReason) -> Next {
        match self.begin_close(reason) {
            Closing::Began | Closing::Already => Next::Wait,
            Closing::Now(reason) => Next::End(End::Now(reason)),
        }
    }

    /// The preamble is done: the handler's `open` makes the session (and,
    /// during a drain, hears of it at once).
    pub(crate) fn open_session<H: Handler<Session = S>>(&mut self, cx: &Cx<'_, H>) -> Next {
        let (_, mut conn) = self.parts(&cx.counters.queued, cx.draining);
        let Some(session) = guarded(cx.stats, || cx.handler.open(&mut conn)) else {
            return Next::End(End::Now(CloseReason::HandlerPanic));
        };
        self.open(session);
        match self.settle(Outcome::Continue, cx.high_water) {
            Next::Wait if cx.draining && self.takes_frames() => self.drain(cx),
            next => next,
        }
    }

    /// The server started draining: the handler's `drain`.
    pub(crate) fn drain<H: Handler<Session = S>>(&mut self, cx: &Cx<'_, H>) -> Next {
        if self.writing() != Writing::Open {
            return Next::Wait;
        }
        match self.call(cx, |h, s, c| h.drain(s, c).into()) {
            Some(outcome) => self.settle(outcome, cx.high_water),
            None => Next::Wait,
        }
    }

    /// A scheduled wake-up came (stale ones do nothing): a pause ends, or a
    /// timer fires.
    pub(crate) fn wake<H: Handler<Session = S>>(&mut self, cx: &Cx<'_, H>, at: Instant, wake: Wake) -> Next {
        match wake {
            Wake::Resume => {
                let Some(t) = self.ctl.timing_mut().filter(|t| t.pause_scheduled == Some(at)) else {
                    return Next::Wait; // moved: a later wake-up is scheduled
                };
                t.pause_scheduled = None;
                t.paused_until = None;
                self.ctl.tidy();
                self.end_wait(cx.now);
                self.reading_again()
            }
            Wake::Link => self.link_wake(cx, at),
            Wake::Timer(id) => {
                let Some(t) = self.ctl.timing_mut() else { return Next::Wait };
                let Some(i) = t.timers.iter().position(|&(t, d)| t == id && d == at) else {
                    return Next::Wait; // cancelled or moved
                };
                t.timers.swap_remove(i);
                self.ctl.tidy();
                if self.writing() != Writing::Open {
                    return Next::Wait;
                }
                match self.call(cx, |h, s, c| h.timer(s, id, c).into()) {
                    Some(outcome) => self.settle(outcome, cx.high_water),
                    None => Next::Wait,
                }
            }
        }
    }

    /// A hold ended: read (and serve what waited) again if frames are taken.
    pub(super) fn reading_again(&self) -> Next {
        if self.takes_frames() {
            Next::Read
        } else {
            Next::Wait
        }
    }

    /// Takes one item a handle queued, in order.
    pub(crate) fn take<H>(&mut self, cx: &Cx<'_, H>, item: Pending) -> Next {
        match item {
            // A plain handle's send is outside the request order: queued as
            // it comes.
            Pending::Send { seq: None, msg } if self.accepts_output() => {
                self.out.push_message(msg, &cx.counters.queued)
            }
            Pending::Send { seq: Some(seq), msg } if self.accepts_output() => {
                let msg = Parked::Bytes(msg);
                Order::place(&mut self.order, Some(seq), msg, &mut self.out, &cx.counters.queued)
            }
            // Closing meanwhile: the bytes will never be written.
            Pending::Send { msg, .. } => self.shared.sub_queued(msg.len()),
            Pending::SendFile { seq: None, file, offset, len } if self.accepts_output() => {
                self.out.push_file(file, offset, len)
            }
            Pending::SendFile { seq: Some(seq), file, offset, len } if self.accepts_output() => {
                let file = Parked::File { file, offset, len };
                Order::place(&mut self.order, Some(seq), file, &mut self.out, &cx.counters.queued)
            }
            Pending::SendFile { .. } => {}
            Pending::Release { seq } => {
                Order::release(&mut self.order, seq, &mut self.out, &cx.counters.queued);
                if self.shared.deferred.fetch_sub(1, Ordering::AcqRel) == 1 {
                    // The last one: the idle timeout counts from now.
                    self.end_wait(cx.now);
                }
                // Frames that waited for a free place may go on.
                return self.reading_again();
            }
            Pending::ShutdownWrite => {
                if self.ctl.half_close == HalfClose::No {
                    self.ctl.half_close = HalfClose::Asked;
                }
            }
            Pending::Close { slow: true } => return Next::End(End::Now(CloseReason::SlowConsumer)),
            Pending::Close { slow: false } => return self.close(CloseReason::Handler),
        }
        Next::Wait
    }

    /// The socket is readable (or frames that waited may go on): serves
    /// what the framer holds, then reads and serves until the socket would
    /// block, or (unless `to_eof`) until a read comes back short. A
    /// lingering connection reads and discards.
    pub(crate) fn readable<H: Handler<Session = S>>(
        &mut self,
        cx: &Cx<'_, H>,
        scratch: &mut [u8],
        to_eof: bool,
    ) -> Next {
        if let Writing::Lingering { .. } = self.writing() {
            return self.linger(scratch);
        }
        if !self.sock.is_ready() {
            return Next::Preamble;
        }
        if !self.takes_frames() {
            return Next::Wait;
        }
        if self.framer.buffered() > 0 {
            if let Err(next) = self.serve(cx, &[]) {
                return next;
            }
        }
        for _ in 0..READS_PER_TURN {
            match self.sock.read(scratch) {
                Ok(0) => return self.eof(cx),
                Ok(n) => {
                    self.last_io = cx.now;
                    self.last_read = cx.now;
                    add(&cx.counters.bytes_in, n as u64);
                    if let Err(next) = self.serve(cx, &scratch[..n]) {
                        return next;
                    }
                    // (A TLS peer's EOF may wait behind the bytes of a short read.)
                    if n < scratch.len() && !to_eof && !self.sock.eof_pending() {
                        return Next::Wait;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Wait,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Next::End(End::Now(reason_of(e))),
            }
        }
        // The turn ran out: the rest in the next pass.
        Next::Read
    }

    /// The peer finished sending: the handler's `eof`, then the graceful
    /// close. An incomplete frame left at EOF is dropped, unless the framer
    /// takes unterminated lines: then it is the last frame.
    pub(crate) fn eof<H: Handler<Session = S>>(&mut self, cx: &Cx<'_, H>) -> Next {
        if let Err(next) = self.serve_last(cx) {
            return next;
        }
        if let Some(link) = self.live_link() {
            // Linked: the peer's EOF is half of the pair's end. The
            // connection stays open for the upstream's reply.
            link.owner_eof = true;
            let outcome = self.call(cx, |h, s, c| {
                h.eof(s, c);
                Outcome::Continue
            });
            return self.settle(outcome.unwrap_or(Outcome::Continue), cx.high_water);
        }
        let outcome = self.call(cx, |h, s, c| {
            h.eof(s, c);
            Outcome::Close(CloseReason::PeerClosed)
        });
        self.settle(outcome.unwrap_or(Outcome::Close(CloseReason::PeerClosed)), cx.high_water)
    }

    /// Hands the partial line the framer holds to the handler, if the
    /// framer takes unterminated lines (at EOF, or once it has waited).
    pub(crate) fn serve_last<H: Handler<Session = S>>(&mut self, cx: &Cx<'_, H>) -> Result<(), Next> {
        if !self.framer.is_partial() || !self.takes_frames() {
            return Ok(());
        }
        self.serve_with(cx, |framer, take| {
            framer.take_partial(take);
            Fed::NeedsInput
        })
    }

    /// Decodes what the framer holds plus `fresh` and hands the frames to
    /// the handler while the connection takes them. `Ok`: reading may go
    /// on; `Err`: what the worker must do instead.
    pub(crate) fn serve<H: Handler<Session = S>>(
        &mut self,
        cx: &Cx<'_, H>,
        fresh: &[u8],
    ) -> Result<(), Next> {
        if !self.takes_frames() {
            self.framer.hold(fresh);
            self.track_partial(Fed::Stopped, false, cx.now);
            return Err(Next::Wait);
        }
        self.serve_with(cx, |framer, take| framer.feed(fresh, take))
    }

    /// Runs `cut` over the framer with a callback that hands each frame to
    /// the handler; then settles.
    fn serve_with<H, F>(&mut self, cx: &Cx<'_, H>, cut: F) -> Result<(), Next>
    where
        H: Handler<Session = S>,
        F: FnOnce(&mut Framer, &mut dyn FnMut(Item<'_>) -> bool) -> Fed,
    {
        let mut completed = false;
        let mut outcome = Outcome::Continue;
        // The framer leaves the connection while it hands out frames: the
        // callbacks borrow the rest of it.
        let placeholder = Framer::new(self.framer.framing());
        let mut framer = std::mem::replace(&mut self.framer, placeholder);
        let fed = cut(&mut framer, &mut |item| {
            let called = match item {
                Item::Frame(frame) => {
                    completed = true;
                    bump(&cx.counters.frames);
                    self.call(cx, |h, s, c| h.frame(s, frame, c).into())
                }
                Item::Error(err) => {
                    bump(&cx.counters.frame_errors);
                    self.call(cx, |h, s, c| match h.frame_error(s, err, c) {
                        Flow::Continue if !err.is_fatal() => Outcome::Continue,
                        _ => Outcome::Close(CloseReason::BadFrame(err)),
                    })
                }
            };
            let Some(o) = called else { return false };
            outcome = o;
            if !matches!(outcome, Outcome::Continue) {
                return false;
            }
            self.update_backpressure(cx.high_water);
            self.takes_frames() && !self.ctl.close
        });
        self.framer = framer;
        self.track_partial(fed, completed, cx.now);
        match self.settle(outcome, cx.high_water) {
            Next::Wait if self.takes_frames() => Ok(()),
            next => Err(next),
        }
    }

    /// Writes what is queued; releases a backpressure hold below the
    /// low-water mark; shuts the write side for a half-close; moves a
    /// closing connection on to its linger once everything is written.
    pub(crate) fn flush<H: Handler<Session = S>>(&mut self, cx: &Cx<'_, H>, scratch: &mut [u8]) -> Next {
        if !self.out.is_empty() || self.sock.wants_write() {
            match self.sock.write_out(&mut self.out, &self.shared.queued, &cx.counters.queued, scratch) {
                Ok(n) => {
                    if n > 0 {
                        self.last_io = cx.now;
                        add(&cx.counters.bytes_out, n);
                        self.shared.wake_producers();
                    }
                }
                Err(WriteError::FileTruncated) => return Next::End(End::Now(CloseReason::FileTruncated)),
                Err(WriteError::Io(e)) => return Next::End(End::Now(reason_of(e))),
            }
        }
        let released = self.update_backpressure(cx.high_water);
        if self.writing() == Writing::Open && self.half_close_due() {
            // The handler's half-close: reading goes on.
            self.ctl.half_close = HalfClose::Done;
            if let Err(e) = self.sock.shutdown_write() {
                return Next::End(End::Now(reason_of(e)));
            }
            log::debug!(
                "{}: connection {}: write side shut by the handler",
                self.shared.peer,
                self.shared.id
            );
        }
        if self.flushed() {
            if self.ctl.half_close != HalfClose::Done {
                let _ = self.sock.shutdown_write();
            }
            self.start_linger(clock::after(cx.now, cx.linger));
            return self.linger(scratch);
        }
        if !released {
            return Next::Wait;
        }
        if let Some(link) = self.link.as_deref_mut() {
            // The upstream's bytes waited for this queue.
            link.read_due = true;
        }
        if let Some(outcome) = self.call(cx, |h, s, c| h.on_drained(s, c).into()) {
            if let next @ Next::End(_) = self.settle(outcome, cx.high_water) {
                return next;
            }
        }
        self.reading_again()
    }

    /// Reads and discards until the peer's EOF: then the close is clean.
    fn linger(&mut self, scratch: &mut [u8]) -> Next {
        loop {
            match self.sock.read(scratch) {
                Ok(0) => break,
                Ok(n) => {
                    let n = u32::try_from(n).unwrap_or(u32::MAX);
                    self.linger_read = self.linger_read.saturating_add(n);
                    if self.linger_read > LINGER_BYTES {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Wait,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        Next::End(End::Lingered)
    }
}
