//! Path confinement: a requested name becomes a canonical path inside the
//! root, or a [`Reason`] that reveals nothing about anything outside it.
//!
//! The name is first normalised lexically, without touching the filesystem:
//! absolute names, NUL bytes and `..` that climbs above the root are refused
//! there. (`..` is taken lexically, as in a URL: `link/../x` is `x` whatever
//! `link` points to.) The remaining components are then resolved one by one
//! from the canonical root, following symbolic links as the kernel would
//! (at most [`MAX_LINKS`] of them), so the result is the canonical path.
//! Whenever resolution stops (the path does not exist, a permission error)
//! the reason is only given if the part resolved so far is inside the root;
//! otherwise the answer is `outside root`, so a link pointing out can never
//! be used to probe what exists outside.

use std::ffi::OsString;
use std::fs::{self, Metadata};
use std::io;
use std::path::{Component, Path, PathBuf};

use rustix::io::Errno;

use super::proto::Reason;

/// The most symbolic links followed for one name (the kernel's limit).
const MAX_LINKS: usize = 40;

/// Where a name leads: its canonical path and the (not followed) metadata
/// of that path.
#[derive(Debug)]
pub(crate) struct Resolved {
    pub(crate) path: PathBuf,
    pub(crate) meta: Metadata,
}

/// Whether `path` is `root` or below it (component-wise).
pub(crate) fn inside(path: &Path, root: &Path) -> bool {
    path.starts_with(root)
}

/// The name's components with `.` dropped and `..` applied, or
/// `outside root` for an absolute name, a NUL byte or a `..` above the root.
fn lexical(name: &str) -> Result<Vec<OsString>, Reason> {
    if name.contains('\0') {
        return Err(Reason::OutsideRoot);
    }
    let mut parts = Vec::new();
    for c in Path::new(name).components() {
        match c {
            Component::Normal(p) => parts.push(p.to_os_string()),
            Component::CurDir => {}
            Component::ParentDir => {
                if parts.pop().is_none() {
                    return Err(Reason::OutsideRoot);
                }
            }
            Component::RootDir | Component::Prefix(_) => return Err(Reason::OutsideRoot),
        }
    }
    Ok(parts)
}

/// Maps an error met while resolving, opening or reading to the answer's
/// reason: `not found` only when the name does not exist, `server busy`
/// when the server is out of descriptors or memory, `read error` (logged)
/// for anything else.
pub(crate) fn reason_for(e: &io::Error) -> Reason {
    match Errno::from_io_error(e) {
        Some(Errno::ACCESS | Errno::PERM | Errno::ROFS) => Reason::PermissionDenied,
        Some(Errno::NOENT | Errno::NOTDIR) => Reason::NotFound,
        Some(Errno::NAMETOOLONG) => Reason::NameTooLong,
        Some(Errno::LOOP) => Reason::TooManyLinks,
        Some(Errno::NXIO | Errno::ISDIR | Errno::NODEV) => Reason::NotAFile,
        Some(Errno::MFILE | Errno::NFILE | Errno::NOMEM | Errno::NOBUFS | Errno::AGAIN) => {
            log::warn!("file: out of resources: {e}");
            Reason::ServerBusy
        }
        _ => {
            log::warn!("file: read error: {e}");
            Reason::ReadError
        }
    }
}

/// Resolves `name` below the canonical `root`.
pub(crate) fn resolve(root: &Path, name: &str) -> Result<Resolved, Reason> {
    let parts = lexical(name)?;
    // Components still to walk, the next one last.
    let mut pending: Vec<OsString> = parts.into_iter().rev().collect();
    let mut current = root.to_path_buf();
    let mut meta = fs::symlink_metadata(root).map_err(|e| reason_for(&e))?;
    let mut links = 0;
    // Stops resolution: the reason is only told about a path inside the root.
    let stop = |current: &Path, reason: Reason| {
        if inside(current, root) {
            reason
        } else {
            Reason::OutsideRoot
        }
    };
    while let Some(part) = pending.pop() {
        if !meta.is_dir() {
            // `file/x`: the kernel says ENOTDIR.
            return Err(stop(&current, Reason::NotFound));
        }
        if part == "." {
            continue;
        }
        if part == ".." {
            current.pop();
            meta = fs::symlink_metadata(&current).map_err(|e| stop(&current, reason_for(&e)))?;
            continue;
        }
        let next = current.join(&part);
        let next_meta = match fs::symlink_metadata(&next) {
            Ok(m) => m,
            Err(e) => return Err(stop(&current, reason_for(&e))),
        };
        if next_meta.file_type().is_symlink() {
            links += 1;
            if links > MAX_LINKS {
                return Err(stop(&current, Reason::TooManyLinks));
            }
            let target = fs::read_link(&next).map_err(|e| stop(&current, reason_for(&e)))?;
            if target.has_root() {
                current = PathBuf::from("/");
                meta = fs::symlink_metadata(&current).map_err(|_| Reason::OutsideRoot)?;
            }
            for c in target.components().rev() {
                match c {
                    Component::Normal(p) => pending.push(p.to_os_string()),
                    Component::ParentDir => pending.push("..".into()),
                    Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
                }
            }
        } else {
            current = next;
            meta = next_meta;
        }
    }
    if inside(&current, root) {
        Ok(Resolved { path: current, meta })
    } else {
        Err(Reason::OutsideRoot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexical_checks_need_no_filesystem() {
        assert_eq!(lexical("a/./b//c").unwrap(), ["a", "b", "c"]);
        assert_eq!(lexical("a/../b").unwrap(), ["b"]);
        assert_eq!(lexical("./x").unwrap(), ["x"]);
        assert_eq!(lexical("..").unwrap_err(), Reason::OutsideRoot);
        assert_eq!(lexical("a/../../b").unwrap_err(), Reason::OutsideRoot);
        assert_eq!(lexical("/etc/passwd").unwrap_err(), Reason::OutsideRoot);
        assert_eq!(lexical("a\0b").unwrap_err(), Reason::OutsideRoot);
        assert!(lexical(".").unwrap().is_empty());
    }

    #[test]
    fn errors_map_to_reasons() {
        let reason = |errno: i32| reason_for(&io::Error::from_raw_os_error(errno));
        assert_eq!(reason(Errno::ACCESS.raw_os_error()), Reason::PermissionDenied);
        assert_eq!(reason(Errno::PERM.raw_os_error()), Reason::PermissionDenied);
        assert_eq!(reason(Errno::NOENT.raw_os_error()), Reason::NotFound);
        assert_eq!(reason(Errno::NOTDIR.raw_os_error()), Reason::NotFound);
        assert_eq!(reason(Errno::LOOP.raw_os_error()), Reason::TooManyLinks);
        assert_eq!(reason(Errno::NAMETOOLONG.raw_os_error()), Reason::NameTooLong);
        assert_eq!(reason(Errno::ISDIR.raw_os_error()), Reason::NotAFile);
        // Out of descriptors or memory is never `not found`.
        for errno in [Errno::MFILE, Errno::NFILE, Errno::NOMEM] {
            assert_eq!(reason(errno.raw_os_error()), Reason::ServerBusy, "{errno:?}");
        }
        assert_eq!(reason(Errno::IO.raw_os_error()), Reason::ReadError);
        assert_eq!(reason_for(&io::Error::other("no errno")), Reason::ReadError);
    }
}
