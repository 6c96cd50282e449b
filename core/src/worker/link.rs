//! Link routing: a connection's link (its outbound connection) is
//! registered in this worker's poll under its owner's token with a tag bit,
//! so its events reach the owner's slot; the owner's transitions move the
//! link on ([`Connection::link_step`](crate::connection::Connection)).
//! Nothing here removes a connection but through [`Worker::after`].

use mio::Token;

use crate::close::CloseReason;
use crate::connection::{Cx, LinkRead};
use crate::handler::Handler;
use crate::mailbox::ConnKey;

use super::{token, Worker};

/// The bit that tells a link's token from its owner's (a slot index never
/// reaches it).
const LINK_BIT: usize = 1 << 31;

/// The token a connection's link is registered with.
fn link_token(key: ConnKey) -> Token {
    Token(token(key).0 | LINK_BIT)
}

/// The owner's token, if `t` is a link's.
pub(super) fn owner_of(t: Token) -> Option<Token> {
    (t.0 & LINK_BIT != 0).then_some(Token(t.0 & !LINK_BIT))
}

/// How far an event says to read a link.
pub(super) fn read_of(event: &mio::event::Event) -> LinkRead {
    if event.is_read_closed() || event.is_error() {
        LinkRead::ToEnd
    } else if event.is_readable() {
        LinkRead::Edge
    } else {
        LinkRead::No
    }
}

impl<H: Handler> Worker<H> {
    /// An event of connection `key`'s link socket.
    pub(super) fn on_link(&mut self, key: ConnKey, read: LinkRead) {
        let Some(c) = self.conns.get_mut(key) else { return };
        let next = c.link_step(&cx!(self), &mut self.scratch, true, read);
        self.after(key, next);
    }

    /// Links whose reading was due (a hold ended, a turn ran out).
    pub(super) fn read_links(&mut self) {
        for key in std::mem::take(&mut self.link_ready) {
            let Some(c) = self.conns.get_mut(key) else { continue };
            let next = c.link_step(&cx!(self), &mut self.scratch, false, LinkRead::No);
            self.after(key, next);
        }
    }

    /// After a transition of connection `key`: registers a new link's
    /// socket (a failure ends the link in the next flush), and queues a
    /// link whose reading is due.
    pub(super) fn after_link(&mut self, key: ConnKey) {
        let Some(c) = self.conns.get_mut(key) else { return };
        if let Some(link) = c.link_unregistered() {
            link.registered = true;
            if let Err(e) = link.sock.register(self.poll.registry(), link_token(key)) {
                link.fail(CloseReason::Io(e), &self.shared.stats.workers[self.index].queued);
                self.dirty.push(key);
            }
        }
        if c.link_read_due() {
            self.link_ready.push(key);
        }
    }
}
