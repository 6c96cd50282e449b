//! The connection's transitions over a scripted byte stream: no socket,
//! no worker, no loop. Each test plays the peer's reads, drives the
//! transitions the worker would, and checks what they say to do next.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use mio::{Poll, Token, Waker};

use super::scripted::Script;
use super::*;
use crate::admission::Load;
use crate::conn::{Conn, SendRules, SlowConsumerPolicy};
use crate::framing::Framing;
use crate::handler::{Flow, Handler};
use crate::mailbox::{ConnKey, Mailbox};
use crate::stats::Counters;
use crate::Deferred;

/// Lines: `later` is answered by a deferred reply (kept in the session),
/// `bye` closes, `boom` panics, anything else is echoed upper-cased.
struct Lines;

impl Handler for Lines {
    type Session = Vec<Deferred>;
    fn framing(&self) -> Framing {
        Framing::lines(16)
    }
    fn open(&self, conn: &mut Conn<'_>) -> Vec<Deferred> {
        conn.send("hi\n");
        Vec::new()
    }
    fn frame(&self, later: &mut Vec<Deferred>, line: &[u8], conn: &mut Conn<'_>) -> Flow {
        match line {
            b"later" => later.push(conn.defer()),
            b"bye" => return Flow::Close,
            b"boom" => panic!("a handler bug"),
            _ => {
                conn.send(line.to_ascii_uppercase());
                conn.send("\n");
            }
        }
        Flow::Continue
    }
}

/// A connection over `reads`, as its worker holds it, with what it needs.
struct Rig {
    c: Connection<Vec<Deferred>, Scripted>,
    stats: Arc<Counters>,
    scratch: Vec<u8>,
    _rx: Receiver<crate::mailbox::Mail>,
    _poll: Poll,
}

impl Rig {
    fn new(reads: Vec<Script>) -> Rig {
        Rig::with_max_deferred(reads, 1)
    }

    fn with_max_deferred(reads: Vec<Script>, max_deferred: usize) -> Rig {
        let poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), Token(0)).unwrap());
        let (tx, rx) = crossbeam_channel::unbounded();
        let mailbox = Arc::new(Mailbox { tx, waker, pending: AtomicBool::new(false) });
        let stats = Arc::new(Counters::new(1));
        let rules = Arc::new(SendRules {
            max_outbound: 1 << 20,
            max_outbound_total: 1 << 30,
            policy: SlowConsumerPolicy::Disconnect,
            framing: Lines.framing(),
            max_deferred,
            blocking: Arc::new(crate::pool::BlockingPool::new(1, 16)),
            stats: Arc::clone(&stats),
        });
        let peer = SocketAddr::from(([127, 0, 0, 1], 40000));
        let shared = ConnShared::new(7, ConnKey::default(), peer.into(), rules, mailbox);
        let load = Load::new(&stats);
        let script = Scripted { reads: reads.into(), ..Scripted::default() };
        let admission = Admission::new(&load);
        let c = Connection::new(
            script,
            Arc::new(shared),
            Framer::new(Lines.framing()),
            admission,
            Instant::now(),
        );
        Rig { c, stats, scratch: vec![0; 4], _rx: rx, _poll: poll }
    }

    fn cx(&self) -> Cx<'static, Lines> {
        // The counters live as long as the rig; a leaked clone keeps the
        // borrow simple.
        let stats: &'static Counters = Box::leak(Box::new(Arc::clone(&self.stats)));
        Cx {
            handler: &Lines,
            stats,
            counters: &stats.workers[0],
            high_water: 1 << 10,
            linger: Duration::from_secs(1),
            draining: false,
            now: Instant::now(),
        }
    }

    fn readable(&mut self) -> Next {
        let cx = self.cx();
        self.c.readable(&cx, &mut self.scratch, true)
    }

    fn flush(&mut self) -> Next {
        let cx = self.cx();
        self.c.flush(&cx, &mut self.scratch)
    }

    /// What the handles queued, taken as the worker takes it.
    fn take_mail(&mut self) -> Vec<Next> {
        let cx = self.cx();
        let mut items = Vec::new();
        self.c.shared.take_inbox(&mut items);
        items.into_iter().map(|item| self.c.take(&cx, item)).collect()
    }

    fn written(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.c.sock.written)
    }
}

#[test]
fn frames_across_short_reads_then_eof_closes_gracefully_and_lingers_to_the_end() {
    // A 4-byte read buffer: every line comes in pieces.
    let reads =
        vec![Script::Bytes(b"one\ntw"), Script::WouldBlock, Script::Bytes(b"o\n"), Script::Eof, Script::Eof];
    let mut r = Rig::new(reads);
    let cx = r.cx();
    assert!(matches!(r.c.open_session(&cx), Next::Wait));
    assert!(r.c.wants_flush(), "the greeting is queued");
    assert!(matches!(r.readable(), Next::Wait));
    assert!(r.c.partial_since.is_some(), "an incomplete frame: the frame timeout runs");
    assert_eq!(r.c.writing(), Writing::Open);
    assert!(matches!(r.readable(), Next::Wait), "the EOF starts a graceful close");
    assert_eq!(r.c.writing(), Writing::Flushing);
    assert!(matches!(r.flush(), Next::End(End::Lingered)), "flushed, shut, and the peer's EOF read");
    assert_eq!(r.written(), b"hi\nONE\nTWO\n");
    assert!(r.c.sock.write_shut);
    assert_eq!(r.stats.workers[0].frames.load(Ordering::Relaxed), 2);
    let (session, reason, _admission) = r.c.end(End::Lingered);
    assert!(session.is_some());
    assert!(matches!(reason, CloseReason::PeerClosed), "{reason}");
    assert_eq!(r.stats.open.load(Ordering::Acquire), 1, "open until the admission is dropped");
}

#[test]
fn a_panic_in_a_callback_ends_the_connection_at_once_and_is_counted() {
    let mut r = Rig::new(vec![Script::Bytes(b"boom\nx\n")]);
    let cx = r.cx();
    let _ = r.c.open_session(&cx);
    assert!(matches!(r.readable(), Next::End(End::Now(CloseReason::HandlerPanic))));
    assert_eq!(r.stats.handler_panics.load(Ordering::Relaxed), 1);
}

#[test]
fn frames_held_behind_a_deferred_reply_are_not_a_partial_frame_and_go_on_at_its_release() {
    let mut r = Rig::new(vec![Script::Bytes(b"later\nb\nc\n")]);
    let cx = r.cx();
    let _ = r.c.open_session(&cx);
    r.scratch = vec![0; 64];
    assert!(matches!(r.readable(), Next::Wait));
    assert_eq!(r.c.hold(), Some(Hold::Deferred));
    assert_eq!(r.c.framer.buffered(), 4, "b and c wait");
    assert_eq!(r.c.partial_since, None, "whole frames waiting on the server: no frame timeout");
    // The reply comes from another thread; dropping it releases the rest.
    let reply = r.c.session_mut().and_then(Vec::pop).expect("the deferred reply");
    reply.send("LATER\n").unwrap();
    drop(reply);
    let nexts = r.take_mail();
    assert!(matches!(nexts.as_slice(), [Next::Wait, Next::Read]), "{nexts:?}");
    assert!(matches!(r.readable(), Next::Wait));
    assert!(matches!(r.flush(), Next::Wait));
    assert_eq!(r.written(), b"hi\nLATER\nB\nC\n", "replies in request order");
}

#[test]
fn a_handler_close_and_a_drain_before_open_decide_their_own_reasons() {
    let mut r = Rig::new(vec![Script::Bytes(b"bye\nnot served\n"), Script::Eof]);
    assert!(
        matches!(r.c.close(CloseReason::Drained), Next::End(End::Now(CloseReason::Drained))),
        "no session yet"
    );
    let mut r2 = Rig::new(vec![Script::Bytes(b"bye\nnot served\n"), Script::Eof]);
    let cx = r2.cx();
    let _ = r2.c.open_session(&cx);
    r2.scratch = vec![0; 64];
    assert!(matches!(r2.readable(), Next::Wait));
    assert!(matches!(r2.flush(), Next::End(End::Lingered)));
    assert_eq!(r2.written(), b"hi\n");
    let (_, reason, _) = r2.c.end(End::Lingered);
    assert!(matches!(reason, CloseReason::Handler), "{reason}");
    // Cut short by a shutdown before it lingered: forced.
    let (session, reason, _) = r.c.end(End::Lingered);
    assert!(session.is_none() && matches!(reason, CloseReason::Forced), "{reason}");
}

#[test]
fn pipelined_deferred_replies_run_at_once_and_leave_in_request_order() {
    let mut r = Rig::with_max_deferred(vec![Script::Bytes(b"later\nlater\nnow\nlater\nlater\n")], 3);
    let cx = r.cx();
    let _ = r.c.open_session(&cx);
    r.scratch = vec![0; 64];
    assert!(matches!(r.readable(), Next::Wait));
    assert_eq!(r.c.hold(), Some(Hold::Deferred), "three in progress: the fourth waits");
    let mut replies = std::mem::take(r.c.session_mut().unwrap());
    assert_eq!(replies.len(), 3, "the direct answer between them did not wait");
    // They complete in reverse order.
    for (i, reply) in replies.drain(..).enumerate().rev() {
        reply.send(format!("R{i}\n")).unwrap();
    }
    let nexts = r.take_mail();
    assert!(nexts.iter().any(|n| matches!(n, Next::Read)), "{nexts:?}");
    assert!(matches!(r.readable(), Next::Wait));
    let last = std::mem::take(r.c.session_mut().unwrap());
    assert_eq!(last.len(), 1, "the frame that waited was served");
    drop(last);
    let _ = r.take_mail();
    assert!(matches!(r.flush(), Next::Wait));
    assert_eq!(r.written(), b"hi\nR0\nR1\nNOW\nR2\n", "request order, whatever the completion order");
    assert!(r.c.order.is_none(), "nothing in progress: no order kept");
}

/// What an idle connection costs, pinned so that growth fails here with
/// the reason: the server's idle memory per connection (at most 512 B of
/// RSS, the benchmark's idle row) is mostly the connection's slot in its
/// worker's table (this size and the slot's 4-byte version, padded to 8)
/// and the allocation of its shared part (this size, two reference
/// counts and the allocator's 8-byte header, in 16-byte classes: 120 B
/// takes 144 B, 128 B would take 160 B). Rare state stays behind one
/// pointer: a pause and timers (`Control`), a move's held mail, the order
/// of deferred replies, a preamble, an outbound link (its state behind one
/// pointer in every connection). Before growing either, take the bytes
/// from somewhere else, or measure the idle row.
#[test]
fn an_idle_connection_stays_small() {
    use std::mem::size_of;
    // mio keeps a selector id beside each socket in debug builds.
    let debug = if cfg!(debug_assertions) { 8 } else { 0 };
    let conn = size_of::<Connection<(), crate::transport::Transport>>();
    assert!(conn <= 248 + debug, "Connection grew to {conn} B");
    let shared = size_of::<ConnShared>();
    assert!(shared <= 120, "ConnShared grew to {shared} B: 128 B would cost 16 B more per connection");
    assert_eq!(size_of::<Control>(), 16, "a pause and timers belong behind Control's pointer");
}
