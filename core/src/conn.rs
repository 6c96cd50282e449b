//! Replying to a connection: [`Conn`] inside a callback, [`ConnHandle`] from
//! anywhere.

use std::fmt;
use std::fs::File;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::framing::{EncodeError, Framing};
use crate::link::state::LinkState;
use crate::mailbox::{ConnKey, Mail, Mailbox, Pending, Route, To};
use crate::message::{Message, Payload};
use crate::order::{Order, Parked};
use crate::outbound::Outbound;
use crate::pool::{BlockingPool, SpawnError};
use crate::stats::{bump, Counters};
use crate::stream::Peer;

/// What happens when a [`ConnHandle::send`] would take a connection past its
/// outbound budget ([`ServerBuilder::max_outbound`](crate::ServerBuilder::max_outbound)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SlowConsumerPolicy {
    /// Close the connection (reason [`CloseReason::SlowConsumer`](crate::CloseReason::SlowConsumer)).
    #[default]
    Disconnect,
    /// Drop the message and keep the connection; counted and logged once.
    DropMessage,
}

/// Why a [`ConnHandle::send`] did not queue the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// The connection is closed or closing.
    Closed,
    /// `send_frame`: the body cannot be one frame of the handler's framing;
    /// nothing was queued.
    Frame(EncodeError),
    /// Over budget, drop policy: the message was dropped.
    Dropped,
    /// Over budget, disconnect policy: the message was dropped and the
    /// connection is being closed as a slow consumer.
    Disconnected,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendError::Closed => "connection closed",
            SendError::Frame(e) => return write!(f, "cannot frame the message: {e}"),
            SendError::Dropped => "outbound budget exceeded: message dropped",
            SendError::Disconnected => "outbound budget exceeded: connection disconnected",
        })
    }
}

impl std::error::Error for SendError {}

/// Why [`ConnHandle::wait_below`] returned without the queue below the mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WaitError {
    /// The connection is closed or closing (or its write side shut).
    Closed,
    /// The timeout passed first.
    TimedOut,
}

impl fmt::Display for WaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WaitError::Closed => "connection closed",
            WaitError::TimedOut => "timed out waiting for the connection's queue to drain",
        })
    }
}

impl std::error::Error for WaitError {}

/// The part of a connection shared with its handles.
pub(crate) struct ConnShared {
    pub(crate) id: u64,
    /// Where mail for the connection goes (its worker and key there).
    pub(crate) route: Mutex<Route>,
    /// A [`Mail::Inbox`] is on its way (or the worker is gone): no need to
    /// post another. Changed under the route's lock, with the inbox.
    notified: AtomicBool,
    /// Flags set once and never cleared: [`WARNED`], [`WAITING`]. (One
    /// byte for both: a connection's shared part stays within 120 bytes,
    /// one size class of the allocator below 128.)
    once: AtomicU8,
    pub(crate) peer: Peer,
    /// Bytes queued for this connection and not yet written, in its queue or
    /// on the way in its worker's mailbox.
    pub(crate) queued: AtomicUsize,
    pub(crate) closed: AtomicBool,
    /// The handler asked for a half-close: nothing more may be sent.
    pub(crate) write_shut: AtomicBool,
    /// Where producers wait for the queue to shrink (with the route's
    /// lock).
    written: Condvar,
    /// Deferred replies outstanding: frames after them wait, and a graceful
    /// close waits for them.
    pub(crate) deferred: AtomicU32,
    /// The server's rules for sending (and its counters), shared by every
    /// connection of a worker.
    pub(crate) rules: Arc<SendRules>,
}

/// [`ConnShared::once`]: the slow-consumer warning was logged.
const WARNED: u8 = 1;
/// [`ConnShared::once`]: a producer has waited in
/// [`ConnHandle::wait_below`]: the worker wakes the waiters whenever it
/// writes (a connection fed by a waiting producer pays a lock per write).
const WAITING: u8 = 2;

/// What every connection of a server has alike about sending: its queue
/// limits, the slow-consumer policy and the handler's framing. One per
/// worker, shared by its connections (a connection that moves takes it
/// along), so a connection pays a pointer for them, not their size.
#[derive(Debug)]
pub(crate) struct SendRules {
    pub(crate) max_outbound: usize,
    pub(crate) max_outbound_total: usize,
    pub(crate) policy: SlowConsumerPolicy,
    /// The handler's framing, to encode replies with.
    pub(crate) framing: Framing,
    /// Deferred replies in progress at most before frames wait.
    pub(crate) max_deferred: usize,
    /// Where [`Conn::spawn_blocking`] runs its jobs (the server's pool).
    pub(crate) blocking: Arc<BlockingPool>,
    /// The server's counters (queued bytes, open connections, drops).
    pub(crate) stats: Arc<Counters>,
}

impl ConnShared {
    pub(crate) fn new(
        id: u64,
        key: ConnKey,
        peer: Peer,
        rules: Arc<SendRules>,
        mailbox: Arc<Mailbox>,
    ) -> ConnShared {
        ConnShared {
            id,
            route: Mutex::new(Route { mailbox, key, inbox: Vec::new() }),
            notified: AtomicBool::new(false),
            once: AtomicU8::new(0),
            peer,
            queued: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            write_shut: AtomicBool::new(false),
            written: Condvar::new(),
            deferred: AtomicU32::new(0),
            rules,
        }
    }

    /// Queues `item` in the inbox and tells the worker if it has not been
    /// told yet: the worker hears of an inbox through one [`Mail::Inbox`]
    /// per batch, so a broadcast to many connections costs a lock and a
    /// push each, and a connection that receives many messages in one loop
    /// pass is told once. Fails, leaving the item to be dropped with the
    /// connection, when the worker has stopped.
    pub(crate) fn enqueue(&self, item: Pending) -> Result<(), ()> {
        let mut route = self.route.lock();
        route.inbox.push(item);
        if self.notified.swap(true, Ordering::Relaxed) {
            return Ok(());
        }
        if route.mailbox.post(Mail::Inbox { to: To { key: route.key, id: self.id } }).is_err() {
            // Nothing will take the inbox again: later sends see `closed`.
            self.closed.store(true, Ordering::Release);
            return Err(());
        }
        Ok(())
    }

    /// Takes what the inbox holds into `into` (empty), in order, and lets
    /// the next item notify the worker again.
    pub(crate) fn take_inbox(&self, into: &mut Vec<Pending>) {
        let mut route = self.route.lock();
        self.notified.store(false, Ordering::Relaxed);
        std::mem::swap(&mut route.inbox, into);
    }

    /// Bytes were written (or dropped, or the connection closed): wakes
    /// the producers waiting in [`ConnHandle::wait_below`], if any ever
    /// waited.
    pub(crate) fn wake_producers(&self) {
        // Against the waiter's fence: either it sees the new count, or
        // this sees its flag and takes the lock it waits under.
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.once.load(Ordering::Relaxed) & WAITING != 0 {
            let _route = self.route.lock();
            self.written.notify_all();
        }
    }

    /// Bytes queued for this connection.
    pub(crate) fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// Counts `n` more bytes queued; returns the count before.
    pub(crate) fn add_queued(&self, n: usize) -> usize {
        self.queued.fetch_add(n, Ordering::AcqRel)
    }

    /// Counts `n` bytes written or dropped.
    pub(crate) fn sub_queued(&self, n: usize) {
        self.queued.fetch_sub(n, Ordering::AcqRel);
    }

    /// Deferred replies outstanding.
    pub(crate) fn deferred(&self) -> bool {
        self.deferred.load(Ordering::Acquire) > 0
    }

    /// Whether queueing `len` more bytes (on top of `before`) breaks a
    /// budget: the connection's own, or the server-wide one while this
    /// connection holds more than its fair share of it.
    fn over_budget(&self, before: usize, len: usize) -> bool {
        let after = before.saturating_add(len);
        if after > self.rules.max_outbound {
            return true;
        }
        // Within its fair share first: the server-wide total sums counters
        // that every worker writes as it writes, which a broadcast to a
        // thousand members would otherwise read a thousand times.
        let open = self.rules.stats.open.load(Ordering::Acquire).max(1);
        if after <= self.rules.max_outbound_total / open {
            return false;
        }
        self.rules.stats.queued() > self.rules.max_outbound_total
    }
}

/// A handle to send to a connection from any thread: `Clone + Send + Sync`.
///
/// Messages sent through handles go into the connection's inbox, which its
/// worker takes in one piece, and leave in the order they were sent (the
/// order the inbox saw, whatever the sending threads). Every connection
/// has an outbound budget: a send that would take its queued bytes past the
/// budget is refused and the connection's [`SlowConsumerPolicy`] applies, so
/// a slow reader never blocks the sender nor grows memory without bound.
#[derive(Clone)]
pub struct ConnHandle {
    shared: Arc<ConnShared>,
}

impl fmt::Debug for ConnHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnHandle").field("id", &self.shared.id).field("peer", &self.shared.peer).finish()
    }
}

impl ConnHandle {
    pub(crate) fn new(shared: Arc<ConnShared>) -> ConnHandle {
        ConnHandle { shared }
    }

    /// The connection's id, unique for the life of the server.
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    /// The peer's address; for a Unix socket peer the unspecified address
    /// `0.0.0.0:0` ([`peer`](Self::peer) has its credentials).
    pub fn peer_addr(&self) -> SocketAddr {
        self.shared.peer.ip_or_unspecified()
    }

    /// The peer: its IP address, or a Unix socket peer's credentials
    /// (uid, gid, pid).
    pub fn peer(&self) -> Peer {
        self.shared.peer
    }

    /// Bytes queued for the connection and not yet written, counting those
    /// still on their way to its worker (file regions not included).
    pub fn queued(&self) -> usize {
        self.shared.queued()
    }

    /// Whether the connection is closed or closing.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// Queues `msg` for the connection without waiting: anything a
    /// [`Payload`] is made from (`&[u8]`, `b"…"`, `&str`, `String`,
    /// `Vec<u8>`, [`Message`]; borrowed bytes are copied once). See the
    /// type's docs for the budget; a message larger than the whole budget is
    /// never sent.
    pub fn send<'a>(&self, msg: impl Into<Payload<'a>>) -> Result<(), SendError> {
        self.send_in(None, msg)
    }

    /// Sends for a deferred reply's segment (`seq`), or as a plain handle.
    fn send_in<'a>(&self, seq: Option<u64>, msg: impl Into<Payload<'a>>) -> Result<(), SendError> {
        let s = &*self.shared;
        if s.closed.load(Ordering::Acquire) || s.write_shut.load(Ordering::Acquire) {
            return Err(SendError::Closed);
        }
        let msg = msg.into().into_message();
        let len = msg.len();
        let before = s.add_queued(len);
        if s.over_budget(before, len) {
            s.sub_queued(len);
            return Err(self.over_budget(before));
        }
        s.enqueue(Pending::Send { seq, msg }).map_err(|()| {
            s.sub_queued(len);
            SendError::Closed
        })
    }

    /// Blocks the calling thread until fewer than `mark` bytes are queued
    /// for the connection, for at most `timeout`: backpressure for a
    /// producer thread (a relay, a feed), so it never outruns a slow
    /// reader into the slow-consumer policy and never polls
    /// [`queued`](ConnHandle::queued). The worker wakes it as it writes.
    /// Pick a mark below the outbound budget by at least the largest
    /// message the producer sends. Never call it on a worker thread (in a
    /// callback): the worker that would drain the queue would be the one
    /// waiting.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use switchboard::{ConnHandle, WaitError};
    /// fn relay(to: ConnHandle, chunks: impl Iterator<Item = Vec<u8>>) -> Result<(), WaitError> {
    ///     for chunk in chunks {
    ///         to.wait_below(256 << 10, Duration::from_secs(30))?;
    ///         to.send(chunk).map_err(|_| WaitError::Closed)?;
    ///     }
    ///     Ok(())
    /// }
    /// ```
    pub fn wait_below(&self, mark: usize, timeout: Duration) -> Result<(), WaitError> {
        let s = &*self.shared;
        let deadline = crate::clock::after(Instant::now(), timeout);
        let mut route = s.route.lock();
        s.once.fetch_or(WAITING, Ordering::Relaxed);
        loop {
            // Against the worker's fence in `wake_producers`.
            std::sync::atomic::fence(Ordering::SeqCst);
            if s.closed.load(Ordering::Acquire) || s.write_shut.load(Ordering::Acquire) {
                return Err(WaitError::Closed);
            }
            if s.queued() < mark {
                return Ok(());
            }
            if s.written.wait_until(&mut route, deadline).timed_out() {
                return match s.queued() < mark {
                    true => Ok(()),
                    false => Err(WaitError::TimedOut),
                };
            }
        }
    }

    /// Queues `body` as one frame of the handler's
    /// [`framing`](crate::Handler::framing), as [`Conn::send_frame`] does
    /// (one message: the prefix or newline and the body).
    pub fn send_frame(&self, body: &[u8]) -> Result<(), SendError> {
        self.send_frame_in(None, body)
    }

    fn send_frame_in(&self, seq: Option<u64>, body: &[u8]) -> Result<(), SendError> {
        let mut frame = Vec::new();
        self.shared.rules.framing.encode(body, &mut frame).map_err(SendError::Frame)?;
        self.send_in(seq, frame)
    }

    fn over_budget(&self, queued: usize) -> SendError {
        let s = &*self.shared;
        match s.rules.policy {
            SlowConsumerPolicy::DropMessage => {
                bump(&s.rules.stats.messages_dropped);
                if s.once.fetch_or(WARNED, Ordering::AcqRel) & WARNED == 0 {
                    log::warn!(
                        "{} (conn {}): slow consumer, {queued} bytes queued of a {}-byte budget; \
                         dropping messages",
                        s.peer,
                        s.id,
                        s.rules.max_outbound
                    );
                }
                SendError::Dropped
            }
            SlowConsumerPolicy::Disconnect => {
                if !s.closed.swap(true, Ordering::AcqRel) {
                    bump(&s.rules.stats.slow_consumer_disconnects);
                    let _ = s.enqueue(Pending::Close { slow: true });
                }
                SendError::Disconnected
            }
        }
    }

    /// Queues `len` bytes of `file` from `offset`, sent zero-copy after
    /// everything queued before it, as [`Conn::send_file`] does. This lets a
    /// reply that needs blocking work (reading a file to hash it, say) be
    /// prepared on another thread and still go out in order. File regions
    /// hold no memory and do not count against the budget.
    pub fn send_file(&self, file: Arc<File>, offset: u64, len: u64) -> Result<(), SendError> {
        self.send_file_in(None, file, offset, len)
    }

    fn send_file_in(
        &self,
        seq: Option<u64>,
        file: Arc<File>,
        offset: u64,
        len: u64,
    ) -> Result<(), SendError> {
        let s = &*self.shared;
        if s.closed.load(Ordering::Acquire) || s.write_shut.load(Ordering::Acquire) {
            return Err(SendError::Closed);
        }
        if len == 0 {
            return Ok(());
        }
        s.enqueue(Pending::SendFile { seq, file, offset, len }).map_err(|()| SendError::Closed)
    }

    /// Half-closes the connection, as [`Conn::shutdown_write`] does: what
    /// was queued before (from any thread) is written, then the write side
    /// is shut; later sends fail with [`SendError::Closed`]. The connection
    /// stays open for reading.
    pub fn shutdown_write(&self) {
        let s = &*self.shared;
        if !s.write_shut.swap(true, Ordering::AcqRel) {
            let _ = s.enqueue(Pending::ShutdownWrite);
        }
    }

    /// Asks the connection to close once what is queued has been sent (as
    /// [`Flow::Close`](crate::Flow::Close) would).
    pub fn close(&self) {
        let s = &*self.shared;
        let _ = s.enqueue(Pending::Close { slow: false });
    }
}

/// A connection as seen from inside a [`Handler`](crate::Handler) callback:
/// replies go through it and leave in the order they were queued.
pub struct Conn<'a> {
    pub(crate) shared: &'a Arc<ConnShared>,
    pub(crate) out: &'a mut Outbound,
    /// The owning worker's count of queued bytes.
    pub(crate) held: &'a AtomicUsize,
    pub(crate) draining: bool,
    /// What the callback asked of the worker (pause, close, timers).
    pub(crate) ctl: &'a mut Control,
    /// The order of replies while deferred ones are in progress.
    pub(crate) order: &'a mut Option<Box<Order>>,
    /// The connection's link (its outbound connection), if it has one.
    pub(crate) link: &'a mut Option<Box<LinkState>>,
    /// The connection is closing: no link may be opened.
    pub(crate) closing: bool,
}

impl fmt::Debug for Conn<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("id", &self.shared.id)
            .field("peer", &self.shared.peer)
            .field("queued", &self.queued())
            .finish()
    }
}

/// What a handler callback asked of the worker through its
/// [`Conn`](crate::Conn); the worker settles it after every callback.
#[derive(Debug, Default)]
pub(crate) struct Control {
    /// Close once the callback returns (as [`Flow::Close`](crate::Flow::Close)).
    pub(crate) close: bool,
    /// The handler's half-close ([`Conn::shutdown_write`](crate::Conn::shutdown_write)).
    pub(crate) half_close: HalfClose,
    /// A reading pause and timers, which few connections have: one pointer
    /// in every connection, made by the first pause or timer and freed
    /// when none is left ([`Control::tidy`]).
    timing: Option<Box<Timing>>,
}

/// A connection's reading pause and timers.
#[derive(Debug, Default)]
pub(crate) struct Timing {
    /// Reading is paused until then.
    pub(crate) paused_until: Option<Instant>,
    /// The pause deadline the worker has a wake-up scheduled for.
    pub(crate) pause_scheduled: Option<Instant>,
    /// Armed timers: (id, deadline).
    pub(crate) timers: Vec<(u64, Instant)>,
    /// Some timer was armed or moved earlier since the worker last looked.
    pub(crate) timers_changed: bool,
}

impl Control {
    /// Until when reading is paused, if it is.
    pub(crate) fn paused_until(&self) -> Option<Instant> {
        self.timing.as_ref().and_then(|t| t.paused_until)
    }

    /// The armed timers: (id, deadline).
    pub(crate) fn timers(&self) -> &[(u64, Instant)] {
        self.timing.as_ref().map_or(&[], |t| &t.timers)
    }

    /// The pause and timers, made if there are none yet.
    pub(crate) fn timing(&mut self) -> &mut Timing {
        self.timing.get_or_insert_with(Box::default)
    }

    /// The pause and timers, if there are any.
    pub(crate) fn timing_mut(&mut self) -> Option<&mut Timing> {
        self.timing.as_deref_mut()
    }

    /// Frees the pause and timers once none is left.
    pub(crate) fn tidy(&mut self) {
        if self.timing.as_ref().is_some_and(|t| t.paused_until.is_none() && t.timers.is_empty()) {
            self.timing = None;
        }
    }
}

/// The handler's half-close of a connection that stays open for reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum HalfClose {
    /// Not asked for.
    #[default]
    No,
    /// Asked for: shut the write side once what is queued is written.
    Asked,
    /// The write side is shut.
    Done,
}

/// The most timers one connection may have armed at once.
pub const MAX_TIMERS: usize = 64;

impl Conn<'_> {
    /// The connection's id, unique for the life of the server.
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    /// The peer's address; for a Unix socket peer the unspecified address
    /// `0.0.0.0:0` ([`peer`](Self::peer) has its credentials).
    pub fn peer_addr(&self) -> SocketAddr {
        self.shared.peer.ip_or_unspecified()
    }

    /// The peer: its IP address, or a Unix socket peer's credentials
    /// (uid, gid, pid).
    pub fn peer(&self) -> Peer {
        self.shared.peer
    }

    /// Queues `data`: anything a [`Payload`] is made from, as
    /// [`ConnHandle::send`] and [`Deferred::send`] take. Borrowed bytes
    /// (`&[u8]`, `b"…"`, `&str`) are copied into the connection's queue, with
    /// no allocation of their own; a [`Message`] is queued without copying.
    pub fn send<'a>(&mut self, data: impl Into<Payload<'a>>) {
        if self.ctl.half_close != HalfClose::No {
            return self.discard_after_half_close();
        }
        match data.into() {
            Payload::Borrowed(data) if Order::parks_direct(self.order) => self.send_message(data.to_vec()),
            Payload::Borrowed(data) => {
                if !data.is_empty() {
                    self.shared.add_queued(data.len());
                    self.out.push_bytes(data, self.held);
                }
            }
            Payload::Shared(msg) => self.send_message(msg),
        }
    }

    /// Queues `body` as one frame of the handler's
    /// [`framing`](crate::Handler::framing): after its length prefix, or
    /// followed by a newline (raw framing: as it is). A body the framing
    /// cannot carry (a line ending inside a line, longer than the framing's
    /// maximum or than its prefix can declare) is refused and nothing is
    /// queued. No allocation: the prefix and the body are copied into the
    /// queue.
    ///
    /// ```
    /// use switchboard::{handler_fn, EncodeError, Flow, Framing, Harness, Prefix};
    ///
    /// let rpc = handler_fn(Framing::length_prefixed(Prefix::U16Be, 64), |body, conn| {
    ///     conn.send_frame(&body.to_ascii_uppercase()).expect("at most 64 bytes");
    ///     Flow::Continue
    /// });
    /// let mut h = Harness::new(rpc);
    /// h.input(b"\x00\x02hi");
    /// assert_eq!(h.output(), b"\x00\x02HI");
    ///
    /// let lines = handler_fn(Framing::lines(64), |_, conn| {
    ///     assert_eq!(conn.send_frame(b"a\nb"), Err(EncodeError::LineEnding { at: 1 }));
    ///     conn.send_frame(b"ok").unwrap();
    ///     Flow::Continue
    /// });
    /// let mut h = Harness::new(lines);
    /// h.input(b"x\n");
    /// assert_eq!(h.output(), b"ok\n");
    /// ```
    pub fn send_frame(&mut self, body: &[u8]) -> Result<(), EncodeError> {
        let (head, tail) = self.shared.rules.framing.frame_parts(body)?;
        self.send(head.as_slice());
        self.send(body);
        self.send(tail);
        Ok(())
    }

    /// Queues a shared message without copying it (as [`send`](Conn::send)
    /// does with a [`Message`]).
    pub fn send_message(&mut self, msg: impl Into<Message>) {
        if self.ctl.half_close != HalfClose::No {
            return self.discard_after_half_close();
        }
        let msg = msg.into();
        if !msg.is_empty() {
            self.shared.add_queued(msg.len());
            Order::place(self.order, None, Parked::Bytes(msg), self.out, self.held);
        }
    }

    /// Queues `len` bytes of `file` from `offset`, sent zero-copy with
    /// `sendfile` (or read and written where the kernel cannot). If the file
    /// turns out shorter than the region, the connection is closed rather
    /// than send anything else in its place
    /// ([`CloseReason::FileTruncated`](crate::CloseReason::FileTruncated)).
    /// File regions do not count against the outbound budget: they hold no
    /// memory (but each holds a descriptor, and reading from the peer stops
    /// while 16 are queued).
    pub fn send_file(&mut self, file: Arc<File>, offset: u64, len: u64) {
        if self.ctl.half_close != HalfClose::No {
            return self.discard_after_half_close();
        }
        if len > 0 {
            Order::place(self.order, None, Parked::File { file, offset, len }, self.out, self.held);
        }
    }

    /// Bytes queued for this connection and not yet written (file regions
    /// not included).
    pub fn queued(&self) -> usize {
        self.shared.queued()
    }

    /// A handle to send to this connection later or from another thread.
    pub fn handle(&self) -> ConnHandle {
        ConnHandle::new(Arc::clone(self.shared))
    }

    /// Whether the server is shutting down.
    pub fn is_draining(&self) -> bool {
        self.draining
    }

    /// Half-closes the connection: what is queued now is written, then the
    /// write side is shut (the peer reads EOF) while the connection stays
    /// open for reading: frames keep coming to the handler until the peer
    /// closes its side, which then closes the connection. Nothing can be
    /// sent after it: later sends on this `Conn` are discarded (and logged),
    /// on a [`ConnHandle`] or a [`Deferred`] they fail with
    /// [`SendError::Closed`].
    pub fn shutdown_write(&mut self) {
        if self.ctl.half_close == HalfClose::No {
            self.ctl.half_close = HalfClose::Asked;
            self.shared.write_shut.store(true, Ordering::Release);
        }
    }

    fn discard_after_half_close(&self) {
        log::debug!("{} (conn {}): a send after shutdown_write discarded", self.shared.peer, self.shared.id);
    }

    /// Closes the connection once this callback returns and everything
    /// queued has been sent, as returning [`Flow::Close`](crate::Flow::Close)
    /// does. This is how [`Handler::open`](crate::Handler::open) refuses a
    /// connection: send the reason, call `close`; the handler's
    /// [`close`](crate::Handler::close) follows with
    /// [`CloseReason::Handler`](crate::CloseReason::Handler).
    pub fn close(&mut self) {
        self.ctl.close = true;
    }

    /// Stops reading from the peer for `d` (frames already read wait too):
    /// a lossless way to rate-limit a sender, since TCP then slows it down.
    /// A later call extends the pause, never shortens it. Works from any
    /// callback, [`open`](crate::Handler::open) included. Neither the idle
    /// timeout nor the frame timeout runs while the pause lasts.
    pub fn pause_reading(&mut self, d: Duration) {
        let until = crate::clock::after(Instant::now(), d);
        if self.ctl.paused_until().is_none_or(|t| t < until) {
            self.ctl.timing().paused_until = Some(until);
        }
    }

    /// Arms timer `id` of this connection to fire once after `after`:
    /// [`Handler::timer`](crate::Handler::timer) is called with the id on
    /// the connection's worker. Arming an id that is armed already moves
    /// its deadline. Timers are cancelled when the connection closes.
    /// Returns false (and arms nothing) when [`MAX_TIMERS`] are armed.
    #[must_use = "a connection has at most MAX_TIMERS timers"]
    pub fn set_timer(&mut self, id: u64, after: Duration) -> bool {
        let at = crate::clock::after(Instant::now(), after);
        let timing = self.ctl.timing();
        if let Some(t) = timing.timers.iter_mut().find(|(i, _)| *i == id) {
            t.1 = at;
        } else if timing.timers.len() >= MAX_TIMERS {
            return false;
        } else {
            timing.timers.push((id, at));
        }
        timing.timers_changed = true;
        true
    }

    /// Disarms timer `id`; returns whether it was armed.
    pub fn cancel_timer(&mut self, id: u64) -> bool {
        let Some(timing) = self.ctl.timing_mut() else { return false };
        let before = timing.timers.len();
        timing.timers.retain(|(i, _)| *i != id);
        let armed = before != timing.timers.len();
        self.ctl.tidy();
        armed
    }

    /// Whether replies promised with [`defer`](Conn::defer) are still
    /// outstanding: some [`Deferred`] is alive, or what it sent has not all
    /// reached this connection's queue yet. (A reply sent through this
    /// `Conn` meanwhile never overtakes them: it waits in order behind
    /// them.)
    pub fn has_deferred(&self) -> bool {
        self.shared.deferred()
    }

    /// Promises a reply that another thread will send: blocking work (a
    /// file to hash, a database to ask) leaves the event loop, and the
    /// reply still goes out in order. Several may be in progress at once
    /// (up to [`ServerBuilder::max_deferred`](crate::ServerBuilder::max_deferred),
    /// 16 by default: the frames after that many wait), and replies leave
    /// strictly in request order, whatever order the deferred ones complete
    /// in: what a later frame sends through its `Conn`, or a later
    /// `Deferred`, waits behind an earlier one until it is dropped. A
    /// graceful close (EOF from the peer,
    /// [`Flow::Close`](crate::Flow::Close), the quiet rule of a drain) waits
    /// for it. The timeouts do not lose it: the idle timeout does not run
    /// while it is outstanding (it counts from its release), and frames held
    /// behind it are not an incomplete frame for the frame timeout. Errors
    /// and a forced shutdown do not wait.
    /// Replies sent through it leave after everything queued before.
    pub fn defer(&mut self) -> Deferred {
        let seq = Order::defer(self.order, self.out, self.held);
        self.shared.deferred.fetch_add(1, Ordering::AcqRel);
        Deferred { handle: self.handle(), seq }
    }

    /// Runs `job` on the server's blocking pool, with a [`Deferred`] for
    /// its reply: what the job sends through it is the connection's next
    /// reply, in request order, as with [`defer`](Conn::defer) (pipelined
    /// requests run at once, up to the connection's `max_deferred`; a
    /// graceful close and a drain wait for it). The pool
    /// is fair between connections: one connection's backlog does not
    /// hold up another's jobs by more than one job each. Its threads
    /// ([`ServerBuilder::blocking_threads`](crate::ServerBuilder::blocking_threads))
    /// start on demand and are joined when the server stops.
    ///
    /// When the pool's queue is full (or the server is stopping) the job is
    /// dropped unrun, nothing is promised, and the [`SpawnError`] says why:
    /// the handler answers at once, say with a "busy" line.
    ///
    /// ```
    /// use std::time::Duration;
    /// use switchboard::{handler_fn, Flow, Framing, Harness};
    ///
    /// let lookup = handler_fn(Framing::lines(64), |key, conn| {
    ///     let key = key.to_vec();
    ///     let promised = conn.spawn_blocking(move |reply| {
    ///         std::thread::sleep(Duration::from_millis(10)); // a database call
    ///         let _ = reply.send_frame(&[b"value of ", &key[..]].concat());
    ///     });
    ///     if let Err(e) = promised {
    ///         conn.send(format!("error: {e}\n"));
    ///     }
    ///     Flow::Continue
    /// });
    /// let mut h = Harness::new(lookup);
    /// h.input(b"a\nb\n");
    /// // Both jobs run at once; the replies leave in request order.
    /// assert!(h.wait_deferred(Duration::from_secs(10)));
    /// assert_eq!(h.output(), b"value of a\nvalue of b\n");
    /// ```
    pub fn spawn_blocking<F>(&mut self, job: F) -> Result<(), SpawnError>
    where
        F: FnOnce(Deferred) + Send + 'static,
    {
        let pool = Arc::clone(&self.shared.rules.blocking);
        pool.push(self.shared.id, Duration::ZERO, true, || {
            let reply = self.defer();
            Box::new(move || job(reply))
        })
    }
}

/// A reply promised by [`Conn::defer`], to be sent from any thread. Dropping
/// it says the reply is complete.
#[derive(Debug)]
pub struct Deferred {
    handle: ConnHandle,
    /// Its segment of the connection's output.
    seq: u64,
}

impl Deferred {
    /// Queues `msg`, as [`ConnHandle::send`] does.
    pub fn send<'a>(&self, msg: impl Into<Payload<'a>>) -> Result<(), SendError> {
        self.handle.send_in(Some(self.seq), msg)
    }

    /// Queues `body` as one frame of the handler's framing, as
    /// [`ConnHandle::send_frame`] does.
    pub fn send_frame(&self, body: &[u8]) -> Result<(), SendError> {
        self.handle.send_frame_in(Some(self.seq), body)
    }

    /// Queues a file region, as [`ConnHandle::send_file`] does.
    pub fn send_file(&self, file: Arc<File>, offset: u64, len: u64) -> Result<(), SendError> {
        self.handle.send_file_in(Some(self.seq), file, offset, len)
    }

    /// The connection's handle (what is sent through it is not part of
    /// this reply's place in the order).
    pub fn handle(&self) -> &ConnHandle {
        &self.handle
    }

    /// Hands this promised reply to another job on the blocking pool, to
    /// start no sooner than `after` from now, behind the turns of the
    /// other connections: a job that answers a queue of requests one per
    /// turn (so that one client's backlog does not keep a pool thread) or
    /// that must wait for something (its last file written) calls this
    /// and returns. The job continues work already promised, so a full
    /// queue does not refuse it; only a stopping server does, and then the
    /// reply ends here ([`SpawnError::Stopped`]).
    pub fn spawn_blocking<F>(self, after: Duration, job: F) -> Result<(), SpawnError>
    where
        F: FnOnce(Deferred) + Send + 'static,
    {
        let pool = Arc::clone(&self.handle.shared.rules.blocking);
        let id = self.handle.shared.id;
        pool.push(id, after, false, move || Box::new(move || job(self)))
    }
}

impl Drop for Deferred {
    fn drop(&mut self) {
        let s = &*self.handle.shared;
        // Comes after every reply this Deferred sent. The worker counts it
        // off when it takes it, so when none is left outstanding, every
        // reply has reached the queue (counting it off here could let the
        // worker close while another thread's reply is still on its way).
        let _ = s.enqueue(Pending::Release { seq: self.seq });
    }
}
