//! The peer table: per-address state, bounded, with idle expiry.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// One peer's state and when it was last heard from.
#[derive(Debug)]
pub(crate) struct Entry<P> {
    pub(crate) state: P,
    pub(crate) last: Instant,
}

/// At most `max` peers, by address.
#[derive(Debug)]
pub(crate) struct Peers<P> {
    map: HashMap<SocketAddr, Entry<P>>,
    max: usize,
}

impl<P> Peers<P> {
    pub(crate) fn new(max: usize) -> Peers<P> {
        Peers { map: HashMap::new(), max }
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn is_full(&self) -> bool {
        self.map.len() >= self.max
    }

    pub(crate) fn get_mut(&mut self, addr: &SocketAddr) -> Option<&mut Entry<P>> {
        self.map.get_mut(addr)
    }

    /// Adds a peer; the caller checked [`is_full`](Peers::is_full).
    pub(crate) fn insert(&mut self, addr: SocketAddr, state: P, now: Instant) {
        self.map.insert(addr, Entry { state, last: now });
    }

    pub(crate) fn remove(&mut self, addr: &SocketAddr) -> Option<P> {
        self.map.remove(addr).map(|e| e.state)
    }

    /// Takes out every peer not heard from for `idle`.
    pub(crate) fn expire(&mut self, now: Instant, idle: Duration) -> Vec<(SocketAddr, P)> {
        let old: Vec<SocketAddr> = self
            .map
            .iter()
            .filter(|(_, e)| now.saturating_duration_since(e.last) >= idle)
            .map(|(a, _)| *a)
            .collect();
        old.into_iter().filter_map(|a| self.map.remove(&a).map(|e| (a, e.state))).collect()
    }

    /// Every address in the table.
    pub(crate) fn addrs(&self) -> Vec<SocketAddr> {
        self.map.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_expiring() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let t0 = Instant::now();
        let mut p = Peers::new(2);
        p.insert(a, 1, t0);
        assert!(!p.is_full());
        p.insert(b, 2, t0 + Duration::from_secs(5));
        assert!(p.is_full());
        let gone = p.expire(t0 + Duration::from_secs(10), Duration::from_secs(10));
        assert_eq!(gone, vec![(a, 1)]);
        assert_eq!(p.len(), 1);
        assert_eq!(p.remove(&b), Some(2));
        assert_eq!(p.len(), 0);
    }
}
