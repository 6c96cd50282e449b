//! The core's blocking pool through a server: `Conn::spawn_blocking`'s
//! busy answer when its queue is full, a drain that waits for the jobs
//! still queued, and the pool's threads joined when the server stops.

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam_channel::{unbounded, Receiver, Sender};
use switchboard::{handler_fn, Flow, Framing, Phase, Server, SpawnError};
use switchboard_test_support::*;

/// Set when the pool thread that ran a job ends (its thread-locals are
/// dropped before a join of it returns).
struct ThreadEnd(Arc<AtomicBool>);

impl Drop for ThreadEnd {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

thread_local! {
    static END: std::cell::RefCell<Option<ThreadEnd>> = const { std::cell::RefCell::new(None) };
}

/// A server whose jobs wait for the gate, then answer `done LINE`; a full
/// queue is answered `busy LINE`. `spawned` counts the jobs taken; `ended`
/// is set when a pool thread that ran a job ends.
struct Gated {
    server: Server,
    gate: Sender<()>,
    started: Receiver<()>,
    spawned: Arc<AtomicUsize>,
    ended: Arc<AtomicBool>,
}

fn gated(threads: usize, queue: usize) -> Gated {
    let (gate, gate_rx) = unbounded::<()>();
    let (started_tx, started) = unbounded::<()>();
    let spawned = Arc::new(AtomicUsize::new(0));
    let ended = Arc::new(AtomicBool::new(false));
    let (count, flag) = (Arc::clone(&spawned), Arc::clone(&ended));
    let handler = handler_fn(Framing::lines(64), move |line, conn| {
        let (line, gate, started, flag) =
            (line.to_vec(), gate_rx.clone(), started_tx.clone(), Arc::clone(&flag));
        let reply = line.clone();
        match conn.spawn_blocking(move |deferred| {
            END.with(|e| {
                e.borrow_mut().get_or_insert_with(|| ThreadEnd(flag));
            });
            started.send(()).unwrap();
            let _ = gate.recv();
            let _ = deferred.send_frame(&[b"done ", &reply[..]].concat());
        }) {
            Ok(()) => {
                count.fetch_add(1, Ordering::AcqRel);
            }
            Err(SpawnError::Busy { limit }) => {
                conn.send_frame(
                    format!("busy {} ({limit} waiting)", String::from_utf8_lossy(&line)).as_bytes(),
                )
                .unwrap();
            }
            Err(e) => panic!("{e}"),
        }
        Flow::Continue
    });
    let server = start(Server::builder().blocking_threads(threads).blocking_queue(queue), handler);
    Gated { server, gate, started, spawned, ended }
}

fn client(addr: std::net::SocketAddr) -> (TcpStream, BufReader<TcpStream>) {
    let s = connect(addr);
    let r = BufReader::new(s.try_clone().unwrap());
    (s, r)
}

/// Two clients: `a`'s job holds the pool's only thread, `b`'s waits in
/// its queue. Returns their readers.
fn a_running_b_queued(g: &Gated) -> (BufReader<TcpStream>, BufReader<TcpStream>) {
    let addr = g.server.local_addr();
    let (mut a, ar) = client(addr);
    let (mut b, br) = client(addr);
    a.write_all(b"a\n").unwrap();
    g.started.recv_timeout(TIMEOUT).expect("a's job started");
    b.write_all(b"b\n").unwrap();
    wait_until("b's job is queued", || g.spawned.load(Ordering::Acquire) == 2);
    (ar, br)
}

#[test]
fn a_full_queue_is_the_handlers_busy_answer_and_the_others_are_served() {
    // One thread, a queue of one: a third job is refused.
    let g = gated(1, 1);
    let (mut ar, mut br) = a_running_b_queued(&g);
    let (mut c, mut cr) = client(g.server.local_addr());
    c.write_all(b"c\n").unwrap();
    assert_eq!(read_line(&mut cr), "busy c (1 waiting)\n");
    g.gate.send(()).unwrap();
    assert_eq!(read_line(&mut ar), "done a\n");
    g.gate.send(()).unwrap();
    assert_eq!(read_line(&mut br), "done b\n");
    // The queue has room again.
    c.write_all(b"c\n").unwrap();
    g.gate.send(()).unwrap();
    assert_eq!(read_line(&mut cr), "done c\n");
    assert!(!g.ended.load(Ordering::Acquire), "the pool thread lives while the server runs");
    let report = g.server.shutdown();
    assert_eq!((report.drained, report.forced), (3, 0), "{report}");
    assert!(g.ended.load(Ordering::Acquire), "the pool's thread was joined when the server stopped");
}

#[test]
fn a_drain_waits_for_the_job_running_and_the_job_still_queued() {
    let g = gated(1, 8);
    let (mut ar, mut br) = a_running_b_queued(&g);
    let handle = g.server.shutdown_handle();
    handle.drain();
    assert_eq!(handle.phase(), Phase::Draining);
    let waiter = std::thread::spawn(move || g.server.wait());
    // Both promised replies come, then a clean close.
    g.gate.send(()).unwrap();
    assert_eq!(read_line(&mut ar), "done a\n");
    g.gate.send(()).unwrap();
    assert_eq!(read_line(&mut br), "done b\n");
    assert_eq!(read_end(&mut ar), End::Eof);
    assert_eq!(read_end(&mut br), End::Eof);
    let report = waiter.join().unwrap();
    assert_eq!((report.drained, report.forced), (2, 0), "{report}");
    assert!(g.ended.load(Ordering::Acquire), "the pool's thread was joined");
}
