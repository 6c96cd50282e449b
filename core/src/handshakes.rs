//! The TLS handshake pool: a few threads that run the first handshake step
//! of every worker's new TLS connections (the ClientHello in, the server's
//! flight out), so the costly part of a connection (the server's signature
//! and key exchange: about 1 ms of CPU for RSA-2048, many times that in a
//! debug build) never runs on an event loop between the reads and writes of
//! established connections.
//!
//! A worker hands a new connection's `TlsStream` over with the
//! connection's key when its socket first becomes readable; a pool thread
//! moves the handshake on as far as the socket allows and posts the stream
//! back to the worker's mailbox with the outcome. The steps after that
//! (the client's Finished) are cheap and run on the worker. The queue is
//! bounded: past it a worker refuses the handshake (closes the connection,
//! logs and counts it) rather than let the backlog grow beyond what the
//! pool can finish within the handshake timeout. Pool threads run at a
//! lower priority (`nice` +10) than the workers, so under a handshake flood
//! the kernel still runs a worker as soon as an established connection has
//! bytes.

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::mailbox::{ConnKey, Mail, Mailbox};
use crate::tls::{Handshake, TlsStream};

/// The nice value of a pool thread: the workers (0) come first.
const POOL_NICE: i32 = 10;

/// A handshake step to run: a connection's stream, and where it goes back.
pub(crate) struct Job {
    pub(crate) stream: Box<TlsStream>,
    pub(crate) key: ConnKey,
    pub(crate) mailbox: Arc<Mailbox>,
}

/// The workers' end of the pool: where they queue steps.
#[derive(Clone, Debug)]
pub(crate) struct Pool {
    tx: Sender<Job>,
}

/// Why a step was not queued.
pub(crate) enum Refused {
    /// The queue holds its limit of steps; the stream comes back.
    Full(Box<TlsStream>),
    /// The pool has stopped (the server is shutting down).
    Stopped(Box<TlsStream>),
}

impl Pool {
    /// A pool whose queue holds `backlog` steps, and the receiving end its
    /// threads share.
    pub(crate) fn new(backlog: usize) -> (Pool, Receiver<Job>) {
        let (tx, rx) = crossbeam_channel::bounded(backlog);
        (Pool { tx }, rx)
    }

    /// Queues a step without waiting.
    pub(crate) fn submit(&self, job: Job) -> Result<(), Refused> {
        self.tx.try_send(job).map_err(|e| match e {
            TrySendError::Full(job) => Refused::Full(job.stream),
            TrySendError::Disconnected(job) => Refused::Stopped(job.stream),
        })
    }

    /// Steps queued now.
    pub(crate) fn queued(&self) -> usize {
        self.tx.len()
    }
}

/// A pool thread: runs steps until every worker has dropped its end.
pub(crate) fn run(rx: Receiver<Job>) {
    // Linux: a thread's nice value is its own (PRIO_PROCESS with pid 0).
    if let Err(e) = rustix::process::setpriority_process(None, POOL_NICE) {
        log::debug!("handshake thread: cannot lower its priority: {e}");
    }
    for Job { mut stream, key, mailbox } in rx {
        let step = catch_unwind(AssertUnwindSafe(|| stream.handshake()))
            .unwrap_or_else(|_| Err(io::Error::other("the TLS library panicked during the handshake")));
        // A stopped worker: the stream is dropped with its socket.
        let _ = mailbox.post(Mail::Handshaken { key, stream, step });
    }
}

/// Where a step left the handshake, as the pool posts it back.
pub(crate) type Step = io::Result<Handshake>;
