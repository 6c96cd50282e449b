//! The descriptor budget: the process's `RLIMIT_NOFILE`, raised to its
//! hard limit at start, and the connection limit derived from it.

use rustix::process::{getrlimit, setrlimit, Resource};

/// Descriptors the server holds whatever its load, besides one per worker
/// pair below: the three standard streams, the listener, the acceptor's
/// poller and waker, and the spare the acceptor keeps for `EMFILE`.
pub(crate) const FIXED: usize = 7;
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
            Ok(()) => log::info!(
                "raised the descriptor limit from {} to {}",
                show(before),
                show(limit.maximum)
            ),
            Err(e) => log::warn!("cannot raise the descriptor limit above {}: {e}", show(before)),
        }
    }
    getrlimit(Resource::Nofile).current
}

fn show(n: Option<u64>) -> String {
    n.map_or_else(|| "unlimited".into(), |n| n.to_string())
}

/// The connections `nofile` descriptors allow with `workers` workers: the
/// limit minus the server's own descriptors (`FIXED + PER_WORKER ×
/// workers`) minus a reserve for handlers of max(64, limit / 8), the
/// reserve being at most half of what is left. At least 1.
pub(crate) fn connection_limit(nofile: Option<u64>, workers: usize) -> usize {
    let Some(nofile) = nofile else { return usize::MAX };
    let nofile = usize::try_from(nofile).unwrap_or(usize::MAX);
    let own = FIXED.saturating_add(PER_WORKER.saturating_mul(workers));
    let left = nofile.saturating_sub(own);
    let reserve = MIN_RESERVE.max(nofile / 8).min(left / 2);
    (left - reserve).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_keeps_a_reserve() {
        // 256 descriptors, 2 workers: 256 - 11 own - 64 reserve.
        assert_eq!(connection_limit(Some(256), 2), 181);
        // 1 Mi descriptors: the reserve is an eighth.
        assert_eq!(connection_limit(Some(1 << 20), 2), (1 << 20) - 11 - (1 << 17));
        // A tiny limit still leaves half for handlers and serves one.
        assert_eq!(connection_limit(Some(32), 1), 12);
        assert_eq!(connection_limit(Some(3), 4), 1);
        assert_eq!(connection_limit(None, 2), usize::MAX);
    }
}
