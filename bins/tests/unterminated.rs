//! Lines without a newline, end to end: the tutorial's file client sends
//! `get a.txt` with no newline; with `--accept-unterminated 200ms` it gets
//! its file while it keeps its side open, and without the flag it gets it
//! once it shuts its side (`SHUT_WR`). A chat line with no newline followed
//! by a half-close reaches the room.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};

use switchboard_test_support::child::{run, Spawned};
use switchboard_test_support::{temp_dir, TIMEOUT};

const SERVER: &str = env!("CARGO_BIN_EXE_switchboard-server");

/// `switchboard-server --listen 127.0.0.1:0` with `args`, and where it
/// listens.
fn server(args: &[&str]) -> (Spawned, SocketAddr) {
    let mut cmd = Command::new(SERVER);
    cmd.args(["--listen", "127.0.0.1:0", "--workers", "2"]).args(args).stdin(Stdio::null());
    let mut proc = Spawned::spawn(&mut cmd);
    let addr = proc.listening_addr();
    (proc, addr)
}

/// The seed tutorial's file client: `get a.txt` with no newline, then the
/// header's length (`struct.unpack('i', ...)`), the JSON header and the
/// content. With `shut` as its third argument it shuts its sending side
/// after the request.
const PY_FILE: &str = r#"
import json, socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.settimeout(20)
s.connect((sys.argv[1], int(sys.argv[2])))
s.send(b'get a.txt')
if sys.argv[3] == 'shut':
    s.shutdown(socket.SHUT_WR)
replies = s.makefile('rb')
head_len = struct.unpack('i', replies.read(4))[0]
header = json.loads(replies.read(head_len).decode('utf-8'))
body = replies.read(header['file_size'])
assert len(body) == header['file_size'], 'cut short'
print(header['filename'], header['file_size'], body.decode())
"#;

fn python_file_client(addr: SocketAddr, how: &str) -> String {
    let mut cmd = Command::new("python3");
    cmd.args(["-c", PY_FILE, &addr.ip().to_string(), &addr.port().to_string(), how]).stdin(Stdio::null());
    let out = run(&mut cmd, TIMEOUT);
    assert!(out.status.success(), "python ({how}): {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn root_with_a_txt(dir: &Path) -> String {
    let root = dir.join("root");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("a.txt"), b"alpha beta").unwrap();
    root.to_str().unwrap().to_owned()
}

#[test]
fn the_tutorial_file_client_gets_its_file_with_accept_unterminated_while_it_waits() {
    let dir = temp_dir("unterminated-file-wait");
    let root = root_with_a_txt(dir.path());
    let (_server, addr) = server(&["--handler", "file", "--root", &root, "--accept-unterminated", "200ms"]);
    assert_eq!(python_file_client(addr, "wait"), "a.txt 10 alpha beta\n");
}

#[test]
fn the_tutorial_file_client_gets_its_file_without_the_flag_once_it_shuts_its_side() {
    let dir = temp_dir("unterminated-file-shut");
    let root = root_with_a_txt(dir.path());
    let (_server, addr) = server(&["--handler", "file", "--root", &root]);
    assert_eq!(python_file_client(addr, "shut"), "a.txt 10 alpha beta\n");
}
