//! echo: every byte back unchanged.

use switchboard::{Conn, Flow, Framing, Handler};

/// Sends every byte received back unchanged, in order, as soon as it
/// arrives. No framing: binary-safe, any size, no newline needed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Echo;

impl Handler for Echo {
    type Session = ();

    fn framing(&self) -> Framing {
        Framing::Raw
    }

    fn open(&self, _conn: &mut Conn<'_>) {}

    fn frame(&self, _: &mut (), data: &[u8], conn: &mut Conn<'_>) -> Flow {
        conn.send(data);
        Flow::Continue
    }
}
