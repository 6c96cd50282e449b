//! Code shared by the Switchboard binaries: command-line value parsers, the
//! client, the load generator, and the server's admin endpoint.

pub mod accounts;
pub mod admin;
pub mod beside;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod edge;
pub mod load;
pub mod printer;
pub mod server_args;
pub mod threads;
pub mod tls;
