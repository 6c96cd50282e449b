//! A connection's one file region on its way to the peer, and the pool job
//! that answers a request which must wait for it.
//!
//! Each file region holds a descriptor, so a connection has at most one
//! unwritten: a request that may be answered with one (`get`, `list`) while
//! the region sent before it is still queued goes to the server's blocking
//! pool, which looks again after 1 ms, then less and less often (at most
//! every [`MAX_RECHECK`]), between the other connections' turns. The
//! handler takes one deferred reply at a time, so meanwhile the core hands
//! it no more requests: a client that never reads pins one descriptor,
//! however much it asks, and nothing it asked is refused or lost.

use std::fs::File;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use switchboard::Deferred;

use super::{Inner, Request};

/// The first look at a connection blocked behind its file region.
const FIRST_RECHECK: Duration = Duration::from_millis(1);
/// The longest a blocked connection waits between two looks.
const MAX_RECHECK: Duration = Duration::from_millis(50);

/// The last file region handed to a connection: alive until written (or
/// dropped with the connection). Shared by the session and its pool job.
#[derive(Debug, Default, Clone)]
pub(crate) struct LastRegion(Arc<Mutex<Option<Weak<File>>>>);

impl LastRegion {
    /// Whether the region sent last is not yet written.
    pub(crate) fn in_flight(&self) -> bool {
        self.0.lock().as_ref().is_some_and(|w| w.strong_count() > 0)
    }

    /// Remembers the file region just handed to the connection.
    pub(crate) fn sent(&self, file: &Arc<File>) {
        *self.0.lock() = Some(Arc::downgrade(file));
    }
}

/// Answers `request` on the pool once the connection's last file region
/// has been written, if it must wait for that; `wait` is the last pause.
pub(crate) fn answer(inner: Arc<Inner>, last: LastRegion, request: Request, reply: Deferred, wait: Duration) {
    // Gone: nothing to prepare.
    if reply.handle().is_closed() {
        return;
    }
    if request.may_send_file() && last.in_flight() {
        let wait = (wait * 2).clamp(FIRST_RECHECK, MAX_RECHECK);
        // Only a stopping server refuses: then the promise ends unanswered.
        let _ = reply.spawn_blocking(wait, move |reply| answer(inner, last, request, reply, wait));
        return;
    }
    let prepared = inner.reply(request);
    if !prepared.header.is_empty() && reply.send(prepared.header).is_err() {
        return;
    }
    if let Some((file, size)) = prepared.file {
        if reply.send_file(Arc::clone(&file), 0, size).is_ok() {
            last.sent(&file);
        }
    }
}
