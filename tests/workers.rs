//! Adaptive workers: light loads stay on one event loop; a saturated worker
//! moves connections to an idle one, and nothing sent to a moving
//! connection is lost or reordered.

use std::io::{BufRead, BufReader, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use switchboard::{Conn, ConnHandle, Flow, Framing, Handler, Server};
use switchboard_test_support::*;

/// Echoes lines after burning `spin` of CPU; records which worker thread
/// served each connection; keeps every connection's handle.
struct Burner {
    spin: Duration,
    handles: Shared<ConnHandle>,
    threads: Shared<(u64, String)>,
}

impl Handler for Burner {
    type Session = ();
    fn framing(&self) -> Framing {
        Framing::lines(256)
    }
    fn open(&self, conn: &mut Conn<'_>) {
        self.handles.lock().push(conn.handle());
    }
    fn frame(&self, _: &mut (), line: &[u8], conn: &mut Conn<'_>) -> Flow {
        let until = Instant::now() + self.spin;
        while Instant::now() < until {
            std::hint::spin_loop();
        }
        let name = std::thread::current().name().unwrap_or("").to_string();
        self.threads.lock().push((conn.id(), name));
        conn.send(line);
        conn.send(b"\n");
        Flow::Continue
    }
}

type Shared<T> = Arc<Mutex<Vec<T>>>;

fn burner(spin: Duration) -> (Burner, Shared<ConnHandle>, Shared<(u64, String)>) {
    let handles: Arc<Mutex<Vec<ConnHandle>>> = Arc::default();
    let threads: Arc<Mutex<Vec<(u64, String)>>> = Arc::default();
    (Burner { spin, handles: Arc::clone(&handles), threads: Arc::clone(&threads) }, handles, threads)
}

#[test]
fn a_light_load_stays_on_the_first_worker() {
    let (handler, _, threads) = burner(Duration::ZERO);
    let server = start(Server::builder().workers(4), handler);
    let mut clients: Vec<_> = (0..16).map(|_| connect(server.local_addr())).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(round_trip(c, format!("{i}\n").as_bytes()), format!("{i}\n").as_bytes());
    }
    let threads = threads.lock();
    assert_eq!(threads.len(), 16);
    assert!(threads.iter().all(|(_, t)| t == "switchboard-worker-0"), "{threads:?}");
}

#[test]
fn a_saturated_worker_moves_connections_and_no_message_is_lost_or_reordered() {
    let (handler, handles, threads) = burner(Duration::from_millis(2));
    let builder = Server::builder().workers(2).activate_above(500).idle_to_activate(0);
    let server = start(builder, handler);
    const CLIENTS: usize = 8;
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        clients.push(connect(server.local_addr()));
        wait_until("the connection is open", || handles.lock().len() == i + 1);
    }
    let handles = handles.lock().clone();
    let stop = Arc::new(AtomicBool::new(false));
    // Another thread numbers messages to every connection all along.
    let pusher = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Acquire) && n < 200_000 {
                for h in &handles {
                    h.send(format!("#{n}\n")).expect("within the budget");
                }
                n += 1;
                std::thread::sleep(Duration::from_micros(500));
            }
            n
        })
    };
    // Each client keeps one frame in flight; checks its replies and the
    // numbered messages arrive in order.
    let readers: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(c, s)| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut w = s.try_clone().unwrap();
                let mut r = BufReader::new(s);
                let (mut next_seq, mut pings) = (0u64, 0u64);
                w.write_all(format!("ping {c} 0\n").as_bytes()).unwrap();
                let mut line = String::new();
                while !stop.load(Ordering::Acquire) {
                    line.clear();
                    r.read_line(&mut line).expect("a line");
                    if let Some(n) = line.trim_end().strip_prefix('#') {
                        assert_eq!(
                            n.parse::<u64>().unwrap(),
                            next_seq,
                            "client {c}: numbered messages in order"
                        );
                        next_seq += 1;
                    } else {
                        assert_eq!(line, format!("ping {c} {pings}\n"), "client {c}: replies in order");
                        pings += 1;
                        w.write_all(format!("ping {c} {pings}\n").as_bytes()).unwrap();
                    }
                }
                (next_seq, pings)
            })
        })
        .collect();
    wait_until("some connection is served by the second worker", || {
        threads.lock().iter().any(|(_, t)| t == "switchboard-worker-1")
    });
    // Let traffic go on across the move before checking.
    let moved_at = threads.lock().len();
    wait_until("more frames after the move", || threads.lock().len() >= moved_at + 200);
    stop.store(true, Ordering::Release);
    let sent = pusher.join().unwrap();
    for r in readers {
        let (seq, pings) = r.join().expect("the reader saw everything in order");
        assert!(seq > 0 && seq <= sent && pings > 0, "seq {seq} of {sent}, {pings} pings");
    }
    let moved: std::collections::HashSet<u64> =
        threads.lock().iter().filter(|(_, t)| t == "switchboard-worker-1").map(|(id, _)| *id).collect();
    assert!(!moved.is_empty() && moved.len() < CLIENTS, "moved {moved:?} of {CLIENTS}");
    assert_eq!(server.stats().slow_consumer_disconnects, 0);
    // The queued bytes moved with their connections: once every client is
    // gone (the reader threads dropped their sockets) the count is exactly
    // zero, neither leaked on one worker nor wrapped below zero on another.
    wait_until("every connection is closed", || server.stats().open == 0);
    assert_eq!(server.stats().queued_bytes, 0);
}
