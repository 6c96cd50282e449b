//! The `list` answer: the regular files under the root, recursively, with
//! names relative to the root, sorted by name.
//!
//! Symbolic links are neither listed nor followed (so the walk cannot loop
//! or leave the root). Names no request line can carry are left out: not
//! UTF-8, or holding LF, CR or NUL, or a path longer than the request line
//! limit allows. Folders that cannot be read for lack of permission are
//! skipped; running out of descriptors or memory fails the whole answer
//! (`server busy`), never a shorter list that looks complete.
//!
//! The walk is bounded: at most [`MAX_SCANNED`] folder entries,
//! [`MAX_DIRS`] folders opened, [`MAX_LIST_FILES`] files and [`MAX_DEPTH`]
//! levels; if a bound is hit, or the header would pass 64 KiB, the list is
//! cut and says `"truncated": true`.
//!
//! One answer is kept and shared: it is reused for up to [`CACHE_TTL`] as
//! long as the root folder's modification time has not changed, so a storm
//! of `list` requests costs one walk per [`CACHE_TTL`], and only one walk
//! runs at a time. The answer is kept in an anonymous in-memory file and
//! sent from it like a file's content: up to 64 KiB a reply, it would
//! otherwise count against the connection's outbound budget, and a client
//! that pipelines 64 `list`s and reads them as they come would be cut off
//! as a slow reader.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use rustix::fs::MemfdFlags;
use switchboard::Message;

use super::confine::reason_for;
use super::proto::{encode, Header, ListEntry, Reason, MAX_LIST_FILES};

/// The most folder entries looked at in one walk.
pub(crate) const MAX_SCANNED: usize = 100_000;
/// The most folders opened in one walk (the root included).
pub(crate) const MAX_DIRS: usize = 2_000;
/// The deepest folder looked into (the root is depth 0).
const MAX_DEPTH: usize = 32;
/// How long a listing is reused while the root folder is unchanged.
pub(crate) const CACHE_TTL: Duration = Duration::from_secs(1);

/// The files found, and whether the walk was cut short.
#[derive(Debug, Default)]
struct Walk {
    files: Vec<ListEntry>,
    truncated: bool,
}

/// Whether a request line of at most `max_request` bytes can name `name`.
pub(crate) fn requestable(name: &str, max_request: usize) -> bool {
    !name.contains(['\n', '\r', '\0']) && name.len() + "get ".len() <= max_request
}

/// Errors that mean the server is short of resources, not that the folder
/// is unreadable.
fn exhausted(e: &io::Error) -> bool {
    reason_for(e) == Reason::ServerBusy
}

fn walk(root: &Path, max_request: usize) -> Result<Walk, Reason> {
    let mut out = Walk::default();
    let mut scanned = 0usize;
    let mut opened = 0usize;
    // Folders still to read: path, name prefix relative to the root, depth.
    let mut dirs: Vec<(PathBuf, String, usize)> = vec![(root.to_path_buf(), String::new(), 0)];
    while let Some((dir, prefix, depth)) = dirs.pop() {
        if opened == MAX_DIRS {
            out.truncated = true;
            break;
        }
        opened += 1;
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if depth == 0 || exhausted(&e) => return Err(reason_for(&e)),
            Err(e) => {
                log::debug!("file: list: skipping {}: {e}", dir.display());
                continue;
            }
        };
        for entry in entries {
            scanned += 1;
            if scanned > MAX_SCANNED || out.files.len() >= MAX_LIST_FILES {
                out.truncated = true;
                return Ok(out);
            }
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) if exhausted(&e) => return Err(Reason::ServerBusy),
                Err(_) => continue,
            };
            let Ok(kind) = entry.file_type() else { continue };
            let file_name = entry.file_name();
            let Some(name) = file_name.to_str() else { continue };
            let rel = format!("{prefix}{name}");
            if !requestable(&rel, max_request) {
                continue;
            }
            if kind.is_file() {
                match entry.metadata() {
                    Ok(meta) => out.files.push(ListEntry { name: rel, size: meta.len() }),
                    Err(e) if exhausted(&e) => return Err(Reason::ServerBusy),
                    Err(_) => {}
                }
            } else if kind.is_dir() {
                if depth + 1 > MAX_DEPTH {
                    out.truncated = true;
                } else {
                    dirs.push((entry.path(), format!("{rel}/"), depth + 1));
                }
            }
        }
    }
    Ok(out)
}

/// The framed `list` answer for the canonical `root`, built now: the list,
/// or (`Err`) an error header.
pub(crate) fn build(root: &Path, max_request: usize) -> Result<Vec<u8>, Vec<u8>> {
    match walk(root, max_request) {
        Ok(Walk { mut files, truncated }) => {
            files.sort_unstable_by(|a, b| a.name.cmp(&b.name));
            Ok(encode(&Header::list(files, truncated)))
        }
        Err(reason) => {
            log::warn!("file: list {}: {reason}", root.display());
            Err(encode(&Header::error("", reason)))
        }
    }
}

/// A `list` answer, framed: in an anonymous file (sent like a file's
/// content), or in memory where no such file could be made.
#[derive(Debug, Clone)]
pub(crate) enum Answer {
    /// The whole framed answer is the file's `len` bytes.
    File(Arc<File>, u64),
    /// The framed answer.
    Bytes(Message),
}

impl Answer {
    fn new(framed: Vec<u8>) -> Answer {
        let stored = rustix::fs::memfd_create("switchboard-list", MemfdFlags::CLOEXEC)
            .map(File::from)
            .map_err(io::Error::from)
            .and_then(|mut f| f.write_all(&framed).map(|()| f));
        match stored {
            Ok(f) => Answer::File(Arc::new(f), framed.len() as u64),
            Err(e) => {
                log::debug!("file: list: no in-memory file ({e}); the answer is sent from memory");
                Answer::Bytes(Message::from(framed))
            }
        }
    }

    /// The framed bytes (reads the file back; for tests).
    #[cfg(test)]
    fn bytes(&self) -> Vec<u8> {
        use std::os::unix::fs::FileExt;
        match self {
            Answer::Bytes(m) => m.to_vec(),
            Answer::File(f, len) => {
                let mut buf = vec![0; *len as usize];
                f.read_exact_at(&mut buf, 0).unwrap();
                buf
            }
        }
    }
}

/// The last answer built, and what it is valid for.
#[derive(Debug)]
struct Cached {
    at: Instant,
    root_mtime: SystemTime,
    answer: Answer,
}

/// The shared `list` answer (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct ListCache {
    cached: Mutex<Option<Cached>>,
    /// Held while a walk runs: one at a time.
    building: Mutex<()>,
}

impl ListCache {
    fn fresh(&self, mtime: Option<SystemTime>) -> Option<Answer> {
        let cached = self.cached.lock();
        let c = cached.as_ref()?;
        (c.at.elapsed() < CACHE_TTL && Some(c.root_mtime) == mtime).then(|| c.answer.clone())
    }

    /// The `list` answer: the cached one if still valid, else a new walk.
    pub(crate) fn get(&self, root: &Path, max_request: usize) -> Answer {
        let mtime = || fs::metadata(root).and_then(|m| m.modified()).ok();
        if let Some(answer) = self.fresh(mtime()) {
            return answer;
        }
        let _building = self.building.lock();
        // Another walk may have finished while this one waited.
        let before = mtime();
        if let Some(answer) = self.fresh(before) {
            return answer;
        }
        let at = Instant::now();
        let answer = match build(root, max_request) {
            Ok(list) => Answer::new(list),
            Err(error) => return Answer::Bytes(Message::from(error)),
        };
        // Only a walk whose root did not change under it is kept.
        if let Some(root_mtime) = before.filter(|_| mtime() == before) {
            *self.cached.lock() = Some(Cached { at, root_mtime, answer: answer.clone() });
        }
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file::proto::decode;

    fn temp(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sb-list-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn names_no_request_can_carry_are_left_out() {
        let dir = temp("names");
        for name in ["ok", "new\nline", "carriage\rreturn", "tab\tok"] {
            std::fs::write(dir.join(name), b"x").unwrap();
        }
        std::fs::write(dir.join("n".repeat(200)), b"").unwrap();
        let (h, _) = decode(&build(&dir, 100).unwrap()).unwrap().unwrap();
        let names: Vec<String> = h.files.unwrap().into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["ok", "tab\tok"]);
        assert!(!h.truncated);
        assert!(requestable("a b/c", 9) && !requestable("a b/cd", 9));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_walk_stops_at_its_folder_budget() {
        let dir = temp("dirs");
        for i in 0..MAX_DIRS + 5 {
            std::fs::create_dir(dir.join(format!("d{i:05}"))).unwrap();
        }
        std::fs::write(dir.join("d00000").join("f"), b"").unwrap();
        let walked = walk(&dir, 4096).unwrap();
        assert!(walked.truncated);
        let (h, _) = decode(&build(&dir, 4096).unwrap()).unwrap().unwrap();
        assert!(h.truncated);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_cache_is_reused_then_renewed_when_the_root_changes() {
        let dir = temp("cache");
        std::fs::write(dir.join("a"), b"1").unwrap();
        let cache = ListCache::default();
        let first = cache.get(&dir, 4096);
        // The same shared answer, not a new walk.
        let (Answer::File(a, _), Answer::File(b, _)) = (&first, &cache.get(&dir, 4096)) else {
            panic!("the answer is not in a file");
        };
        assert!(Arc::ptr_eq(a, b));
        let (h, _) = decode(&first.bytes()).unwrap().unwrap();
        assert_eq!(h.files.unwrap().len(), 1);
        std::fs::write(dir.join("b"), b"22").unwrap();
        // Make sure the root's mtime moves even on a coarse clock.
        let later = SystemTime::now() + Duration::from_secs(10);
        std::fs::File::open(&dir).unwrap().set_modified(later).unwrap();
        let (h, _) = decode(&cache.get(&dir, 4096).bytes()).unwrap().unwrap();
        assert_eq!(h.files.unwrap().len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unreadable_root_is_an_error_not_an_empty_list() {
        let dir = temp("gone");
        std::fs::remove_dir_all(&dir).unwrap();
        let (h, _) = decode(&build(&dir, 4096).unwrap_err()).unwrap().unwrap();
        assert_eq!(h.error.as_deref(), Some("not found"));
        assert_eq!(h.files, None);
    }
}
