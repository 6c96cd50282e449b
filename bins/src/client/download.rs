//! `get NAME` and `list` against the file handler.
//!
//! A download never leaves a partial or unverified file under its final
//! name: the content streams into a temporary file beside the target
//! (`.NAME.part-PID-RANDOM`, created exclusively), its md5 is checked
//! against the header, it is flushed to disk, and only then renamed. On any
//! failure the temporary file is removed (on Ctrl-C too, once
//! [`remove_partial_on_interrupt`] is installed). A process killed outright
//! (SIGKILL, a power cut) cannot clean up: the next download of the same
//! target removes the temporary files of that target whose process is
//! gone.
//!
//! A `file_size` larger than the space free at the target is refused
//! before anything is written ([`Error::NoSpace`]).

use std::collections::hash_map::RandomState;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, IsTerminal};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use super::protocol::{self, BodyError, ProtocolError};
use super::terminal::escape_name as printable;
use super::{Error, Stream};

/// Where a download goes, decided before connecting.
#[derive(Debug, Clone)]
pub struct Target {
    /// The name requested from the server.
    pub name: String,
    /// The final path.
    pub path: PathBuf,
    /// Whether an existing file at `path` may be replaced.
    pub force: bool,
    dir: PathBuf,
    file_name: OsString,
}

/// A completed download.
#[derive(Debug, Clone)]
pub struct Saved {
    /// Where the file is.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// Its md5, checked against the server's, as 32 lower-case hex digits.
    pub md5: String,
}

/// Decides where `get NAME` saves: the base name of NAME in the current
/// folder by default; with `output`, inside it if it is a folder (or ends in
/// `/`), else `output` itself.
///
/// Refuses a NAME with no usable base name (empty, `.`, `..`, or ending in
/// one) or with a line break, a destination whose folder does not exist,
/// and, unless `force`, a destination that exists.
pub fn plan(name: &str, output: Option<&Path>, force: bool) -> Result<Target, Error> {
    if name.contains(['\n', '\r']) {
        return Err(Error::BadName(format!(
            "'{}': a file name cannot contain a line break",
            printable(name)
        )));
    }
    let base = Path::new(name).file_name().ok_or_else(|| {
        Error::BadName(format!(
            "'{}' has no file name to save under: name a file, e.g. docs/report.pdf",
            printable(name)
        ))
    })?;
    let path = match output {
        None => PathBuf::from(base),
        Some(out) if out.is_dir() || out.as_os_str().to_string_lossy().ends_with('/') => out.join(base),
        Some(out) => out.to_path_buf(),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::BadName(format!("'{}' is not a file path", path.display())))?
        .to_os_string();
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(Error::BadName(format!(
            "cannot save to {}: there is no folder {}",
            path.display(),
            dir.display()
        )));
    }
    match fs::symlink_metadata(&path) {
        Ok(meta) if meta.is_dir() => {
            return Err(Error::BadName(format!("{} is a folder: give a file path with -o", path.display())))
        }
        Ok(_) if !force => return Err(Error::Exists(path)),
        _ => {}
    }
    Ok(Target { name: name.to_owned(), path, force, dir, file_name })
}

/// Requests `target.name` on `conn` and saves it as planned; draws a
/// progress bar on stderr when `progress` is set and stderr is a terminal.
///
/// Set a read timeout on `conn` first so a stalled server ends in
/// [`Error::Stalled`] rather than a hang.
pub fn fetch(conn: &mut Stream, target: &Target, progress: bool) -> Result<Saved, Error> {
    let read_timeout = conn.read_timeout().ok().flatten().unwrap_or(Duration::ZERO);
    protocol::write_get(conn, &target.name).map_err(|e| Error::io("sending the request", e))?;
    let header = protocol::read_header(conn).map_err(|e| Error::from_protocol(e, read_timeout))?;
    if let Some(reason) = header.error {
        return Err(Error::Server(reason));
    }
    let expected = header
        .md5
        .ok_or_else(|| Error::Protocol(ProtocolError::BadHeader("no md5 for a found file".into())))?;

    remove_stale_parts(&target.dir, &target.file_name);
    check_free_space(&target.dir, header.file_size)?;
    let mut temp = TempFile::create(&target.dir, &target.file_name)?;
    let bar = progress_bar(header.file_size, progress);
    let copied = protocol::read_body(conn, header.file_size, temp.file()?, |n| bar.inc(n));
    bar.finish_and_clear();
    let actual = copied.map_err(|e| match e {
        BodyError::Read(e) => Error::from_protocol(e, read_timeout),
        BodyError::Write(e) => Error::io(format!("writing {}", temp.path.display()), e),
    })?;
    if actual != expected {
        return Err(Error::Md5Mismatch { expected, actual });
    }
    temp.persist(&target.path, target.force)?;
    Ok(Saved { path: target.path.clone(), size: header.file_size, md5: actual })
}

/// Sends `list` on `conn` and returns the files and their sizes.
pub fn list(conn: &mut Stream) -> Result<Vec<(String, u64)>, Error> {
    let read_timeout = conn.read_timeout().ok().flatten().unwrap_or(Duration::ZERO);
    protocol::write_list(conn).map_err(|e| Error::io("sending the request", e))?;
    let header = protocol::read_header(conn).map_err(|e| Error::from_protocol(e, read_timeout))?;
    if let Some(reason) = header.error {
        return Err(Error::Server(reason));
    }
    let files = header
        .files
        .ok_or_else(|| Error::Protocol(ProtocolError::BadHeader("no files in the list answer".into())))?;
    Ok(files.into_iter().map(|e| (e.name, e.size)).collect())
}

/// Formats a listing: one file a line, the size in bytes right-aligned,
/// two spaces, the name (control characters escaped).
pub fn format_list(files: &[(String, u64)]) -> String {
    let width = files.iter().map(|(_, size)| size.to_string().len()).max().unwrap_or(0);
    let mut out = String::new();
    for (name, size) in files {
        out.push_str(&format!("{size:>width$}  {}\n", printable(name)));
    }
    out
}

fn progress_bar(len: u64, wanted: bool) -> ProgressBar {
    if !wanted || !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    let style =
        ProgressStyle::with_template("{bar:40.cyan/blue} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

/// Refuses `size` bytes when the file system of `dir` has less free space
/// for an unprivileged user.
fn check_free_space(dir: &Path, size: u64) -> Result<(), Error> {
    let st = rustix::fs::statvfs(dir)
        .map_err(|e| Error::io(format!("checking free space in {}", dir.display()), e.into()))?;
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    if size > free {
        return Err(Error::NoSpace { dir: dir.to_path_buf(), needed: size, free });
    }
    Ok(())
}

/// The stem of the temporary files of `final_name`: `.NAME.part-`, NAME
/// cut to at most 100 bytes at a character boundary (under NAME_MAX).
fn part_prefix(final_name: &OsString) -> String {
    let lossy = final_name.to_string_lossy();
    let mut end = lossy.len().min(100);
    while !lossy.is_char_boundary(end) {
        end -= 1;
    }
    format!(".{}.part-", &lossy[..end])
}

/// Removes the temporary files `.NAME.part-PID-RANDOM` of this target left
/// by a client that is no longer running (killed before it could clean
/// up). A file of a live process, or not of this exact form, is left alone.
fn remove_stale_parts(dir: &Path, final_name: &OsString) {
    let prefix = part_prefix(final_name);
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else { continue };
        let Some((pid, rand)) = rest.split_once('-') else { continue };
        if rand.len() != 16 || !rand.bytes().all(|b| b.is_ascii_hexdigit()) {
            continue;
        }
        let Some(pid) = pid.parse::<i32>().ok().and_then(rustix::process::Pid::from_raw) else { continue };
        // EPERM: the process exists (another user's).
        let alive = !matches!(rustix::process::test_kill_process(pid), Err(rustix::io::Errno::SRCH));
        let mine = pid.as_raw_nonzero().get().unsigned_abs() == std::process::id();
        if alive || mine {
            continue;
        }
        if entry.file_type().is_ok_and(|t| t.is_file()) && fs::remove_file(entry.path()).is_ok() {
            log::info!(
                "removed {}, left by an earlier download that did not finish",
                printable(&entry.path().to_string_lossy())
            );
        }
    }
}

/// The temporary file being written, if any: removed by the Ctrl-C handler.
static PENDING: Mutex<Option<PathBuf>> = Mutex::new(None);

fn pending() -> std::sync::MutexGuard<'static, Option<PathBuf>> {
    PENDING.lock().unwrap_or_else(|e| e.into_inner())
}

/// Installs a Ctrl-C / SIGTERM handler that removes the partial download,
/// if any, says so on stderr and exits with status 130. For the binary:
/// a process has only one such handler.
pub fn remove_partial_on_interrupt() -> Result<(), Error> {
    ctrlc::set_handler(|| {
        // Holding the lock also waits out a rename in progress.
        let mut guard = pending();
        if let Some(path) = guard.take() {
            let _ = fs::remove_file(path);
        }
        eprintln!("switchboard-client: interrupted; nothing saved");
        std::process::exit(130);
    })
    .map_err(|e| Error::io("installing the Ctrl-C handler", io::Error::other(e)))
}

/// A temporary file beside the target, removed on drop unless persisted.
#[derive(Debug)]
struct TempFile {
    path: PathBuf,
    file: Option<File>,
}

impl TempFile {
    fn create(dir: &Path, final_name: &OsString) -> Result<TempFile, Error> {
        // Keep the name under NAME_MAX whatever the target's length.
        let prefix = part_prefix(final_name);
        let pid = std::process::id();
        let mut last = None;
        for _ in 0..16 {
            let rand = RandomState::new().build_hasher().finish();
            let path = dir.join(format!("{prefix}{pid}-{rand:016x}"));
            // Register before creating, so an interrupt in between still
            // finds it (removing a file that does not exist is harmless).
            *pending() = Some(path.clone());
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => return Ok(TempFile { path, file: Some(file) }),
                Err(e) => {
                    *pending() = None;
                    if e.kind() != io::ErrorKind::AlreadyExists {
                        return Err(Error::io(
                            format!("cannot create a temporary file in {}", dir.display()),
                            e,
                        ));
                    }
                    last = Some(e);
                }
            }
        }
        Err(Error::io(
            format!("cannot create a temporary file in {}", dir.display()),
            last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AlreadyExists)),
        ))
    }

    fn file(&mut self) -> Result<&mut File, Error> {
        self.file
            .as_mut()
            .ok_or_else(|| Error::io("writing the temporary file", io::Error::other("already closed")))
    }

    /// Flushes the content to disk and renames it to `dest`; without
    /// `replace`, fails if `dest` appeared in the meantime.
    fn persist(mut self, dest: &Path, replace: bool) -> Result<(), Error> {
        if let Some(file) = self.file.take() {
            file.sync_all().map_err(|e| Error::io(format!("flushing {}", self.path.display()), e))?;
        }
        let mut guard = pending();
        rename(&self.path, dest, replace)?;
        *guard = None;
        drop(guard);
        // The rename is durable once its folder is.
        if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        } else if let Ok(d) = File::open(".") {
            let _ = d.sync_all();
        }
        self.path = PathBuf::new();
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.path.as_os_str().is_empty() {
            return;
        }
        drop(self.file.take());
        let mut guard = pending();
        let _ = fs::remove_file(&self.path);
        *guard = None;
    }
}

fn rename(from: &Path, to: &Path, replace: bool) -> Result<(), Error> {
    let fail = |e| Error::io(format!("renaming to {}", to.display()), e);
    if replace {
        return fs::rename(from, to).map_err(fail);
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use rustix::fs::{renameat_with, RenameFlags, CWD};
        match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
            Ok(()) => return Ok(()),
            Err(rustix::io::Errno::EXIST) => return Err(Error::Exists(to.to_path_buf())),
            // Not supported by this file system: check, then rename.
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {}
            Err(e) => return Err(fail(e.into())),
        }
    }
    if fs::symlink_metadata(to).is_ok() {
        return Err(Error::Exists(to.to_path_buf()));
    }
    fs::rename(from, to).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_default_and_output() {
        let t = plan("dir/sub/a b.txt", None, false).unwrap();
        assert_eq!(t.path, PathBuf::from("a b.txt"));
        assert_eq!(t.dir, PathBuf::from("."));
        let dir = std::env::temp_dir();
        let t = plan("x/y.bin", Some(&dir), false).unwrap();
        assert_eq!(t.path, dir.join("y.bin"));
        let out = dir.join("z.bin");
        let t = plan("x/y.bin", Some(&out), false).unwrap();
        assert_eq!(t.path, out);
        assert_eq!(t.dir, dir);
        assert!(matches!(
            plan("x/y.bin", Some(&dir.join("no such folder/z.bin")), false),
            Err(Error::BadName(_))
        ));
    }

    #[test]
    fn plan_refuses_bad_names() {
        for name in ["", ".", "..", "a/..", "/", "a\nlist"] {
            assert!(matches!(plan(name, None, false), Err(Error::BadName(_))), "{name:?}");
        }
    }

    #[test]
    fn list_is_aligned() {
        let files = vec![("a".to_owned(), 5), ("big.iso".to_owned(), 5_000_000_000)];
        assert_eq!(format_list(&files), "         5  a\n5000000000  big.iso\n");
        assert_eq!(format_list(&[]), "");
    }
}
