//! Echo mode: ping-pong, every echoed byte compared with what was sent.
//!
//! Message `seq` of connection `c` is a pseudo-random pattern seeded by
//! `(c, seq)`, so a byte lost, duplicated, reordered or corrupted anywhere in
//! the stream shows as a mismatch without keeping a copy of what was sent.

use std::collections::VecDeque;

use super::worker::{Cx, Protocol};

/// Open loop: messages one connection may have in flight before the
/// schedule skips (and counts) the rest.
const OPEN_LOOP_MAX_IN_FLIGHT: usize = 65_536;

/// The echo protocol.
#[derive(Debug)]
pub(crate) struct Echo {
    size: usize,
    expected: Vec<u8>,
}

/// One echo connection.
#[derive(Debug)]
pub(crate) struct EchoConn {
    id: u64,
    next_send: u64,
    next_recv: u64,
    /// Bytes of message `next_recv` received so far.
    recv_off: usize,
    /// Whether they all matched so far.
    recv_ok: bool,
    /// Scheduled send time of each message in flight, oldest first.
    in_flight: VecDeque<u64>,
}

impl Echo {
    pub(crate) fn new(size: usize) -> Echo {
        Echo { size, expected: Vec::new() }
    }
}

impl Protocol for Echo {
    type Conn = EchoConn;
    type Output = ();

    fn open(&mut self, global: usize) -> EchoConn {
        EchoConn {
            id: global as u64,
            next_send: 0,
            next_recv: 0,
            recv_off: 0,
            recv_ok: true,
            in_flight: VecDeque::new(),
        }
    }

    fn on_data(&mut self, c: &mut EchoConn, mut data: &[u8], cx: &mut Cx<'_>) -> Result<(), String> {
        while !data.is_empty() {
            let Some(&sent_at) = c.in_flight.front() else {
                return Err(format!("{} bytes arrived that were never sent", data.len()));
            };
            let n = (self.size - c.recv_off).min(data.len());
            self.expected.resize(n, 0);
            fill(seed(c.id, c.next_recv), c.recv_off, &mut self.expected);
            if data[..n] != self.expected[..] {
                c.recv_ok = false;
            }
            c.recv_off += n;
            data = &data[n..];
            if c.recv_off == self.size {
                c.in_flight.pop_front();
                cx.complete(sent_at);
                if !c.recv_ok {
                    cx.tally.errors.mismatches += 1;
                }
                c.next_recv += 1;
                c.recv_off = 0;
                c.recv_ok = true;
            }
        }
        Ok(())
    }

    fn may_send(&self, c: &EchoConn, depth: usize) -> bool {
        c.in_flight.len() < depth
    }

    fn may_send_open(&self, c: &EchoConn) -> bool {
        c.in_flight.len() < OPEN_LOOP_MAX_IN_FLIGHT
    }

    fn send(&mut self, c: &mut EchoConn, intended_ns: u64, out: &mut Vec<u8>) {
        let start = out.len();
        out.resize(start + self.size, 0);
        fill(seed(c.id, c.next_send), 0, &mut out[start..]);
        c.next_send += 1;
        c.in_flight.push_back(intended_ns);
    }

    fn in_flight(&self, c: &EchoConn) -> usize {
        c.in_flight.len()
    }

    fn close(&mut self, _c: EchoConn) {}

    fn finish(self) {}
}

/// The seed of message `seq` of connection `id` (splitmix64).
fn seed(id: u64, seq: u64) -> u64 {
    let mut z = (id << 40 ^ seq).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Writes bytes `offset..offset + out.len()` of the pattern of `seed`.
fn fill(seed: u64, offset: usize, out: &mut [u8]) {
    for (k, b) in out.iter_mut().enumerate() {
        let pos = (offset + k) as u64;
        let word = seed.wrapping_add((pos / 8).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        *b = (word >> ((pos % 8) * 8)) as u8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_is_stable_across_splits_and_differs_between_messages() {
        let mut whole = vec![0; 100];
        fill(seed(3, 7), 0, &mut whole);
        let mut split = vec![0; 100];
        fill(seed(3, 7), 0, &mut split[..37]);
        fill(seed(3, 7), 37, &mut split[37..]);
        assert_eq!(whole, split);
        let mut other = vec![0; 100];
        fill(seed(3, 8), 0, &mut other);
        assert_ne!(whole, other);
        fill(seed(4, 7), 0, &mut other);
        assert_ne!(whole, other);
    }
}
