//! Moving a connection to another worker, without losing or reordering
//! its mail: the route is switched under its lock, mail that reached the
//! old worker first is forwarded, and the new owner holds later mail back
//! until that is done.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use slotmap::Key;

use crate::close::CloseReason;
use crate::connection::{Connection, Next, Writing};
use crate::handler::Handler;
use crate::mailbox::{ConnKey, Mail, WorkerLink};

use super::{token, Worker};

/// A connection that moved in, until the mail about its move is done.
#[derive(Debug, Clone, Copy)]
pub(super) struct Arriving {
    pub(super) key: ConnKey,
    /// Keyless mail for it can no longer come.
    settled: bool,
    /// The worker it left has forwarded all earlier mail.
    forwarded: bool,
}

impl<H: Handler> Worker<H> {
    /// Gives the worker the links of all workers, to move connections to.
    pub(crate) fn set_peers(&mut self, peers: Vec<WorkerLink>) {
        self.peers = peers;
    }

    /// Moves connection `key` to another worker. Its route is switched
    /// under its lock, so every later mail lands behind it there; mail that
    /// reached this worker before is forwarded, and the new owner holds
    /// later mail back until that is done.
    pub(super) fn migrate_out(&mut self, key: ConnKey, to: &WorkerLink) -> bool {
        let Some(c) = self.conns.get(key) else { return false };
        if c.writing() != Writing::Open
            || c.held.is_some()
            || self.arriving.contains_key(&c.shared.id)
            || c.sock.is_away()
            || c.link.is_some()
        {
            // (A handshake step on the pool comes back here; a linked
            // connection stays with its link's socket, in this poll.)
            return false;
        }
        let shared = Arc::clone(&c.shared);
        let mut route = shared.route.lock();
        let Some(mut c) = self.conns.remove(key) else { return false };
        let _ = c.sock.deregister(self.poll.registry());
        // Its queued bytes are counted by the worker that holds it.
        let mem = c.out.mem();
        self.shared.stats.workers[self.index].queued.fetch_sub(mem, Ordering::Relaxed);
        self.shared.stats.workers[to.index].queued.fetch_add(mem, Ordering::Relaxed);
        c.held = Some(Box::default());
        if let Some(t) = c.ctl.timing_mut() {
            // Its wake-ups stay in this worker's heap: the new one schedules them.
            t.pause_scheduled = None;
            t.timers_changed = true;
        }
        c.admission.move_to(&to.load);
        if let Err(Mail::Migrate(back)) = to.mailbox.post(Mail::Migrate(Box::new(c))) {
            // The other worker has stopped: keep the connection here.
            self.shared.stats.workers[to.index].queued.fetch_sub(mem, Ordering::Relaxed);
            self.shared.stats.workers[self.index].queued.fetch_add(mem, Ordering::Relaxed);
            drop(route);
            let mut c = *back.downcast::<Connection<H::Session>>().expect("the connection just boxed");
            c.held = None;
            c.admission.move_to(&self.load);
            let key = self.conns.insert(c);
            shared.route.lock().key = key;
            if let Err(e) = self.conns[key].sock.register(self.poll.registry(), token(key)) {
                self.finish(key, CloseReason::Io(e));
            }
            return false;
        }
        route.mailbox = Arc::clone(&to.mailbox);
        route.key = ConnKey::null();
        self.moved.insert(key, (Arc::clone(&to.mailbox), shared.id));
        let _ = self.mailbox.post(Mail::Moved { key });
        drop(route);
        true
    }

    /// A connection moved in: register it, take its route, wake it.
    pub(super) fn arrive(&mut self, conn: Box<dyn std::any::Any + Send>) {
        let Ok(c) = conn.downcast::<Connection<H::Session>>() else {
            log::error!("worker {}: a migrating connection of another handler type", self.index);
            return;
        };
        let shared = Arc::clone(&c.shared);
        let key = self.conns.insert(*c);
        {
            let mut route = shared.route.lock();
            if Arc::ptr_eq(&route.mailbox, &self.mailbox) {
                route.key = key;
            }
        }
        self.arriving.insert(shared.id, Arriving { key, settled: false, forwarded: false });
        let _ = self.mailbox.post(Mail::Settled { id: shared.id });
        if let Err(e) = self.conns[key].sock.register(self.poll.registry(), token(key)) {
            return self.finish(key, CloseReason::Io(e));
        }
        self.after(key, Next::Read);
    }

    /// All mail posted before connection `id` moved here has arrived: the
    /// mail held back goes on.
    pub(super) fn forward_done(&mut self, id: u64) {
        let Some(a) = self.arriving.get_mut(&id) else { return };
        a.forwarded = true;
        let (key, done) = (a.key, a.settled);
        if done {
            self.arriving.remove(&id);
        }
        let held = self.conns.get_mut(key).and_then(|c| c.held.take()).unwrap_or_default();
        for mail in *held {
            self.apply(key, mail);
        }
    }

    /// No more keyless mail can come for connection `id`.
    pub(super) fn settled(&mut self, id: u64) {
        let Some(a) = self.arriving.get_mut(&id) else { return };
        a.settled = true;
        if a.forwarded {
            self.arriving.remove(&id);
        }
    }
}
