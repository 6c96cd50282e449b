//! The built-in Switchboard handlers: [`Echo`], [`Upper`], [`Chat`] (relay)
//! and file get. Wire formats: PROTOCOLS.md.

pub mod chat;
mod echo;
mod upper;

pub use chat::Chat;
pub use echo::Echo;
pub use upper::Upper;
