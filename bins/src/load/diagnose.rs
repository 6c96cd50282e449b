//! One line for a run that talked to the wrong kind of server.

use super::Report;

/// Says which handler the mode needs when the run's errors look like the
/// target speaks another protocol; `None` otherwise.
pub fn mismatch_hint(report: &Report) -> Option<String> {
    let e = &report.errors;
    let hint = match report.mode {
        "chat" if report.connected == 0 && report.connect_failures > 0 => {
            "welcome line never came: is this a chat server (switchboard-server --handler chat)?"
        }
        "echo" if report.received == 0 && e.protocol > 0 => {
            "bytes came that were never sent: is this an echo server (switchboard-server --handler echo)?"
        }
        "echo" if report.received > 0 && e.mismatches == report.received => {
            "no reply echoed what was sent: is this an echo server (switchboard-server --handler echo)?"
        }
        "file"
            if e.protocol > 0
                && report.file.is_some_and(|f| f.md5_ok + f.md5_mismatch + f.error_replies == 0) =>
        {
            "no file header came back: is this a file server (switchboard-server --handler file)?"
        }
        _ => return None,
    };
    Some(hint.to_owned())
}
