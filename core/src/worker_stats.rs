//! Per-worker counters, for metrics that show how load spreads over the
//! workers ([`StatsHandle::workers`]).

use std::sync::atomic::Ordering::Relaxed;

use crate::server::StatsHandle;

/// One worker's share of the counters in [`Stats`](crate::Stats): summed
/// over every worker they give the snapshot's figures of the same name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerStats {
    /// Connections this worker closed (the acceptor's own closes, when a
    /// worker was gone, are in no worker's share).
    pub closed: u64,
    /// Connections closed by the idle or frame timeout.
    pub timed_out: u64,
    /// Bytes read from peers.
    pub bytes_in: u64,
    /// Bytes written to peers (file regions included).
    pub bytes_out: u64,
    /// Frames handed to the handler.
    pub frames: u64,
    /// Frames rejected by the framing.
    pub frame_errors: u64,
    /// Connections force-closed at shutdown.
    pub forced_closes: u64,
    /// Bytes queued for this worker's connections and not yet written.
    pub queued_bytes: usize,
}

impl StatsHandle {
    /// Each worker's counters now, in worker order (as many entries as the
    /// server has workers).
    ///
    /// ```no_run
    /// use switchboard::{handler_fn, Flow, Framing, Server};
    ///
    /// let echo = handler_fn(Framing::Raw, |data, conn| {
    ///     conn.send(data);
    ///     Flow::Continue
    /// });
    /// let server = Server::builder().workers(2).start("127.0.0.1:0", echo)?;
    /// for (i, w) in server.stats_handle().workers().iter().enumerate() {
    ///     println!("worker {i}: {} bytes in", w.bytes_in);
    /// }
    /// # Ok::<(), switchboard::StartError>(())
    /// ```
    pub fn workers(&self) -> Vec<WorkerStats> {
        self.counters
            .workers
            .iter()
            .map(|w| WorkerStats {
                closed: w.closed.load(Relaxed),
                timed_out: w.timed_out.load(Relaxed),
                bytes_in: w.bytes_in.load(Relaxed),
                bytes_out: w.bytes_out.load(Relaxed),
                frames: w.frames.load(Relaxed),
                frame_errors: w.frame_errors.load(Relaxed),
                forced_closes: w.forced_closes.load(Relaxed),
                queued_bytes: w.queued.load(Relaxed),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    use crate::{handler_fn, Flow, Framing, Server};

    #[test]
    fn worker_shares_add_up_to_the_snapshot() {
        let echo = handler_fn(Framing::Raw, |data, conn| {
            conn.send(data);
            Flow::Continue
        });
        let server = Server::builder().workers(2).start("127.0.0.1:0", echo).unwrap();
        let handle = server.stats_handle();
        let mut s = TcpStream::connect(server.local_addr()).unwrap();
        s.write_all(b"hello").unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
        let workers = handle.workers();
        let total = handle.snapshot();
        assert_eq!(workers.len(), 2);
        assert_eq!(workers.iter().map(|w| w.bytes_in).sum::<u64>(), total.bytes_in);
        assert_eq!(total.bytes_in, 5);
        assert_eq!(workers.iter().filter(|w| w.bytes_in == 5).count(), 1);
        drop(s);
        server.shutdown();
    }
}
