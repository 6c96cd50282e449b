//! The file protocol's response header, in one place: its type, its limits,
//! its encoding and its decoding (PROTOCOLS.md, "file").
//!
//! A response is a 4-byte signed little-endian length L, then L bytes of
//! JSON (at most [`MAX_HEADER`]), then `file_size` bytes of content. The
//! server, `switchboard-client`, `switchboard-load`, the tests and the fuzz
//! targets all read and write it through this module.
//!
//! ```
//! use switchboard_handlers::file::proto::{self, Header, Reason};
//!
//! let wire = proto::encode(&Header::error("a.txt", Reason::NotFound));
//! let (header, used) = proto::decode(&wire).unwrap().unwrap();
//! assert_eq!(used, wire.len());
//! assert_eq!(header.error.as_deref(), Some("not found"));
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

/// Bytes of the length prefix.
pub const LEN_PREFIX: usize = 4;

/// The largest JSON header, in bytes: the server never sends more and a
/// client refuses more.
pub const MAX_HEADER: usize = 64 * 1024;

/// Names echoed in a header are cut to this many bytes (at a character
/// boundary): even fully escaped (6 bytes per byte) they keep the header
/// under [`MAX_HEADER`]. No real path is this long (PATH_MAX is 4,096).
pub const MAX_ECHOED_NAME: usize = 8 * 1024;

/// The most files one `list` answer names.
pub const MAX_LIST_FILES: usize = 10_000;

/// Why a request failed: the `error` field of an error header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// No such file (ENOENT), or a folder on the way is a file (ENOTDIR).
    NotFound,
    /// A folder, a device, or a file named with a trailing `/`.
    NotAFile,
    /// The name leads out of the root (`..`, absolute, NUL, a link out).
    OutsideRoot,
    /// EACCES or EPERM.
    PermissionDenied,
    /// Not `get NAME` nor `list`, a name that is not UTF-8, or a line over
    /// the limit.
    BadRequest,
    /// ENAMETOOLONG: a name or a component of it is longer than the
    /// filesystem allows.
    NameTooLong,
    /// ELOOP: more than 40 symbolic links on the way.
    TooManyLinks,
    /// The server is out of descriptors or memory (EMFILE, ENFILE, ENOMEM),
    /// or at its connection limit: try again later.
    ServerBusy,
    /// The file kept changing size while its md5 was computed.
    FileChanged,
    /// Reading failed (EIO and any other error): the server logs the cause.
    ReadError,
    /// The server is shutting down and stopped preparing the answer.
    ShuttingDown,
}

impl Reason {
    /// Every reason, for documentation and tests.
    pub const ALL: [Reason; 11] = [
        Reason::NotFound,
        Reason::NotAFile,
        Reason::OutsideRoot,
        Reason::PermissionDenied,
        Reason::BadRequest,
        Reason::NameTooLong,
        Reason::TooManyLinks,
        Reason::ServerBusy,
        Reason::FileChanged,
        Reason::ReadError,
        Reason::ShuttingDown,
    ];

    /// The text sent in the `error` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NotFound => "not found",
            Reason::NotAFile => "not a file",
            Reason::OutsideRoot => "outside root",
            Reason::PermissionDenied => "permission denied",
            Reason::BadRequest => "bad request",
            Reason::NameTooLong => "name too long",
            Reason::TooManyLinks => "too many links",
            Reason::ServerBusy => "server busy",
            Reason::FileChanged => "file changed",
            Reason::ReadError => "read error",
            Reason::ShuttingDown => "shutting down",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One file of a `list` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListEntry {
    /// Its path relative to the root, `/` between folders.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
}

/// A response header. Which fields are set depends on the answer: a found
/// file has `filename`, `file_size` and `md5`; an error has `filename`,
/// `file_size` (0) and `error`; a `list` answer has `files`, `file_size`
/// (0) and, when cut short, `truncated`. Fields are written in this order;
/// unknown fields are ignored when reading.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// The name the answer is for (cut to [`MAX_ECHOED_NAME`] bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    /// The `list` answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<ListEntry>>,
    /// How many content bytes follow the header.
    pub file_size: u64,
    /// The content's md5, 32 lower-case hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
    /// Why the request failed (a [`Reason`]'s text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The `list` answer was cut short (a limit was reached).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

impl Header {
    /// A found file: `{"filename", "file_size", "md5"}`.
    pub fn found(name: &str, size: u64, md5: &[u8; 16]) -> Header {
        Header {
            filename: Some(clip(name).to_owned()),
            file_size: size,
            md5: Some(hex(md5)),
            ..Header::default()
        }
    }

    /// An error: `{"filename", "file_size": 0, "error"}`.
    pub fn error(name: &str, reason: Reason) -> Header {
        Header {
            filename: Some(clip(name).to_owned()),
            error: Some(reason.as_str().to_owned()),
            ..Header::default()
        }
    }

    /// A `list` answer: as many of `files` as keep the header within
    /// [`MAX_HEADER`] and [`MAX_LIST_FILES`]; `truncated` if any was left
    /// out or `truncated` was already given.
    pub fn list(mut files: Vec<ListEntry>, mut truncated: bool) -> Header {
        // `{"files":[` + `],"file_size":0,"truncated":true}` and commas.
        const FRAME: usize = 48;
        let mut total = FRAME;
        let mut keep = 0;
        for entry in files.iter().take(MAX_LIST_FILES) {
            let len = serde_json::to_vec(entry).map_or(usize::MAX, |v| v.len()).saturating_add(1);
            if total.saturating_add(len) > MAX_HEADER {
                break;
            }
            total += len;
            keep += 1;
        }
        if keep < files.len() {
            files.truncate(keep);
            truncated = true;
        }
        Header { files: Some(files), truncated, ..Header::default() }
    }
}

/// The header a file client gets when the server is at its connection
/// limit: `{"filename": "", "file_size": 0, "error": "server busy"}`,
/// framed, then the server closes.
pub fn busy_header() -> Vec<u8> {
    encode(&Header::error("", Reason::ServerBusy))
}

/// Why bytes are not a header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The length prefix is negative or over [`MAX_HEADER`].
    BadLength(i32),
    /// The JSON is not a header object, or a field has the wrong type.
    BadHeader(String),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::BadLength(n) => {
                write!(f, "bad header length {n} (must be 0 to {MAX_HEADER}): not a file server?")
            }
            DecodeError::BadHeader(why) => write!(f, "bad header: {why}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// The header framed for the wire: its length as a 4-byte signed
/// little-endian integer, then its JSON.
pub fn encode(header: &Header) -> Vec<u8> {
    // Serialising this type cannot fail (string keys, no maps of other keys).
    let json = serde_json::to_vec(header).unwrap_or_else(|_| b"{\"file_size\":0}".to_vec());
    debug_assert!(json.len() <= MAX_HEADER, "{} bytes", json.len());
    let len = i32::try_from(json.len()).unwrap_or(i32::MAX);
    let mut out = Vec::with_capacity(LEN_PREFIX + json.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&json);
    out
}

/// The JSON length announced by a prefix, checked against [`MAX_HEADER`].
pub fn decode_len(prefix: [u8; LEN_PREFIX]) -> Result<usize, DecodeError> {
    let n = i32::from_le_bytes(prefix);
    usize::try_from(n).ok().filter(|&l| l <= MAX_HEADER).ok_or(DecodeError::BadLength(n))
}

/// Parses a header's JSON (without its prefix). `file_size` is required;
/// the other fields must have their type when present; `md5` must be 32
/// hex digits and comes back in lower case.
pub fn parse(json: &[u8]) -> Result<Header, DecodeError> {
    let mut header: Header =
        serde_json::from_slice(json).map_err(|e| DecodeError::BadHeader(e.to_string()))?;
    if let Some(md5) = &mut header.md5 {
        if md5.len() != 32 || !md5.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(DecodeError::BadHeader("md5 is not 32 hex digits".into()));
        }
        md5.make_ascii_lowercase();
    }
    Ok(header)
}

/// Decodes the header at the start of `buf`: `Ok(None)` while incomplete,
/// else the header and the bytes it used (the content follows).
pub fn decode(buf: &[u8]) -> Result<Option<(Header, usize)>, DecodeError> {
    let Some(prefix) = buf.get(..LEN_PREFIX) else { return Ok(None) };
    let len = decode_len(prefix.try_into().unwrap_or_default())?;
    match buf.get(LEN_PREFIX..LEN_PREFIX + len) {
        Some(json) => Ok(Some((parse(json)?, LEN_PREFIX + len))),
        None => Ok(None),
    }
}

/// `name`, cut to [`MAX_ECHOED_NAME`] bytes at a character boundary.
pub fn clip(name: &str) -> &str {
    if name.len() <= MAX_ECHOED_NAME {
        return name;
    }
    let mut end = MAX_ECHOED_NAME;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(wire: &[u8]) -> serde_json::Value {
        let len = decode_len(wire[..4].try_into().unwrap()).unwrap();
        assert_eq!(len, wire.len() - 4);
        serde_json::from_slice(&wire[4..]).unwrap()
    }

    #[test]
    fn found_header_holds_sizes_over_4_gib_and_escapes_names() {
        let name = "a \"q\" \\ 你好\n.txt";
        let wire = encode(&Header::found(name, 5 << 30, &[0xab; 16]));
        let v = value(&wire);
        assert_eq!(v["filename"], name);
        assert_eq!(v["file_size"].as_u64(), Some(5 << 30));
        assert_eq!(v["md5"], "ab".repeat(16));
        let (h, used) = decode(&wire).unwrap().unwrap();
        assert_eq!((h.file_size, used), (5 << 30, wire.len()));
        // The field order is the one the tutorials print.
        let wire = encode(&Header::found("e", 0, &[0; 16]));
        assert!(wire[4..].starts_with(br#"{"filename":"e","file_size":0,"md5":"0000"#));
    }

    #[test]
    fn error_header_and_clipped_names() {
        let v = value(&encode(&Header::error("n", Reason::OutsideRoot)));
        assert_eq!(v, serde_json::json!({"filename": "n", "file_size": 0, "error": "outside root"}));
        let long = "\u{1}".repeat(100_000);
        let h = encode(&Header::error(&long, Reason::BadRequest));
        assert!(h.len() - 4 <= MAX_HEADER);
        assert_eq!(value(&h)["filename"].as_str().unwrap().len(), MAX_ECHOED_NAME);
        let cjk = "你".repeat(10_000);
        let v = value(&encode(&Header::error(&cjk, Reason::NotFound)));
        assert!(v["filename"].as_str().unwrap().len() <= MAX_ECHOED_NAME);
    }

    #[test]
    fn busy_header_is_a_valid_error_header() {
        let wire = busy_header();
        let (h, used) = decode(&wire).unwrap().unwrap();
        assert_eq!(used, wire.len());
        assert_eq!(
            h,
            Header { filename: Some(String::new()), error: Some("server busy".into()), ..Header::default() }
        );
        assert_eq!(value(&wire), serde_json::json!({"filename": "", "file_size": 0, "error": "server busy"}));
    }

    #[test]
    fn a_long_list_is_cut_to_the_header_limit() {
        let files: Vec<ListEntry> =
            (0..5000).map(|i| ListEntry { name: format!("{i:05}-{}", "n\"".repeat(20)), size: i }).collect();
        let wire = encode(&Header::list(files.clone(), false));
        assert!(wire.len() - 4 <= MAX_HEADER);
        let (h, _) = decode(&wire).unwrap().unwrap();
        assert!(h.truncated);
        let got = h.files.unwrap();
        assert!(got.len() > 500 && got.len() < 5000, "{}", got.len());
        assert_eq!(got[..], files[..got.len()]);
        // Short lists are whole, without `truncated`.
        let wire = encode(&Header::list(files[..3].to_vec(), false));
        assert!(!value(&wire).as_object().unwrap().contains_key("truncated"));
        let tiny: Vec<ListEntry> =
            (0..20_000).map(|i| ListEntry { name: String::new(), size: i % 10 }).collect();
        let h = Header::list(tiny, false);
        // 21 bytes an entry: the 64 KiB header is reached before 10,000 files.
        assert_eq!(h.files.as_ref().map(Vec::len), Some((MAX_HEADER - 48) / 21));
        assert!(h.truncated);
        assert!(encode(&h).len() - 4 <= MAX_HEADER);
    }

    #[test]
    fn decoding_checks_lengths_and_fields() {
        assert_eq!(decode_len((-1i32).to_le_bytes()), Err(DecodeError::BadLength(-1)));
        let over = (MAX_HEADER as i32 + 1).to_le_bytes();
        assert_eq!(decode_len(over), Err(DecodeError::BadLength(MAX_HEADER as i32 + 1)));
        assert!(matches!(decode(b"! server busy\n"), Err(DecodeError::BadLength(_))));
        assert_eq!(decode(b"\x05\x00\x00"), Ok(None));
        assert_eq!(decode(b"\x05\x00\x00\x00{\"fi"), Ok(None));
        for json in [
            "[1, 2]",
            "{}",
            r#"{"file_size": -1}"#,
            r#"{"file_size": 1.5}"#,
            r#"{"file_size": "10"}"#,
            r#"{"file_size": 1, "md5": "xyz"}"#,
            r#"{"file_size": 1, "filename": 7}"#,
            r#"{"file_size": 0, "files": [{"name": "a"}]}"#,
            r#"{"file_size": 0, "files": {}}"#,
            "{not json",
        ] {
            assert!(matches!(parse(json.as_bytes()), Err(DecodeError::BadHeader(_))), "{json}");
        }
        let h =
            parse(br#"{"file_size": 3, "md5": "D41D8CD98F00B204E9800998ECF8427E", "x": 1, "error": null}"#)
                .unwrap();
        assert_eq!(h.md5.as_deref(), Some("d41d8cd98f00b204e9800998ecf8427e"));
        assert_eq!(h.error, None);
    }

    #[test]
    fn every_reason_has_its_own_text() {
        let texts: std::collections::HashSet<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(texts.len(), Reason::ALL.len());
    }
}
