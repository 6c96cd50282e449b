//! What the client prints: nothing a terminal would act on instead of
//! showing. Control characters (C0, DEL, C1), the bidi controls (U+202E
//! and its kin, which reorder what follows) and the Unicode line
//! separators are printed as visible escapes (`\u{202e}`, `\x1b` for a
//! byte that is not UTF-8), so what the peer sent is still readable.

use std::borrow::Cow;
use std::fmt::Write as _;

use switchboard_handlers::chat::is_unsafe;

/// `name` (a file name, a reason, anything in one line) with every
/// control, bidi control, tab and line break escaped; borrowed when there
/// is none.
pub fn escape_name(name: &str) -> Cow<'_, str> {
    escape_where(name, |c| c == '\t' || c == '\n' || is_unsafe(c))
}

/// `text` with every control and bidi control but line feed and tab
/// escaped: for text that is shown line by line.
pub fn escape_text(text: &str) -> Cow<'_, str> {
    escape_where(text, |c| c != '\n' && c != '\t' && is_unsafe(c))
}

fn escape_where(s: &str, unsafe_char: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !s.chars().any(&unsafe_char) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if unsafe_char(c) {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Escapes a byte stream as [`escape_text`] does, chunk by chunk: a
/// character split between two chunks is held until complete, and bytes
/// that are not UTF-8 are printed as `\xNN`.
#[derive(Debug, Default)]
pub struct StreamEscaper {
    /// The start of a character whose rest has not arrived (at most 3 bytes).
    pending: Vec<u8>,
}

impl StreamEscaper {
    /// Escapes `chunk` (after what was held back) into `out`.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        let mut owned;
        let mut rest: &[u8] = if self.pending.is_empty() {
            chunk
        } else {
            owned = std::mem::take(&mut self.pending);
            owned.extend_from_slice(chunk);
            &owned[..]
        };
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.extend_from_slice(escape_text(s).as_bytes());
                    return;
                }
                Err(e) => {
                    let (good, bad) = rest.split_at(e.valid_up_to());
                    // `good` is what from_utf8 just validated.
                    out.extend_from_slice(escape_text(std::str::from_utf8(good).unwrap_or("")).as_bytes());
                    match e.error_len() {
                        Some(n) => {
                            for b in &bad[..n] {
                                out.extend_from_slice(format!("\\x{b:02x}").as_bytes());
                            }
                            rest = &bad[n..];
                        }
                        None => {
                            self.pending = bad.to_vec();
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Escapes what was held back at the end of the stream (an incomplete
    /// character) into `out`.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        for b in std::mem::take(&mut self.pending) {
            out.extend_from_slice(format!("\\x{b:02x}").as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_text() {
        assert_eq!(escape_name("report.pdf"), "report.pdf");
        assert_eq!(escape_name("abc\u{202e}fdp.exe"), "abc\\u{202e}fdp.exe");
        assert_eq!(escape_name("a\nb\tc\x1b[2J"), "a\\u{a}b\\u{9}c\\u{1b}[2J");
        assert_eq!(escape_text("line\n\tindented\r\x07\u{2066}"), "line\n\tindented\\u{d}\\u{7}\\u{2066}");
        assert_eq!(escape_text("名前 é"), "名前 é");
    }

    #[test]
    fn stream_holds_split_characters_and_escapes_bad_bytes() {
        let input = "é\u{202e}x\n".as_bytes();
        for cut in 0..=input.len() {
            let mut esc = StreamEscaper::default();
            let mut out = Vec::new();
            esc.push(&input[..cut], &mut out);
            esc.push(&input[cut..], &mut out);
            esc.finish(&mut out);
            assert_eq!(String::from_utf8(out).unwrap(), "é\\u{202e}x\n", "cut at {cut}");
        }
        let mut esc = StreamEscaper::default();
        let mut out = Vec::new();
        esc.push(b"a\xff\x9b2J\xe2\x80", &mut out);
        esc.finish(&mut out);
        assert_eq!(String::from_utf8(out).unwrap(), "a\\xff\\x9b2J\\xe2\\x80");
    }
}
