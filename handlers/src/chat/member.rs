//! How the room reaches a member: a TCP connection's handle, or a member
//! that is not on a TCP connection (a UDP peer, the operator console).

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use switchboard::{ConnHandle, Message, Peer, SendError};

/// Where a member's lines go when it is not on a TCP connection.
pub(crate) trait Remote: Send + Sync + fmt::Debug {
    /// The member's id in the room.
    fn id(&self) -> u64;
    /// Delivers `msg` (one or more LF-ended lines) now, without blocking.
    fn deliver(&self, msg: &[u8]) -> Result<(), SendError>;
    /// The member's network address, if it has one (the console has none).
    fn addr(&self) -> Option<SocketAddr> {
        None
    }
}

/// One member of the room, as the room reaches it.
#[derive(Debug, Clone)]
pub(crate) enum Member {
    /// A stream connection (TCP or a Unix socket).
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

    /// The member's peer: a stream connection's (over TCP the client's
    /// address, from a PROXY header when there is one; over a Unix socket
    /// its credentials), a UDP peer's address; none for the console.
    pub(crate) fn peer(&self) -> Option<Peer> {
        match self {
            Member::Tcp(h) => Some(h.peer()),
            Member::Remote(r) => r.addr().map(Peer::Ip),
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

/// A remote member for tests: it records what it is sent.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct Log(pub(crate) u64, pub(crate) parking_lot::Mutex<Vec<String>>);

#[cfg(test)]
impl Remote for Log {
    fn id(&self) -> u64 {
        self.0
    }

    fn deliver(&self, msg: &[u8]) -> Result<(), SendError> {
        self.1.lock().push(String::from_utf8_lossy(msg).into_owned());
        Ok(())
    }
}
