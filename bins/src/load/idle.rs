//! Idle mode: connections that only stay open, to measure what an idle
//! connection costs the server.

use super::worker::{Cx, Protocol};

/// Idle mode: connections that only stay open; whatever the server sends
/// (a greeting) is ignored.
#[derive(Debug)]
pub(crate) struct Idle;

impl Protocol for Idle {
    type Conn = ();
    type Output = ();

    fn open(&mut self, _global: usize) {}

    fn on_data(&mut self, _c: &mut (), _data: &[u8], _cx: &mut Cx<'_>) -> Result<(), String> {
        Ok(())
    }

    fn may_send(&self, _c: &(), _depth: usize) -> bool {
        false
    }

    fn may_send_open(&self, _c: &()) -> bool {
        false
    }

    fn send(&mut self, _c: &mut (), _intended_ns: u64, _out: &mut Vec<u8>) {}

    fn in_flight(&self, _c: &()) -> usize {
        0
    }

    fn close(&mut self, _c: ()) {}

    fn finish(self) {}
}
