//! TLS through the library API: `ServerBuilder::tls` with a configuration
//! from `tls_config_from_pem`, served in process; a stalled handshake is
//! counted as a timeout, a plain client as a close, and neither reaches the
//! handler; records cut anywhere by TCP are reassembled; a client's
//! `TlsSocket` over a mio socket reads whole echoes at short reads and sees
//! the server's `close_notify` as EOF; past the handshake pool's backlog a
//! new handshake is refused and counted.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchboard::{
    tls_config_from_pem, Conn, Flow, Framing, Handler, Server, ServerBuilder, TlsConfigError, TlsSocket,
};
use switchboard_test_support::pki::TestPki;
use switchboard_test_support::{connect, start, temp_dir, wait_stats, TempDir, TIMEOUT};

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

/// An echo server over TLS from a fresh test PKI, and a client connection
/// (not yet connected) that trusts it.
fn echo_over_tls(tag: &str) -> (TempDir, Server, rustls::ClientConnection) {
    use rustls::pki_types::ServerName;

    let dir = temp_dir(tag);
    let pki = TestPki::create(dir.path());
    let config = tls_config_from_pem(&pki.cert, &pki.key).expect("the test PKI loads");
    let server = start(ServerBuilder::default().workers(1).tls(config), Counting::default());
    let name = ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(pki.client_config(), name).unwrap();
    (dir, server, conn)
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
    // Closed is counted as the close is decided, open once the connection
    // is dropped: wait for both.
    let stats =
        wait_stats(&server, "the stalled handshake closed and dropped", |s| s.closed == 2 && s.open == 0);
    assert_eq!(stats.timed_out, 1);
    assert_eq!(opened.load(Ordering::SeqCst), 0, "the handler never opened");
}

/// The server stops reading a TLS socket at a short read (the kernel's
/// queue was empty) and waits for the next readiness edge. Ciphertext sent
/// in pieces of 1 to 97 bytes, so most reads end inside a record, must
/// still come back whole and in order.
#[test]
fn records_cut_anywhere_by_tcp_are_reassembled() {
    let (_dir, server, mut tls) = echo_over_tls("core-tls-pieces");
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

/// The client side of `TlsSocket`, as the load generator drives it: one
/// edge-triggered poll, a read loop that stops at the first short read.
/// If a short read did not mean a drained socket, an echo would sit in
/// rustls unread with no new edge coming, and the loop would hit its
/// deadline. The client's `close_notify` ends the connection: the server
/// closes its side, which reads as EOF.
#[test]
fn a_client_tls_socket_reads_whole_echoes_at_short_reads_and_ends_cleanly() {
    use mio::{Events, Interest, Poll, Token};

    let (_dir, server, conn) = echo_over_tls("core-tls-client");
    let sock = mio::net::TcpStream::connect(server.local_addr()).unwrap();
    let mut tls = TlsSocket::new(conn, sock);
    let mut poll = Poll::new().unwrap();
    poll.registry().register(tls.sock_mut(), Token(0), Interest::READABLE | Interest::WRITABLE).unwrap();
    let mut events = Events::with_capacity(8);

    // Ten messages, each sent once the previous one's echo is back whole;
    // the last one is larger than a TLS record.
    let messages: Vec<Vec<u8>> =
        (1..=10u32).map(|i| (0..i * i * 200).map(|b| (b % 251) as u8).collect()).collect();
    let (mut next, mut echoed, mut closing) = (0, Vec::new(), false);
    let mut buf = vec![0u8; 4096];
    let deadline = Instant::now() + TIMEOUT;
    let eof = loop {
        assert!(Instant::now() < deadline, "stuck after {next} messages, {} bytes echoed", echoed.len());
        poll.poll(&mut events, Some(Duration::from_millis(100))).unwrap();
        match tls.flush() {
            Ok(()) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::NotConnected => {}
            Err(e) => panic!("flush failed: {e}"),
        }
        let mut eof = false;
        loop {
            match tls.read(&mut buf) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    echoed.extend_from_slice(&buf[..n]);
                    if n < buf.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotConnected => break,
                Err(e) => panic!("read failed: {e}"),
            }
        }
        if eof {
            break true;
        }
        if tls.conn().is_handshaking() {
            continue;
        }
        if next > 0 && echoed.len() > messages[next - 1].len() {
            panic!("more echoed than sent: {} bytes for {}", echoed.len(), messages[next - 1].len());
        }
        if next > 0 && echoed.len() < messages[next - 1].len() {
            continue;
        }
        if next > 0 {
            assert!(echoed == messages[next - 1], "echo {next} differs from what was sent");
            echoed.clear();
        }
        if next < messages.len() {
            let mut at = 0;
            while at < messages[next].len() {
                match tls.write(&messages[next][at..]) {
                    Ok(n) => at += n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        assert!(Instant::now() < deadline, "the server never took message {next}");
                        std::thread::yield_now();
                    }
                    Err(e) => panic!("write failed: {e}"),
                }
            }
            next += 1;
        } else if !closing {
            tls.conn_mut().send_close_notify();
            closing = true;
        }
    };
    assert!(eof && closing, "EOF before the client closed");
    assert_eq!(next, messages.len());
    wait_stats(&server, "the connection closed", |s| s.closed == 1 && s.open == 0);
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

/// A client configuration trusting `pki`'s CA, without resumption: each
/// connection pays the server's full handshake.
fn full_handshakes(pki: &TestPki) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(&pki.ca).expect("the CA loads")).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// Bursts of ClientHellos, each burst all on the wire before the server
/// reads any, against a handshake pool of one thread and a queue of one
/// step (RSA-2048: each step a signature): past the queue a new handshake
/// is refused, closed before the handler opens, and counted; the others
/// complete and echo. Client and server agree exactly on which is which.
#[test]
fn past_the_handshake_backlog_a_new_handshake_is_refused_and_counted() {
    const BURST: usize = 24;
    const MAX_BURSTS: usize = 10;
    let dir = temp_dir("core-tls-backlog");
    let pki = TestPki::create_rsa(dir.path());
    let config = tls_config_from_pem(&pki.cert, &pki.key).expect("the test PKI loads");
    let handler = Counting::default();
    let opened = Arc::clone(&handler.opened);
    let builder = ServerBuilder::default().workers(1).tls(config).handshake_threads(1).handshake_backlog(1);
    let server = start(builder, handler);
    let client = full_handshakes(&pki);
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let (mut echoed, mut refused, mut bursts) = (0u64, 0u64, 0);
    while refused == 0 && bursts < MAX_BURSTS {
        bursts += 1;
        let mut burst: Vec<_> = (0..BURST)
            .map(|_| {
                let mut conn = rustls::ClientConnection::new(Arc::clone(&client), name.clone()).unwrap();
                let mut hello = Vec::new();
                conn.write_tls(&mut hello).unwrap();
                let mut sock = connect(server.local_addr());
                sock.write_all(&hello).unwrap();
                (conn, sock)
            })
            .collect();
        for (conn, sock) in &mut burst {
            let mut tls = rustls::Stream::new(conn, sock);
            let mut echo = [0u8; 4];
            match tls.write_all(b"ping").and_then(|()| tls.read_exact(&mut echo)) {
                Ok(()) => {
                    assert_eq!(&echo, b"ping");
                    echoed += 1;
                }
                Err(_) => refused += 1,
            }
        }
    }
    let total = (bursts * BURST) as u64;
    assert!(refused > 0, "no handshake refused in {bursts} bursts of {BURST}");
    let stats = wait_stats(&server, "every connection closed", |s| s.accepted == total && s.closed == total);
    assert_eq!(stats.tls_handshakes_refused, refused, "{stats}");
    assert_eq!(stats.tls_handshakes, echoed, "{stats}");
    assert_eq!(opened.load(Ordering::SeqCst) as u64, echoed, "a refused handshake never opens");
    assert!(echoed >= bursts as u64, "each burst's first handshake completes: {stats}");
}

/// Says the connection's peer as the server sees it, then echoes.
struct SaysPeer;

impl Handler for SaysPeer {
    type Session = ();
    fn framing(&self) -> Framing {
        Framing::Raw
    }
    fn open(&self, conn: &mut Conn<'_>) {
        conn.send(format!("{}\n", conn.peer_addr()).as_bytes());
    }
    fn frame(&self, _: &mut (), data: &[u8], conn: &mut Conn<'_>) -> Flow {
        conn.send(data);
        Flow::Continue
    }
}

/// A PROXY header and the ClientHello in one write: the bytes past the
/// header are handed to rustls on the worker and processed with the
/// handshake's first step on the pool; the handshake completes and the
/// session sees the header's client.
#[test]
fn a_client_hello_in_the_same_write_as_the_proxy_header_completes_the_handshake() {
    let dir = temp_dir("core-tls-proxy");
    let pki = TestPki::create(dir.path());
    let config = tls_config_from_pem(&pki.cert, &pki.key).expect("the test PKI loads");
    let server = start(ServerBuilder::default().workers(1).tls(config).proxy_protocol(true), SaysPeer);
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(full_handshakes(&pki), name).unwrap();
    let mut first = b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 443\r\n".to_vec();
    conn.write_tls(&mut first).unwrap();
    let mut sock = connect(server.local_addr());
    sock.write_all(&first).unwrap();
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    let mut peer = [0u8; 17];
    tls.read_exact(&mut peer).unwrap();
    assert_eq!(&peer, b"203.0.113.7:5555\n");
    tls.write_all(b"ping").unwrap();
    let mut echo = [0u8; 4];
    tls.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"ping");
    assert_eq!(server.stats().tls_handshakes, 1);
}
