//! The queue in front of the account threads, fair between addresses.
//!
//! Each address has its own line, at most [`PER_ADDRESS`] long, and the
//! threads serve the addresses in turn (round robin), one request each:
//! a hundred connections from one address get one address's share, and a
//! request from another address waits for at most one request of each
//! address ahead of it. When the whole queue is full, a newcomer from an
//! address with fewer requests waiting than the longest line takes the
//! place of that line's last request (which is answered busy).

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

use parking_lot::{Condvar, Mutex};

/// Requests one address may have waiting.
pub(super) const PER_ADDRESS: usize = 4;
/// Requests that may wait in all.
pub(super) const TOTAL: usize = 64;

/// What [`FairQueue::push`] did.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Pushed<T> {
    /// Queued.
    Queued,
    /// Queued in place of this request of a longer line, to be refused.
    Displaced(T),
    /// Not queued: the address has its share, or the queue is full of
    /// lines no longer than its own, or the queue is closed.
    Refused(T),
}

#[derive(Debug)]
struct Lines<A, T> {
    by_address: HashMap<A, VecDeque<T>>,
    /// Addresses with requests waiting, in the order they are served.
    turn: VecDeque<A>,
    len: usize,
    closed: bool,
}

/// A bounded multi-producer, multi-consumer queue served round robin by
/// address (`A`: what a request is counted by).
#[derive(Debug)]
pub(super) struct FairQueue<A, T> {
    lines: Mutex<Lines<A, T>>,
    ready: Condvar,
    per_address: usize,
    total: usize,
}

impl<A: Hash + Eq + Copy, T> FairQueue<A, T> {
    pub(super) fn new(per_address: usize, total: usize) -> FairQueue<A, T> {
        FairQueue {
            lines: Mutex::new(Lines {
                by_address: HashMap::new(),
                turn: VecDeque::new(),
                len: 0,
                closed: false,
            }),
            ready: Condvar::new(),
            per_address,
            total,
        }
    }

    /// Queues `item` from `addr`, never waiting.
    pub(super) fn push(&self, addr: A, item: T) -> Pushed<T> {
        let mut l = self.lines.lock();
        let mine = l.by_address.get(&addr).map_or(0, VecDeque::len);
        if l.closed || mine >= self.per_address {
            return Pushed::Refused(item);
        }
        let mut displaced = None;
        if l.len >= self.total {
            let longest = l.by_address.iter().max_by_key(|(_, q)| q.len()).map(|(a, q)| (*a, q.len()));
            match longest {
                Some((big, n)) if n > mine + 1 => {
                    displaced = l.by_address.get_mut(&big).and_then(VecDeque::pop_back);
                    l.len -= 1;
                }
                _ => return Pushed::Refused(item),
            }
        }
        let line = l.by_address.entry(addr).or_default();
        line.push_back(item);
        if line.len() == 1 {
            l.turn.push_back(addr);
        }
        l.len += 1;
        drop(l);
        self.ready.notify_one();
        match displaced {
            Some(d) => Pushed::Displaced(d),
            None => Pushed::Queued,
        }
    }

    /// The next request, from the address whose turn it is; waits for
    /// one. `None` once the queue is closed and empty.
    pub(super) fn pop(&self) -> Option<T> {
        let mut l = self.lines.lock();
        loop {
            if let Some(addr) = l.turn.pop_front() {
                let line = l.by_address.get_mut(&addr).expect("an address in turn has a line");
                let item = line.pop_front().expect("an address in turn has a request");
                if line.is_empty() {
                    l.by_address.remove(&addr);
                } else {
                    l.turn.push_back(addr);
                }
                l.len -= 1;
                return Some(item);
            }
            if l.closed {
                return None;
            }
            self.ready.wait(&mut l);
        }
    }

    /// No more requests: [`pop`](Self::pop) returns what is queued, then
    /// `None`.
    pub(super) fn close(&self) {
        self.lines.lock().closed = true;
        self.ready.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::sync::Arc;

    use super::*;

    fn ip(last: u8) -> IpAddr {
        [127, 0, 0, last].into()
    }

    #[test]
    fn addresses_are_served_in_turn() {
        let q = FairQueue::new(PER_ADDRESS, TOTAL);
        for n in 0..PER_ADDRESS {
            assert_eq!(q.push(ip(1), (1, n)), Pushed::Queued);
        }
        // The flooding address has its share: one more is refused.
        assert_eq!(q.push(ip(1), (1, 99)), Pushed::Refused((1, 99)));
        assert_eq!(q.push(ip(2), (2, 0)), Pushed::Queued);
        assert_eq!(q.push(ip(3), (3, 0)), Pushed::Queued);
        let order: Vec<_> = (0..3).map(|_| q.pop().unwrap()).collect();
        assert_eq!(order, [(1, 0), (2, 0), (3, 0)]);
        assert_eq!(q.pop(), Some((1, 1)));
        q.close();
        assert_eq!(q.push(ip(4), (4, 0)), Pushed::Refused((4, 0)));
        assert_eq!(q.pop(), Some((1, 2)));
        assert_eq!(q.pop(), Some((1, 3)));
        assert_eq!(q.pop(), None);
    }

    #[test]
    fn a_full_queue_makes_room_from_the_longest_line() {
        let q = FairQueue::new(4, 8);
        for n in 0..4 {
            assert_eq!(q.push(ip(1), n), Pushed::Queued);
        }
        for n in [10, 11] {
            assert_eq!(q.push(ip(2), n), Pushed::Queued);
        }
        for n in [20, 21] {
            assert_eq!(q.push(ip(3), n), Pushed::Queued);
        }
        // Full: address 4 has none waiting, address 1 four.
        assert_eq!(q.push(ip(4), 30), Pushed::Displaced(3));
        // Address 1 has three now, address 2 would have three: refused.
        assert_eq!(q.push(ip(2), 12), Pushed::Refused(12));
        assert_eq!(q.push(ip(5), 40), Pushed::Displaced(2));
        let all: Vec<_> = (0..8).map(|_| q.pop().unwrap()).collect();
        assert_eq!(all, [0, 10, 20, 30, 40, 1, 11, 21]);
    }

    #[test]
    fn pop_waits_for_a_push_and_ends_on_close() {
        let q = Arc::new(FairQueue::new(PER_ADDRESS, TOTAL));
        let q2 = Arc::clone(&q);
        let t = std::thread::spawn(move || {
            let mut got = Vec::new();
            while let Some(x) = q2.pop() {
                got.push(x);
            }
            got
        });
        assert_eq!(q.push(ip(1), 1), Pushed::Queued);
        assert_eq!(q.push(ip(2), 2), Pushed::Queued);
        q.close();
        let mut got = t.join().unwrap();
        got.sort_unstable();
        assert_eq!(got, [1, 2]);
    }
}
