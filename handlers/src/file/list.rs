//! The `list` answer: the regular files under the root, recursively, with
//! names relative to the root, sorted by name.
//!
//! Symbolic links are neither listed nor followed (so the walk cannot loop
//! or leave the root), names that are not UTF-8 are skipped (they could not
//! be requested), and unreadable folders are skipped. The walk is bounded:
//! at most [`MAX_FILES`] files, [`MAX_SCANNED`] folder entries and
//! [`MAX_DEPTH`] levels; if a bound is hit, or the header would pass
//! [`MAX_HEADER`], the list is cut and the header says `"truncated": true`.

use std::fs;
use std::path::{Path, PathBuf};

use super::header::{framed, push_json_str, MAX_HEADER};

/// The most files listed.
pub(crate) const MAX_FILES: usize = 10_000;
/// The most folder entries looked at in one walk.
const MAX_SCANNED: usize = 100_000;
/// The deepest folder looked into (the root is depth 0).
const MAX_DEPTH: usize = 32;

/// The files found, and whether the walk was cut short.
#[derive(Debug, Default)]
struct Walk {
    files: Vec<(String, u64)>,
    truncated: bool,
}

fn walk(root: &Path) -> Walk {
    let mut out = Walk::default();
    let mut scanned = 0usize;
    // Folders still to read: path, name prefix relative to the root, depth.
    let mut dirs: Vec<(PathBuf, String, usize)> = vec![(root.to_path_buf(), String::new(), 0)];
    while let Some((dir, prefix, depth)) = dirs.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) => {
                log::debug!("file: list: skipping {}: {e}", dir.display());
                continue;
            }
        };
        for entry in entries {
            scanned += 1;
            if scanned > MAX_SCANNED || out.files.len() >= MAX_FILES {
                out.truncated = true;
                return out;
            }
            let Ok(entry) = entry else { continue };
            let Ok(kind) = entry.file_type() else { continue };
            let file_name = entry.file_name();
            let Some(name) = file_name.to_str() else { continue };
            let rel = format!("{prefix}{name}");
            if kind.is_file() {
                if let Ok(meta) = entry.metadata() {
                    out.files.push((rel, meta.len()));
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
    out
}

/// The framed `list` header for the canonical `root`.
pub(crate) fn list(root: &Path) -> Vec<u8> {
    let Walk { mut files, mut truncated } = walk(root);
    files.sort_unstable();
    const HEAD: &[u8] = b"{\"files\":[";
    const TAIL: &[u8] = b"],\"file_size\":0}";
    const TRUNCATED_TAIL: &[u8] = b"],\"file_size\":0,\"truncated\":true}";
    let mut json = Vec::with_capacity(4096);
    json.extend_from_slice(HEAD);
    let mut entry = Vec::with_capacity(256);
    for (i, (name, size)) in files.iter().enumerate() {
        entry.clear();
        if i > 0 {
            entry.push(b',');
        }
        entry.extend_from_slice(b"{\"name\":");
        push_json_str(&mut entry, name);
        entry.extend_from_slice(format!(",\"size\":{size}}}").as_bytes());
        if json.len() + entry.len() + TRUNCATED_TAIL.len() > MAX_HEADER {
            truncated = true;
            break;
        }
        json.extend_from_slice(&entry);
    }
    json.extend_from_slice(if truncated { TRUNCATED_TAIL } else { TAIL });
    framed(&json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_list_is_cut_to_the_header_limit() {
        let dir = std::env::temp_dir().join(format!("sb-list-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub").join("inner"), b"xy").unwrap();
        for i in 0..1500 {
            std::fs::write(dir.join(format!("{i:04}-{}", "n".repeat(40))), b"").unwrap();
        }
        let h = list(&dir);
        assert!(h.len() - 4 <= MAX_HEADER);
        let v: serde_json::Value = serde_json::from_slice(&h[4..]).unwrap();
        assert_eq!(v["truncated"], true);
        assert_eq!(v["file_size"], 0);
        let files = v["files"].as_array().unwrap();
        assert!(files.len() > 500 && files.len() < 1500, "{}", files.len());
        assert_eq!(files[0]["name"], format!("0000-{}", "n".repeat(40)));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
