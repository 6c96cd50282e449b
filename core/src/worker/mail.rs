//! Mail routing: what other threads posted to this worker (new
//! connections, handles' inboxes, moves, handshake steps) reaches the
//! connection it is for, in the order posted.

use std::sync::atomic::Ordering;

use slotmap::Key;

use crate::connection::{Cx, Next};
use crate::handler::Handler;
use crate::mailbox::{ConnKey, Mail};

use super::Worker;

/// Mail handled per loop turn before sockets get a turn.
const MAIL_PER_TURN: usize = 16 * 1024;

impl<H: Handler> Worker<H> {
    /// Drains the mailbox; true if mail was left for the next turn.
    pub(super) fn take_mail(&mut self) -> bool {
        self.mailbox.pending.store(false, Ordering::Relaxed);
        // The flag cleared before looking for mail, as senders post before
        // they look at the flag (`Mailbox::post`).
        std::sync::atomic::fence(Ordering::SeqCst);
        for _ in 0..MAIL_PER_TURN {
            let Ok(mail) = self.rx.try_recv() else { return false };
            self.deliver(mail, false);
        }
        true
    }

    /// Handles one piece of mail. `forwarded`: it was posted before its
    /// connection moved here, so it goes before anything held back.
    pub(super) fn deliver(&mut self, mail: Mail, forwarded: bool) {
        let to = match &mail {
            Mail::Conn(..) => {
                let Mail::Conn(sock, peer, admission) = mail else { unreachable!() };
                return self.open(sock, peer, admission);
            }
            Mail::Migrate(_) => {
                let Mail::Migrate(conn) = mail else { unreachable!() };
                return self.arrive(conn);
            }
            Mail::Forwarded(_) => {
                let Mail::Forwarded(inner) = mail else { unreachable!() };
                return self.deliver(*inner, true);
            }
            Mail::ForwardDone { id } => return self.forward_done(*id),
            Mail::Settled { id } => return self.settled(*id),
            Mail::Handshaken { .. } => {
                let Mail::Handshaken { key, stream, step } = mail else { unreachable!() };
                return self.handshaken(key, stream, step);
            }
            Mail::Moved { key } => {
                if let Some((mailbox, id)) = self.moved.remove(key) {
                    let _ = mailbox.post(Mail::ForwardDone { id });
                }
                return;
            }
            Mail::Inbox { to } => *to,
        };
        if let Some((mailbox, _)) = self.moved.get(&to.key) {
            // Posted before the connection moved away: after it, in order.
            let _ = mailbox.post(Mail::Forwarded(Box::new(mail)));
            return;
        }
        let key = match to.key.is_null() {
            true => match self.arriving.get(&to.id) {
                Some(a) => a.key,
                None => return,
            },
            false => to.key,
        };
        let Some(c) = self.conns.get_mut(key) else { return };
        if let (Some(held), false) = (&mut c.held, forwarded) {
            // Posted after it moved: waits for what was posted before.
            held.push(mail);
            return;
        }
        self.apply(key, mail);
    }

    /// Applies a handle's mail to its connection: takes everything in its
    /// inbox, in order (what comes after an item that ends the connection
    /// is dropped with it).
    pub(super) fn apply(&mut self, key: ConnKey, mail: Mail) {
        let Mail::Inbox { .. } = mail else { return };
        let Some(c) = self.conns.get_mut(key) else { return };
        let mut items = std::mem::take(&mut self.inbox);
        c.shared.take_inbox(&mut items);
        let mut next = Next::Wait;
        for item in items.drain(..) {
            match c.take(&cx!(self), item) {
                Next::Wait => {}
                Next::Read => next = Next::Read,
                other => {
                    next = other;
                    break;
                }
            }
        }
        items.clear();
        self.inbox = items;
        self.after(key, next);
    }
}
