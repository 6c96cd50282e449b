use switchboard::{Conn, Flow, FrameError, Framing, Handler};

/// Echoes lines; answers an over-long line with `! ERROR` and keeps going.
#[derive(Debug, Clone, Copy)]
pub struct LineEcho {
    /// The longest line accepted, in bytes.
    pub max: usize,
}

impl Handler for LineEcho {
    type Session = ();
    fn framing(&self) -> Framing {
        Framing::lines(self.max)
    }
    fn open(&self, _: &mut Conn<'_>) {}
    fn frame(&self, _: &mut (), line: &[u8], conn: &mut Conn<'_>) -> Flow {
        conn.send(line);
        conn.send(b"\n");
        Flow::Continue
    }
    fn frame_error(&self, _: &mut (), e: FrameError, conn: &mut Conn<'_>) -> Flow {
        conn.send(format!("! {e}\n").as_bytes());
        Flow::Continue
    }
}
