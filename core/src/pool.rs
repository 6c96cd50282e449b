//! The blocking-work pool: threads that run handlers' blocking jobs
//! ([`Conn::spawn_blocking`](crate::Conn::spawn_blocking)) off the event
//! loop, shared fairly between connections.
//!
//! Each connection has its own queue of jobs. A connection with work waits
//! in one run queue, once; a thread takes the connection at the front, takes
//! **one** of its jobs, and puts the connection back at the end if more are
//! waiting, before it runs the job. So a connection's jobs run side by side
//! on several threads when the pool has threads to spare, and a connection
//! that just asked waits for at most one job of each connection ahead of it,
//! however long their backlogs are.
//!
//! The cost of a job (its time on the thread, beyond a [`QUANTUM`]) is
//! counted against its connection while it has more work queued: it then
//! lets the others go first, one quantum of its debt per turn it skips. A
//! connection whose jobs are long gets fewer turns, not more of the pool.
//!
//! Threads start on demand, up to the configured number, when a job finds
//! none idle, and live until the server stops; jobs wait in a bounded
//! queue. Nothing here knows connections, only their ids: the pool sits on
//! the lowest floor and [`conn`](crate::conn) builds on it.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::thread::{self, JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// The pool time a turn gives a connection for free.
pub(crate) const QUANTUM: Duration = Duration::from_millis(5);

/// The most debt a connection carries, so that one huge job does not
/// stall its owner's next ones for good.
const MAX_DEBT: Duration = Duration::from_secs(1);

/// The default number of pool threads (started on demand): as many as
/// tokio's blocking pool, so that pipelined jobs that mostly wait (a
/// database call, a sleep) run side by side.
pub(crate) const DEFAULT_THREADS: usize = 512;
/// The most pool threads a server may be given.
pub(crate) const MAX_THREADS: usize = 4096;
/// The default number of jobs waiting for a thread at most.
pub(crate) const DEFAULT_QUEUE: usize = 65_536;
/// The most jobs waiting a server may be given.
pub(crate) const MAX_QUEUE: usize = 1 << 22;

/// Why [`Conn::spawn_blocking`](crate::Conn::spawn_blocking) did not take
/// a job. The job is dropped unrun and no reply was promised: the handler
/// answers at once (an error line, a "busy" reply) or closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpawnError {
    /// The queue of jobs waiting for a thread is full
    /// ([`ServerBuilder::blocking_queue`](crate::ServerBuilder::blocking_queue)).
    Busy {
        /// The queue's limit.
        limit: usize,
    },
    /// The server is stopping: its pool takes no more jobs.
    Stopped,
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpawnError::Busy { limit } => write!(f, "blocking pool busy: {limit} jobs already waiting"),
            SpawnError::Stopped => f.write_str("blocking pool stopped: the server is shutting down"),
        }
    }
}

impl std::error::Error for SpawnError {}

/// A job as the pool runs it.
pub(crate) type Job = Box<dyn FnOnce() + Send + 'static>;

/// One connection's work.
#[derive(Default)]
struct Queue {
    /// Jobs not yet started, each with the time before which it must not.
    jobs: VecDeque<(Job, Option<Instant>)>,
    /// In the run queue or in `blocked`.
    scheduled: bool,
    /// Jobs running now.
    running: usize,
    /// Pool time used beyond its quanta, still to be paid by skipped turns.
    debt: Duration,
}

#[derive(Default)]
struct State {
    queues: HashMap<u64, Queue>,
    /// Connections with a job that may start now, each once.
    run: VecDeque<u64>,
    /// Connections whose next job waits for a time.
    blocked: Vec<(u64, Instant)>,
    /// Jobs not yet started, counted against the limit.
    waiting: usize,
    /// Threads started and not ended, and those asleep waiting for work.
    threads: usize,
    sleeping: usize,
    stopped: bool,
    handles: Vec<JoinHandle<()>>,
}

impl State {
    /// Moves the connections whose wait is over to the run queue; returns
    /// when to look again.
    fn recheck(&mut self, now: Instant) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut i = 0;
        while i < self.blocked.len() {
            let (id, at) = self.blocked[i];
            if at <= now {
                self.blocked.swap_remove(i);
                self.run.push_back(id);
                continue;
            }
            next = Some(next.map_or(at, |t| t.min(at)));
            i += 1;
        }
        next
    }

    /// Puts connection `id` (with work, not scheduled) where its next job
    /// waits.
    fn schedule(&mut self, id: u64, now: Instant) {
        let Some(q) = self.queues.get_mut(&id) else { return };
        let Some((_, at)) = q.jobs.front() else { return };
        q.scheduled = true;
        match *at {
            Some(at) if at > now => self.blocked.push((id, at)),
            _ => self.run.push_back(id),
        }
    }

    /// The next job that may start now, and its connection.
    fn take(&mut self, now: Instant) -> Option<(u64, Job)> {
        while let Some(id) = self.run.pop_front() {
            let Some(q) = self.queues.get_mut(&id) else { continue };
            q.scheduled = false;
            if !q.debt.is_zero() {
                // Others go first.
                q.debt = q.debt.saturating_sub(QUANTUM);
                q.scheduled = true;
                self.run.push_back(id);
                continue;
            }
            match q.jobs.front() {
                None => continue,
                Some((_, Some(at))) if *at > now => {
                    let at = *at;
                    q.scheduled = true;
                    self.blocked.push((id, at));
                    continue;
                }
                Some(_) => {}
            }
            let (job, _) = q.jobs.pop_front().expect("a job at the front");
            q.running += 1;
            self.waiting -= 1;
            if !q.jobs.is_empty() {
                self.schedule(id, now);
            }
            return Some((id, job));
        }
        None
    }

    /// A job of connection `id` ended after `cost` on its thread.
    fn done(&mut self, id: u64, cost: Duration) {
        let Some(q) = self.queues.get_mut(&id) else { return };
        q.running -= 1;
        if q.jobs.is_empty() && q.running == 0 {
            self.queues.remove(&id);
            return;
        }
        q.debt = cost.saturating_sub(QUANTUM).min(MAX_DEBT);
    }
}

struct Inner {
    state: Mutex<State>,
    ready: Condvar,
    /// Told when a thread ends.
    ended: Condvar,
    max_threads: usize,
    max_waiting: usize,
}

/// The pool: shared by a server's workers (and a test harness's
/// connection); stopped and joined once when the server stops.
pub(crate) struct BlockingPool {
    inner: Arc<Inner>,
}

impl fmt::Debug for BlockingPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.inner.state.lock();
        f.debug_struct("BlockingPool")
            .field("threads", &s.threads)
            .field("max_threads", &self.inner.max_threads)
            .field("waiting", &s.waiting)
            .field("max_waiting", &self.inner.max_waiting)
            .finish()
    }
}

impl BlockingPool {
    /// A pool of at most `max_threads` threads (started on demand) and
    /// `max_waiting` jobs waiting for one.
    pub(crate) fn new(max_threads: usize, max_waiting: usize) -> BlockingPool {
        let inner = Inner {
            state: Mutex::new(State::default()),
            ready: Condvar::new(),
            ended: Condvar::new(),
            max_threads: max_threads.max(1),
            max_waiting: max_waiting.max(1),
        };
        BlockingPool { inner: Arc::new(inner) }
    }

    /// Queues `job` for connection `id`, to start no sooner than `after`
    /// from now. `bounded`: refused when the queue is full (new work);
    /// otherwise taken past the limit (work that continues a job).
    pub(crate) fn push(
        &self,
        id: u64,
        after: Duration,
        bounded: bool,
        job: impl FnOnce() -> Job,
    ) -> Result<(), SpawnError> {
        let inner = &*self.inner;
        let now = Instant::now();
        let mut s = inner.state.lock();
        if s.stopped {
            return Err(SpawnError::Stopped);
        }
        if bounded && s.waiting >= inner.max_waiting {
            return Err(SpawnError::Busy { limit: inner.max_waiting });
        }
        let at = (!after.is_zero()).then(|| crate::clock::after(now, after));
        let q = s.queues.entry(id).or_default();
        q.jobs.push_back((job(), at));
        let scheduled = q.scheduled;
        s.waiting += 1;
        if !scheduled {
            s.schedule(id, now);
        }
        let start = s.waiting > s.sleeping && s.threads < inner.max_threads;
        if start {
            s.threads += 1;
        }
        drop(s);
        inner.ready.notify_one();
        if start {
            self.start_thread();
        }
        Ok(())
    }

    fn start_thread(&self) {
        let inner = Arc::clone(&self.inner);
        let t = thread::Builder::new().name("switchboard-blocking".into()).spawn(move || run(&inner));
        let mut s = self.inner.state.lock();
        match t {
            Ok(t) => s.handles.push(t),
            Err(e) => {
                s.threads -= 1;
                log::error!(
                    "cannot start a blocking pool thread ({} running): {e}; jobs wait for a running one",
                    s.threads
                );
            }
        }
    }

    /// Takes no more jobs, drops those not started (their replies end
    /// there) and joins the threads once their running jobs are done,
    /// waiting `patience` at most: a job still running then is left to end
    /// on its own (its thread detached, and said so), so a stuck job cannot
    /// hold up the server's shutdown for good.
    pub(crate) fn stop(&self, patience: Duration) {
        let (dropped, handles) = {
            let mut s = self.inner.state.lock();
            s.stopped = true;
            s.run.clear();
            s.blocked.clear();
            s.waiting = 0;
            let dropped: Vec<Queue> = s.queues.drain().map(|(_, q)| q).collect();
            (dropped, std::mem::take(&mut s.handles))
        };
        self.inner.ready.notify_all();
        let waiting: usize = dropped.iter().map(|q| q.jobs.len()).sum();
        if waiting > 0 {
            log::info!("blocking pool stopped with {waiting} jobs not started; their replies end unsent");
        }
        drop(dropped);
        let me: ThreadId = thread::current().id();
        let mine = handles.iter().any(|t| t.thread().id() == me);
        let deadline = crate::clock::after(Instant::now(), patience);
        let mut s = self.inner.state.lock();
        // A pool thread that drops the last owner of the pool does not wait
        // for itself.
        let mut stuck = false;
        while s.threads > usize::from(mine) {
            if self.inner.ended.wait_until(&mut s, deadline).timed_out() {
                log::error!(
                    "blocking pool: {} jobs still running after {patience:?}; their threads are left to end on their own",
                    s.threads - usize::from(mine)
                );
                stuck = true;
                break;
            }
        }
        drop(s);
        // Every thread has counted itself out (it is returning): join them
        // all, so none is left when the caller goes on. After a stuck job,
        // only those already finished.
        for t in handles {
            if t.thread().id() == me || (stuck && !t.is_finished()) {
                continue;
            }
            if t.join().is_err() {
                log::error!("a blocking pool thread panicked");
            }
        }
    }
}

/// How long a pool dropped without [`BlockingPool::stop`] (a test
/// harness's) waits for its running jobs.
const DROP_PATIENCE: Duration = Duration::from_secs(10);

impl Drop for BlockingPool {
    fn drop(&mut self) {
        self.stop(DROP_PATIENCE);
    }
}

fn run(inner: &Inner) {
    let mut s = inner.state.lock();
    loop {
        if s.stopped {
            break;
        }
        let now = Instant::now();
        let next = s.recheck(now);
        if let Some((id, job)) = s.take(now) {
            drop(s);
            let started = Instant::now();
            if catch_unwind(AssertUnwindSafe(job)).is_err() {
                log::error!("conn {id}: a blocking job panicked; its reply ends there");
            }
            let cost = started.elapsed();
            s = inner.state.lock();
            s.done(id, cost);
            continue;
        }
        s.sleeping += 1;
        match next {
            Some(at) => {
                inner.ready.wait_until(&mut s, at);
            }
            None => inner.ready.wait(&mut s),
        }
        s.sleeping -= 1;
    }
    s.threads -= 1;
    drop(s);
    inner.ended.notify_all();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossbeam_channel::{unbounded, Receiver};

    fn recv(rx: &Receiver<(u64, usize)>) -> (u64, usize) {
        rx.recv_timeout(Duration::from_secs(10)).expect("a job ran")
    }

    #[test]
    fn a_connection_that_asks_waits_for_one_job_not_for_another_ones_backlog() {
        let pool = BlockingPool::new(1, 100);
        let (tx, rx) = unbounded();
        let (gate_tx, gate_rx) = unbounded::<()>();
        // The first job holds the only thread until the backlog is queued.
        pool.push(1, Duration::ZERO, true, || {
            let gate = gate_rx.clone();
            let tx = tx.clone();
            Box::new(move || {
                gate.recv().unwrap();
                tx.send((1, 0)).unwrap();
            })
        })
        .unwrap();
        for i in 1..50 {
            let tx = tx.clone();
            pool.push(1, Duration::ZERO, true, || Box::new(move || tx.send((1, i)).unwrap())).unwrap();
        }
        let tx2 = tx.clone();
        pool.push(2, Duration::ZERO, true, || Box::new(move || tx2.send((2, 0)).unwrap())).unwrap();
        gate_tx.send(()).unwrap();
        let order: Vec<_> = (0..51).map(|_| recv(&rx)).collect();
        let second = order.iter().position(|&(id, _)| id == 2).unwrap();
        // Connection 1's first job, then at most one more of it.
        assert!(second <= 2, "connection 2 ran {second}th: {order:?}");
        let ones: Vec<usize> = order.iter().filter(|(id, _)| *id == 1).map(|&(_, i)| i).collect();
        assert_eq!(ones, (0..50).collect::<Vec<_>>(), "one connection's jobs start in order");
    }

    #[test]
    fn a_full_queue_refuses_new_work_but_takes_continued_work() {
        let pool = BlockingPool::new(1, 2);
        let (gate_tx, gate_rx) = unbounded::<()>();
        pool.push(7, Duration::ZERO, true, || {
            let gate = gate_rx.clone();
            Box::new(move || gate.recv().unwrap())
        })
        .unwrap();
        // The thread may not have taken the first job yet: fill up to the
        // limit whatever it did.
        let deadline = Instant::now() + Duration::from_secs(10);
        while pool.inner.state.lock().waiting > 0 {
            assert!(Instant::now() < deadline, "the thread never took the first job");
            thread::yield_now();
        }
        pool.push(7, Duration::ZERO, true, || Box::new(|| ())).unwrap();
        pool.push(8, Duration::ZERO, true, || Box::new(|| ())).unwrap();
        let refused = pool.push(9, Duration::ZERO, true, || Box::new(|| ()));
        assert_eq!(refused, Err(SpawnError::Busy { limit: 2 }));
        assert_eq!(pool.push(9, Duration::ZERO, false, || Box::new(|| ())), Ok(()));
        gate_tx.send(()).unwrap();
        pool.stop(Duration::from_secs(10));
        assert_eq!(pool.push(9, Duration::ZERO, true, || Box::new(|| ())), Err(SpawnError::Stopped));
        assert_eq!(pool.inner.state.lock().threads, 0, "stop joins every thread");
    }

    #[test]
    fn stop_leaves_a_stuck_job_behind_after_its_patience() {
        let pool = BlockingPool::new(2, 10);
        let (tx, rx) = unbounded();
        let (gate_tx, gate_rx) = unbounded::<()>();
        pool.push(1, Duration::ZERO, true, || {
            Box::new(move || {
                tx.send((1, 0)).unwrap();
                let _ = gate_rx.recv();
            })
        })
        .unwrap();
        assert_eq!(recv(&rx), (1, 0));
        let asked = Instant::now();
        pool.stop(Duration::from_millis(100));
        let took = asked.elapsed();
        assert!(took >= Duration::from_millis(100) && took < Duration::from_secs(5), "{took:?}");
        assert_eq!(pool.inner.state.lock().threads, 1, "the stuck job's thread still runs");
        // Let it end: it leaves the pool without anyone joining it.
        drop(gate_tx);
        let deadline = Instant::now() + Duration::from_secs(10);
        while pool.inner.state.lock().threads > 0 {
            assert!(Instant::now() < deadline, "the detached thread never ended");
            thread::yield_now();
        }
    }

    #[test]
    fn a_delayed_job_waits_its_time_and_lets_others_run() {
        let pool = BlockingPool::new(1, 10);
        let (tx, rx) = unbounded();
        let asked = Instant::now();
        let t1 = tx.clone();
        pool.push(1, Duration::from_millis(100), true, || Box::new(move || t1.send((1, 0)).unwrap()))
            .unwrap();
        pool.push(2, Duration::ZERO, true, || Box::new(move || tx.send((2, 0)).unwrap())).unwrap();
        assert_eq!(recv(&rx), (2, 0));
        assert_eq!(recv(&rx), (1, 0));
        assert!(asked.elapsed() >= Duration::from_millis(100), "{:?}", asked.elapsed());
    }

    #[test]
    fn jobs_run_side_by_side_up_to_the_thread_limit() {
        let pool = BlockingPool::new(4, 100);
        let (tx, rx) = unbounded();
        let (gate_tx, gate_rx) = unbounded::<()>();
        for i in 0..6 {
            let (tx, gate) = (tx.clone(), gate_rx.clone());
            pool.push(1, Duration::ZERO, true, || {
                Box::new(move || {
                    tx.send((1, i)).unwrap();
                    gate.recv().unwrap();
                })
            })
            .unwrap();
        }
        let started: Vec<_> = (0..4).map(|_| recv(&rx)).collect();
        assert_eq!(started.len(), 4);
        assert!(rx.recv_timeout(Duration::from_millis(50)).is_err(), "a fifth job ran beside four");
        assert_eq!(pool.inner.state.lock().threads, 4);
        for _ in 0..6 {
            gate_tx.send(()).unwrap();
        }
        let rest: Vec<_> = (0..2).map(|_| recv(&rx)).collect();
        assert_eq!(rest.len(), 2);
    }

    #[test]
    fn a_panicking_job_leaves_the_thread_working() {
        let pool = BlockingPool::new(1, 10);
        let (tx, rx) = unbounded();
        pool.push(1, Duration::ZERO, true, || Box::new(|| panic!("a job's bug"))).unwrap();
        pool.push(1, Duration::ZERO, true, || Box::new(move || tx.send((1, 1)).unwrap())).unwrap();
        assert_eq!(recv(&rx), (1, 1));
    }
}
