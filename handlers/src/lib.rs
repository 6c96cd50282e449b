//! The built-in Switchboard handlers: [`Echo`], and (in progress) upper,
//! chat relay and file get. Wire formats: PROTOCOLS.md.

mod chat;
mod echo;
mod upper;

pub use chat::Chat;
pub use echo::Echo;
pub use upper::Upper;
