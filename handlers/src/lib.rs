//! The built-in Switchboard handlers: [`Echo`], [`FileGet`], and (in
//! progress) upper and chat relay. Wire formats: PROTOCOLS.md.

mod echo;
mod file;

pub use echo::Echo;
pub use file::FileGet;
