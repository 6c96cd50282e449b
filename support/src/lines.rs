//! The input layout of the fuzz targets, and line cutting as the server
//! does it.

use switchboard::{Framer, Framing, Item};

/// Splits fuzz data into read boundaries and the stream: the first byte is
/// how many cuts follow (up to 15), each a little-endian u16 position.
pub fn cuts(data: &[u8]) -> (Vec<usize>, &[u8]) {
    let Some((&n, rest)) = data.split_first() else { return (Vec::new(), data) };
    let n = usize::from(n % 16).min(rest.len() / 2);
    let (head, input) = rest.split_at(n * 2);
    let cuts = head
        .chunks_exact(2)
        .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])) % (input.len() + 1))
        .collect();
    (cuts, input)
}

/// Cuts `data` into lines as a server with `Framing::lines(max)` would and
/// calls `f` on each whole line, then on the unterminated rest.
pub fn for_each_line(data: &[u8], max: usize, mut f: impl FnMut(&[u8])) {
    let mut framer = Framer::new(Framing::lines(max));
    framer.feed(data, |item| {
        if let Item::Frame(line) = item {
            f(line);
        }
        true
    });
    f(framer.held());
}
