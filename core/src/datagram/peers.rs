//! The peer table: per-address state, bounded in all and per source
//! prefix, the least recently heard evicted first, with idle expiry.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::gate::Gate;

/// One peer's state, its budget, and when it was last heard from.
#[derive(Debug)]
pub(crate) struct Entry<P> {
    pub(crate) state: P,
    pub(crate) gate: Gate,
    last: Instant,
    /// Its place in the order of hearing (higher: heard more recently).
    seq: u64,
    /// Which order it is kept in: proven or not (see [`Peers::settle`]).
    proven: bool,
}

/// The network a source address belongs to, for the per-prefix share: an
/// IPv4 /24 or an IPv6 /64 (an IPv4-mapped IPv6 address counts as IPv4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Prefix {
    V4([u8; 3]),
    V6([u8; 8]),
}

impl Prefix {
    pub(crate) fn of(addr: &SocketAddr) -> Prefix {
        let ip = match addr.ip() {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        match ip {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                Prefix::V4([o[0], o[1], o[2]])
            }
            IpAddr::V6(v6) => {
                let mut p = [0u8; 8];
                p.copy_from_slice(&v6.octets()[..8]);
                Prefix::V6(p)
            }
        }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Prefix::V4([a, b, c]) => write!(f, "{a}.{b}.{c}.0/24"),
            Prefix::V6(p) => {
                let mut o = [0u8; 16];
                o[..8].copy_from_slice(p);
                write!(f, "{}/64", std::net::Ipv6Addr::from(o))
            }
        }
    }
}

/// Whether a new address may have a place in the table.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admit<P> {
    /// There is room.
    Room,
    /// The table was full: this peer, the least recently heard (an
    /// unproven one if any), was taken out to make room.
    Evicted(SocketAddr, P),
    /// Its prefix holds its share of the table already: refused.
    PrefixFull(Prefix),
}

/// At most `max` peers by address, at most `per_prefix` of them from one
/// [`Prefix`].
#[derive(Debug)]
pub(crate) struct Peers<P> {
    map: HashMap<SocketAddr, Entry<P>>,
    /// The order of hearing, least recent first: unproven peers, proven.
    unproven: BTreeMap<u64, SocketAddr>,
    proven: BTreeMap<u64, SocketAddr>,
    prefixes: HashMap<Prefix, usize>,
    max: usize,
    per_prefix: usize,
    seq: u64,
}

impl<P> Peers<P> {
    pub(crate) fn new(max: usize, per_prefix: usize) -> Peers<P> {
        Peers {
            map: HashMap::new(),
            unproven: BTreeMap::new(),
            proven: BTreeMap::new(),
            prefixes: HashMap::new(),
            max,
            per_prefix,
            seq: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    fn order(&mut self, proven: bool) -> &mut BTreeMap<u64, SocketAddr> {
        if proven {
            &mut self.proven
        } else {
            &mut self.unproven
        }
    }

    pub(crate) fn get_mut(&mut self, addr: &SocketAddr) -> Option<&mut Entry<P>> {
        self.map.get_mut(addr)
    }

    /// A datagram came from `addr`: if it is in the table it becomes the
    /// most recently heard, and its entry is returned.
    pub(crate) fn heard(&mut self, addr: &SocketAddr, now: Instant) -> Option<&mut Entry<P>> {
        let entry = self.map.get_mut(addr)?;
        self.seq += 1;
        let order = if entry.proven { &mut self.proven } else { &mut self.unproven };
        order.remove(&entry.seq);
        order.insert(self.seq, *addr);
        entry.seq = self.seq;
        entry.last = now;
        Some(entry)
    }

    /// Whether `addr` (not in the table) may come in, evicting the least
    /// recently heard peer when the table is full.
    pub(crate) fn admit(&mut self, addr: &SocketAddr) -> Admit<P> {
        let prefix = Prefix::of(addr);
        // A share of the whole table is no share: the table's own limit
        // (eviction) applies.
        if self.per_prefix < self.max && self.prefixes.get(&prefix).copied().unwrap_or(0) >= self.per_prefix {
            return Admit::PrefixFull(prefix);
        }
        if self.map.len() < self.max {
            return Admit::Room;
        }
        let oldest = self.unproven.first_key_value().or_else(|| self.proven.first_key_value());
        match oldest.map(|(_, a)| *a).and_then(|a| self.remove(&a).map(|state| (a, state))) {
            Some((a, state)) => Admit::Evicted(a, state),
            None => Admit::Room,
        }
    }

    /// Adds a peer; the caller [`admit`](Peers::admit)ted it.
    pub(crate) fn insert(&mut self, addr: SocketAddr, state: P, gate: Gate, now: Instant) {
        self.seq += 1;
        let (seq, proven) = (self.seq, gate.is_proven());
        self.order(proven).insert(seq, addr);
        *self.prefixes.entry(Prefix::of(&addr)).or_insert(0) += 1;
        if let Some(old) = self.map.insert(addr, Entry { state, gate, last: now, seq, proven }) {
            // Not admitted first: keep the orders and counts true anyway.
            self.order(old.proven).remove(&old.seq);
            self.uncount(&addr);
        }
    }

    /// Files the peer with the proven ones if its budget says it proved
    /// itself; true when it just did.
    pub(crate) fn settle(&mut self, addr: &SocketAddr) -> bool {
        let Some(entry) = self.map.get_mut(addr) else { return false };
        if entry.proven || !entry.gate.is_proven() {
            return false;
        }
        entry.proven = true;
        let seq = entry.seq;
        self.unproven.remove(&seq);
        self.proven.insert(seq, *addr);
        true
    }

    fn uncount(&mut self, addr: &SocketAddr) {
        let prefix = Prefix::of(addr);
        if let Some(n) = self.prefixes.get_mut(&prefix) {
            *n -= 1;
            if *n == 0 {
                self.prefixes.remove(&prefix);
            }
        }
    }

    pub(crate) fn remove(&mut self, addr: &SocketAddr) -> Option<P> {
        let entry = self.map.remove(addr)?;
        self.order(entry.proven).remove(&entry.seq);
        self.uncount(addr);
        Some(entry.state)
    }

    /// Takes out every peer not heard from for `idle`, the least recently
    /// heard first (only those: the orders are by time of hearing).
    pub(crate) fn expire(&mut self, now: Instant, idle: Duration) -> Vec<(SocketAddr, P)> {
        let mut old = Vec::new();
        for proven in [false, true] {
            let order = if proven { &self.proven } else { &self.unproven };
            for addr in order.values() {
                match self.map.get(addr) {
                    Some(e) if now.saturating_duration_since(e.last) >= idle => old.push(*addr),
                    _ => break,
                }
            }
        }
        old.into_iter().filter_map(|a| self.remove(&a).map(|s| (a, s))).collect()
    }

    /// Every address in the table.
    pub(crate) fn addrs(&self) -> Vec<SocketAddr> {
        self.map.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn bounded_and_expiring() {
        let (a, b) = (addr("127.0.0.1:1"), addr("127.0.0.1:2"));
        let t0 = Instant::now();
        let mut p = Peers::new(2, 2);
        assert_eq!(p.admit(&a), Admit::Room);
        p.insert(a, 1, Gate::default(), t0);
        p.insert(b, 2, Gate::default(), t0 + Duration::from_secs(5));
        let gone = p.expire(t0 + Duration::from_secs(10), Duration::from_secs(10));
        assert_eq!(gone, vec![(a, 1)]);
        assert_eq!(p.len(), 1);
        assert_eq!(p.remove(&b), Some(2));
        assert_eq!(p.len(), 0);
    }

    #[test]
    fn a_full_table_evicts_the_least_recently_heard_unproven_peer_first() {
        let (a, b, c, d) = (addr("10.0.0.1:1"), addr("10.0.1.1:1"), addr("10.0.2.1:1"), addr("10.0.3.1:1"));
        let t = Instant::now();
        let mut p = Peers::new(3, 3);
        let mut proven = Gate::default();
        proven.prove();
        p.insert(a, 'a', proven, t);
        p.insert(b, 'b', Gate::default(), t);
        p.insert(c, 'c', Gate::default(), t);
        // b is heard again: c is now the least recently heard unproven peer.
        assert!(p.heard(&b, t).is_some());
        assert_eq!(p.admit(&d), Admit::Evicted(c, 'c'));
        p.insert(d, 'd', Gate::default(), t);
        assert_eq!(p.admit(&c), Admit::Evicted(b, 'b'));
        p.insert(c, 'c', Gate::default(), t);
        // d proves itself: c is then the only unproven peer.
        p.get_mut(&d).unwrap().gate.prove();
        assert!(p.settle(&d) && !p.settle(&d));
        assert_eq!(p.admit(&b), Admit::Evicted(c, 'c'));
        p.insert(b, 'b', Gate::default(), t);
        assert_eq!(p.admit(&c), Admit::Evicted(b, 'b'));
        p.insert(c, 'c', proven, t);
        assert_eq!(p.admit(&b), Admit::Evicted(a, 'a'), "all proven: the least recently heard");
        assert_eq!(p.len(), 2);
    }

    #[test]
    fn a_prefix_holds_at_most_its_share() {
        let t = Instant::now();
        let mut p = Peers::new(10, 2);
        p.insert(addr("192.0.2.1:1"), (), Gate::default(), t);
        p.insert(addr("192.0.2.200:7"), (), Gate::default(), t);
        let third = addr("192.0.2.3:1");
        assert_eq!(p.admit(&third), Admit::PrefixFull(Prefix::of(&third)));
        assert_eq!(Prefix::of(&third).to_string(), "192.0.2.0/24");
        assert_eq!(p.admit(&addr("192.0.3.1:1")), Admit::Room, "the next /24 is another prefix");
        assert_eq!(
            Prefix::of(&addr("[::ffff:192.0.2.9]:1")),
            Prefix::of(&third),
            "IPv4-mapped counts as IPv4"
        );
        p.remove(&addr("192.0.2.1:1"));
        assert_eq!(p.admit(&third), Admit::Room);
        let v6 = addr("[2001:db8:1:2:3::1]:1");
        assert_eq!(Prefix::of(&v6), Prefix::of(&addr("[2001:db8:1:2:ffff::9]:2")));
        assert_eq!(Prefix::of(&v6).to_string(), "2001:db8:1:2::/64");
    }
}
