//! `switchboard-client` (in progress).
fn main() {}
