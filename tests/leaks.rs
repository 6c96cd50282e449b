//! No leak: after tens of thousands of connections the server's
//! descriptors and threads are back to where they started.
//!
//! One test in its own binary, so no other test's sockets or threads are
//! counted.

mod util;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use switchboard::Server;
use switchboard_handlers::Echo;
use util::proc::{open_fds, threads};
use util::*;

#[test]
fn twenty_thousand_connections_leave_no_descriptor_or_thread_behind() {
    let server = start(Server::builder().workers(2), Echo);
    let addr = server.local_addr();
    // Warm up (lazy statics, the logger, thread-locals), then take the counts.
    let mut warm = connect(addr);
    assert_eq!(round_trip(&mut warm, b"warm"), b"warm");
    drop(warm);
    wait_until("warm-up connection closed", || server.stats().open == 0);
    let (fds0, threads0) = (open_fds(), threads());

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
    wait_until("every connection closed", || server.stats().open == 0);
    assert_eq!(server.stats().accepted, total + 1);

    // Closing is asynchronous (a closing connection lingers to read what the
    // peer still sends): poll for the counts to come back.
    let deadline = std::time::Instant::now() + TIMEOUT;
    let mut now = (open_fds(), threads());
    while (now.0 > fds0 || now.1 > threads0) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        now = (open_fds(), threads());
    }
    assert!(
        now.0 <= fds0 && now.1 <= threads0,
        "descriptors {} (started with {fds0}), threads {} (started with {threads0})",
        now.0,
        now.1
    );
    // Still serving.
    let mut after = TcpStream::connect(addr).unwrap();
    after.set_read_timeout(Some(TIMEOUT)).unwrap();
    assert_eq!(round_trip(&mut after, b"after"), b"after");
}
