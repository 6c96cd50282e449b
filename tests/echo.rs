//! The echo handler on the core: many clients, large binary payloads,
//! handler panics.

use std::io::{Read, Write};
use std::net::TcpStream;

use switchboard::{handler_fn, Flow, Framing, Server};
use switchboard_handlers::Echo;
use switchboard_test_support::child::ChildServer;
use switchboard_test_support::*;

#[test]
fn two_thousand_concurrent_clients_on_two_workers() {
    let limit = raise_fd_limit();
    let clients = 2_000;
    assert!(limit >= clients as u64 + 100, "descriptor limit {limit} too low for this test");
    // In a process of its own, so its threads can be counted.
    let server = ChildServer::start(&["--handler", "echo", "--workers", "2"]);
    let addr = server.local_addr();
    let threads_idle = server.pid().threads();
    // Every client connected at once, then every one sends, then every one reads.
    let mut socks: Vec<TcpStream> = (0..clients).map(|_| connect(addr)).collect();
    wait_stats(&server, "all clients are open on the server", |s| {
        s.accepted == clients as u64 && s.open == clients
    });
    for (i, s) in socks.iter_mut().enumerate() {
        s.write_all(format!("hello from client {i}\n").as_bytes()).unwrap();
    }
    for (i, s) in socks.iter_mut().enumerate() {
        let want = format!("hello from client {i}\n");
        assert_eq!(read_exact(s, want.len()), want.as_bytes(), "client {i}");
    }
    let stats = server.stats();
    assert_eq!((stats.accepted, stats.rejected), (clients as u64, 0), "{stats}");
    // No thread per connection: as many threads as before the clients came.
    assert_eq!(server.pid().threads(), threads_idle, "threads with {clients} connections open and idle");
    drop(socks);
    wait_stats(&server, "all connections closed", |s| s.closed == clients as u64 && s.open == 0);
    assert_eq!(server.stop(), "exited drained=0 forced=0");
}

#[test]
fn one_mebibyte_of_random_bytes_echoed_intact() {
    let server = start(Server::builder().workers(2), Echo);
    let data = random_bytes(1 << 20, 7);
    let mut s = connect(server.local_addr());
    let mut writer = s.try_clone().unwrap();
    let sent = data.clone();
    // Write and read at once: echo replies as it reads, so a writer that
    // does not read would stall on full buffers.
    let w = std::thread::spawn(move || {
        writer.write_all(&sent).unwrap();
        writer.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    w.join().unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got == data, "echoed bytes differ");
    let n = data.len() as u64;
    wait_stats(&server, "every byte counted both ways", |s| s.bytes_in == n && s.bytes_out == n);
}

#[test]
fn every_byte_value_and_tiny_writes() {
    let server = start(Server::builder().workers(1), Echo);
    let mut s = connect(server.local_addr());
    let all: Vec<u8> = (0..=255u8).collect();
    assert_eq!(round_trip(&mut s, &all), all);
    for b in [b"\0".as_slice(), b"\r", b"\n", b"x"] {
        assert_eq!(round_trip(&mut s, b), b);
    }
}

#[test]
fn a_panicking_handler_closes_only_its_connection() {
    let handler = handler_fn(Framing::lines(64), |line, conn| {
        if line == b"boom" {
            panic!("handler bug on purpose");
        }
        conn.send(line);
        conn.send(b"\n");
        Flow::Continue
    });
    let server = start(Server::builder().workers(1), handler);
    let mut good = connect(server.local_addr());
    let mut bad = connect(server.local_addr());
    assert_eq!(round_trip(&mut good, b"one\n"), b"one\n");
    bad.write_all(b"boom\n").unwrap();
    assert!(matches!(read_end(&mut bad), End::Eof | End::Reset));
    assert_eq!(round_trip(&mut good, b"two\n"), b"two\n");
    let stats = wait_stats(&server, "the panicking connection is closed", |s| s.closed == 1);
    assert_eq!((stats.handler_panics, stats.open), (1, 1), "{stats}");
}
