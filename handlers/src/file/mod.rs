//! file get: serves the files under one root folder (PROTOCOLS.md, "file").

mod confine;
mod header;
mod list;
mod md5cache;
mod pool;
mod request;

use std::collections::VecDeque;
use std::fmt;
use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use parking_lot::Mutex;
use rustix::fs::{Mode, OFlags};
use switchboard::{Conn, Flow, FrameError, Framing, Handler};

use self::header::Reason;
use self::md5cache::{HashError, Key, Md5Cache};
use self::pool::{HashPool, Job};
pub use self::request::{parse as parse_request, Request};

/// How many md5 sums are cached (oldest out first).
const MD5_CACHE_ENTRIES: usize = 1024;
/// Requests one connection may have waiting behind a reply being prepared
/// off the event loop; a client that keeps asking without reading is closed.
const MAX_WAITING_REQUESTS: usize = 64;
/// How often a file that shrinks while being hashed is looked at again.
const HASH_ATTEMPTS: usize = 3;
/// The shortest request line limit accepted.
const MIN_REQUEST: usize = 16;
/// Threads that hash files and list the root, off the event loop.
const POOL_THREADS: usize = 2;

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
/// The event loop never blocks on a big file: a `get` whose md5 is cached
/// is answered at once; one that needs hashing, and every `list`, is
/// prepared on a small pool of threads and sent as a deferred reply, and
/// the connection's later requests wait behind it so replies stay in
/// request order. A client that queues more than 64 requests behind one
/// being prepared is closed.
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
    inner: Arc<Inner>,
    pool: HashPool,
}

/// What the handler and its pool share.
struct Inner {
    root: PathBuf,
    max_request: usize,
    md5: Md5Cache,
    /// Set when the handler is dropped: hashing in progress stops.
    cancel: AtomicBool,
}

impl fmt::Debug for FileGet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileGet")
            .field("root", &self.inner.root)
            .field("max_request", &self.inner.max_request)
            .finish_non_exhaustive()
    }
}

/// Per-connection state: the requests waiting behind a reply that is being
/// prepared off the event loop.
#[derive(Debug, Default)]
pub struct FileSession {
    chain: Arc<Mutex<Chain>>,
}

/// A connection's requests handed to the pool, answered in order.
#[derive(Debug, Default)]
struct Chain {
    queue: VecDeque<Request>,
    /// A pool thread owns the chain: new requests queue behind it.
    active: bool,
}

/// Resolves `name` below `root` (canonical) exactly as `get` does: the
/// canonical path of what it names, or the reason a client would be given
/// (`outside root`, `not found`, `permission denied`). Public so that the
/// confinement rules can be fuzzed and checked from outside.
pub fn confine(root: &Path, name: &str) -> Result<PathBuf, &'static str> {
    confine::resolve(root, name).map(|r| r.path).map_err(Reason::as_str)
}

/// A reply: the framed header, then maybe the file's bytes.
struct Reply {
    header: Vec<u8>,
    file: Option<(Arc<File>, u64)>,
}

impl FileGet {
    /// Serves the files under `root`, with request lines of at most
    /// `max_request` bytes. Fails with a clear message if the root is not an
    /// existing folder, the limit is under 16 bytes, or the hashing threads
    /// cannot start.
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
        let inner = Arc::new(Inner {
            root,
            max_request,
            md5: Md5Cache::new(MD5_CACHE_ENTRIES),
            cancel: AtomicBool::new(false),
        });
        let pool = HashPool::start(POOL_THREADS, Arc::clone(&inner))?;
        Ok(FileGet { inner, pool })
    }

    /// The root folder, canonical (symbolic links resolved).
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// The request line limit in bytes.
    pub fn max_request(&self) -> usize {
        self.inner.max_request
    }

    /// Answers `request` on the event loop if that is quick (a cached md5, an
    /// error); otherwise hands it to the pool and returns it.
    fn answer_now(&self, request: Request, conn: &mut Conn<'_>) -> Option<Request> {
        match request {
            Request::Get(name) => match self.inner.open(&name, false) {
                Ok(Some(found)) => send(conn, self.inner.found(&name, found)),
                Ok(None) => return Some(Request::Get(name)),
                Err(reason) => {
                    log::debug!("{}: file: get {name:?}: {reason}", conn.peer_addr());
                    conn.send(&header::error(&name, reason));
                }
            },
            Request::List => return Some(Request::List),
            Request::Bad(text) => conn.send(&header::error(&text, Reason::BadRequest)),
        }
        None
    }
}

fn send(conn: &mut Conn<'_>, reply: Reply) {
    conn.send(&reply.header);
    if let Some((file, size)) = reply.file {
        conn.send_file(file, 0, size);
    }
}

impl Inner {
    /// Opens `name` under the root; with `hash`, computes its md5 if it is
    /// not cached (blocking), else answers `None` when it is not cached.
    fn open(&self, name: &str, hash: bool) -> Result<Option<(File, u64, [u8; 16])>, Reason> {
        let resolved = confine::resolve(&self.root, name)?;
        if !resolved.meta.is_file() {
            return Err(Reason::NotAFile);
        }
        let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY;
        let fd = rustix::fs::open(&resolved.path, flags, Mode::empty())
            .map_err(|e| confine::reason_for(&e.into()))?;
        let file = File::from(fd);
        if let Ok(real) = fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())) {
            if !confine::inside(&real, &self.root) {
                return Err(Reason::OutsideRoot);
            }
        }
        for _ in 0..HASH_ATTEMPTS {
            let meta = file.metadata().map_err(|e| confine::reason_for(&e))?;
            if !meta.is_file() {
                return Err(Reason::NotAFile);
            }
            let key = Key::new(&resolved.path, &meta);
            if !hash {
                return Ok(self.md5.get(&key).map(|sum| (file, meta.len(), sum)));
            }
            match self.md5.get_or_compute(key, &file, &self.cancel) {
                Ok(sum) => return Ok(Some((file, meta.len(), sum))),
                Err(HashError::Shrank) => continue,
                Err(HashError::Io(e)) => return Err(confine::reason_for(&e)),
                Err(HashError::Cancelled) => return Err(Reason::NotFound),
            }
        }
        log::warn!("file: {} kept shrinking while being hashed", resolved.path.display());
        Err(Reason::NotFound)
    }

    fn found(&self, name: &str, (file, size, sum): (File, u64, [u8; 16])) -> Reply {
        log::debug!("file: get {name:?}: {size} bytes");
        let header = header::found(name, size, &sum);
        Reply { header, file: (size > 0).then(|| (Arc::new(file), size)) }
    }

    /// Prepares the reply to `request`, blocking as long as it takes.
    fn reply(&self, request: Request) -> Reply {
        let header = match request {
            Request::Get(name) => match self.open(&name, true) {
                Ok(Some(found)) => return self.found(&name, found),
                Ok(None) => header::error(&name, Reason::NotFound),
                Err(reason) => {
                    log::debug!("file: get {name:?}: {reason}");
                    header::error(&name, reason)
                }
            },
            Request::List => list::list(&self.root),
            Request::Bad(text) => header::error(&text, Reason::BadRequest),
        };
        Reply { header, file: None }
    }
}

impl Handler for FileGet {
    type Session = FileSession;

    fn framing(&self) -> Framing {
        Framing::lines(self.inner.max_request)
    }

    fn open(&self, _conn: &mut Conn<'_>) -> FileSession {
        FileSession::default()
    }

    fn frame(&self, session: &mut FileSession, line: &[u8], conn: &mut Conn<'_>) -> Flow {
        self.handle(session, request::parse(line), conn)
    }

    fn frame_error(&self, session: &mut FileSession, error: FrameError, conn: &mut Conn<'_>) -> Flow {
        log::debug!("{}: file: {error}", conn.peer_addr());
        self.handle(session, Request::Bad(String::new()), conn)
    }
}

impl FileGet {
    /// Answers `request` now, or after the replies it must follow.
    fn handle(&self, session: &mut FileSession, request: Request, conn: &mut Conn<'_>) -> Flow {
        let mut chain = session.chain.lock();
        if chain.active {
            // Behind a reply being prepared: wait in line.
            if chain.queue.len() >= MAX_WAITING_REQUESTS {
                log::warn!(
                    "{}: file: {MAX_WAITING_REQUESTS} requests waiting and not read; closing",
                    conn.peer_addr()
                );
                return Flow::Close;
            }
            chain.queue.push_back(request);
            return Flow::Continue;
        }
        if let Some(request) = self.answer_now(request, conn) {
            chain.active = true;
            chain.queue.push_back(request);
            drop(chain);
            self.pool.submit(Job { chain: Arc::clone(&session.chain), reply: conn.defer() });
        }
        Flow::Continue
    }
}

impl Drop for FileGet {
    fn drop(&mut self) {
        self.inner.cancel.store(true, std::sync::atomic::Ordering::Relaxed);
        self.pool.stop();
    }
}
