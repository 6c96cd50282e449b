//! What the file handler counts for the metrics endpoint.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Counters of a [`FileGet`](super::FileGet), shared with whoever reads
/// them ([`FileGet::meters`](super::FileGet::meters)); they only grow.
#[derive(Debug, Default)]
pub struct FileMeters {
    file_bytes: AtomicU64,
    md5_hits: AtomicU64,
    md5_computed: AtomicU64,
}

impl FileMeters {
    /// Bytes of files handed to connections to send (the whole file of
    /// each `get` answered, counted when the reply is queued; `list`
    /// answers not included).
    pub fn file_bytes_sent(&self) -> u64 {
        self.file_bytes.load(Relaxed)
    }

    /// `get` requests whose md5 came from the cache.
    pub fn md5_cache_hits(&self) -> u64 {
        self.md5_hits.load(Relaxed)
    }

    /// md5 sums computed (cache misses that were hashed to the end).
    pub fn md5_computed(&self) -> u64 {
        self.md5_computed.load(Relaxed)
    }

    pub(crate) fn sent(&self, bytes: u64) {
        self.file_bytes.fetch_add(bytes, Relaxed);
    }

    pub(crate) fn hit(&self) {
        self.md5_hits.fetch_add(1, Relaxed);
    }

    pub(crate) fn computed(&self) {
        self.md5_computed.fetch_add(1, Relaxed);
    }
}
