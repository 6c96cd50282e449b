//! The file handler out of descriptors: a server whose descriptor limit is
//! reached answers `server busy` (never `not found`, never an empty list),
//! and serves again once descriptors are free.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchboard_handlers::file::proto::{self, Header, Reason};

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

#[test]
fn out_of_descriptors_is_server_busy_and_passes() {
    let root = std::env::temp_dir().join(format!("switchboard-file-busy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("a.txt"), b"alpha").unwrap();
    let mut child = Command::new("bash")
        .args([
            "-c",
            &format!(
                "ulimit -n 32 && exec {BIN} --listen 127.0.0.1:0 --workers 1 --handler file --root '{}'",
                root.display()
            ),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    let addr: SocketAddr = first.trim().strip_prefix("listening on ").unwrap().parse().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let err = child.stderr.take().unwrap();
    let sink = Arc::clone(&log);
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let mut l = sink.lock().unwrap();
            l.push_str(&line);
            l.push('\n');
        }
    });
    let _server = Running(child);

    let mut client = connect(addr);
    let (h, body) = ask(&mut client, "get a.txt");
    assert_eq!((h.error, body), (None, b"alpha".to_vec()));
    // Fill the server's descriptor table with idle connections.
    let idle: Vec<TcpStream> = (0..40).map(|_| connect(addr)).collect();
    let deadline = Instant::now() + TIMEOUT;
    while !log.lock().unwrap().contains("accept failed") {
        assert!(Instant::now() < deadline, "the server never ran out: {}", log.lock().unwrap());
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(ask(&mut client, "get a.txt").0, Header::error("a.txt", Reason::ServerBusy));
    assert_eq!(ask(&mut client, "list").0, Header::error("", Reason::ServerBusy));
    assert_eq!(ask(&mut client, "get missing").0, Header::error("missing", Reason::NotFound));

    // Descriptors come back: served again (polled, since the server closes
    // the idle connections as it sees their EOF).
    drop(idle);
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let (h, body) = ask(&mut client, "get a.txt");
        if h.error.is_none() {
            assert_eq!(body, b"alpha");
            break;
        }
        assert_eq!(h, Header::error("a.txt", Reason::ServerBusy));
        assert!(Instant::now() < deadline, "still busy after the descriptors were freed");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (h, _) = ask(&mut client, "list");
    assert_eq!(h.files.map(|f| f.len()), Some(1));
    let _ = std::fs::remove_dir_all(&root);
}
