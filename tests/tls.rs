//! TLS through the library API: `ServerBuilder::tls` with a configuration
//! from `tls_config_from_pem`, served in process; a stalled handshake is
//! counted as a timeout, a plain client as a close, and neither reaches the
//! handler.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchboard::{tls_config_from_pem, Conn, Flow, Framing, Handler, ServerBuilder, TlsConfigError};
use switchboard_test_support::pki::TestPki;
use switchboard_test_support::{connect, start, temp_dir, wait_stats, TIMEOUT};

#[derive(Default, Clone)]
struct Counting {
    opened: Arc<AtomicUsize>,
}

impl Handler for Counting {
    type Session = ();
    fn framing(&self) -> Framing {
        Framing::Raw
    }
    fn open(&self, _: &mut Conn<'_>) {
        self.opened.fetch_add(1, Ordering::SeqCst);
    }
    fn frame(&self, _: &mut (), data: &[u8], conn: &mut Conn<'_>) -> Flow {
        conn.send(data);
        Flow::Continue
    }
}

#[test]
fn failed_handshakes_are_counted_and_never_reach_the_handler() {
    let dir = temp_dir("core-tls");
    let pki = TestPki::create(dir.path());
    let config = tls_config_from_pem(&pki.cert, &pki.key).expect("the test PKI loads");
    let handler = Counting::default();
    let opened = Arc::clone(&handler.opened);
    let timeout = Duration::from_millis(300);
    let server = start(ServerBuilder::default().workers(1).tls(config).handshake_timeout(timeout), handler);

    // Plain text: rustls refuses it at once; the peer gets an alert.
    let mut plain = connect(server.local_addr());
    plain.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert_eq!(got.first(), Some(&21), "an alert record: {got:?}");
    wait_stats(&server, "the plain client closed", |s| s.closed == 1);
    assert_eq!(server.stats().timed_out, 0);

    // A stalled handshake: closed at the handshake timeout, counted as one.
    let mut stalled = connect(server.local_addr());
    let started = Instant::now();
    stalled.write_all(&[0x16, 0x03, 0x01]).unwrap();
    let _ = stalled.read_to_end(&mut got);
    assert!(started.elapsed() >= timeout && started.elapsed() < TIMEOUT, "{:?}", started.elapsed());
    let stats = wait_stats(&server, "the stalled handshake closed", |s| s.closed == 2);
    assert_eq!(stats.timed_out, 1);
    assert_eq!(stats.open, 0);
    assert_eq!(opened.load(Ordering::SeqCst), 0, "the handler never opened");
}

#[test]
fn a_key_that_does_not_match_the_certificate_is_refused() {
    let dir = temp_dir("core-tls-mismatch");
    let pki = TestPki::create(dir.path());
    let other = temp_dir("core-tls-other");
    let stranger = TestPki::create(other.path());
    match tls_config_from_pem(&pki.cert, &stranger.key) {
        Err(TlsConfigError::Rustls(e)) => assert!(e.to_string().contains("key"), "{e}"),
        other => panic!("expected the pair refused, got {other:?}"),
    }
}
