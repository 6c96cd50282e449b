//! Every test helper lives in the `switchboard-test-support` crate
//! (`support/`); this re-export only keeps a test that still says
//! `mod util;` building. New tests use the crate directly.
#![allow(unused_imports, unreachable_pub)]

pub use switchboard_test_support::*;
