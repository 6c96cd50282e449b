//! The lines decoder: any maximum, any input, any way of cutting it into
//! reads. See `support/src/decode.rs` for the invariants checked.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::Framing;

use switchboard_test_support::{decode, lines};

fuzz_target!(|data: &[u8]| {
    let Some((&m, rest)) = data.split_first() else { return };
    // Small maxima hit the edges (max, max + 1, max + 2) most often.
    let max = if m & 0x80 == 0 { usize::from(m & 0x1f) } else { usize::from(m) * 16 };
    let (cuts, input) = lines::cuts(rest);
    decode::check(Framing::lines(max), input, &cuts);
});
