//! One line for a run that talked to the wrong kind of server, or to a
//! server that never answered at all.

use super::Report;

/// The hint when nothing at all came back on any connection (no byte, no
/// close). A connection the server never accepted (left in its backlog)
/// looks exactly like one it accepted and never answered, so the hint names
/// the server not accepting first, then the handler the mode needs.
pub fn no_answer_hint(mode: &str) -> String {
    let first = "nothing came back on any connection: the server did not accept them";
    let article = match mode {
        "echo" => "an",
        "chat" | "file" => "a",
        _ => return format!("{first} (is it overloaded or stopped?)"),
    };
    format!("{first}, or it is not {article} {mode} server (switchboard-server --handler {mode})?")
}

/// Says which handler the mode needs when the run's errors look like the
/// target speaks another protocol, or that the server did not accept when
/// nothing came back at all; `None` otherwise.
pub fn mismatch_hint(report: &Report) -> Option<String> {
    let e = &report.errors;
    if !report.heard && (e.total() > 0 || report.connect_failures > 0) {
        return Some(no_answer_hint(report.mode));
    }
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
                && report
                    .file
                    .is_some_and(|f| f.md5_ok + f.md5_mismatch + f.error_replies + f.oversized == 0) =>
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
            target: switchboard::Addr::Ip("127.0.0.1:1".parse().unwrap()),
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
            heard: true,
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

    #[test]
    fn nothing_back_at_all_blames_the_server_not_the_protocol() {
        let lost = ErrorCounts { lost: 2, ..ErrorCounts::default() };
        for mode in ["echo", "chat", "file"] {
            let mut r = report(mode, 0, lost);
            r.heard = false;
            assert_eq!(mismatch_hint(&r), Some(no_answer_hint(mode)), "{mode}");
        }
        assert_eq!(
            no_answer_hint("echo"),
            "nothing came back on any connection: the server did not accept them, \
             or it is not an echo server (switchboard-server --handler echo)?"
        );
        assert_eq!(
            no_answer_hint("idle"),
            "nothing came back on any connection: the server did not accept them (is it overloaded or stopped?)"
        );
        let mut unwelcomed = report("chat", 0, ErrorCounts::default());
        (unwelcomed.connected, unwelcomed.connect_failures, unwelcomed.heard) = (0, 2, false);
        assert_eq!(mismatch_hint(&unwelcomed), Some(no_answer_hint("chat")));
        // The welcome hint stays for a server that did say something.
        unwelcomed.heard = true;
        assert_eq!(
            mismatch_hint(&unwelcomed).as_deref(),
            Some("welcome line never came: is this a chat server (switchboard-server --handler chat)?")
        );
        // A clean run that heard nothing (idle) gets no hint.
        let mut idle = report("idle", 0, ErrorCounts::default());
        idle.heard = false;
        assert_eq!(mismatch_hint(&idle), None);
    }
}
