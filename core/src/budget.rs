//! The descriptor budget: the process's `RLIMIT_NOFILE`, raised to its
//! hard limit at start, and the connection limit derived from it.

use rustix::process::{getrlimit, setrlimit, Resource};

/// Descriptors the server opens whatever its load, besides a pair per
/// worker: the listener, the acceptor's poller and waker, and the spare the
/// acceptor keeps for `EMFILE`.
pub(crate) const FIXED: usize = 4;
/// Descriptors per worker: its poller and its waker.
pub(crate) const PER_WORKER: usize = 2;
/// The smallest reserve left for handlers' own descriptors (files, pipes,
/// outgoing connections).
pub(crate) const MIN_RESERVE: usize = 64;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (as nginx and most
/// servers do) and returns the soft limit now in force, `None` when it is
/// unlimited.
pub(crate) fn raise_nofile() -> Option<u64> {
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current.is_some() && limit.current != limit.maximum {
        let before = limit.current;
        limit.current = limit.maximum;
        match setrlimit(Resource::Nofile, limit) {
            Ok(()) => {
                log::info!("raised the descriptor limit from {} to {}", show(before), show(limit.maximum))
            }
            Err(e) => log::warn!("cannot raise the descriptor limit above {}: {e}", show(before)),
        }
    }
    getrlimit(Resource::Nofile).current
}

fn show(n: Option<u64>) -> String {
    n.map_or_else(|| "unlimited".into(), |n| n.to_string())
}

/// Descriptors the process holds now (the standard streams, a signal
/// handler's pipe, whatever else it opened): read from `/proc/self/fd`,
/// or 3 where that cannot be read.
pub(crate) fn open_now() -> usize {
    match std::fs::read_dir("/proc/self/fd") {
        // The listing holds the descriptor that reads it.
        Ok(dir) => dir.count().saturating_sub(1).max(3),
        Err(_) => 3,
    }
}

/// The connections `nofile` descriptors allow with `workers` workers when
/// the process already holds `open`: the limit minus those, minus the
/// server's own (`FIXED + PER_WORKER × workers`), minus a reserve for
/// handlers of max(64, limit / 8), the reserve being at most half of what
/// is left. At least 1. Returns the limit and the reserve.
pub(crate) fn connection_limit(nofile: Option<u64>, open: usize, workers: usize) -> (usize, usize) {
    let Some(nofile) = nofile else { return (usize::MAX, usize::MAX) };
    let nofile = usize::try_from(nofile).unwrap_or(usize::MAX);
    let own = open.saturating_add(FIXED).saturating_add(PER_WORKER.saturating_mul(workers));
    let left = nofile.saturating_sub(own);
    let reserve = MIN_RESERVE.max(nofile / 8).min(left / 2);
    ((left - reserve).max(1), reserve)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_keeps_a_reserve() {
        // 256 descriptors, 5 open, 2 workers: 256 - 5 - 8 own - 64 reserve.
        assert_eq!(connection_limit(Some(256), 5, 2), (179, 64));
        // The same with only the standard streams open.
        assert_eq!(connection_limit(Some(256), 3, 2), (181, 64));
        // 1 Mi descriptors: the reserve is an eighth.
        assert_eq!(connection_limit(Some(1 << 20), 3, 2), ((1 << 20) - 11 - (1 << 17), 1 << 17));
        // A tiny limit still leaves half for handlers and serves one.
        assert_eq!(connection_limit(Some(32), 3, 1), (12, 11));
        assert_eq!(connection_limit(Some(3), 3, 4), (1, 0));
        assert_eq!(connection_limit(None, 3, 2).0, usize::MAX);
    }
}
