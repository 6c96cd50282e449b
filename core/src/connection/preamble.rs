//! The connection's preamble (a PROXY header, a TLS handshake) as
//! transitions like the others: each takes the step its transport made and
//! says what the worker must do next ([`Next`]). The worker runs a
//! handshake step on its pool and opens the session; nothing here calls
//! back into it.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::close::CloseReason;
use crate::handshakes::Step;
use crate::stats::{bump, WorkerCounters};
use crate::stream::Peer;
use crate::tls::TlsStream;
use crate::transport::{Advance, Transport};

use super::{Connection, End, Next};

impl<S> Connection<S, Transport> {
    /// The socket is readable during the preamble: moves it on as far as
    /// the socket allows.
    pub(crate) fn advance(&mut self, counters: &WorkerCounters) -> Next {
        let advanced = self.sock.advance();
        self.preamble(counters, advanced)
    }

    /// A handshake step (on the pool, or on the worker once the handshake
    /// has begun) is done: the stream is back.
    pub(crate) fn stepped(&mut self, counters: &WorkerCounters, stream: Box<TlsStream>, step: Step) -> Next {
        let advanced = self.sock.step_done(stream, step);
        self.preamble(counters, advanced)
    }

    /// Where the preamble stands after a step: wait for the peer (and
    /// write what the handshake has to send: [`wants_flush`]), run a
    /// handshake step, open the session, or close.
    ///
    /// [`wants_flush`]: Connection::wants_flush
    fn preamble(&mut self, counters: &WorkerCounters, advanced: Result<Advance, CloseReason>) -> Next {
        match advanced {
            Ok(Advance::Pending) => Next::Wait,
            Ok(Advance::Handshake(stream)) => Next::Handshake(stream),
            Ok(Advance::Ready(client)) => {
                if let Some(client) = client {
                    self.proxied(client);
                }
                if self.sock.is_tls() {
                    bump(&counters.tls_handshakes);
                }
                Next::Open
            }
            Err(reason) => Next::End(End::Now(reason)),
        }
    }

    /// A PROXY header named the client: it is the peer from now on (the
    /// connection is not shared before its session opens).
    fn proxied(&mut self, client: SocketAddr) {
        match Arc::get_mut(&mut self.shared) {
            Some(shared) => {
                log::debug!("{}: connection {} is from {client} (PROXY header)", shared.peer, shared.id);
                shared.peer = Peer::Ip(client);
            }
            None => log::error!("{}: the connection is shared before it opened", self.shared.peer),
        }
    }
}
