//! [`Shared`]: a handler the binary keeps a reference to after the server
//! took it, to read its own figures (chat members, file meters).

use std::fmt;
use std::sync::Arc;

use switchboard::{CloseReason, Conn, Flow, FrameError, Framing, Handler};

/// A [`Handler`] behind an `Arc`: the server gets one clone, the binary
/// keeps another (for [`Chat::members`](switchboard_handlers::Chat::members),
/// say). Every callback goes to the inner handler unchanged.
pub struct Shared<H>(pub Arc<H>);

impl<H: fmt::Debug> fmt::Debug for Shared<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<H: Handler> Handler for Shared<H> {
    type Session = H::Session;

    fn framing(&self) -> Framing {
        self.0.framing()
    }

    fn open(&self, conn: &mut Conn<'_>) -> Self::Session {
        self.0.open(conn)
    }

    fn frame(&self, session: &mut Self::Session, frame: &[u8], conn: &mut Conn<'_>) -> Flow {
        self.0.frame(session, frame, conn)
    }

    fn frame_error(&self, session: &mut Self::Session, error: FrameError, conn: &mut Conn<'_>) -> Flow {
        self.0.frame_error(session, error, conn)
    }

    fn eof(&self, session: &mut Self::Session, conn: &mut Conn<'_>) {
        self.0.eof(session, conn)
    }

    fn drain(&self, session: &mut Self::Session, conn: &mut Conn<'_>) -> Flow {
        self.0.drain(session, conn)
    }

    fn timer(&self, session: &mut Self::Session, id: u64, conn: &mut Conn<'_>) -> Flow {
        self.0.timer(session, id, conn)
    }

    fn max_deferred(&self) -> Option<usize> {
        self.0.max_deferred()
    }

    fn on_drained(&self, session: &mut Self::Session, conn: &mut Conn<'_>) -> Flow {
        self.0.on_drained(session, conn)
    }

    fn close(&self, session: Self::Session, reason: &CloseReason) {
        self.0.close(session, reason)
    }

    fn busy_reply(&self) -> Vec<u8> {
        self.0.busy_reply()
    }
}
