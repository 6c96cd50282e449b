//! A worker thread: one `mio::Poll` over many connections. Each
//! [`Connection`] says what state it is in and what it is due for; the
//! worker reads, writes, calls the handler and applies what the callback
//! returned in one place ([`Worker::settle`]).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::{self, Read};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use mio::{Events, Poll, Token, Waker};
use slotmap::{Key, KeyData, SlotMap};

use crate::clock;
use crate::close::CloseReason;
use crate::config::Shared;
use crate::conn::{HalfClose, SendRules};
use crate::connection::{Closing, Connection, Due, End, Timeouts, Writing};
use crate::cpu::IdleCpu;
use crate::framer::{Fed, Framer, Item};
use crate::handler::{Flow, Handler};
use crate::handshakes::Pool;
use crate::mailbox::{ConnKey, Mail, Mailbox, Pending, WorkerLink};
use crate::outbound::WriteError;
use crate::shutdown::Phase as Lifecycle;
use crate::stats::{add, bump, WorkerCounters};
use crate::transport::reason_of;

mod balance;
mod mail;
mod migrate;
mod preamble;

use balance::Busy;
use migrate::Arriving;

const WAKER: Token = Token(usize::MAX);
/// Reads per readiness event before other connections get a turn.
const READS_PER_TURN: usize = 16;
/// Bytes a lingering close reads and discards at most.
const LINGER_BYTES: usize = 1 << 20;

/// What a worker did during shutdown.
#[derive(Debug, Default)]
pub(crate) struct WorkerReport {
    pub(crate) drained: usize,
    pub(crate) forced: usize,
}

/// What a callback's result means for its connection.
#[derive(Debug)]
enum Outcome {
    /// Go on.
    Continue,
    /// Close gracefully: deliver what is queued, then close.
    Close(CloseReason),
    /// Close at once (a panic).
    Abort(CloseReason),
}

impl Outcome {
    fn of(flow: Option<Flow>) -> Outcome {
        match flow {
            Some(Flow::Continue) => Outcome::Continue,
            Some(Flow::Close) => Outcome::Close(CloseReason::Handler),
            None => Outcome::Abort(CloseReason::HandlerPanic),
        }
    }
}

/// A scheduled wake-up of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Wake {
    /// A handler-set reading pause may be over.
    Resume,
    /// A handler timer may be due.
    Timer(u64),
}

fn token(key: ConnKey) -> Token {
    Token(key.data().as_ffi() as usize)
}

fn key(token: Token) -> ConnKey {
    KeyData::from_ffi(token.0 as u64).into()
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
    busy: Arc<AtomicU32>,
    conns: SlotMap<ConnKey, Connection<H::Session>>,
    scratch: Vec<u8>,
    /// Reused to take connections' inboxes.
    inbox: Vec<Pending>,
    /// Connections to read again without waiting for an event.
    ready: Vec<ConnKey>,
    /// Connections with new output to write.
    dirty: Vec<ConnKey>,
    draining: bool,
    grace_deadline: Option<Instant>,
    report: WorkerReport,
    /// The time at the start of this loop turn: precise enough for timeouts.
    now: Instant,
    /// Scheduled wake-ups; stale ones (closed connection, moved deadline)
    /// are skipped when they come up.
    wakeups: BinaryHeap<Reverse<(Instant, ConnKey, Wake)>>,
    /// Every worker's link (this one's included), to move connections to.
    peers: Vec<WorkerLink>,
    /// Connections that moved away, by their old key: where their late mail
    /// goes, and their id.
    moved: HashMap<ConnKey, (Arc<Mailbox>, u64)>,
    /// Connections that moved in, by id, until their move is settled.
    arriving: HashMap<u64, Arriving>,
    idle_cpu: IdleCpu,
    /// Where TLS handshake steps run (under TLS).
    handshakes: Option<Pool>,
    /// Handshakes refused since the last log line about them, and when
    /// that was.
    refused: (u64, Option<Instant>),
    /// The sending rules every connection opened here shares.
    rules: Arc<SendRules>,
    /// How busy the loop is (the balancing policy).
    balance: Busy,
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
        let busy = Arc::new(AtomicU32::new(0));
        let link = WorkerLink {
            index,
            mailbox: Arc::clone(&mailbox),
            load: Arc::clone(&load),
            busy: Arc::clone(&busy),
        };
        let scratch = vec![0; shared.config.read_buffer];
        let rules = Arc::new(SendRules {
            max_outbound: shared.config.max_outbound,
            max_outbound_total: shared.config.max_outbound_total,
            policy: shared.config.policy,
            framing: handler.framing(),
        });
        let worker = Worker {
            rules,
            index,
            poll,
            handler,
            shared,
            mailbox,
            rx,
            load,
            busy,
            conns: SlotMap::with_key(),
            scratch,
            inbox: Vec::new(),
            ready: Vec::new(),
            dirty: Vec::new(),
            draining: false,
            grace_deadline: None,
            report: WorkerReport::default(),
            now: Instant::now(),
            wakeups: BinaryHeap::new(),
            peers: Vec::new(),
            moved: HashMap::new(),
            arriving: HashMap::new(),
            idle_cpu: IdleCpu::new(),
            handshakes: None,
            refused: (0, None),
            balance: Busy::new(Instant::now()),
        };
        Ok((worker, link))
    }

    /// Gives the worker the links of all workers, to move connections to.
    pub(crate) fn set_peers(&mut self, peers: Vec<WorkerLink>) {
        self.peers = peers;
    }

    /// Gives the worker the handshake pool its TLS connections' handshake
    /// steps run on.
    pub(crate) fn set_handshake_pool(&mut self, pool: Pool) {
        self.handshakes = Some(pool);
    }

    fn counters(&self) -> &WorkerCounters {
        &self.shared.stats.workers[self.index]
    }

    pub(crate) fn run(mut self) -> WorkerReport {
        let mut events = Events::with_capacity(1024);
        let tick = self.shared.config.tick();
        let spin = self.shared.config.spin;
        let mut next_sweep = Instant::now() + tick;
        let mut more_mail = false;
        let mut spin_until = Instant::now();
        loop {
            let before = Instant::now();
            let timeout = if more_mail || !self.ready.is_empty() || before < spin_until {
                Duration::ZERO
            } else {
                let wake = self.wakeups.peek().map_or(next_sweep, |Reverse((t, _, _))| (*t).min(next_sweep));
                wake.saturating_duration_since(before)
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    log::error!("worker {}: poll failed: {e}", self.index);
                    std::thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
            self.now = Instant::now();
            self.measure(before);
            let mut socket_events = false;
            for event in events.iter() {
                if event.token() == WAKER {
                    continue;
                }
                socket_events = true;
                let key = key(event.token());
                if event.is_writable() || event.is_write_closed() || event.is_error() {
                    self.flush(key);
                }
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    // A read shorter than the buffer drained the socket: the
                    // next bytes bring a new edge. Unless the peer's FIN is
                    // already here, stop there and save a system call.
                    let to_eof = event.is_read_closed() || event.is_error();
                    self.on_readable(key, to_eof);
                }
            }
            if socket_events && !spin.is_zero() {
                spin_until = self.now + spin;
            }
            more_mail = self.take_mail();
            self.fire_wakeups();
            for key in std::mem::take(&mut self.ready) {
                self.on_readable(key, true);
            }
            for key in std::mem::take(&mut self.dirty) {
                self.flush(key);
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

    /// Applies what a callback returned and asked through its `Conn`: the
    /// one place where a callback's wishes become the connection's state.
    /// Returns whether the connection still takes frames.
    fn settle(&mut self, key: ConnKey, outcome: Outcome) -> bool {
        if let Outcome::Abort(reason) = outcome {
            self.finish(key, reason);
            return false;
        }
        let high_water = self.shared.config.high_water;
        let Some(c) = self.conns.get_mut(key) else { return false };
        if let Some(until) = c.ctl.paused_until {
            if c.ctl.pause_scheduled != Some(until) {
                c.ctl.pause_scheduled = Some(until);
                self.wakeups.push(Reverse((until, key, Wake::Resume)));
            }
        }
        if std::mem::take(&mut c.ctl.timers_changed) {
            for &(id, at) in &c.ctl.timers {
                self.wakeups.push(Reverse((at, key, Wake::Timer(id))));
            }
        }
        c.update_backpressure(high_water);
        let close = match outcome {
            Outcome::Close(reason) => Some(reason),
            _ if std::mem::take(&mut c.ctl.close) => Some(CloseReason::Handler),
            _ => None,
        };
        self.dirty.push(key);
        if let Some(reason) = close {
            self.begin_close(key, reason);
            return false;
        }
        c.takes_frames()
    }

    /// Wake-ups that are due: pauses that are over, timers.
    fn fire_wakeups(&mut self) {
        while let Some(&Reverse((at, key, wake))) = self.wakeups.peek() {
            if at > self.now {
                break;
            }
            self.wakeups.pop();
            let Some(c) = self.conns.get_mut(key) else { continue };
            match wake {
                Wake::Resume => {
                    if c.ctl.pause_scheduled != Some(at) {
                        continue; // moved: a later wake-up is scheduled
                    }
                    c.ctl.pause_scheduled = None;
                    c.ctl.paused_until = None;
                    c.end_wait(self.now);
                    self.wake_reading(key);
                }
                Wake::Timer(id) => {
                    let Some(i) = c.ctl.timers.iter().position(|&(t, d)| t == id && d == at) else {
                        continue; // cancelled or moved
                    };
                    c.ctl.timers.swap_remove(i);
                    if c.writing() != Writing::Open {
                        continue;
                    }
                    let handler = &self.handler;
                    let (session, mut conn) =
                        c.parts(&self.shared.stats.workers[self.index].queued, self.draining);
                    let Some(session) = session else { continue };
                    let flow = guarded!(self.shared.stats, handler.timer(session, id, &mut conn));
                    self.settle(key, Outcome::of(flow));
                }
            }
        }
    }

    /// Reading may go on again (a hold ended): serve the frames read before
    /// the hold, then read.
    fn wake_reading(&mut self, key: ConnKey) {
        let Some(c) = self.conns.get_mut(key) else { return };
        if !c.takes_frames() {
            return;
        }
        if c.framer.buffered() > 0 && !self.process(key, 0) {
            return;
        }
        self.ready.push(key);
        self.dirty.push(key);
    }

    /// Handles the shutdown phases; true when the worker may exit.
    fn check_shutdown(&mut self, now: Instant) -> bool {
        let phase = self.shared.shutdown.phase();
        if phase >= Lifecycle::Draining && !self.draining {
            self.begin_drain();
        }
        let past_grace = self.grace_deadline.is_some_and(|d| now >= d);
        if (phase >= Lifecycle::Forcing || past_grace) && !self.conns.is_empty() {
            let keys: Vec<ConnKey> = self.conns.keys().collect();
            for key in keys {
                // A lingering connection has delivered everything: not forced.
                self.end(key, End::Lingered);
            }
        }
        self.draining
            && self.conns.is_empty()
            && self.shared.acceptor_done.load(Ordering::Acquire)
            && self.rx.is_empty()
    }

    fn begin_drain(&mut self) {
        self.draining = true;
        let started = self.shared.shutdown.started().unwrap_or_else(Instant::now);
        self.grace_deadline = Some(clock::after(started, self.shared.config.grace));
        let keys: Vec<ConnKey> = self.conns.keys().collect();
        for key in keys {
            self.drain_one(key);
        }
    }

    fn drain_one(&mut self, key: ConnKey) {
        let Some(c) = self.conns.get_mut(key) else { return };
        if c.writing() != Writing::Open {
            return;
        }
        let handler = &self.handler;
        let (session, mut conn) = c.parts(&self.shared.stats.workers[self.index].queued, true);
        let Some(session) = session else { return };
        let flow = guarded!(self.shared.stats, handler.drain(session, &mut conn));
        self.settle(key, Outcome::of(flow));
    }

    /// Calls the handler's `open`.
    fn start_session(&mut self, key: ConnKey) {
        let Some(c) = self.conns.get_mut(key) else { return };
        let (peer, id) = (c.shared.peer, c.shared.id);
        log::debug!("{peer}: connection {id} open on worker {}", self.index);
        let handler = &self.handler;
        let (_, mut conn) = c.parts(&self.shared.stats.workers[self.index].queued, self.draining);
        let session = guarded!(self.shared.stats, handler.open(&mut conn));
        let Some(session) = session else { return self.finish(key, CloseReason::HandlerPanic) };
        c.open(session);
        if self.settle(key, Outcome::Continue) && self.draining {
            self.drain_one(key);
        }
    }

    /// Reads and serves what the peer sent: until the socket would block, or
    /// (unless `to_eof`) until a read comes back short.
    fn on_readable(&mut self, key: ConnKey, to_eof: bool) {
        let Some(c) = self.conns.get_mut(key) else { return };
        if let Writing::Lingering { .. } = c.writing() {
            return self.linger(key);
        }
        if !c.sock.is_ready() {
            return self.advance(key);
        }
        if !c.takes_frames() {
            return;
        }
        for turn in 0..READS_PER_TURN {
            let Some(c) = self.conns.get_mut(key) else { return };
            match c.sock.read(&mut self.scratch) {
                Ok(0) => {
                    // Half-close: serve what was read, deliver the replies,
                    // then close. An incomplete frame at EOF is dropped.
                    let handler = &self.handler;
                    let (session, mut conn) =
                        c.parts(&self.shared.stats.workers[self.index].queued, self.draining);
                    let outcome = match session {
                        Some(session) => match guarded!(self.shared.stats, handler.eof(session, &mut conn)) {
                            Some(()) => Outcome::Close(CloseReason::PeerClosed),
                            None => Outcome::Abort(CloseReason::HandlerPanic),
                        },
                        None => Outcome::Close(CloseReason::PeerClosed),
                    };
                    self.settle(key, outcome);
                    break;
                }
                Ok(n) => {
                    c.last_io = self.now;
                    c.last_read = self.now;
                    add(&self.shared.stats.workers[self.index].bytes_in, n as u64);
                    if !self.process(key, n) {
                        break;
                    }
                    // (A TLS peer's EOF may wait behind the bytes of a short read.)
                    let eof_next = self.conns.get(key).is_some_and(|c| c.sock.eof_pending());
                    if n < self.scratch.len() && !to_eof && !eof_next {
                        break;
                    }
                    if turn + 1 == READS_PER_TURN {
                        self.ready.push(key);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.finish(key, reason_of(e)),
            }
        }
        // Replies go out with the loop pass's other writes: every callback
        // that queued one marked the connection dirty (`settle`).
    }

    /// Decodes what the framer holds plus `scratch[..n]` and hands the
    /// frames to the handler while the connection takes them. Returns
    /// whether reading may go on.
    fn process(&mut self, key: ConnKey, n: usize) -> bool {
        let Some(c) = self.conns.get_mut(key) else { return false };
        let fresh = &self.scratch[..n];
        let handler = &self.handler;
        let stats = &self.shared.stats;
        let counters = &stats.workers[self.index];
        let (high_water, draining) = (self.shared.config.high_water, self.draining);
        let mut completed = false;
        let mut outcome = Outcome::Continue;
        // The framer leaves the connection while it hands out frames: the
        // callbacks borrow the rest of it.
        let mut framer = std::mem::replace(&mut c.framer, Framer::new(self.rules.framing));
        let fed = if c.takes_frames() && !c.ctl.close {
            framer.feed(fresh, |item| {
                let (session, mut conn) = c.parts(&counters.queued, draining);
                let Some(session) = session else { return false };
                outcome = match item {
                    Item::Frame(frame) => {
                        completed = true;
                        bump(&counters.frames);
                        Outcome::of(guarded!(stats, handler.frame(session, frame, &mut conn)))
                    }
                    Item::Error(err) => {
                        bump(&counters.frame_errors);
                        match guarded!(stats, handler.frame_error(session, err, &mut conn)) {
                            Some(Flow::Continue) if !err.is_fatal() => Outcome::Continue,
                            Some(_) => Outcome::Close(CloseReason::BadFrame(err)),
                            None => Outcome::Abort(CloseReason::HandlerPanic),
                        }
                    }
                };
                if !matches!(outcome, Outcome::Continue) {
                    return false;
                }
                c.update_backpressure(high_water);
                c.takes_frames() && !c.ctl.close
            })
        } else {
            framer.hold(fresh);
            Fed::Stopped
        };
        c.framer = framer;
        c.track_partial(fed, completed, self.now);
        self.settle(key, outcome)
    }

    /// Writes what is queued; resumes reading below the low-water mark;
    /// moves a closing connection on once its queue is empty.
    fn flush(&mut self, key: ConnKey) {
        let Some(c) = self.conns.get_mut(key) else { return };
        if !c.out.is_empty() || c.sock.wants_write() {
            match c.out.write_to(
                &mut c.sock,
                &c.shared.queued,
                &self.shared.stats.workers[self.index].queued,
                &mut self.scratch,
            ) {
                Ok(n) => {
                    if n > 0 {
                        c.last_io = self.now;
                        add(&self.shared.stats.workers[self.index].bytes_out, n);
                    }
                }
                Err(WriteError::FileTruncated) => return self.finish(key, CloseReason::FileTruncated),
                Err(WriteError::Io(e)) => return self.finish(key, reason_of(e)),
            }
        }
        if c.update_backpressure(self.shared.config.high_water) {
            self.wake_reading(key);
        }
        let Some(c) = self.conns.get_mut(key) else { return };
        if c.writing() == Writing::Open && c.half_close_due() {
            // The handler's half-close: reading goes on.
            c.ctl.half_close = HalfClose::Done;
            if let Err(e) = c.sock.shutdown_write() {
                return self.finish(key, reason_of(e));
            }
            log::debug!("{}: connection {}: write side shut by the handler", c.shared.peer, c.shared.id);
        }
        if c.flushed() {
            if c.ctl.half_close != HalfClose::Done {
                let _ = c.sock.shutdown_write();
            }
            c.start_linger(clock::after(self.now, self.shared.config.linger));
            self.linger(key);
        }
    }

    /// Reads and discards until EOF: then the close is clean.
    fn linger(&mut self, key: ConnKey) {
        let Some(c) = self.conns.get_mut(key) else { return };
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
        self.end(key, End::Lingered);
    }

    /// Starts a graceful close: no more frames, flush, shut down the write
    /// side, linger.
    fn begin_close(&mut self, key: ConnKey, reason: CloseReason) {
        let Some(c) = self.conns.get_mut(key) else { return };
        match c.begin_close(reason) {
            Closing::Began => self.flush(key),
            Closing::Already => {}
            Closing::Now(reason) => self.finish(key, reason),
        }
    }

    /// Closes now, dropping anything queued. The close is counted and the
    /// handler's `close` runs before the connection leaves `open` (the order
    /// documented on [`Stats`](crate::Stats)).
    fn finish(&mut self, key: ConnKey, reason: CloseReason) {
        self.end(key, End::Now(reason));
    }

    /// Removes connection `key`, ending as `end` says: the one place a
    /// connection leaves its worker (but for a move).
    fn end(&mut self, key: ConnKey, end: End) {
        let Some(mut c) = self.conns.remove(key) else { return };
        let _ = c.sock.deregister(self.poll.registry());
        c.shared.closed.store(true, Ordering::Release);
        // What handles queued and the worker never took goes with it.
        c.shared.take_inbox(&mut self.inbox);
        self.inbox.clear();
        let dropped = c.out.clear(&self.shared.stats.workers[self.index].queued);
        c.shared.sub_queued(dropped.min(c.shared.queued()));
        let stats = &self.shared.stats;
        let counters = &stats.workers[self.index];
        let (peer, id) = (c.shared.peer, c.shared.id);
        let (session, reason, admission) = c.end(end);
        match reason {
            CloseReason::IdleTimeout | CloseReason::FrameTimeout | CloseReason::HandshakeTimeout => {
                bump(&counters.timed_out)
            }
            CloseReason::Forced => bump(&counters.forced_closes),
            _ => {}
        }
        bump(&counters.closed);
        if self.draining {
            if matches!(reason, CloseReason::Forced) {
                self.report.forced += 1;
            } else if reason.is_normal() {
                self.report.drained += 1;
            }
        }
        if reason.is_notable() {
            log::info!("{peer}: connection {id} closed: {reason}");
        } else {
            log::debug!("{peer}: connection {id} closed: {reason}");
        }
        if let Some(session) = session {
            let handler = &self.handler;
            if guarded!(stats, handler.close(session, &reason)).is_none() {
                log::error!("{peer}: connection {id}: the handler panicked in close");
            }
        }
        // The connection leaves `open` last.
        drop(admission);
    }

    /// Timeouts, and the quiet check of a drain.
    fn sweep(&mut self, now: Instant) {
        self.log_refused();
        let config = &self.shared.config;
        let t = Timeouts { idle: config.idle_timeout, frame: config.frame_timeout, quiet: config.quiet };
        let due: Vec<(ConnKey, Due)> =
            self.conns.iter().filter_map(|(key, c)| c.due(now, t, self.draining).map(|d| (key, d))).collect();
        for (key, due) in due {
            match due {
                Due::EndLinger => self.end(key, End::Lingered),
                Due::Drain => self.begin_close(key, CloseReason::Drained),
                Due::Close(reason) => self.begin_close(key, reason),
                Due::CloseNow(reason) => self.finish(key, reason),
            }
        }
    }
}
