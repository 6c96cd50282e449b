//! A link's transitions, driven by hand as the worker would: the owner over
//! a scripted stream, the link over one end of a Unix socket pair whose
//! other end the test plays as the upstream. No poll, no worker.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::unix::net::UnixStream as StdUnix;
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
use crate::link::state::LinkState;
use crate::link::LinkEvent;
use crate::mailbox::{ConnKey, Mailbox};
use crate::stats::Counters;
use crate::stream::{Addr, Stream};

/// A relay that writes down what its link told it.
struct Relay;

impl Handler for Relay {
    type Session = Vec<String>;
    fn open(&self, _conn: &mut Conn<'_>) -> Vec<String> {
        Vec::new()
    }
    fn frame(&self, _: &mut Vec<String>, data: &[u8], conn: &mut Conn<'_>) -> Flow {
        let _ = conn.link().expect("linked").send(data);
        Flow::Continue
    }
    fn eof(&self, seen: &mut Vec<String>, conn: &mut Conn<'_>) {
        seen.push("peer eof".into());
        conn.link().expect("linked").shutdown_write();
    }
    fn link(&self, seen: &mut Vec<String>, event: LinkEvent<'_>, conn: &mut Conn<'_>) -> Flow {
        seen.push(match &event {
            LinkEvent::Connected { .. } => "connected".into(),
            LinkEvent::Frame(b) => format!("frame {}", String::from_utf8_lossy(b)),
            LinkEvent::Eof => "eof".into(),
            LinkEvent::Drained => "drained".into(),
            LinkEvent::Closed(reason) => format!("closed: {reason}"),
        });
        match event {
            LinkEvent::Frame(b) => conn.send(b),
            LinkEvent::Eof => conn.shutdown_write(),
            LinkEvent::Closed(_) => return Flow::Close,
            _ => {}
        }
        Flow::Continue
    }
}

struct Rig {
    c: Connection<Vec<String>, Scripted>,
    stats: Arc<Counters>,
    scratch: Vec<u8>,
    /// The upstream's end of the link.
    upstream: StdUnix,
    _rx: Receiver<crate::mailbox::Mail>,
    _poll: Poll,
}

impl Rig {
    /// An open owner over `reads`, linked to a socket pair's end (still
    /// connecting until the first `event`), with `connect_timeout`.
    fn new(reads: Vec<Script>, connect_timeout: Duration) -> Rig {
        let poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), Token(0)).unwrap());
        let (tx, rx) = crossbeam_channel::unbounded();
        let mailbox = Arc::new(Mailbox { tx, waker, pending: AtomicBool::new(false) });
        let stats = Arc::new(Counters::new(1));
        let rules = Arc::new(SendRules {
            max_outbound: 1 << 20,
            max_outbound_total: 1 << 30,
            policy: SlowConsumerPolicy::Disconnect,
            framing: Framing::Raw,
            max_deferred: 1,
            blocking: Arc::new(crate::pool::BlockingPool::new(1, 16)),
            stats: Arc::clone(&stats),
        });
        let peer = SocketAddr::from(([127, 0, 0, 1], 40000));
        let shared = ConnShared::new(9, ConnKey::default(), peer.into(), rules, mailbox);
        let load = Load::new(&stats);
        let script = Scripted { reads: reads.into(), ..Scripted::default() };
        let admission = Admission::new(&load);
        let c =
            Connection::new(script, Arc::new(shared), Framer::new(Framing::Raw), admission, Instant::now());
        let (ours, upstream) = StdUnix::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        upstream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let sock = Stream::Unix(mio::net::UnixStream::from_std(ours));
        let link = LinkState::new(
            sock,
            Addr::Unix("upstream".into()),
            Framing::Raw,
            connect_timeout,
            Ok(()),
            Instant::now(),
        );
        let mut rig = Rig { c, stats, scratch: vec![0; 64], upstream, _rx: rx, _poll: poll };
        let cx = rig.cx();
        assert!(matches!(rig.c.open_session(&cx), Next::Wait));
        rig.c.link = Some(Box::new(link));
        rig
    }

    fn cx(&self) -> Cx<'static, Relay> {
        let stats: &'static Counters = Box::leak(Box::new(Arc::clone(&self.stats)));
        Cx {
            handler: &Relay,
            stats,
            counters: &stats.workers[0],
            high_water: 1 << 10,
            linger: Duration::from_secs(1),
            draining: false,
            now: Instant::now(),
        }
    }

    /// An event of the link's socket.
    fn link_event(&mut self, read: LinkRead) -> Next {
        let cx = self.cx();
        self.c.link_step(&cx, &mut self.scratch, true, read)
    }

    /// The worker's flush: the owner, then its link.
    fn flush(&mut self) -> (Next, Next) {
        let cx = self.cx();
        let owner = self.c.flush(&cx, &mut self.scratch);
        (owner, self.c.link_step(&cx, &mut self.scratch, false, LinkRead::No))
    }

    fn readable(&mut self) -> Next {
        let cx = self.cx();
        self.c.readable(&cx, &mut self.scratch, true)
    }

    fn seen(&mut self) -> Vec<String> {
        std::mem::take(self.c.session_mut().unwrap())
    }
}

#[test]
fn the_peers_eof_half_closes_the_link_and_the_upstreams_late_reply_and_end_close_the_owner() {
    let mut r = Rig::new(vec![Script::Bytes(b"request"), Script::Eof, Script::Eof], Duration::from_secs(5));
    // Bytes before the link is connected wait in its queue.
    assert!(matches!(r.readable(), Next::Wait));
    assert_eq!(r.c.writing(), Writing::Open, "linked: the peer's EOF does not close the owner");
    assert!(!r.c.takes_frames(), "and the owner reads no more");
    assert_eq!(r.c.link.as_ref().unwrap().queued(), 7);
    assert!(matches!(r.link_event(LinkRead::No), Next::Wait));
    assert_eq!(r.seen(), ["peer eof", "connected"]);
    let _ = r.flush();
    let mut got = Vec::new();
    r.upstream.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"request", "written, then the link's write side shut");
    // The upstream answers late, then ends.
    r.upstream.write_all(b"late").unwrap();
    r.upstream.shutdown(Shutdown::Write).unwrap();
    assert!(matches!(r.link_event(LinkRead::ToEnd), Next::Wait));
    assert_eq!(r.seen(), ["frame late", "eof", "closed: closed by peer"]);
    assert!(r.c.link.is_none(), "both directions done: the link ended");
    assert_eq!(r.c.writing(), Writing::Flushing, "the relay closes the owner");
    assert!(matches!(r.flush().0, Next::End(End::Lingered)));
    assert_eq!(r.c.sock.written, b"late");
    assert!(r.c.sock.write_shut);
    assert_eq!(r.stats.workers[0].links_opened.load(Ordering::Relaxed), 1);
    assert_eq!(r.stats.workers[0].link_bytes_in.load(Ordering::Relaxed), 4);
    assert_eq!(r.stats.workers[0].link_bytes_out.load(Ordering::Relaxed), 7);
}

#[test]
fn the_links_queue_over_the_high_water_mark_holds_the_owner_until_it_drains() {
    static BIG: [u8; 1500] = [b'x'; 1500];
    let mut r = Rig::new(vec![Script::Bytes(&BIG), Script::Bytes(b"after")], Duration::from_secs(5));
    r.scratch = vec![0; 2048];
    assert!(matches!(r.readable(), Next::Wait));
    assert_eq!(r.c.hold(), Some(Hold::Link), "1500 bytes queued for the link, over the 1 KiB mark");
    assert!(!r.c.takes_frames());
    // Connected: the queue is written, below half the mark: reading resumes.
    assert!(matches!(r.link_event(LinkRead::No), Next::Read));
    assert_eq!(r.c.hold(), None);
    assert_eq!(r.seen(), ["connected", "drained"]);
    assert!(matches!(r.readable(), Next::Wait));
    assert_eq!(r.c.link.as_ref().unwrap().queued(), 5, "what came after waits for the next flush");
}

#[test]
fn a_connect_past_its_timeout_ends_the_link_counted_and_the_relay_closes_the_owner() {
    let mut r = Rig::new(vec![], Duration::ZERO);
    let mut wakes = Vec::new();
    r.c.schedule(|at, wake| wakes.push((at, wake)));
    let [(at, Wake::Link)] = wakes[..] else { panic!("one link wake-up: {wakes:?}") };
    let cx = r.cx();
    assert!(matches!(r.c.wake(&cx, at, Wake::Link), Next::Wait));
    assert_eq!(r.seen(), ["closed: connect timed out"]);
    assert!(r.c.link.is_none());
    assert_eq!(r.c.writing(), Writing::Flushing);
    assert_eq!(r.stats.workers[0].link_connect_failures.load(Ordering::Relaxed), 1);
    assert_eq!(r.stats.workers[0].links_opened.load(Ordering::Relaxed), 0);
}

#[test]
fn the_owners_close_flushes_and_shuts_its_link_before_the_owner_lingers() {
    let mut r = Rig::new(vec![Script::Bytes(b"last words")], Duration::from_secs(5));
    assert!(matches!(r.link_event(LinkRead::No), Next::Wait));
    assert!(matches!(r.readable(), Next::Wait));
    let _ = r.c.close(CloseReason::Drained);
    let (owner, _) = r.flush();
    assert!(matches!(owner, Next::Wait), "the owner waits for its link");
    assert!(r.c.link.as_ref().unwrap().settled(), "the link is written and shut");
    let mut got = Vec::new();
    r.upstream.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"last words");
    assert!(matches!(r.flush().0, Next::Wait), "now the owner lingers");
    assert!(r.c.sock.write_shut);
}
