//! The proxy's backends: round robin with passive health (a backend whose
//! connect failed is skipped for a while), and each backend's meters.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use switchboard::Addr;

/// How long a backend is skipped after its first failed connect; each
/// failure in a row doubles it, up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(2);

/// The longest a failing backend is skipped.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The backends, the round-robin cursor and each one's health and meters.
#[derive(Debug)]
pub(crate) struct Backends {
    list: Vec<Backend>,
    next: AtomicUsize,
}

#[derive(Debug)]
struct Backend {
    addr: Addr,
    health: Mutex<Health>,
    meters: Meters,
}

/// A backend's passive health: down until `until` after a failed connect.
#[derive(Debug, Clone, Copy, Default)]
struct Health {
    /// Skipped until then (`None`: up).
    until: Option<Instant>,
    /// The last failure's backoff (zero: no failure since the last success).
    backoff: Duration,
    /// When its last connect failed.
    failed_at: Option<Instant>,
}

/// What happened to a backend's health after a failed connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Skipped {
    /// How long it is skipped now.
    pub(crate) for_: Duration,
}

impl Backends {
    /// The backends, in the order given; at least one.
    pub(crate) fn new(addrs: Vec<Addr>) -> Backends {
        assert!(!addrs.is_empty(), "a proxy needs at least one backend");
        let list = addrs
            .into_iter()
            .map(|addr| Backend { addr, health: Mutex::new(Health::default()), meters: Meters::default() })
            .collect();
        Backends { list, next: AtomicUsize::new(0) }
    }

    /// The backend for a new client: the next one in turn that is up; if
    /// every one is down, the one whose last failure is the oldest (it is
    /// tried anyway: a client is never refused without a try).
    pub(crate) fn pick(&self, now: Instant) -> usize {
        let n = self.list.len();
        let start = self.next.fetch_add(1, Relaxed) % n;
        let mut oldest: Option<(usize, Option<Instant>)> = None;
        for i in (0..n).map(|k| (start + k) % n) {
            let h = *self.list[i].health.lock();
            match h.until {
                Some(until) if until > now => {
                    if oldest.is_none_or(|(_, at)| h.failed_at < at) {
                        oldest = Some((i, h.failed_at));
                    }
                }
                _ => return i,
            }
        }
        oldest.map_or(start, |(i, _)| i)
    }

    /// Backend `i`'s address.
    pub(crate) fn addr(&self, i: usize) -> &Addr {
        &self.list[i].addr
    }

    /// Backend `i`'s meters.
    pub(crate) fn meters(&self, i: usize) -> &Meters {
        &self.list[i].meters
    }

    /// Backend `i` took a connection after `took`: it is up again.
    pub(crate) fn connected(&self, i: usize, took: Duration) {
        *self.list[i].health.lock() = Health::default();
        let m = &self.list[i].meters;
        m.connections.fetch_add(1, Relaxed);
        m.open.fetch_add(1, Relaxed);
        m.connect_us.fetch_add(took.as_micros().min(u64::MAX as u128) as u64, Relaxed);
    }

    /// A connect to backend `i` failed at `now`: it is skipped for
    /// [`FIRST_BACKOFF`], doubled for each failure in a row up to
    /// [`MAX_BACKOFF`].
    pub(crate) fn failed(&self, i: usize, now: Instant) -> Skipped {
        self.list[i].meters.connect_failures.fetch_add(1, Relaxed);
        let mut h = self.list[i].health.lock();
        // Several clients may fail on one outage at once: the backoff
        // doubles once per period, not once per client.
        let still_down = h.until.is_some_and(|until| until > now);
        if !still_down {
            h.backoff = if h.backoff.is_zero() { FIRST_BACKOFF } else { (h.backoff * 2).min(MAX_BACKOFF) };
            h.until = Some(now + h.backoff);
        }
        h.failed_at = Some(now);
        Skipped { for_: h.until.map_or(h.backoff, |until| until.saturating_duration_since(now)) }
    }

    /// Every backend's figures now, in the order given.
    pub(crate) fn snapshot(&self, now: Instant) -> Vec<BackendStats> {
        self.list
            .iter()
            .map(|b| {
                let m = &b.meters;
                BackendStats {
                    addr: b.addr.to_string(),
                    connections: m.connections.load(Relaxed),
                    open: m.open.load(Relaxed),
                    bytes_to_backend: m.bytes_up.load(Relaxed),
                    bytes_from_backend: m.bytes_down.load(Relaxed),
                    connect_failures: m.connect_failures.load(Relaxed),
                    connect_seconds: m.connect_us.load(Relaxed) as f64 / 1e6,
                    up: b.health.lock().until.is_none_or(|until| until <= now),
                }
            })
            .collect()
    }
}

/// A backend's counters, shared by every worker.
#[derive(Debug, Default)]
pub(crate) struct Meters {
    connections: AtomicU64,
    open: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    connect_failures: AtomicU64,
    connect_us: AtomicU64,
}

impl Meters {
    /// A relayed connection to this backend ended.
    pub(crate) fn closed(&self) {
        self.open.fetch_sub(1, Relaxed);
    }

    /// Bytes relayed: `up` from clients to the backend, `down` back.
    pub(crate) fn add_bytes(&self, up: u64, down: u64) {
        if up > 0 {
            self.bytes_up.fetch_add(up, Relaxed);
        }
        if down > 0 {
            self.bytes_down.fetch_add(down, Relaxed);
        }
    }
}

/// One backend's figures, as the admin endpoint shows them.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendStats {
    /// The backend as given (`HOST:PORT` resolved, or `unix:PATH`).
    pub addr: String,
    /// Connections relayed to it (connects that succeeded).
    pub connections: u64,
    /// Relayed connections open now.
    pub open: u64,
    /// Bytes from clients relayed to it (the PROXY header not counted).
    pub bytes_to_backend: u64,
    /// Bytes from it relayed to clients.
    pub bytes_from_backend: u64,
    /// Connects that failed (refused, timed out, other errors).
    pub connect_failures: u64,
    /// The time its successful connects took, summed (with `connections`:
    /// the mean connect time).
    pub connect_seconds: f64,
    /// Whether it is taking clients (not skipped after a failed connect).
    pub up: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> Backends {
        Backends::new(
            ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"].iter().map(|a| Addr::parse(a).unwrap()).collect(),
        )
    }

    #[test]
    fn round_robin_in_order() {
        let b = three();
        let now = Instant::now();
        let picks: Vec<usize> = (0..7).map(|_| b.pick(now)).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2, 0]);
    }

    #[test]
    fn a_failed_backend_is_skipped_for_a_doubling_while_then_tried_again() {
        let b = three();
        let t0 = Instant::now();
        assert_eq!(b.failed(1, t0), Skipped { for_: FIRST_BACKOFF });
        // Another client failing on the same outage does not double it.
        assert_eq!(
            b.failed(1, t0 + Duration::from_millis(10)).for_,
            FIRST_BACKOFF - Duration::from_millis(10)
        );
        let picks: Vec<usize> = (0..4).map(|_| b.pick(t0 + Duration::from_secs(1))).collect();
        assert_eq!(picks, [0, 2, 2, 0]);
        assert!(!b.snapshot(t0)[1].up);
        // Past its backoff it gets its turn; failing again doubles it.
        let t1 = t0 + FIRST_BACKOFF;
        assert!(b.snapshot(t1)[1].up);
        assert_eq!((0..3).map(|_| b.pick(t1)).filter(|&i| i == 1).count(), 1);
        assert_eq!(b.failed(1, t1).for_, 2 * FIRST_BACKOFF);
        let mut t = t1;
        for want in [8, 16, 30, 30] {
            t += MAX_BACKOFF;
            assert_eq!(b.failed(1, t).for_, Duration::from_secs(want));
        }
        // A connect that works makes it up at once, the backoff reset.
        b.connected(1, Duration::from_millis(3));
        assert_eq!((0..3).map(|_| b.pick(t)).filter(|&i| i == 1).count(), 1);
        assert_eq!(b.failed(1, t).for_, FIRST_BACKOFF);
        let s = &b.snapshot(t)[1];
        assert_eq!((s.connections, s.open, s.connect_failures), (1, 1, 8));
        assert_eq!(s.connect_seconds, 0.003);
    }

    #[test]
    fn all_down_the_least_recently_failed_is_tried() {
        let b = three();
        let t0 = Instant::now();
        b.failed(2, t0);
        b.failed(0, t0 + Duration::from_millis(1));
        b.failed(1, t0 + Duration::from_millis(2));
        let now = t0 + Duration::from_millis(3);
        assert_eq!((0..4).map(|_| b.pick(now)).collect::<Vec<_>>(), [2, 2, 2, 2]);
    }

    #[test]
    fn meters_count_bytes_each_way_and_open_connections() {
        let b = three();
        b.connected(0, Duration::from_micros(250));
        b.connected(0, Duration::from_micros(750));
        b.meters(0).add_bytes(100, 7);
        b.meters(0).add_bytes(0, 3);
        b.meters(0).closed();
        let s = &b.snapshot(Instant::now())[0];
        assert_eq!(s.addr, "127.0.0.1:1");
        assert_eq!(
            (s.connections, s.open, s.bytes_to_backend, s.bytes_from_backend, s.connect_failures),
            (2, 1, 100, 10, 0)
        );
        assert_eq!(s.connect_seconds, 0.001);
        assert!(s.up);
    }
}
