//! A link's state as its owning connection holds it: the outbound socket,
//! where its connect stands, its framer, its queue, its two directions.
//! Below the handler's surface (a [`Conn`](crate::Conn) holds it, a
//! [`Link`](crate::Link) borrows it); the connection's transitions drive it.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::clock;
use crate::close::CloseReason;
use crate::framer::Framer;
use crate::framing::Framing;
use crate::outbound::Outbound;
use crate::stream::{Addr, Peer, Stream};
use crate::transport::Transport;

/// Where a link is in its life.
///
/// ```text
///   Connecting ──connected──▶ Open ──close() / owner closing──▶ Closing{flush, then linger}
///       │ refused, timeout      │ both directions done,              │ upstream EOF,
///       ▼ (Failed)              ▼ error, slow consumer               ▼ linger deadline
///     ended ◀────────────────── ended ◀────────────────────────────── ended
/// ```
#[derive(Debug)]
pub(crate) enum Phase {
    /// The connect is in progress, begun at `started`.
    Connecting { started: Instant, deadline: Instant },
    /// Connected: bytes move both ways.
    Open,
    /// A graceful close: what is queued is written, then the write side is
    /// shut and the link reads and discards until the upstream's EOF or the
    /// deadline (`linger`, once the write side is shut).
    Closing { reason: CloseReason, linger: Option<Instant> },
    /// The link ended for this reason; the owner hears it next.
    Failed(CloseReason),
}

/// The link's sending side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteSide {
    /// Bytes are taken.
    Open,
    /// `shutdown_write` was asked: shut once the queue is written.
    Asked,
    /// Shut.
    Shut,
}

/// One outbound connection and everything it holds.
pub(crate) struct LinkState {
    pub(crate) sock: Transport,
    pub(crate) addr: Addr,
    /// Known once connected.
    pub(crate) peer: Option<Peer>,
    pub(crate) phase: Phase,
    pub(crate) framer: Framer,
    pub(crate) out: Outbound,
    /// Bytes in `out`, not yet written.
    pub(crate) queued: AtomicUsize,
    pub(crate) write: WriteSide,
    /// The upstream's EOF was read.
    pub(crate) eof: bool,
    /// The owning connection's peer sent its EOF while linked: the owner
    /// reads no more and stays open for the upstream's reply.
    pub(crate) owner_eof: bool,
    /// The link's queue went over the high-water mark: the owner reads no
    /// more until it drains below half of it.
    pub(crate) backpressure: bool,
    /// Read the link again without waiting for an event: a hold ended with
    /// bytes possibly left in the socket (its events are edge-triggered).
    pub(crate) read_due: bool,
    /// Registered with the worker's poll.
    pub(crate) registered: bool,
    pub(crate) last_io: Instant,
    pub(crate) last_read: Instant,
    /// The deadline a wake-up is scheduled for (connect, linger).
    pub(crate) wake_scheduled: Option<Instant>,
}

impl LinkState {
    /// A link whose connect to `addr` began at `now` (`started`: the
    /// connect call's own result; an error ends the link at once).
    pub(crate) fn new(
        sock: Stream,
        addr: Addr,
        framing: Framing,
        connect_timeout: Duration,
        started: io::Result<()>,
        now: Instant,
    ) -> LinkState {
        let phase = match started {
            Ok(()) => Phase::Connecting { started: now, deadline: clock::after(now, connect_timeout) },
            Err(e) => Phase::Failed(CloseReason::ConnectFailed(e)),
        };
        LinkState {
            sock: Transport::plain(sock),
            addr,
            peer: None,
            phase,
            framer: Framer::new(framing),
            out: Outbound::default(),
            queued: AtomicUsize::new(0),
            write: WriteSide::Open,
            eof: false,
            owner_eof: false,
            backpressure: false,
            read_due: false,
            registered: false,
            last_io: now,
            last_read: now,
            wake_scheduled: None,
        }
    }

    /// Bytes queued and not yet written.
    pub(crate) fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// Connected and not closing: bytes move both ways.
    pub(crate) fn is_open(&self) -> bool {
        matches!(self.phase, Phase::Open)
    }

    /// Bytes may still be queued: connecting or open, write side not shut.
    pub(crate) fn takes_bytes(&self) -> bool {
        matches!(self.phase, Phase::Connecting { .. } | Phase::Open) && self.write == WriteSide::Open
    }

    /// The deadline the link waits for, if any: its connect's, its linger's.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Connecting { deadline, .. } => Some(deadline),
            Phase::Closing { linger, .. } => linger,
            Phase::Open | Phase::Failed(_) => None,
        }
    }

    /// Nothing is left to write and the write side is shut (or will never
    /// be used): the owner may close without waiting for the link.
    pub(crate) fn settled(&self) -> bool {
        match self.phase {
            Phase::Failed(_) => true,
            Phase::Closing { linger, .. } => linger.is_some(),
            Phase::Connecting { .. } | Phase::Open => false,
        }
    }

    /// Starts the link's graceful close for `reason` (no more frames from
    /// it): flush, shut, linger. A link still connecting with nothing
    /// queued ends at once.
    pub(crate) fn begin_close(&mut self, reason: CloseReason) {
        match &self.phase {
            Phase::Closing { .. } | Phase::Failed(_) => {}
            Phase::Connecting { .. } if self.out.is_empty() => self.phase = Phase::Failed(reason),
            Phase::Connecting { .. } | Phase::Open => {
                self.phase = Phase::Closing { reason, linger: None };
                self.framer.clear();
                self.backpressure = false;
            }
        }
    }

    /// Ends the link now for `reason` (an error): what is queued is dropped.
    pub(crate) fn fail(&mut self, reason: CloseReason, total: &AtomicUsize) {
        let dropped = self.out.clear(total);
        self.queued.fetch_sub(dropped.min(self.queued()), Ordering::AcqRel);
        self.phase = Phase::Failed(reason);
        self.backpressure = false;
    }

    /// Whether a flush of the link has work: bytes to write, a half-close
    /// or a close to move on, an end to report, a hold to release.
    pub(crate) fn wants_flush(&self) -> bool {
        match self.phase {
            Phase::Connecting { .. } => false,
            Phase::Failed(_) => true,
            Phase::Closing { linger, .. } => linger.is_none(),
            Phase::Open => !self.out.is_empty() || self.write == WriteSide::Asked || self.backpressure,
        }
    }

    /// Quiet for a drain: connected, nothing queued or held, nothing read
    /// for `quiet`.
    pub(crate) fn quiet(&self, now: Instant, quiet: Duration) -> bool {
        !matches!(self.phase, Phase::Connecting { .. })
            && self.out.is_empty()
            && self.framer.buffered() == 0
            && now.saturating_duration_since(self.last_read) >= quiet
    }

    /// The socket under the link.
    pub(crate) fn stream(&self) -> Option<&Stream> {
        self.sock.plain_stream()
    }
}
