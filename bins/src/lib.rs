//! Code shared by the Switchboard binaries: command-line value parsers, the
//! client, and the load generator.

pub mod beside;
pub mod cli;
pub mod client;
pub mod load;
