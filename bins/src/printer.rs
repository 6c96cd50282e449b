//! `switchboard-server`'s standard output: every line it prints (the
//! `listening on` lines, the console's room, `--stats-every`, the shutdown
//! report) goes through one bounded queue to a thread that writes them, so
//! a stdout nobody reads (a full pipe, a stopped terminal) can hold up that
//! thread only: never a worker, the console, the ticker or the shutdown.
//!
//! Past [`MAX_QUEUED`] bytes or [`MAX_CHUNKS`] writes waiting, output is
//! dropped and counted; [`Printer::finish`] waits a bounded time for what
//! is queued and says in the log what was lost.
//!
//! ```
//! use std::time::Duration;
//! use switchboard_bins::printer::Printer;
//!
//! let out = Printer::start(Vec::new())?;
//! out.line("listening on 127.0.0.1:7878");
//! assert_eq!(out.finish(Duration::from_secs(1)), Ok(()));
//! # Ok::<(), std::io::Error>(())
//! ```

use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};

/// Bytes that may wait for the writer thread; past it output is dropped.
pub const MAX_QUEUED: usize = 1 << 20;

/// Writes that may wait for the writer thread; past it output is dropped.
pub const MAX_CHUNKS: usize = 4096;

/// What the writer thread is given.
enum Chunk {
    /// Bytes to write.
    Bytes(Vec<u8>),
    /// Everything before it is written (or the output failed): say so,
    /// and end the thread if the one who asked is still waiting.
    End(Sender<()>),
}

/// The queue and its figures, shared by every clone of a [`Printer`].
struct Inner {
    tx: Sender<Chunk>,
    /// Bytes queued and not yet written.
    queued: AtomicUsize,
    /// Bytes dropped: the queue was full or the output had failed.
    dropped: AtomicU64,
    /// The writer thread, joined by [`Printer::finish`] once it has
    /// written everything.
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// A handle to the process's output queue; clones share it.
#[derive(Clone)]
pub struct Printer {
    inner: Arc<Inner>,
}

impl fmt::Debug for Printer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Printer")
            .field("queued", &self.inner.queued.load(Ordering::Relaxed))
            .field("dropped", &self.dropped())
            .finish()
    }
}

/// [`Printer::finish`] did not see everything written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unwritten {
    /// Bytes still queued when the wait ended (the output is blocked).
    pub queued: usize,
    /// Bytes dropped since the start.
    pub dropped: u64,
}

impl fmt::Display for Unwritten {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "standard output is not being read: {} byte(s) left unwritten, {} byte(s) dropped",
            self.queued, self.dropped
        )
    }
}

impl std::error::Error for Unwritten {}

impl Printer {
    /// The process's standard output, written by a thread of its own.
    pub fn stdout() -> io::Result<Printer> {
        Printer::start(io::stdout())
    }

    /// Writes what is queued to `out`, on a thread of its own. Once a write
    /// fails (a closed stdout) the rest is dropped: the server goes on.
    pub fn start(out: impl Write + Send + 'static) -> io::Result<Printer> {
        let (tx, rx) = crossbeam_channel::bounded(MAX_CHUNKS);
        let inner = Arc::new(Inner {
            tx,
            queued: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
            thread: std::sync::Mutex::new(None),
        });
        let shared = Arc::clone(&inner);
        let thread =
            std::thread::Builder::new().name("stdout".into()).spawn(move || write_all(out, &rx, &shared))?;
        // Joined by `finish` once everything is out; never waited for past
        // that bound: it may be blocked in a write that never returns, and
        // the process ends without it.
        *inner.thread.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(thread);
        Ok(Printer { inner })
    }

    /// Queues `line` and a newline.
    pub fn line(&self, line: impl fmt::Display) {
        self.bytes(format!("{line}\n").into_bytes());
    }

    /// Queues `bytes` as they are; drops them (counted) when the queue is full.
    pub fn bytes(&self, bytes: Vec<u8>) {
        let len = bytes.len();
        if len == 0 {
            return;
        }
        let inner = &*self.inner;
        if inner.queued.fetch_add(len, Ordering::AcqRel) + len > MAX_QUEUED {
            inner.queued.fetch_sub(len, Ordering::AcqRel);
            inner.dropped.fetch_add(len as u64, Ordering::Relaxed);
            return;
        }
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            inner.tx.try_send(Chunk::Bytes(bytes))
        {
            inner.queued.fetch_sub(len, Ordering::AcqRel);
            inner.dropped.fetch_add(len as u64, Ordering::Relaxed);
        }
    }

    /// Bytes dropped so far.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Waits at most `wait` for everything queued to be written; then the
    /// writer thread ends and is joined, and what is queued after is
    /// dropped (counted). `Err` when the output did not take it all in time
    /// (or output was dropped on the way): the caller logs it and exits all
    /// the same; the thread then keeps writing, and a later `finish` may
    /// join it.
    pub fn finish(&self, wait: Duration) -> Result<(), Unwritten> {
        let (done_tx, done_rx) = crossbeam_channel::bounded(1);
        let sent = self.inner.tx.send_timeout(Chunk::End(done_tx), wait).is_ok();
        let flushed = sent && done_rx.recv_timeout(wait).is_ok();
        if flushed {
            // It acknowledged and returned: the join is immediate.
            let thread = self.inner.thread.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
            if let Some(t) = thread {
                if t.join().is_err() {
                    log::error!("standard output: the writer thread panicked");
                }
            }
        }
        let (queued, dropped) = (self.inner.queued.load(Ordering::Acquire), self.dropped());
        if flushed && dropped == 0 {
            Ok(())
        } else {
            Err(Unwritten { queued, dropped })
        }
    }
}

/// An [`io::Write`] that queues each write (for an API that writes to a
/// stream, like the console's); never blocks, never fails.
impl Write for Printer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.bytes(buf.to_vec());
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The writer thread: each chunk written and flushed; after a failed write,
/// the rest only counted as dropped.
fn write_all(mut out: impl Write, rx: &Receiver<Chunk>, inner: &Inner) {
    let mut failed = false;
    for chunk in rx {
        match chunk {
            Chunk::Bytes(bytes) => {
                let len = bytes.len();
                if failed {
                    inner.dropped.fetch_add(len as u64, Ordering::Relaxed);
                } else if let Err(e) = out.write_all(&bytes).and_then(|()| out.flush()) {
                    // A closed stdout stops the output, not the server.
                    log::warn!("standard output: {e}; printing nothing more");
                    inner.dropped.fetch_add(len as u64, Ordering::Relaxed);
                    failed = true;
                }
                inner.queued.fetch_sub(len, Ordering::AcqRel);
            }
            Chunk::End(done) => {
                // Whoever asked gave up waiting: keep writing for them.
                if done.send(()).is_ok() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// An output that blocks until `open` is set, and keeps what it got.
    #[derive(Clone, Default)]
    struct Gate {
        open: Arc<(Mutex<bool>, std::sync::Condvar)>,
        got: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Gate {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let (lock, cv) = &*self.open;
            let mut open = lock.lock().unwrap();
            while !*open {
                open = cv.wait(open).unwrap();
            }
            self.got.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_are_written_in_order() {
        let gate = Gate::default();
        *gate.open.0.lock().unwrap() = true;
        let out = Printer::start(gate.clone()).unwrap();
        out.line("one");
        let mut w = out.clone();
        w.write_all(b"two\n").unwrap();
        out.line(3);
        assert_eq!(out.finish(Duration::from_secs(10)), Ok(()));
        assert_eq!(&gate.got.lock().unwrap()[..], b"one\ntwo\n3\n");
        // The writer thread has been joined: later output is dropped.
        assert!(out.inner.thread.lock().unwrap().is_none());
        out.line("late");
        assert_eq!(out.dropped(), 5);
        assert_eq!(&gate.got.lock().unwrap()[..], b"one\ntwo\n3\n");
    }

    #[test]
    fn a_blocked_output_drops_past_the_bound_and_finish_returns() {
        let gate = Gate::default();
        let out = Printer::start(gate.clone()).unwrap();
        let line = vec![b'x'; 1023];
        // The writer takes the first chunk and blocks in it; the queue
        // then fills up to its byte bound.
        for _ in 0..2 * (MAX_QUEUED / 1024) {
            out.line(String::from_utf8_lossy(&line));
        }
        let dropped = out.dropped();
        assert!(dropped >= (MAX_QUEUED as u64) - 1024, "dropped {dropped}");
        let started = std::time::Instant::now();
        let err = out.finish(Duration::from_millis(100)).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(err.queued > 0 && err.queued <= MAX_QUEUED, "{err}");
        assert_eq!(err.dropped, dropped);
        // Unblocked, what was queued comes out whole lines.
        {
            let (lock, cv) = &*gate.open;
            *lock.lock().unwrap() = true;
            cv.notify_all();
        }
        assert_eq!(out.finish(Duration::from_secs(10)).unwrap_err().queued, 0);
        // The first finish gave up waiting; the second joined the writer.
        assert!(out.inner.thread.lock().unwrap().is_none());
        let got = gate.got.lock().unwrap();
        assert_eq!(got.len() % 1024, 0);
        assert_eq!(got.len() as u64 + dropped, 2 * MAX_QUEUED as u64);
    }
}
