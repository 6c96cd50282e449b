//! Helpers shared by the Switchboard tests (`tests/`, `bins/tests/`) and the
//! fuzz targets (`fuzz/`). Dev-only, never published.
//!
//! - [`start`], [`connect`], [`small_window_client`], [`round_trip`] and
//!   friends: servers in the test process on 127.0.0.1:0 and blocking
//!   clients with timeouts;
//! - [`wait_until`] and [`wait_stats`]: poll for the exact condition a test
//!   then asserts, with a deadline and the server's counters in the failure
//!   message;
//! - [`child`]: binaries run with a deadline, their output read while they
//!   run, and [`child::ChildServer`], a server in a process of its own whose
//!   memory, descriptors and threads the test reads through `/proc/PID`;
//! - [`http`]: a minimal HTTP client for the admin endpoint;
//! - [`DescriptorBudget`]: the descriptor budget a server logs at start;
//! - [`ChatNode`]: a `switchboard-server` chat in a process of its own;
//! - [`redis::TestRedis`]: a `redis-server` of the test's own on a free
//!   loopback port, stopped and restarted on demand;
//! - [`LineEcho`], the line-echo test handler; [`decode`], the decoder
//!   driver; [`lines`], the fuzz input layout.

mod budget;
mod chat_client;
mod chat_node;
pub mod child;
pub mod decode;
pub mod http;
mod line_echo;
pub mod lines;
mod net;
pub mod pki;
pub mod redis;
pub mod test_server;
mod wait;

pub use budget::DescriptorBudget;
pub use chat_client::ChatClient;
pub use chat_node::ChatNode;
pub use line_echo::LineEcho;
pub use net::{
    connect, connect_from, init_logs, raise_fd_limit, random_bytes, read_end, read_exact, read_line, reset,
    round_trip, small_window_client, small_window_client_with, start, temp_dir, unix_client, End, TempDir,
};
pub use wait::{wait_stats, wait_until, StatsSource, TIMEOUT};
