//! A worker's inbox: what other threads (the acceptor, connection handles,
//! deferred replies) send to the worker that owns a connection.

use std::any::Any;
use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use crossbeam_channel::Sender;
use mio::Waker;

use crate::admission::{Admission, Load};
use crate::message::Message;
use crate::stream::{Peer, Stream};
use crate::tls::{Handshake, TlsStream};

slotmap::new_key_type! {
    /// Where a connection lives on its worker: a generational key, so a
    /// handle's mail for a connection that closed never reaches the next
    /// connection in the same slot.
    pub(crate) struct ConnKey;
}

/// What a handle queued for its connection, applied by the owning worker in
/// the order queued.
pub(crate) enum Pending {
    /// Bytes; `seq`: the deferred reply's segment ([`Order`](crate::order::Order)),
    /// `None` from a plain handle.
    Send {
        seq: Option<u64>,
        msg: Message,
    },
    SendFile {
        seq: Option<u64>,
        file: Arc<File>,
        offset: u64,
        len: u64,
    },
    /// A [`Deferred`] (of segment `seq`) is done: everything it sent is
    /// ahead of this.
    Release {
        seq: u64,
    },
    /// Shut the write side once everything before is written.
    ShutdownWrite,
    /// Close: a slow consumer (at once) or on request (after flushing).
    Close {
        slow: bool,
    },
}

/// Who a piece of mail is for: the connection's key on the worker it was
/// posted to (null while the connection is moving to that worker) and its
/// id.
#[derive(Debug, Clone, Copy)]
pub(crate) struct To {
    pub(crate) key: ConnKey,
    pub(crate) id: u64,
}

/// Where mail for a connection goes. It changes when the connection moves
/// to another worker; senders hold its lock while they post, so mail posted
/// after a move is behind the moving connection in the new worker's inbox.
pub(crate) struct Route {
    pub(crate) mailbox: Arc<Mailbox>,
    pub(crate) key: ConnKey,
    /// The connection's inbox: what its handles queued and the worker has
    /// not taken yet, in order (behind the same lock, so a connection pays
    /// for one mutex).
    pub(crate) inbox: Vec<Pending>,
}

/// What other threads send to a worker.
pub(crate) enum Mail {
    /// A new connection from the acceptor.
    Conn(Stream, Peer, Admission),
    /// Something is in the connection's inbox (what its handles queued, in
    /// order): one notice for any number of items, posted when the inbox
    /// turns from idle to pending.
    Inbox { to: To },
    /// A connection moving in from a busier worker (a boxed `Connection`).
    Migrate(Box<dyn Any + Send>),
    /// Mail posted to the worker a connection left, before it left.
    Forwarded(Box<Mail>),
    /// The worker connection `id` left has forwarded all its earlier mail.
    ForwardDone { id: u64 },
    /// To the worker a connection left (key there): every mail posted for
    /// it before it left has been seen.
    Moved { key: ConnKey },
    /// To the worker a connection moved to: no more mail without a key can
    /// come for it.
    Settled { id: u64 },
    /// From the handshake pool: connection `key`'s TLS stream back, with
    /// where its handshake step left it.
    Handshaken { key: ConnKey, stream: Box<TlsStream>, step: std::io::Result<Handshake> },
}

/// A worker's inbox: a channel and the waker of its poll.
pub(crate) struct Mailbox {
    pub(crate) tx: Sender<Mail>,
    pub(crate) waker: Arc<Waker>,
    /// A wake is pending: senders skip the system call.
    pub(crate) pending: AtomicBool,
}

impl Mailbox {
    pub(crate) fn post(&self, mail: Mail) -> Result<(), Mail> {
        self.tx.send(mail).map_err(|e| e.into_inner())?;
        // The mail before the flag, as the worker clears the flag before it
        // looks for mail (`take_mail`): one of the two sees the other. A
        // plain load first: while a wake is pending, senders leave the
        // flag's cache line shared rather than bouncing it between cores.
        std::sync::atomic::fence(Ordering::SeqCst);
        if !self.pending.load(Ordering::Relaxed) && !self.pending.swap(true, Ordering::AcqRel) {
            if let Err(e) = self.waker.wake() {
                log::error!("cannot wake a worker: {e}");
            }
        }
        Ok(())
    }
}

/// How the acceptor reaches a worker, and what it knows of its load.
#[derive(Clone)]
pub(crate) struct WorkerLink {
    /// The worker's index (its counters in the stats).
    pub(crate) index: usize,
    pub(crate) mailbox: Arc<Mailbox>,
    /// Connections the worker owns (or has on the way in its mailbox).
    pub(crate) load: Arc<Load>,
    /// How busy the worker's loop was over its last measuring window, in
    /// per mille of wall time spent outside `epoll_wait`.
    pub(crate) busy: Arc<AtomicU32>,
}
