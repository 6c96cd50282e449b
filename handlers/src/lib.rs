//! The built-in Switchboard handlers: [`Echo`], [`Upper`], [`Chat`] (relay),
//! [`FileGet`] and [`Proxy`] (a TCP relay to backends). Echo, upper and chat are also
//! [`DatagramHandler`](switchboard::datagram::DatagramHandler)s, served over
//! UDP. Wire formats: PROTOCOLS.md.

pub mod chat;
mod datagram;
mod echo;
pub mod file;
pub mod proxy;
mod upper;

pub use chat::Chat;
pub use echo::Echo;
pub use file::FileGet;
pub use proxy::Proxy;
pub use upper::Upper;
