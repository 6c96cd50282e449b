//! file get: serves the files under one root folder (PROTOCOLS.md, "file").

mod confine;
mod list;
mod md5cache;
mod meters;
pub mod proto;
mod region;
mod request;

use rustix::fs::{Mode, OFlags};
use std::fmt;
use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use switchboard::{Conn, Flow, FrameError, Framing, Handler, Message, SpawnError};

use self::list::{Answer, ListCache};
use self::md5cache::{HashError, Key, Md5Cache};
pub use self::meters::FileMeters;
use self::proto::{encode, Header, Reason};
use self::region::LastRegion;
pub use self::request::{parse as parse_request, Request};

/// How many md5 sums are cached (oldest out first).
const MD5_CACHE_ENTRIES: usize = 1024;
/// How often a file that shrinks while being hashed is looked at again.
const HASH_ATTEMPTS: usize = 3;
/// The shortest request line limit accepted.
const MIN_REQUEST: usize = 16;

/// The file get handler: answers `get NAME` with a length-prefixed JSON
/// header and the file's bytes (sent zero-copy), and `list` with the files
/// under the root. Wire format: PROTOCOLS.md, section "file"; the header
/// type and its limits: [`proto`].
///
/// Names are confined to the root: `..` that leaves it, absolute names, NUL
/// bytes and symbolic links that point out all answer `outside root`, and
/// nothing outside the root is ever sent or confirmed to exist. The md5 of
/// each file is computed once per (path, size, modification time, inode)
/// and cached (1,024 entries).
///
/// `list` names the regular files under the root, recursively, with paths
/// relative to it (`sub/name`), sorted by name; symbolic links are neither
/// listed nor followed, and names a request line cannot carry are left out.
/// The walk has a budget and its answer is shared for up to a second while
/// the root is unchanged; a list over the limits is cut and carries
/// `"truncated": true`.
///
/// The event loop never blocks on the disk for long: a `get` whose md5 is
/// cached is answered at once; one that needs hashing, and every `list`, is
/// prepared on the server's blocking pool
/// ([`Conn::spawn_blocking`](switchboard::Conn::spawn_blocking), shared
/// fairly between connections) as the core's deferred reply, one at a
/// time per connection: its later requests wait in the core, unread, so
/// replies stay in request order.
///
/// A connection has at most one file region on its way to the peer: a
/// `get` or `list` after one waits, its file not yet opened, until that
/// region has been written; meanwhile the server reads nothing more from
/// the connection. So a client that asks for many files and never reads
/// holds one descriptor, not one per request, and nothing it asked is
/// refused or lost.
///
/// Requests are lines; a last request ended by EOF instead of a newline
/// is answered too, and with the server's
/// [`accept_unterminated`](switchboard::ServerBuilder::accept_unterminated)
/// so is one the client leaves unterminated and waits.
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
}

/// What the handler and its pool share.
struct Inner {
    root: PathBuf,
    max_request: usize,
    md5: Md5Cache,
    meters: Arc<FileMeters>,
    listing: ListCache,
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

/// Per-connection state: the file region sent last, while it is unwritten.
#[derive(Debug)]
pub struct FileSession {
    last: LastRegion,
}

/// Resolves `name` below `root` (canonical) exactly as `get` does: the
/// canonical path of what it names, or the reason a client would be given
/// (`outside root`, `not found`, `permission denied`, ...). Public so that
/// the confinement rules can be fuzzed and checked from outside.
pub fn confine(root: &Path, name: &str) -> Result<PathBuf, &'static str> {
    confine::resolve(root, name).map(|r| r.path).map_err(Reason::as_str)
}

/// A reply: the framed header (maybe empty), then maybe a file region
/// (the file's bytes, or a `list` answer kept in a file).
struct Reply {
    header: Message,
    file: Option<(Arc<File>, u64)>,
}

impl Reply {
    fn error(name: &str, reason: Reason) -> Reply {
        Reply { header: encode(&Header::error(name, reason)).into(), file: None }
    }
}

/// Whether `name` can only name a folder (`x/`, `x/.`, `.`): a file named
/// so is `not a file`, as the kernel would refuse it (ENOTDIR).
fn names_a_folder(name: &str) -> bool {
    name.ends_with('/') || name == "." || name.ends_with("/.")
}

impl FileGet {
    /// Serves the files under `root`, with request lines of at most
    /// `max_request` bytes. Fails with a clear message if the root is not an
    /// existing folder or the limit is under 16 bytes.
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
            meters: Arc::default(),
            listing: ListCache::default(),
            cancel: AtomicBool::new(false),
        });
        Ok(FileGet { inner })
    }

    /// The root folder, canonical (symbolic links resolved).
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// The handler's counters (file bytes sent, md5 cache hits), shared:
    /// they keep counting after the handler is moved into a server.
    pub fn meters(&self) -> Arc<FileMeters> {
        Arc::clone(&self.inner.meters)
    }

    /// The request line limit in bytes.
    pub fn max_request(&self) -> usize {
        self.inner.max_request
    }

    /// The header a file client gets when the server is at its connection
    /// limit (see [`proto::busy_header`]).
    pub fn busy_header(&self) -> Vec<u8> {
        proto::busy_header()
    }

    /// Answers `request` on the event loop if that is quick (a cached md5, an
    /// error); otherwise gives it back for the pool.
    fn answer_now(&self, request: Request, conn: &mut Conn<'_>) -> Result<Reply, Request> {
        match request {
            Request::Get(name) => match self.inner.open(&name, false) {
                Ok(Some(found)) => Ok(self.inner.found(&name, found)),
                Ok(None) => Err(Request::Get(name)),
                Err(reason) => {
                    log::debug!("{}: file: get {name:?}: {reason}", conn.peer_addr());
                    Ok(Reply::error(&name, reason))
                }
            },
            Request::List => Err(Request::List),
            Request::Bad(text) => Ok(Reply::error(&text, Reason::BadRequest)),
        }
    }

    /// Answers the request `line` now, or on the pool (as a deferred
    /// reply) if that needs the disk or must wait for the last file region.
    fn handle(&self, session: &FileSession, line: &[u8], conn: &mut Conn<'_>) {
        let request = request::parse(line);
        let waits = request.may_send_file() && session.last.in_flight();
        let request = match waits {
            true => request,
            false => match self.answer_now(request, conn) {
                Ok(reply) => {
                    if let Some(file) = send(conn, reply) {
                        session.last.sent(&file);
                    }
                    return;
                }
                Err(request) => request,
            },
        };
        let name = match &request {
            Request::Get(name) => name.clone(),
            _ => String::new(),
        };
        let (inner, last) = (Arc::clone(&self.inner), session.last.clone());
        let job = move |reply| region::answer(inner, last, request, reply, std::time::Duration::ZERO);
        if let Err(e) = conn.spawn_blocking(job) {
            // Nothing was promised: the request is answered at once.
            log::warn!("{}: file: {e}", conn.peer_addr());
            let reason = match e {
                SpawnError::Busy { .. } => Reason::ServerBusy,
                _ => Reason::ShuttingDown,
            };
            send(conn, Reply::error(&name, reason));
        }
    }
}

/// Queues `reply`; returns the file region it holds, if any.
fn send(conn: &mut Conn<'_>, reply: Reply) -> Option<Arc<File>> {
    conn.send_message(reply.header);
    let (file, size) = reply.file?;
    conn.send_file(Arc::clone(&file), 0, size);
    Some(file)
}

impl Inner {
    /// Opens `name` under the root; with `hash`, computes its md5 if it is
    /// not cached (blocking), else answers `None` when it is not cached.
    fn open(&self, name: &str, hash: bool) -> Result<Option<(File, u64, [u8; 16])>, Reason> {
        let resolved = confine::resolve(&self.root, name)?;
        if !resolved.meta.is_file() || names_a_folder(name) {
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
                let found = self.md5.get(&key).map(|sum| (file, meta.len(), sum));
                if found.is_some() {
                    self.meters.hit();
                }
                return Ok(found);
            }
            match self.md5.get_or_compute(key, &file, &self.cancel) {
                Ok((sum, computed)) => {
                    match computed {
                        true => self.meters.computed(),
                        false => self.meters.hit(),
                    }
                    return Ok(Some((file, meta.len(), sum)));
                }
                Err(HashError::Shrank) => continue,
                Err(HashError::Io(e)) => return Err(confine::reason_for(&e)),
                Err(HashError::Cancelled) => return Err(Reason::ShuttingDown),
            }
        }
        log::warn!("file: {} kept shrinking while being hashed", resolved.path.display());
        Err(Reason::FileChanged)
    }

    fn found(&self, name: &str, (file, size, sum): (File, u64, [u8; 16])) -> Reply {
        log::debug!("file: get {name:?}: {size} bytes");
        self.meters.sent(size);
        let header = encode(&Header::found(name, size, &sum)).into();
        Reply { header, file: (size > 0).then(|| (Arc::new(file), size)) }
    }

    /// Prepares the reply to `request`, blocking as long as it takes.
    fn reply(&self, request: Request) -> Reply {
        match request {
            Request::Get(name) => match self.open(&name, true) {
                Ok(Some(found)) => self.found(&name, found),
                Ok(None) => Reply::error(&name, Reason::NotFound),
                Err(reason) => {
                    log::debug!("file: get {name:?}: {reason}");
                    Reply::error(&name, reason)
                }
            },
            Request::List => match self.listing.get(&self.root, self.max_request) {
                // A descriptor of its own, so that the connection can tell
                // when it has been written (the answer is shared).
                Answer::File(file, len) => match file.try_clone() {
                    Ok(own) => Reply { header: Message::from(Vec::new()), file: Some((Arc::new(own), len)) },
                    Err(e) => Reply::error("", confine::reason_for(&e)),
                },
                Answer::Bytes(header) => Reply { header, file: None },
            },
            Request::Bad(text) => Reply::error(&text, Reason::BadRequest),
        }
    }
}

impl Handler for FileGet {
    type Session = FileSession;

    fn framing(&self) -> Framing {
        Framing::lines(self.inner.max_request)
    }

    /// One deferred reply at a time: a connection has at most one file
    /// region (one descriptor) in flight, so requests are not pipelined
    /// onto the pool; later ones wait in the core, unread.
    fn max_deferred(&self) -> Option<usize> {
        Some(1)
    }

    /// A client may write its last request and half-close without a
    /// newline: it is answered.
    fn last_line_at_eof(&self) -> bool {
        true
    }

    /// A client turned away at the connection limit reads a header like any
    /// other answer: `"error": "server busy"`.
    fn busy_reply(&self) -> Vec<u8> {
        proto::busy_header()
    }

    fn open(&self, _conn: &mut Conn<'_>) -> FileSession {
        FileSession { last: LastRegion::default() }
    }

    fn frame(&self, session: &mut FileSession, line: &[u8], conn: &mut Conn<'_>) -> Flow {
        self.handle(session, line, conn);
        Flow::Continue
    }

    /// A line over the limit is a bad request (answered as an empty one);
    /// the connection stays.
    fn frame_error(&self, session: &mut FileSession, error: FrameError, conn: &mut Conn<'_>) -> Flow {
        log::debug!("{}: file: {error}", conn.peer_addr());
        if error.is_fatal() {
            return Flow::Close;
        }
        self.handle(session, b"", conn);
        Flow::Continue
    }

    /// The server has stopped: hashing in progress on the core's blocking
    /// pool stops early, so the pool, joined after this, ends at once.
    fn stop(&self) {
        self.inner.cancel.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for FileGet {
    /// The same for a handler dropped without a server's stop (a harness).
    fn drop(&mut self) {
        self.inner.cancel.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_can_only_be_folders() {
        for name in ["a.txt/", ".", "a/.", "sub/a.txt//"] {
            assert!(names_a_folder(name), "{name}");
        }
        for name in ["a.txt", "a/.b", "a./x", ".hidden"] {
            assert!(!names_a_folder(name), "{name}");
        }
    }
}
