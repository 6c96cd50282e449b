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
use crate::conn::{ConnShared, Pending, SendRules};
use crate::connection::{ConnKey, Connection, Due, HalfClose, Stopped, Timeouts, Writing};
use crate::cpu::IdleCpu;
use crate::framing::{Decoder, Step};
use crate::handler::{CloseReason, Flow, Handler};
use crate::handshakes::{self, Job, Pool, Refused};
use crate::mailbox::{Mail, Mailbox, WorkerLink};
use crate::outbound::WriteError;
use crate::server::Shared;
use crate::shutdown::Phase as Lifecycle;
use crate::stats::{add, bump, WorkerCounters};
use crate::stream::{Peer, Stream};
use crate::tls::TlsStream;
use crate::transport::{reason_of, Advance, Transport};

const WAKER: Token = Token(usize::MAX);
/// Reads per readiness event before other connections get a turn.
const READS_PER_TURN: usize = 16;
/// Mail handled per loop turn before sockets get a turn.
const MAIL_PER_TURN: usize = 16 * 1024;
/// Bytes a lingering close reads and discards at most.
const LINGER_BYTES: usize = 1 << 20;
/// How often a worker publishes how busy it is.
const BUSY_WINDOW: Duration = Duration::from_millis(20);
/// A worker busy this share of its time (per mille) is saturated.
const SATURATED: u32 = 900;
/// Windows in a row a worker must be saturated before it moves connections.
const HOT_WINDOWS: u32 = 5;
/// Windows after moving connections before it moves more.
const COOL_WINDOWS: u32 = 25;
/// Connections moved at most at once.
const MAX_MIGRATIONS: usize = 256;
/// How often at most a worker logs the handshakes it refused.
const REFUSED_LOG_EVERY: Duration = Duration::from_secs(1);

/// A connection that moved in, until the mail about its move is done.
#[derive(Debug, Clone, Copy)]
struct Arriving {
    key: ConnKey,
    /// Keyless mail for it can no longer come.
    settled: bool,
    /// The worker it left has forwarded all earlier mail.
    forwarded: bool,
}

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
            blocking: Arc::clone(&shared.blocking),
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
        let mut window_start = Instant::now();
        let mut waited = Duration::ZERO;
        let (mut hot, mut cool) = (0u32, 0u32);
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
            waited += self.now - before;
            if self.now - window_start >= BUSY_WINDOW {
                let window = self.now - window_start;
                let busy = window.saturating_sub(waited).as_micros() * 1000 / window.as_micros().max(1);
                let busy = busy.min(1000) as u32;
                self.busy.store(busy, Ordering::Relaxed);
                window_start = self.now;
                waited = Duration::ZERO;
                cool = cool.saturating_sub(1);
                hot = if busy >= SATURATED { hot + 1 } else { 0 };
                if busy >= self.shared.config.activate_above {
                    // Busy: is there a core for another worker?
                    let idle = self.idle_cpu.idle(self.now);
                    self.shared.idle_cpu.store(idle, Ordering::Relaxed);
                }
                if hot >= HOT_WINDOWS && cool == 0 {
                    self.rebalance();
                    hot = 0;
                    cool = COOL_WINDOWS;
                }
            }
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
                    if c.writing != Writing::Open {
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
        if !c.tail.is_empty() && !self.process(key, 0) {
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
                let lingering = self.conns.get_mut(key).and_then(|c| match c.writing {
                    Writing::Lingering { .. } => Some(c.reason.take()),
                    _ => None,
                });
                match lingering {
                    Some(reason) => self.finish(key, reason.unwrap_or(CloseReason::Drained)),
                    None => self.finish(key, CloseReason::Forced),
                }
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
        if c.writing != Writing::Open {
            return;
        }
        let handler = &self.handler;
        let (session, mut conn) = c.parts(&self.shared.stats.workers[self.index].queued, true);
        let Some(session) = session else { return };
        let flow = guarded!(self.shared.stats, handler.drain(session, &mut conn));
        self.settle(key, Outcome::of(flow));
    }

    /// Drains the mailbox; true if mail was left for the next turn.
    fn take_mail(&mut self) -> bool {
        self.mailbox.pending.store(false, Ordering::Relaxed);
        // The flag cleared before looking for mail, as senders post before
        // they look at the flag (`Mailbox::post`).
        std::sync::atomic::fence(Ordering::SeqCst);
        for _ in 0..MAIL_PER_TURN {
            let Ok(mail) = self.rx.try_recv() else { return false };
            self.deliver(mail, false);
        }
        true
    }

    /// Handles one piece of mail. `forwarded`: it was posted before its
    /// connection moved here, so it goes before anything held back.
    fn deliver(&mut self, mail: Mail, forwarded: bool) {
        let to = match &mail {
            Mail::Conn(..) => {
                let Mail::Conn(sock, peer) = mail else { unreachable!() };
                return self.open(sock, peer);
            }
            Mail::Migrate(_) => {
                let Mail::Migrate(conn) = mail else { unreachable!() };
                return self.arrive(conn);
            }
            Mail::Forwarded(_) => {
                let Mail::Forwarded(inner) = mail else { unreachable!() };
                return self.deliver(*inner, true);
            }
            Mail::ForwardDone { id } => return self.forward_done(*id),
            Mail::Settled { id } => return self.settled(*id),
            Mail::Handshaken { .. } => {
                let Mail::Handshaken { key, stream, step } = mail else { unreachable!() };
                return self.handshaken(key, stream, step);
            }
            Mail::Moved { key } => {
                if let Some((mailbox, id)) = self.moved.remove(key) {
                    let _ = mailbox.post(Mail::ForwardDone { id });
                }
                return;
            }
            Mail::Inbox { to } => *to,
        };
        if let Some((mailbox, _)) = self.moved.get(&to.key) {
            // Posted before the connection moved away: after it, in order.
            let _ = mailbox.post(Mail::Forwarded(Box::new(mail)));
            return;
        }
        let key = match to.key.is_null() {
            true => match self.arriving.get(&to.id) {
                Some(a) => a.key,
                None => return,
            },
            false => to.key,
        };
        let Some(c) = self.conns.get_mut(key) else { return };
        if let (Some(held), false) = (&mut c.held, forwarded) {
            // Posted after it moved: waits for what was posted before.
            held.push(mail);
            return;
        }
        self.apply(key, mail);
    }

    /// Applies a handle's mail to its connection: takes everything in its
    /// inbox, in order.
    fn apply(&mut self, key: ConnKey, mail: Mail) {
        let Mail::Inbox { .. } = mail else { return };
        let Some(c) = self.conns.get(key) else { return };
        let mut items = std::mem::take(&mut self.inbox);
        c.shared.take_inbox(&mut items);
        for item in items.drain(..) {
            self.apply_one(key, item);
        }
        self.inbox = items;
    }

    fn apply_one(&mut self, key: ConnKey, item: Pending) {
        let Some(c) = self.conns.get_mut(key) else { return };
        match item {
            Pending::Send(msg) if c.accepts_output() => {
                c.out.push_message(msg, &self.shared.stats.workers[self.index].queued);
                self.dirty.push(key);
            }
            // Closing meanwhile: the bytes will never be written.
            Pending::Send(msg) => c.shared.sub_queued(msg.len()),
            Pending::SendFile { file, offset, len } if c.accepts_output() => {
                c.out.push_file(file, offset, len);
                self.dirty.push(key);
            }
            Pending::SendFile { .. } => {}
            Pending::Release => {
                if c.shared.deferred.fetch_sub(1, Ordering::AcqRel) == 1 {
                    // The last one: the frames that waited for it go on.
                    c.end_wait(self.now);
                    self.wake_reading(key);
                }
                self.dirty.push(key);
            }
            Pending::ShutdownWrite => {
                if c.ctl.half_close == HalfClose::No {
                    c.ctl.half_close = HalfClose::Asked;
                }
                self.dirty.push(key);
            }
            Pending::Close { slow: true } => self.finish(key, CloseReason::SlowConsumer),
            Pending::Close { slow: false } => self.begin_close(key, CloseReason::Handler),
        }
    }

    /// Moves connection `key` to another worker. Its route is switched
    /// under its lock, so every later mail lands behind it there; mail that
    /// reached this worker before is forwarded, and the new owner holds
    /// later mail back until that is done.
    fn migrate_out(&mut self, key: ConnKey, to: &WorkerLink) -> bool {
        let Some(c) = self.conns.get(key) else { return false };
        if c.writing != Writing::Open
            || c.held.is_some()
            || self.arriving.contains_key(&c.shared.id)
            || c.sock.is_away()
        {
            // (A handshake step on the pool comes back here.)
            return false;
        }
        let shared = Arc::clone(&c.shared);
        let mut route = shared.route.lock();
        let Some(mut c) = self.conns.remove(key) else { return false };
        let _ = c.sock.deregister(self.poll.registry());
        // Its queued bytes are counted by the worker that holds it.
        let mem = c.out.mem();
        self.shared.stats.workers[self.index].queued.fetch_sub(mem, Ordering::Relaxed);
        self.shared.stats.workers[to.index].queued.fetch_add(mem, Ordering::Relaxed);
        c.held = Some(Box::default());
        c.ctl.pause_scheduled = None;
        c.ctl.timers_changed = true;
        to.load.fetch_add(1, Ordering::AcqRel);
        if let Err(Mail::Migrate(back)) = to.mailbox.post(Mail::Migrate(Box::new(c))) {
            // The other worker has stopped: keep the connection here.
            to.load.fetch_sub(1, Ordering::AcqRel);
            self.shared.stats.workers[to.index].queued.fetch_sub(mem, Ordering::Relaxed);
            self.shared.stats.workers[self.index].queued.fetch_add(mem, Ordering::Relaxed);
            drop(route);
            let mut c = *back.downcast::<Connection<H::Session>>().expect("the connection just boxed");
            c.held = None;
            let key = self.conns.insert(c);
            shared.route.lock().key = key;
            if let Err(e) = self.conns[key].sock.register(self.poll.registry(), token(key)) {
                self.finish(key, CloseReason::Io(e));
            }
            return false;
        }
        route.mailbox = Arc::clone(&to.mailbox);
        route.key = ConnKey::null();
        self.moved.insert(key, (Arc::clone(&to.mailbox), shared.id));
        let _ = self.mailbox.post(Mail::Moved { key });
        drop(route);
        self.load.fetch_sub(1, Ordering::AcqRel);
        true
    }

    /// A connection moved in: register it, take its route, wake it.
    fn arrive(&mut self, conn: Box<dyn std::any::Any + Send>) {
        let Ok(c) = conn.downcast::<Connection<H::Session>>() else {
            log::error!("worker {}: a migrating connection of another handler type", self.index);
            return;
        };
        let shared = Arc::clone(&c.shared);
        let key = self.conns.insert(*c);
        {
            let mut route = shared.route.lock();
            if Arc::ptr_eq(&route.mailbox, &self.mailbox) {
                route.key = key;
            }
        }
        self.arriving.insert(shared.id, Arriving { key, settled: false, forwarded: false });
        let _ = self.mailbox.post(Mail::Settled { id: shared.id });
        if let Err(e) = self.conns[key].sock.register(self.poll.registry(), token(key)) {
            return self.finish(key, CloseReason::Io(e));
        }
        if self.settle(key, Outcome::Continue) {
            self.ready.push(key);
        }
    }

    /// All mail posted before connection `id` moved here has arrived: the
    /// mail held back goes on.
    fn forward_done(&mut self, id: u64) {
        let Some(a) = self.arriving.get_mut(&id) else { return };
        a.forwarded = true;
        let (key, done) = (a.key, a.settled);
        if done {
            self.arriving.remove(&id);
        }
        let held = self.conns.get_mut(key).and_then(|c| c.held.take()).unwrap_or_default();
        for mail in *held {
            self.apply(key, mail);
        }
    }

    /// No more keyless mail can come for connection `id`.
    fn settled(&mut self, id: u64) {
        let Some(a) = self.arriving.get_mut(&id) else { return };
        a.settled = true;
        if a.forwarded {
            self.arriving.remove(&id);
        }
    }

    /// This worker has been saturated for a while: if another is idle and
    /// the machine has a core for it, move some connections there.
    fn rebalance(&mut self) {
        let idle = self.shared.idle_cpu.load(Ordering::Relaxed);
        if self.draining || idle < self.shared.config.idle_to_activate || self.conns.len() < 2 {
            return;
        }
        let threshold = self.shared.config.activate_above;
        if threshold >= 1000 {
            return;
        }
        let mine = self.conns.len();
        let target = self
            .peers
            .iter()
            .enumerate()
            .filter(|(i, w)| *i != self.index && w.busy.load(Ordering::Relaxed) < threshold)
            .map(|(_, w)| w)
            .min_by_key(|w| w.load.load(Ordering::Acquire))
            .cloned();
        let Some(target) = target else { return };
        let theirs = target.load.load(Ordering::Acquire);
        if theirs + 1 >= mine {
            return;
        }
        let count = ((mine - theirs) / 4).clamp(1, MAX_MIGRATIONS);
        let keys: Vec<ConnKey> = self.conns.keys().take(count).collect();
        let moved = keys.into_iter().filter(|&key| self.migrate_out(key, &target)).count();
        log::debug!(
            "worker {}: saturated; moved {moved} of {mine} connections to a quieter worker ({:.2} cores idle)",
            self.index,
            f64::from(idle) / 1000.0
        );
    }

    fn open(&mut self, sock: Stream, peer: Peer) {
        let config = &self.shared.config;
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        // A fresh reading, not this turn's: the connection's handshake and
        // idle deadlines must not start before it was accepted.
        let (mailbox, stats, now) = (&self.mailbox, &self.shared.stats, Instant::now());
        let rules = &self.rules;
        let decoder = Decoder::new(rules.framing);
        let sock = match Transport::new(sock, &config.transport, now) {
            Ok(sock) => sock,
            Err(e) => {
                log::warn!("{peer}: cannot set up the connection: {e}; closing");
                bump(&self.counters().closed);
                self.load.fetch_sub(1, Ordering::AcqRel);
                self.shared.stats.open.fetch_sub(1, Ordering::AcqRel);
                return;
            }
        };
        let key = self.conns.insert_with_key(|key| {
            let shared =
                ConnShared::new(id, key, peer, Arc::clone(rules), Arc::clone(mailbox), Arc::clone(stats));
            Connection::new(sock, Arc::new(shared), decoder, now)
        });
        let c = &mut self.conns[key];
        if let Err(e) = c.sock.register(self.poll.registry(), token(key)) {
            log::warn!("{peer}: cannot register the connection: {e}; closing");
            self.conns.remove(key);
            bump(&self.counters().closed);
            self.load.fetch_sub(1, Ordering::AcqRel);
            self.shared.stats.open.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        if !c.sock.is_ready() {
            // A PROXY header or a TLS handshake first (`on_readable`).
            log::debug!("{peer}: connection {id} on worker {}: awaiting its preamble", self.index);
            return;
        }
        self.start_session(key);
    }

    /// The preamble (PROXY header, TLS handshake) moved on: opens the
    /// session once it is done.
    fn advance(&mut self, key: ConnKey) {
        let Some(c) = self.conns.get_mut(key) else { return };
        let advanced = c.sock.advance();
        self.advanced(key, advanced);
    }

    /// Where the preamble stands after a step: waits, sends the handshake
    /// step to the pool, opens the session, or closes.
    fn advanced(&mut self, key: ConnKey, advanced: Result<Advance, CloseReason>) {
        let Some(c) = self.conns.get_mut(key) else { return };
        match advanced {
            Ok(Advance::Pending) => self.dirty.push(key),
            Ok(Advance::Handshake(stream)) => self.offload(key, stream),
            Ok(Advance::Ready(client)) => {
                if let Some(client) = client {
                    match Arc::get_mut(&mut c.shared) {
                        Some(shared) => {
                            log::debug!(
                                "{}: connection {} is from {client} (PROXY header)",
                                shared.peer,
                                shared.id
                            );
                            shared.peer = Peer::Ip(client);
                        }
                        None => log::error!("{}: the connection is shared before it opened", c.shared.peer),
                    }
                }
                if c.sock.is_tls() {
                    bump(&self.shared.stats.workers[self.index].tls_handshakes);
                }
                self.start_session(key);
                // Bytes may have come with the end of the preamble.
                self.ready.push(key);
            }
            Err(reason) => self.finish(key, reason),
        }
    }

    /// Queues a new connection's first TLS handshake step (the server's
    /// flight, with its signature) on the pool; refuses the handshake when
    /// the pool's queue is full. A begun handshake (what is left: the
    /// client's Finished, a MAC and a key derivation) takes its steps here,
    /// saving two thread hand-offs.
    fn offload(&mut self, key: ConnKey, mut stream: Box<TlsStream>) {
        let begun = self.conns.get(key).is_some_and(|c| c.sock.handshake_begun());
        let pool = match &self.handshakes {
            Some(pool) if !begun => pool,
            // (Or no pool: not started under TLS.)
            _ => {
                let step = stream.handshake();
                return self.handshaken(key, stream, step);
            }
        };
        let job = Job { stream, key, mailbox: Arc::clone(&self.mailbox) };
        match pool.submit(job) {
            Ok(()) => {}
            Err(Refused::Full(stream)) => {
                drop(stream);
                bump(&self.counters().tls_handshakes_refused);
                self.refused.0 += 1;
                self.log_refused();
                self.finish(key, CloseReason::HandshakeRefused);
            }
            Err(Refused::Stopped(stream)) => {
                drop(stream);
                self.finish(key, CloseReason::Forced);
            }
        }
    }

    /// Logs the handshakes refused since the last such line, once a second
    /// at most (the sweep logs the rest of a burst).
    fn log_refused(&mut self) {
        let due = self.refused.1.is_none_or(|t| self.now.duration_since(t) >= REFUSED_LOG_EVERY);
        if self.refused.0 > 0 && due {
            let queued = self.handshakes.as_ref().map_or(0, Pool::queued);
            log::warn!(
                "worker {}: TLS handshake queue full: {} connection(s) closed before their handshake ({queued} waiting now)",
                self.index,
                self.refused.0
            );
            self.refused = (0, Some(self.now));
        }
    }

    /// A handshake step came back from the pool.
    fn handshaken(&mut self, key: ConnKey, stream: Box<TlsStream>, step: handshakes::Step) {
        // A connection closed meanwhile (its handshake timed out): the
        // stream and its socket are dropped here.
        let Some(c) = self.conns.get_mut(key) else { return };
        let advanced = c.sock.step_done(stream, step);
        self.advanced(key, advanced);
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
        c.session = Some(session);
        if self.settle(key, Outcome::Continue) && self.draining {
            self.drain_one(key);
        }
    }

    /// Reads and serves what the peer sent: until the socket would block, or
    /// (unless `to_eof`) until a read comes back short.
    fn on_readable(&mut self, key: ConnKey, to_eof: bool) {
        let Some(c) = self.conns.get_mut(key) else { return };
        if let Writing::Lingering { .. } = c.writing {
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

    /// Decodes the tail plus `scratch[..n]` and hands the frames to the
    /// handler while the connection takes them. Returns whether reading may
    /// go on.
    fn process(&mut self, key: ConnKey, n: usize) -> bool {
        let Some(c) = self.conns.get_mut(key) else { return false };
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
        let mut stopped = Stopped::Held;
        let mut outcome = Outcome::Continue;
        while c.takes_frames() && !c.ctl.close {
            let step = c.decoder.next(&input[pos..]);
            let (session, mut conn) = c.parts(&self.shared.stats.workers[self.index].queued, self.draining);
            let Some(session) = session else { break };
            match step {
                Step::Incomplete => {
                    stopped = Stopped::NeedsInput;
                    break;
                }
                Step::Skip(used) => pos += used,
                Step::Frame(frame, used) => {
                    pos += used;
                    completed = true;
                    bump(&counters.frames);
                    outcome = Outcome::of(guarded!(stats, handler.frame(session, frame, &mut conn)));
                }
                Step::Error(err, used) => {
                    pos += used;
                    bump(&counters.frame_errors);
                    outcome = match guarded!(stats, handler.frame_error(session, err, &mut conn)) {
                        Some(Flow::Continue) if !err.is_fatal() => Outcome::Continue,
                        Some(_) => Outcome::Close(CloseReason::BadFrame(err)),
                        None => Outcome::Abort(CloseReason::HandlerPanic),
                    };
                }
            }
            if !matches!(outcome, Outcome::Continue) {
                break;
            }
            c.update_backpressure(high_water);
        }
        if from_tail {
            owned.drain(..pos);
            c.tail = owned;
        } else if pos < input.len() {
            c.tail = input[pos..].to_vec();
        }
        c.track_partial(stopped, completed, self.now);
        self.settle(key, outcome)
    }

    /// Writes what is queued; resumes reading below the low-water mark;
    /// moves a closing connection on once its queue is empty.
    fn flush(&mut self, key: ConnKey) {
        let Some(c) = self.conns.get_mut(key) else { return };
        if !c.out.is_empty() || c.sock.wants_write() {
            match c.out.write_to(
                &mut c.sock,
                &c.shared,
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
        if c.writing == Writing::Open && c.half_close_due() {
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
            c.writing = Writing::Lingering { until: clock::after(self.now, self.shared.config.linger) };
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
        let reason = c.reason.take().unwrap_or(CloseReason::PeerClosed);
        self.finish(key, reason);
    }

    /// Starts a graceful close: no more frames, flush, shut down the write
    /// side, linger.
    fn begin_close(&mut self, key: ConnKey, reason: CloseReason) {
        if self.conns.get_mut(key).is_some_and(|c| c.begin_close(reason)) {
            self.flush(key);
        }
    }

    /// Closes now, dropping anything queued. The close is counted and the
    /// handler's `close` runs before the connection leaves `open` (the order
    /// documented on [`Stats`](crate::Stats)).
    fn finish(&mut self, key: ConnKey, reason: CloseReason) {
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
        let (peer, id) = (c.shared.peer, c.shared.id);
        if reason.is_notable() {
            log::info!("{peer}: connection {id} closed: {reason}");
        } else {
            log::debug!("{peer}: connection {id} closed: {reason}");
        }
        if let Some(session) = c.session.take() {
            let handler = &self.handler;
            if guarded!(stats, handler.close(session, &reason)).is_none() {
                log::error!("{peer}: connection {id}: the handler panicked in close");
            }
        }
        self.load.fetch_sub(1, Ordering::AcqRel);
        stats.open.fetch_sub(1, Ordering::AcqRel);
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
                Due::EndLinger => {
                    let reason = self.conns.get_mut(key).and_then(|c| c.reason.take());
                    self.finish(key, reason.unwrap_or(CloseReason::PeerClosed));
                }
                Due::Drain => self.begin_close(key, CloseReason::Drained),
                Due::Close(reason) => self.begin_close(key, reason),
                Due::CloseNow(reason) => self.finish(key, reason),
            }
        }
    }
}
