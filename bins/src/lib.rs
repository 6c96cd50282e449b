//! Code shared by the Switchboard binaries: command-line value parsers, the
//! client, and the load generator.

pub mod cli;
pub mod client;
pub mod edge;
pub mod load;
pub mod tls;
