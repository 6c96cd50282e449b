//! The threads that prepare replies off the event loop (hashing files not
//! yet in the cache, listing the root), shared fairly between connections.
//!
//! Each connection has its own queue of requests. A connection with work
//! waits in one run queue, once; a thread takes the connection at the front,
//! answers **one** of its requests, and puts it back at the end if more are
//! waiting. So each connection has at most one job in flight, and a
//! connection that just asked waits for at most one job of each connection
//! ahead of it, however long their backlogs are.
//!
//! The cost of a job (its time on the pool thread, beyond a [`QUANTUM`]) is
//! counted against the connection that asked: it then lets the others go
//! first, one [`QUANTUM`] of its debt per turn it skips. A client whose
//! `list`s walk a big tree, or whose `get`s hash big files, gets fewer
//! turns, not more of the pool. A new connection has no debt.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use switchboard::{ConnHandle, Deferred};

use super::proto::{encode, Header, Reason};
use super::{Inner, Request};

/// The pool time a turn gives a connection for free.
pub(crate) const QUANTUM: Duration = Duration::from_millis(5);

/// The most debt a connection carries (one job's worth of skipped turns
/// at most this long, so a single huge file does not stall its owner for
/// good).
const MAX_DEBT: Duration = Duration::from_secs(1);

/// One request waiting in a connection's queue.
#[derive(Debug)]
pub(crate) enum Entry {
    /// To be answered (maybe blocking).
    Work(Request),
    /// Refused for the queue being full: answered `too many requests` in
    /// its turn, so replies stay in request order.
    Refused(String),
}

/// Where a connection is in the scheduler.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Nothing waiting: new requests may be answered on the event loop.
    #[default]
    Idle,
    /// In the run queue.
    Queued,
    /// A thread is answering one of its requests.
    Running,
}

/// A connection's requests handed to the pool, answered in order.
#[derive(Debug, Default)]
pub(crate) struct ConnQueue {
    pub(crate) waiting: VecDeque<Entry>,
    pub(crate) state: State,
    /// Held while the connection has work: its graceful close waits.
    pub(crate) reply: Option<Deferred>,
    /// Pool time used beyond its quanta, still to be paid by skipped turns.
    pub(crate) debt: Duration,
}

impl ConnQueue {
    /// Refused requests waiting for their turn.
    pub(crate) fn refused(&self) -> usize {
        self.waiting.iter().filter(|e| matches!(e, Entry::Refused(_))).count()
    }

    /// Work requests not yet answered (refusals not counted).
    pub(crate) fn pending_work(&self) -> usize {
        self.waiting.iter().filter(|e| matches!(e, Entry::Work(_))).count()
            + usize::from(self.state == State::Running)
    }
}

/// A connection's queue, shared by its session and the scheduler.
pub(crate) type Shared = Arc<Mutex<ConnQueue>>;

#[derive(Default)]
struct RunQueue {
    conns: VecDeque<Shared>,
    stopped: bool,
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

    fn pop(&self) -> Option<Shared> {
        let mut run = self.run.lock();
        loop {
            if run.stopped {
                return None;
            }
            if let Some(c) = run.conns.pop_front() {
                return Some(c);
            }
            self.ready.wait(&mut run);
        }
    }

    fn stop(&self) {
        let mut run = self.run.lock();
        run.stopped = true;
        run.conns.clear();
        drop(run);
        self.ready.notify_all();
    }
}

/// A fixed pool of threads; joined on [`stop`](Pool::stop).
pub(crate) struct Pool {
    pub(crate) sched: Arc<Scheduler>,
    threads: Vec<JoinHandle<()>>,
}

impl Pool {
    pub(crate) fn start(n: usize, inner: Arc<Inner>) -> io::Result<Pool> {
        let sched = Arc::new(Scheduler::default());
        let mut pool = Pool { sched: Arc::clone(&sched), threads: Vec::new() };
        for i in 0..n {
            let (sched, inner) = (Arc::clone(&sched), Arc::clone(&inner));
            let t = std::thread::Builder::new()
                .name(format!("switchboard-file-{i}"))
                .spawn(move || run(&sched, &inner));
            match t {
                Ok(t) => pool.threads.push(t),
                Err(e) => {
                    pool.stop();
                    return Err(io::Error::new(e.kind(), format!("file: cannot start a pool thread: {e}")));
                }
            }
        }
        Ok(pool)
    }

    /// Empties the run queue and joins the threads (hashing in progress
    /// stops early: the handler sets its cancel flag first).
    pub(crate) fn stop(&mut self) {
        self.sched.stop();
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                log::error!("file: a pool thread panicked");
            }
        }
    }
}

fn run(sched: &Scheduler, inner: &Inner) {
    while let Some(conn) = sched.pop() {
        let more = turn(inner, &conn);
        if more {
            sched.push(conn);
        }
    }
}

/// Answers the refusals at the head of the connection's queue and one
/// request; returns whether it must go back in the run queue.
fn turn(inner: &Inner, conn: &Shared) -> bool {
    let (handle, refused, work) = {
        let mut q = conn.lock();
        let handle = q.reply.as_ref().map(|d| d.handle().clone()).filter(|h| !h.is_closed());
        let Some(handle) = handle else {
            // The connection is gone: nothing to prepare.
            q.waiting.clear();
            q.state = State::Idle;
            let done = q.reply.take();
            drop(q);
            drop(done);
            return false;
        };
        if !q.debt.is_zero() {
            // Others go first.
            q.debt = q.debt.saturating_sub(QUANTUM);
            return true;
        }
        let mut refused = Vec::new();
        let mut work = None;
        while let Some(entry) = q.waiting.pop_front() {
            match entry {
                Entry::Refused(name) => refused.push(name),
                Entry::Work(request) => {
                    work = Some(request);
                    break;
                }
            }
        }
        q.state = State::Running;
        (handle, refused, work)
    };
    let mut sent = refused
        .iter()
        .try_for_each(|name| send_header(&handle, encode(&Header::error(name, Reason::TooManyRequests))));
    let started = Instant::now();
    if let (Ok(()), Some(request)) = (&sent, work) {
        sent = answer(inner, &handle, request);
    }
    let cost = started.elapsed();
    let mut q = conn.lock();
    q.debt = cost.saturating_sub(QUANTUM).min(MAX_DEBT);
    if sent.is_err() {
        // The connection is gone: nothing more to answer.
        q.waiting.clear();
    }
    if q.waiting.is_empty() {
        q.state = State::Idle;
        // Dropping the Deferred says the replies are complete (its release
        // reaches the worker after them).
        let done = q.reply.take();
        drop(q);
        drop(done);
        false
    } else {
        q.state = State::Queued;
        true
    }
}

fn send_header(handle: &ConnHandle, header: Vec<u8>) -> Result<(), switchboard::SendError> {
    handle.send(header)
}

fn answer(inner: &Inner, handle: &ConnHandle, request: Request) -> Result<(), switchboard::SendError> {
    let reply = inner.reply(request);
    if !reply.header.is_empty() {
        handle.send(reply.header)?;
    }
    match reply.file {
        Some((file, size)) => handle.send_file(file, 0, size),
        None => Ok(()),
    }
}
