//! [`Message`]: shared immutable bytes, one allocation for many connections.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// An immutable, cheaply cloned byte message: one allocation shared by every
/// connection it is sent to (a chat broadcast copies nothing per member).
#[derive(Clone, PartialEq, Eq)]
pub struct Message(Arc<[u8]>);

impl Message {
    /// The message's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl Deref for Message {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for Message {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Message({} bytes)", self.0.len())
    }
}

impl From<Vec<u8>> for Message {
    fn from(v: Vec<u8>) -> Message {
        Message(v.into())
    }
}
impl From<&[u8]> for Message {
    fn from(v: &[u8]) -> Message {
        Message(v.into())
    }
}
impl From<String> for Message {
    fn from(v: String) -> Message {
        Message(v.into_bytes().into())
    }
}
impl From<&str> for Message {
    fn from(v: &str) -> Message {
        Message(v.as_bytes().into())
    }
}
impl From<Arc<[u8]>> for Message {
    fn from(v: Arc<[u8]>) -> Message {
        Message(v)
    }
}
