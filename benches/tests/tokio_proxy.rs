//! The proxy baseline relays both ways, in order, and passes a half-close
//! on: otherwise the proxy rows would compare switchboard with a relay
//! doing less.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::Command;
use std::thread;
use std::time::Duration;

use switchboard_test_support::child::Spawned;

#[test]
fn relays_both_ways_and_passes_the_half_close_on() {
    let backend = TcpListener::bind("127.0.0.1:0").expect("bind");
    let backend_addr = backend.local_addr().expect("addr");
    // The backend: reads everything up to the client's half-close, then
    // answers with the reversed bytes and closes.
    let served = thread::spawn(move || {
        let (mut s, _) = backend.accept().expect("accept");
        s.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
        let mut got = Vec::new();
        s.read_to_end(&mut got).expect("read to the half-close");
        got.reverse();
        s.write_all(&got).expect("answer");
        got.len()
    });
    let mut proxy = Spawned::spawn(Command::new(env!("CARGO_BIN_EXE_tokio-proxy")).args([
        "--listen",
        "127.0.0.1:0",
        "--backend",
        &backend_addr.to_string(),
    ]));
    let mut c = TcpStream::connect(proxy.listening_addr()).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let sent: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    c.write_all(&sent).expect("send");
    c.shutdown(Shutdown::Write).expect("half-close");
    let mut back = Vec::new();
    c.read_to_end(&mut back).expect("the reply, then EOF");
    assert_eq!(served.join().expect("backend"), sent.len());
    let mut want = sent;
    want.reverse();
    assert!(back == want, "{} bytes back, want {} reversed", back.len(), want.len());
}

#[test]
fn refuses_a_missing_or_bad_backend_with_a_usage_error() {
    for args in [&["--listen", "127.0.0.1:0"][..], &["--backend", "nowhere"][..]] {
        let out = Command::new(env!("CARGO_BIN_EXE_tokio-proxy")).args(args).output().expect("run");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("--backend"), "{args:?}");
    }
}
