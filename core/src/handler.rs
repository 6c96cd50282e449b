//! The [`Handler`] trait: what a server does with each connection.

use std::fmt;

use crate::close::CloseReason;
use crate::conn::Conn;
use crate::framing::{FrameError, Framing};
use crate::link::LinkEvent;

/// What the server should do with a connection after a callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep the connection open.
    Continue,
    /// Close it once everything queued has been sent (a lingering close: the
    /// peer gets every reply, then EOF, never a reset).
    Close,
}

/// The protocol logic of a server: one value is shared by every connection
/// (it is `Send + Sync`); per-connection state lives in [`Handler::Session`].
///
/// # Lifecycle
///
/// For each connection the server calls, on the worker thread that owns it:
/// 1. [`open`](Handler::open) once, which creates the session (and may
///    refuse the connection with [`Conn::close`]);
/// 2. [`frame`](Handler::frame) for every frame, in order, as the
///    [`framing`](Handler::framing) cuts them, or
///    [`frame_error`](Handler::frame_error) for a frame it had to reject.
///    While a reply promised with [`Conn::defer`] is outstanding, the next
///    frames wait, so replies always leave in request order;
///    [`timer`](Handler::timer) whenever a timer armed with
///    [`Conn::set_timer`] fires;
/// 3. [`eof`](Handler::eof) if the peer ends its sending side, and
///    [`drain`](Handler::drain) once if the server starts shutting down while
///    the connection is open;
/// 4. [`close`](Handler::close) exactly once, with the reason, after which the
///    session is dropped. A connection that [`open`](Handler::open) saw always
///    gets its `close`, whatever ends it.
///
/// Callbacks run on a worker's event loop and must not block: reply through
/// the [`Conn`], hand blocking work to another thread, and send its result
/// back through a [`ConnHandle`](crate::ConnHandle). A panic in a callback is
/// caught: the connection is closed and the panic logged; the worker and its
/// other connections carry on.
///
/// # Example
///
/// A handler that sends each line back reversed:
///
/// ```
/// use switchboard::{Conn, Flow, Framing, Handler};
///
/// struct Reverse;
///
/// impl Handler for Reverse {
///     type Session = ();
///     fn framing(&self) -> Framing {
///         Framing::lines(1024)
///     }
///     fn open(&self, _conn: &mut Conn<'_>) {}
///     fn frame(&self, _: &mut (), line: &[u8], conn: &mut Conn<'_>) -> Flow {
///         let mut reply: String = String::from_utf8_lossy(line).chars().rev().collect();
///         reply.push('\n');
///         conn.send(reply.as_bytes());
///         Flow::Continue
///     }
/// }
/// ```
pub trait Handler: Send + Sync + 'static {
    /// Per-connection state, created by [`open`](Handler::open) and dropped
    /// after [`close`](Handler::close).
    type Session: Send + 'static;

    /// How the connection's bytes are cut into frames. Called once per
    /// connection, when it opens. Default: [`Framing::Raw`].
    fn framing(&self) -> Framing {
        Framing::Raw
    }

    /// Deferred replies ([`Conn::defer`]) a connection may have in progress
    /// at once before its next frames wait: `None` (the default) takes the
    /// server's [`max_deferred`](crate::ServerBuilder::max_deferred). A
    /// handler whose next frames depend on what a deferred reply's work
    /// decides (a login, say) returns `Some(1)`: one at a time, as if
    /// requests were not pipelined. Called once, when the server starts;
    /// clamped to 1..=1024.
    fn max_deferred(&self) -> Option<usize> {
        None
    }

    /// Lines framing: whether a last line the peer ended with EOF instead
    /// of a line ending is still a frame (delivered before
    /// [`eof`](Handler::eof)). Default: no, it is dropped, unless the
    /// server's [`accept_unterminated`](crate::ServerBuilder::accept_unterminated)
    /// is on. A request/reply protocol whose clients may write one request
    /// and half-close returns `true`. Called as each connection opens.
    fn last_line_at_eof(&self) -> bool {
        false
    }

    /// A connection opened; create its session. Anything sent through `conn`
    /// here (a greeting) goes out first. To refuse the connection, send the
    /// reason and call [`Conn::close`]: it closes once that is delivered.
    fn open(&self, conn: &mut Conn<'_>) -> Self::Session;

    /// One frame arrived. Replies queued on `conn` leave in order.
    fn frame(&self, session: &mut Self::Session, frame: &[u8], conn: &mut Conn<'_>) -> Flow;

    /// A frame was rejected by the framing (for example a line over the
    /// maximum); its bytes are skipped and never held past the maximum.
    /// Default: log it and close the connection. A handler that answers with
    /// an error line and returns [`Flow::Continue`] keeps the connection,
    /// unless the error [is fatal](FrameError::is_fatal).
    fn frame_error(&self, session: &mut Self::Session, error: FrameError, conn: &mut Conn<'_>) -> Flow {
        let _ = session;
        log::info!("{}: {error}; closing", conn.peer_addr());
        Flow::Close
    }

    /// The peer finished sending (EOF; it may still be reading). Replies
    /// queued here are delivered before the connection closes; an
    /// incomplete frame left at EOF is dropped. Default: nothing.
    fn eof(&self, session: &mut Self::Session, conn: &mut Conn<'_>) {
        let _ = (session, conn);
    }

    /// The server started a graceful shutdown. Frames keep arriving and being
    /// served until the connection has been quiet for the quiet period; this
    /// is the place to say goodbye. Default: nothing.
    fn drain(&self, session: &mut Self::Session, conn: &mut Conn<'_>) -> Flow {
        let _ = (session, conn);
        Flow::Continue
    }

    /// Timer `id`, armed with [`Conn::set_timer`], fired (once; arm it again
    /// for another). Timers still armed when the connection closes never
    /// fire. Default: nothing.
    fn timer(&self, session: &mut Self::Session, id: u64, conn: &mut Conn<'_>) -> Flow {
        let _ = (session, id, conn);
        Flow::Continue
    }

    /// The connection's queue drained below the low-water mark (half the
    /// high-water mark) after it had gone over the high-water mark: the
    /// place for a producer living in the session to send more. Called on
    /// the connection's worker. Producers on other threads wait with
    /// [`ConnHandle::wait_below`](crate::ConnHandle::wait_below) instead.
    /// Default: nothing.
    fn on_drained(&self, session: &mut Self::Session, conn: &mut Conn<'_>) -> Flow {
        let _ = (session, conn);
        Flow::Continue
    }

    /// Something happened on the connection's link (its outbound
    /// connection, opened with [`Conn::connect`]): `conn` is this
    /// connection's, with [`Conn::link`] to write to the link. Returning
    /// [`Flow::Close`] closes this connection (gracefully; its link is
    /// flushed and shut with it).
    ///
    /// Default: a transparent relay back to the peer, for raw framing:
    /// [`LinkEvent::Frame`] is sent as it is, [`LinkEvent::Eof`]
    /// half-closes this connection ([`Conn::shutdown_write`]), and
    /// [`LinkEvent::Closed`] closes it.
    fn link(&self, session: &mut Self::Session, event: LinkEvent<'_>, conn: &mut Conn<'_>) -> Flow {
        let _ = session;
        match event {
            LinkEvent::Frame(bytes) => conn.send(bytes),
            LinkEvent::Eof => conn.shutdown_write(),
            LinkEvent::Closed(_) => return Flow::Close,
            _ => {}
        }
        Flow::Continue
    }

    /// The connection closed, for `reason`; the session is dropped after this.
    fn close(&self, session: Self::Session, reason: &CloseReason) {
        let _ = (session, reason);
    }

    /// The bytes a client gets when the server cannot take it (the
    /// connection limit is reached, or the process is out of descriptors)
    /// before its connection is closed; no session is created for it. Called
    /// once, when the server starts; override it to answer in the
    /// protocol's own framing. Default: the line `! server busy`.
    fn busy_reply(&self) -> Vec<u8> {
        b"! server busy\n".to_vec()
    }

    /// The server has stopped: every connection closed, every worker
    /// joined and every [`Service`](crate::Service) beside it joined. Stop
    /// and join the handler's own threads here (a pool, a bridge to other
    /// servers), so none outlives the report that
    /// [`Server::wait`](crate::Server::wait) returns next. Called once per
    /// server; a value shared by several (`Arc<H>`) hears it from each, so
    /// it must do nothing the second time, and the first server to stop
    /// ends the threads for all: share one with servers that stop together
    /// (a UDP side beside its TCP server is stopped before this). Default:
    /// nothing.
    fn stop(&self) {}
}

/// A [`Handler`] made from a framing and a closure, for stateless protocols.
///
/// ```
/// use switchboard::{handler_fn, Flow, Framing};
///
/// let upper_lines = handler_fn(Framing::lines(1024), |line, conn| {
///     conn.send(&line.to_ascii_uppercase());
///     conn.send(b"\n");
///     Flow::Continue
/// });
/// # let _ = upper_lines;
/// ```
pub fn handler_fn<F>(framing: Framing, f: F) -> FnHandler<F>
where
    F: Fn(&[u8], &mut Conn<'_>) -> Flow + Send + Sync + 'static,
{
    FnHandler { framing, f }
}

/// The handler returned by [`handler_fn`].
pub struct FnHandler<F> {
    framing: Framing,
    f: F,
}

impl<F> fmt::Debug for FnHandler<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnHandler").field("framing", &self.framing).finish_non_exhaustive()
    }
}

impl<F> Handler for FnHandler<F>
where
    F: Fn(&[u8], &mut Conn<'_>) -> Flow + Send + Sync + 'static,
{
    type Session = ();

    fn framing(&self) -> Framing {
        self.framing
    }

    fn open(&self, _conn: &mut Conn<'_>) {}

    fn frame(&self, _: &mut (), frame: &[u8], conn: &mut Conn<'_>) -> Flow {
        (self.f)(frame, conn)
    }
}
