//! Runs a [`Decoder`] over an input cut into arbitrary chunks, the way the
//! server feeds it, checks its invariants at every step, and compares what it
//! decodes with a plain model of the framing. Shared by the regression tests
//! and the fuzz targets (`fuzz/`).

use switchboard::{Decoder, FrameError, Framing, Step};

/// What a decoder made of a stream: frames and errors, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A whole frame.
    Frame(Vec<u8>),
    /// A rejected frame.
    Error(FrameError),
}

/// Feeds `input` to a fresh decoder in chunks ending at `cuts` (positions,
/// in any order, out-of-range ones ignored), as the server does: the caller
/// keeps what the decoder has not used and appends the next chunk. Panics on
/// a broken invariant:
/// - a step never uses more than it was given, and makes progress unless it
///   says `Incomplete`;
/// - a frame is never over the framing's maximum;
/// - after `Incomplete`, the input held never exceeds `max_pending()`;
/// - decoding stops at a fatal error (the server closes the connection).
pub fn decode_in_chunks(framing: Framing, input: &[u8], cuts: &[usize]) -> Vec<Event> {
    let mut ends: Vec<usize> = cuts.iter().copied().filter(|&c| c > 0 && c < input.len()).collect();
    ends.push(input.len());
    ends.sort_unstable();
    ends.dedup();
    let max = framing.max_frame();
    let mut dec = Decoder::new(framing);
    let mut held: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    let mut start = 0;
    for end in ends {
        held.extend_from_slice(&input[start..end]);
        start = end;
        let mut pos = 0;
        // Each step uses at least one byte, so this ends within held.len() + 1 steps.
        for _ in 0..=held.len() {
            let rest = &held[pos..];
            match dec.next(rest) {
                Step::Frame(frame, used) => {
                    assert!(used > 0 && used <= rest.len(), "frame used {used} of {}", rest.len());
                    assert!(frame.len() <= max, "frame of {} bytes over the {max} maximum", frame.len());
                    out.push(Event::Frame(frame.to_vec()));
                    pos += used;
                }
                Step::Error(e, used) => {
                    assert!(used > 0 && used <= rest.len(), "error used {used} of {}", rest.len());
                    out.push(Event::Error(e));
                    if e.is_fatal() {
                        return out;
                    }
                    pos += used;
                }
                Step::Skip(used) => {
                    assert!(used > 0 && used <= rest.len(), "skip used {used} of {}", rest.len());
                    pos += used;
                }
                Step::Incomplete => break,
            }
        }
        held.drain(..pos);
        assert!(
            held.len() <= dec.max_pending(),
            "{} bytes held undecided, max_pending is {}",
            held.len(),
            dec.max_pending()
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
