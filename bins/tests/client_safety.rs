//! `switchboard-client` against servers that lie or stall: a size beyond
//! the free disk space, a transfer that stops, names and lines full of
//! control and bidi characters; and the temporary files of a client that
//! was killed.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use md5::{Digest, Md5};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard-client");
const RUN_DEADLINE: Duration = Duration::from_secs(20);

struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    took: Duration,
}

/// Runs the client with `args` in `cwd`, killing it past the deadline.
fn run_client(args: &[&str], cwd: &Path) -> Run {
    let started = Instant::now();
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn switchboard-client");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_t = thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_t = thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > RUN_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("switchboard-client did not exit within {RUN_DEADLINE:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    Run { status, stdout: out_t.join().unwrap(), stderr: err_t.join().unwrap(), took: started.elapsed() }
}

/// A server for one connection: reads the request line (if `request`),
/// writes `reply`, then waits for the client to close.
fn fake_server(request: bool, reply: Vec<u8>) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(RUN_DEADLINE)).unwrap();
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        if request {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
        }
        let mut w: TcpStream = conn;
        w.write_all(&reply).unwrap();
        if !request {
            // Interactive: close once the reply is out.
            return;
        }
        let mut sink = [0u8; 64];
        while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
    });
    (addr, handle)
}

fn frame(json: &str) -> Vec<u8> {
    let mut v = (json.len() as i32).to_le_bytes().to_vec();
    v.extend_from_slice(json.as_bytes());
    v
}

fn md5_hex(data: &[u8]) -> String {
    Md5::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

fn assert_one_error_line(run: &Run, needle: &str) {
    assert_eq!(run.status.code(), Some(1), "stderr: {}", run.stderr);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "stderr: {:?}", run.stderr);
    assert!(lines[0].starts_with("switchboard-client: ") && lines[0].contains(needle), "{:?}", lines[0]);
}

#[test]
fn a_size_beyond_the_free_space_is_refused_before_writing() {
    let dir = switchboard_test_support::temp_dir("nospace");
    let size = 1u64 << 62;
    let header =
        frame(&format!(r#"{{"filename": "huge.bin", "file_size": {size}, "md5": "{}"}}"#, md5_hex(b"")));
    let mut reply = header;
    reply.extend_from_slice(&[0u8; 4096]);
    let (addr, server) = fake_server(true, reply);
    let run = run_client(&[&addr.to_string(), "get", "huge.bin"], dir.path());
    assert_one_error_line(&run, &format!("the file is {size} bytes but only"));
    assert!(run.stderr.contains("bytes are free in"), "{}", run.stderr);
    server.join().unwrap();
    assert!(dir.names().is_empty(), "left behind: {:?}", dir.names());
}

#[test]
fn a_transfer_that_stops_is_given_up_at_the_timeout() {
    let dir = switchboard_test_support::temp_dir("stall");
    let content = vec![7u8; 100_000];
    let mut reply = frame(&format!(
        r#"{{"filename": "x.bin", "file_size": {}, "md5": "{}"}}"#,
        content.len(),
        md5_hex(&content)
    ));
    // A third of the content, then silence with the connection open.
    reply.extend_from_slice(&content[..content.len() / 3]);
    let (addr, server) = fake_server(true, reply);
    let run = run_client(&[&addr.to_string(), "get", "x.bin", "--read-timeout", "1s"], dir.path());
    assert_one_error_line(&run, "sent nothing for 1s");
    assert!(run.took >= Duration::from_secs(1), "gave up after {:?}", run.took);
    server.join().unwrap();
    // Nothing under the final name, no temporary file either.
    assert!(dir.names().is_empty(), "left behind: {:?}", dir.names());
}

#[test]
fn stale_part_files_of_the_target_are_removed_on_the_next_run() {
    let dir = switchboard_test_support::temp_dir("stale");
    // The pid of a process that has exited: a client killed with SIGKILL.
    let mut gone = Command::new("true").spawn().expect("run true");
    let dead = gone.id();
    gone.wait().unwrap();
    let stale = format!(".x.bin.part-{dead}-0123456789abcdef");
    // A live process's download in progress, another target's, and a
    // user's file that merely looks alike are left alone.
    let live = format!(".x.bin.part-{}-fedcba9876543210", std::process::id());
    let other = format!(".y.bin.part-{dead}-0123456789abcdef");
    let mine = ".x.bin.part-notes".to_owned();
    for name in [&stale, &live, &other, &mine] {
        std::fs::write(dir.path().join(name), b"partial").unwrap();
    }
    let content = b"the whole file".to_vec();
    let mut reply = frame(&format!(
        r#"{{"filename": "x.bin", "file_size": {}, "md5": "{}"}}"#,
        content.len(),
        md5_hex(&content)
    ));
    reply.extend_from_slice(&content);
    let (addr, server) = fake_server(true, reply);
    let run = run_client(&[&addr.to_string(), "get", "x.bin"], dir.path());
    assert_eq!(run.status.code(), Some(0), "stderr: {}", run.stderr);
    server.join().unwrap();
    let mut want = vec![live, other, mine, "x.bin".to_owned()];
    want.sort();
    assert_eq!(dir.names(), want);
    assert_eq!(std::fs::read(dir.path().join("x.bin")).unwrap(), content);
}

#[test]
fn listed_names_are_printed_escaped() {
    let dir = switchboard_test_support::temp_dir("list");
    let json = r#"{"files": [{"name": "invoice\u202efdp.exe", "size": 5}, {"name": "a\u001b]0;x\u0007b", "size": 1}], "file_size": 0}"#;
    let (addr, server) = fake_server(true, frame(json));
    let run = run_client(&[&addr.to_string(), "list"], dir.path());
    assert_eq!(run.status.code(), Some(0), "stderr: {}", run.stderr);
    server.join().unwrap();
    assert_eq!(run.stdout, "5  invoice\\u{202e}fdp.exe\n1  a\\u{1b}]0;x\\u{7}b\n");
}

#[test]
fn interactive_lines_are_printed_escaped() {
    let dir = switchboard_test_support::temp_dir("interactive");
    let (addr, server) =
        fake_server(false, "<eve> hi\r<admin> run\x1b[2J\u{202e}txt.exe\n\tok é\n".as_bytes().to_vec());
    let run = run_client(&[&addr.to_string()], dir.path());
    assert_eq!(run.status.code(), Some(0), "stderr: {}", run.stderr);
    server.join().unwrap();
    assert_eq!(run.stdout, "<eve> hi\\u{d}<admin> run\\u{1b}[2J\\u{202e}txt.exe\n\tok é\n");
}
