//! The response header: a 4-byte little-endian signed length, then a JSON
//! object of at most [`MAX_HEADER`] bytes.

use std::fmt;

/// The largest JSON header sent, in bytes.
pub(crate) const MAX_HEADER: usize = 64 * 1024;

/// Names echoed in a header are cut to this many bytes (at a character
/// boundary): even fully escaped (6 bytes per byte) they leave the header
/// under [`MAX_HEADER`]. No real path is this long (PATH_MAX is 4,096).
const MAX_ECHOED_NAME: usize = 8 * 1024;

/// Why a request failed: the `error` field of the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    NotFound,
    NotAFile,
    OutsideRoot,
    PermissionDenied,
    BadRequest,
}

impl Reason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Reason::NotFound => "not found",
            Reason::NotAFile => "not a file",
            Reason::OutsideRoot => "outside root",
            Reason::PermissionDenied => "permission denied",
            Reason::BadRequest => "bad request",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Appends `s` as a JSON string (quotes, backslashes and control characters
/// escaped; any script passes through as UTF-8).
pub(crate) fn push_json_str(out: &mut Vec<u8>, s: &str) {
    match serde_json::to_string(s) {
        Ok(quoted) => out.extend_from_slice(quoted.as_bytes()),
        // Serialising a str cannot fail; keep the JSON valid regardless.
        Err(_) => out.extend_from_slice(b"\"\""),
    }
}

/// `name`, cut to [`MAX_ECHOED_NAME`] bytes at a character boundary.
fn clip(name: &str) -> &str {
    if name.len() <= MAX_ECHOED_NAME {
        return name;
    }
    let mut end = MAX_ECHOED_NAME;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

/// Prefixes a JSON header with its length, a signed 32-bit little-endian
/// integer.
pub(crate) fn framed(json: &[u8]) -> Vec<u8> {
    debug_assert!(json.len() <= MAX_HEADER);
    let len = i32::try_from(json.len()).unwrap_or(i32::MAX);
    let mut out = Vec::with_capacity(4 + json.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(json);
    out
}

/// `{"filename": NAME, "file_size": N, "md5": "<hex>"}`, framed.
pub(crate) fn found(name: &str, size: u64, md5: &[u8; 16]) -> Vec<u8> {
    let mut json = Vec::with_capacity(96 + name.len());
    json.extend_from_slice(b"{\"filename\":");
    push_json_str(&mut json, clip(name));
    json.extend_from_slice(format!(",\"file_size\":{size},\"md5\":\"").as_bytes());
    for b in md5 {
        json.extend_from_slice(format!("{b:02x}").as_bytes());
    }
    json.extend_from_slice(b"\"}");
    framed(&json)
}

/// `{"filename": NAME, "file_size": 0, "error": REASON}`, framed.
pub(crate) fn error(name: &str, reason: Reason) -> Vec<u8> {
    let mut json = Vec::with_capacity(64 + name.len());
    json.extend_from_slice(b"{\"filename\":");
    push_json_str(&mut json, clip(name));
    json.extend_from_slice(b",\"file_size\":0,\"error\":");
    push_json_str(&mut json, reason.as_str());
    json.push(b'}');
    framed(&json)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(framed: &[u8]) -> serde_json::Value {
        let len = i32::from_le_bytes(framed[..4].try_into().unwrap());
        assert_eq!(len as usize, framed.len() - 4);
        serde_json::from_slice(&framed[4..]).unwrap()
    }

    #[test]
    fn found_header_holds_sizes_over_4_gib_and_escapes_names() {
        let name = "a \"q\" \\ 你好\n.txt";
        let v = parse(&found(name, 5 << 30, &[0xab; 16]));
        assert_eq!(v["filename"], name);
        assert_eq!(v["file_size"].as_u64(), Some(5 << 30));
        assert_eq!(v["md5"], "ab".repeat(16));
        let v = parse(&found("x", u64::MAX >> 1, &[0; 16]));
        assert_eq!(v["file_size"].as_u64(), Some(u64::MAX >> 1));
    }

    #[test]
    fn error_header_and_clipped_names() {
        let v = parse(&error("n", Reason::OutsideRoot));
        assert_eq!(v, serde_json::json!({"filename": "n", "file_size": 0, "error": "outside root"}));
        let long = "\u{1}".repeat(100_000);
        let h = error(&long, Reason::BadRequest);
        assert!(h.len() - 4 <= MAX_HEADER);
        assert_eq!(parse(&h)["filename"].as_str().unwrap().len(), MAX_ECHOED_NAME);
        let cjk = "你".repeat(10_000);
        let v = parse(&error(&cjk, Reason::NotFound));
        assert!(v["filename"].as_str().unwrap().len() <= MAX_ECHOED_NAME);
    }
}
