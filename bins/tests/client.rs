//! The `switchboard-client` binary against fake servers speaking the file
//! protocol byte for byte (correct, corrupted, cut short, error, bad
//! length, stalled), a fake echo server, and the real echo handler.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use switchboard_test_support::child::Spawned;
use switchboard_test_support::temp_dir;

const BIN: &str = env!("CARGO_BIN_EXE_switchboard-client");
const IO_TIMEOUT: Duration = Duration::from_secs(10);
const RUN_DEADLINE: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------- helpers

struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Asserts a failure explained in exactly one `switchboard-client:` line.
    fn assert_one_error_line(&self, needle: &str) {
        assert_eq!(self.status.code(), Some(1), "stderr: {}", self.stderr);
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "stderr: {:?}", self.stderr);
        assert!(
            lines[0].starts_with("switchboard-client: ") && lines[0].contains(needle),
            "expected '{needle}' in {:?}",
            lines[0]
        );
    }
}

/// Runs the client with `args` in `cwd`, feeding it `stdin` (None: no
/// stdin at all), killing it if it outlives the deadline.
fn run_client(args: &[&str], cwd: &Path, stdin: Option<&[u8]>) -> Run {
    let mut cmd = Command::new(BIN);
    cmd.args(args).current_dir(cwd).stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = Spawned::spawn(&mut cmd);
    if let Some(input) = stdin {
        child.stdin().write_all(input).unwrap();
        child.close_stdin();
    }
    finish(child)
}

/// Waits for `child` with a deadline (killing it past it), with its output.
fn finish(mut child: Spawned) -> Run {
    let status = child.wait(RUN_DEADLINE);
    let out = child.output(status);
    Run {
        status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Accepts one connection on `listener`, polling until a deadline.
fn accept_one(listener: &TcpListener) -> TcpStream {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
                return s;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "no client connected");
                thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

fn md5_hex(data: &[u8]) -> String {
    Md5::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

fn frame(json: &str) -> Vec<u8> {
    let mut v = (json.len() as i32).to_le_bytes().to_vec();
    v.extend_from_slice(json.as_bytes());
    v
}

/// How the fake file server answers.
#[derive(Clone, Copy, Debug)]
enum Fake {
    /// The header and the content, as the file handler sends them.
    Correct,
    /// The right header, one content byte flipped.
    Corrupted,
    /// The header, then half the content, then close.
    Cut,
    /// `{"filename": .., "file_size": 0, "error": "not found"}`.
    NotFound,
    /// A negative header length.
    BadLength,
    /// The header, then nothing, connection kept open.
    Stall,
    /// A `list` answer.
    List,
}

/// Serves one request on a fresh port; the thread returns the request line.
fn fake_file_server(mode: Fake, content: Vec<u8>) -> (SocketAddr, JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = thread::spawn(move || {
        let conn = accept_one(&listener);
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let request = line.trim_end().to_owned();
        let name = request.strip_prefix("get ").unwrap_or("").to_owned();
        let mut w = conn;
        let header = |md5: &str, size: usize| {
            frame(&format!(
                r#"{{"filename": {}, "file_size": {size}, "md5": "{md5}"}}"#,
                serde_json::Value::String(name.clone())
            ))
        };
        let md5 = md5_hex(&content);
        match mode {
            Fake::Correct => {
                w.write_all(&header(&md5, content.len())).unwrap();
                w.write_all(&content).unwrap();
            }
            Fake::Corrupted => {
                let mut bad = content.clone();
                let mid = bad.len() / 2;
                bad[mid] ^= 0x01;
                w.write_all(&header(&md5, content.len())).unwrap();
                w.write_all(&bad).unwrap();
            }
            Fake::Cut => {
                w.write_all(&header(&md5, content.len())).unwrap();
                w.write_all(&content[..content.len() / 2]).unwrap();
            }
            Fake::NotFound => {
                let json = format!(
                    r#"{{"filename": {}, "file_size": 0, "error": "not found"}}"#,
                    serde_json::Value::String(name.clone())
                );
                w.write_all(&frame(&json)).unwrap();
            }
            Fake::BadLength => {
                w.write_all(&(-5i32).to_le_bytes()).unwrap();
                w.write_all(b"garbage").unwrap();
            }
            Fake::Stall => {
                w.write_all(&header(&md5, content.len())).unwrap();
                // Wait for the client to give up and close.
                let mut sink = [0u8; 64];
                let _ = reader.read(&mut sink);
            }
            Fake::List => {
                let json = r#"{"files": [{"name": "a.txt", "size": 5}, {"name": "dir/big.iso", "size": 5000000000}], "file_size": 0}"#;
                w.write_all(&frame(json)).unwrap();
            }
        }
        request
    });
    (addr, handle)
}

/// Content spanning several of the client's 64 KiB chunks.
fn content() -> Vec<u8> {
    (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect()
}

// ---------------------------------------------------------------- get

#[test]
fn download_is_verified_and_renamed() {
    let dir = temp_dir("client-ok");
    let data = content();
    let (addr, server) = fake_file_server(Fake::Correct, data.clone());
    let run = run_client(&[&addr.to_string(), "get", "sub dir/data file.bin"], dir.path(), None);
    assert!(run.status.success(), "stderr: {}", run.stderr);
    assert_eq!(server.join().unwrap(), "get sub dir/data file.bin");
    assert_eq!(std::fs::read(dir.path().join("data file.bin")).unwrap(), data);
    assert_eq!(dir.names(), ["data file.bin"], "no temporary file left");
    assert!(run.stdout.contains(&md5_hex(&data)), "stdout: {}", run.stdout);
}

#[test]
fn download_into_folder_and_to_path() {
    let dir = temp_dir("client-out");
    std::fs::create_dir(dir.path().join("inbox")).unwrap();
    let data = b"hello".to_vec();

    let (addr, server) = fake_file_server(Fake::Correct, data.clone());
    let run = run_client(&[&addr.to_string(), "get", "a/b.txt", "-o", "inbox"], dir.path(), None);
    assert!(run.status.success(), "stderr: {}", run.stderr);
    server.join().unwrap();
    assert_eq!(std::fs::read(dir.path().join("inbox/b.txt")).unwrap(), data);

    let (addr, server) = fake_file_server(Fake::Correct, data.clone());
    let run = run_client(&[&addr.to_string(), "get", "a/b.txt", "-o", "inbox/c.txt"], dir.path(), None);
    assert!(run.status.success(), "stderr: {}", run.stderr);
    server.join().unwrap();
    assert_eq!(std::fs::read(dir.path().join("inbox/c.txt")).unwrap(), data);

    let mut inbox: Vec<String> = std::fs::read_dir(dir.path().join("inbox"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    inbox.sort();
    assert_eq!(inbox, ["b.txt", "c.txt"]);
}

#[test]
fn empty_file_downloads() {
    let dir = temp_dir("client-empty");
    let (addr, server) = fake_file_server(Fake::Correct, Vec::new());
    let run = run_client(&[&addr.to_string(), "get", "empty"], dir.path(), None);
    assert!(run.status.success(), "stderr: {}", run.stderr);
    server.join().unwrap();
    assert_eq!(std::fs::read(dir.path().join("empty")).unwrap(), b"");
    assert_eq!(dir.names(), ["empty"]);
}

#[test]
fn corrupted_download_leaves_nothing() {
    let dir = temp_dir("client-corrupt");
    let (addr, server) = fake_file_server(Fake::Corrupted, content());
    let run = run_client(&[&addr.to_string(), "get", "data.bin"], dir.path(), None);
    server.join().unwrap();
    run.assert_one_error_line("md5 mismatch");
    assert!(dir.names().is_empty(), "left behind: {:?}", dir.names());
}

#[test]
fn cut_transfer_leaves_nothing() {
    let dir = temp_dir("client-cut");
    let data = content();
    let (addr, server) = fake_file_server(Fake::Cut, data.clone());
    let run = run_client(&[&addr.to_string(), "get", "data.bin"], dir.path(), None);
    server.join().unwrap();
    run.assert_one_error_line(&format!("of {} bytes", data.len()));
    assert!(run.stderr.contains("cut short"), "{}", run.stderr);
    assert!(dir.names().is_empty(), "left behind: {:?}", dir.names());
}

#[test]
fn server_error_reason_is_printed() {
    let dir = temp_dir("client-notfound");
    let (addr, server) = fake_file_server(Fake::NotFound, Vec::new());
    let run = run_client(&[&addr.to_string(), "get", "missing.txt"], dir.path(), None);
    assert_eq!(server.join().unwrap(), "get missing.txt");
    run.assert_one_error_line("server: not found");
    assert!(dir.names().is_empty(), "left behind: {:?}", dir.names());
}

#[test]
fn bad_header_length_is_refused() {
    let dir = temp_dir("client-badlen");
    let (addr, server) = fake_file_server(Fake::BadLength, Vec::new());
    let run = run_client(&[&addr.to_string(), "get", "x.bin"], dir.path(), None);
    server.join().unwrap();
    run.assert_one_error_line("bad header length -5");
    assert!(dir.names().is_empty(), "left behind: {:?}", dir.names());
}

#[test]
fn stalled_server_times_out() {
    let dir = temp_dir("client-stall");
    let (addr, server) = fake_file_server(Fake::Stall, content());
    let run = run_client(&[&addr.to_string(), "get", "x.bin", "--read-timeout", "300ms"], dir.path(), None);
    run.assert_one_error_line("sent nothing for 300ms");
    server.join().unwrap();
    assert!(dir.names().is_empty(), "left behind: {:?}", dir.names());
}

#[test]
fn existing_file_needs_force() {
    let dir = temp_dir("client-force");
    std::fs::write(dir.path().join("x.bin"), b"old").unwrap();
    // Refused before connecting: the address is never contacted.
    let run = run_client(&["127.0.0.1:1", "get", "x.bin"], dir.path(), None);
    run.assert_one_error_line("already exists");
    assert_eq!(std::fs::read(dir.path().join("x.bin")).unwrap(), b"old");

    let (addr, server) = fake_file_server(Fake::Correct, b"new".to_vec());
    let run = run_client(&[&addr.to_string(), "get", "x.bin", "--force"], dir.path(), None);
    assert!(run.status.success(), "stderr: {}", run.stderr);
    server.join().unwrap();
    assert_eq!(std::fs::read(dir.path().join("x.bin")).unwrap(), b"new");
    assert_eq!(dir.names(), ["x.bin"]);
}

#[test]
fn name_without_base_name_is_refused() {
    let dir = temp_dir("client-badname");
    for name in ["..", "a/..", ""] {
        let run = run_client(&["127.0.0.1:1", "get", name], dir.path(), None);
        run.assert_one_error_line("no file name");
    }
}

#[test]
fn missing_output_folder_is_refused() {
    let dir = temp_dir("client-nofolder");
    let run = run_client(&["127.0.0.1:1", "get", "x.bin", "-o", "nope/x.bin"], dir.path(), None);
    run.assert_one_error_line("there is no folder nope");
    assert!(dir.names().is_empty());
}

// ---------------------------------------------------------------- list

#[test]
fn list_prints_files_and_sizes() {
    let dir = temp_dir("client-list");
    let (addr, server) = fake_file_server(Fake::List, Vec::new());
    let run = run_client(&[&addr.to_string(), "list"], dir.path(), None);
    assert!(run.status.success(), "stderr: {}", run.stderr);
    assert_eq!(server.join().unwrap(), "list");
    assert_eq!(run.stdout, "         5  a.txt\n5000000000  dir/big.iso\n");
}

#[test]
fn list_error_fails() {
    let dir = temp_dir("client-listerr");
    let (addr, server) = fake_file_server(Fake::BadLength, Vec::new());
    let run = run_client(&[&addr.to_string(), "list"], dir.path(), None);
    server.join().unwrap();
    run.assert_one_error_line("bad header length");
}

// ---------------------------------------------------------------- interactive

#[test]
fn interactive_echo_until_stdin_ends() {
    let dir = temp_dir("client-echo");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = thread::spawn(move || {
        let mut conn = accept_one(&listener);
        let mut buf = [0u8; 1024];
        let mut total = 0;
        loop {
            let n = conn.read(&mut buf).unwrap();
            if n == 0 {
                break total; // the client shut down its side: we close ours
            }
            total += n;
            conn.write_all(&buf[..n]).unwrap();
        }
    });
    let run = run_client(&[&addr.to_string()], dir.path(), Some("hello\nstraße 你好\n".as_bytes()));
    assert!(run.status.success(), "stderr: {}", run.stderr);
    assert_eq!(run.stdout, "hello\nstraße 你好\n");
    assert_eq!(server.join().unwrap(), "hello\nstraße 你好\n".len());
}

#[test]
fn interactive_exits_when_server_closes() {
    let dir = temp_dir("client-bye");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = thread::spawn(move || {
        let mut conn = accept_one(&listener);
        // No newline: printed as it arrives all the same.
        conn.write_all(b"* bye").unwrap();
    });
    // stdin stays open: only the server's close can end the client.
    let child =
        Spawned::spawn(Command::new(BIN).arg(addr.to_string()).current_dir(dir.path()).stdin(Stdio::piped()));
    let run = finish(child);
    server.join().unwrap();
    assert!(run.status.success(), "stderr: {}", run.stderr);
    assert_eq!(run.stdout, "* bye");
}

#[test]
fn interactive_against_real_echo_server() {
    let dir = temp_dir("client-real");
    let server =
        switchboard::Server::builder().workers(1).start("127.0.0.1:0", switchboard_handlers::Echo).unwrap();
    let run = run_client(&[&server.local_addr().to_string()], dir.path(), Some(b"ping\npong"));
    assert!(run.status.success(), "stderr: {}", run.stderr);
    assert_eq!(run.stdout, "ping\npong");
    server.shutdown();
}

// ---------------------------------------------------------------- errors

#[test]
fn bad_args_exit_2() {
    let dir = temp_dir("client-args");
    for args in [&[][..], &["127.0.0.1:1", "get"][..], &["127.0.0.1:1", "--timeout", "10"][..]] {
        let run = run_client(args, dir.path(), None);
        assert_eq!(run.status.code(), Some(2), "{args:?}: {}", run.stderr);
        assert!(run.stderr.starts_with("error:"), "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains("--help"), "{args:?}: {}", run.stderr);
    }
}

#[test]
fn connection_refused_is_one_clear_line() {
    let dir = temp_dir("client-refused");
    // A port that was just free: nothing listens on it.
    let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let run = run_client(&[&addr.to_string(), "list"], dir.path(), None);
    run.assert_one_error_line(&format!("cannot connect to {addr}"));
    let run = run_client(&["no-port-here", "list"], dir.path(), None);
    run.assert_one_error_line("HOST:PORT");
}
