//! How a byte stream is cut into frames, chosen per handler.

use std::fmt;

/// The framing a handler asks for: how the bytes a peer sends are cut into
/// the frames handed to [`Handler::frame`](crate::Handler::frame).
///
/// Every framing is bounded: a frame over its maximum is reported to
/// [`Handler::frame_error`](crate::Handler::frame_error) and skipped without
/// ever being held in memory past the maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Framing {
    /// Bytes as they arrive, no framing: each read is one frame (binary-safe).
    Raw,
    /// Lines ending in LF or CRLF. The frame excludes the line ending; a line
    /// longer than `max` bytes (without its ending) is a
    /// [`FrameError::TooLong`] and is skipped up to its newline.
    Lines {
        /// The longest line accepted, in bytes, without its line ending.
        max: usize,
    },
    /// A fixed-size length prefix, then that many bytes. The frame excludes
    /// the prefix. A length over `max` is a [`FrameError::TooLong`] and the
    /// frame's bytes are skipped; a negative signed length is fatal.
    LengthPrefixed {
        /// The prefix's width and byte order.
        prefix: Prefix,
        /// The largest frame accepted, in bytes, without the prefix.
        max: usize,
    },
}

impl Framing {
    /// Lines ending in LF or CRLF, at most `max` bytes each.
    pub fn lines(max: usize) -> Framing {
        Framing::Lines { max }
    }

    /// Length-prefixed frames of at most `max` bytes.
    pub fn length_prefixed(prefix: Prefix, max: usize) -> Framing {
        Framing::LengthPrefixed { prefix, max }
    }

    /// The largest frame this framing accepts (`usize::MAX` for raw).
    pub fn max_frame(&self) -> usize {
        match *self {
            Framing::Raw => usize::MAX,
            Framing::Lines { max } | Framing::LengthPrefixed { max, .. } => max,
        }
    }
}

impl Framing {
    /// Checks that `body` can go out as one frame of this framing and
    /// returns what goes before it and after it: the length prefix, or the
    /// line ending. The frame a peer's [`Decoder`] of the same framing reads
    /// back is `body`, whole. Raw bytes go out as they are.
    pub(crate) fn frame_parts(&self, body: &[u8]) -> Result<(PrefixBytes, &'static [u8]), EncodeError> {
        match *self {
            Framing::Raw => Ok((PrefixBytes::NONE, b"")),
            Framing::Lines { max } => {
                if let Some(at) = body.iter().position(|&b| b == b'\n') {
                    return Err(EncodeError::LineEnding { at });
                }
                if body.last() == Some(&b'\r') {
                    // The decoder would take it for half of a CRLF.
                    return Err(EncodeError::LineEnding { at: body.len() - 1 });
                }
                if body.len() > max {
                    return Err(EncodeError::TooLong { len: body.len(), max });
                }
                Ok((PrefixBytes::NONE, b"\n"))
            }
            Framing::LengthPrefixed { prefix, max } => match prefix.bytes(body.len()) {
                Some(head) if body.len() <= max => Ok((head, b"")),
                _ => Err(EncodeError::TooLong { len: body.len(), max: max.min(prefix.max_len()) }),
            },
        }
    }

    /// Appends `body` to `out` as one frame of this framing: after its
    /// length prefix, or followed by a newline. A body this framing cannot
    /// carry (a line ending inside a line, over the maximum, over what the
    /// prefix can declare) is an error and nothing is appended. The one
    /// home of the encoding: what [`Conn::send_frame`](crate::Conn::send_frame)
    /// sends, and what a client of the protocol writes.
    ///
    /// ```
    /// use switchboard::{Decoder, EncodeError, Framing, Prefix, Step};
    ///
    /// let framing = Framing::length_prefixed(Prefix::U16Be, 64);
    /// let mut out = Vec::new();
    /// framing.encode(b"hello", &mut out).unwrap();
    /// assert_eq!(out, b"\x00\x05hello");
    /// assert_eq!(Decoder::new(framing).next(&out), Step::Frame(b"hello", 7));
    ///
    /// let lines = Framing::lines(64);
    /// assert_eq!(lines.encode(b"two\nlines", &mut out), Err(EncodeError::LineEnding { at: 3 }));
    /// ```
    pub fn encode(&self, body: &[u8], out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let (head, tail) = self.frame_parts(body)?;
        out.reserve(head.len() + body.len() + tail.len());
        out.extend_from_slice(head.as_slice());
        out.extend_from_slice(body);
        out.extend_from_slice(tail);
        Ok(())
    }
}

/// Why a body cannot go out as one frame of a framing
/// ([`Framing::encode`], [`Conn::send_frame`](crate::Conn::send_frame)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// A line's body holds a line ending at this byte (a `\n`, or a `\r`
    /// at its end): the peer would read something else than the body.
    LineEnding {
        /// The offset of the line ending in the body.
        at: usize,
    },
    /// The body is longer than the framing's maximum (or than its prefix
    /// can declare, whichever is less).
    TooLong {
        /// The body's length.
        len: usize,
        /// The most a frame may hold.
        max: usize,
    },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::LineEnding { at } => write!(f, "a line ending at byte {at} inside a line"),
            EncodeError::TooLong { len, max } => write!(f, "a {len}-byte frame, over the {max}-byte maximum"),
        }
    }
}

impl std::error::Error for EncodeError {}

/// A length prefix on the stack: up to 4 bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PrefixBytes {
    bytes: [u8; 4],
    len: usize,
}

impl PrefixBytes {
    const NONE: PrefixBytes = PrefixBytes { bytes: [0; 4], len: 0 };

    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    fn len(&self) -> usize {
        self.len
    }
}

/// The length prefix of [`Framing::LengthPrefixed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Prefix {
    /// 2 bytes, unsigned, big-endian (network order).
    U16Be,
    /// 4 bytes, unsigned, big-endian (network order).
    U32Be,
    /// 4 bytes, unsigned, little-endian.
    U32Le,
    /// 4 bytes, signed, little-endian: what Python's `struct.pack('i', n)`
    /// writes on x86 and ARM, the header prefix of the file protocol.
    I32Le,
}

impl Prefix {
    /// The prefix's width in bytes.
    pub fn width(self) -> usize {
        match self {
            Prefix::U16Be => 2,
            Prefix::U32Be | Prefix::U32Le | Prefix::I32Le => 4,
        }
    }

    /// The largest length this prefix can declare.
    pub fn max_len(self) -> usize {
        match self {
            Prefix::U16Be => usize::from(u16::MAX),
            Prefix::U32Be | Prefix::U32Le => usize::try_from(u32::MAX).unwrap_or(usize::MAX),
            Prefix::I32Le => usize::try_from(i32::MAX).unwrap_or(usize::MAX),
        }
    }

    /// `len` as this prefix, on the stack, or `None` if it does not fit.
    fn bytes(self, len: usize) -> Option<PrefixBytes> {
        let mut bytes = [0; 4];
        let width = self.width();
        match self {
            Prefix::U16Be => bytes[..2].copy_from_slice(&u16::try_from(len).ok()?.to_be_bytes()),
            Prefix::U32Be => bytes.copy_from_slice(&u32::try_from(len).ok()?.to_be_bytes()),
            Prefix::U32Le => bytes.copy_from_slice(&u32::try_from(len).ok()?.to_le_bytes()),
            Prefix::I32Le => bytes.copy_from_slice(&i32::try_from(len).ok()?.to_le_bytes()),
        }
        Some(PrefixBytes { bytes, len: width })
    }

    /// Encodes `len` as this prefix, or `None` if it does not fit.
    pub fn encode(self, len: usize) -> Option<Vec<u8>> {
        Some(match self {
            Prefix::U16Be => u16::try_from(len).ok()?.to_be_bytes().to_vec(),
            Prefix::U32Be => u32::try_from(len).ok()?.to_be_bytes().to_vec(),
            Prefix::U32Le => u32::try_from(len).ok()?.to_le_bytes().to_vec(),
            Prefix::I32Le => i32::try_from(len).ok()?.to_le_bytes().to_vec(),
        })
    }

    /// Decodes a length from exactly [`width`](Prefix::width) bytes; a
    /// negative signed length comes back negative.
    pub fn decode(self, bytes: &[u8]) -> i64 {
        match self {
            Prefix::U16Be => i64::from(u16::from_be_bytes([bytes[0], bytes[1]])),
            Prefix::U32Be => i64::from(u32::from_be_bytes(bytes[..4].try_into().unwrap())),
            Prefix::U32Le => i64::from(u32::from_le_bytes(bytes[..4].try_into().unwrap())),
            Prefix::I32Le => i64::from(i32::from_le_bytes(bytes[..4].try_into().unwrap())),
        }
    }
}

/// A frame the decoder could not accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// The frame is longer than the framing's maximum; it is skipped unless
    /// the handler closes the connection
    /// ([`Handler::frame_error`](crate::Handler::frame_error) returns
    /// [`Flow::Close`](crate::Flow::Close)), which is the answer to a length
    /// no one would send: skipping a 4 GiB claim would read it all first.
    TooLong {
        /// The maximum in force.
        max: usize,
        /// The length the prefix declared ([`Framing::LengthPrefixed`]);
        /// `None` for a line, whose length is not known until its end.
        len: Option<u64>,
    },
    /// A length prefix was negative: the stream cannot be resynchronised and
    /// the connection is closed whatever the handler answers.
    BadLength(i64),
}

impl FrameError {
    /// Whether the connection must close after this error.
    pub fn is_fatal(&self) -> bool {
        matches!(self, FrameError::BadLength(_))
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLong { max, len: Some(len) } => {
                write!(f, "a {len}-byte frame announced, over the {max}-byte maximum")
            }
            FrameError::TooLong { max, len: None } => write!(f, "frame longer than the {max}-byte maximum"),
            FrameError::BadLength(n) => write!(f, "invalid frame length {n}"),
        }
    }
}

impl std::error::Error for FrameError {}

/// One step of [`Decoder::next`].
#[derive(Debug, PartialEq, Eq)]
pub enum Step<'b> {
    /// A whole frame, and how many input bytes it used.
    Frame(&'b [u8], usize),
    /// A frame error, and how many input bytes were used up by it.
    Error(FrameError, usize),
    /// Bytes discarded as part of an earlier over-long frame.
    Skip(usize),
    /// More input is needed; nothing was used.
    Incomplete,
}

/// The incremental decoder of a [`Framing`], as the server uses it; usable
/// by clients too. It holds no buffer, only the state of a frame being
/// skipped: the caller keeps the unconsumed input and calls
/// [`next`](Decoder::next) again when more arrives.
///
/// ```
/// use switchboard::{Decoder, Framing, Step};
///
/// let mut dec = Decoder::new(Framing::lines(16));
/// let input = b"one\r\ntw";
/// assert_eq!(dec.next(input), Step::Frame(b"one", 5));
/// assert_eq!(dec.next(&input[5..]), Step::Incomplete);
/// ```
#[derive(Debug)]
pub struct Decoder {
    framing: Framing,
    /// Lines: skipping up to the next newline. Length-prefixed: bytes left
    /// to skip (a prefix is at most 4 bytes: a `u32` holds any length).
    skip: u32,
    /// A last line with no line ending is a frame at the end of the
    /// stream ([`Framer::unterminated`](crate::Framer::unterminated)): kept
    /// here, beside `skip`, so that a connection's framer costs no padding
    /// for it.
    pub(crate) unterminated: bool,
}

impl Decoder {
    /// A decoder at the start of a stream.
    pub fn new(framing: Framing) -> Decoder {
        Decoder { framing, skip: 0, unterminated: false }
    }

    /// The most bytes of an incomplete frame the caller may have to hold:
    /// input beyond it is always decided (a frame, an error or a skip).
    pub fn max_pending(&self) -> usize {
        match self.framing {
            Framing::Raw => 0,
            Framing::Lines { max } => max.saturating_add(1),
            Framing::LengthPrefixed { prefix, max } => max.saturating_add(prefix.width()),
        }
    }

    /// The framing it decodes.
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// Whether the decoder is in the middle of skipping a rejected frame.
    pub fn skipping(&self) -> bool {
        self.skip > 0
    }

    /// Decodes the next frame from `buf`, the input not yet used. Never
    /// panics, whatever the input.
    pub fn next<'b>(&mut self, buf: &'b [u8]) -> Step<'b> {
        if buf.is_empty() {
            return Step::Incomplete;
        }
        match self.framing {
            Framing::Raw => Step::Frame(buf, buf.len()),
            Framing::Lines { max } => self.next_line(buf, max),
            Framing::LengthPrefixed { prefix, max } => self.next_prefixed(buf, prefix, max),
        }
    }

    fn next_line<'b>(&mut self, buf: &'b [u8], max: usize) -> Step<'b> {
        if self.skip > 0 {
            return match buf.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.skip = 0;
                    Step::Skip(i + 1)
                }
                None => Step::Skip(buf.len()),
            };
        }
        // A valid line is at most max bytes plus "\r\n".
        let window = &buf[..buf.len().min(max.saturating_add(2))];
        match window.iter().position(|&b| b == b'\n') {
            Some(i) => {
                let mut line = &buf[..i];
                if line.last() == Some(&b'\r') {
                    line = &line[..line.len() - 1];
                }
                if line.len() > max {
                    Step::Error(FrameError::TooLong { max, len: None }, i + 1)
                } else {
                    Step::Frame(line, i + 1)
                }
            }
            None if window.len() < max.saturating_add(2) => Step::Incomplete,
            // Too long: drop it up to its newline if that is here, else
            // everything here and the rest of the line as it comes.
            None => match buf[window.len()..].iter().position(|&b| b == b'\n') {
                Some(j) => Step::Error(FrameError::TooLong { max, len: None }, window.len() + j + 1),
                None => {
                    self.skip = 1;
                    Step::Error(FrameError::TooLong { max, len: None }, buf.len())
                }
            },
        }
    }

    fn next_prefixed<'b>(&mut self, buf: &'b [u8], prefix: Prefix, max: usize) -> Step<'b> {
        if self.skip > 0 {
            let n = (self.skip as usize).min(buf.len());
            self.skip -= n as u32;
            return Step::Skip(n);
        }
        let w = prefix.width();
        if buf.len() < w {
            return Step::Incomplete;
        }
        let len = prefix.decode(&buf[..w]);
        if len < 0 {
            return Step::Error(FrameError::BadLength(len), buf.len());
        }
        let len = len as u64;
        if len > max as u64 {
            self.skip = u32::try_from(len).unwrap_or(u32::MAX);
            return Step::Error(FrameError::TooLong { max, len: Some(len) }, w);
        }
        let end = w + len as usize;
        if buf.len() < end {
            Step::Incomplete
        } else {
            Step::Frame(&buf[w..end], end)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(framing: Framing, chunks: &[&[u8]]) -> Vec<Result<Vec<u8>, FrameError>> {
        let mut dec = Decoder::new(framing);
        let mut tail = Vec::new();
        let mut out = Vec::new();
        for chunk in chunks {
            tail.extend_from_slice(chunk);
            let mut pos = 0;
            loop {
                match dec.next(&tail[pos..]) {
                    Step::Frame(f, n) => {
                        out.push(Ok(f.to_vec()));
                        pos += n;
                    }
                    Step::Error(e, n) => {
                        out.push(Err(e));
                        pos += n;
                    }
                    Step::Skip(n) => pos += n,
                    Step::Incomplete => break,
                }
            }
            tail.drain(..pos);
            assert!(tail.len() <= dec.max_pending().max(chunk.len()));
        }
        out
    }

    #[test]
    fn lines_split_and_glued() {
        let got = frames(Framing::lines(10), &[b"ab", b"c\r\nde\nf", b"g\n\n"]);
        let want: Vec<Result<Vec<u8>, FrameError>> =
            vec![Ok(b"abc".to_vec()), Ok(b"de".to_vec()), Ok(b"fg".to_vec()), Ok(vec![])];
        assert_eq!(got, want);
    }

    #[test]
    fn long_line_reported_once_and_skipped_to_newline() {
        let got = frames(Framing::lines(4), &[b"12345", b"6789", b"0\nok\n"]);
        assert_eq!(got, vec![Err(FrameError::TooLong { max: 4, len: None }), Ok(b"ok".to_vec())]);
        // Exactly max with CRLF is accepted; max + 1 is not.
        let got = frames(Framing::lines(4), &[b"1234\r\n12345\nx\n"]);
        assert_eq!(
            got,
            vec![Ok(b"1234".to_vec()), Err(FrameError::TooLong { max: 4, len: None }), Ok(b"x".to_vec())]
        );
    }

    #[test]
    fn long_line_with_its_newline_in_the_same_read_spares_the_next_line() {
        let got = frames(Framing::lines(4), &[b"1234567\nok\n", b"x\n"]);
        assert_eq!(
            got,
            vec![Err(FrameError::TooLong { max: 4, len: None }), Ok(b"ok".to_vec()), Ok(b"x".to_vec())]
        );
        let got = frames(Framing::lines(4), &[&[b'y'; 200], b"\nnext\n"]);
        assert_eq!(got, vec![Err(FrameError::TooLong { max: 4, len: None }), Ok(b"next".to_vec())]);
        let mut long = vec![b'z'; 300];
        long.extend_from_slice(b"\r\nnext\n");
        let got = frames(Framing::lines(4), &[&long]);
        assert_eq!(got, vec![Err(FrameError::TooLong { max: 4, len: None }), Ok(b"next".to_vec())]);
    }

    #[test]
    fn length_prefixed_frames_and_skip() {
        let mut input = Vec::new();
        input.extend_from_slice(&3u32.to_le_bytes());
        input.extend_from_slice(b"abc");
        input.extend_from_slice(&9u32.to_le_bytes());
        input.extend_from_slice(b"123456789");
        input.extend_from_slice(&1u32.to_le_bytes());
        input.extend_from_slice(b"z");
        let chunks: Vec<&[u8]> = input.chunks(2).collect();
        let got = frames(Framing::length_prefixed(Prefix::U32Le, 5), &chunks);
        assert_eq!(
            got,
            vec![Ok(b"abc".to_vec()), Err(FrameError::TooLong { max: 5, len: Some(9) }), Ok(b"z".to_vec())]
        );
    }

    #[test]
    fn negative_length_is_fatal() {
        let got = frames(Framing::length_prefixed(Prefix::I32Le, 5), &[&(-1i32).to_le_bytes()]);
        assert_eq!(got, vec![Err(FrameError::BadLength(-1))]);
        assert!(FrameError::BadLength(-1).is_fatal());
    }

    #[test]
    fn encoded_frames_decode_to_the_body_and_unframeable_bodies_are_refused() {
        for framing in [
            Framing::lines(8),
            Framing::length_prefixed(Prefix::U16Be, 8),
            Framing::length_prefixed(Prefix::I32Le, 8),
        ] {
            let mut out = Vec::new();
            for body in [&b"abc"[..], b"", b"12345678"] {
                framing.encode(body, &mut out).unwrap();
            }
            let got = frames(framing, &[&out]);
            assert_eq!(got, vec![Ok(b"abc".to_vec()), Ok(vec![]), Ok(b"12345678".to_vec())], "{framing:?}");
            let before = out.len();
            assert_eq!(framing.encode(b"123456789", &mut out), Err(EncodeError::TooLong { len: 9, max: 8 }));
            assert_eq!(out.len(), before, "nothing appended");
        }
        let mut out = Vec::new();
        assert_eq!(Framing::lines(8).encode(b"a\nb", &mut out), Err(EncodeError::LineEnding { at: 1 }));
        assert_eq!(Framing::lines(8).encode(b"ab\r", &mut out), Err(EncodeError::LineEnding { at: 2 }));
        let big = vec![0; 70_000];
        let u16_prefix = Framing::length_prefixed(Prefix::U16Be, 100_000);
        assert_eq!(u16_prefix.encode(&big, &mut out), Err(EncodeError::TooLong { len: 70_000, max: 65_535 }));
        assert!(out.is_empty());
    }

    #[test]
    fn prefix_round_trip() {
        for p in [Prefix::U16Be, Prefix::U32Be, Prefix::U32Le, Prefix::I32Le] {
            let b = p.encode(300).unwrap();
            assert_eq!(b.len(), p.width());
            assert_eq!(p.decode(&b), 300);
        }
        assert_eq!(Prefix::U16Be.encode(70_000), None);
    }
}
