//! [`Scripted`]: a byte stream with no socket under it, which plays a
//! script of reads and keeps what is written: what `Harness` drives a
//! connection over (an empty script: its bytes come through `serve`), and
//! what the connection's unit tests play a peer with.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::sync::atomic::AtomicUsize;
use std::time::Instant;

use crate::close::CloseReason;
use crate::outbound::{Outbound, WriteError};

use super::ByteStream;

/// One read of the script (the harness plays none).
#[derive(Debug)]
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) enum Script {
    /// These bytes (over as many reads as the buffer needs).
    Bytes(&'static [u8]),
    /// Nothing to read now.
    WouldBlock,
    /// The peer's EOF.
    Eof,
}

/// A byte stream that plays a script of reads (then would block) and keeps
/// what is written.
#[derive(Debug, Default)]
pub(crate) struct Scripted {
    pub(crate) reads: VecDeque<Script>,
    pub(crate) written: Vec<u8>,
    /// The write side was shut.
    pub(crate) write_shut: bool,
}

impl Read for Scripted {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.reads.pop_front() {
            Some(Script::Bytes(b)) => {
                let n = b.len().min(buf.len());
                buf[..n].copy_from_slice(&b[..n]);
                if n < b.len() {
                    self.reads.push_front(Script::Bytes(&b[n..]));
                }
                Ok(n)
            }
            Some(Script::Eof) => Ok(0),
            Some(Script::WouldBlock) | None => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl ByteStream for Scripted {
    fn is_ready(&self) -> bool {
        true
    }
    fn preamble_deadline(&self) -> Option<(Instant, fn() -> CloseReason)> {
        None
    }
    fn eof_pending(&self) -> bool {
        false
    }
    fn wants_write(&self) -> bool {
        false
    }
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.write_shut = true;
        Ok(())
    }
    fn write_out(
        &mut self,
        out: &mut Outbound,
        queued: &AtomicUsize,
        held: &AtomicUsize,
        _spare: &mut [u8],
    ) -> Result<u64, WriteError> {
        let before = self.written.len();
        out.drain_into(&mut self.written, queued, held)?;
        Ok((self.written.len() - before) as u64)
    }
}
