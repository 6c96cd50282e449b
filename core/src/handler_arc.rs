//! A handler shared by several servers: `Arc<H>` is a [`Handler`] (and a
//! [`DatagramHandler`]) whenever `H` is, so one value (a chat room) can
//! serve TCP and UDP at once.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::close::CloseReason;
use crate::conn::Conn;
use crate::datagram::{DatagramHandler, PeerClose, Reply};
use crate::framing::{FrameError, Framing};
use crate::handler::{Flow, Handler};
use crate::link::LinkEvent;

impl<H: Handler> Handler for Arc<H> {
    type Session = H::Session;

    fn framing(&self) -> Framing {
        (**self).framing()
    }

    fn open(&self, conn: &mut Conn<'_>) -> H::Session {
        (**self).open(conn)
    }

    fn frame(&self, session: &mut H::Session, frame: &[u8], conn: &mut Conn<'_>) -> Flow {
        (**self).frame(session, frame, conn)
    }

    fn frame_error(&self, session: &mut H::Session, error: FrameError, conn: &mut Conn<'_>) -> Flow {
        (**self).frame_error(session, error, conn)
    }

    fn eof(&self, session: &mut H::Session, conn: &mut Conn<'_>) {
        (**self).eof(session, conn)
    }

    fn drain(&self, session: &mut H::Session, conn: &mut Conn<'_>) -> Flow {
        (**self).drain(session, conn)
    }

    fn timer(&self, session: &mut H::Session, id: u64, conn: &mut Conn<'_>) -> Flow {
        (**self).timer(session, id, conn)
    }

    fn max_deferred(&self) -> Option<usize> {
        (**self).max_deferred()
    }

    fn last_line_at_eof(&self) -> bool {
        (**self).last_line_at_eof()
    }

    fn on_drained(&self, session: &mut H::Session, conn: &mut Conn<'_>) -> Flow {
        (**self).on_drained(session, conn)
    }

    fn link(&self, session: &mut H::Session, event: LinkEvent<'_>, conn: &mut Conn<'_>) -> Flow {
        (**self).link(session, event, conn)
    }

    fn close(&self, session: H::Session, reason: &CloseReason) {
        (**self).close(session, reason)
    }

    fn busy_reply(&self) -> Vec<u8> {
        (**self).busy_reply()
    }

    fn stop(&self) {
        (**self).stop()
    }
}

impl<H: DatagramHandler> DatagramHandler for Arc<H> {
    type Peer = H::Peer;

    fn open(&self, out: &mut Reply<'_>) -> H::Peer {
        (**self).open(out)
    }

    fn datagram(&self, peer: &mut H::Peer, data: &[u8], out: &mut Reply<'_>) -> Flow {
        (**self).datagram(peer, data, out)
    }

    fn drain(&self, peer: &mut H::Peer, out: &mut Reply<'_>) {
        (**self).drain(peer, out)
    }

    fn close(&self, peer: H::Peer, addr: SocketAddr, reason: PeerClose) {
        (**self).close(peer, addr, reason)
    }

    fn keeps_peers(&self) -> bool {
        (**self).keeps_peers()
    }
}
