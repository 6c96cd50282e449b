//! file get: serves the files under one root folder (PROTOCOLS.md, "file").

mod confine;
mod header;
mod list;
mod md5cache;
mod request;

use std::fmt;
use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{Mode, OFlags};
use switchboard::{Conn, Flow, FrameError, Framing, Handler};

use self::header::Reason;
use self::md5cache::{HashError, Key, Md5Cache};
use self::request::Request;

/// How many md5 sums are cached (oldest out first).
const MD5_CACHE_ENTRIES: usize = 1024;
/// The most file regions one connection may have queued and not yet sent.
/// Each holds an open descriptor; a client that keeps asking without
/// reading is closed rather than allowed to exhaust the descriptors.
const MAX_PENDING_FILES: usize = 64;
/// How often a file that shrinks while being hashed is looked at again.
const HASH_ATTEMPTS: usize = 3;
/// The shortest request line limit accepted.
const MIN_REQUEST: usize = 16;

/// The file get handler: answers `get NAME` with a length-prefixed JSON
/// header and the file's bytes (sent zero-copy), and `list` with the files
/// under the root. Wire format: PROTOCOLS.md, section "file".
///
/// Names are confined to the root: `..` that leaves it, absolute names, NUL
/// bytes and symbolic links that point out all answer `outside root`, and
/// nothing outside the root is ever sent or confirmed to exist. The md5 of
/// each file is computed once per (path, size, modification time, inode)
/// and cached (1,024 entries).
///
/// `list` names the regular files under the root, recursively, with paths
/// relative to it (`sub/name`), sorted by name; symbolic links are not
/// listed nor followed, and names that are not UTF-8 are left out. It
/// holds at most 10,000 files and a 64 KiB header; a longer list is cut and
/// carries `"truncated": true`.
///
/// Limitation: the md5 of a file not yet in the cache is computed on the
/// worker thread that received the request, which stalls that worker's
/// other connections for as long as the file takes to read (about 2 s per
/// GiB). A client that queues requests without reading its replies is
/// closed once 64 files wait to be sent to it.
///
/// ```no_run
/// use switchboard::Server;
/// use switchboard_handlers::FileGet;
///
/// let handler = FileGet::new("/srv/files", 4096)?;
/// let server = Server::builder().start("127.0.0.1:9000", handler)?;
/// server.wait();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct FileGet {
    root: PathBuf,
    max_request: usize,
    md5: Md5Cache,
}

impl fmt::Debug for FileGet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileGet")
            .field("root", &self.root)
            .field("max_request", &self.max_request)
            .finish_non_exhaustive()
    }
}

/// One connection's state: the file regions queued for it, to bound them.
#[derive(Debug, Default)]
pub struct FileSession {
    pending: Vec<Arc<File>>,
}

impl FileGet {
    /// Serves the files under `root`, reading request lines of at most
    /// `max_request` bytes. The root is made canonical once, here; it must
    /// be an existing folder.
    pub fn new(root: impl AsRef<Path>, max_request: usize) -> io::Result<FileGet> {
        let given = root.as_ref();
        let root = fs::canonicalize(given)
            .map_err(|e| io::Error::new(e.kind(), format!("file root {}: {e}", given.display())))?;
        let meta = fs::metadata(&root)
            .map_err(|e| io::Error::new(e.kind(), format!("file root {}: {e}", given.display())))?;
        if !meta.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("file root {}: not a folder", given.display()),
            ));
        }
        if max_request < MIN_REQUEST {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "file: the request line limit must be at least {MIN_REQUEST} bytes, not {max_request}"
                ),
            ));
        }
        Ok(FileGet { root, max_request, md5: Md5Cache::new(MD5_CACHE_ENTRIES) })
    }

    /// The canonical root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The longest request line accepted, in bytes.
    pub fn max_request(&self) -> usize {
        self.max_request
    }

    /// Opens the file `name` names: the open file, its size and its md5.
    fn open(&self, name: &str) -> Result<(File, u64, [u8; 16]), Reason> {
        let resolved = confine::resolve(&self.root, name)?;
        if !resolved.meta.is_file() {
            return Err(Reason::NotAFile);
        }
        // The path is canonical: a link in its place now is a race, so do
        // not follow it. O_NONBLOCK: if a FIFO took the file's place, the
        // open must not wait for a writer.
        let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY;
        let fd = rustix::fs::open(&resolved.path, flags, Mode::empty())
            .map_err(|e| confine::reason_for(&e.into()))?;
        let file = File::from(fd);
        // Where the descriptor really points, in case a folder on the way
        // was swapped for a link after resolution.
        if let Ok(real) = fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())) {
            if !confine::inside(&real, &self.root) {
                return Err(Reason::OutsideRoot);
            }
        }
        for _ in 0..HASH_ATTEMPTS {
            // Size and identity from the descriptor that will be sent from.
            let meta = file.metadata().map_err(|e| confine::reason_for(&e))?;
            if !meta.is_file() {
                return Err(Reason::NotAFile);
            }
            let key = Key::new(&resolved.path, &meta);
            match self.md5.get_or_compute(key, &file) {
                Ok(sum) => return Ok((file, meta.len(), sum)),
                Err(HashError::Shrank) => continue,
                Err(HashError::Io(e)) => return Err(confine::reason_for(&e)),
            }
        }
        log::warn!("file: {} kept shrinking while being hashed", resolved.path.display());
        Err(Reason::NotFound)
    }

    fn get(&self, session: &mut FileSession, name: &str, conn: &mut Conn<'_>) -> Flow {
        session.pending.retain(|f| Arc::strong_count(f) > 1);
        if session.pending.len() >= MAX_PENDING_FILES {
            log::warn!("{}: file: {MAX_PENDING_FILES} files queued and not read; closing", conn.peer_addr());
            return Flow::Close;
        }
        match self.open(name) {
            Ok((file, size, sum)) => {
                log::debug!("{}: file: get {name:?}: {size} bytes", conn.peer_addr());
                conn.send(&header::found(name, size, &sum));
                if size > 0 {
                    let file = Arc::new(file);
                    session.pending.push(Arc::clone(&file));
                    conn.send_file(file, 0, size);
                }
            }
            Err(reason) => {
                log::debug!("{}: file: get {name:?}: {reason}", conn.peer_addr());
                conn.send(&header::error(name, reason));
            }
        }
        Flow::Continue
    }
}

impl Handler for FileGet {
    type Session = FileSession;

    fn framing(&self) -> Framing {
        Framing::lines(self.max_request)
    }

    fn open(&self, _conn: &mut Conn<'_>) -> FileSession {
        FileSession::default()
    }

    fn frame(&self, session: &mut FileSession, line: &[u8], conn: &mut Conn<'_>) -> Flow {
        match request::parse(line) {
            Request::Get(name) => self.get(session, &name, conn),
            Request::List => {
                conn.send(&list::list(&self.root));
                Flow::Continue
            }
            Request::Bad(text) => {
                conn.send(&header::error(&text, Reason::BadRequest));
                Flow::Continue
            }
        }
    }

    fn frame_error(&self, _: &mut FileSession, error: FrameError, conn: &mut Conn<'_>) -> Flow {
        log::debug!("{}: file: {error}", conn.peer_addr());
        conn.send(&header::error("", Reason::BadRequest));
        Flow::Continue
    }
}
