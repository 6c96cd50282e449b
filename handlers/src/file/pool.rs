//! The threads that prepare replies off the event loop: hashing files not
//! yet in the cache, listing the root.

use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;
use switchboard::Deferred;

use super::{Chain, Inner};

/// A connection's chain of requests, and the deferred reply that keeps the
/// connection open until they are answered.
pub(crate) struct Job {
    pub(crate) chain: Arc<Mutex<Chain>>,
    pub(crate) reply: Deferred,
}

/// A fixed pool of threads fed by a channel; joined on [`stop`](HashPool::stop).
pub(crate) struct HashPool {
    tx: Option<Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
}

impl HashPool {
    pub(crate) fn start(n: usize, inner: Arc<Inner>) -> io::Result<HashPool> {
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        let mut pool = HashPool { tx: Some(tx), threads: Vec::new() };
        for i in 0..n {
            let (rx, inner) = (rx.clone(), Arc::clone(&inner));
            let t = std::thread::Builder::new()
                .name(format!("switchboard-file-{i}"))
                .spawn(move || run(&rx, &inner));
            match t {
                Ok(t) => pool.threads.push(t),
                Err(e) => {
                    pool.stop();
                    return Err(io::Error::new(
                        e.kind(),
                        format!("file: cannot start a hashing thread: {e}"),
                    ));
                }
            }
        }
        Ok(pool)
    }

    pub(crate) fn submit(&self, job: Job) {
        if let Some(tx) = &self.tx {
            // The receivers live as long as the pool: this cannot fail
            // before stop(), and after it the job is dropped (its
            // connection's replies are abandoned with the server).
            let _ = tx.send(job);
        }
    }

    /// Closes the channel and joins the threads (hashing in progress stops
    /// early: the handler sets its cancel flag first).
    pub(crate) fn stop(&mut self) {
        self.tx = None;
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                log::error!("file: a hashing thread panicked");
            }
        }
    }
}

fn run(rx: &Receiver<Job>, inner: &Inner) {
    while let Ok(job) = rx.recv() {
        answer_chain(inner, &job);
        // Dropping the job drops its Deferred: the connection may close.
    }
}

/// Answers the chain's requests in order until it is empty.
fn answer_chain(inner: &Inner, job: &Job) {
    loop {
        let request = {
            let mut chain = job.chain.lock();
            match chain.queue.pop_front() {
                Some(r) => r,
                None => {
                    chain.active = false;
                    return;
                }
            }
        };
        let reply = inner.reply(request);
        let sent = job.reply.send(reply.header).and_then(|()| match reply.file {
            Some((file, size)) => job.reply.send_file(file, 0, size),
            None => Ok(()),
        });
        if sent.is_err() {
            // The connection is gone: nothing more to answer.
            let mut chain = job.chain.lock();
            chain.queue.clear();
            chain.active = false;
            return;
        }
    }
}
