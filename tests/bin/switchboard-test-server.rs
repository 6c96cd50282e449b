//! `switchboard-test-server`: a handler in a process of its own, for the
//! tests that measure a server's memory, descriptors or threads. See
//! `switchboard_test_support::test_server`.

fn main() {
    switchboard_test_support::test_server::main();
}
