//! Who may wait on the admin endpoint: the connections that have not sent
//! their whole request within [`JOIN_AFTER`] of opening, at most
//! [`MAX_WAITING`] in all and [`PER_ADDRESS`] per client address.
//!
//! A request that comes at once (a load balancer's health probe) is
//! answered without ever taking a place. A connection still silent after
//! [`JOIN_AFTER`] takes one; room is made by closing, with a `429`, the
//! oldest waiting connection of its own address when that address holds
//! its whole share, or else, when every place is taken, the oldest of the
//! address holding the most. Silent sockets thus push out each other, at
//! most one per [`JOIN_AFTER`] each (never a probe, never in a busy loop),
//! and are closed anyway after [`REQUEST_TIMEOUT`](super::REQUEST_TIMEOUT).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use switchboard::ConnHandle;

/// Connections waiting for their request at once.
pub const MAX_WAITING: usize = 32;

/// How long a new connection may take to send its whole request before it
/// takes a waiting place.
pub const JOIN_AFTER: Duration = Duration::from_millis(100);

/// Waiting connections one client address may hold.
pub const PER_ADDRESS: usize = 8;

/// How often, at most, the log sums up the connections closed to make room.
const LOG_EVERY: Duration = Duration::from_secs(1);

/// One waiting connection, with what closes it (`H`: a [`ConnHandle`]).
#[derive(Debug)]
struct Waiting<H> {
    ip: IpAddr,
    /// The order it came in: the smallest is the oldest.
    seq: u64,
    handle: H,
}

/// The waiting connections by id, and how many each address holds.
#[derive(Debug)]
struct Table<H> {
    waiting: HashMap<u64, Waiting<H>>,
    per_ip: HashMap<IpAddr, usize>,
    next_seq: u64,
    /// Closed to make room and not yet logged, and the last one's address.
    unlogged: u64,
    last_evicted: Option<IpAddr>,
    last_log: Option<Instant>,
}

/// The waiting connections of the admin endpoint.
#[derive(Debug, Default)]
pub(crate) struct Admission {
    table: Mutex<Table<ConnHandle>>,
    evicted: AtomicU64,
}

impl<H> Default for Table<H> {
    fn default() -> Table<H> {
        Table {
            waiting: HashMap::new(),
            per_ip: HashMap::new(),
            next_seq: 0,
            unlogged: 0,
            last_evicted: None,
            last_log: None,
        }
    }
}

/// The address a client is counted under: an IPv4 client seen through an
/// IPv6 socket (`::ffff:a.b.c.d`) is the IPv4 address.
fn key(peer: SocketAddr) -> IpAddr {
    peer.ip().to_canonical()
}

impl Admission {
    /// Connection `id` from `peer` opened: it waits for its request. Returns
    /// the connection closed to make room for it, if one had to be.
    pub(crate) fn admit(&self, id: u64, peer: SocketAddr, handle: ConnHandle) -> Option<ConnHandle> {
        let mut t = self.lock();
        let (ip, handle) = t.admit(id, key(peer), handle)?;
        self.evicted.fetch_add(1, Ordering::Relaxed);
        t.unlogged += 1;
        t.last_evicted = Some(ip);
        t.log_evictions();
        Some(handle)
    }

    /// Connection `id` no longer waits (its request came, its deadline
    /// passed or it closed). `false`: it had been closed to make room, and
    /// its 429 is on its way.
    pub(crate) fn leave(&self, id: u64) -> bool {
        let mut t = self.lock();
        // The last evictions of a burst are logged here, a second on.
        t.log_evictions();
        t.remove(id).is_some()
    }

    /// Connections waiting for their request now.
    pub(crate) fn waiting(&self) -> usize {
        self.lock().waiting.len()
    }

    /// Connections closed to make room since the start.
    pub(crate) fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table<ConnHandle>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<H> Table<H> {
    /// Adds connection `id`; returns the one removed to make room.
    fn admit(&mut self, id: u64, ip: IpAddr, handle: H) -> Option<(IpAddr, H)> {
        let held = self.per_ip.get(&ip).copied().unwrap_or(0);
        let victim = if held >= PER_ADDRESS {
            self.oldest_of(ip)
        } else if self.waiting.len() >= MAX_WAITING {
            self.biggest_holder().and_then(|ip| self.oldest_of(ip))
        } else {
            None
        };
        let evicted = victim.and_then(|v| self.remove(v));
        let seq = self.next_seq;
        self.next_seq += 1;
        self.waiting.insert(id, Waiting { ip, seq, handle });
        *self.per_ip.entry(ip).or_insert(0) += 1;
        evicted
    }

    /// Sums up the connections closed to make room: at most once per
    /// [`LOG_EVERY`], the first at once.
    fn log_evictions(&mut self) {
        let (Some(ip), true) = (self.last_evicted, self.unlogged > 0) else { return };
        let now = Instant::now();
        if self.last_log.is_some_and(|at| now.duration_since(at) < LOG_EVERY) {
            return;
        }
        log::warn!(
            "admin: {} waiting connection(s) closed with 429 to make room (at most {MAX_WAITING} \
             wait for their request, {PER_ADDRESS} per address); the last from {ip}",
            self.unlogged
        );
        self.unlogged = 0;
        self.last_log = Some(now);
    }

    fn oldest_of(&self, ip: IpAddr) -> Option<u64> {
        self.waiting.iter().filter(|(_, w)| w.ip == ip).min_by_key(|(_, w)| w.seq).map(|(id, _)| *id)
    }

    /// The address holding the most waiting places (of two, the one whose
    /// oldest came first).
    fn biggest_holder(&self) -> Option<IpAddr> {
        let most = self.per_ip.values().copied().max()?;
        self.waiting.values().filter(|w| self.per_ip[&w.ip] == most).min_by_key(|w| w.seq).map(|w| w.ip)
    }

    fn remove(&mut self, id: u64) -> Option<(IpAddr, H)> {
        let w = self.waiting.remove(&id)?;
        if let Some(n) = self.per_ip.get_mut(&w.ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&w.ip);
            }
        }
        Some((w.ip, w.handle))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, n])
    }

    #[test]
    fn an_address_past_its_share_loses_its_own_oldest() {
        let mut t = Table::default();
        for id in 0..PER_ADDRESS as u64 {
            assert_eq!(t.admit(id, ip(1), id), None);
        }
        assert_eq!(t.admit(100, ip(1), 100), Some((ip(1), 0)));
        assert_eq!(t.admit(101, ip(1), 101), Some((ip(1), 1)));
        // Another address is let in without closing anyone.
        assert_eq!(t.admit(200, ip(2), 200), None);
        assert_eq!(t.per_ip[&ip(1)], PER_ADDRESS);
        // A connection that left is no longer there to close.
        assert!(t.remove(2).is_some() && t.remove(2).is_none());
        assert_eq!(t.admit(102, ip(1), 102), None);
    }

    #[test]
    fn when_every_place_is_taken_the_biggest_holder_loses_its_oldest() {
        let mut t = Table::default();
        let mut id = 0;
        // Four addresses at their share: every place taken.
        for n in 1..=(MAX_WAITING / PER_ADDRESS) as u8 {
            for _ in 0..PER_ADDRESS {
                assert_eq!(t.admit(id, ip(n), id), None);
                id += 1;
            }
        }
        assert_eq!(t.waiting.len(), MAX_WAITING);
        // A newcomer: the oldest of the first of the biggest holders goes.
        assert_eq!(t.admit(1000, ip(9), 1000), Some((ip(1), 0)));
        // Now the others hold more than address 1: address 2 loses next.
        assert_eq!(t.admit(1001, ip(10), 1001), Some((ip(2), PER_ADDRESS as u64)));
        assert_eq!(t.waiting.len(), MAX_WAITING);
        assert_eq!(t.per_ip[&ip(9)], 1);
    }

    #[test]
    fn a_mapped_ipv4_address_counts_as_the_ipv4_one() {
        let mapped: SocketAddr = "[::ffff:192.0.2.7]:4000".parse().unwrap();
        assert_eq!(key(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
        let v6: SocketAddr = "[2001:db8::1]:4000".parse().unwrap();
        assert_eq!(key(v6), "2001:db8::1".parse::<IpAddr>().unwrap());
    }
}
