//! The one place a connection leaves its worker (but for a move): it is
//! deregistered, its queue and link dropped, its close counted and logged,
//! and its handler's `close` called before it leaves `open`.

use std::sync::atomic::Ordering;

use crate::close::CloseReason;
use crate::connection::{guarded, End};
use crate::handler::Handler;
use crate::mailbox::ConnKey;
use crate::order::Order;
use crate::stats::bump;

use super::Worker;

impl<H: Handler> Worker<H> {
    /// Closes now, dropping anything queued.
    pub(super) fn finish(&mut self, key: ConnKey, reason: CloseReason) {
        self.end(key, End::Now(reason));
    }

    /// Removes connection `key`, ending as `end` says: the one place a
    /// connection leaves its worker (but for a move). The close is counted
    /// and the handler's `close` runs before the connection leaves `open`
    /// (the order documented on [`Stats`](crate::Stats)).
    pub(super) fn end(&mut self, key: ConnKey, end: End) {
        let Some(mut c) = self.conns.remove(key) else { return };
        let _ = c.sock.deregister(self.poll.registry());
        c.shared.closed.store(true, Ordering::Release);
        c.shared.wake_producers();
        // What handles queued and the worker never took goes with it.
        c.shared.take_inbox(&mut self.inbox);
        self.inbox.clear();
        c.drop_link(&self.shared.stats.workers[self.index].queued);
        let dropped = c.out.clear(&self.shared.stats.workers[self.index].queued) + Order::clear(&mut c.order);
        c.shared.sub_queued(dropped.min(c.shared.queued()));
        let stats = &self.shared.stats;
        let counters = &stats.workers[self.index];
        let (peer, id) = (c.shared.peer, c.shared.id);
        let (session, reason, admission) = c.end(end);
        match reason {
            CloseReason::IdleTimeout | CloseReason::FrameTimeout | CloseReason::HandshakeTimeout => {
                bump(&counters.timed_out)
            }
            CloseReason::Forced => bump(&counters.forced_closes),
            _ => {}
        }
        bump(&counters.closed);
        if self.draining {
            if matches!(reason, CloseReason::Forced) {
                self.report.forced += 1;
            } else if reason.is_normal() {
                self.report.drained += 1;
            }
        }
        if reason.is_notable() {
            log::info!("{peer}: connection {id} closed: {reason}");
        } else {
            log::debug!("{peer}: connection {id} closed: {reason}");
        }
        if let Some(session) = session {
            let handler = &self.handler;
            if guarded(stats, || handler.close(session, &reason)).is_none() {
                log::error!("{peer}: connection {id}: the handler panicked in close");
            }
        }
        // The connection leaves `open` last.
        drop(admission);
    }
}
