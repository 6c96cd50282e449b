//! A connection's requests that wait behind a reply prepared off the event
//! loop, answered one per turn on the server's blocking pool.
//!
//! The handler cuts request lines itself (its framing is raw), so the lines
//! that came in the same read as a request sent to the pool wait here, in
//! order. One job per connection runs them: it answers **one** request and
//! hands the rest to a job behind the other connections' turns
//! ([`Deferred::spawn_blocking`]), so a connection's backlog is served in
//! turn with the others and its reply stays one promise, in order. The pool
//! counts each job's time against its connection, so a client whose `list`s
//! walk a big tree, or whose `get`s hash big files, gets fewer turns.
//!
//! A connection has at most one file region on its way to the peer (each
//! holds a descriptor): a request that may be answered with one (`get`,
//! `list`) waits, unopened, until the region sent before it has been
//! written. The job then looks again after 1 ms, then less and less often
//! (at most every [`MAX_RECHECK`]). Meanwhile its later requests wait as
//! the bytes they came in (the core reads nothing more from the peer while
//! a reply is promised), so a client that never reads pins one descriptor,
//! however much it asks.

use std::fs::File;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use switchboard::{ConnHandle, Deferred, SendError};

use super::{request, Inner, Request};

/// The first look at a connection blocked behind its file region.
const FIRST_RECHECK: Duration = Duration::from_millis(1);
/// The longest a blocked connection waits between two looks.
pub(crate) const MAX_RECHECK: Duration = Duration::from_millis(50);

/// A connection queue's bytes are given back once this much is held and
/// all of it answered.
const KEEP_LINES: usize = 64 * 1024;

/// Whether the connection has requests on the pool.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Nothing waiting: new requests may be answered on the event loop.
    #[default]
    Idle,
    /// A job answers its requests (running, or waiting for its turn).
    Queued,
}

/// A connection's requests handed to the pool, answered in order.
#[derive(Debug, Default)]
pub(crate) struct ConnQueue {
    /// Request lines not yet answered, each ended by `\n`, from `next` on.
    lines: Vec<u8>,
    next: usize,
    pub(crate) state: State,
    /// The wait before the next look while blocked behind a file region.
    recheck: Duration,
    /// The last file region handed to the connection: alive until written
    /// (or dropped with the connection).
    sent: Option<Weak<File>>,
}

impl ConnQueue {
    /// Whether no request is waiting.
    pub(crate) fn is_empty(&self) -> bool {
        self.next == self.lines.len()
    }

    /// Queues one request line (without its line ending; an empty line is a
    /// bad request).
    pub(crate) fn push_line(&mut self, line: &[u8]) {
        self.lines.extend_from_slice(line);
        self.lines.push(b'\n');
    }

    /// The next request, left in the queue.
    fn peek(&self) -> Option<Request> {
        let rest = &self.lines[self.next..];
        let end = rest.iter().position(|&b| b == b'\n')?;
        Some(request::parse(&rest[..end]))
    }

    /// Drops the request [`peek`](ConnQueue::peek) returned.
    fn advance(&mut self) {
        let rest = &self.lines[self.next..];
        self.next += rest.iter().position(|&b| b == b'\n').map_or(rest.len(), |end| end + 1);
        if self.is_empty() {
            self.clear();
        }
    }

    pub(crate) fn clear(&mut self) {
        self.next = 0;
        match self.lines.capacity() > KEEP_LINES {
            true => self.lines = Vec::new(),
            false => self.lines.clear(),
        }
    }

    /// The file region sent last, while it is not yet written.
    pub(crate) fn in_flight(&self) -> Option<&Weak<File>> {
        self.sent.as_ref().filter(|w| w.strong_count() > 0)
    }

    /// Remembers the file region just handed to the connection.
    pub(crate) fn sent(&mut self, file: &Arc<File>) {
        self.sent = Some(Arc::downgrade(file));
    }
}

/// A connection's queue, shared by its session and its job.
pub(crate) type Shared = Arc<Mutex<ConnQueue>>;

/// Ends a connection's work: the job's Deferred is dropped by its caller,
/// which says the replies are complete.
fn finish(q: &mut ConnQueue) {
    q.clear();
    q.state = State::Idle;
    q.recheck = Duration::ZERO;
}

/// One turn of a connection's job: answers its next request, if it may be
/// answered now, and hands the rest to a later turn.
pub(crate) fn turn(inner: Arc<Inner>, conn: Shared, reply: Deferred) {
    let request = {
        let mut q = conn.lock();
        // Gone: nothing to prepare.
        if reply.handle().is_closed() {
            return finish(&mut q);
        }
        let Some(request) = q.peek() else { return finish(&mut q) };
        if request.may_send_file() && q.in_flight().is_some() {
            q.recheck = (q.recheck * 2).clamp(FIRST_RECHECK, MAX_RECHECK);
            let wait = q.recheck;
            drop(q);
            return again(inner, conn, reply, wait);
        }
        q.recheck = Duration::ZERO;
        q.advance();
        request
    };
    let sent = answer(&inner, reply.handle(), request);
    let mut q = conn.lock();
    match sent {
        Ok(Some(file)) => q.sent(&file),
        Ok(None) => {}
        // The connection is gone: nothing more to answer.
        Err(_) => return finish(&mut q),
    }
    if q.is_empty() {
        return finish(&mut q);
    }
    drop(q);
    again(inner, conn, reply, Duration::ZERO);
}

/// Hands the connection's remaining requests to a later turn.
fn again(inner: Arc<Inner>, conn: Shared, reply: Deferred, after: Duration) {
    let retry = Arc::clone(&conn);
    if reply.spawn_blocking(after, move |reply| turn(inner, retry, reply)).is_err() {
        // The server is stopping: the promise ends unanswered.
        finish(&mut conn.lock());
    }
}

/// Sends the reply to `request`; returns the file region it holds, if any.
fn answer(inner: &Inner, handle: &ConnHandle, request: Request) -> Result<Option<Arc<File>>, SendError> {
    let reply = inner.reply(request);
    if !reply.header.is_empty() {
        handle.send(reply.header)?;
    }
    match reply.file {
        Some((file, size)) => handle.send_file(Arc::clone(&file), 0, size).map(|()| Some(file)),
        None => Ok(None),
    }
}
