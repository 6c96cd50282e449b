//! `switchboard-load` (in progress).
fn main() {}
