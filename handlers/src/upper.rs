//! upper: text back in Unicode upper case, as it arrives.

use switchboard::{Conn, Flow, Framing, Handler};

/// The longest incomplete UTF-8 sequence: a 4-byte character missing its
/// last byte.
pub(crate) const MAX_HELD: usize = 3;

/// Like [`Echo`](crate::Echo), but text comes back in Unicode upper case
/// ([`str::to_uppercase`]): `hello` → `HELLO`, `straße` → `STRASSE`.
///
/// - No framing: each read is answered at once, no newline needed.
/// - A multi-byte character split across reads is held (at most 3 bytes per
///   connection) until its last byte arrives, never mangled.
/// - Bytes that are not valid UTF-8 pass through unchanged.
/// - An incomplete character still held when the peer ends its input is
///   invalid UTF-8, and passes through unchanged like any other.
#[derive(Debug, Clone, Copy, Default)]
pub struct Upper;

impl Upper {
    /// The upper-case handler.
    pub fn new() -> Upper {
        Upper
    }
}

/// Per-connection state: the start of a character whose last bytes have not
/// arrived yet.
#[derive(Debug, Default)]
pub struct UpperSession {
    held: [u8; MAX_HELD],
    len: usize,
}

impl Handler for Upper {
    type Session = UpperSession;

    fn framing(&self) -> Framing {
        Framing::Raw
    }

    fn open(&self, _conn: &mut Conn<'_>) -> UpperSession {
        UpperSession::default()
    }

    fn frame(&self, session: &mut UpperSession, data: &[u8], conn: &mut Conn<'_>) -> Flow {
        let mut out = Vec::with_capacity(data.len() + data.len() / 4 + MAX_HELD);
        if session.len == 0 {
            session.len = upper_into(data, &mut out, &mut session.held);
        } else {
            // Rare: a character was split across reads. Join the held bytes
            // and the new ones, then go on as usual.
            let mut joined = Vec::with_capacity(session.len + data.len());
            joined.extend_from_slice(&session.held[..session.len]);
            joined.extend_from_slice(data);
            session.len = upper_into(&joined, &mut out, &mut session.held);
        }
        conn.send(&out);
        Flow::Continue
    }

    fn eof(&self, session: &mut UpperSession, conn: &mut Conn<'_>) {
        conn.send(&session.held[..session.len]);
        session.len = 0;
    }
}

/// Appends `input` in upper case to `out`: valid UTF-8 is upper-cased, bytes
/// that can never be valid UTF-8 are copied unchanged, and an incomplete
/// character at the very end is copied into `held` instead. Returns how many
/// bytes were held (0 to 3).
pub(crate) fn upper_into(input: &[u8], out: &mut Vec<u8>, held: &mut [u8; MAX_HELD]) -> usize {
    let mut rest = input;
    // Every turn consumes at least one byte or returns: bounded by the input.
    loop {
        match std::str::from_utf8(rest) {
            Ok(text) => {
                push_upper(text, out);
                return 0;
            }
            Err(e) => {
                let (valid, after) = rest.split_at(e.valid_up_to());
                match std::str::from_utf8(valid) {
                    Ok(text) => push_upper(text, out),
                    // Cannot happen (valid_up_to says so); pass the bytes on.
                    Err(_) => out.extend_from_slice(valid),
                }
                match e.error_len() {
                    Some(bad) => {
                        let bad = bad.min(after.len());
                        out.extend_from_slice(&after[..bad]);
                        rest = &after[bad..];
                    }
                    None if after.len() <= MAX_HELD => {
                        held[..after.len()].copy_from_slice(after);
                        return after.len();
                    }
                    None => {
                        // Cannot happen: an incomplete character is at most
                        // 3 bytes. Pass the bytes on rather than hold more.
                        out.extend_from_slice(after);
                        return 0;
                    }
                }
            }
        }
    }
}

/// Appends `text.to_uppercase()` to `out` without an intermediate `String`.
fn push_upper(text: &str, out: &mut Vec<u8>) {
    if text.is_ascii() {
        out.extend(text.bytes().map(|b| b.to_ascii_uppercase()));
        return;
    }
    let mut buf = [0u8; 4];
    for c in text.chars().flat_map(char::to_uppercase) {
        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upper_chunks(chunks: &[&[u8]]) -> (Vec<Vec<u8>>, usize) {
        let mut held = [0u8; MAX_HELD];
        let mut len = 0;
        let mut outs = Vec::new();
        for chunk in chunks {
            let mut joined = held[..len].to_vec();
            joined.extend_from_slice(chunk);
            let mut out = Vec::new();
            len = upper_into(&joined, &mut out, &mut held);
            outs.push(out);
        }
        (outs, len)
    }

    #[test]
    fn matches_str_to_uppercase() {
        for s in ["hello", "straße", "héllo", "你好", "ǆemal ŉ ﬃ", "ΣΊΣΥΦΟΣ σ ς", "", "a\0b"]
        {
            let mut out = Vec::new();
            let mut held = [0u8; MAX_HELD];
            assert_eq!(upper_into(s.as_bytes(), &mut out, &mut held), 0);
            assert_eq!(out, s.to_uppercase().as_bytes(), "{s}");
        }
    }

    #[test]
    fn split_character_is_held_until_complete() {
        let ni = "你".as_bytes(); // 3 bytes
        let (outs, held) = upper_chunks(&[b"a", &ni[..1], &ni[1..2], &[ni[2], b'b']]);
        assert_eq!(outs, vec![b"A".to_vec(), vec![], vec![], "你B".as_bytes().to_vec()]);
        assert_eq!(held, 0);
        let emoji = "😀x".as_bytes(); // 4 bytes then x
        let (outs, held) = upper_chunks(&[&emoji[..3], &emoji[3..]]);
        assert_eq!(outs, vec![vec![], "😀X".as_bytes().to_vec()]);
        assert_eq!(held, 0);
        let (_, held) = upper_chunks(&[b"ok\xf0\x9f\x98"]);
        assert_eq!(held, 3);
    }

    #[test]
    fn invalid_bytes_pass_through() {
        let (outs, held) = upper_chunks(&[b"ab\xffcd\xc3(e\xed\xa0\x80f"]);
        assert_eq!(outs, vec![b"AB\xffCD\xc3(E\xed\xa0\x80F".to_vec()]);
        assert_eq!(held, 0);
        // A held start that the next read does not continue is invalid.
        let (outs, held) = upper_chunks(&[b"x\xe4", b"y"]);
        assert_eq!(outs, vec![b"X".to_vec(), b"\xe4Y".to_vec()]);
        assert_eq!(held, 0);
    }
}
