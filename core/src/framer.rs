//! [`Framer`]: the one decode loop. It owns a connection's unconsumed input
//! and drives a [`Decoder`] over it, skipping the rest of a rejected frame
//! inside, so the server, [`Harness`](crate::Harness) and clients cut frames
//! the same way.

use crate::framing::{Decoder, FrameError, Framing, Step};

/// What a [`Framer`] hands its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item<'b> {
    /// A whole frame.
    Frame(&'b [u8]),
    /// A frame the framing rejected; its bytes are skipped.
    Error(FrameError),
}

/// Where a [`Framer::feed`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fed {
    /// The input is used up but for at most one incomplete frame (or the
    /// rest of a frame being skipped): more must come from the peer.
    NeedsInput,
    /// The caller stopped taking items (or the error was fatal): what is
    /// left may be whole frames, waiting on the caller.
    Stopped,
}

/// Cuts a byte stream into frames with a [`Framing`]: bytes go in as they
/// arrive, frames come out in order, and at most one incomplete frame is
/// kept (never more than [`Decoder::max_pending`] bytes, unless the caller
/// stops taking frames). Optionally, a last line with no line ending is a
/// frame too: at the end of the stream ([`finish`](Framer::finish)) or
/// when the caller decides it has waited long enough
/// ([`take_partial`](Framer::take_partial)).
///
/// ```
/// use switchboard::{Fed, Framer, Framing, Item};
///
/// let mut framer = Framer::new(Framing::lines(16)).unterminated(true);
/// let mut lines = Vec::new();
/// let fed = framer.feed(b"one\r\ntw", |item| {
///     if let Item::Frame(line) = item {
///         lines.push(line.to_vec());
///     }
///     true
/// });
/// assert_eq!(fed, Fed::NeedsInput);
/// assert!(framer.is_partial());
/// framer.finish(|item| {
///     if let Item::Frame(line) = item {
///         lines.push(line.to_vec());
///     }
///     true
/// });
/// assert_eq!(lines, [b"one".to_vec(), b"tw".to_vec()]);
/// ```
#[derive(Debug)]
pub struct Framer {
    decoder: Decoder,
    /// The unconsumed input: at most one incomplete frame, or what came
    /// while the caller took no frames. No allocation while empty.
    tail: Vec<u8>,
}

impl Framer {
    /// A framer at the start of a stream.
    pub fn new(framing: Framing) -> Framer {
        Framer { decoder: Decoder::new(framing), tail: Vec::new() }
    }

    /// Whether a last line with no line ending is delivered as a frame by
    /// [`finish`](Framer::finish) and [`take_partial`](Framer::take_partial)
    /// (default: no, it is dropped). Only lines framing has such a frame: an
    /// incomplete length-prefixed frame is always dropped.
    pub fn unterminated(mut self, yes: bool) -> Framer {
        self.decoder.unterminated = yes;
        self
    }

    /// The framing.
    pub fn framing(&self) -> Framing {
        self.decoder.framing()
    }

    /// Bytes held, not yet handed out.
    pub fn buffered(&self) -> usize {
        self.tail.len()
    }

    /// The bytes held, not yet handed out: an incomplete frame, or whole
    /// frames the caller stopped taking.
    pub fn held(&self) -> &[u8] {
        &self.tail
    }

    /// Whether the input ends inside a frame: bytes of an incomplete frame
    /// are held, or the rest of a rejected frame is being skipped.
    pub fn is_partial(&self) -> bool {
        !self.tail.is_empty() || self.decoder.skipping()
    }

    /// Keeps `fresh` for later without decoding it (the caller takes no
    /// frames now).
    pub fn hold(&mut self, fresh: &[u8]) {
        self.tail.extend_from_slice(fresh);
    }

    /// Drops what is held (the connection is closing).
    pub(crate) fn clear(&mut self) {
        self.tail = Vec::new();
    }

    /// Decodes what is held followed by `fresh`, handing each frame or
    /// error to `take` until the input runs out or `take` returns false;
    /// what is left is kept for the next call. Call it with an empty
    /// `fresh` to go on after stopping. Without held bytes, frames are
    /// handed straight out of `fresh` (no copy).
    pub fn feed<F>(&mut self, fresh: &[u8], mut take: F) -> Fed
    where
        F: FnMut(Item<'_>) -> bool,
    {
        let mut owned = std::mem::take(&mut self.tail);
        let from_tail = !owned.is_empty();
        if from_tail {
            owned.extend_from_slice(fresh);
        }
        let input: &[u8] = if from_tail { &owned } else { fresh };
        let mut pos = 0;
        let fed = loop {
            let step = self.decoder.next(&input[pos..]);
            debug_assert!(
                match step {
                    Step::Incomplete => true,
                    Step::Frame(_, used) | Step::Error(_, used) | Step::Skip(used) =>
                        used > 0 && used <= input.len() - pos,
                },
                "a decoder step must use at least one byte and no more than it was given: {step:?}"
            );
            match step {
                Step::Incomplete => break Fed::NeedsInput,
                Step::Skip(used) => pos += used,
                Step::Frame(frame, used) => {
                    pos += used;
                    if !take(Item::Frame(frame)) {
                        break Fed::Stopped;
                    }
                }
                Step::Error(err, used) => {
                    pos += used;
                    if !take(Item::Error(err)) || err.is_fatal() {
                        break Fed::Stopped;
                    }
                }
            }
        };
        if from_tail {
            owned.drain(..pos);
            if !owned.is_empty() {
                self.tail = owned;
            }
        } else if pos < input.len() {
            self.tail = input[pos..].to_vec();
        }
        fed
    }

    /// The stream ended: serves what is held (as [`feed`](Framer::feed)
    /// does), then, if the framer takes unterminated lines, the last
    /// partial line. Whatever is left is dropped.
    pub fn finish<F>(&mut self, mut take: F) -> Fed
    where
        F: FnMut(Item<'_>) -> bool,
    {
        let fed = self.feed(&[], &mut take);
        if fed == Fed::NeedsInput {
            self.take_partial(&mut take);
        }
        self.tail = Vec::new();
        fed
    }

    /// Hands the partial line held, if there is one and the framer takes
    /// unterminated lines, to `take` as a line (a CR at its end dropped; a
    /// line over the maximum is an error); returns whether it did. For a
    /// peer that sends a line without its ending and waits for the answer:
    /// the caller decides when the line has waited long enough.
    pub fn take_partial<F>(&mut self, mut take: F) -> bool
    where
        F: FnMut(Item<'_>) -> bool,
    {
        let Framing::Lines { max } = self.framing() else { return false };
        if !self.decoder.unterminated || self.tail.is_empty() || self.decoder.skipping() {
            return false;
        }
        let tail = std::mem::take(&mut self.tail);
        let mut line = &tail[..];
        if line.last() == Some(&b'\r') {
            line = &line[..line.len() - 1];
        }
        if line.len() > max {
            take(Item::Error(FrameError::TooLong { max, len: None }));
        } else {
            take(Item::Frame(line));
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::Prefix;

    fn collect(framer: &mut Framer, fresh: &[u8], out: &mut Vec<Result<Vec<u8>, FrameError>>) -> Fed {
        framer.feed(fresh, |item| {
            out.push(match item {
                Item::Frame(f) => Ok(f.to_vec()),
                Item::Error(e) => Err(e),
            });
            true
        })
    }

    #[test]
    fn frames_across_reads_and_a_skipped_long_line() {
        let mut f = Framer::new(Framing::lines(4));
        let mut out = Vec::new();
        assert_eq!(collect(&mut f, b"ab", &mut out), Fed::NeedsInput);
        assert_eq!(f.buffered(), 2);
        collect(&mut f, b"\r\n123456", &mut out);
        assert!(f.is_partial(), "skipping the rest of the long line");
        assert_eq!(f.buffered(), 0, "nothing of a rejected line is held");
        collect(&mut f, b"78\nok\n", &mut out);
        assert!(!f.is_partial());
        assert_eq!(
            out,
            vec![Ok(b"ab".to_vec()), Err(FrameError::TooLong { max: 4, len: None }), Ok(b"ok".to_vec())]
        );
    }

    #[test]
    fn a_stop_keeps_whole_frames_for_later() {
        let mut f = Framer::new(Framing::lines(8));
        let mut seen = Vec::new();
        let fed = f.feed(b"a\nb\nc\n", |item| {
            seen.push(item == Item::Frame(b"a"));
            false
        });
        assert_eq!((fed, seen.len()), (Fed::Stopped, 1));
        assert_eq!(f.buffered(), 4, "b and c wait");
        let mut out = Vec::new();
        assert_eq!(collect(&mut f, b"", &mut out), Fed::NeedsInput);
        assert_eq!(out, vec![Ok(b"b".to_vec()), Ok(b"c".to_vec())]);
        assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn unterminated_line_at_the_end_only_when_asked() {
        for (unterminated, want) in [(false, vec![]), (true, vec![Ok(b"get a.txt".to_vec())])] {
            let mut f = Framer::new(Framing::lines(16)).unterminated(unterminated);
            let mut out = Vec::new();
            collect(&mut f, b"get a.txt\r", &mut out);
            assert!(out.is_empty());
            f.finish(|item| {
                out.push(match item {
                    Item::Frame(l) => Ok(l.to_vec()),
                    Item::Error(e) => Err(e),
                });
                true
            });
            assert_eq!(out, want);
            assert_eq!(f.buffered(), 0);
        }
        // One byte over the maximum is an error, not a line.
        let mut f = Framer::new(Framing::lines(3)).unterminated(true);
        f.feed(b"abcd", |_| true);
        let mut got = None;
        assert!(f.take_partial(|item| {
            got = Some(item == Item::Error(FrameError::TooLong { max: 3, len: None }));
            true
        }));
        assert_eq!(got, Some(true));
        // A length-prefixed frame is never delivered incomplete.
        let mut f = Framer::new(Framing::length_prefixed(Prefix::U16Be, 8)).unterminated(true);
        f.feed(b"\x00\x05ab", |_| true);
        assert!(!f.take_partial(|_| true));
    }
}
