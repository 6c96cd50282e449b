//! The client side of the file protocol (PROTOCOLS.md, "file (file get)"):
//! requests, the length-prefixed JSON header, and the body that follows it.
//!
//! Everything here works on any [`Read`] / [`Write`], so the same code serves
//! the client, the load generator and the fuzz targets. Every read is
//! bounded: the header by [`MAX_HEADER_LEN`], the body by its `file_size`
//! through a fixed buffer.

use std::fmt;
use std::io::{self, Read, Write};

use md5::{Digest, Md5};
pub use switchboard_handlers::file::proto::Header;
use switchboard_handlers::file::proto::{self, DecodeError, LEN_PREFIX};

/// The largest header accepted, in bytes (the protocol's limit: 64 KiB).
pub const MAX_HEADER_LEN: usize = proto::MAX_HEADER;

/// The buffer used to stream a body: the most memory a transfer holds.
const BODY_CHUNK: usize = 64 * 1024;

/// Why a response could not be read.
#[derive(Debug)]
pub enum ProtocolError {
    /// The server closed the connection before sending a response.
    Closed,
    /// The connection ended in the middle of a header or body.
    Truncated {
        /// What was being read (`header length`, `header`, `content`).
        what: &'static str,
        /// Bytes received of it.
        got: u64,
        /// Bytes expected.
        expected: u64,
    },
    /// The 4-byte length is negative or over [`MAX_HEADER_LEN`].
    BadLength(i32),
    /// The header is not a JSON object, or a field has the wrong type.
    BadHeader(String),
    /// Reading from the connection failed (including a read timeout, whose
    /// kind is `WouldBlock` or `TimedOut`).
    Io(io::Error),
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::Closed => f.write_str("the server closed the connection without answering"),
            ProtocolError::Truncated { what, got, expected } => {
                write!(f, "the connection was cut short: got {got} of {expected} bytes of {what}")
            }
            ProtocolError::BadLength(n) => {
                write!(f, "bad header length {n} (must be 0 to {MAX_HEADER_LEN}): not a file server?")
            }
            ProtocolError::BadHeader(why) => write!(f, "bad header: {why}"),
            ProtocolError::Io(e) if is_timeout(e) => f.write_str("the server stopped sending (read timeout)"),
            ProtocolError::Io(e) => write!(f, "read failed: {e}"),
        }
    }
}

impl std::error::Error for ProtocolError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ProtocolError::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// True for the errors a socket read timeout produces.
pub fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// Writes the request `get NAME\n`.
///
/// NAME must not contain a line break (it would end the request early):
/// such a name is refused with `InvalidInput` before anything is sent.
pub fn write_get(w: &mut impl Write, name: &str) -> io::Result<()> {
    if name.contains(['\n', '\r']) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "a file name cannot contain a line break"));
    }
    let mut req = Vec::with_capacity(name.len() + 5);
    req.extend_from_slice(b"get ");
    req.extend_from_slice(name.as_bytes());
    req.push(b'\n');
    w.write_all(&req)?;
    w.flush()
}

/// Writes the request `list\n`.
pub fn write_list(w: &mut impl Write) -> io::Result<()> {
    w.write_all(b"list\n")?;
    w.flush()
}

impl From<DecodeError> for ProtocolError {
    fn from(e: DecodeError) -> ProtocolError {
        match e {
            DecodeError::BadLength(n) => ProtocolError::BadLength(n),
            DecodeError::BadHeader(why) => ProtocolError::BadHeader(why),
        }
    }
}

/// Reads one response header: the 4-byte signed little-endian length L,
/// then L bytes of JSON, parsed with [`parse_header`]. The body (if any)
/// is left unread.
///
/// A clean end of stream before the first byte is [`ProtocolError::Closed`];
/// an end anywhere later is [`ProtocolError::Truncated`].
pub fn read_header(r: &mut impl Read) -> Result<Header, ProtocolError> {
    let mut len = [0u8; LEN_PREFIX];
    let got = read_full(r, &mut len)?;
    if got == 0 {
        return Err(ProtocolError::Closed);
    }
    if got < len.len() {
        return Err(ProtocolError::Truncated {
            what: "header length",
            got: got as u64,
            expected: LEN_PREFIX as u64,
        });
    }
    let n_usize = proto::decode_len(len)?;
    let mut json = vec![0u8; n_usize];
    let got = read_full(r, &mut json)?;
    if got < n_usize {
        return Err(ProtocolError::Truncated { what: "header", got: got as u64, expected: n_usize as u64 });
    }
    parse_header(&json)
}

/// Parses the JSON text of a header (without its length prefix), as
/// [`proto::parse`] does.
pub fn parse_header(json: &[u8]) -> Result<Header, ProtocolError> {
    Ok(proto::parse(json)?)
}

/// Why a body could not be copied.
#[derive(Debug)]
pub enum BodyError {
    /// Reading from the connection failed or ended early.
    Read(ProtocolError),
    /// Writing to the destination failed.
    Write(io::Error),
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::Read(e) => e.fmt(f),
            BodyError::Write(e) => write!(f, "write failed: {e}"),
        }
    }
}

impl std::error::Error for BodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BodyError::Read(e) => Some(e),
            BodyError::Write(e) => Some(e),
        }
    }
}

/// Copies exactly `len` body bytes from `r` to `out` through a fixed
/// 64 KiB buffer, calling `progress` with each chunk's size, and returns the
/// md5 of what was copied as 32 lower-case hex digits.
///
/// Ending before `len` bytes is [`ProtocolError::Truncated`]. Use
/// [`io::sink`] as `out` to only check the content.
pub fn read_body(
    r: &mut impl Read,
    len: u64,
    out: &mut impl Write,
    mut progress: impl FnMut(u64),
) -> Result<String, BodyError> {
    let mut buf = vec![0u8; BODY_CHUNK.min(usize::try_from(len).unwrap_or(BODY_CHUNK)).max(1)];
    let mut hasher = Md5::new();
    let mut done: u64 = 0;
    while done < len {
        let want = usize::try_from(len - done).map_or(buf.len(), |left| left.min(buf.len()));
        let n = match r.read(&mut buf[..want]) {
            Ok(0) => {
                return Err(BodyError::Read(ProtocolError::Truncated {
                    what: "content",
                    got: done,
                    expected: len,
                }))
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(BodyError::Read(ProtocolError::Io(e))),
        };
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(BodyError::Write)?;
        done += n as u64;
        progress(n as u64);
    }
    Ok(proto::hex(&hasher.finalize()))
}

/// Fills `buf` from `r`, stopping early only at end of stream; returns the
/// number of bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> Result<usize, ProtocolError> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ProtocolError::Io(e)),
        }
    }
    Ok(got)
}

/// Returns `s` with control characters escaped, so a string from the
/// server cannot move the cursor or recolour a terminal when printed.
pub fn printable(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_owned();
    }
    s.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(json: &str) -> Vec<u8> {
        let mut v = (json.len() as i32).to_le_bytes().to_vec();
        v.extend_from_slice(json.as_bytes());
        v
    }

    #[test]
    fn found_header() {
        let md5 = "D41D8CD98F00B204E9800998ECF8427E";
        let bytes = framed(&format!(r#"{{"filename": "a b.txt", "file_size": 5000000000, "md5": "{md5}"}}"#));
        let h = read_header(&mut &bytes[..]).unwrap();
        assert_eq!(h.filename.as_deref(), Some("a b.txt"));
        assert_eq!(h.file_size, 5_000_000_000);
        assert_eq!(h.md5.as_deref(), Some("d41d8cd98f00b204e9800998ecf8427e"));
        assert_eq!(h.error, None);
        assert_eq!(h.files, None);
    }

    #[test]
    fn error_and_list_headers() {
        let bytes = framed(r#"{"filename": "x", "file_size": 0, "error": "not found"}"#);
        let h = read_header(&mut &bytes[..]).unwrap();
        assert_eq!(h.error.as_deref(), Some("not found"));

        let bytes =
            framed(r#"{"files": [{"name": "a", "size": 1}, {"name": "b/c", "size": 22}], "file_size": 0}"#);
        let h = read_header(&mut &bytes[..]).unwrap();
        let files: Vec<(String, u64)> = h.files.unwrap().into_iter().map(|e| (e.name, e.size)).collect();
        assert_eq!(files, [("a".into(), 1), ("b/c".into(), 22)]);
    }

    #[test]
    fn the_busy_reply_of_a_file_server_is_a_header() {
        let h = read_header(&mut &proto::busy_header()[..]).unwrap();
        assert_eq!(h.error.as_deref(), Some("server busy"));
        assert_eq!((h.filename.as_deref(), h.file_size), (Some(""), 0));
    }

    #[test]
    fn bad_lengths() {
        let neg = (-1i32).to_le_bytes();
        assert!(matches!(read_header(&mut &neg[..]), Err(ProtocolError::BadLength(-1))));
        let big = ((MAX_HEADER_LEN + 1) as i32).to_le_bytes();
        assert!(matches!(read_header(&mut &big[..]), Err(ProtocolError::BadLength(_))));
        // "HTTP" read as a length: a clear error, no 1 GiB allocation.
        assert!(matches!(read_header(&mut &b"HTTP/1.1 400"[..]), Err(ProtocolError::BadLength(_))));
    }

    #[test]
    fn cut_short() {
        assert!(matches!(read_header(&mut &b""[..]), Err(ProtocolError::Closed)));
        assert!(matches!(
            read_header(&mut &b"\x10\x00"[..]),
            Err(ProtocolError::Truncated { what: "header length", got: 2, expected: 4 })
        ));
        let bytes = framed(r#"{"file_size": 0}"#);
        let cut = &bytes[..bytes.len() - 3];
        assert!(matches!(read_header(&mut &cut[..]), Err(ProtocolError::Truncated { what: "header", .. })));
    }

    #[test]
    fn bad_fields() {
        // Which headers are bad is file::proto's (and tested there); the
        // client reports each as a bad header.
        for json in ["{}", "{not json"] {
            assert!(matches!(parse_header(json.as_bytes()), Err(ProtocolError::BadHeader(_))), "{json}");
        }
    }

    #[test]
    fn body_md5_and_truncation() {
        let mut out = Vec::new();
        let mut seen = 0;
        let md5 = read_body(&mut &b"hello world"[..], 5, &mut out, |n| seen += n).unwrap();
        assert_eq!(out, b"hello");
        assert_eq!(seen, 5);
        assert_eq!(md5, "5d41402abc4b2a76b9719d911017c592");
        assert_eq!(
            read_body(&mut &b""[..], 0, &mut io::sink(), |_| {}).unwrap(),
            "d41d8cd98f00b204e9800998ecf8427e"
        );

        let err = read_body(&mut &b"abc"[..], 10, &mut io::sink(), |_| {}).unwrap_err();
        assert!(matches!(err, BodyError::Read(ProtocolError::Truncated { got: 3, expected: 10, .. })));
    }

    #[test]
    fn requests() {
        let mut out = Vec::new();
        write_get(&mut out, "dir/a b.txt").unwrap();
        write_list(&mut out).unwrap();
        assert_eq!(out, b"get dir/a b.txt\nlist\n");
        assert!(write_get(&mut out, "a\nlist").is_err());
    }

    #[test]
    fn printable_escapes_controls() {
        assert_eq!(printable("not found"), "not found");
        assert_eq!(printable("a\x1b[2Jb\n"), "a\\u{1b}[2Jb\\n");
    }
}
