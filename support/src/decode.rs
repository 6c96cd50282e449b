//! Runs a [`Framer`] over an input cut into arbitrary chunks, the way the
//! server feeds it, checks its invariants at every step, and compares what it
//! decodes with a plain model of the framing. Shared by the regression tests
//! and the fuzz targets (`fuzz/`).

use switchboard::{Decoder, FrameError, Framer, Framing, Item};

/// What a decoder made of a stream: frames and errors, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A whole frame.
    Frame(Vec<u8>),
    /// A rejected frame.
    Error(FrameError),
}

/// Feeds `input` to a fresh [`Framer`] in chunks ending at `cuts`
/// (positions, in any order, out-of-range ones ignored), as the server
/// does. Panics on a broken invariant:
/// - a decoder step never uses more than it was given, and makes progress
///   unless it says `Incomplete` (checked inside the framer's loop, in
///   debug builds);
/// - a frame is never over the framing's maximum;
/// - after each chunk, the input held never exceeds `max_pending()`;
/// - decoding stops at a fatal error (the server closes the connection).
pub fn decode_in_chunks(framing: Framing, input: &[u8], cuts: &[usize]) -> Vec<Event> {
    let mut ends: Vec<usize> = cuts.iter().copied().filter(|&c| c > 0 && c < input.len()).collect();
    ends.push(input.len());
    ends.sort_unstable();
    ends.dedup();
    let max = framing.max_frame();
    let max_pending = Decoder::new(framing).max_pending();
    let mut framer = Framer::new(framing);
    let mut out = Vec::new();
    let mut start = 0;
    for end in ends {
        let mut fatal = false;
        framer.feed(&input[start..end], |item| {
            match item {
                Item::Frame(frame) => {
                    assert!(frame.len() <= max, "frame of {} bytes over the {max} maximum", frame.len());
                    out.push(Event::Frame(frame.to_vec()));
                }
                Item::Error(e) => {
                    fatal = e.is_fatal();
                    out.push(Event::Error(e));
                }
            }
            true
        });
        start = end;
        if fatal {
            return out;
        }
        assert!(
            framer.buffered() <= max_pending,
            "{} bytes held undecided, max_pending is {max_pending}",
            framer.buffered()
        );
    }
    out
}

/// What a framing makes of a whole stream, written as plainly as possible:
/// the reference [`decode_in_chunks`] is held to. `None` for raw framing,
/// whose frames depend on how the bytes arrive.
pub fn model(framing: Framing, input: &[u8]) -> Option<Vec<Event>> {
    match framing {
        Framing::Lines { max } => Some(model_lines(input, max)),
        Framing::LengthPrefixed { prefix, max } => {
            let mut out = Vec::new();
            let w = prefix.width();
            let mut rest = input;
            while rest.len() >= w {
                let len = prefix.decode(&rest[..w]);
                if len < 0 {
                    out.push(Event::Error(FrameError::BadLength(len)));
                    break;
                }
                let len = len as u64;
                if len > max as u64 {
                    out.push(Event::Error(FrameError::TooLong { max, len: Some(len) }));
                    let skip = (w as u64).saturating_add(len).min(rest.len() as u64) as usize;
                    rest = &rest[skip..];
                    continue;
                }
                let end = w + len as usize;
                if rest.len() < end {
                    break;
                }
                out.push(Event::Frame(rest[w..end].to_vec()));
                rest = &rest[end..];
            }
            Some(out)
        }
        _ => None,
    }
}

fn model_lines(input: &[u8], max: usize) -> Vec<Event> {
    let mut out = Vec::new();
    let mut pieces: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
    // The last piece has no newline yet: undecided, unless it is already too
    // long to be a line (over max plus a possible '\r').
    let last = pieces.pop().unwrap_or_default();
    for mut line in pieces {
        if line.last() == Some(&b'\r') {
            line = &line[..line.len() - 1];
        }
        out.push(if line.len() > max {
            Event::Error(FrameError::TooLong { max, len: None })
        } else {
            Event::Frame(line.to_vec())
        });
    }
    if last.len() > max.saturating_add(1) {
        out.push(Event::Error(FrameError::TooLong { max, len: None }));
    }
    out
}

/// Decodes `input` whole and in the chunks `cuts` gives, checks the
/// invariants of [`decode_in_chunks`] for both, and that both equal the
/// [`model`]. Returns the events.
pub fn check(framing: Framing, input: &[u8], cuts: &[usize]) -> Vec<Event> {
    let whole = decode_in_chunks(framing, input, &[]);
    let chunked = decode_in_chunks(framing, input, cuts);
    if let Some(model) = model(framing, input) {
        assert_eq!(
            whole, model,
            "{framing:?}: decoding {input:?} whole differs from the framing's definition"
        );
    }
    assert_eq!(chunked, whole, "{framing:?}: {input:?} cut at {cuts:?} decodes differently than whole");
    whole
}
