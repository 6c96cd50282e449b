//! One connection's state on its worker: how it reads, how it writes, what
//! its handler asked for, and when it is due for a timeout. The worker asks
//! it what to do next and applies the answer in one place; nothing here
//! calls the handler or touches the poll.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::admission::Admission;
use crate::close::CloseReason;
use crate::conn::{Conn, ConnShared, Control, HalfClose};
use crate::framer::{Fed, Framer};
use crate::link::state::LinkState;
use crate::mailbox::Mail;
use crate::order::Order;
use crate::outbound::{Outbound, WriteError};
use crate::transport::Transport;

mod drive;
#[cfg(test)]
mod link_tests;
mod linked;
mod preamble;
mod scripted;
#[cfg(test)]
mod tests;

pub(crate) use drive::{guarded, Cx, Next};
pub(crate) use linked::LinkRead;
pub(crate) use scripted::Scripted;

/// File regions queued for one connection before reading from it stops.
pub(crate) const MAX_QUEUED_FILES: usize = 16;

/// Where a connection is in its life. The session exists from the
/// handler's `open` to its `close`, and a closing connection always knows
/// why it closes: neither is an `Option` to be filled in later.
///
/// ```text
///            preamble done (open)            begin_close(reason)
///  Preamble ─────────────────────▶ Open(S) ─────────────────────▶ Closing { S, reason, Flushing }
///     │                               │                                   │ queue written, no
///     │ error, timeout, drain         │ error, panic,                     │ deferred reply left:
///     │ (End::Now)                    │ timeout (End::Now)                 ▼ write side shut
///     ▼                               ▼                             Closing { S, reason, Lingering(until) }
///   closed ◀──────────────────────── closed ◀──────────────────────────────┘ peer's EOF, deadline,
///                                                                            shutdown (End::Lingered)
/// ```
#[derive(Debug)]
pub(crate) enum Life<S> {
    /// Before the handler's `open`: a PROXY header, a TLS handshake.
    Preamble,
    /// The session is open: frames go to the handler.
    Open(S),
    /// A graceful close, begun for a reason: what is queued is written,
    /// then the write side is shut and the connection lingers.
    Closing {
        session: S,
        /// Why, and the linger deadline: boxed, as only a closing
        /// connection has them (a pointer in every connection, not 40 B).
        close: Box<Close>,
    },
}

/// What a closing connection knows of its close.
#[derive(Debug)]
pub(crate) struct Close {
    pub(crate) reason: CloseReason,
    /// `None` while flushing; the linger deadline once the write side is
    /// shut.
    pub(crate) linger: Option<Instant>,
}

/// How a connection ends, as its worker removes it.
#[derive(Debug)]
pub(crate) enum End {
    /// At once, for this reason (an error, a timeout, a forced close).
    Now(CloseReason),
    /// The graceful close is over: a lingering connection (everything
    /// delivered) ends with the reason its close began with; any other is
    /// cut short by the shutdown ([`CloseReason::Forced`]).
    Lingered,
}

/// What [`Connection::begin_close`] did.
#[derive(Debug)]
pub(crate) enum Closing {
    /// The graceful close began: flush.
    Began,
    /// It was closing already.
    Already,
    /// No session to close gracefully (still in its preamble): close now.
    Now(CloseReason),
}

/// The writing side, as [`Life`] implies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Writing {
    /// Replies are taken and written as the socket allows.
    Open,
    /// Closing: write what is queued and what deferred replies still bring,
    /// then shut down the write side.
    Flushing,
    /// Write side shut: read and discard until EOF (a clean close, no reset
    /// that would destroy replies in flight) or the deadline.
    Lingering {
        /// When to give up waiting for the peer's EOF.
        until: Instant,
    },
}

/// Why a connection whose reading side is open takes no frames now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hold {
    /// Too much is queued for the peer: reading resumes below the low-water
    /// mark.
    Backpressure,
    /// The handler paused reading until then ([`Conn::pause_reading`](crate::Conn::pause_reading)).
    PausedUntil(Instant),
    /// A deferred reply is outstanding: later frames wait so that replies
    /// leave in request order.
    Deferred,
    /// Too much is queued for the connection's link (its upstream):
    /// reading resumes once the link's queue drains below the low-water
    /// mark.
    Link,
}

/// The byte stream under a connection, as its transitions use it.
pub(crate) trait ByteStream: io::Read {
    /// The session may open: no preamble (PROXY header, TLS handshake) is
    /// left.
    fn is_ready(&self) -> bool;
    /// While a preamble is not done: its deadline, and the reason a
    /// connection past it closes with.
    fn preamble_deadline(&self) -> Option<(Instant, fn() -> CloseReason)>;
    /// The peer's EOF waits behind the bytes last read (TLS).
    fn eof_pending(&self) -> bool;
    /// Bytes are waiting to be written below the replies (TLS records).
    fn wants_write(&self) -> bool;
    /// Shuts the sending side.
    fn shutdown_write(&mut self) -> io::Result<()>;
    /// Writes what `out` holds as the stream allows; counts the memory
    /// bytes written off `queued` (the connection's) and `held` (the
    /// worker's). `spare`: a buffer for file regions that cannot be sent
    /// zero-copy.
    fn write_out(
        &mut self,
        out: &mut Outbound,
        queued: &AtomicUsize,
        held: &AtomicUsize,
        spare: &mut [u8],
    ) -> Result<u64, WriteError>;
}

impl ByteStream for Transport {
    fn is_ready(&self) -> bool {
        Transport::is_ready(self)
    }
    fn preamble_deadline(&self) -> Option<(Instant, fn() -> CloseReason)> {
        Transport::preamble_deadline(self)
    }
    fn eof_pending(&self) -> bool {
        Transport::eof_pending(self)
    }
    fn wants_write(&self) -> bool {
        Transport::wants_write(self)
    }
    fn shutdown_write(&mut self) -> io::Result<()> {
        Transport::shutdown_write(self)
    }
    fn write_out(
        &mut self,
        out: &mut Outbound,
        queued: &AtomicUsize,
        held: &AtomicUsize,
        spare: &mut [u8],
    ) -> Result<u64, WriteError> {
        out.write_to(self, queued, held, spare)
    }
}

/// A scheduled wake-up of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Wake {
    /// A handler-set reading pause may be over.
    Resume,
    /// A handler timer may be due.
    Timer(u64),
    /// The link's deadline (its connect's, its linger's) may be due.
    Link,
}

/// What a connection is due for at a sweep of the timeouts.
#[derive(Debug)]
pub(crate) enum Due {
    /// The linger deadline passed: finish with the reason already set.
    EndLinger,
    /// Close now for this reason (a timeout).
    CloseNow(CloseReason),
    /// Close gracefully for this reason (a timeout with replies still
    /// queued: they are delivered first).
    Close(CloseReason),
    /// Draining, quiet, flushed: start the graceful close.
    Drain,
    /// A partial line has been quiet long enough: it is a line.
    PartialLine,
}

/// The limits a sweep checks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub(crate) idle: Duration,
    pub(crate) frame: Duration,
    pub(crate) quiet: Duration,
    /// A partial line quiet this long is a line.
    pub(crate) unterminated: Option<Duration>,
}

/// One connection on its worker: its byte stream (`T`: the worker's
/// [`Transport`], a scripted stream in tests), its life and session, its
/// framer, its reply queue and what its handler asked. Its transitions
/// (`drive.rs`) are its own methods and say what the worker must do next.
pub(crate) struct Connection<S, T = Transport> {
    pub(crate) sock: T,
    pub(crate) shared: Arc<ConnShared>,
    pub(crate) life: Life<S>,
    /// The unconsumed input and its decoder: at most one incomplete frame,
    /// or what the last read brought while frames were held.
    pub(crate) framer: Framer,
    pub(crate) out: Outbound,
    /// Reading stopped for backpressure (kept with hysteresis: set above the
    /// high-water mark, cleared below half of it).
    pub(crate) backpressure: bool,
    pub(crate) ctl: Control,
    pub(crate) last_io: Instant,
    pub(crate) last_read: Instant,
    /// When the frame now incomplete started (the frame timeout).
    pub(crate) partial_since: Option<Instant>,
    /// Bytes read and discarded while lingering (a `u32`: it stops at
    /// 1 MiB, and beside `backpressure` it costs no more than the flag).
    pub(crate) linger_read: u32,
    /// While the connection moves in from another worker: mail posted after
    /// the move, held until the mail posted before it has been forwarded.
    /// Boxed: a pointer in every connection, the vector only in one moving.
    #[allow(clippy::box_collection)]
    pub(crate) held: Option<Box<Vec<Mail>>>,
    /// Counts the connection as open until it is dropped.
    pub(crate) admission: Admission,
    /// While deferred replies are in progress: the order replies leave in.
    pub(crate) order: Option<Box<Order>>,
    /// The connection's link (its outbound connection), if it has one.
    /// Boxed: a pointer in every connection, the link only where there is one.
    pub(crate) link: Option<Box<LinkState>>,
}

impl<S, T: ByteStream> Connection<S, T> {
    pub(crate) fn new(
        sock: T,
        shared: Arc<ConnShared>,
        framer: Framer,
        admission: Admission,
        now: Instant,
    ) -> Self {
        Connection {
            sock,
            shared,
            life: Life::Preamble,
            framer,
            out: Outbound::default(),
            backpressure: false,
            ctl: Control::default(),
            last_io: now,
            last_read: now,
            partial_since: None,
            linger_read: 0,
            held: None,
            admission,
            order: None,
            link: None,
        }
    }

    /// The session and a [`Conn`] for a callback.
    /// `held`: the owning worker's count of queued bytes.
    pub(crate) fn parts<'a>(
        &'a mut self,
        held: &'a AtomicUsize,
        draining: bool,
    ) -> (Option<&'a mut S>, Conn<'a>) {
        let conn = Conn {
            shared: &self.shared,
            out: &mut self.out,
            held,
            draining,
            ctl: &mut self.ctl,
            order: &mut self.order,
            link: &mut self.link,
            closing: matches!(self.life, Life::Closing { .. }),
        };
        let session = match &mut self.life {
            Life::Preamble => None,
            Life::Open(session) | Life::Closing { session, .. } => Some(session),
        };
        (session, conn)
    }

    /// Why the connection is closing, once it is.
    pub(crate) fn closing_reason(&self) -> Option<&CloseReason> {
        match &self.life {
            Life::Closing { close, .. } => Some(&close.reason),
            Life::Preamble | Life::Open(_) => None,
        }
    }

    /// The session, once open.
    #[cfg(test)]
    pub(crate) fn session_mut(&mut self) -> Option<&mut S> {
        match &mut self.life {
            Life::Preamble => None,
            Life::Open(session) | Life::Closing { session, .. } => Some(session),
        }
    }

    /// The writing side: open until a close begins, then flushing, then
    /// lingering.
    pub(crate) fn writing(&self) -> Writing {
        match self.life {
            Life::Preamble | Life::Open(_) => Writing::Open,
            Life::Closing { ref close, .. } => match close.linger {
                None => Writing::Flushing,
                Some(until) => Writing::Lingering { until },
            },
        }
    }

    /// The preamble is done: the handler's `open` made `session`.
    pub(crate) fn open(&mut self, session: S) {
        self.life = Life::Open(session);
    }

    /// The write side is shut: read and discard until the peer's EOF or
    /// `until`.
    pub(crate) fn start_linger(&mut self, until: Instant) {
        if let Life::Closing { close, .. } = &mut self.life {
            close.linger = Some(until);
        }
    }

    /// Ends the connection: its session (none before `open`) and why.
    /// Its admission comes back to be dropped last, once the close is
    /// counted and the handler has closed.
    pub(crate) fn end(self, end: End) -> (Option<S>, CloseReason, Admission) {
        let (session, reason) = match (self.life, end) {
            (Life::Closing { session, close }, End::Lingered) if close.linger.is_some() => {
                (Some(session), close.reason)
            }
            (Life::Preamble, End::Now(reason)) => (None, reason),
            (Life::Open(session) | Life::Closing { session, .. }, End::Now(reason)) => {
                (Some(session), reason)
            }
            (Life::Preamble, End::Lingered) => (None, CloseReason::Forced),
            (Life::Open(session) | Life::Closing { session, .. }, End::Lingered) => {
                (Some(session), CloseReason::Forced)
            }
        };
        (session, reason, self.admission)
    }

    /// Why frames are held now, if they are.
    pub(crate) fn hold(&self) -> Option<Hold> {
        if self.backpressure {
            Some(Hold::Backpressure)
        } else if self.link.as_ref().is_some_and(|l| l.backpressure) {
            Some(Hold::Link)
        } else if let Some(until) = self.ctl.paused_until() {
            Some(Hold::PausedUntil(until))
        } else if self.shared.deferred.load(Ordering::Acquire) as usize >= self.shared.rules.max_deferred {
            Some(Hold::Deferred)
        } else {
            None
        }
    }

    /// The one predicate that decides whether to read and hand frames to
    /// the handler. (Reading ends with the writing side: an EOF from the
    /// peer starts the graceful close.)
    pub(crate) fn takes_frames(&self) -> bool {
        self.writing() == Writing::Open
            && self.hold().is_none()
            && !self.link.as_ref().is_some_and(|l| l.owner_eof)
    }

    /// Replies are still taken: open, or closing with the queue not yet
    /// flushed.
    pub(crate) fn accepts_output(&self) -> bool {
        matches!(self.writing(), Writing::Open | Writing::Flushing)
    }

    /// Updates the backpressure hold from what is queued; returns true when
    /// it was just released.
    pub(crate) fn update_backpressure(&mut self, high_water: usize) -> bool {
        let queued = self.shared.queued();
        let files = self.out.files();
        if let Some(link) = self.link.as_deref_mut() {
            // Released as the link's queue drains (`link_step`).
            link.backpressure |= link.queued() > high_water;
        }
        if !self.backpressure && (queued > high_water || files > MAX_QUEUED_FILES) {
            self.backpressure = true;
        } else if self.backpressure && queued <= high_water / 2 && files <= MAX_QUEUED_FILES / 2 {
            self.backpressure = false;
            return true;
        }
        false
    }

    /// The wake-ups the worker must schedule for what the handler asked
    /// since it last looked: the end of a new pause, timers armed or moved.
    pub(crate) fn schedule(&mut self, mut push: impl FnMut(Instant, Wake)) {
        if let Some(link) = self.link.as_deref_mut() {
            if let Some(at) = link.deadline().filter(|&at| link.wake_scheduled != Some(at)) {
                link.wake_scheduled = Some(at);
                push(at, Wake::Link);
            }
        }
        let Some(t) = self.ctl.timing_mut() else { return };
        if let Some(until) = t.paused_until {
            if t.pause_scheduled != Some(until) {
                t.pause_scheduled = Some(until);
                push(until, Wake::Resume);
            }
        }
        if std::mem::take(&mut t.timers_changed) {
            for &(id, at) in &t.timers {
                push(at, Wake::Timer(id));
            }
        }
    }

    /// Whether a flush has work: bytes to write, a close or a half-close
    /// to move on, a backpressure hold to release.
    pub(crate) fn wants_flush(&self) -> bool {
        !self.out.is_empty()
            || self.sock.wants_write()
            || self.backpressure
            || self.ctl.half_close == HalfClose::Asked
            || self.writing() == Writing::Flushing
            || self.link.as_ref().is_some_and(|l| l.wants_flush())
    }

    /// Starts the graceful close for `reason`: no more frames.
    pub(crate) fn begin_close(&mut self, reason: CloseReason) -> Closing {
        let session = match std::mem::replace(&mut self.life, Life::Preamble) {
            Life::Open(session) => session,
            Life::Preamble => return Closing::Now(reason),
            closing @ Life::Closing { .. } => {
                self.life = closing;
                return Closing::Already;
            }
        };
        self.life = Life::Closing { session, close: Box::new(Close { reason, linger: None }) };
        if let Some(link) = self.link.as_deref_mut() {
            // Its queue is flushed and it is shut with its owner.
            link.begin_close(CloseReason::Handler);
        }
        self.backpressure = false;
        self.framer.clear();
        self.partial_since = None;
        Closing::Began
    }

    /// The handler asked for a half-close and everything queued before it
    /// is written: the write side may be shut now.
    pub(crate) fn half_close_due(&self) -> bool {
        self.ctl.half_close == HalfClose::Asked && self.out.is_empty() && !self.sock.wants_write()
    }

    /// Everything is written and no deferred reply is outstanding: a
    /// flushing connection may shut down its write side.
    pub(crate) fn flushed(&self) -> bool {
        self.writing() == Writing::Flushing
            && self.out.is_empty()
            && !self.sock.wants_write()
            && !self.shared.deferred()
            && self.link.as_ref().is_none_or(|l| l.settled())
    }

    /// Whether the input ends mid-frame, and since when, after the decoder
    /// ran (`completed`: a frame was completed in this pass; `fed`: where
    /// the pass stopped, [`Fed::Stopped`] when frames are held or the
    /// connection is closing). Only the bytes
    /// of an incomplete frame count: frames held behind a deferred reply, a
    /// pause or backpressure wait on the server, and no more is read while
    /// they do, so the frame timeout does not run until they are served.
    pub(crate) fn track_partial(&mut self, fed: Fed, completed: bool, now: Instant) {
        let partial = fed == Fed::NeedsInput && self.framer.is_partial();
        if !partial {
            self.partial_since = None;
        } else if completed || self.partial_since.is_none() {
            self.partial_since = Some(now);
        }
    }

    /// Whether the connection waits on the server, not on the peer: a
    /// deferred reply is outstanding or the handler paused reading. The
    /// idle timeout does not run meanwhile; it counts again from when the
    /// wait ends ([`end_wait`](Connection::end_wait)).
    pub(crate) fn waits_on_server(&self) -> bool {
        self.shared.deferred() || self.ctl.paused_until().is_some()
    }

    /// A wait on the server ended (the last deferred reply was released, a
    /// pause ended): the idle timeout counts from now.
    pub(crate) fn end_wait(&mut self, now: Instant) {
        self.last_io = self.last_io.max(now);
    }

    /// What the timeouts say of this connection now.
    pub(crate) fn due(&self, now: Instant, t: Timeouts, draining: bool) -> Option<Due> {
        match self.writing() {
            Writing::Lingering { until } if now >= until => return Some(Due::EndLinger),
            _ => {}
        }
        if let Some((deadline, reason)) = self.sock.preamble_deadline() {
            if now >= deadline {
                return Some(Due::CloseNow(reason()));
            }
        }
        let last_io = self.link.as_ref().map_or(self.last_io, |l| l.last_io.max(self.last_io));
        if !self.waits_on_server() && now.saturating_duration_since(last_io) >= t.idle {
            return Some(Due::CloseNow(CloseReason::IdleTimeout));
        }
        if self.writing() != Writing::Open {
            return None;
        }
        let quiet_for = |d: Duration| now.saturating_duration_since(self.last_read) >= d;
        if self.partial_since.is_some() && self.framer.buffered() > 0 && t.unterminated.is_some_and(quiet_for)
        {
            return Some(Due::PartialLine);
        }
        if self.partial_since.is_some_and(|s| now.saturating_duration_since(s) >= t.frame) {
            // Replies already queued, or promised by deferred replies in
            // progress, still go out (a graceful close).
            let queued = !self.out.is_empty() || self.sock.wants_write() || self.shared.deferred();
            return Some(match queued {
                true => Due::Close(CloseReason::FrameTimeout),
                false => Due::CloseNow(CloseReason::FrameTimeout),
            });
        }
        let quiet = self.out.is_empty()
            && !self.shared.deferred()
            && self.framer.buffered() == 0
            && now.saturating_duration_since(self.last_read) >= t.quiet
            && self.link.as_ref().is_none_or(|l| l.quiet(now, t.quiet));
        (draining && quiet).then_some(Due::Drain)
    }
}
