//! The upper handler over real sockets: PROTOCOLS.md "upper".

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::thread;

use switchboard::Server;
use switchboard_handlers::Upper;
use switchboard_test_support::{connect, start};

fn server() -> Server {
    start(Server::builder().workers(2), Upper::new())
}

/// Reads exactly `n` bytes.
fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    s.read_exact(&mut buf).unwrap_or_else(|e| panic!("reading {n} bytes: {e}"));
    buf
}

/// Closes the write side and reads what is left up to EOF.
fn finish(s: &mut TcpStream) -> Vec<u8> {
    s.shutdown(Shutdown::Write).expect("shutdown write");
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).expect("read to EOF");
    rest
}

#[test]
fn protocol_examples_without_newline() {
    let server = server();
    let mut s = connect(server.local_addr());
    for (input, want) in [
        ("hello", "HELLO"),
        ("straße", "STRASSE"),
        ("héllo", "HÉLLO"),
        ("你好", "你好"),
        ("Mixed 123 !?", "MIXED 123 !?"),
    ] {
        // No newline: the reply must come at once.
        s.write_all(input.as_bytes()).expect("write");
        let got = read_n(&mut s, want.len());
        assert_eq!(String::from_utf8_lossy(&got), want, "for {input:?}");
    }
    s.write_all(b"line one\nline two\r\n").expect("write");
    assert_eq!(read_n(&mut s, 19), b"LINE ONE\nLINE TWO\r\n");
    assert_eq!(finish(&mut s), b"", "nothing more than the replies");
}

#[test]
fn split_character_is_held_until_complete() {
    let server = server();
    let mut s = connect(server.local_addr());
    // "x" and the first byte of "é": the reply to this read must be "X"
    // alone, no U+FFFD, no stray byte.
    s.write_all(b"x\xc3").expect("write");
    assert_eq!(read_n(&mut s, 1), b"X");
    // The server has answered the first read, so the rest arrives in
    // another one.
    s.write_all(b"\xa9y").expect("write");
    assert_eq!(read_n(&mut s, 3), "ÉY".as_bytes());

    // A 4-byte character in three pieces, after an answered read.
    let emoji = "😀".as_bytes();
    s.write_all(&[b'a', emoji[0]]).expect("write");
    assert_eq!(read_n(&mut s, 1), b"A");
    s.write_all(&emoji[1..3]).expect("write");
    s.write_all(&[emoji[3], b'z']).expect("write");
    assert_eq!(read_n(&mut s, 5), "😀Z".as_bytes());
    assert_eq!(finish(&mut s), b"", "nothing mangled or repeated");
}

#[test]
fn invalid_utf8_and_nul_pass_through() {
    let server = server();
    let mut s = connect(server.local_addr());
    s.write_all(b"ab\xffcd").expect("write");
    assert_eq!(read_n(&mut s, 5), b"AB\xffCD");
    // A lone continuation byte, an overlong form and a surrogate.
    s.write_all(b"\x80q\xc0\xafr\xed\xa0\x80s").expect("write");
    assert_eq!(read_n(&mut s, 9), b"\x80Q\xc0\xafR\xed\xa0\x80S");
    // A held lead byte that the next bytes do not continue is passed on.
    s.write_all(b"m\xe4").expect("write");
    assert_eq!(read_n(&mut s, 1), b"M");
    s.write_all(b"n").expect("write");
    assert_eq!(read_n(&mut s, 2), b"\xe4N");
    s.write_all(b"a\0b\0\0c").expect("write");
    assert_eq!(read_n(&mut s, 6), b"A\0B\0\0C");
    assert_eq!(finish(&mut s), b"");
}

#[test]
fn large_input_splits_anywhere() {
    let server = server();
    let mut s = connect(server.local_addr());
    let unit = "straße héllo 你好 😀 ok\n";
    let text = unit.repeat(2 * 1024 * 1024 / unit.len());
    let want = text.to_uppercase();
    let mut writer = s.try_clone().expect("clone");
    let input = text.clone();
    let t = thread::spawn(move || {
        // Odd-sized writes so characters straddle the reads.
        for chunk in input.as_bytes().chunks(7919) {
            writer.write_all(chunk).expect("write");
        }
        writer.shutdown(Shutdown::Write).expect("shutdown write");
    });
    let mut got = Vec::with_capacity(want.len());
    s.read_to_end(&mut got).expect("read to EOF");
    t.join().expect("writer thread");
    assert_eq!(got.len(), want.len());
    assert!(got == want.as_bytes(), "the upper-cased text differs");
}

#[test]
fn an_incomplete_character_at_end_of_input_passes_through() {
    let server = server();
    let mut s = connect(server.local_addr());
    // "a" then the first two bytes of a three-byte character, then EOF.
    let ni = "你".as_bytes();
    s.write_all(&[b'a', ni[0], ni[1]]).unwrap();
    assert_eq!(read_n(&mut s, 1), b"A");
    assert_eq!(finish(&mut s), &ni[..2]);
}
