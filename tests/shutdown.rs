//! Graceful shutdown: replies delivered, no resets, the report, and a
//! second signal that forces.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::{mpsc, Arc, Barrier};
use std::time::Duration;

use switchboard::{Conn, Flow, Framing, Handler, Server};
use switchboard_handlers::Echo;
use switchboard_test_support::*;

/// Echoes lines; says goodbye when the server drains.
struct Lines;

impl Handler for Lines {
    type Session = ();
    fn framing(&self) -> Framing {
        Framing::lines(1024)
    }
    fn open(&self, _: &mut Conn<'_>) {}
    fn frame(&self, _: &mut (), line: &[u8], conn: &mut Conn<'_>) -> Flow {
        conn.send(line);
        conn.send(b"\n");
        Flow::Continue
    }
    fn drain(&self, _: &mut (), conn: &mut Conn<'_>) -> Flow {
        conn.send(b"* draining\n");
        Flow::Continue
    }
}

#[test]
fn shutdown_under_load_delivers_every_reply_without_reset() {
    let clients = 64;
    let messages = 400;
    let server = start(
        Server::builder().workers(2).grace(Duration::from_secs(15)).quiet_period(Duration::from_millis(300)),
        Lines,
    );
    let addr = server.local_addr();
    let halfway = Arc::new(Barrier::new(clients + 1));
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let halfway = Arc::clone(&halfway);
            std::thread::spawn(move || {
                let s = connect(addr);
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut w = s;
                let mut drained_notice = 0;
                for i in 0..messages {
                    if i == messages / 2 {
                        halfway.wait();
                    }
                    // Pipelined: two lines out, then their two replies.
                    if i % 2 == 0 {
                        let msg = format!("c{c} m{i}\nc{c} m{}\n", i + 1);
                        w.write_all(msg.as_bytes()).unwrap();
                    }
                    let mut line = String::new();
                    r.read_line(&mut line).unwrap();
                    if line == "* draining\n" {
                        drained_notice += 1;
                        line.clear();
                        r.read_line(&mut line).unwrap();
                    }
                    assert_eq!(line, format!("c{c} m{i}\n"), "client {c} reply {i}");
                }
                // Every reply came; now the server closes once we are quiet:
                // a clean EOF (maybe after the notice), never a reset.
                let mut rest = Vec::new();
                let end = loop {
                    let mut buf = [0u8; 256];
                    match std::io::Read::read(r.get_mut(), &mut buf) {
                        Ok(0) => break End::Eof,
                        Ok(n) => rest.extend_from_slice(&buf[..n]),
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break End::Reset,
                        Err(e) => break End::Other(e.kind()),
                    }
                };
                let leftover =
                    String::from_utf8_lossy(r.buffer()).to_string() + &String::from_utf8_lossy(&rest);
                drained_notice += leftover.matches("* draining\n").count();
                assert_eq!(end, End::Eof, "client {c}");
                assert_eq!(drained_notice, 1, "client {c} gets the drain notice once");
            })
        })
        .collect();
    halfway.wait();
    let handle = server.shutdown_handle();
    handle.drain();
    // New connections are refused once the listener is closed (a probe
    // that got in before is accepted and drained like the others).
    wait_until("the listener is closed", || TcpStream::connect(addr).is_err());
    for t in threads {
        t.join().expect("client thread");
    }
    let accepted = server.stats().accepted as usize;
    assert!(accepted >= clients, "{}", server.stats());
    let report = server.wait();
    assert_eq!((report.drained, report.forced), (accepted, 0), "{report}");
}

#[test]
fn half_closed_client_gets_its_replies_before_the_close() {
    let server = start(Server::builder().workers(1), Lines);
    let mut s = connect(server.local_addr());
    let mut expected = String::new();
    for i in 0..1000 {
        s.write_all(format!("line {i}\n").as_bytes()).unwrap();
        expected.push_str(&format!("line {i}\n"));
    }
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut got = String::new();
    std::io::Read::read_to_string(&mut s, &mut got).unwrap();
    assert_eq!(got, expected);
}

#[test]
fn grace_deadline_forces_busy_connections() {
    let server = start(
        Server::builder().workers(1).grace(Duration::from_millis(300)).quiet_period(Duration::from_secs(30)),
        Echo,
    );
    let mut s = connect(server.local_addr());
    assert_eq!(round_trip(&mut s, b"x"), b"x");
    let report = server.shutdown();
    assert_eq!(report.forced, 1);
    assert_eq!(report.drained, 0);
    assert!(report.elapsed >= Duration::from_millis(300));
    assert!(matches!(read_end(&mut s), End::Eof | End::Reset));
}

#[test]
fn second_shutdown_forces_at_once() {
    // Grace and quiet period far beyond the test's patience: only the second
    // signal can end this server in time.
    let server = start(
        Server::builder().workers(2).grace(Duration::from_secs(600)).quiet_period(Duration::from_secs(600)),
        Echo,
    );
    let mut s = connect(server.local_addr());
    assert_eq!(round_trip(&mut s, b"x"), b"x");
    let handle = server.shutdown_handle();
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || tx.send(server.wait()).unwrap());
    handle.drain();
    assert!(handle.is_shutting_down());
    // Still draining: the connection is served.
    assert_eq!(round_trip(&mut s, b"y"), b"y");
    assert!(rx.try_recv().is_err());
    handle.force();
    let report = rx.recv_timeout(TIMEOUT).expect("the second shutdown ends the server");
    waiter.join().unwrap();
    assert_eq!(report.forced, 1);
}

/// Echo that holds a token: once every worker has exited, only the test's
/// copy is left.
struct Held(#[allow(dead_code)] Arc<()>);

impl Handler for Held {
    type Session = ();
    fn open(&self, _: &mut Conn<'_>) {}
    fn frame(&self, _: &mut (), data: &[u8], conn: &mut Conn<'_>) -> Flow {
        conn.send(data);
        Flow::Continue
    }
}

#[test]
fn dropping_a_server_joins_its_threads() {
    let token = Arc::new(());
    let server = start(Server::builder().workers(3), Held(Arc::clone(&token)));
    let mut s = connect(server.local_addr());
    assert_eq!(round_trip(&mut s, b"x"), b"x");
    assert!(Arc::strong_count(&token) > 1);
    drop(server);
    // Drop returned: the workers have exited and released the handler.
    assert_eq!(Arc::strong_count(&token), 1);
    assert!(matches!(read_end(&mut s), End::Eof | End::Reset));
}
