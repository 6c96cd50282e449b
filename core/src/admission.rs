//! [`Admission`]: a connection counted as open, from the acceptor's accept
//! to the worker's close, in one place.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::stats::Counters;

/// A token for one admitted connection: made when the acceptor takes it
/// (counting it in the server's open connections and its worker's load),
/// carried with it (in the mail to its worker, in the connection, to
/// another worker when it moves) and dropped when it closes, which counts
/// it off. Whatever path a connection takes out (a failed setup, a worker
/// that stopped, a close), the counts cannot drift.
#[derive(Debug)]
pub(crate) struct Admission {
    stats: Arc<Counters>,
    /// The load of the worker that owns the connection.
    load: Arc<AtomicUsize>,
}

impl Admission {
    /// Counts a connection in `stats.open` and in a worker's `load`.
    pub(crate) fn new(stats: &Arc<Counters>, load: &Arc<AtomicUsize>) -> Admission {
        stats.open.fetch_add(1, Ordering::AcqRel);
        load.fetch_add(1, Ordering::AcqRel);
        Admission { stats: Arc::clone(stats), load: Arc::clone(load) }
    }

    /// The connection moves to the worker whose load is `load`.
    pub(crate) fn move_to(&mut self, load: &Arc<AtomicUsize>) {
        load.fetch_add(1, Ordering::AcqRel);
        self.load.fetch_sub(1, Ordering::AcqRel);
        self.load = Arc::clone(load);
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.load.fetch_sub(1, Ordering::AcqRel);
        self.stats.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_while_alive_and_moved_with_the_connection() {
        let stats = Arc::new(Counters::new(2));
        let (a, b) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let mut token = Admission::new(&stats, &a);
        assert_eq!((stats.open.load(Ordering::Acquire), a.load(Ordering::Acquire)), (1, 1));
        token.move_to(&b);
        assert_eq!((a.load(Ordering::Acquire), b.load(Ordering::Acquire)), (0, 1));
        drop(token);
        assert_eq!((stats.open.load(Ordering::Acquire), b.load(Ordering::Acquire)), (0, 0));
    }
}
