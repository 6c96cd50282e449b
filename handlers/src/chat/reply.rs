//! How the chat answers one member, whatever carries it: the two small
//! traits the command dispatcher ([`super::dispatch`]) is written over.
//!
//! - [`Reply`]: lines to this member only. A TCP connection ([`Conn`]), a
//!   UDP peer's reply (datagrams of whole lines, `chat/udp.rs`), the
//!   console's output queue (`chat/console.rs`) and a [`Deferred`] answer
//!   from the cluster bridge or the account threads.
//! - [`Caller`]: the member whose line is being handled, a [`Reply`] that
//!   also says how the member is held back and what its transport allows:
//!   a TCP connection ([`Conn`]), or a member that cannot be held back by
//!   not reading (`chat/remote.rs`: UDP peers and the console).

use std::time::Duration;

use switchboard::{Conn, Deferred, Peer};

/// The answer to an account command from a member that cannot wait for
/// its answer (UDP, the console).
pub(crate) const ACCOUNTS_NEED_TCP: &str = "! accounts need a TCP connection";

/// Where the answers to one member go.
pub(crate) trait Reply {
    /// Sends `text`, one or more LF-ended lines, to this member only.
    fn send(&mut self, text: &str);

    /// Sends one line; the LF is added.
    fn line(&mut self, text: &str) {
        self.send(&format!("{text}\n"));
    }
}

/// The member whose line the dispatcher handles.
pub(crate) trait Caller: Reply {
    /// Holds the member back for `wait` (it went over a rate): a TCP
    /// connection is not read meanwhile, so it loses nothing; a member that
    /// cannot be held back that way loses its lines until then.
    fn hold(&mut self, wait: Duration);

    /// Whether the member can wait for an answer that comes after this
    /// line's callback ([`Caller::defer`]): what needs Redis or the account
    /// threads is for such members (TCP) only.
    fn waits(&self) -> bool {
        false
    }

    /// A reply that comes later, ahead of the member's next lines; `None`
    /// when the member cannot wait for one ([`Caller::waits`]).
    fn defer(&mut self) -> Option<Deferred> {
        None
    }

    /// The member's peer, for the account commands' per-address limits
    /// (an IP address, or a Unix peer's user id).
    fn peer(&self) -> Option<Peer> {
        None
    }

    /// `/help` lines of commands only this member's transport has
    /// (`/cookie` over UDP), each LF-ended.
    fn help(&self) -> &'static str {
        ""
    }
}

/// A TCP member: replies go straight into the connection's queue.
impl Reply for Conn<'_> {
    fn send(&mut self, text: &str) {
        Conn::send(self, text);
    }

    fn line(&mut self, text: &str) {
        let mut bytes = Vec::with_capacity(text.len() + 1);
        bytes.extend_from_slice(text.as_bytes());
        bytes.push(b'\n');
        Conn::send(self, &bytes);
    }
}

/// A TCP member: over a rate it is not read for a while; it can wait for
/// a deferred answer.
impl Caller for Conn<'_> {
    fn hold(&mut self, wait: Duration) {
        self.pause_reading(wait);
    }

    fn waits(&self) -> bool {
        true
    }

    fn defer(&mut self) -> Option<Deferred> {
        Some(Conn::defer(self))
    }

    fn peer(&self) -> Option<Peer> {
        Some(Conn::peer(self))
    }
}

/// An answer that comes later (from the cluster bridge or the account
/// threads); one the member is gone for is dropped.
impl Reply for Deferred {
    fn send(&mut self, text: &str) {
        let _ = Deferred::send(self, text);
    }
}

/// Replies, as sent (for tests).
#[cfg(test)]
impl Reply for Vec<String> {
    fn send(&mut self, text: &str) {
        self.push(text.to_owned());
    }
}
