//! Opening a connection: its transport, its preamble (a PROXY header, a
//! TLS handshake, whose first step runs on the handshake pool), then the
//! handler's session.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::admission::Admission;
use crate::close::CloseReason;
use crate::conn::ConnShared;
use crate::connection::{Connection, Cx, End, Next};
use crate::framer::Framer;
use crate::handler::Handler;
use crate::handshakes::{self, Job, Pool, Refused};
use crate::mailbox::ConnKey;
use crate::stats::bump;
use crate::stream::{Peer, Stream};
use crate::tls::TlsStream;
use crate::transport::Transport;

use super::{token, Worker};

/// How often at most a worker logs the handshakes it refused.
const REFUSED_LOG_EVERY: Duration = Duration::from_secs(1);

impl<H: Handler> Worker<H> {
    /// Gives the worker the handshake pool its TLS connections' handshake
    /// steps run on.
    pub(crate) fn set_handshake_pool(&mut self, pool: Pool) {
        self.handshakes = Some(pool);
    }

    /// Calls the handler's `open`: says what next.
    pub(super) fn start_session(&mut self, key: ConnKey) -> Next {
        let Some(c) = self.conns.get_mut(key) else { return Next::Wait };
        log::debug!("{}: connection {} open on worker {}", c.shared.peer, c.shared.id, self.index);
        c.open_session(&cx!(self))
    }

    /// A connection from the acceptor: its transport, its slot, its
    /// registration, and its session at once if it has no preamble.
    pub(super) fn open(&mut self, sock: Stream, peer: Peer, admission: Admission) {
        let config = &self.shared.config;
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        // A fresh reading, not this turn's: the connection's handshake and
        // idle deadlines must not start before it was accepted.
        let (mailbox, now) = (&self.mailbox, Instant::now());
        let rules = &self.rules;
        let last_line = config.accept_unterminated.is_some() || self.handler.last_line_at_eof();
        let framer = Framer::new(rules.framing).unterminated(last_line);
        let sock = match Transport::new(sock, &config.transport, now) {
            Ok(sock) => sock,
            Err(e) => {
                log::warn!("{peer}: cannot set up the connection: {e}; closing");
                bump(&self.counters().closed);
                return;
            }
        };
        let key = self.conns.insert_with_key(|key| {
            let shared = ConnShared::new(id, key, peer, Arc::clone(rules), Arc::clone(mailbox));
            Connection::new(sock, Arc::new(shared), framer, admission, now)
        });
        let c = &mut self.conns[key];
        let next = if let Err(e) = c.sock.register(self.poll.registry(), token(key)) {
            log::warn!("{peer}: cannot register the connection: {e}; closing");
            Next::End(End::Now(CloseReason::Io(e)))
        } else if !c.sock.is_ready() {
            // A PROXY header or a TLS handshake first (`Next::Preamble`
            // when the socket is readable).
            log::debug!("{peer}: connection {id} on worker {}: awaiting its preamble", self.index);
            Next::Wait
        } else {
            self.start_session(key)
        };
        self.after(key, next);
    }

    /// Queues a new connection's first TLS handshake step (the server's
    /// flight, with its signature) on the pool; refuses the handshake when
    /// the pool's queue is full. A begun handshake (what is left: the
    /// client's Finished, a MAC and a key derivation) takes its steps here,
    /// saving two thread hand-offs. Says what next; the step on the pool
    /// comes back as mail ([`handshaken`](Worker::handshaken)).
    pub(super) fn offload(&mut self, key: ConnKey, mut stream: Box<TlsStream>) -> Next {
        let begun = self.conns.get(key).is_some_and(|c| c.sock.handshake_begun());
        let pool = match &self.handshakes {
            Some(pool) if !begun => pool,
            // (Or no pool: not started under TLS.)
            _ => {
                let step = stream.handshake();
                return self.stepped(key, stream, step);
            }
        };
        let job = Job { stream, key, mailbox: Arc::clone(&self.mailbox) };
        match pool.submit(job) {
            Ok(()) => Next::Wait,
            Err(Refused::Full(stream)) => {
                drop(stream);
                bump(&self.counters().tls_handshakes_refused);
                self.refused.0 += 1;
                self.log_refused();
                Next::End(End::Now(CloseReason::HandshakeRefused))
            }
            Err(Refused::Stopped(stream)) => {
                drop(stream);
                Next::End(End::Now(CloseReason::Forced))
            }
        }
    }

    /// Logs the handshakes refused since the last such line, once a second
    /// at most (the sweep logs the rest of a burst).
    pub(super) fn log_refused(&mut self) {
        let due = self.refused.1.is_none_or(|t| self.now.duration_since(t) >= REFUSED_LOG_EVERY);
        if self.refused.0 > 0 && due {
            let queued = self.handshakes.as_ref().map_or(0, Pool::queued);
            log::warn!(
                "worker {}: TLS handshake queue full: {} connection(s) closed before their handshake ({queued} waiting now)",
                self.index,
                self.refused.0
            );
            self.refused = (0, Some(self.now));
        }
    }

    /// A handshake step came back from the pool.
    pub(super) fn handshaken(&mut self, key: ConnKey, stream: Box<TlsStream>, step: handshakes::Step) {
        let next = self.stepped(key, stream, step);
        self.after(key, next);
    }

    /// A handshake step is done: its connection takes the stream back and
    /// says what next. A connection closed meanwhile (its handshake timed
    /// out): the stream and its socket are dropped here.
    fn stepped(&mut self, key: ConnKey, stream: Box<TlsStream>, step: handshakes::Step) -> Next {
        match self.conns.get_mut(key) {
            Some(c) => c.stepped(&self.shared.stats.workers[self.index], stream, step),
            None => Next::Wait,
        }
    }
}
