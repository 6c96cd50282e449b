//! A worker thread: one `mio::Poll` over many connections.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, Read};
use std::net::{Shutdown, SocketAddr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::clock;
use crate::conn::{Conn, ConnShared, Message};
use crate::framing::{Decoder, Step};
use crate::handler::{CloseReason, Flow, Handler};
use crate::outbound::{Outbound, WriteError};
use crate::server::Shared;
use crate::shutdown::Phase as Lifecycle;
use crate::stats::{add, bump, WorkerCounters};

const WAKER: Token = Token(usize::MAX);
/// Reads per readiness event before other connections get a turn.
const READS_PER_TURN: usize = 16;
/// Mail handled per loop turn before sockets get a turn.
const MAIL_PER_TURN: usize = 16 * 1024;
/// File regions queued for one connection before reading from it stops.
const MAX_QUEUED_FILES: usize = 16;
/// Bytes a lingering close reads and discards at most.
const LINGER_BYTES: usize = 1 << 20;

/// What other threads send to a worker.
pub(crate) enum Mail {
    /// A new connection from the acceptor.
    Conn(TcpStream, SocketAddr),
    /// Bytes from a [`ConnHandle`](crate::ConnHandle).
    Send { token: usize, id: u64, msg: Message },
    /// A file region from a [`ConnHandle`](crate::ConnHandle).
    SendFile { token: usize, id: u64, file: Arc<File>, offset: u64, len: u64 },
    /// A deferred reply is complete.
    Release { token: usize, id: u64 },
    /// Close a connection: a slow consumer (at once) or on request (after
    /// flushing).
    Close { token: usize, id: u64, slow: bool },
}

/// A worker's inbox: a channel and the waker of its poll.
pub(crate) struct Mailbox {
    tx: Sender<Mail>,
    pub(crate) waker: Arc<Waker>,
    /// A wake is pending: senders skip the system call.
    pending: AtomicBool,
}

impl Mailbox {
    pub(crate) fn post(&self, mail: Mail) -> Result<(), Mail> {
        self.tx.send(mail).map_err(|e| e.into_inner())?;
        if !self.pending.swap(true, Ordering::AcqRel) {
            if let Err(e) = self.waker.wake() {
                log::error!("cannot wake a worker: {e}");
            }
        }
        Ok(())
    }
}

/// How the acceptor reaches a worker.
#[derive(Clone)]
pub(crate) struct WorkerLink {
    pub(crate) mailbox: Arc<Mailbox>,
    pub(crate) load: Arc<AtomicUsize>,
}

/// What a worker did during shutdown.
#[derive(Debug, Default)]
pub(crate) struct WorkerReport {
    pub(crate) drained: usize,
    pub(crate) forced: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Open,
    /// Closing: no more frames; flush, then shut down the write side.
    Flushing,
    /// Write side shut: read and discard until EOF or the deadline.
    Lingering {
        until: Instant,
    },
}

struct Connection<S> {
    sock: TcpStream,
    shared: Arc<ConnShared>,
    session: Option<S>,
    decoder: Decoder,
    /// The unconsumed tail of the input: at most one incomplete frame (and,
    /// while reading is paused, what the last read brought).
    tail: Vec<u8>,
    out: Outbound,
    phase: Phase,
    /// Why the connection is closing, once it is.
    reason: Option<CloseReason>,
    last_io: Instant,
    last_read: Instant,
    partial_since: Option<Instant>,
    /// Reading stopped: too much queued (backpressure).
    paused: bool,
    /// Reading stopped by the handler until then ([`Conn::pause_reading`]).
    paused_until: Option<Instant>,
    linger_read: usize,
}

impl<S> Connection<S> {
    fn conn(&mut self, draining: bool) -> (Option<&mut S>, Conn<'_>) {
        let conn =
            Conn { shared: &self.shared, out: &mut self.out, draining, paused_until: &mut self.paused_until };
        (self.session.as_mut(), conn)
    }

    fn queued(&self) -> usize {
        self.shared.queued.load(Ordering::Acquire)
    }

    /// Replies are still taken: open, or closing with the queue not yet flushed.
    fn accepts_output(&self) -> bool {
        matches!(self.phase, Phase::Open | Phase::Flushing)
    }

    /// Deferred replies outstanding.
    fn deferred(&self) -> bool {
        self.shared.deferred.load(Ordering::Acquire) > 0
    }

    /// Too much queued: stop reading (memory bytes, or file regions, each of
    /// which holds a descriptor).
    fn over_high_water(&self, high_water: usize) -> bool {
        self.queued() > high_water || self.out.files() > MAX_QUEUED_FILES
    }
}

/// A minimal slab: tokens are indices, freed slots are reused.
struct Slab<T> {
    slots: Vec<Option<T>>,
    free: Vec<usize>,
    len: usize,
}

impl<T> Slab<T> {
    fn new() -> Slab<T> {
        Slab { slots: Vec::new(), free: Vec::new(), len: 0 }
    }
    fn vacant(&self) -> usize {
        self.free.last().copied().unwrap_or(self.slots.len())
    }
    fn insert(&mut self, value: T) -> usize {
        self.len += 1;
        match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(value);
                i
            }
            None => {
                self.slots.push(Some(value));
                self.slots.len() - 1
            }
        }
    }
    fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        self.slots.get_mut(i).and_then(Option::as_mut)
    }
    fn remove(&mut self, i: usize) -> Option<T> {
        let v = self.slots.get_mut(i)?.take()?;
        self.free.push(i);
        self.len -= 1;
        Some(v)
    }
    fn tokens(&self) -> Vec<usize> {
        self.slots.iter().enumerate().filter(|(_, s)| s.is_some()).map(|(i, _)| i).collect()
    }
}

/// One worker: its poll, its connections, its scratch buffer.
pub(crate) struct Worker<H: Handler> {
    index: usize,
    poll: Poll,
    handler: Arc<H>,
    shared: Arc<Shared>,
    mailbox: Arc<Mailbox>,
    rx: Receiver<Mail>,
    load: Arc<AtomicUsize>,
    conns: Slab<Connection<H::Session>>,
    scratch: Vec<u8>,
    /// Connections to read again without waiting for an event.
    ready: Vec<usize>,
    /// Connections with new output to write.
    dirty: Vec<usize>,
    draining: bool,
    grace_deadline: Option<Instant>,
    report: WorkerReport,
    /// The time at the start of this loop turn: precise enough for timeouts.
    now: Instant,
    /// When paused connections resume reading: (time, token, connection id).
    timers: BinaryHeap<Reverse<(Instant, usize, u64)>>,
}

macro_rules! guarded {
    ($stats:expr, $body:expr) => {
        match catch_unwind(AssertUnwindSafe(|| $body)) {
            Ok(v) => Some(v),
            Err(_) => {
                bump(&$stats.handler_panics);
                None
            }
        }
    };
}

impl<H: Handler> Worker<H> {
    pub(crate) fn new(index: usize, handler: Arc<H>, shared: Arc<Shared>) -> io::Result<(Self, WorkerLink)> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = crossbeam_channel::unbounded();
        let mailbox = Arc::new(Mailbox { tx, waker, pending: AtomicBool::new(false) });
        let load = Arc::new(AtomicUsize::new(0));
        let link = WorkerLink { mailbox: Arc::clone(&mailbox), load: Arc::clone(&load) };
        let scratch = vec![0; shared.config.read_buffer];
        let worker = Worker {
            index,
            poll,
            handler,
            shared,
            mailbox,
            rx,
            load,
            conns: Slab::new(),
            scratch,
            ready: Vec::new(),
            dirty: Vec::new(),
            draining: false,
            grace_deadline: None,
            report: WorkerReport::default(),
            now: Instant::now(),
            timers: BinaryHeap::new(),
        };
        Ok((worker, link))
    }

    fn counters(&self) -> &WorkerCounters {
        &self.shared.stats.workers[self.index]
    }

    pub(crate) fn run(mut self) -> WorkerReport {
        let mut events = Events::with_capacity(1024);
        let tick = self.shared.config.tick();
        let mut next_sweep = Instant::now() + tick;
        let mut more_mail = false;
        loop {
            let timeout = if more_mail || !self.ready.is_empty() {
                Duration::ZERO
            } else {
                let wake = self.timers.peek().map_or(next_sweep, |Reverse((t, _, _))| (*t).min(next_sweep));
                wake.saturating_duration_since(Instant::now())
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    log::error!("worker {}: poll failed: {e}", self.index);
                    std::thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
            self.now = Instant::now();
            for event in events.iter() {
                let token = event.token();
                if token == WAKER {
                    continue;
                }
                if event.is_writable() || event.is_write_closed() || event.is_error() {
                    self.flush(token.0);
                }
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    // A read shorter than the buffer drained the socket: the
                    // next bytes bring a new edge. Unless the peer's FIN is
                    // already here, stop there and save a system call.
                    let to_eof = event.is_read_closed() || event.is_error();
                    self.on_readable(token.0, to_eof);
                }
            }
            more_mail = self.take_mail();
            self.resume_paused();
            for token in std::mem::take(&mut self.ready) {
                self.on_readable(token, true);
            }
            for token in std::mem::take(&mut self.dirty) {
                self.flush(token);
            }
            let now = self.now;
            if now >= next_sweep {
                self.sweep(now);
                next_sweep = now + tick;
            }
            if self.check_shutdown(now) {
                break;
            }
        }
        log::debug!("worker {} done: {:?}", self.index, self.report);
        self.report
    }

    /// Connections whose handler-set pause is over read again.
    fn resume_paused(&mut self) {
        while let Some(Reverse((until, token, id))) = self.timers.peek().copied() {
            if until > self.now {
                break;
            }
            self.timers.pop();
            let Some(c) = self.conns.get_mut(token) else { continue };
            if c.shared.id != id || c.paused_until.is_none_or(|t| t > self.now) {
                continue;
            }
            c.paused_until = None;
            if c.phase == Phase::Open {
                if !c.tail.is_empty() && !self.process(token, 0) {
                    self.flush(token);
                    continue;
                }
                self.flush(token);
                self.ready.push(token);
            }
        }
    }

    /// Handles the shutdown phases; true when the worker may exit.
    fn check_shutdown(&mut self, now: Instant) -> bool {
        let phase = self.shared.shutdown.phase();
        if phase >= Lifecycle::Draining && !self.draining {
            self.begin_drain();
        }
        let past_grace = self.grace_deadline.is_some_and(|d| now >= d);
        if (phase >= Lifecycle::Forcing || past_grace) && self.conns.len > 0 {
            for token in self.conns.tokens() {
                // A lingering connection has delivered everything: not forced.
                let lingering = self.conns.get_mut(token).and_then(|c| match c.phase {
                    Phase::Lingering { .. } => Some(c.reason.take()),
                    _ => None,
                });
                match lingering {
                    Some(reason) => self.finish(token, reason.unwrap_or(CloseReason::Drained)),
                    None => self.close_now(token, CloseReason::Forced),
                }
            }
        }
        self.draining
            && self.conns.len == 0
            && self.shared.acceptor_done.load(Ordering::Acquire)
            && self.rx.is_empty()
    }

    fn begin_drain(&mut self) {
        self.draining = true;
        let started = self.shared.shutdown.started().unwrap_or_else(Instant::now);
        self.grace_deadline = Some(clock::after(started, self.shared.config.grace));
        for token in self.conns.tokens() {
            self.drain_one(token);
        }
    }

    fn drain_one(&mut self, token: usize) {
        let Some(c) = self.conns.get_mut(token) else { return };
        if c.phase != Phase::Open {
            return;
        }
        let handler = &self.handler;
        let (session, mut conn) = c.conn(true);
        let Some(session) = session else { return };
        match guarded!(self.shared.stats, handler.drain(session, &mut conn)) {
            Some(Flow::Continue) => {}
            Some(Flow::Close) => self.begin_close(token, CloseReason::Handler),
            None => return self.close_now(token, CloseReason::HandlerPanic),
        }
        self.dirty.push(token);
    }

    /// Drains the mailbox; true if mail was left for the next turn.
    fn take_mail(&mut self) -> bool {
        self.mailbox.pending.store(false, Ordering::Release);
        for _ in 0..MAIL_PER_TURN {
            let Ok(mail) = self.rx.try_recv() else { return false };
            match mail {
                Mail::Conn(sock, peer) => self.open(sock, peer),
                Mail::Send { token, id, msg } => match self.conns.get_mut(token) {
                    Some(c) if c.shared.id == id && c.accepts_output() => {
                        c.out.push_message(msg);
                        self.dirty.push(token);
                    }
                    // Closed meanwhile: the bytes will never be written.
                    Some(c) if c.shared.id == id => {
                        c.shared.queued.fetch_sub(msg.len(), Ordering::AcqRel);
                    }
                    _ => {}
                },
                Mail::SendFile { token, id, file, offset, len } => match self.conns.get_mut(token) {
                    Some(c) if c.shared.id == id && c.accepts_output() => {
                        c.out.push_file(file, offset, len);
                        self.dirty.push(token);
                    }
                    _ => {}
                },
                Mail::Release { token, id } => {
                    if let Some(c) = self.conns.get_mut(token).filter(|c| c.shared.id == id) {
                        c.shared.deferred.fetch_sub(1, Ordering::AcqRel);
                        self.dirty.push(token);
                    }
                }
                Mail::Close { token, id, slow } => {
                    if self.conns.get_mut(token).is_some_and(|c| c.shared.id == id) {
                        if slow {
                            self.close_now(token, CloseReason::SlowConsumer);
                        } else {
                            self.begin_close(token, CloseReason::Handler);
                        }
                    }
                }
            }
        }
        true
    }

    fn open(&mut self, mut sock: TcpStream, peer: SocketAddr) {
        let token = self.conns.vacant();
        if let Err(e) =
            self.poll.registry().register(&mut sock, Token(token), Interest::READABLE | Interest::WRITABLE)
        {
            log::warn!("{peer}: cannot register the connection: {e}; closing");
            self.shared.stats.open.fetch_sub(1, Ordering::AcqRel);
            self.load.fetch_sub(1, Ordering::AcqRel);
            bump(&self.counters().closed);
            return;
        }
        let config = &self.shared.config;
        let shared = Arc::new(ConnShared {
            id: self.shared.next_id.fetch_add(1, Ordering::Relaxed),
            token,
            peer,
            queued: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            warned: AtomicBool::new(false),
            deferred: AtomicUsize::new(0),
            max_outbound: config.max_outbound,
            policy: config.policy,
            mailbox: Arc::clone(&self.mailbox),
            stats: Arc::clone(&self.shared.stats),
        });
        let now = self.now;
        let mut c = Connection {
            sock,
            shared,
            session: None,
            decoder: Decoder::new(self.handler.framing()),
            tail: Vec::new(),
            out: Outbound::default(),
            phase: Phase::Open,
            reason: None,
            last_io: now,
            last_read: now,
            partial_since: None,
            paused: false,
            paused_until: None,
            linger_read: 0,
        };
        log::debug!("{peer}: connection {} open on worker {}", c.shared.id, self.index);
        let handler = &self.handler;
        let (_, mut conn) = c.conn(self.draining);
        let session = guarded!(self.shared.stats, handler.open(&mut conn));
        let panicked = session.is_none();
        c.session = session;
        let inserted = self.conns.insert(c);
        debug_assert_eq!(inserted, token);
        if panicked {
            return self.close_now(token, CloseReason::HandlerPanic);
        }
        if self.draining {
            self.drain_one(token);
        }
        self.dirty.push(token);
    }

    /// Reads and serves what the peer sent: until the socket would block, or
    /// (unless `to_eof`) until a read comes back short.
    fn on_readable(&mut self, token: usize, to_eof: bool) {
        let Some(c) = self.conns.get_mut(token) else { return };
        match c.phase {
            Phase::Open if !c.paused && c.paused_until.is_none() => {}
            Phase::Lingering { .. } => return self.linger(token),
            _ => return,
        }
        for turn in 0..READS_PER_TURN {
            let Some(c) = self.conns.get_mut(token) else { return };
            match c.sock.read(&mut self.scratch) {
                Ok(0) => {
                    // Half-close: serve what was read, deliver the replies,
                    // then close. An incomplete frame at EOF is dropped.
                    let handler = &self.handler;
                    let (session, mut conn) = c.conn(self.draining);
                    if let Some(session) = session {
                        if guarded!(self.shared.stats, handler.eof(session, &mut conn)).is_none() {
                            return self.close_now(token, CloseReason::HandlerPanic);
                        }
                    }
                    self.begin_close(token, CloseReason::PeerClosed);
                    break;
                }
                Ok(n) => {
                    c.last_io = self.now;
                    c.last_read = self.now;
                    add(&self.shared.stats.workers[self.index].bytes_in, n as u64);
                    if !self.process(token, n) {
                        break;
                    }
                    if n < self.scratch.len() && !to_eof {
                        break;
                    }
                    if turn + 1 == READS_PER_TURN {
                        self.ready.push(token);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.close_now(token, CloseReason::Io(e)),
            }
        }
        self.flush(token);
    }

    /// Decodes the tail plus `scratch[..n]` and hands the frames to the
    /// handler. Returns whether reading may go on.
    fn process(&mut self, token: usize, n: usize) -> bool {
        let Some(c) = self.conns.get_mut(token) else { return false };
        let fresh = &self.scratch[..n];
        let mut owned = std::mem::take(&mut c.tail);
        let from_tail = !owned.is_empty();
        if from_tail {
            owned.extend_from_slice(fresh);
        }
        let input: &[u8] = if from_tail { &owned } else { fresh };
        let handler = &self.handler;
        let stats = &self.shared.stats;
        let counters = &stats.workers[self.index];
        let high_water = self.shared.config.high_water;
        let mut pos = 0;
        let mut completed = false;
        let mut outcome: Option<CloseReason> = None;
        let mut close_gracefully = false;
        while c.phase == Phase::Open && !c.paused && c.paused_until.is_none() {
            let step = c.decoder.next(&input[pos..]);
            let mut conn = Conn {
                shared: &c.shared,
                out: &mut c.out,
                draining: self.draining,
                paused_until: &mut c.paused_until,
            };
            let session = c.session.as_mut();
            let Some(session) = session else { break };
            let flow = match step {
                Step::Incomplete => break,
                Step::Skip(used) => {
                    pos += used;
                    continue;
                }
                Step::Frame(frame, used) => {
                    pos += used;
                    completed = true;
                    bump(&counters.frames);
                    guarded!(stats, handler.frame(session, frame, &mut conn))
                }
                Step::Error(err, used) => {
                    pos += used;
                    bump(&counters.frame_errors);
                    match guarded!(stats, handler.frame_error(session, err, &mut conn)) {
                        Some(Flow::Continue) if !err.is_fatal() => Some(Flow::Continue),
                        Some(_) => {
                            outcome = Some(CloseReason::BadFrame(err));
                            close_gracefully = true;
                            break;
                        }
                        None => None,
                    }
                }
            };
            match flow {
                None => {
                    outcome = Some(CloseReason::HandlerPanic);
                    break;
                }
                Some(Flow::Close) => {
                    outcome = Some(CloseReason::Handler);
                    close_gracefully = true;
                    break;
                }
                Some(Flow::Continue) => {}
            }
            if c.over_high_water(high_water) {
                c.paused = true;
            }
        }
        let rest = &input[pos..];
        if from_tail {
            owned.drain(..pos);
            c.tail = owned;
        } else if !rest.is_empty() {
            c.tail = rest.to_vec();
        }
        let partial = !c.tail.is_empty() || c.decoder.skipping();
        // The frame timeout runs from the start of the frame now incomplete.
        if !partial {
            c.partial_since = None;
        } else if completed || c.partial_since.is_none() {
            c.partial_since = Some(self.now);
        }
        if c.tail.capacity() > 0 && c.tail.is_empty() {
            c.tail = Vec::new();
        }
        let paused = c.paused || c.paused_until.is_some();
        if let Some(until) = c.paused_until {
            self.timers.push(Reverse((until, token, c.shared.id)));
        }
        match outcome {
            Some(reason) if close_gracefully => {
                self.begin_close(token, reason);
                false
            }
            Some(reason) => {
                self.close_now(token, reason);
                false
            }
            None => !paused,
        }
    }

    /// Writes what is queued; resumes reading below the low-water mark;
    /// moves a closing connection on once its queue is empty.
    fn flush(&mut self, token: usize) {
        let Some(c) = self.conns.get_mut(token) else { return };
        if !c.out.is_empty() {
            match c.out.write_to(&mut c.sock, &c.shared.queued, &mut self.scratch) {
                Ok(n) => {
                    if n > 0 {
                        c.last_io = self.now;
                        add(&self.shared.stats.workers[self.index].bytes_out, n);
                    }
                }
                Err(WriteError::FileTruncated) => return self.close_now(token, CloseReason::FileTruncated),
                Err(WriteError::Io(e)) => return self.close_now(token, CloseReason::Io(e)),
            }
        }
        let low_water = self.shared.config.high_water / 2;
        if c.paused && c.queued() <= low_water && c.out.files() <= MAX_QUEUED_FILES / 2 {
            c.paused = false;
            if c.phase == Phase::Open {
                // Frames left over from before the pause, then read again.
                if !c.tail.is_empty() && !self.process(token, 0) {
                    return;
                }
                self.ready.push(token);
            }
        }
        let Some(c) = self.conns.get_mut(token) else { return };
        if c.phase == Phase::Flushing && c.out.is_empty() && !c.deferred() {
            let _ = c.sock.shutdown(Shutdown::Write);
            c.phase = Phase::Lingering { until: clock::after(self.now, self.shared.config.linger) };
            self.linger(token);
        }
    }

    /// Reads and discards until EOF: then the close is clean.
    fn linger(&mut self, token: usize) {
        let Some(c) = self.conns.get_mut(token) else { return };
        loop {
            match c.sock.read(&mut self.scratch) {
                Ok(0) => break,
                Ok(n) => {
                    c.linger_read += n;
                    if c.linger_read > LINGER_BYTES {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let reason = c.reason.take().unwrap_or(CloseReason::PeerClosed);
        self.finish(token, reason);
    }

    /// Starts a graceful close: no more frames, flush, shut down the write
    /// side, linger.
    fn begin_close(&mut self, token: usize, reason: CloseReason) {
        let Some(c) = self.conns.get_mut(token) else { return };
        if c.phase != Phase::Open {
            return;
        }
        c.phase = Phase::Flushing;
        c.paused = false;
        c.tail = Vec::new();
        c.partial_since = None;
        c.reason = Some(reason);
        self.flush(token);
    }

    /// Closes at once, dropping anything queued.
    fn close_now(&mut self, token: usize, reason: CloseReason) {
        self.finish(token, reason);
    }

    fn finish(&mut self, token: usize, reason: CloseReason) {
        let Some(mut c) = self.conns.remove(token) else { return };
        let _ = self.poll.registry().deregister(&mut c.sock);
        c.shared.closed.store(true, Ordering::Release);
        let dropped = c.out.clear();
        c.shared.queued.fetch_sub(dropped.min(c.queued()), Ordering::AcqRel);
        let stats = &self.shared.stats;
        stats.open.fetch_sub(1, Ordering::AcqRel);
        self.load.fetch_sub(1, Ordering::AcqRel);
        let counters = &stats.workers[self.index];
        bump(&counters.closed);
        match reason {
            CloseReason::IdleTimeout | CloseReason::FrameTimeout => bump(&counters.timed_out),
            CloseReason::Forced => bump(&counters.forced_closes),
            _ => {}
        }
        if self.draining {
            if matches!(reason, CloseReason::Forced) {
                self.report.forced += 1;
            } else if reason.is_normal() {
                self.report.drained += 1;
            }
        }
        let (peer, id) = (c.shared.peer, c.shared.id);
        if reason.is_normal() {
            log::debug!("{peer}: connection {id} closed: {reason}");
        } else {
            log::info!("{peer}: connection {id} closed: {reason}");
        }
        if let Some(session) = c.session.take() {
            let handler = &self.handler;
            if guarded!(stats, handler.close(session, &reason)).is_none() {
                log::error!("{peer}: connection {id}: the handler panicked in close");
            }
        }
    }

    /// Timeouts, and the quiet check of a drain.
    fn sweep(&mut self, now: Instant) {
        let config = &self.shared.config;
        let (idle, frame_timeout, quiet) = (config.idle_timeout, config.frame_timeout, config.quiet);
        let mut actions = Vec::new();
        for (token, slot) in self.conns.slots.iter().enumerate() {
            let Some(c) = slot else { continue };
            let action = match c.phase {
                Phase::Lingering { until } if now >= until => Some(None),
                _ if now.duration_since(c.last_io) >= idle => Some(Some(CloseReason::IdleTimeout)),
                Phase::Open if c.partial_since.is_some_and(|s| now.duration_since(s) >= frame_timeout) => {
                    Some(Some(CloseReason::FrameTimeout))
                }
                Phase::Open
                    if self.draining
                        && c.out.is_empty()
                        && !c.deferred()
                        && c.tail.is_empty()
                        && now.duration_since(c.last_read) >= quiet =>
                {
                    Some(Some(CloseReason::Drained))
                }
                _ => None,
            };
            if let Some(a) = action {
                actions.push((token, a));
            }
        }
        for (token, action) in actions {
            match action {
                None => {
                    let reason = self.conns.get_mut(token).and_then(|c| c.reason.take());
                    self.finish(token, reason.unwrap_or(CloseReason::PeerClosed));
                }
                Some(CloseReason::Drained) => self.begin_close(token, CloseReason::Drained),
                Some(reason) => self.close_now(token, reason),
            }
        }
    }
}
