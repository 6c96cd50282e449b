//! Per-worker counters, for metrics that show how load spreads over the
//! workers ([`StatsHandle::workers`]).

use crate::stats::{StatsHandle, WorkerStats};

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
        self.counters.workers.iter().map(|w| w.share()).collect()
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
