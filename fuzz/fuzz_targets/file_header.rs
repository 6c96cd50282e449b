//! The file protocol's header decoder (`file::proto`), as every client of
//! the project uses it: never panics, never reads past the announced
//! length, and what it accepts encodes back to the same header.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_handlers::file::proto::{self, DecodeError, LEN_PREFIX, MAX_HEADER};

fuzz_target!(|data: &[u8]| {
    match proto::decode(data) {
        Ok(Some((header, used))) => {
            assert!(used >= LEN_PREFIX && used <= data.len() && used - LEN_PREFIX <= MAX_HEADER);
            let again = proto::encode(&header);
            let (back, n) = proto::decode(&again).unwrap().unwrap();
            assert_eq!(back, header);
            assert_eq!(n, again.len());
            if let Some(md5) = &header.md5 {
                assert!(md5.len() == 32 && md5.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
            }
        }
        Ok(None) => {
            if let Some(prefix) = data.get(..LEN_PREFIX) {
                let len = proto::decode_len(prefix.try_into().unwrap()).unwrap();
                assert!(data.len() < LEN_PREFIX + len);
            }
        }
        Err(DecodeError::BadLength(n)) => assert!(n < 0 || n as usize > MAX_HEADER),
        Err(DecodeError::BadHeader(_)) => {}
    }
});
