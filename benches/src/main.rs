//! Benchmark runner (in progress).
fn main() {}
