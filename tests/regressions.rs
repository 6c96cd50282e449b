//! Regression tests: inputs that broke (or nearly broke) a decoder or a
//! parser, found by the fuzz targets in `fuzz/` (`scripts/fuzz.sh`) or by
//! reading the code. Each test names the input and what must hold.
//!
//! Every decoder input goes through `switchboard_test_support::decode::check`: decoded whole and
//! cut into chunks, it must give the same frames as the framing's plain
//! definition, never use more bytes than it was given, always make progress
//! or say `Incomplete`, never return a frame over the maximum, and never make
//! the caller hold more than `max_pending()` undecided bytes.

use switchboard::{FrameError, Framing, Prefix};
use switchboard_test_support::decode::{check, decode_in_chunks, Event};

fn frame(b: &[u8]) -> Event {
    Event::Frame(b.to_vec())
}

/// A line over `max`.
fn too_long(max: usize) -> Event {
    Event::Error(FrameError::TooLong { max, len: None })
}

/// A length prefix declaring `len`, over `max`.
fn declared_too_long(max: usize, len: u64) -> Event {
    Event::Error(FrameError::TooLong { max, len: Some(len) })
}

/// Every cut position of `input`, one at a time, and all of them at once.
fn check_all_cuts(framing: Framing, input: &[u8]) -> Vec<Event> {
    let whole = check(framing, input, &[]);
    for cut in 1..input.len() {
        assert_eq!(check(framing, input, &[cut]), whole, "cut at {cut}");
    }
    let every: Vec<usize> = (1..input.len()).collect();
    assert_eq!(check(framing, input, &every), whole, "byte by byte");
    whole
}

#[test]
fn lines_at_the_maximum_with_and_without_cr() {
    let got = check_all_cuts(Framing::lines(4), b"1234\n1234\r\n12345\n123\r4\n\r\n\n");
    assert_eq!(got, vec![frame(b"1234"), frame(b"1234"), too_long(4), too_long(4), frame(b""), frame(b"")]);
}

#[test]
fn a_lone_cr_is_part_of_the_line() {
    let got = check_all_cuts(Framing::lines(8), b"a\rb\n\r\r\n");
    assert_eq!(got, vec![frame(b"a\rb"), frame(b"\r")]);
}

#[test]
fn an_over_long_line_cut_before_its_newline_is_skipped_to_the_newline() {
    // Fed in pieces, the decoder rejects the line before its newline arrives
    // and must then skip exactly up to that newline.
    let got = decode_in_chunks(Framing::lines(4), b"1234567\nok\n", &[7]);
    assert_eq!(got, vec![too_long(4), frame(b"ok")]);
}

/// An over-long line whose newline lies past the decoder's look-ahead
/// window (the maximum plus two bytes), with more lines behind it in the same
/// read. Decoding the read whole used up all of it for the error, losing the
/// lines after it (and the next read's first line, skipped as if still part
/// of the long one), while the same bytes in smaller reads decoded correctly.
/// The `lines` fuzz target finds it within seconds (`[0, 0, 0, 1, 10, 10]`:
/// maximum 0, input `"\0\x01\n\n"`); fixed in the core's line framing.
#[test]
fn lines_after_an_over_long_line_in_the_same_read_are_kept() {
    let got = check_all_cuts(Framing::lines(4), b"123456\nok\nnext\n");
    assert_eq!(got, vec![too_long(4), frame(b"ok"), frame(b"next")]);
}

#[test]
fn fuzz_found_maximum_zero_then_two_newlines() {
    let got = check_all_cuts(Framing::lines(0), b"\0\x01\n\n");
    assert_eq!(got, vec![too_long(0), frame(b"")]);
}

#[test]
fn maximum_zero_accepts_only_empty_lines() {
    let got = check_all_cuts(Framing::lines(0), b"\n\r\nx\n\n");
    assert_eq!(got, vec![frame(b""), frame(b""), too_long(0), frame(b"")]);
}

#[test]
fn length_prefixed_at_the_maximum_over_it_and_empty() {
    for prefix in [Prefix::U16Be, Prefix::U32Be, Prefix::U32Le, Prefix::I32Le] {
        let mut input = Vec::new();
        for (len, fill) in [(5usize, b'a'), (0, b'-'), (6, b'b'), (1, b'c')] {
            input.extend(prefix.encode(len).unwrap());
            input.extend(std::iter::repeat_n(fill, len));
        }
        let got = check_all_cuts(Framing::length_prefixed(prefix, 5), &input);
        assert_eq!(
            got,
            vec![frame(b"aaaaa"), frame(b""), declared_too_long(5, 6), frame(b"c")],
            "{prefix:?}"
        );
    }
}

#[test]
fn a_huge_declared_length_is_rejected_without_waiting_for_it() {
    // 4 GiB - 1 announced: an error at once, then every byte that follows
    // is skipped (it belongs to the rejected frame).
    let mut input = u32::MAX.to_be_bytes().to_vec();
    input.extend_from_slice(b"tail bytes");
    let got = check_all_cuts(Framing::length_prefixed(Prefix::U32Be, 1024), &input);
    assert_eq!(got, vec![declared_too_long(1024, u64::from(u32::MAX))]);
}

#[test]
fn a_negative_length_is_fatal_and_ends_decoding() {
    let mut input = (-1i32).to_le_bytes().to_vec();
    input.extend_from_slice(&3i32.to_le_bytes());
    input.extend_from_slice(b"abc");
    let got = check_all_cuts(Framing::length_prefixed(Prefix::I32Le, 64), &input);
    assert_eq!(got, vec![Event::Error(FrameError::BadLength(-1))]);
    let got = check_all_cuts(Framing::length_prefixed(Prefix::I32Le, 64), &i32::MIN.to_le_bytes());
    assert_eq!(got, vec![Event::Error(FrameError::BadLength(i64::from(i32::MIN)))]);
}

#[test]
fn a_prefix_cut_in_its_middle_waits_for_the_rest() {
    let mut input = 3u32.to_le_bytes().to_vec();
    input.extend_from_slice(b"xyz");
    let got = check_all_cuts(Framing::length_prefixed(Prefix::U32Le, 3), &input);
    assert_eq!(got, vec![frame(b"xyz")]);
}

/// The same fault seen by a client: an over-long line and the next line in
/// one write. The next line must be answered, and so must the one after.
#[test]
fn server_answers_the_line_after_an_over_long_one_in_the_same_write() {
    use std::io::{BufReader, Write};
    use switchboard::Server;
    use switchboard_test_support::*;

    let server = start(Server::builder().workers(1), LineEcho { max: 16 });
    let s = connect(server.local_addr());
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    w.write_all(format!("{}\nafter\n", "x".repeat(40)).as_bytes()).unwrap();
    assert_eq!(read_line(&mut r), "! frame longer than the 16-byte maximum\n");
    w.write_all(b"next\n").unwrap();
    assert_eq!(read_line(&mut r), "after\n");
    assert_eq!(read_line(&mut r), "next\n");
}
