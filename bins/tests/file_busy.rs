//! The file handler's busy answers: at the connection limit a file client
//! reads a header with `"error": "server busy"` (the mapping of running out
//! of descriptors to `server busy` is unit-tested in the handler, and the
//! server under a descriptor limit in `budget.rs`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use switchboard_handlers::file::proto::{self, Header};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard-server");
const TIMEOUT: Duration = Duration::from_secs(20);

/// The server process, killed on drop.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s
}

fn ask(s: &mut TcpStream, line: &str) -> (Header, Vec<u8>) {
    s.write_all(format!("{line}\n").as_bytes()).unwrap();
    let mut len = [0u8; proto::LEN_PREFIX];
    s.read_exact(&mut len).expect("a reply");
    let mut json = vec![0u8; proto::decode_len(len).unwrap()];
    s.read_exact(&mut json).unwrap();
    let header = proto::parse(&json).unwrap();
    let mut body = vec![0u8; header.file_size as usize];
    s.read_exact(&mut body).unwrap();
    (header, body)
}

/// The reply header of a tutorial-style client: `struct.unpack('i', 4
/// bytes)`, then `json.loads` of that many bytes.
const TUTORIAL_CLIENT: &str = r#"
import json, socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.connect((sys.argv[1], int(sys.argv[2])))
s.send(b'get a.txt\n')
head_len = struct.unpack('i', s.recv(4))[0]
header = json.loads(s.recv(head_len).decode('utf-8'))
print(header['error'])
"#;

#[test]
fn at_the_connection_limit_file_clients_read_a_server_busy_header() {
    let root = std::env::temp_dir().join(format!("switchboard-file-limit-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("a.txt"), b"alpha").unwrap();
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--max-connections", "1", "--handler", "file", "--root"])
        .arg(&root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    let addr: SocketAddr = first.trim().strip_prefix("listening on ").unwrap().parse().unwrap();
    let _server = Running(child);
    // The one connection the server takes, answered once it holds it.
    let mut holder = connect(addr);
    assert_eq!(ask(&mut holder, "get a.txt").1, b"alpha");

    let downloads = root.join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard-client"))
        .args([&addr.to_string(), "get", "a.txt"])
        .current_dir(&downloads)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "switchboard-client succeeded against a full server");
    assert!(stderr.contains("server busy"), "switchboard-client said: {stderr}");
    assert!(!downloads.join("a.txt").exists(), "nothing under the final name");

    let out = Command::new("python3")
        .args(["-c", TUTORIAL_CLIENT, &addr.ip().to_string(), &addr.port().to_string()])
        .stdin(Stdio::null())
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "the tutorial client failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "server busy\n");
    drop(holder);
    let _ = std::fs::remove_dir_all(&root);
}
