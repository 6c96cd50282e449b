//! How far the room reaches: this server alone ([`Alone`]), or every server
//! of a cluster on one Redis ([`Cluster`]). The choice is made once, when
//! the chat is built ([`Chat::cluster`](super::Chat::cluster) swaps
//! [`Alone`] for the bridge); the dispatcher asks its [`Reach`] wherever a
//! command goes beyond the local room and never asks which it is.

use std::fmt;

use super::cluster::{Cluster, Event, Job};
use super::local::{self, SharedRoom};
use super::reply::Caller;

/// What a command needs beyond the local room.
pub(crate) trait Reach: Send + Sync + fmt::Debug {
    /// Tells the other servers what happened here (a join, a leave, a line,
    /// a nick change); never waits.
    fn publish(&self, event: Event);

    /// `/nick NICK` for member `id`, a valid nick that no other member here
    /// holds and that is not a form of the member's own: returns whether
    /// it answered (claimed the nick across servers, the answer to come,
    /// or refused); false leaves the rename to the local room.
    fn claim(&self, id: u64, nick: String, account: Option<String>, out: &mut dyn Caller) -> bool;

    /// `/who`: the members, local ones from `room`.
    fn who(&self, room: &SharedRoom, out: &mut dyn Caller);

    /// `/msg TO TEXT` from `from` when no member here is called TO: returns
    /// whether the line was sent on (the sender then pays the room's rate
    /// for it); otherwise the member is told there is no such user.
    fn msg(&self, from: String, to: &str, text: &str, out: &mut dyn Caller) -> bool;

    /// The server has stopped: threads of its own end and are joined.
    fn stop(&self) {}
}

/// A server on its own: nothing goes beyond its room.
#[derive(Debug)]
pub(crate) struct Alone;

impl Reach for Alone {
    fn publish(&self, _event: Event) {}

    fn claim(&self, _id: u64, _nick: String, _account: Option<String>, _out: &mut dyn Caller) -> bool {
        false
    }

    fn who(&self, room: &SharedRoom, out: &mut dyn Caller) {
        let line = format!("* online: {}", local::who_names(&room.lock()).join(", "));
        out.line(&line);
    }

    fn msg(&self, _from: String, to: &str, _text: &str, out: &mut dyn Caller) -> bool {
        out.line(&format!("! no such user {to}"));
        false
    }
}

/// One room across servers: what needs Redis goes to the bridge with a
/// deferred reply. A member that cannot wait for one (UDP, the console)
/// gets what this server knows: its guest nick is unique across servers,
/// so it keeps it; `/who` and `/msg` see this server only.
impl Reach for Cluster {
    fn stop(&self) {
        Cluster::stop(self);
    }

    fn publish(&self, event: Event) {
        Cluster::publish(self, event);
    }

    fn claim(&self, id: u64, nick: String, account: Option<String>, out: &mut dyn Caller) -> bool {
        match out.defer() {
            Some(reply) => self.request(Job::Claim { id, nick, account, reply }),
            None => out.line("! on a clustered server, /nick needs a TCP connection"),
        }
        true
    }

    fn who(&self, room: &SharedRoom, out: &mut dyn Caller) {
        match out.defer() {
            Some(reply) => self.request(Job::Who { reply }),
            None => {
                let line = format!("* online on this server: {}", local::who_names(&room.lock()).join(", "));
                out.line(&line);
            }
        }
    }

    fn msg(&self, from: String, to: &str, text: &str, out: &mut dyn Caller) -> bool {
        match out.defer() {
            Some(reply) => {
                self.request(Job::Msg { from, to: to.to_owned(), text: text.to_owned(), reply });
                true
            }
            None => {
                out.line(&format!("! no such user {to} on this server"));
                false
            }
        }
    }
}
