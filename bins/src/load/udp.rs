//! `switchboard-load udp-echo`: datagrams against a UDP echo server, with
//! loss, reordering and duplicates counted.
//!
//! `peers` UDP sockets (each its own source port, so the server sees that
//! many peers) on one `mio` event loop. Each datagram carries the peer's
//! sequence number and its send time (16 bytes, then padding to `size`).
//! Closed loop: each peer keeps `depth` datagrams in flight; one not
//! answered within `loss_timeout` stops counting as in flight (a lost
//! datagram must not stall the loop), and counts as lost unless it comes
//! back later. Open loop: `rate` datagrams a second in all, on a fixed
//! schedule across the peers, latency counted from the scheduled time.
//! At the end (or at the first signal), sending stops and replies are
//! awaited until `drain_timeout` passes with nothing arriving; lost = sent −
//! received. With `interval`, a figure per interval of the sending window
//! goes to a callback as it closes.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use serde_json::{json, Value};

use super::intervals::{self, IntervalAcc};
use super::{Interval, LoadError, Stop};

/// The header of every datagram: sequence number and send time.
const HEADER: usize = 16;

/// A UDP echo run.
#[derive(Debug, Clone)]
pub struct UdpConfig {
    /// The echo server.
    pub target: SocketAddr,
    /// Sockets (peers) to send from.
    pub peers: usize,
    /// Bytes per datagram, 16 to 65,507.
    pub size: usize,
    /// Datagrams in flight per peer (closed loop).
    pub depth: usize,
    /// Open loop: datagrams a second in all.
    pub rate: Option<f64>,
    /// When to stop sending.
    pub stop: Stop,
    /// After sending stops, how long to wait with nothing arriving.
    pub drain_timeout: Duration,
    /// Closed loop: a datagram not answered in this long is no longer in flight.
    pub loss_timeout: Duration,
    /// Once set (by a signal handler, say), sending stops early and the
    /// report covers what ran ([`UdpReport::interrupted`]).
    pub interrupt: Option<Arc<AtomicBool>>,
    /// The period of the per-interval figures (`--interval`), if wanted.
    pub interval: Option<Duration>,
}

impl UdpConfig {
    /// Whether the run can be made.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=10_000).contains(&self.peers) {
            return Err(format!("udp-echo: peers (-c) must be 1 to 10000, not {}", self.peers));
        }
        if !(HEADER..=65_507).contains(&self.size) {
            return Err(format!("udp-echo: --size must be {HEADER} to 65507 bytes, not {}", self.size));
        }
        if !(1..=1024).contains(&self.depth) {
            return Err(format!("udp-echo: --depth must be 1 to 1024, not {}", self.depth));
        }
        if self.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
            return Err("udp-echo: --rate must be more than 0".into());
        }
        if self.interval.is_some_and(|i| i < Duration::from_millis(10)) {
            return Err("udp-echo: --interval must be at least 10ms".into());
        }
        Ok(())
    }
}

/// What a UDP echo run measured.
#[derive(Debug, Clone)]
pub struct UdpReport {
    /// Datagrams sent.
    pub sent: u64,
    /// Distinct datagrams echoed back.
    pub received: u64,
    /// Sent and never echoed: `sent − received`.
    pub lost: u64,
    /// Echoes that came after one with a higher sequence number (same peer).
    pub reordered: u64,
    /// Echoes of a datagram already echoed, or never sent, or whose bytes differ.
    pub bad: u64,
    /// The measured window (sending), in seconds.
    pub seconds: f64,
    /// Latency percentiles in microseconds: p50, p99, p99.9, max.
    pub latency_us: [u64; 4],
    /// Sending stopped early, at a signal: the figures cover what ran.
    pub interrupted: bool,
}

impl UdpReport {
    /// Echoes a second over the sending window.
    pub fn per_sec(&self) -> f64 {
        self.received as f64 / self.seconds.max(1e-9)
    }

    /// Lost as a share of sent, in per cent.
    pub fn loss_pct(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            100.0 * self.lost as f64 / self.sent as f64
        }
    }

    /// The report as a table.
    pub fn table(&self) -> String {
        let [p50, p99, p999, max] = self.latency_us;
        let mut s = String::new();
        if self.interrupted {
            s.push_str("[interrupted: what ran until the signal]\n");
        }
        s + &format!(
            "udp-echo: {:.0} datagrams/s over {:.2}s\n\
             sent {}  received {}  lost {} ({:.3}%)  reordered {}  bad {}\n\
             latency us: p50 {p50}  p99 {p99}  p99.9 {p999}  max {max}\n",
            self.per_sec(),
            self.seconds,
            self.sent,
            self.received,
            self.lost,
            self.loss_pct(),
            self.reordered,
            self.bad
        )
    }

    /// The report as one JSON object.
    pub fn to_json(&self) -> Value {
        let [p50, p99, p999, max] = self.latency_us;
        json!({
            "mode": "udp-echo",
            "per_sec": self.per_sec(),
            "seconds": self.seconds,
            "sent": self.sent,
            "received": self.received,
            "lost": self.lost,
            "loss_pct": self.loss_pct(),
            "reordered": self.reordered,
            "bad": self.bad,
            "latency_us": { "p50": p50, "p99": p99, "p999": p999, "max": max },
            "interrupted": self.interrupted,
        })
    }
}

/// One sending socket.
struct Peer {
    socket: UdpSocket,
    next_seq: u64,
    /// Sequence number → send (or scheduled) time, of those in flight.
    in_flight: HashMap<u64, Instant>,
    /// Sent, no longer in flight (given up in closed loop), maybe still coming.
    given_up: HashMap<u64, Instant>,
    highest: Option<u64>,
}

/// Runs the load and reports; `on_interval` gets each interval's figures
/// (`cfg.interval`) as it closes, the last one possibly shorter.
pub fn run(cfg: &UdpConfig, on_interval: &mut dyn FnMut(&Interval)) -> Result<UdpReport, LoadError> {
    cfg.validate().map_err(LoadError::Invalid)?;
    let mut poll = Poll::new().map_err(LoadError::Setup)?;
    let local: SocketAddr =
        if cfg.target.is_ipv4() { ([127, 0, 0, 1], 0).into() } else { ([0u16; 8], 0).into() };
    let mut peers = Vec::with_capacity(cfg.peers);
    for i in 0..cfg.peers {
        let mut socket = UdpSocket::bind(local).map_err(LoadError::Setup)?;
        // Room for a burst of echoes while this thread is busy sending (the
        // system may grant less); what overflows counts as lost.
        let _ = socket2::SockRef::from(&socket).set_recv_buffer_size(4 << 20);
        socket
            .connect(cfg.target)
            .map_err(|error| LoadError::Unreachable { addr: cfg.target.into(), error })?;
        poll.registry().register(&mut socket, Token(i), Interest::READABLE).map_err(LoadError::Setup)?;
        peers.push(Peer {
            socket,
            next_seq: 0,
            in_flight: HashMap::new(),
            given_up: HashMap::new(),
            highest: None,
        });
    }
    let mut hist =
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| LoadError::Invalid(e.to_string()))?;
    let mut report = UdpReport {
        sent: 0,
        received: 0,
        lost: 0,
        reordered: 0,
        bad: 0,
        seconds: 0.0,
        latency_us: [0; 4],
        interrupted: false,
    };
    // This thread's completions since the last interval boundary.
    let acc = [Mutex::new(IntervalAcc::new())];
    let epoch = Instant::now();
    let mut payload = vec![0u8; cfg.size];
    for (i, b) in payload.iter_mut().enumerate().skip(HEADER) {
        *b = (i % 251) as u8;
    }
    let mut buf = vec![0u8; 65_536];
    let mut events = Events::with_capacity(1024);
    let start = Instant::now();
    let interval = cfg.rate.map(|r| Duration::from_secs_f64(1.0 / r));
    let mut next_send = start;
    let mut turn = 0usize;
    let mut sending = true;
    let mut last_arrival = Instant::now();
    let mut ended_at = None;
    // The end of the interval being counted.
    let mut boundary = cfg.interval.map(|i| start + i);
    // The closed loop's first sends.
    if interval.is_none() {
        for peer in &mut peers {
            for _ in 0..cfg.depth {
                if !budget_left(cfg, &report) {
                    break;
                }
                send(peer, &mut payload, epoch, Instant::now(), &mut report);
            }
        }
    }
    loop {
        let now = Instant::now();
        if sending {
            let interrupted = cfg.interrupt.as_ref().is_some_and(|f| f.load(Ordering::Acquire));
            let done = interrupted
                || match cfg.stop {
                    Stop::Duration(d) => now.duration_since(start) >= d,
                    Stop::Messages(n) => report.sent >= n,
                };
            if let (Some(b), Some(period)) = (boundary.as_mut(), cfg.interval) {
                // Every boundary passed, then the shorter last interval.
                while *b <= now {
                    on_interval(&intervals::take(&acc, *b - period - start, period));
                    *b += period;
                }
                if done {
                    let from = *b - period;
                    if now > from {
                        on_interval(&intervals::take(&acc, from - start, now - from));
                    }
                }
            }
            if done {
                report.interrupted = interrupted;
                sending = false;
                ended_at = Some(now);
                last_arrival = now;
            }
        }
        if !sending {
            let left: usize = peers.iter().map(|p| p.in_flight.len() + p.given_up.len()).sum();
            if left == 0 || now.duration_since(last_arrival) >= cfg.drain_timeout {
                break;
            }
        }
        // Open loop: every send due by now, round robin over the peers.
        if let (true, Some(interval)) = (sending, interval) {
            while next_send <= now {
                let p = turn % peers.len();
                turn += 1;
                send(&mut peers[p], &mut payload, epoch, next_send, &mut report);
                next_send += interval;
                if let Stop::Messages(n) = cfg.stop {
                    if report.sent >= n {
                        break;
                    }
                }
            }
        }
        let mut timeout = match (sending, interval) {
            (true, Some(_)) => {
                next_send.saturating_duration_since(Instant::now()).min(Duration::from_millis(10))
            }
            _ => Duration::from_millis(10),
        };
        if let (true, Some(b)) = (sending, boundary) {
            timeout = timeout.min(b.saturating_duration_since(Instant::now()));
        }
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(LoadError::Setup(e));
            }
        }
        for ev in events.iter() {
            let p = ev.token().0;
            loop {
                match peers[p].socket.recv(&mut buf) {
                    Ok(n) => {
                        last_arrival = Instant::now();
                        if let Some(latency) =
                            receive(&mut peers[p], &buf[..n], &payload, &mut hist, &mut report)
                        {
                            if sending && boundary.is_some() {
                                intervals::lock(&acc[0]).complete(latency.as_nanos() as u64);
                            }
                        }
                        if sending && interval.is_none() {
                            while peers[p].in_flight.len() < cfg.depth && budget_left(cfg, &report) {
                                send(&mut peers[p], &mut payload, epoch, Instant::now(), &mut report);
                            }
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                        return Err(LoadError::Unreachable { addr: cfg.target.into(), error: e });
                    }
                    Err(e) => return Err(LoadError::Setup(e)),
                }
            }
        }
        // Closed loop: give up on datagrams not answered in time.
        if interval.is_none() {
            let now = Instant::now();
            for peer in &mut peers {
                let old: Vec<u64> = peer
                    .in_flight
                    .iter()
                    .filter(|(_, &t)| now.duration_since(t) >= cfg.loss_timeout)
                    .map(|(&s, _)| s)
                    .collect();
                for s in old {
                    if let Some(t) = peer.in_flight.remove(&s) {
                        peer.given_up.insert(s, t);
                    }
                }
                while sending && peer.in_flight.len() < cfg.depth && budget_left(cfg, &report) {
                    send(peer, &mut payload, epoch, now, &mut report);
                }
            }
        }
    }
    report.seconds = ended_at.unwrap_or_else(Instant::now).duration_since(start).as_secs_f64();
    report.lost = report.sent - report.received;
    report.latency_us = [
        hist.value_at_quantile(0.5),
        hist.value_at_quantile(0.99),
        hist.value_at_quantile(0.999),
        hist.max(),
    ];
    Ok(report)
}

/// Whether a message count still allows a send.
fn budget_left(cfg: &UdpConfig, report: &UdpReport) -> bool {
    match cfg.stop {
        Stop::Messages(n) => report.sent < n,
        Stop::Duration(_) => true,
    }
}

fn send(peer: &mut Peer, payload: &mut [u8], epoch: Instant, at: Instant, report: &mut UdpReport) {
    let seq = peer.next_seq;
    peer.next_seq += 1;
    payload[..8].copy_from_slice(&seq.to_le_bytes());
    let t = at.saturating_duration_since(epoch).as_nanos() as u64;
    payload[8..16].copy_from_slice(&t.to_le_bytes());
    report.sent += 1;
    peer.in_flight.insert(seq, at);
    // A full send buffer loses the datagram like the network would: it
    // counts as sent and, never echoed, as lost.
    let _ = peer.socket.send(payload);
}

/// Counts an echo; returns its latency when it is a good one.
fn receive(
    peer: &mut Peer,
    data: &[u8],
    payload: &[u8],
    hist: &mut Histogram<u64>,
    report: &mut UdpReport,
) -> Option<Duration> {
    if data.len() != payload.len() || data[HEADER..] != payload[HEADER..] {
        report.bad += 1;
        return None;
    }
    let seq = u64::from_le_bytes(data[..8].try_into().unwrap_or_default());
    let Some(at) = peer.in_flight.remove(&seq).or_else(|| peer.given_up.remove(&seq)) else {
        report.bad += 1;
        return None;
    };
    report.received += 1;
    if peer.highest.is_some_and(|h| seq < h) {
        report.reordered += 1;
    }
    peer.highest = Some(peer.highest.map_or(seq, |h| h.max(seq)));
    let latency = at.elapsed();
    let us = latency.as_micros().max(1) as u64;
    let _ = hist.record(us.min(60_000_000));
    Some(latency)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_settings_are_refused() {
        let ok = UdpConfig {
            target: "127.0.0.1:9".parse().unwrap(),
            peers: 1,
            size: 64,
            depth: 1,
            rate: None,
            stop: Stop::Messages(1),
            drain_timeout: Duration::from_secs(1),
            loss_timeout: Duration::from_millis(200),
            interrupt: None,
            interval: None,
        };
        assert!(ok.validate().is_ok());
        assert!(UdpConfig { size: 15, ..ok.clone() }.validate().unwrap_err().contains("--size"));
        assert!(UdpConfig { peers: 0, ..ok.clone() }.validate().unwrap_err().contains("peers"));
        assert!(UdpConfig { rate: Some(0.0), ..ok.clone() }.validate().unwrap_err().contains("--rate"));
        let fast = Some(Duration::from_millis(5));
        assert!(UdpConfig { interval: fast, ..ok.clone() }.validate().unwrap_err().contains("--interval"));
    }
}
