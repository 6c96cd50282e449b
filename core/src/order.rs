//! [`Order`]: replies kept in request order while deferred replies are in
//! progress, so that several can be in progress at once.
//!
//! A connection's output is cut into segments: what the handler sends
//! directly (through `Conn`) between two `defer` calls is one segment, and
//! each deferred reply is one. Segments leave in order: the head segment's
//! replies go straight to the connection's queue, later ones are parked
//! until every segment before them is complete (a deferred reply when its
//! `Deferred` is dropped, a direct segment when the next `defer` begins
//! another). With no deferred reply in progress there is no `Order` at all.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use crate::message::Message;
use crate::outbound::Outbound;

/// A reply parked until its segment is at the head.
#[derive(Debug)]
pub(crate) enum Parked {
    Bytes(Message),
    File { file: Arc<File>, offset: u64, len: u64 },
}

impl Parked {
    fn into_queue(self, out: &mut Outbound, held: &AtomicUsize) {
        match self {
            Parked::Bytes(msg) => out.push_message(msg, held),
            Parked::File { file, offset, len } => out.push_file(file, offset, len),
        }
    }

    /// Memory bytes (what the connection's count holds for it).
    pub(crate) fn mem(&self) -> usize {
        match self {
            Parked::Bytes(msg) => msg.len(),
            Parked::File { .. } => 0,
        }
    }
}

/// The segments of a connection's output while deferred replies are in
/// progress. Segment 0 is direct; each `defer` adds a deferred segment (odd)
/// and the direct segment after it (even).
#[derive(Debug, Default)]
pub(crate) struct Order {
    /// The segment whose replies go straight to the queue.
    head: u64,
    /// The direct segment `Conn` sends go to now.
    current: u64,
    /// Deferred segments complete but not yet at the head.
    done: BTreeSet<u64>,
    /// Replies of segments after the head, by segment, in order.
    parked: BTreeMap<u64, Vec<Parked>>,
}

impl Order {
    /// A deferred reply begins: its segment, after everything sent so far.
    pub(crate) fn defer(this: &mut Option<Box<Order>>, out: &mut Outbound, held: &AtomicUsize) -> u64 {
        let order = this.get_or_insert_with(Box::default);
        let seq = order.current + 1;
        order.current += 2;
        // The direct segment before it is complete now.
        order.advance(out, held);
        seq
    }

    /// Where a reply of segment `seq` goes (`None`: a `Conn` send, in the
    /// current direct segment): to the queue if its segment is the head,
    /// else parked. (A plain handle's send is outside the order.)
    pub(crate) fn place(
        this: &mut Option<Box<Order>>,
        seq: Option<u64>,
        reply: Parked,
        out: &mut Outbound,
        held: &AtomicUsize,
    ) {
        match this {
            Some(order) => {
                let seq = seq.unwrap_or(order.current);
                if seq == order.head {
                    reply.into_queue(out, held);
                } else {
                    order.parked.entry(seq).or_default().push(reply);
                }
            }
            None => reply.into_queue(out, held),
        }
    }

    /// Deferred segment `seq` is complete: what it unblocks goes to the
    /// queue. With nothing left in progress, the order goes.
    pub(crate) fn release(this: &mut Option<Box<Order>>, seq: u64, out: &mut Outbound, held: &AtomicUsize) {
        let Some(order) = this else { return };
        order.done.insert(seq);
        order.advance(out, held);
        if order.head == order.current && order.parked.is_empty() {
            *this = None;
        }
    }

    fn advance(&mut self, out: &mut Outbound, held: &AtomicUsize) {
        while self.head < self.current && (self.head % 2 == 0 || self.done.remove(&self.head)) {
            self.head += 1;
            for reply in self.parked.remove(&self.head).unwrap_or_default() {
                reply.into_queue(out, held);
            }
        }
    }

    /// Whether direct sends are parked now (a deferred reply before them
    /// is in progress).
    pub(crate) fn parks_direct(this: &Option<Box<Order>>) -> bool {
        this.as_ref().is_some_and(|o| o.current != o.head)
    }

    /// Drops what is parked (the connection closes); returns its memory
    /// bytes.
    pub(crate) fn clear(this: &mut Option<Box<Order>>) -> usize {
        let parked = this.take().map(|o| o.parked).unwrap_or_default();
        parked.values().flatten().map(Parked::mem).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(out: &mut Outbound) -> Vec<u8> {
        let (mut sink, queued, held) = (Vec::new(), AtomicUsize::new(usize::MAX / 2), AtomicUsize::new(0));
        out.drain_into(&mut sink, &queued, &held).unwrap();
        sink
    }

    #[test]
    fn replies_leave_in_request_order_whatever_order_they_complete_in() {
        let (mut order, mut out, held) = (None, Outbound::default(), AtomicUsize::new(0));
        let put = |o: &mut Option<Box<Order>>, seq, s: &'static str, out: &mut Outbound| {
            Order::place(o, seq, Parked::Bytes(Message::from(s)), out, &held)
        };
        put(&mut order, None, "0 ", &mut out);
        let a = Order::defer(&mut order, &mut out, &held);
        let b = Order::defer(&mut order, &mut out, &held);
        put(&mut order, None, "after-b ", &mut out);
        let c = Order::defer(&mut order, &mut out, &held);
        put(&mut order, Some(c), "c ", &mut out);
        put(&mut order, Some(b), "b ", &mut out);
        Order::release(&mut order, c, &mut out, &held);
        Order::release(&mut order, b, &mut out, &held);
        assert_eq!(text(&mut out), b"0 ", "everything waits for a");
        put(&mut order, Some(a), "a ", &mut out);
        assert_eq!(text(&mut out), b"a ", "a is the head: straight out");
        assert!(Order::parks_direct(&order));
        Order::release(&mut order, a, &mut out, &held);
        assert_eq!(text(&mut out), b"b after-b c ");
        assert!(order.is_none(), "nothing in progress: no order left");
    }
}
