//! The transitions of a connection's link (its outbound connection): its
//! connect completing or failing, its bytes read and handed to the owner's
//! handler as [`LinkEvent`]s, its queue written, its half-close, its
//! graceful close and its end. Like the connection's own transitions they
//! return what the worker must do next for the owner; nothing here touches
//! the worker's table or poll (the worker registers the link's socket when
//! [`Connection::link_unregistered`] says so).

use std::io::{self, Read};
use std::time::Instant;

use crate::clock;
use crate::close::CloseReason;
use crate::framer::{Fed, Framer, Item};
use crate::handler::Handler;
use crate::link::state::{LinkState, Phase, WriteSide};
use crate::link::LinkEvent;
use crate::outbound::WriteError;
use crate::stats::{add, bump};
use crate::transport::reason_of;

use super::{ByteStream, Connection, Cx, Next, Writing};

/// Reads of the link per turn before other connections get one.
const READS_PER_TURN: usize = 16;
/// Bytes a lingering link reads and discards at most.
const LINGER_BYTES: usize = 1 << 20;

/// How far to read a link's socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkRead {
    /// Not now (a write, a flush).
    No,
    /// A readable edge: until a short read.
    Edge,
    /// The upstream's FIN or an error came with the edge, or a read was
    /// due: until the socket would block or ends.
    ToEnd,
}

/// The more pressing of two things to do next.
fn merge(a: Next, b: Next) -> Next {
    match (a, b) {
        (end @ Next::End(_), _) | (_, end @ Next::End(_)) => end,
        // (The preamble's steps come before any link exists.)
        (pre @ (Next::Preamble | Next::Handshake(_) | Next::Open), _)
        | (_, pre @ (Next::Preamble | Next::Handshake(_) | Next::Open)) => pre,
        (Next::Read, _) | (_, Next::Read) => Next::Read,
        (Next::Wait, Next::Wait) => Next::Wait,
    }
}

impl<S, T: ByteStream> Connection<S, T> {
    /// The link, if it has one that has not ended.
    pub(crate) fn live_link(&mut self) -> Option<&mut LinkState> {
        self.link.as_deref_mut().filter(|l| !matches!(l.phase, Phase::Failed(_)))
    }

    /// The link's socket waits to be registered with the poll.
    pub(crate) fn link_unregistered(&mut self) -> Option<&mut LinkState> {
        self.link.as_deref_mut().filter(|l| !l.registered && matches!(l.phase, Phase::Connecting { .. }))
    }

    /// The link should be read again without waiting for an event.
    pub(crate) fn link_read_due(&self) -> bool {
        self.link.as_ref().is_some_and(|l| l.read_due)
    }

    /// Whether the link reads and hands frames to the handler now: it is
    /// open, its upstream has not finished, and the owner takes replies
    /// with its queue under the high-water mark.
    fn link_takes_frames(&self) -> bool {
        self.writing() == Writing::Open
            && !self.backpressure
            && self.link.as_ref().is_some_and(|l| l.is_open() && !l.eof)
    }

    /// Calls the handler's `link` with `event`.
    fn call_link<H: Handler<Session = S>>(&mut self, cx: &Cx<'_, H>, event: LinkEvent<'_>) -> Next {
        match self.call(cx, |h, s, c| h.link(s, event, c).into()) {
            Some(outcome) => self.settle(outcome, cx.high_water),
            None => Next::Wait,
        }
    }

    /// Moves the link on: its connect (on an `event` of its socket), its
    /// queue written, its socket read (`read`, or a read that was due),
    /// its end once both its directions are done or it failed.
    pub(crate) fn link_step<H: Handler<Session = S>>(
        &mut self,
        cx: &Cx<'_, H>,
        scratch: &mut [u8],
        event: bool,
        read: LinkRead,
    ) -> Next {
        let Some(link) = self.link.as_deref_mut() else { return Next::Wait };
        if let (Phase::Connecting { started, .. }, true) = (&link.phase, event) {
            let started = *started;
            match link.stream().map_or(Ok(true), |s| s.connect_done()) {
                Ok(false) => return Next::Wait,
                Ok(true) => {
                    link.phase = Phase::Open;
                    link.peer = link.stream().and_then(|s| s.peer().ok());
                    link.last_io = cx.now;
                    link.last_read = cx.now;
                    bump(&cx.counters.links_opened);
                    let took = cx.now.saturating_duration_since(started);
                    if let next @ Next::End(_) = self.call_link(cx, LinkEvent::Connected { took }) {
                        return next;
                    }
                }
                Err(e) => link.fail(CloseReason::ConnectFailed(e), &cx.counters.queued),
            }
        }
        let mut next = self.link_flush(cx, scratch);
        if let Next::End(_) = next {
            return next;
        }
        let due = self.link.as_deref_mut().is_some_and(|l| std::mem::take(&mut l.read_due));
        if read != LinkRead::No || due {
            next = merge(next, self.link_read(cx, scratch, read != LinkRead::Edge));
            if let Next::End(_) = next {
                return next;
            }
        }
        match self.link.as_deref() {
            Some(l) if matches!(l.phase, Phase::Failed(_)) => merge(next, self.end_link(cx)),
            Some(l) if l.is_open() && l.eof && l.write == WriteSide::Shut => {
                if let Some(l) = self.link.as_deref_mut() {
                    l.phase = Phase::Failed(CloseReason::PeerClosed);
                }
                merge(next, self.end_link(cx))
            }
            _ => next,
        }
    }

    /// Writes the link's queue; releases the owner's hold below the
    /// low-water mark (the handler hears [`LinkEvent::Drained`]); shuts the
    /// write side for a half-close, or for a close once the queue is
    /// written.
    fn link_flush<H: Handler<Session = S>>(&mut self, cx: &Cx<'_, H>, scratch: &mut [u8]) -> Next {
        let Some(link) = self.link.as_deref_mut() else { return Next::Wait };
        if !matches!(link.phase, Phase::Open | Phase::Closing { linger: None, .. }) {
            return Next::Wait;
        }
        if !link.out.is_empty() {
            match link.out.write_to(&mut link.sock, &link.queued, &cx.counters.queued, scratch) {
                Ok(0) => {}
                Ok(n) => {
                    link.last_io = cx.now;
                    add(&cx.counters.link_bytes_out, n);
                }
                Err(WriteError::Io(e)) => {
                    link.fail(reason_of(e), &cx.counters.queued);
                    return Next::Wait;
                }
                Err(WriteError::FileTruncated) => {
                    link.fail(CloseReason::FileTruncated, &cx.counters.queued);
                    return Next::Wait;
                }
            }
        }
        if link.out.is_empty() {
            let closing = matches!(link.phase, Phase::Closing { .. });
            if link.write == WriteSide::Asked || (closing && link.write == WriteSide::Open) {
                link.write = WriteSide::Shut;
                if let Err(e) = link.sock.shutdown_write() {
                    link.fail(reason_of(e), &cx.counters.queued);
                    return Next::Wait;
                }
            }
            if let Phase::Closing { linger, .. } = &mut link.phase {
                *linger = Some(clock::after(cx.now, cx.linger));
                // Anything the upstream sends now is read and discarded.
                link.read_due = true;
            }
        }
        let released = link.backpressure && link.queued() <= cx.high_water / 2;
        if !released {
            return Next::Wait;
        }
        link.backpressure = false;
        match self.call_link(cx, LinkEvent::Drained) {
            Next::Wait | Next::Read => self.reading_again(),
            next => next,
        }
    }

    /// Reads the link: hands its frames to the handler while it takes them
    /// (a closing link reads and discards until the upstream's EOF).
    fn link_read<H: Handler<Session = S>>(
        &mut self,
        cx: &Cx<'_, H>,
        scratch: &mut [u8],
        to_eof: bool,
    ) -> Next {
        if self.link.as_ref().is_some_and(|l| matches!(l.phase, Phase::Closing { linger: Some(_), .. })) {
            return self.link_linger(cx, scratch);
        }
        if !self.link_takes_frames() {
            return Next::Wait;
        }
        if self.link.as_ref().is_some_and(|l| l.framer.buffered() > 0) {
            if let Err(next) = self.serve_link(cx, &[]) {
                return next;
            }
        }
        for _ in 0..READS_PER_TURN {
            let Some(link) = self.link.as_deref_mut() else { return Next::Wait };
            match link.sock.read(scratch) {
                Ok(0) => return self.link_eof(cx),
                Ok(n) => {
                    link.last_io = cx.now;
                    link.last_read = cx.now;
                    add(&cx.counters.link_bytes_in, n as u64);
                    if let Err(next) = self.serve_link(cx, &scratch[..n]) {
                        return next;
                    }
                    // A short read drained the socket, unless the upstream's
                    // FIN came with this edge: then read on to the EOF.
                    if n < scratch.len() && !to_eof {
                        return Next::Wait;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Wait,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    link.fail(reason_of(e), &cx.counters.queued);
                    return Next::Wait;
                }
            }
        }
        // The turn ran out: the rest in the next pass.
        if let Some(link) = self.link.as_deref_mut() {
            link.read_due = true;
        }
        Next::Wait
    }

    /// Cuts frames from what the link's framer holds plus `fresh` and hands
    /// them to the handler while the link takes them; the rest is held.
    /// `Ok`: reading may go on.
    fn serve_link<H: Handler<Session = S>>(&mut self, cx: &Cx<'_, H>, fresh: &[u8]) -> Result<(), Next> {
        let Some(link) = self.link.as_deref_mut() else { return Err(Next::Wait) };
        let placeholder = Framer::new(link.framer.framing());
        let mut framer = std::mem::replace(&mut link.framer, placeholder);
        let mut next = Next::Wait;
        let fed = if self.link_takes_frames() {
            framer.feed(fresh, |item| {
                next = match item {
                    Item::Frame(frame) => self.call_link(cx, LinkEvent::Frame(frame)),
                    Item::Error(err) => {
                        log::info!(
                            "{}: connection {}: link: {err}; closing it",
                            self.shared.peer,
                            self.shared.id
                        );
                        if let Some(l) = self.link.as_deref_mut() {
                            l.fail(CloseReason::BadFrame(err), &cx.counters.queued);
                        }
                        Next::Wait
                    }
                };
                self.update_backpressure(cx.high_water);
                matches!(next, Next::Wait) && self.link_takes_frames()
            })
        } else {
            framer.hold(fresh);
            Fed::Stopped
        };
        if let Some(link) = self.link.as_deref_mut().filter(|l| l.is_open()) {
            link.framer = framer;
        }
        match next {
            Next::Wait if fed == Fed::NeedsInput && self.link_takes_frames() => Ok(()),
            next => Err(next),
        }
    }

    /// The upstream finished sending: what the framer holds is served,
    /// then the handler hears [`LinkEvent::Eof`].
    fn link_eof<H: Handler<Session = S>>(&mut self, cx: &Cx<'_, H>) -> Next {
        if let Err(next @ Next::End(_)) = self.serve_link(cx, &[]) {
            return next;
        }
        let Some(link) = self.link.as_deref_mut() else { return Next::Wait };
        link.eof = true;
        link.framer.clear();
        self.call_link(cx, LinkEvent::Eof)
    }

    /// A closing link reads and discards until the upstream's EOF: then
    /// it ends.
    fn link_linger<H: Handler<Session = S>>(&mut self, cx: &Cx<'_, H>, scratch: &mut [u8]) -> Next {
        let Some(link) = self.link.as_deref_mut() else { return Next::Wait };
        let mut read = 0;
        loop {
            if link.eof {
                break;
            }
            match link.sock.read(scratch) {
                Ok(0) => break,
                Ok(n) => {
                    add(&cx.counters.link_bytes_in, n as u64);
                    read += n;
                    if read > LINGER_BYTES {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Wait,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        self.finish_link_close();
        self.end_link(cx)
    }

    /// A closing link is done: it ends with the reason its close began with.
    fn finish_link_close(&mut self) {
        if let Some(link) = self.link.as_deref_mut() {
            if let Phase::Closing { reason, .. } = std::mem::replace(&mut link.phase, Phase::Open) {
                link.phase = Phase::Failed(reason);
            }
        }
    }

    /// The link's deadline may have come (stale wake-ups do nothing): a
    /// connect that took too long fails, a linger ends.
    pub(crate) fn link_wake<H: Handler<Session = S>>(&mut self, cx: &Cx<'_, H>, at: Instant) -> Next {
        let Some(link) = self.link.as_deref_mut() else { return Next::Wait };
        if link.wake_scheduled != Some(at) || link.deadline() != Some(at) {
            return Next::Wait;
        }
        link.wake_scheduled = None;
        match link.phase {
            Phase::Connecting { .. } => link.fail(CloseReason::ConnectTimeout, &cx.counters.queued),
            Phase::Closing { .. } => self.finish_link_close(),
            Phase::Open | Phase::Failed(_) => return Next::Wait,
        }
        self.end_link(cx)
    }

    /// Takes the ended link out of the connection: counted, logged, its
    /// queue dropped, its socket closed; then the handler hears
    /// [`LinkEvent::Closed`]. A connection whose peer had already sent its
    /// EOF closes now, unless the handler opened another link.
    pub(crate) fn end_link<H: Handler<Session = S>>(&mut self, cx: &Cx<'_, H>) -> Next {
        let Some(mut link) = self.link.take() else { return Next::Wait };
        let reason = match std::mem::replace(&mut link.phase, Phase::Open) {
            Phase::Failed(reason) | Phase::Closing { reason, .. } => reason,
            Phase::Connecting { .. } | Phase::Open => CloseReason::Forced,
        };
        let dropped = link.out.clear(&cx.counters.queued);
        link.queued.fetch_sub(dropped.min(link.queued()), std::sync::atomic::Ordering::AcqRel);
        let (peer, id) = (self.shared.peer, self.shared.id);
        match &reason {
            CloseReason::ConnectFailed(e) => {
                bump(&cx.counters.link_connect_failures);
                log::info!("{peer}: connection {id}: link to {} failed: {e}", link.addr);
            }
            CloseReason::ConnectTimeout => {
                bump(&cx.counters.link_connect_failures);
                log::info!("{peer}: connection {id}: link to {} failed: connect timed out", link.addr);
            }
            r if r.is_notable() => log::info!("{peer}: connection {id}: link to {} closed: {r}", link.addr),
            r => log::debug!("{peer}: connection {id}: link to {} closed: {r}", link.addr),
        }
        let (owner_eof, held) = (link.owner_eof, link.backpressure);
        drop(link);
        let next = self.call_link(cx, LinkEvent::Closed(&reason));
        match next {
            Next::Wait | Next::Read if owner_eof && self.link.is_none() => {
                self.close(CloseReason::PeerClosed)
            }
            Next::Wait | Next::Read if held || owner_eof => self.reading_again(),
            next => next,
        }
    }

    /// Drops the link with its owner (the owner is being removed): its
    /// queue is counted off the worker's.
    pub(crate) fn drop_link(&mut self, total: &std::sync::atomic::AtomicUsize) {
        if let Some(mut link) = self.link.take() {
            link.out.clear(total);
            log::debug!(
                "{}: connection {}: link to {} closed with its connection",
                self.shared.peer,
                self.shared.id,
                link.addr
            );
        }
    }
}
