//! [`Admission`]: a connection counted as open, from the acceptor's accept
//! to the worker's close, in one place.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::stats::Counters;

/// One worker's load: the connections it owns (or has on the way in its
/// mailbox), and the server's counters they are also counted open in.
/// Shared by the worker, its link and every [`Admission`] it holds, so a
/// connection pays one pointer for both counts.
#[derive(Debug)]
pub(crate) struct Load {
    conns: AtomicUsize,
    stats: Arc<Counters>,
}

impl Load {
    /// A worker's load, none yet, counting open connections in `stats`.
    pub(crate) fn new(stats: &Arc<Counters>) -> Arc<Load> {
        Arc::new(Load { conns: AtomicUsize::new(0), stats: Arc::clone(stats) })
    }

    /// The connections the worker owns.
    pub(crate) fn get(&self) -> usize {
        self.conns.load(Ordering::Acquire)
    }
}

/// A token for one admitted connection: made when the acceptor takes it
/// (counting it in the server's open connections and its worker's load),
/// carried with it (in the mail to its worker, in the connection, to
/// another worker when it moves) and dropped when it closes, which counts
/// it off. Whatever path a connection takes out (a failed setup, a worker
/// that stopped, a close), the counts cannot drift. One pointer: the
/// worker's [`Load`], which knows the server's counters.
#[derive(Debug)]
pub(crate) struct Admission {
    /// The load of the worker that owns the connection.
    load: Arc<Load>,
}

impl Admission {
    /// Counts a connection in the server's open connections and in the
    /// worker's `load`.
    pub(crate) fn new(load: &Arc<Load>) -> Admission {
        load.stats.open.fetch_add(1, Ordering::AcqRel);
        load.conns.fetch_add(1, Ordering::AcqRel);
        Admission { load: Arc::clone(load) }
    }

    /// The connection moves to the worker whose load is `load`.
    pub(crate) fn move_to(&mut self, load: &Arc<Load>) {
        load.conns.fetch_add(1, Ordering::AcqRel);
        self.load.conns.fetch_sub(1, Ordering::AcqRel);
        self.load = Arc::clone(load);
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.load.conns.fetch_sub(1, Ordering::AcqRel);
        self.load.stats.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_while_alive_and_moved_with_the_connection() {
        let stats = Arc::new(Counters::new(2));
        let (a, b) = (Load::new(&stats), Load::new(&stats));
        let mut token = Admission::new(&a);
        assert_eq!((stats.open.load(Ordering::Acquire), a.get()), (1, 1));
        token.move_to(&b);
        assert_eq!((a.get(), b.get(), stats.open.load(Ordering::Acquire)), (0, 1, 1));
        drop(token);
        assert_eq!((stats.open.load(Ordering::Acquire), b.get()), (0, 0));
    }

    #[test]
    fn one_pointer() {
        assert_eq!(std::mem::size_of::<Admission>(), std::mem::size_of::<usize>());
    }
}
