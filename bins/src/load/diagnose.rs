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
        // Bytes that differ, or none of them back (a welcome line shorter
        // than a message leaves every message waiting).
        "echo"
            if (e.mismatches + e.protocol > 0 && e.mismatches + e.protocol >= report.received)
                || (report.received == 0 && e.lost > 0) =>
        {
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::load::ErrorCounts;

    fn report(mode: &'static str, received: u64, errors: ErrorCounts) -> Report {
        Report {
            mode,
            target: "127.0.0.1:1".parse().unwrap(),
            threads: 1,
            rate: None,
            depth: 1,
            connections: 2,
            connected: 2,
            connect_failures: 0,
            window: Duration::from_secs(1),
            sent: 2,
            received,
            in_window: received,
            throughput: 0.0,
            bytes: 0,
            bytes_per_sec: 0.0,
            latency: None,
            errors,
            cpu: Duration::ZERO,
            cpu_per_message: None,
            chat: None,
            file: None,
            message_size: Some(64),
            interrupted: false,
            intervals: Vec::new(),
            histogram: hdrhistogram::Histogram::new(3).unwrap(),
        }
    }

    #[test]
    fn echo_hints_only_when_nothing_was_echoed() {
        let hint = Some(
            "no reply echoed what was sent: is this an echo server (switchboard-server --handler echo)?"
                .into(),
        );
        let lost = ErrorCounts { lost: 2, ..ErrorCounts::default() };
        assert_eq!(mismatch_hint(&report("echo", 0, lost)), hint);
        let protocol = ErrorCounts { protocol: 2, ..ErrorCounts::default() };
        assert_eq!(mismatch_hint(&report("echo", 0, protocol)), hint);
        let all_wrong = ErrorCounts { mismatches: 5, ..ErrorCounts::default() };
        assert_eq!(mismatch_hint(&report("echo", 5, all_wrong)), hint);
        // A few losses among many replies are the server's trouble, not the protocol's.
        assert_eq!(mismatch_hint(&report("echo", 1000, lost)), None);
        assert_eq!(mismatch_hint(&report("echo", 1000, ErrorCounts::default())), None);
    }
}
