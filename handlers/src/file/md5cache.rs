//! The md5 of each served file, computed once per (path, size, modification
//! time, inode) and kept in a bounded cache.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use md5::{Digest, Md5};
use parking_lot::Mutex;

/// How much of a file is read per `pread` while hashing.
const CHUNK: usize = 256 * 1024;

/// What identifies one version of a file's content.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    path: PathBuf,
    size: u64,
    mtime: (i64, i64),
    inode: (u64, u64),
}

impl Key {
    /// The key of the file at canonical `path` whose `fstat` is `meta`.
    pub(crate) fn new(path: &Path, meta: &Metadata) -> Key {
        Key {
            path: path.to_path_buf(),
            size: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            inode: (meta.dev(), meta.ino()),
        }
    }
}

/// Why hashing failed.
#[derive(Debug)]
pub(crate) enum HashError {
    /// The file ended before its size: it shrank while being read.
    Shrank,
    /// A read failed.
    Io(io::Error),
    /// The handler is going away: hashing stopped.
    Cancelled,
}

/// A bounded map from [`Key`] to md5; when full the oldest entry goes.
#[derive(Debug)]
pub(crate) struct Md5Cache {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<Key, [u8; 16]>,
    order: VecDeque<Key>,
}

impl Md5Cache {
    pub(crate) fn new(capacity: usize) -> Md5Cache {
        Md5Cache { capacity: capacity.max(1), inner: Mutex::new(Inner::default()) }
    }

    /// The cached md5 for `key`, if there is one.
    pub(crate) fn get(&self, key: &Key) -> Option<[u8; 16]> {
        self.inner.lock().map.get(key).copied()
    }

    /// The md5 of the first `key.size` bytes of `file`, from the cache or
    /// computed (outside the lock; it stops early when `cancel` is set) and
    /// then cached; with whether it was computed.
    pub(crate) fn get_or_compute(
        &self,
        key: Key,
        file: &File,
        cancel: &AtomicBool,
    ) -> Result<([u8; 16], bool), HashError> {
        if let Some(sum) = self.get(&key) {
            return Ok((sum, false));
        }
        let sum = md5_of(file, key.size, cancel)?;
        let mut inner = self.inner.lock();
        if !inner.map.contains_key(&key) {
            while inner.map.len() >= self.capacity {
                let Some(old) = inner.order.pop_front() else { break };
                inner.map.remove(&old);
            }
            inner.order.push_back(key.clone());
            inner.map.insert(key, sum);
        }
        Ok((sum, true))
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().map.len()
    }
}

/// The md5 of the first `size` bytes of `file`, read with `pread` (the
/// file's offset is left alone).
pub(crate) fn md5_of(file: &File, size: u64, cancel: &AtomicBool) -> Result<[u8; 16], HashError> {
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; CHUNK.min(usize::try_from(size).unwrap_or(CHUNK)).max(1)];
    let mut pos = 0u64;
    while pos < size {
        if cancel.load(Ordering::Relaxed) {
            return Err(HashError::Cancelled);
        }
        let want = usize::try_from(size - pos).unwrap_or(usize::MAX).min(buf.len());
        match file.read_at(&mut buf[..want], pos) {
            Ok(0) => return Err(HashError::Shrank),
            Ok(n) => {
                hasher.update(&buf[..n]);
                pos += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(HashError::Io(e)),
        }
    }
    Ok(hasher.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn hashes_caches_and_evicts() {
        let dir = std::env::temp_dir().join(format!("sb-md5cache-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cache = Md5Cache::new(2);
        let mut sums = Vec::new();
        for (i, content) in [&b""[..], b"abc", b"hello"].iter().enumerate() {
            let path = dir.join(format!("f{i}"));
            std::fs::File::create(&path).unwrap().write_all(content).unwrap();
            let file = File::open(&path).unwrap();
            let key = Key::new(&path, &file.metadata().unwrap());
            let (sum, computed) = cache.get_or_compute(key.clone(), &file, &AtomicBool::new(false)).unwrap();
            assert!(computed);
            assert_eq!(cache.get_or_compute(key, &file, &AtomicBool::new(false)).unwrap(), (sum, false));
            sums.push(sum);
            assert!(cache.len() <= 2);
        }
        let hex = |s: &[u8; 16]| s.iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert_eq!(hex(&sums[0]), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(hex(&sums[1]), "900150983cd24fb0d6963f7d28e17f72");
        // Asking for more than the file holds means it shrank.
        let file = File::open(dir.join("f1")).unwrap();
        assert!(matches!(md5_of(&file, 10, &AtomicBool::new(false)), Err(HashError::Shrank)));
        assert!(matches!(md5_of(&file, 10, &AtomicBool::new(true)), Err(HashError::Cancelled)));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
