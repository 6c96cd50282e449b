//! The file handler's request line: cut by its framing, then parsed. Never
//! panics; `get NAME` keeps every byte of the name; anything else is `list`
//! exactly or a bad request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::{Decoder, Framing, Step};
use switchboard_handlers::file::{parse_request, Request};

fn check(line: &[u8]) {
    match parse_request(line) {
        Request::Get(name) => {
            assert!(line.starts_with(b"get "));
            assert_eq!(name.as_bytes(), &line[4..]);
            assert!(!name.is_empty());
        }
        Request::List => assert_eq!(line, b"list"),
        Request::Bad(_) => {
            let get_ok = line.starts_with(b"get ") && line.len() > 4 && std::str::from_utf8(&line[4..]).is_ok();
            assert!(!get_ok && line != b"list", "{line:?} was refused");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut dec = Decoder::new(Framing::lines(4096));
    let mut rest = data;
    for _ in 0..=data.len() {
        match dec.next(rest) {
            Step::Frame(line, used) => {
                check(line);
                rest = &rest[used..];
            }
            Step::Error(_, used) | Step::Skip(used) => rest = &rest[used..],
            Step::Incomplete => break,
        }
    }
    check(data);
});
