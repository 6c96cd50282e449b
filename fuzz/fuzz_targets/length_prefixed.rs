//! The length-prefixed decoder: every prefix, any maximum, any input, any
//! way of cutting it into reads. See `support/src/decode.rs` for the
//! invariants checked.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::{Framing, Prefix};

use switchboard_test_support::{decode, lines};

fuzz_target!(|data: &[u8]| {
    let [p, m0, m1, rest @ ..] = data else { return };
    let prefix = match p % 4 {
        0 => Prefix::U16Be,
        1 => Prefix::U32Be,
        2 => Prefix::U32Le,
        _ => Prefix::I32Le,
    };
    let max = usize::from(u16::from_le_bytes([*m0, *m1]));
    let (cuts, input) = lines::cuts(rest);
    decode::check(Framing::length_prefixed(prefix, max), input, &cuts);
});
