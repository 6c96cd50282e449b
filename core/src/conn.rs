//! Replying to a connection: [`Conn`] inside a callback, [`ConnHandle`] from
//! anywhere.

use std::fmt;
use std::fs::File;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::outbound::Outbound;
use crate::stats::{bump, Counters};
use crate::worker::{Mail, Mailbox};

/// An immutable, cheaply cloned byte message: one allocation shared by every
/// connection it is sent to (a chat broadcast copies nothing per member).
#[derive(Clone, PartialEq, Eq)]
pub struct Message(Arc<[u8]>);

impl Message {
    /// The message's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl Deref for Message {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for Message {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Message({} bytes)", self.0.len())
    }
}

impl From<Vec<u8>> for Message {
    fn from(v: Vec<u8>) -> Message {
        Message(v.into())
    }
}
impl From<&[u8]> for Message {
    fn from(v: &[u8]) -> Message {
        Message(v.into())
    }
}
impl From<String> for Message {
    fn from(v: String) -> Message {
        Message(v.into_bytes().into())
    }
}
impl From<&str> for Message {
    fn from(v: &str) -> Message {
        Message(v.as_bytes().into())
    }
}
impl From<Arc<[u8]>> for Message {
    fn from(v: Arc<[u8]>) -> Message {
        Message(v)
    }
}

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
            SendError::Dropped => "outbound budget exceeded: message dropped",
            SendError::Disconnected => "outbound budget exceeded: connection disconnected",
        })
    }
}

impl std::error::Error for SendError {}

/// The part of a connection shared with its handles.
pub(crate) struct ConnShared {
    pub(crate) id: u64,
    pub(crate) token: usize,
    pub(crate) peer: SocketAddr,
    /// Bytes queued for this connection and not yet written, in its queue or
    /// on the way in its worker's mailbox.
    pub(crate) queued: AtomicUsize,
    pub(crate) closed: AtomicBool,
    pub(crate) warned: AtomicBool,
    /// Deferred replies outstanding: a graceful close waits for them.
    pub(crate) deferred: AtomicUsize,
    pub(crate) max_outbound: usize,
    pub(crate) policy: SlowConsumerPolicy,
    pub(crate) mailbox: Arc<Mailbox>,
    pub(crate) stats: Arc<Counters>,
}

/// A handle to send to a connection from any thread: `Clone + Send + Sync`.
///
/// Messages sent through handles go into the owning worker's mailbox and
/// leave in the order they were sent (per sending thread). Every connection
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

    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.shared.peer
    }

    /// Whether the connection is closed or closing.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// Queues `msg` for the connection without waiting. See the type's docs
    /// for the budget; a message larger than the whole budget is never sent.
    pub fn send(&self, msg: impl Into<Message>) -> Result<(), SendError> {
        let s = &*self.shared;
        if s.closed.load(Ordering::Acquire) {
            return Err(SendError::Closed);
        }
        let msg = msg.into();
        let len = msg.len();
        let before = s.queued.fetch_add(len, Ordering::AcqRel);
        if before.saturating_add(len) > s.max_outbound {
            s.queued.fetch_sub(len, Ordering::AcqRel);
            return Err(self.over_budget(before));
        }
        let mail = Mail::Send { token: s.token, id: s.id, msg };
        s.mailbox.post(mail).map_err(|_| {
            s.queued.fetch_sub(len, Ordering::AcqRel);
            SendError::Closed
        })
    }

    fn over_budget(&self, queued: usize) -> SendError {
        let s = &*self.shared;
        match s.policy {
            SlowConsumerPolicy::DropMessage => {
                bump(&s.stats.messages_dropped);
                if !s.warned.swap(true, Ordering::AcqRel) {
                    log::warn!(
                        "{} (conn {}): slow consumer, {queued} bytes queued of a {}-byte budget; \
                         dropping messages",
                        s.peer,
                        s.id,
                        s.max_outbound
                    );
                }
                SendError::Dropped
            }
            SlowConsumerPolicy::Disconnect => {
                if !s.closed.swap(true, Ordering::AcqRel) {
                    bump(&s.stats.slow_consumer_disconnects);
                    let _ = s.mailbox.post(Mail::Close { token: s.token, id: s.id, slow: true });
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
        let s = &*self.shared;
        if s.closed.load(Ordering::Acquire) {
            return Err(SendError::Closed);
        }
        if len == 0 {
            return Ok(());
        }
        let mail = Mail::SendFile { token: s.token, id: s.id, file, offset, len };
        s.mailbox.post(mail).map_err(|_| SendError::Closed)
    }

    /// Asks the connection to close once what is queued has been sent (as
    /// [`Flow::Close`](crate::Flow::Close) would).
    pub fn close(&self) {
        let s = &*self.shared;
        let _ = s.mailbox.post(Mail::Close { token: s.token, id: s.id, slow: false });
    }
}

/// A connection as seen from inside a [`Handler`](crate::Handler) callback:
/// replies go through it and leave in the order they were queued.
pub struct Conn<'a> {
    pub(crate) shared: &'a Arc<ConnShared>,
    pub(crate) out: &'a mut Outbound,
    pub(crate) draining: bool,
    /// Reading from the peer is paused until then.
    pub(crate) paused_until: &'a mut Option<Instant>,
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

impl Conn<'_> {
    /// The connection's id, unique for the life of the server.
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.shared.peer
    }

    /// Queues a copy of `data`.
    pub fn send(&mut self, data: &[u8]) {
        if !data.is_empty() {
            self.shared.queued.fetch_add(data.len(), Ordering::AcqRel);
            self.out.push_bytes(data);
        }
    }

    /// Queues a shared message without copying it.
    pub fn send_message(&mut self, msg: impl Into<Message>) {
        let msg = msg.into();
        if !msg.is_empty() {
            self.shared.queued.fetch_add(msg.len(), Ordering::AcqRel);
            self.out.push_message(msg);
        }
    }

    /// Queues `len` bytes of `file` from `offset`, sent zero-copy with
    /// `sendfile` (or read and written where the kernel cannot). If the file
    /// turns out shorter than the region, the connection is closed rather
    /// than send anything else in its place
    /// ([`CloseReason::FileTruncated`](crate::CloseReason::FileTruncated)).
    /// File regions do not count against the outbound budget: they hold no
    /// memory.
    pub fn send_file(&mut self, file: Arc<File>, offset: u64, len: u64) {
        if len > 0 {
            self.out.push_file(file, offset, len);
        }
    }

    /// Bytes queued for this connection and not yet written (file regions
    /// not included).
    pub fn queued(&self) -> usize {
        self.shared.queued.load(Ordering::Acquire)
    }

    /// A handle to send to this connection later or from another thread.
    pub fn handle(&self) -> ConnHandle {
        ConnHandle::new(Arc::clone(self.shared))
    }

    /// Whether the server is shutting down.
    pub fn is_draining(&self) -> bool {
        self.draining
    }

    /// Stops reading from the peer for `d` (frames already read wait too):
    /// a lossless way to rate-limit a sender, since TCP then slows it down.
    /// A later call extends the pause, never shortens it.
    pub fn pause_reading(&mut self, d: Duration) {
        let until = crate::clock::after(Instant::now(), d);
        if self.paused_until.is_none_or(|t| t < until) {
            *self.paused_until = Some(until);
        }
    }

    /// Promises a reply that another thread will send: blocking work (a
    /// file to hash, a database to ask) leaves the event loop, and the
    /// reply still goes out. Until the [`Deferred`] is dropped, a graceful
    /// close of the connection (EOF from the peer, [`Flow::Close`](crate::Flow::Close),
    /// the quiet rule of a drain) waits for it; the idle timeout, errors and
    /// a forced shutdown do not. Replies sent through it leave after
    /// everything queued before.
    pub fn defer(&self) -> Deferred {
        self.shared.deferred.fetch_add(1, Ordering::AcqRel);
        Deferred { handle: self.handle() }
    }
}

/// A reply promised by [`Conn::defer`], to be sent from any thread. Dropping
/// it says the reply is complete.
#[derive(Debug)]
pub struct Deferred {
    handle: ConnHandle,
}

impl Deferred {
    /// Queues `msg`, as [`ConnHandle::send`] does.
    pub fn send(&self, msg: impl Into<Message>) -> Result<(), SendError> {
        self.handle.send(msg)
    }

    /// Queues a file region, as [`ConnHandle::send_file`] does.
    pub fn send_file(&self, file: Arc<File>, offset: u64, len: u64) -> Result<(), SendError> {
        self.handle.send_file(file, offset, len)
    }

    /// The connection's handle.
    pub fn handle(&self) -> &ConnHandle {
        &self.handle
    }
}

impl Drop for Deferred {
    fn drop(&mut self) {
        let s = &*self.handle.shared;
        // Comes after every reply this Deferred sent. The worker counts it
        // off when it takes it, so when none is left outstanding, every
        // reply has reached the queue (counting it off here could let the
        // worker close while another thread's reply is still on its way).
        let _ = s.mailbox.post(Mail::Release { token: s.token, id: s.id });
    }
}
