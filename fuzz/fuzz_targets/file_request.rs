//! The file handler's request line: cut by its framing, then parsed. Never
//! panics; `get NAME` keeps every byte of the name; anything else is `list`
//! exactly or a bad request.
#![no_main]

use switchboard_test_support::lines;

use libfuzzer_sys::fuzz_target;
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
            let get_ok =
                line.starts_with(b"get ") && line.len() > 4 && std::str::from_utf8(&line[4..]).is_ok();
            assert!(!get_ok && line != b"list", "{line:?} was refused");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    lines::for_each_line(data, 4096, check);
    check(data);
});
