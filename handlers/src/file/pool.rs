//! The threads that prepare replies off the event loop (hashing files not
//! yet in the cache, listing the root), shared fairly between connections.
//!
//! Each connection has its own queue of request lines. A connection with
//! work waits in one run queue, once; a thread takes the connection at the
//! front, answers **one** of its requests, and puts it back at the end if
//! more are waiting. So each connection has at most one job in flight, and
//! a connection that just asked waits for at most one job of each
//! connection ahead of it, however long their backlogs are.
//!
//! The cost of a job (its time on the pool thread, beyond a [`QUANTUM`]) is
//! counted against the connection that asked: it then lets the others go
//! first, one [`QUANTUM`] of its debt per turn it skips. A client whose
//! `list`s walk a big tree, or whose `get`s hash big files, gets fewer
//! turns, not more of the pool. A new connection has no debt.
//!
//! A connection has at most one file region on its way to the peer (each
//! holds a descriptor): a request that may be answered with one (`get`,
//! `list`) waits, unopened, until the region sent before it has been
//! written. Such a connection leaves the run queue for a list of blocked
//! ones, looked at again after 1 ms, then less and less often (at most
//! every [`MAX_RECHECK`]), and goes back once its file is out. Meanwhile its
//! later requests wait as the bytes they came in (the core reads nothing
//! more from the peer while replies are promised), so a client that never
//! reads pins one descriptor, however much it asks.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use switchboard::{ConnHandle, Deferred, SendError};

use super::{request, Inner, Request};

/// The pool time a turn gives a connection for free.
pub(crate) const QUANTUM: Duration = Duration::from_millis(5);

/// The most debt a connection carries (one job's worth of skipped turns
/// at most this long, so a single huge file does not stall its owner for
/// good).
const MAX_DEBT: Duration = Duration::from_secs(1);

/// The first look at a connection blocked behind its file region.
const FIRST_RECHECK: Duration = Duration::from_millis(1);
/// The longest a blocked connection waits between two looks.
pub(crate) const MAX_RECHECK: Duration = Duration::from_millis(50);

/// A connection queue's bytes are given back once this much is held and
/// all of it answered.
const KEEP_LINES: usize = 64 * 1024;

/// Where a connection is in the scheduler.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Nothing waiting: new requests may be answered on the event loop.
    #[default]
    Idle,
    /// In the run queue, or blocked until its file region is written.
    Queued,
    /// A thread is answering one of its requests.
    Running,
}

/// A connection's requests handed to the pool, answered in order.
#[derive(Debug, Default)]
pub(crate) struct ConnQueue {
    /// Request lines not yet answered, each ended by `\n`, from `next` on.
    lines: Vec<u8>,
    next: usize,
    pub(crate) state: State,
    /// Held while the connection has work: its graceful close waits, and
    /// the core reads nothing more from the peer.
    pub(crate) reply: Option<Deferred>,
    /// Pool time used beyond its quanta, still to be paid by skipped turns.
    pub(crate) debt: Duration,
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

    fn clear(&mut self) {
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

/// A connection's queue, shared by its session and the scheduler.
pub(crate) type Shared = Arc<Mutex<ConnQueue>>;

/// A connection waiting for its file region to be written.
struct Blocked {
    conn: Shared,
    handle: ConnHandle,
    file: Weak<File>,
    /// When to look again, and the wait before that look.
    at: Instant,
    wait: Duration,
}

impl Blocked {
    fn ready(&self) -> bool {
        self.file.strong_count() == 0 || self.handle.is_closed()
    }
}

#[derive(Default)]
struct RunQueue {
    conns: VecDeque<Shared>,
    blocked: Vec<Blocked>,
    stopped: bool,
}

impl RunQueue {
    /// Moves the blocked connections whose file is out (or that closed)
    /// back to the run queue; returns when to look again.
    fn recheck(&mut self, now: Instant) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut i = 0;
        while i < self.blocked.len() {
            let b = &mut self.blocked[i];
            if b.at <= now {
                if b.ready() {
                    let b = self.blocked.swap_remove(i);
                    self.conns.push_back(b.conn);
                    continue;
                }
                b.wait = (b.wait * 2).min(MAX_RECHECK);
                b.at = now + b.wait;
            }
            next = Some(next.map_or(b.at, |t| t.min(b.at)));
            i += 1;
        }
        next
    }
}

/// The run queue the threads take connections from.
#[derive(Default)]
pub(crate) struct Scheduler {
    run: Mutex<RunQueue>,
    ready: Condvar,
}

impl Scheduler {
    /// Puts a connection whose state was just set to [`State::Queued`] at
    /// the end of the run queue.
    pub(crate) fn push(&self, conn: Shared) {
        let mut run = self.run.lock();
        if run.stopped {
            // Its Deferred goes with it: the server is going away.
            return;
        }
        run.conns.push_back(conn);
        drop(run);
        self.ready.notify_one();
    }

    /// Sets a connection aside until `file` has been written.
    fn block(&self, conn: Shared, handle: ConnHandle, file: Weak<File>) {
        let mut run = self.run.lock();
        if run.stopped {
            return;
        }
        let wait = FIRST_RECHECK;
        run.blocked.push(Blocked { conn, handle, file, at: Instant::now() + wait, wait });
        drop(run);
        // A thread asleep without a deadline must now keep one.
        self.ready.notify_one();
    }

    fn pop(&self) -> Option<Shared> {
        let mut run = self.run.lock();
        loop {
            if run.stopped {
                return None;
            }
            let next = run.recheck(Instant::now());
            if let Some(c) = run.conns.pop_front() {
                return Some(c);
            }
            match next {
                Some(at) => {
                    self.ready.wait_until(&mut run, at);
                }
                None => self.ready.wait(&mut run),
            }
        }
    }

    fn stop(&self) {
        let mut run = self.run.lock();
        run.stopped = true;
        run.conns.clear();
        run.blocked.clear();
        drop(run);
        self.ready.notify_all();
    }
}

/// A fixed pool of threads; joined on [`stop`](Pool::stop).
pub(crate) struct Pool {
    pub(crate) sched: Arc<Scheduler>,
    /// Taken by the first [`stop`](Pool::stop).
    threads: parking_lot::Mutex<Vec<JoinHandle<()>>>,
}

impl Pool {
    pub(crate) fn start(n: usize, inner: Arc<Inner>) -> io::Result<Pool> {
        let sched = Arc::new(Scheduler::default());
        let pool = Pool { sched: Arc::clone(&sched), threads: parking_lot::Mutex::new(Vec::new()) };
        for i in 0..n {
            let (sched, inner) = (Arc::clone(&sched), Arc::clone(&inner));
            let t = std::thread::Builder::new()
                .name(format!("switchboard-file-{i}"))
                .spawn(move || run(&sched, &inner));
            match t {
                Ok(t) => pool.threads.lock().push(t),
                Err(e) => {
                    pool.stop();
                    return Err(io::Error::new(e.kind(), format!("file: cannot start a pool thread: {e}")));
                }
            }
        }
        Ok(pool)
    }

    /// Empties the run queue and joins the threads (hashing in progress
    /// stops early: the handler sets its cancel flag first). Called from
    /// `&self` (the handler's [`stop`](switchboard::Handler::stop)); the
    /// second call finds nothing to join.
    pub(crate) fn stop(&self) {
        self.sched.stop();
        let threads = std::mem::take(&mut *self.threads.lock());
        for t in threads {
            if t.join().is_err() {
                log::error!("file: a pool thread panicked");
            }
        }
    }
}

/// What a connection needs after a turn.
enum Next {
    /// Nothing: its queue is empty (or it is gone).
    Done,
    /// Another turn.
    Again,
    /// Its next request waits for this file region to be written.
    Blocked(ConnHandle, Weak<File>),
}

fn run(sched: &Scheduler, inner: &Inner) {
    while let Some(conn) = sched.pop() {
        match turn(inner, &conn) {
            Next::Done => {}
            Next::Again => sched.push(conn),
            Next::Blocked(handle, file) => sched.block(conn, handle, file),
        }
    }
}

/// Ends a connection's work: its Deferred is dropped, which says the
/// replies are complete (its release reaches the worker after them).
fn finish(mut q: parking_lot::MutexGuard<'_, ConnQueue>) -> Next {
    q.clear();
    q.state = State::Idle;
    let done = q.reply.take();
    drop(q);
    drop(done);
    Next::Done
}

/// Answers the connection's next request, if it may be answered now.
fn turn(inner: &Inner, conn: &Shared) -> Next {
    let (handle, request) = {
        let mut q = conn.lock();
        let handle = q.reply.as_ref().map(|d| d.handle().clone()).filter(|h| !h.is_closed());
        // Gone: nothing to prepare.
        let Some(handle) = handle else { return finish(q) };
        if !q.debt.is_zero() {
            // Others go first.
            q.debt = q.debt.saturating_sub(QUANTUM);
            return Next::Again;
        }
        let Some(request) = q.peek() else { return finish(q) };
        if request.may_send_file() {
            if let Some(file) = q.in_flight() {
                return Next::Blocked(handle, file.clone());
            }
        }
        q.advance();
        q.state = State::Running;
        (handle, request)
    };
    let started = Instant::now();
    let sent = answer(inner, &handle, request);
    let cost = started.elapsed();
    let mut q = conn.lock();
    q.debt = cost.saturating_sub(QUANTUM).min(MAX_DEBT);
    match sent {
        Ok(Some(file)) => q.sent(&file),
        Ok(None) => {}
        // The connection is gone: nothing more to answer.
        Err(_) => return finish(q),
    }
    if q.is_empty() {
        return finish(q);
    }
    q.state = State::Queued;
    Next::Again
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
