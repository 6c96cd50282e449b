//! `switchboard-load` against real servers started in-process: each mode
//! runs briefly with few connections and its counts are checked from the
//! `--json` output.

use std::net::SocketAddr;
use std::process::{Command, ExitStatus};
use std::time::Duration;

use serde_json::Value;
use switchboard::{handler_fn, Conn, ConnHandle, Flow, Framing, Handler, Server};
use switchboard_handlers::{Chat, Echo, FileGet};
use switchboard_test_support::child::run;
use switchboard_test_support::temp_dir;

/// How long one run of the load generator may take before the test fails.
const TIMEOUT: Duration = Duration::from_secs(30);

/// What a run printed, as text.
struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs `switchboard-load ARGS`, its output read while it runs, killing it
/// (and failing) after [`TIMEOUT`].
fn load(args: &[&str]) -> Output {
    let out = run(Command::new(env!("CARGO_BIN_EXE_switchboard-load")).args(args), TIMEOUT);
    Output {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs with `--json` and parses the result.
fn load_json(addr: SocketAddr, args: &[&str]) -> (Output, Value) {
    let target = addr.to_string();
    let mut all = vec!["--json", "--quiet", "--target", &target];
    all.extend_from_slice(args);
    let out = load(&all);
    let v: Value = serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", out.stdout, out.stderr));
    (out, v)
}

fn echo_server() -> Server {
    Server::builder().workers(2).start("127.0.0.1:0", Echo).expect("server starts")
}

fn u(v: &Value, path: &[&str]) -> u64 {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_u64().unwrap_or_else(|| panic!("{path:?} is not a number in {v}"))
}

#[test]
fn echo_closed_loop_gets_every_message_back() {
    let server = echo_server();
    let (out, v) =
        load_json(server.local_addr(), &["echo", "-c", "4", "-d", "1s", "--depth", "4", "--size", "100"]);
    assert!(out.status.success(), "exit {:?}: {}", out.status, out.stderr);
    assert_eq!(v["mode"], "echo");
    assert_eq!(u(&v, &["connections", "established"]), 4);
    let sent = u(&v, &["messages", "sent"]);
    assert!(sent > 100, "only {sent} messages in a second");
    assert_eq!(u(&v, &["messages", "received"]), sent);
    assert_eq!(u(&v, &["errors", "total"]), 0);
    assert!(v["throughput_per_s"].as_f64().unwrap() > 0.0);
    let lat = &v["latency_us"];
    assert_eq!(lat["samples"].as_u64(), Some(sent));
    let (p50, p99, max) =
        (lat["p50"].as_f64().unwrap(), lat["p99"].as_f64().unwrap(), lat["max"].as_f64().unwrap());
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{lat}");
    assert!(v["cpu"]["per_message_us"].as_f64().unwrap() > 0.0);
}

#[test]
fn echo_message_count_is_exact() {
    let server = echo_server();
    let (out, v) = load_json(server.local_addr(), &["echo", "-c", "3", "-n", "500", "--depth", "2"]);
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(u(&v, &["messages", "sent"]), 500);
    assert_eq!(u(&v, &["messages", "received"]), 500);
    assert_eq!(u(&v, &["errors", "total"]), 0);
}

#[test]
fn echo_open_loop_keeps_the_schedule() {
    let server = echo_server();
    let (out, v) = load_json(server.local_addr(), &["echo", "-c", "4", "-d", "1s", "--rate", "2000"]);
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(v["loop"], "open");
    let sent = u(&v, &["messages", "sent"]);
    assert!((1900..=2100).contains(&sent), "{sent} sent at 2,000/s for 1 s");
    assert_eq!(u(&v, &["messages", "received"]), sent);
    assert_eq!(u(&v, &["errors", "total"]), 0);
}

#[test]
fn echo_corruption_is_counted_as_mismatches() {
    // Echoes everything, but flips one bit of every 100th byte it sees.
    let counter = std::sync::atomic::AtomicU64::new(0);
    let corrupt = handler_fn(Framing::Raw, move |data, conn| {
        let mut copy = data.to_vec();
        for b in copy.iter_mut() {
            if counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 100 == 99 {
                *b ^= 1;
            }
        }
        conn.send(&copy);
        Flow::Continue
    });
    let server = Server::builder().workers(1).start("127.0.0.1:0", corrupt).expect("server starts");
    let (out, v) = load_json(server.local_addr(), &["echo", "-c", "2", "-n", "200"]);
    assert_eq!(out.status.code(), Some(1), "errors must fail the run: {}", out.stderr);
    assert_eq!(u(&v, &["messages", "received"]), 200);
    let mismatches = u(&v, &["errors", "mismatches"]);
    assert!(mismatches >= 100, "{mismatches} mismatches for 128 corrupted bytes in 200 messages");
}

fn chat_server() -> Server {
    Server::builder().workers(2).start("127.0.0.1:0", Chat::new(4096)).expect("server starts")
}

#[test]
fn chat_every_member_receives_every_other_members_messages() {
    let server = chat_server();
    let (out, v) = load_json(server.local_addr(), &["chat", "-c", "6", "-d", "1s", "--depth", "2"]);
    assert!(out.status.success(), "exit {:?}: {}", out.status, out.stderr);
    let sent = u(&v, &["messages", "sent"]);
    assert!(sent > 50, "only {sent} messages in a second");
    assert_eq!(u(&v, &["chat", "members"]), 6);
    assert_eq!(u(&v, &["chat", "expected"]), 5 * sent);
    assert_eq!(u(&v, &["chat", "received"]), 5 * sent);
    assert_eq!(u(&v, &["messages", "received"]), 5 * sent);
    assert_eq!(u(&v, &["chat", "missing"]), 0);
    assert_eq!(u(&v, &["chat", "complete_members"]), 6);
    assert_eq!(u(&v, &["errors", "total"]), 0);
    assert_eq!(v["latency_us"]["samples"].as_u64(), Some(5 * sent));
}

#[test]
fn chat_message_count_and_open_loop() {
    let server = chat_server();
    let (out, v) = load_json(server.local_addr(), &["chat", "-c", "4", "-n", "200", "--size", "300"]);
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(u(&v, &["messages", "sent"]), 200);
    assert_eq!(u(&v, &["chat", "received"]), 600);
    assert_eq!(u(&v, &["chat", "complete_members"]), 4);

    let (out, v) = load_json(server.local_addr(), &["chat", "-c", "3", "-d", "1s", "--rate", "300"]);
    assert!(out.status.success(), "{}", out.stderr);
    let sent = u(&v, &["messages", "sent"]);
    assert!((280..=320).contains(&sent), "{sent} sent at 300/s for 1 s");
    assert_eq!(u(&v, &["chat", "received"]), 2 * sent);
    assert_eq!(u(&v, &["errors", "total"]), 0);
}

/// A room that welcomes everybody but relays only every other line.
struct LossyRoom {
    members: std::sync::Mutex<Vec<ConnHandle>>,
    lines: std::sync::atomic::AtomicU64,
}

impl Handler for LossyRoom {
    type Session = ();

    fn framing(&self) -> Framing {
        Framing::lines(4096)
    }

    fn open(&self, conn: &mut Conn<'_>) {
        conn.send(b"* welcome guest\n");
        self.members.lock().unwrap().push(conn.handle());
    }

    fn frame(&self, _: &mut (), line: &[u8], conn: &mut Conn<'_>) -> Flow {
        if self.lines.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 2 == 0 {
            let mut msg = b"<guest> ".to_vec();
            msg.extend_from_slice(line);
            msg.push(b'\n');
            let others: Vec<ConnHandle> =
                self.members.lock().unwrap().iter().filter(|h| h.id() != conn.id()).cloned().collect();
            for h in others {
                let _ = h.send(msg.clone());
            }
        }
        Flow::Continue
    }
}

#[test]
fn chat_missing_deliveries_are_counted() {
    let room = LossyRoom { members: Default::default(), lines: Default::default() };
    let server = Server::builder().workers(1).start("127.0.0.1:0", room).expect("server starts");
    let (out, v) = load_json(
        server.local_addr(),
        &["chat", "-c", "3", "-n", "40", "--rate", "400", "--drain-timeout", "300ms"],
    );
    assert_eq!(out.status.code(), Some(1), "missing deliveries must fail the run: {}", out.stderr);
    assert_eq!(u(&v, &["messages", "sent"]), 40);
    assert_eq!(u(&v, &["chat", "expected"]), 80);
    assert_eq!(u(&v, &["chat", "received"]), 40);
    assert_eq!(u(&v, &["chat", "missing"]), 40);
    assert!(u(&v, &["errors", "lost"]) >= 40);
}

#[test]
fn file_downloads_are_md5_checked() {
    let dir = temp_dir("file");
    let size = 3 * 1024 * 1024 + 17;
    let mut state = 0x1234_5678_9abc_def1_u64;
    let data: Vec<u8> = (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    std::fs::write(dir.path().join("big file.bin"), &data).unwrap();
    let server = Server::builder()
        .workers(2)
        .start("127.0.0.1:0", FileGet::new(dir.path(), 4096).unwrap())
        .expect("server starts");
    let (out, v) =
        load_json(server.local_addr(), &["file", "big file.bin", "-c", "2", "-n", "6", "--depth", "2"]);
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(u(&v, &["messages", "sent"]), 6);
    assert_eq!(u(&v, &["messages", "received"]), 6);
    assert_eq!(u(&v, &["file", "md5_ok"]), 6);
    assert_eq!(u(&v, &["file", "md5_mismatch"]), 0);
    assert_eq!(u(&v, &["file", "file_size"]), size as u64);
    assert_eq!(u(&v, &["bytes"]), 6 * size as u64);
    assert!(v["mb_per_s"].as_f64().unwrap() > 0.0);

    let (out, v) = load_json(server.local_addr(), &["file", "no such file", "-n", "2"]);
    assert_eq!(out.status.code(), Some(1), "error replies must fail the run");
    assert_eq!(u(&v, &["file", "error_replies"]), 2);
    assert_eq!(u(&v, &["file", "md5_ok"]), 0);
}

#[test]
fn file_content_that_does_not_match_its_md5_is_counted() {
    // Answers every request with 5 bytes whose md5 is not the header's.
    let liar = handler_fn(Framing::lines(4096), |_line, conn| {
        let header = br#"{"filename": "x", "file_size": 5, "md5": "00000000000000000000000000000000"}"#;
        conn.send(&(header.len() as i32).to_le_bytes());
        conn.send(header);
        conn.send(b"hello");
        Flow::Continue
    });
    let server = Server::builder().workers(1).start("127.0.0.1:0", liar).expect("server starts");
    let (out, v) = load_json(server.local_addr(), &["file", "x", "-n", "3"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(u(&v, &["messages", "received"]), 3);
    assert_eq!(u(&v, &["file", "md5_mismatch"]), 3);
    assert_eq!(u(&v, &["errors", "mismatches"]), 3);
}

#[test]
fn idle_connections_stay_open() {
    let server = echo_server();
    let (out, v) = load_json(server.local_addr(), &["idle", "-c", "50", "-d", "300ms"]);
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(u(&v, &["connections", "established"]), 50);
    assert_eq!(u(&v, &["connections", "failed"]), 0);
    assert_eq!(u(&v, &["messages", "sent"]), 0);
}

#[test]
fn unreachable_target_exits_2_with_one_line() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let target = format!("127.0.0.1:{port}");
    let out = load(&["echo", "--target", &target, "-d", "1s", "--quiet"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stderr.contains("cannot connect to"), "{}", out.stderr);
    assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);
    assert!(out.stdout.is_empty());
}

#[test]
fn bad_arguments_exit_2() {
    let out = load(&["echo", "--connections", "0", "-d", "1s"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stderr.contains("--connections"), "{}", out.stderr);
}
