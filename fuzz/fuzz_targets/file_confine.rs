//! Path confinement of the file handler against any name: whatever it
//! resolves to is inside the root, and names that must be refused before
//! the filesystem is touched (absolute, NUL, `..` above the root) are.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use switchboard_handlers::file::confine;
use switchboard_handlers::file::proto::Reason;

/// A root with files, a folder, links that stay in, links that leave, a
/// dangling link and a loop; beside it, a secret that must never resolve.
fn root() -> &'static (PathBuf, PathBuf) {
    static ROOT: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    ROOT.get_or_init(|| {
        use std::os::unix::fs::symlink;
        let base = std::env::temp_dir().join(format!("switchboard-fuzz-confine-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let root = base.join("root");
        std::fs::create_dir_all(root.join("d/e")).unwrap();
        std::fs::write(root.join("a"), b"a").unwrap();
        std::fs::write(root.join("d/b"), b"b").unwrap();
        std::fs::write(base.join("secret"), b"s").unwrap();
        symlink("a", root.join("in")).unwrap();
        symlink("../a", root.join("d/up")).unwrap();
        symlink("../secret", root.join("out")).unwrap();
        symlink(base.join("secret"), root.join("abs-out")).unwrap();
        symlink("/etc", root.join("etc")).unwrap();
        symlink("missing", root.join("dangling")).unwrap();
        symlink("loop2", root.join("loop1")).unwrap();
        symlink("loop1", root.join("loop2")).unwrap();
        symlink("..", root.join("d/e/parent")).unwrap();
        let root = std::fs::canonicalize(root).unwrap();
        let secret = std::fs::canonicalize(base.join("secret")).unwrap();
        (root, secret)
    })
}

fn inside(path: &Path, root: &Path) -> bool {
    path.starts_with(root)
}

fuzz_target!(|data: &[u8]| {
    let Ok(name) = std::str::from_utf8(data) else { return };
    let (root, secret) = root();
    match confine(root, name) {
        Ok(path) => {
            assert!(inside(&path, root), "{name:?} resolved to {path:?}, outside {root:?}");
            assert_ne!(&path, secret);
        }
        Err(reason) => {
            assert!(Reason::ALL.iter().any(|r| r.as_str() == reason), "{reason}");
            assert!(!["bad request", "too many requests"].contains(&reason), "{reason}");
        }
    }
    if name.starts_with('/') || name.contains('\0') {
        assert_eq!(confine(root, name), Err("outside root"), "{name:?}");
    }
});
