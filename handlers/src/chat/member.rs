//! How the room reaches a member: a TCP connection's handle, or a member
//! that is not on a TCP connection (a UDP peer, the operator console).

use std::fmt;
use std::sync::Arc;

use switchboard::{ConnHandle, Message, SendError};

/// Where a member's lines go when it is not on a TCP connection.
pub(crate) trait Remote: Send + Sync + fmt::Debug {
    /// The member's id in the room.
    fn id(&self) -> u64;
    /// Delivers `msg` (one or more LF-ended lines) now, without blocking.
    fn deliver(&self, msg: &[u8]) -> Result<(), SendError>;
}

/// One member of the room, as the room reaches it.
#[derive(Debug, Clone)]
pub(crate) enum Member {
    /// A TCP connection.
    Tcp(ConnHandle),
    /// A UDP peer or the console.
    Remote(Arc<dyn Remote>),
}

impl Member {
    /// The member's id in the room.
    pub(crate) fn id(&self) -> u64 {
        match self {
            Member::Tcp(h) => h.id(),
            Member::Remote(r) => r.id(),
        }
    }

    /// Sends one shared message, as [`ConnHandle::send`] does.
    pub(crate) fn send(&self, msg: Message) -> Result<(), SendError> {
        match self {
            Member::Tcp(h) => h.send(msg),
            Member::Remote(r) => r.deliver(msg.as_bytes()),
        }
    }
}
