//! A minimal blocking HTTP/1.1 client for the admin endpoint's tests: one
//! request per connection, the response read to EOF.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use crate::TIMEOUT;

/// A response: status code, headers as read (lower-case names), body.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// `(name, value)` pairs, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body, whole.
    pub body: String,
}

impl Response {
    /// The value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }
}

/// Sends `METHOD path` to `addr` and reads the whole response; fails the
/// test on an I/O error or a malformed response.
pub fn request(addr: SocketAddr, method: &str, path: &str) -> Response {
    try_request(addr, method, path).unwrap_or_else(|e| panic!("{method} http://{addr}{path}: {e}"))
}

/// `GET path` (see [`request`]).
pub fn get(addr: SocketAddr, path: &str) -> Response {
    request(addr, "GET", path)
}

/// Like [`request`], with the error returned.
pub fn try_request(addr: SocketAddr, method: &str, path: &str) -> std::io::Result<Response> {
    try_request_after(addr, b"", method, path)
}

/// Like [`try_request`], with `preamble` sent before the request (a PROXY
/// protocol header, as a load balancer's health check sends it).
pub fn try_request_after(
    addr: SocketAddr,
    preamble: &[u8],
    method: &str,
    path: &str,
) -> std::io::Result<Response> {
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    s.set_read_timeout(Some(TIMEOUT))?;
    s.set_write_timeout(Some(TIMEOUT))?;
    s.write_all(preamble)?;
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: switchboard-tests\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse(&raw, method == "HEAD").ok_or_else(|| {
        std::io::Error::other(format!("malformed response: {:?}", String::from_utf8_lossy(&raw)))
    })
}

/// Parses a whole response; checks Content-Length against the body
/// (unless it answers a HEAD, which has none).
fn parse(raw: &[u8], head_only: bool) -> Option<Response> {
    let text = std::str::from_utf8(raw).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let mut parts = status_line.splitn(3, ' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let status = parts.next()?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .map(|l| l.split_once(':').map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned())))
        .collect::<Option<_>>()?;
    let r = Response { status, headers, body: body.to_owned() };
    match r.header("content-length") {
        Some(_) if head_only && r.body.is_empty() => Some(r),
        Some(n) if n.parse::<usize>().ok()? == r.body.len() => Some(r),
        Some(_) => None,
        None => Some(r),
    }
}
