//! A worker thread: one `mio::Poll` over many connections. The worker only
//! routes: socket events, mail and wake-ups go to the connection they are
//! for, whose transitions (reading, serving frames, calling the handler,
//! writing, lingering) are its own and say what to do next; the worker
//! applies that in one place ([`Worker::after`]), the only code that touches
//! the connection table, the wake-ups and the registration.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use mio::{Events, Poll, Token, Waker};
use slotmap::{Key, KeyData, SlotMap};

use crate::admission::Load;
use crate::clock;
use crate::close::CloseReason;
use crate::config::Shared;
use crate::conn::SendRules;
use crate::connection::{Connection, Cx, Due, End, LinkRead, Next, Wake};
use crate::cpu::IdleCpu;
use crate::handler::Handler;
use crate::handshakes::Pool;
use crate::mailbox::{ConnKey, Mail, Mailbox, Pending, WorkerLink};
use crate::shutdown::Phase as Lifecycle;
use crate::stats::WorkerCounters;

/// What a connection's transitions borrow from worker `$w` (its fields,
/// so the connection table can be borrowed beside it).
macro_rules! cx {
    ($w:ident) => {
        Cx {
            handler: &*$w.handler,
            stats: &$w.shared.stats,
            counters: &$w.shared.stats.workers[$w.index],
            high_water: $w.shared.config.high_water,
            linger: $w.shared.config.linger,
            draining: $w.draining,
            now: $w.now,
        }
    };
}

mod balance;
mod end;
mod link;
mod mail;
mod migrate;
mod preamble;

use balance::Busy;
use migrate::Arriving;

const WAKER: Token = Token(usize::MAX);

/// What a worker did during shutdown.
#[derive(Debug, Default)]
pub(crate) struct WorkerReport {
    pub(crate) drained: usize,
    pub(crate) forced: usize,
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
    load: Arc<Load>,
    busy: Arc<AtomicU32>,
    conns: SlotMap<ConnKey, Connection<H::Session>>,
    scratch: Vec<u8>,
    /// Reused to take connections' inboxes.
    inbox: Vec<Pending>,
    /// Connections to read again without waiting for an event.
    ready: Vec<ConnKey>,
    /// Connections with new output to write (to their peer or link).
    dirty: Vec<ConnKey>,
    /// Connections whose link should be read again without an event.
    link_ready: Vec<ConnKey>,
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

impl<H: Handler> Worker<H> {
    pub(crate) fn new(index: usize, handler: Arc<H>, shared: Arc<Shared>) -> io::Result<(Self, WorkerLink)> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = crossbeam_channel::unbounded();
        let mailbox = Arc::new(Mailbox { tx, waker, pending: AtomicBool::new(false) });
        let load = Load::new(&shared.stats);
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
            max_deferred: handler.max_deferred().unwrap_or(shared.config.max_deferred).clamp(1, 1024),
            blocking: Arc::clone(&shared.blocking),
            stats: Arc::clone(&shared.stats),
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
            link_ready: Vec::new(),
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
                if let Some(owner) = link::owner_of(event.token()) {
                    self.on_link(key(owner), link::read_of(event));
                    continue;
                }
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
            self.read_links();
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

    /// Applies what a connection's transition said to do next, and what
    /// that says in turn (the preamble's steps, opening the session): the
    /// one place that removes a connection, schedules its wake-ups and
    /// queues it for reading or writing. What it calls returns a [`Next`]
    /// and never comes back here.
    fn after(&mut self, key: ConnKey, mut next: Next) {
        loop {
            next = match next {
                Next::End(end) => return self.end(key, end),
                Next::Read => {
                    self.ready.push(key);
                    break;
                }
                Next::Wait => break,
                Next::Preamble => match self.conns.get_mut(key) {
                    Some(c) => c.advance(&self.shared.stats.workers[self.index]),
                    None => return,
                },
                Next::Handshake(stream) => self.offload(key, stream),
                // Then read: bytes may have come with the end of the preamble.
                Next::Open => match self.start_session(key) {
                    Next::Wait => Next::Read,
                    next => next,
                },
            };
        }
        let Some(c) = self.conns.get_mut(key) else { return };
        let wakeups = &mut self.wakeups;
        c.schedule(|at, wake| wakeups.push(Reverse((at, key, wake))));
        if c.wants_flush() {
            self.dirty.push(key);
        }
        if c.link.is_some() {
            self.after_link(key);
        }
    }

    /// Wake-ups that are due: pauses that are over, timers.
    fn fire_wakeups(&mut self) {
        while let Some(&Reverse((at, key, wake))) = self.wakeups.peek() {
            if at > self.now {
                break;
            }
            self.wakeups.pop();
            let Some(c) = self.conns.get_mut(key) else { continue };
            let next = c.wake(&cx!(self), at, wake);
            self.after(key, next);
        }
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
            let Some(c) = self.conns.get_mut(key) else { continue };
            let next = c.drain(&cx!(self));
            self.after(key, next);
        }
    }

    /// The socket is readable, or frames that waited may go on.
    fn on_readable(&mut self, key: ConnKey, to_eof: bool) {
        let Some(c) = self.conns.get_mut(key) else { return };
        let next = c.readable(&cx!(self), &mut self.scratch, to_eof);
        self.after(key, next);
    }

    /// The socket is writable, or there is output (to the peer or the
    /// link).
    fn flush(&mut self, key: ConnKey) {
        let Some(c) = self.conns.get_mut(key) else { return };
        let next = c.flush(&cx!(self), &mut self.scratch);
        self.after(key, next);
        let Some(c) = self.conns.get_mut(key).filter(|c| c.link.is_some()) else { return };
        let next = c.link_step(&cx!(self), &mut self.scratch, false, LinkRead::No);
        self.after(key, next);
    }

    /// Timeouts, and the quiet check of a drain.
    fn sweep(&mut self, now: Instant) {
        self.log_refused();
        let t = self.shared.config.timeouts();
        let due: Vec<(ConnKey, Due)> =
            self.conns.iter().filter_map(|(key, c)| c.due(now, t, self.draining).map(|d| (key, d))).collect();
        for (key, due) in due {
            let Some(c) = self.conns.get_mut(key) else { continue };
            let next = match due {
                Due::EndLinger => Next::End(End::Lingered),
                Due::CloseNow(reason) => Next::End(End::Now(reason)),
                Due::Close(reason) => c.close(reason),
                Due::Drain => c.close(CloseReason::Drained),
                Due::PartialLine => match c.serve_last(&cx!(self)) {
                    Ok(()) => Next::Wait,
                    Err(next) => next,
                },
            };
            self.after(key, next);
        }
    }
}
