//! The admin endpoint's handler: one HTTP/1.x request per connection,
//! parsed with `httparse`, answered, then the connection is closed.

use std::sync::Arc;

use switchboard::{CloseReason, Conn, Flow, Framing, Handler, Phase};

use super::{json, metrics, View, JOIN_AFTER, MAX_REQUEST, REQUEST_TIMEOUT};

/// The status page: HTML with its CSS, JavaScript and SVG inline.
const STATUS_PAGE: &str = include_str!("status.html");

/// The id of the request deadline timer.
const DEADLINE: u64 = 1;

/// The id of the timer after which a silent connection takes a waiting place.
const JOIN: u64 = 2;

/// Headers a request may carry.
const MAX_HEADERS: usize = 64;

/// Serves the admin routes over `view`.
pub(crate) struct AdminHttp {
    view: Arc<View>,
}

impl AdminHttp {
    pub(crate) fn new(view: Arc<View>) -> AdminHttp {
        AdminHttp { view }
    }

    /// The request is done with (answered, timed out, closed): the
    /// connection gives its waiting place back. `false`: it had been closed
    /// to make room.
    fn settle(&self, session: &mut Session) -> bool {
        match std::mem::replace(&mut session.state, State::Answered) {
            State::Reading { waiting: true, .. } => self.view.admission.leave(session.id),
            _ => true,
        }
    }
}

/// A connection: its id (its place in the [`Admission`](super::admission)
/// table) and its request.
#[derive(Debug)]
pub(crate) struct Session {
    id: u64,
    state: State,
}

/// A connection's request, until it is answered.
#[derive(Debug)]
enum State {
    /// Bytes of the request so far (at most [`MAX_REQUEST`]); `waiting`:
    /// past [`JOIN_AFTER`] without a whole request, it holds a waiting place.
    Reading { buf: Vec<u8>, waiting: bool },
    /// Answered (or closed to make room); anything more the client sends is
    /// ignored.
    Answered,
}

/// A response: status, content type, body, a header line of its own.
struct Response {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    header: &'static str,
}

impl Response {
    fn text(status: u16, body: &str) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.as_bytes().to_vec(),
            header: "",
        }
    }

    /// Too many connections: `429`, distinct from draining's `503`; `why`
    /// ends the body.
    fn busy(why: &str) -> Response {
        Response {
            header: "Retry-After: 1\r\n",
            ..Response::text(429, &format!("admin endpoint busy: {why}\n"))
        }
    }

    fn encode(&self, head_only: bool) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            429 => "Too Many Requests",
            431 => "Request Header Fields Too Large",
            505 => "HTTP Version Not Supported",
            _ => "Service Unavailable",
        };
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
             Cache-Control: no-store\r\nConnection: close\r\n",
            self.status,
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        out.extend_from_slice(self.header.as_bytes());
        out.extend_from_slice(b"\r\n");
        if !head_only {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

/// What a complete request asks for.
fn route(view: &View, method: &str, path: &str) -> Response {
    if method != "GET" && method != "HEAD" {
        return Response {
            header: "Allow: GET, HEAD\r\n",
            ..Response::text(405, "method not allowed: use GET\n")
        };
    }
    let path = path.split('?').next().unwrap_or(path);
    match path {
        "/metrics" => Response {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: metrics::render(view).into_bytes(),
            header: "",
        },
        "/healthz" => match view.shutdown.phase() {
            Phase::Running => Response::text(200, "ok\n"),
            phase => Response::text(503, &format!("{phase}\n")),
        },
        "/stats.json" => Response {
            status: 200,
            content_type: "application/json",
            body: json::render(view).into_bytes(),
            header: "",
        },
        "/" | "/index.html" => Response {
            status: 200,
            content_type: "text/html; charset=utf-8",
            body: STATUS_PAGE.as_bytes().to_vec(),
            header: "",
        },
        _ => Response::text(404, "not found: try /, /metrics, /healthz or /stats.json\n"),
    }
}

/// Parses what has arrived: the response once the request is complete (or
/// bad, or too long), `None` while more is needed.
fn answer(view: &View, buf: &[u8]) -> Option<(Response, bool)> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(_)) => {
            let (method, path) = (req.method.unwrap_or(""), req.path.unwrap_or(""));
            Some((route(view, method, path), method == "HEAD"))
        }
        Ok(httparse::Status::Partial) if buf.len() >= MAX_REQUEST => {
            Some((Response::text(431, "request too large\n"), false))
        }
        Ok(httparse::Status::Partial) => None,
        Err(httparse::Error::Version) => Some((Response::text(505, "HTTP/1.x only\n"), false)),
        Err(httparse::Error::TooManyHeaders) => Some((Response::text(431, "too many headers\n"), false)),
        Err(e) => Some((Response::text(400, &format!("bad request: {e}\n")), false)),
    }
}

impl Handler for AdminHttp {
    type Session = Session;

    fn framing(&self) -> Framing {
        Framing::Raw
    }

    fn open(&self, conn: &mut Conn<'_>) -> Session {
        if !conn.set_timer(DEADLINE, REQUEST_TIMEOUT) || !conn.set_timer(JOIN, JOIN_AFTER) {
            log::warn!("{}: admin: no timer for the request deadline", conn.peer_addr());
        }
        Session { id: conn.id(), state: State::Reading { buf: Vec::new(), waiting: false } }
    }

    fn frame(&self, session: &mut Session, frame: &[u8], conn: &mut Conn<'_>) -> Flow {
        let State::Reading { buf, .. } = &mut session.state else { return Flow::Continue };
        let room = MAX_REQUEST - buf.len();
        buf.extend_from_slice(&frame[..frame.len().min(room)]);
        let Some((response, head_only)) = answer(&self.view, buf) else { return Flow::Continue };
        conn.cancel_timer(DEADLINE);
        conn.cancel_timer(JOIN);
        if !self.settle(session) {
            // Closed to make room meanwhile: its 429 and close are on their way.
            return Flow::Continue;
        }
        if response.status >= 400 && response.status != 404 && response.status != 405 {
            log::info!("{}: admin: {} to a request", conn.peer_addr(), response.status);
        }
        conn.send(response.encode(head_only));
        Flow::Close
    }

    fn eof(&self, session: &mut Session, conn: &mut Conn<'_>) {
        if let State::Reading { buf, .. } = &session.state {
            if !buf.is_empty() {
                log::info!("{}: admin: the client ended an incomplete request", conn.peer_addr());
            }
        }
    }

    fn timer(&self, session: &mut Session, id: u64, conn: &mut Conn<'_>) -> Flow {
        let State::Reading { waiting, .. } = &mut session.state else { return Flow::Close };
        if id == JOIN {
            // Still no whole request: it takes a waiting place now.
            *waiting = true;
            if let Some(evicted) = self.view.admission.admit(session.id, conn.peer_addr(), conn.handle()) {
                let _ = evicted.send(Response::busy("closed to make room").encode(false));
                evicted.close();
            }
            return Flow::Continue;
        }
        if !self.settle(session) {
            return Flow::Continue;
        }
        log::info!("{}: admin: no whole request within {REQUEST_TIMEOUT:?}; 408", conn.peer_addr());
        conn.send(Response::text(408, "request timeout\n").encode(false));
        Flow::Close
    }

    fn close(&self, mut session: Session, reason: &CloseReason) {
        self.settle(&mut session);
        if !reason.is_normal() {
            log::debug!("admin connection closed: {reason}");
        }
    }

    fn busy_reply(&self) -> Vec<u8> {
        Response::busy("too many connections").encode(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_carry_length_and_close() {
        let r = Response::text(404, "nope\n").encode(false);
        let text = String::from_utf8(r).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"), "{text}");
        assert!(text.contains("\r\nContent-Length: 5\r\n"), "{text}");
        assert!(text.contains("\r\nConnection: close\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\nnope\n"), "{text}");
        let head = String::from_utf8(Response::text(200, "ok\n").encode(true)).unwrap();
        assert!(head.ends_with("\r\n\r\n") && head.contains("Content-Length: 3"), "{head}");
    }
}
