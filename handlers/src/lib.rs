//! The built-in Switchboard handlers: [`Echo`], [`Upper`], [`Chat`] (relay)
//! and [`FileGet`]. Wire formats: PROTOCOLS.md.

pub mod chat;
mod echo;
pub mod file;
mod upper;

pub use chat::Chat;
pub use echo::Echo;
pub use file::FileGet;
pub use upper::Upper;
