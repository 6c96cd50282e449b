//! One event-loop thread: opens its share of the connections at the ramp
//! rate, then sends (closed or open loop) and reads, all on one `mio::Poll`.
//! What a connection sends and how its replies are checked is the
//! [`Protocol`]'s business; sockets, buffers, phases and timing are here.

use std::io::{self, Read, Write};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;

use super::stream::LoadStream;
use mio::{Events, Interest, Poll, Token};
use switchboard::Stream;

use super::config::Config;
use super::shared::{Shared, RUN, STOP};
use super::timer::Timer;

/// The token of the waker the coordinating thread uses.
pub(crate) const WAKE: Token = Token(usize::MAX);
/// The token of the precise timer.
const TIMER: Token = Token(usize::MAX - 1);
/// Sleeps shorter than this use the timerfd (epoll only sleeps whole milliseconds).
const PRECISE_BELOW_NS: u64 = 5_000_000;

/// Reads per readable event before other connections get a turn.
const READS_PER_TURN: usize = 16;
/// The read buffer of a thread, shared by its connections.
const SCRATCH: usize = 256 * 1024;
/// Unsent bytes a connection may queue before the open loop skips messages.
const MAX_QUEUED: usize = 4 << 20;
/// Scheduled sends handled per loop turn in the open loop.
const SENDS_PER_TURN: usize = 4096;

/// What one connection speaks.
pub(crate) trait Protocol: Send {
    /// Per-connection state.
    type Conn: Send;
    /// What the thread hands back at the end.
    type Output: Send;

    /// A connection `global` (0-based over all threads) has been opened.
    fn open(&mut self, global: usize) -> Self::Conn;
    /// Whether it may start (chat: once welcomed).
    fn is_ready(&self, _c: &Self::Conn) -> bool {
        true
    }
    /// Bytes arrived. An error closes the connection and is counted.
    fn on_data(&mut self, c: &mut Self::Conn, data: &[u8], cx: &mut Cx<'_>) -> Result<(), String>;
    /// Closed loop: whether one more message may go now.
    fn may_send(&self, c: &Self::Conn, depth: usize) -> bool;
    /// Open loop: whether one more message can be tracked (else it is skipped).
    fn may_send_open(&self, c: &Self::Conn) -> bool;
    /// Appends one message, scheduled at `intended_ns`, to `out`.
    fn send(&mut self, c: &mut Self::Conn, intended_ns: u64, out: &mut Vec<u8>);
    /// Messages sent on it whose reply has not come (lost if it closes now).
    fn in_flight(&self, c: &Self::Conn) -> usize;
    /// Whether nothing is in flight any more (default: this thread's count).
    fn all_done(&self, tally: &Tally) -> bool {
        tally.in_flight() == 0
    }
    /// Whether a message received on one connection may let another one
    /// send (chat), so every ready connection is pumped after each turn.
    fn pump_all(&self) -> bool {
        false
    }
    /// The loop has handled one turn's events, before it pumps and checks
    /// [`all_done`](Protocol::all_done): what was batched over the turn is
    /// published (chat: the deliveries seen).
    fn turn_done(&mut self) {}
    /// The connection is closed (at the end, or on an error).
    fn close(&mut self, c: Self::Conn);
    /// The thread is finished.
    fn finish(self) -> Self::Output;
}

/// Counters of one thread.
#[derive(Debug, Default, Clone)]
pub(crate) struct Tally {
    pub(crate) connected: u64,
    pub(crate) connect_failures: u64,
    pub(crate) sent: u64,
    /// Completed messages (echo: replies; chat: deliveries; file: downloads).
    pub(crate) received: u64,
    /// Completed before the stop time: what the throughput counts.
    pub(crate) in_window: u64,
    pub(crate) bytes: u64,
    pub(crate) bytes_in_window: u64,
    pub(crate) last_completion_ns: u64,
    pub(crate) errors: Errors,
    /// Something came back from the server: a byte, or a close.
    pub(crate) heard: bool,
}

/// Errors, by kind; none is ever dropped from the report.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Errors {
    /// Replies that differ from what was expected (echo bytes, file md5).
    pub(crate) mismatches: u64,
    /// Replies that break the protocol, or error replies from the server.
    pub(crate) protocol: u64,
    /// Connections the server closed, or that failed, during the run.
    pub(crate) disconnects: u64,
    /// Messages sent whose reply never came.
    pub(crate) lost: u64,
    /// Open loop: scheduled messages not sent (connection gone or too far behind).
    pub(crate) skipped: u64,
}

impl Errors {
    pub(crate) fn total(&self) -> u64 {
        self.mismatches + self.protocol + self.disconnects + self.lost + self.skipped
    }

    pub(crate) fn add(&mut self, o: &Errors) {
        self.mismatches += o.mismatches;
        self.protocol += o.protocol;
        self.disconnects += o.disconnects;
        self.lost += o.lost;
        self.skipped += o.skipped;
    }
}

impl Tally {
    /// Echo and file: messages sent and neither answered nor lost.
    pub(crate) fn in_flight(&self) -> u64 {
        self.sent.saturating_sub(self.received + self.errors.lost)
    }
}

/// What a protocol callback may record.
#[derive(Debug)]
pub(crate) struct Cx<'a> {
    pub(crate) now_ns: u64,
    pub(crate) stop_ns: u64,
    pub(crate) hist: &'a mut Histogram<u64>,
    pub(crate) tally: &'a mut Tally,
    /// This thread's figures of the current interval, locked for the
    /// callback (once per read, not per message).
    pub(crate) interval: &'a mut super::intervals::IntervalAcc,
}

impl Cx<'_> {
    /// One message completed; its latency counts from `since_ns`.
    pub(crate) fn complete(&mut self, since_ns: u64) {
        let latency = self.now_ns.saturating_sub(since_ns).max(1);
        self.hist.saturating_record(latency);
        self.interval.complete(latency);
        self.tally.received += 1;
        if self.now_ns <= self.stop_ns {
            self.tally.in_window += 1;
        }
        self.tally.last_completion_ns = self.tally.last_completion_ns.max(self.now_ns);
    }

    /// Payload bytes received (file mode).
    pub(crate) fn bytes(&mut self, n: usize) {
        self.tally.bytes += n as u64;
        self.interval.bytes += n as u64;
        if self.now_ns <= self.stop_ns {
            self.tally.bytes_in_window += n as u64;
        }
    }
}

/// What a thread hands back.
#[derive(Debug)]
pub(crate) struct WorkerResult<O> {
    pub(crate) tally: Tally,
    pub(crate) hist: Histogram<u64>,
    pub(crate) output: O,
}

/// A new latency histogram: 1 ns to 1 hour, 3 significant figures.
pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("constant histogram bounds are valid")
}

enum State {
    Connecting,
    Open,
    Closed,
}

struct Slot<C> {
    stream: Option<LoadStream>,
    state: State,
    ready: bool,
    /// Connected and ready (chat: welcomed) by then, or failed.
    deadline_ns: u64,
    out: Vec<u8>,
    out_pos: usize,
    conn: Option<C>,
}

struct Worker<P: Protocol> {
    index: usize,
    cfg: Arc<Config>,
    shared: Arc<Shared>,
    poll: Poll,
    proto: P,
    slots: Vec<Slot<P::Conn>>,
    globals: Vec<usize>,
    tally: Tally,
    hist: Histogram<u64>,
    scratch: Vec<u8>,
    /// Connections with unread data left after their turn.
    again: Vec<usize>,
    /// Connections neither ready nor failed yet.
    unresolved: usize,
    stop_ns: u64,
    depth: usize,
    /// Connections not closed.
    live: usize,
}

/// Runs one thread's share of the connections (`globals`: their global
/// indices) until the run is over.
pub(crate) fn run<P: Protocol>(
    index: usize,
    globals: Vec<usize>,
    proto: P,
    cfg: Arc<Config>,
    shared: Arc<Shared>,
    poll: Poll,
) -> WorkerResult<P::Output> {
    let depth = cfg.mode.depth();
    let mut w = Worker {
        index,
        cfg,
        shared,
        poll,
        proto,
        slots: Vec::with_capacity(globals.len()),
        unresolved: globals.len(),
        globals,
        tally: Tally::default(),
        hist: new_histogram(),
        scratch: vec![0; SCRATCH],
        again: Vec::new(),
        stop_ns: u64::MAX,
        depth,
        live: 0,
    };
    w.run();
    w.shared.progress[w.index].done.store(true, Ordering::Release);
    let Worker { proto, tally, hist, .. } = w;
    WorkerResult { tally, hist, output: proto.finish() }
}

impl<P: Protocol> Worker<P> {
    fn run(&mut self) {
        let mut events = Events::with_capacity(1024);
        let threads = self.cfg.threads as f64;
        let connect_interval_ns = 1e9 * threads / self.cfg.connect_rate;
        let start_ns = self.shared.now_ns();
        let mut reported_ready = false;
        let mut started = false;
        let mut run_start_ns = 0;
        let mut drain_start_ns = u64::MAX;
        let open_loop = self.cfg.rate.map(|r| 1e9 * threads / r);
        let mut sched_i: u64 = 0;
        let mut ready_list: Vec<usize> = Vec::new();
        let mut budget_spent = false;
        let mut last_timeout_scan = 0;
        let timer = match Timer::new(self.poll.registry(), TIMER) {
            Ok(t) => Some(t),
            Err(e) => {
                log::debug!("no timerfd, timing to the millisecond: {e}");
                None
            }
        };
        loop {
            let now = self.shared.now_ns();
            let phase = self.shared.phase.load(Ordering::Acquire);
            let mut timeout: Option<u64> = None; // ns from now

            // Ramp: open the connections that are due.
            if self.slots.len() < self.globals.len() {
                while self.slots.len() < self.globals.len() {
                    let due = start_ns + (self.slots.len() as f64 * connect_interval_ns) as u64;
                    if due > now {
                        timeout = min_opt(timeout, due - now);
                        break;
                    }
                    self.connect(now);
                }
            }
            if self.unresolved > 0 {
                if now >= last_timeout_scan + 50_000_000 {
                    last_timeout_scan = now;
                    self.expire_connects(now);
                }
                timeout = min_opt(timeout, 50_000_000);
            }
            if !reported_ready && self.unresolved == 0 && self.slots.len() == self.globals.len() {
                reported_ready = true;
                let ready = self.slots.iter().filter(|s| s.ready).count();
                self.shared.ready_total.fetch_add(ready, Ordering::AcqRel);
                self.shared.workers_ready.fetch_add(1, Ordering::AcqRel);
            }

            if phase >= RUN && !started {
                started = true;
                run_start_ns = self.shared.run_start_ns.load(Ordering::Acquire);
                ready_list = (0..self.slots.len()).filter(|&i| self.slots[i].ready).collect();
                if open_loop.is_none() {
                    for &i in &ready_list {
                        self.pump(i, now);
                    }
                }
            }
            if phase == STOP && self.stop_ns == u64::MAX {
                self.stop_ns = self.shared.stop_ns.load(Ordering::Acquire);
            }
            let sending = started && self.stop_ns == u64::MAX && !budget_spent;
            if sending {
                if let Some(interval) = open_loop {
                    if ready_list.is_empty() {
                        budget_spent = true;
                    }
                    let mut n = 0;
                    while !ready_list.is_empty() && n < SENDS_PER_TURN {
                        let due = run_start_ns + (sched_i as f64 * interval) as u64;
                        if due > now {
                            timeout = min_opt(timeout, due - now);
                            break;
                        }
                        let i = ready_list[(sched_i % ready_list.len() as u64) as usize];
                        sched_i += 1;
                        n += 1;
                        if !self.send_scheduled(i, due) {
                            budget_spent = true;
                            break;
                        }
                    }
                    if n == SENDS_PER_TURN {
                        timeout = Some(0);
                    }
                } else if self.proto.pump_all() {
                    for &i in &ready_list {
                        self.pump(i, now);
                    }
                    if self.cfg.threads > 1 {
                        // Deliveries seen by other threads free our senders.
                        timeout = min_opt(timeout, 1_000_000);
                    }
                }
                if self.shared.budget_spent() {
                    budget_spent = true;
                }
            }
            if started && (self.stop_ns != u64::MAX || budget_spent) {
                // Draining: wait for what is in flight, for at most the
                // drain timeout (a server that trickles does not stretch
                // it), or less after a signal.
                let drain = duration_ns(self.cfg.drain_timeout);
                if drain_start_ns == u64::MAX {
                    drain_start_ns = now;
                }
                if self.proto.all_done(&self.tally) {
                    break;
                }
                let cut = self.shared.cut_ns.load(Ordering::Acquire);
                let deadline = drain_start_ns.saturating_add(drain).min(cut);
                if now >= deadline {
                    break;
                }
                timeout = min_opt(timeout, deadline - now);
                if self.proto.pump_all() && self.cfg.threads > 1 {
                    timeout = min_opt(timeout, 1_000_000);
                }
            }
            if started && self.live == 0 {
                break; // every connection is gone
            }
            if !self.again.is_empty() {
                timeout = Some(0);
            }
            self.publish();

            let t = match (timeout, &timer) {
                (Some(ns), Some(timer)) if ns > 0 && ns < PRECISE_BELOW_NS && timer.arm(ns).is_ok() => {
                    Some(Duration::from_millis(10)) // the timer wakes us first
                }
                (t, _) => t.map(Duration::from_nanos),
            };
            if let Err(e) = self.poll.poll(&mut events, t) {
                if e.kind() != io::ErrorKind::Interrupted {
                    log::error!("poll failed: {e}");
                    break;
                }
            }
            let again = std::mem::take(&mut self.again);
            for i in again {
                self.readable(i);
            }
            for ev in events.iter() {
                if ev.token() == WAKE {
                    continue;
                }
                if ev.token() == TIMER {
                    if let Some(t) = &timer {
                        t.clear();
                    }
                    continue;
                }
                let i = ev.token().0;
                if i >= self.slots.len() {
                    continue;
                }
                if matches!(self.slots[i].state, State::Connecting) {
                    self.connect_event(i);
                    continue;
                }
                if ev.is_writable() || ev.is_write_closed() {
                    self.flush(i);
                }
                if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                    self.readable(i);
                }
            }
            self.proto.turn_done();
        }
        // The end: close everything, counting what is still in flight as lost.
        self.proto.turn_done();
        for i in 0..self.slots.len() {
            self.close(i, None);
        }
        self.publish();
    }

    fn publish(&self) {
        let p = &self.shared.progress[self.index];
        let t = &self.tally;
        p.connected.store(t.connected, Ordering::Relaxed);
        p.failed.store(t.connect_failures, Ordering::Relaxed);
        p.sent.store(t.sent, Ordering::Relaxed);
        p.received.store(t.received, Ordering::Relaxed);
        p.errors.store(t.errors.total(), Ordering::Relaxed);
        p.bytes.store(t.bytes, Ordering::Relaxed);
    }

    fn connect(&mut self, now: u64) {
        let i = self.slots.len();
        let global = self.globals[i];
        let deadline_ns = now.saturating_add(duration_ns(self.cfg.connect_timeout));
        let mut slot = Slot {
            stream: None,
            state: State::Closed,
            ready: false,
            deadline_ns,
            out: Vec::new(),
            out_pos: 0,
            conn: Some(self.proto.open(global)),
        };
        match Stream::connect(self.cfg.target_of(global)) {
            Ok(mut s) => {
                match self.poll.registry().register(&mut s, Token(i), Interest::READABLE | Interest::WRITABLE)
                {
                    Ok(()) => match LoadStream::new(s, self.cfg.tls.as_ref()) {
                        Ok(s) => {
                            slot.stream = Some(s);
                            slot.state = State::Connecting;
                            self.live += 1;
                        }
                        Err(e) => log::debug!("TLS set-up failed: {e}"),
                    },
                    Err(e) => log::debug!("register failed: {e}"),
                }
            }
            Err(e) => log::debug!("connect failed: {e}"),
        }
        let failed = slot.stream.is_none();
        self.slots.push(slot);
        if failed {
            self.fail(i);
        }
    }

    /// A connecting socket reported: connected, or failed.
    fn connect_event(&mut self, i: usize) {
        let Some(s) = self.slots[i].stream.as_ref().map(LoadStream::sock) else { return };
        let ok = match s.take_error() {
            Ok(None) => match s.peer() {
                Ok(_) => true,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return, // not yet
                Err(_) => false,
            },
            _ => false,
        };
        if !ok {
            self.fail(i);
            return;
        }
        let _ = s.set_nodelay(true);
        if let Some(Err(e)) = self.slots[i].stream.as_mut().map(LoadStream::start) {
            log::debug!("TLS handshake failed to start: {e}");
            self.fail(i);
            return;
        }
        self.slots[i].state = State::Open;
        self.tally.connected += 1;
        self.check_ready(i);
        // Data may already be waiting (a greeting): edge-triggered, so read now.
        self.readable(i);
        self.flush(i);
    }

    fn check_ready(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        let handshaking = slot.stream.as_ref().is_some_and(LoadStream::handshaking);
        if !slot.ready && matches!(slot.state, State::Open) && !handshaking {
            if let Some(c) = slot.conn.as_ref() {
                if self.proto.is_ready(c) {
                    slot.ready = true;
                    self.unresolved -= 1;
                }
            }
        }
    }

    /// A connection ended by the server or an error: before it was ready
    /// (a failed TLS handshake, a refused member) it failed to connect, and
    /// the first such reason is shown.
    fn lost(&mut self, i: usize, error: &str) {
        let slot = &self.slots[i];
        if slot.ready || matches!(slot.state, State::Closed) {
            return self.close(i, Some(error));
        }
        if !self.shared.warned_unready.swap(true, Ordering::Relaxed) {
            log::warn!("a connection failed before it was ready: {error}");
        }
        if matches!(slot.state, State::Open) {
            self.tally.connected -= 1;
        }
        self.fail(i);
    }

    /// A connection that never became ready.
    fn fail(&mut self, i: usize) {
        self.tally.connect_failures += 1;
        self.unresolved -= 1;
        self.close(i, None);
    }

    fn expire_connects(&mut self, now: u64) {
        for i in 0..self.slots.len() {
            let s = &self.slots[i];
            if s.ready || matches!(s.state, State::Closed) || now < s.deadline_ns {
                continue;
            }
            if matches!(s.state, State::Open) {
                self.tally.connected -= 1; // connected but never welcomed
            }
            self.fail(i);
        }
    }

    /// Closes a connection; `error` counts it as a disconnect.
    fn close(&mut self, i: usize, error: Option<&str>) {
        let slot = &mut self.slots[i];
        if matches!(slot.state, State::Closed) && slot.conn.is_none() {
            return;
        }
        if let Some(mut s) = slot.stream.take() {
            let _ = self.poll.registry().deregister(s.sock_mut());
        }
        if !matches!(slot.state, State::Closed) {
            self.live -= 1;
        }
        slot.state = State::Closed;
        slot.out = Vec::new();
        slot.out_pos = 0;
        if let Some(c) = slot.conn.take() {
            self.tally.errors.lost += self.proto.in_flight(&c) as u64;
            self.proto.close(c);
        }
        if let Some(e) = error {
            log::debug!("connection {} closed: {e}", self.globals[i]);
            self.tally.errors.disconnects += 1;
        }
    }

    fn now_cx_parts(&self) -> (u64, u64) {
        (self.shared.now_ns(), self.stop_ns)
    }

    fn readable(&mut self, i: usize) {
        for _ in 0..READS_PER_TURN {
            let slot = &mut self.slots[i];
            if !matches!(slot.state, State::Open) {
                return;
            }
            let Some(s) = slot.stream.as_mut() else { return };
            match s.read(&mut self.scratch) {
                Ok(0) => {
                    self.tally.heard = true;
                    let msg = "closed by the server";
                    self.lost(i, msg);
                    return;
                }
                Ok(n) => {
                    let (now_ns, stop_ns) = self.now_cx_parts();
                    self.tally.heard = true;
                    let result = {
                        let mut interval = super::intervals::lock(&self.shared.intervals[self.index]);
                        let mut cx = Cx {
                            now_ns,
                            stop_ns,
                            hist: &mut self.hist,
                            tally: &mut self.tally,
                            interval: &mut interval,
                        };
                        let Some(c) = self.slots[i].conn.as_mut() else { return };
                        self.proto.on_data(c, &self.scratch[..n], &mut cx)
                    };
                    if let Err(e) = result {
                        log::debug!("connection {}: {e}", self.globals[i]);
                        self.tally.errors.protocol += 1;
                        self.close(i, None);
                        return;
                    }
                    if !self.slots[i].ready {
                        self.check_ready(i);
                    } else {
                        self.pump(i, now_ns);
                    }
                    if n < self.scratch.len() {
                        return; // most likely drained; edge-triggered poll tells us if not
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // A TLS handshake may have completed meanwhile.
                    if !self.slots[i].ready {
                        self.check_ready(i);
                    }
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.lost(i, &e.to_string());
                    return;
                }
            }
        }
        self.again.push(i);
    }

    /// Closed loop: sends while the window allows.
    fn pump(&mut self, i: usize, now_ns: u64) {
        if self.cfg.rate.is_some() || self.stop_ns != u64::MAX {
            return;
        }
        if self.shared.phase.load(Ordering::Relaxed) != RUN {
            return;
        }
        let slot = &mut self.slots[i];
        if !slot.ready || !matches!(slot.state, State::Open) {
            return;
        }
        let Some(c) = slot.conn.as_mut() else { return };
        let mut sent = false;
        while self.proto.may_send(c, self.depth) && self.shared.take_budget() {
            self.proto.send(c, now_ns, &mut slot.out);
            self.tally.sent += 1;
            sent = true;
        }
        if sent {
            self.flush(i);
        }
    }

    /// Open loop: sends one scheduled message. False once the budget is spent.
    fn send_scheduled(&mut self, i: usize, due_ns: u64) -> bool {
        let slot = &mut self.slots[i];
        let queued = slot.out.len() - slot.out_pos;
        let usable = matches!(slot.state, State::Open) && queued < MAX_QUEUED;
        let Some(c) = slot.conn.as_mut().filter(|c| usable && self.proto.may_send_open(c)) else {
            if !self.shared.take_budget() {
                return false;
            }
            self.tally.errors.skipped += 1;
            return true;
        };
        if !self.shared.take_budget() {
            return false;
        }
        self.proto.send(c, due_ns, &mut slot.out);
        self.tally.sent += 1;
        self.flush(i);
        true
    }

    fn flush(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        if !matches!(slot.state, State::Open) {
            return;
        }
        let Some(s) = slot.stream.as_mut() else { return };
        // TLS records left from the last write go first.
        match s.flush() {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) => {
                self.close(i, Some(&e.to_string()));
                return;
            }
        }
        while slot.out_pos < slot.out.len() {
            match s.write(&slot.out[slot.out_pos..]) {
                Ok(0) => {
                    self.close(i, Some("write returned 0"));
                    return;
                }
                Ok(n) => slot.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.close(i, Some(&e.to_string()));
                    return;
                }
            }
        }
        if slot.out_pos == slot.out.len() {
            slot.out.clear();
            slot.out_pos = 0;
            if slot.out.capacity() > 1 << 20 {
                slot.out.shrink_to(64 << 10);
            }
        } else if slot.out_pos > 1 << 20 {
            slot.out.drain(..slot.out_pos);
            slot.out_pos = 0;
        }
    }
}

fn min_opt(a: Option<u64>, b: u64) -> Option<u64> {
    Some(a.map_or(b, |a| a.min(b)))
}

pub(crate) fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
