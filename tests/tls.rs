//! TLS through the library API: `ServerBuilder::tls` with a configuration
//! from `tls_config_from_pem`, served in process; a stalled handshake is
//! counted as a timeout, a plain client as a close, and neither reaches the
//! handler; records cut anywhere by TCP are reassembled.

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

/// The server stops reading a TLS socket at a short read (the kernel's
/// queue was empty) and waits for the next readiness edge. Ciphertext sent
/// in pieces of 1 to 97 bytes, so most reads end inside a record, must
/// still come back whole and in order.
#[test]
fn records_cut_anywhere_by_tcp_are_reassembled() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};

    let dir = temp_dir("core-tls-pieces");
    let pki = TestPki::create(dir.path());
    let config = tls_config_from_pem(&pki.cert, &pki.key).expect("the test PKI loads");
    let server = start(ServerBuilder::default().workers(1).tls(config), Counting::default());

    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(&pki.ca).expect("the CA loads")).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = rustls::ClientConnection::new(Arc::new(client), name).unwrap();
    let mut sock = connect(server.local_addr());
    sock.set_nodelay(true).unwrap();
    while tls.is_handshaking() {
        tls.complete_io(&mut sock).expect("the handshake completes");
    }

    // 64 KiB of plaintext, encrypted up front, then sent in small pieces
    // by a thread while this one reads the echo.
    let payload: Vec<u8> = (0..64 * 1024u32).map(|i| (i % 251) as u8).collect();
    tls.writer().write_all(&payload).unwrap();
    let mut wire = Vec::new();
    while tls.wants_write() {
        tls.write_tls(&mut wire).unwrap();
    }
    let mut out = sock.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let (mut at, mut piece) = (0, 1);
        while at < wire.len() {
            let end = (at + piece).min(wire.len());
            out.write_all(&wire[at..end]).unwrap();
            at = end;
            piece = piece % 97 + 1;
        }
    });
    let mut echoed = Vec::with_capacity(payload.len());
    let mut buf = [0u8; 8192];
    while echoed.len() < payload.len() {
        if tls.read_tls(&mut sock).expect("the echo arrives") == 0 {
            panic!("the server closed after {} of {} bytes", echoed.len(), payload.len());
        }
        tls.process_new_packets().expect("valid records");
        loop {
            match tls.reader().read(&mut buf) {
                Ok(n) if n > 0 => echoed.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
    }
    sender.join().unwrap();
    assert!(echoed == payload, "the echo differs from what was sent");
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
