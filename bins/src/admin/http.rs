//! The admin endpoint's handler: one HTTP/1.x request per connection,
//! parsed with `httparse`, answered, then the connection is closed.

use std::sync::Arc;

use switchboard::{CloseReason, Conn, Flow, Framing, Handler, Phase};

use super::{json, metrics, View, MAX_REQUEST, REQUEST_TIMEOUT};

/// The status page: HTML with its CSS, JavaScript and SVG inline.
const STATUS_PAGE: &str = include_str!("status.html");

/// The id of the request deadline timer.
const DEADLINE: u64 = 1;

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
}

/// A connection's request, until it is answered.
#[derive(Debug)]
pub(crate) enum Session {
    /// Bytes of the request so far (at most [`MAX_REQUEST`]).
    Reading(Vec<u8>),
    /// Answered; anything more the client sends is ignored.
    Answered,
}

/// A response: status, content type, body.
struct Response {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    allow: bool,
}

impl Response {
    fn text(status: u16, body: &str) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.as_bytes().to_vec(),
            allow: false,
        }
    }

    fn encode(&self, head_only: bool) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
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
        if self.allow {
            out.extend_from_slice(b"Allow: GET, HEAD\r\n");
        }
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
        return Response { allow: true, ..Response::text(405, "method not allowed: use GET\n") };
    }
    let path = path.split('?').next().unwrap_or(path);
    match path {
        "/metrics" => Response {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: metrics::render(view).into_bytes(),
            allow: false,
        },
        "/healthz" => match view.shutdown.phase() {
            Phase::Running => Response::text(200, "ok\n"),
            phase => Response::text(503, &format!("{phase}\n")),
        },
        "/stats.json" => Response {
            status: 200,
            content_type: "application/json",
            body: json::render(view).into_bytes(),
            allow: false,
        },
        "/" | "/index.html" => Response {
            status: 200,
            content_type: "text/html; charset=utf-8",
            body: STATUS_PAGE.as_bytes().to_vec(),
            allow: false,
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
        if !conn.set_timer(DEADLINE, REQUEST_TIMEOUT) {
            log::warn!("{}: admin: no timer for the request deadline", conn.peer_addr());
        }
        Session::Reading(Vec::new())
    }

    fn frame(&self, session: &mut Session, frame: &[u8], conn: &mut Conn<'_>) -> Flow {
        let Session::Reading(buf) = session else { return Flow::Close };
        let room = MAX_REQUEST - buf.len();
        buf.extend_from_slice(&frame[..frame.len().min(room)]);
        let Some((response, head_only)) = answer(&self.view, buf) else { return Flow::Continue };
        if response.status >= 400 && response.status != 404 && response.status != 405 {
            log::info!("{}: admin: {} to a request", conn.peer_addr(), response.status);
        }
        conn.send(response.encode(head_only).as_slice());
        conn.cancel_timer(DEADLINE);
        *session = Session::Answered;
        Flow::Close
    }

    fn eof(&self, session: &mut Session, conn: &mut Conn<'_>) {
        if let Session::Reading(buf) = session {
            if !buf.is_empty() {
                log::info!("{}: admin: the client ended an incomplete request", conn.peer_addr());
            }
        }
    }

    fn timer(&self, session: &mut Session, _id: u64, conn: &mut Conn<'_>) -> Flow {
        if let Session::Reading(_) = session {
            log::info!("{}: admin: no whole request within {REQUEST_TIMEOUT:?}; 408", conn.peer_addr());
            conn.send(Response::text(408, "request timeout\n").encode(false).as_slice());
            *session = Session::Answered;
        }
        Flow::Close
    }

    fn close(&self, _session: Session, reason: &CloseReason) {
        if !reason.is_normal() {
            log::debug!("admin connection closed: {reason}");
        }
    }

    fn busy_reply(&self) -> Vec<u8> {
        Response::text(503, "admin endpoint busy\n").encode(false)
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
