//! `ServerBuilder::accept_unterminated`: a line protocol answers a client
//! that sends a request with no newline, whether it then waits (the quiet
//! period) or closes its side (the last line at EOF); without the option
//! such a line is dropped, as before.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use switchboard::{handler_fn, Flow, Framing, Server, StartError};
use switchboard_test_support::*;

fn got() -> impl switchboard::Handler {
    handler_fn(Framing::lines(64), |line, conn| {
        conn.send(b"got ");
        conn.send(line);
        conn.send(b"\n");
        Flow::Continue
    })
}

#[test]
fn a_partial_line_quiet_for_the_wait_is_answered_while_the_client_keeps_its_side_open() {
    let wait = Duration::from_millis(200);
    let server = start(Server::builder().workers(1).accept_unterminated(wait), got());
    let mut s = connect(server.local_addr());
    // A whole line first: answered at once, as always.
    s.write_all(b"one\r\n").unwrap();
    assert_eq!(read_exact(&mut s, 8), b"got one\n");
    let sent = Instant::now();
    s.write_all(b"get a.txt\r").unwrap();
    assert_eq!(read_exact(&mut s, 14), b"got get a.txt\n", "the CR at its end dropped");
    let after = sent.elapsed();
    assert!(after >= wait, "the partial line was taken after {after:?}, before the {wait:?} wait");
    // The connection goes on: the next line is a line of its own.
    s.write_all(b"two\n").unwrap();
    assert_eq!(read_exact(&mut s, 8), b"got two\n");
}

#[test]
fn the_last_line_without_its_ending_is_answered_at_eof_only_when_asked() {
    for (accept, want) in [(true, &b"got get a.txt\n"[..]), (false, &b""[..])] {
        let mut builder = Server::builder().workers(1);
        if accept {
            // Long enough that only the EOF can deliver the line.
            builder = builder.accept_unterminated(Duration::from_secs(20));
        }
        let server = start(builder, got());
        let mut s = connect(server.local_addr());
        s.write_all(b"get a.txt").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut all = Vec::new();
        s.read_to_end(&mut all).unwrap();
        assert_eq!(all, want, "accept_unterminated: {accept}");
    }
}

/// A line handler that asks for the last line at EOF itself.
struct EofLine;

impl switchboard::Handler for EofLine {
    type Session = ();

    fn framing(&self) -> Framing {
        Framing::lines(64)
    }

    fn last_line_at_eof(&self) -> bool {
        true
    }

    fn open(&self, _conn: &mut switchboard::Conn<'_>) {}

    fn frame(&self, _: &mut (), line: &[u8], conn: &mut switchboard::Conn<'_>) -> Flow {
        conn.send([b"got ", line, b"\n"].concat());
        Flow::Continue
    }

    fn eof(&self, _: &mut (), conn: &mut switchboard::Conn<'_>) {
        conn.send(b"eof\n");
    }
}

#[test]
fn a_handler_that_asks_for_the_last_line_at_eof_gets_it_without_the_option() {
    let server = start(Server::builder().workers(1), EofLine);
    let mut s = connect(server.local_addr());
    s.write_all(b"one\nget a.txt\r").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    assert_eq!(all, b"got one\ngot get a.txt\neof\n", "the last line, CR dropped, before eof");
}

#[test]
fn an_over_long_partial_line_is_a_frame_error_not_a_line() {
    let server = start(Server::builder().workers(1).accept_unterminated(Duration::from_secs(20)), got());
    let mut s = connect(server.local_addr());
    // 65 bytes: one over the maximum, with no newline yet, then EOF.
    s.write_all(&[b'x'; 65]).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    assert_eq!(all, b"", "the default frame_error closes without a reply");
}

#[test]
fn a_wait_not_shorter_than_the_frame_timeout_is_refused_at_start() {
    let builder = Server::builder()
        .workers(1)
        .frame_timeout(Duration::from_secs(1))
        .accept_unterminated(Duration::from_secs(1));
    match builder.start("127.0.0.1:0", got()) {
        Err(StartError::Config(msg)) => assert!(msg.contains("shorter than the frame timeout"), "{msg}"),
        other => panic!("expected a configuration error, got {:?}", other.map(|s| s.local_addr())),
    }
}
