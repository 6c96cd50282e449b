//! No leak: after tens of thousands of connections the server's
//! descriptors and threads are back to where they started. The server runs
//! in a process of its own (`switchboard-test-server`), measured through
//! `/proc/PID`.

use std::io::Write;
use std::time::Duration;

use switchboard_test_support::child::ChildServer;
use switchboard_test_support::*;

#[test]
fn twenty_thousand_connections_leave_no_descriptor_or_thread_behind() {
    let server = ChildServer::start(&["--handler", "echo", "--workers", "2"]);
    let addr = server.local_addr();
    let pid = server.pid();
    // Warm up (lazy statics, the logger, thread-locals), then take the counts.
    let mut warm = connect(addr);
    assert_eq!(round_trip(&mut warm, b"warm"), b"warm");
    drop(warm);
    wait_stats(&server, "the warm-up connection is closed", |s| {
        s.accepted == 1 && s.closed == 1 && s.open == 0
    });
    let (fds0, threads0) = (pid.open_fds(), pid.threads());

    let clients = 4;
    let per_client = 5_000;
    let workers: Vec<_> = (0..clients)
        .map(|c| {
            std::thread::spawn(move || {
                for i in 0..per_client {
                    let mut s = connect(addr);
                    let msg = format!("c{c} {i}\n");
                    assert_eq!(round_trip(&mut s, msg.as_bytes()), msg.as_bytes());
                    match i % 4 {
                        // A quarter reset (and leave no TIME_WAIT behind).
                        0 => {
                            let s = socket2::Socket::from(s);
                            s.set_linger(Some(Duration::ZERO)).unwrap();
                        }
                        // A quarter close right after a request the server
                        // is still answering.
                        1 => s.write_all(b"unread").unwrap(),
                        _ => {}
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("client thread");
    }
    let total = (clients * per_client) as u64;
    let stats = wait_stats(&server, "every connection is closed", |s| s.closed == total + 1 && s.open == 0);
    assert_eq!((stats.accepted, stats.rejected, stats.accept_errors), (total + 1, 0, 0), "{stats}");

    // A closed connection's socket is closed by its worker: wait for the
    // exact counts the server started with.
    let mut now = (0, 0);
    wait_until("the server's descriptors and threads are back where they started", || {
        now = (pid.open_fds(), pid.threads());
        now == (fds0, threads0)
    });
    assert_eq!(now, (fds0, threads0), "(descriptors, threads) now and at the start");
    // Still serving.
    let mut after = connect(addr);
    assert_eq!(round_trip(&mut after, b"after"), b"after");
    drop(after);
    wait_stats(&server, "the last connection is closed", |s| s.closed == total + 2 && s.open == 0);
    assert_eq!(server.stop(), "exited drained=0 forced=0");
}
