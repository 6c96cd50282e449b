//! The `switchboard-test-server` binary (a binary of the `switchboard-tests`
//! package, so Cargo builds it for the integration tests): runs one handler
//! with the options given, so a test can measure a server in a process of
//! its own. Driven through [`ChildServer`](crate::child::ChildServer).
//!
//! ```text
//! switchboard-test-server [--handler echo|line-echo|chat|file] [--workers N]
//!     [--max-frame BYTES] [--chat-rate LINES] [--chat-room-rate BYTES] [--root DIR]
//!     [--idle-timeout-ms MS] [--max-outbound BYTES]
//! ```
//!
//! It prints `listening on ADDR`, then answers each `stats` line on its
//! stdin with `stats open=.. accepted=.. ...` (every field of
//! [`Stats`]). At EOF on stdin it shuts down gracefully and prints
//! `exited drained=N forced=M`.

use std::io::{BufRead, Write};
use std::time::Duration;

use switchboard::{Handler, Server, ServerBuilder, Stats};
use switchboard_handlers::{Chat, Echo, FileGet};

use crate::LineEcho;

/// The binary's `main`: parses the arguments, serves until stdin closes.
pub fn main() {
    crate::init_logs();
    let mut args = std::env::args().skip(1);
    let (mut handler, mut workers, mut max_frame, mut chat_rate) = ("echo".to_string(), 2, 4096, 0);
    let (mut root, mut idle, mut max_outbound) = (None, None, None);
    let mut room_rate = switchboard_handlers::chat::DEFAULT_ROOM_RATE;
    while let Some(flag) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| fail(&format!("{flag} needs a value")));
        match flag.as_str() {
            "--handler" => handler = value(),
            "--workers" => workers = number(&value()),
            "--max-frame" => max_frame = number(&value()),
            "--chat-rate" => chat_rate = number(&value()),
            "--chat-room-rate" => room_rate = number(&value()) as u64,
            "--root" => root = Some(value()),
            "--idle-timeout-ms" => idle = Some(Duration::from_millis(number(&value()) as u64)),
            "--max-outbound" => max_outbound = Some(number(&value())),
            _ => fail(&format!("unknown argument {flag}")),
        }
    }
    let mut builder = Server::builder().workers(workers);
    if let Some(idle) = idle {
        builder = builder.idle_timeout(idle);
    }
    if let Some(bytes) = max_outbound {
        builder = builder.max_outbound(bytes);
    }
    match handler.as_str() {
        "echo" => serve(builder, Echo),
        "line-echo" => serve(builder, LineEcho { max: max_frame }),
        "chat" => {
            let chat = Chat::new(max_frame)
                .rate_limit(chat_rate as u32)
                .room_rate(room_rate, (room_rate / 2).max(1));
            serve(builder, chat)
        }
        "file" => {
            let root = root.unwrap_or_else(|| fail("--handler file needs --root"));
            let handler = FileGet::new(root, max_frame).unwrap_or_else(|e| fail(&e.to_string()));
            serve(builder, handler)
        }
        other => fail(&format!("unknown handler {other}")),
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("switchboard-test-server: {msg}");
    std::process::exit(2)
}

fn number(s: &str) -> usize {
    s.parse().unwrap_or_else(|_| fail(&format!("not a number: {s}")))
}

fn serve<H: Handler>(builder: ServerBuilder, handler: H) {
    let server = builder.start("127.0.0.1:0", handler).unwrap_or_else(|e| fail(&e.to_string()));
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {}", server.local_addr()).and_then(|()| out.flush()).expect("stdout");
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if line.trim() == "stats" {
            writeln!(out, "stats {}", format_stats(&server.stats()))
                .and_then(|()| out.flush())
                .expect("stdout");
        }
    }
    let report = server.shutdown();
    writeln!(out, "exited drained={} forced={}", report.drained, report.forced).expect("stdout");
}

/// Every counter of `s` ([`Stats::COUNTERS`]) as `key=value` pairs.
pub fn format_stats(s: &Stats) -> String {
    let pairs: Vec<String> =
        Stats::COUNTERS.iter().map(|c| format!("{}={}", c.name, s.get(c.name).unwrap_or(0))).collect();
    pairs.join(" ")
}

/// The inverse of [`format_stats`]; panics on a field it does not know.
pub fn parse_stats(kv: &str) -> Stats {
    let mut s = Stats::default();
    for pair in kv.split_whitespace() {
        let (k, v) = pair.split_once('=').unwrap_or_else(|| panic!("bad stats field {pair:?}"));
        let n: u64 = v.parse().unwrap_or_else(|_| panic!("bad stats value {pair:?}"));
        assert!(s.set(k, n), "unknown stats field {k:?}");
    }
    s
}
