//! `switchboard-server --listen unix:PATH`: the seed tutorials' Python
//! clients with `AF_UNIX` against echo and file; upper and chat with
//! `switchboard-client unix:PATH`; echo with `switchboard-load --target
//! unix:PATH`; the socket file's life (a stale one replaced, a live one
//! refused, the mode of `--unix-mode`, removed on exit, a socket handed down
//! by socket activation served and left in place); the peer's uid and pid
//! in the debug log.

use std::io::Write;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rustix::process::Signal;
use switchboard_test_support::child::{run, Spawned};
use switchboard_test_support::{read_line, temp_dir, unix_client, TIMEOUT};

const SERVER: &str = env!("CARGO_BIN_EXE_switchboard-server");
const CLIENT: &str = env!("CARGO_BIN_EXE_switchboard-client");
const LOAD: &str = env!("CARGO_BIN_EXE_switchboard-load");

/// `switchboard-server --listen unix:PATH --workers 2` and `args`, once it
/// says where it listens.
fn server(path: &Path, args: &[&str]) -> Spawned {
    let mut cmd = Command::new(SERVER);
    cmd.arg("--listen")
        .arg(format!("unix:{}", path.display()))
        .args(["--workers", "2"])
        .args(args)
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null());
    let mut proc = Spawned::spawn(&mut cmd);
    let line = proc.line_where(TIMEOUT, |l| l.starts_with("listening on "));
    assert_eq!(line.trim_end(), format!("listening on unix:{}", path.display()));
    proc
}

/// SIGTERM, then the exit status and the report line.
fn stop(mut proc: Spawned) -> (std::process::ExitStatus, String) {
    proc.signal(Signal::TERM);
    let status = proc.wait(TIMEOUT);
    (status, proc.stdout_so_far())
}

/// The seed tutorial's echo client, with `AF_UNIX` in place of `AF_INET`.
const PY_ECHO: &str = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
s.send(b'hello over a unix socket')
print(s.recv(1024).decode())
s.close()
"#;

/// The seed tutorial's file client over `AF_UNIX`: `get NAME`, the header's
/// length (`struct.unpack('i', ...)`), the JSON header, then the content.
const PY_FILE: &str = r#"
import json, socket, struct, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
s.sendall(b'get a.txt\n')
def recv_exactly(n):
    data = b''
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise SystemExit('cut short')
        data += chunk
    return data
head_len = struct.unpack('i', recv_exactly(4))[0]
header = json.loads(recv_exactly(head_len).decode('utf-8'))
body = recv_exactly(header['file_size'])
print(header['filename'], header['file_size'], body.decode())
"#;

fn python(script: &str, path: &Path) -> String {
    let out = run(Command::new("python3").args(["-c", script]).arg(path).stdin(Stdio::null()), TIMEOUT);
    assert!(out.status.success(), "python: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn python_af_unix_clients_are_served_by_echo_and_file() {
    let dir = temp_dir("unix-py");
    let path = dir.path().join("echo.sock");
    let echo = server(&path, &[]);
    assert_eq!(python(PY_ECHO, &path), "hello over a unix socket\n");
    let (status, out) = stop(echo);
    assert!(status.success(), "{out}");
    assert!(out.contains("shutdown complete: "), "{out}");
    assert!(!path.exists(), "the socket file is removed on exit");

    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("a.txt"), b"alpha beta").unwrap();
    let path = dir.path().join("file.sock");
    let file = server(&path, &["--handler", "file", "--root", root.to_str().unwrap()]);
    assert_eq!(python(PY_FILE, &path), "a.txt 10 alpha beta\n");
    let (status, _) = stop(file);
    assert!(status.success());
    assert!(!path.exists());
}

/// `switchboard-client unix:PATH` with `input` on stdin: its stdout.
fn client(path: &Path, args: &[&str], input: &str) -> String {
    let mut cmd = Command::new(CLIENT);
    cmd.args(args).arg(format!("unix:{}", path.display())).args(["--linger", "2s"]).stdin(Stdio::piped());
    let mut c = Spawned::spawn(&mut cmd);
    c.stdin().write_all(input.as_bytes()).unwrap();
    c.close_stdin();
    let status = c.wait(TIMEOUT);
    assert!(status.success(), "client: {}", c.stderr_so_far());
    c.stdout_so_far()
}

#[test]
fn upper_and_chat_over_a_unix_socket_with_switchboard_client() {
    let dir = temp_dir("unix-client");
    let path = dir.path().join("upper.sock");
    let upper = server(&path, &["--handler", "upper"]);
    assert_eq!(client(&path, &[], "hello, unix\n"), "HELLO, UNIX\n");
    assert!(stop(upper).0.success());

    let path = dir.path().join("chat.sock");
    let chat = server(&path, &["--handler", "chat"]);
    let mut alice = unix_client(&path);
    assert_eq!(read_line(&mut alice), "* welcome guest-1\n");
    let out = client(&path, &[], "/nick bob\nhi alice\n");
    assert_eq!(out, "* welcome guest-2\n* you are now bob\n");
    assert_eq!(read_line(&mut alice), "* guest-2 joined\n");
    assert_eq!(read_line(&mut alice), "* guest-2 is now bob\n");
    assert_eq!(read_line(&mut alice), "<bob> hi alice\n");
    drop(alice);
    assert!(stop(chat).0.success());
}

#[test]
fn switchboard_load_drives_echo_and_chat_over_a_unix_socket() {
    let dir = temp_dir("unix-load");
    let path = dir.path().join("echo.sock");
    let echo = server(&path, &[]);
    let target = format!("unix:{}", path.display());
    let out = run(
        Command::new(LOAD).args([
            "echo",
            "--target",
            &target,
            "--connections",
            "8",
            "--messages",
            "2000",
            "--json",
        ]),
        TIMEOUT,
    );
    assert!(out.status.success(), "load: {}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    assert_eq!(report["target"], target.as_str());
    assert_eq!(report["connections"]["established"], 8, "{report}");
    assert_eq!(report["errors"]["total"], 0, "{report}");
    assert!(report["messages"]["received"].as_u64().unwrap() >= 2000, "{report}");
    assert!(stop(echo).0.success());

    let path = dir.path().join("chat.sock");
    let chat = server(&path, &["--handler", "chat"]);
    let target = format!("unix:{}", path.display());
    let out = run(
        Command::new(LOAD).args([
            "chat",
            "--target",
            &target,
            "--connections",
            "4",
            "--messages",
            "200",
            "--json",
        ]),
        TIMEOUT,
    );
    assert!(out.status.success(), "load: {}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    assert_eq!(report["chat"]["members"], 4, "{report}");
    assert_eq!(report["chat"]["complete_members"], 4, "{report}");
    assert_eq!(report["errors"]["total"], 0, "{report}");
    assert!(stop(chat).0.success());
}

#[test]
fn a_stale_file_is_replaced_a_live_socket_refused_and_the_mode_set() {
    let dir = temp_dir("unix-file");
    let path = dir.path().join("s.sock");
    // What a killed server leaves behind.
    drop(UnixListener::bind(&path).unwrap());
    let first = server(&path, &["--unix-mode", "660"]);
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    first.wait_stderr("replacing a stale socket file", TIMEOUT);

    let out = run(Command::new(SERVER).arg("--listen").arg(format!("unix:{}", path.display())), TIMEOUT);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!(
            "switchboard-server: cannot listen on unix:{}: a server is listening",
            path.display()
        )),
        "{err}"
    );
    assert!(path.exists(), "the live server's file stays");
    assert_eq!(python(PY_ECHO, &path), "hello over a unix socket\n");
    assert!(stop(first).0.success());
    assert!(!path.exists());
}

#[test]
fn unix_flags_that_cannot_apply_are_usage_errors() {
    let dir = temp_dir("unix-usage");
    let unix = format!("unix:{}", dir.path().join("s.sock").display());
    for (args, needle) in [
        (vec!["--listen", "127.0.0.1:0", "--unix-mode", "660"], "--unix-mode"),
        (vec!["--listen", &unix, "--unix-mode", "0999"], "octal"),
        (vec!["--listen", &unix, "--unix-mode", "1777"], "octal"),
        (vec!["--listen", &unix, "--udp"], "--udp"),
        (vec!["--listen", "unix:"], "no path"),
    ] {
        let out = run(Command::new(SERVER).args(&args).stdin(Stdio::null()), TIMEOUT);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    assert!(!dir.path().join("s.sock").exists());
}

#[test]
fn the_debug_log_shows_a_unix_peers_uid_and_pid() {
    let dir = temp_dir("unix-cred");
    let path = dir.path().join("s.sock");
    let echo = server(&path, &[]);
    let mut s = UnixStream::connect(&path).unwrap();
    s.write_all(b"x").unwrap();
    let uid = rustix::process::getuid().as_raw();
    let gid = rustix::process::getgid().as_raw();
    let want = format!("unix(uid {uid}, gid {gid}, pid {}): connection 1 open on worker", std::process::id());
    echo.wait_stderr(&want, TIMEOUT);
    drop(s);
    assert!(stop(echo).0.success());
}

/// Binds an `AF_UNIX` socket at argv[1], then execs the server (argv[2:])
/// with it as descriptor 3, `LISTEN_FDS=1` and `LISTEN_PID` its own pid, as
/// systemd's `ListenStream=/path` does.
const ACTIVATE_UNIX: &str = r#"
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sys.argv[1])
s.listen(128)
if s.fileno() != 3:
    os.dup2(s.fileno(), 3)
os.set_inheritable(3, True)
env = dict(os.environ, LISTEN_FDS="1", LISTEN_PID=str(os.getpid()))
os.execve(sys.argv[2], sys.argv[2:], env)
"#;

#[test]
fn a_unix_socket_handed_down_is_served_and_its_file_left_in_place() {
    let dir = temp_dir("unix-activate");
    let path: PathBuf = dir.path().join("activated.sock");
    let mut cmd = Command::new("python3");
    // --listen names a TCP address no process here can bind (TEST-NET-1):
    // only the socket handed down can serve.
    cmd.args(["-c", ACTIVATE_UNIX])
        .arg(&path)
        .arg(SERVER)
        .args(["--listen", "192.0.2.1:7", "--workers", "1"])
        .stdin(Stdio::null());
    let mut proc = Spawned::spawn(&mut cmd);
    let line = proc.line_where(TIMEOUT, |l| l.starts_with("listening on "));
    assert_eq!(line.trim_end(), format!("listening on unix:{}", path.display()));
    proc.wait_stderr("serving the Unix socket handed down (LISTEN_FDS), not --listen", TIMEOUT);
    assert_eq!(python(PY_ECHO, &path), "hello over a unix socket\n");
    let (status, _) = stop(proc);
    assert!(status.success());
    assert!(path.exists(), "a socket file the server did not make is not its to remove");
}
