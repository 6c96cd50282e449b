//! The built-in Switchboard handlers: [`Echo`], and (in progress) upper,
//! chat relay and file get. Wire formats: PROTOCOLS.md.

mod echo;

pub use echo::Echo;
