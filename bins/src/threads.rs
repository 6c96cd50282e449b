//! The threads of this process, as the system lists them: what
//! `switchboard-server` checks just before it prints its shutdown report,
//! when every thread of the server should have been joined.

use std::fs;

/// Threads that live as long as the process, or are left by design, and so
/// may run when the report is printed: the stdout writer (it prints the
/// report), the signal handler's thread (`ctrlc`), the exit timer of a
/// second signal, and a Redis connection attempt that did not answer in
/// time (at most a few, each ending when Redis answers or goes away).
pub const LEFT_BY_DESIGN: [&str; 4] = ["stdout", "ctrl-c", "switchboard-for", "cluster-connect"];

/// The names of this process's threads other than the main one (as the
/// system has them: at most 15 bytes), sorted; `None` where the system
/// does not list them (not Linux).
pub fn others() -> Option<Vec<String>> {
    let me = std::process::id().to_string();
    let mut names = Vec::new();
    for entry in fs::read_dir("/proc/self/task").ok()? {
        let entry = entry.ok()?;
        if entry.file_name().to_str() == Some(me.as_str()) {
            continue;
        }
        // A thread that ended since the listing has no name any more.
        if let Ok(name) = fs::read_to_string(entry.path().join("comm")) {
            names.push(name.trim_end().to_owned());
        }
    }
    names.sort();
    Some(names)
}

/// Logs the threads still running beside the main one: at debug level
/// when each is one [`LEFT_BY_DESIGN`], else a warning naming the others
/// (a thread of the server that was not joined).
pub fn check_joined() {
    let Some(names) = others() else { return };
    let (expected, unexpected): (Vec<&String>, Vec<&String>) =
        names.iter().partition(|n| LEFT_BY_DESIGN.contains(&n.as_str()));
    if unexpected.is_empty() {
        log::debug!("every server thread joined; left beside main: {expected:?}");
    } else {
        log::warn!("threads still running at the shutdown report: {unexpected:?}");
    }
}
