//! Replying through `Conn` and `ConnHandle`: order, file regions, closed
//! connections.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::sync::Arc;

use parking_lot::Mutex;
use switchboard::{CloseReason, Conn, ConnHandle, Flow, Framing, Handler, SendError, Server};
use switchboard_test_support::*;

/// A file holding `data` in a temp dir of its own (removed with the dir).
fn temp_file(name: &str, data: &[u8]) -> (TempDir, Arc<File>) {
    let dir = temp_dir(&format!("conn-{name}"));
    let file = Arc::new(File::open(dir.write("data", data)).unwrap());
    (dir, file)
}

/// `inline`: file region from the callback. `later`: a thread replies through
/// the handle (text, file, text). `text`: a line at once.
struct Files {
    file: Arc<File>,
    len: u64,
    handles: Arc<Mutex<Vec<ConnHandle>>>,
    closes: Arc<Mutex<Vec<String>>>,
}

impl Handler for Files {
    type Session = ();
    fn framing(&self) -> Framing {
        Framing::lines(64)
    }
    fn open(&self, conn: &mut Conn<'_>) {
        self.handles.lock().push(conn.handle());
    }
    fn frame(&self, _: &mut (), line: &[u8], conn: &mut Conn<'_>) -> Flow {
        match line {
            b"inline" => {
                conn.send(b"<");
                conn.send_file(Arc::clone(&self.file), 0, self.len);
                conn.send(b">");
            }
            b"later" => {
                let h = conn.handle();
                let (file, len) = (Arc::clone(&self.file), self.len);
                std::thread::spawn(move || {
                    h.send("[").unwrap();
                    h.send_file(file, 0, len).unwrap();
                    h.send("]").unwrap();
                });
            }
            b"tail" => conn.send_file(Arc::clone(&self.file), self.len - 3, 3),
            b"beyond" => conn.send_file(Arc::clone(&self.file), 0, self.len + 10),
            _ => {
                conn.send(line);
                conn.send(b"\n");
            }
        }
        Flow::Continue
    }
    fn close(&self, _: (), reason: &CloseReason) {
        self.closes.lock().push(reason.to_string());
    }
}

fn files_server(data: &[u8], name: &str) -> (Server, Files, TempDir) {
    let (dir, file) = temp_file(name, data);
    let h = Files {
        file: Arc::clone(&file),
        len: data.len() as u64,
        handles: Arc::default(),
        closes: Arc::default(),
    };
    let shared = Files {
        file,
        len: data.len() as u64,
        handles: Arc::clone(&h.handles),
        closes: Arc::clone(&h.closes),
    };
    (start(Server::builder().workers(1), h), shared, dir)
}

#[test]
fn file_regions_go_out_in_order_with_bytes() {
    let data = random_bytes(3 << 20, 11);
    let (server, _h, dir) = files_server(&data, "order");
    let mut s = connect(server.local_addr());
    s.write_all(b"inline\nping\ntail\n").unwrap();
    let got = read_exact(&mut s, 1 + data.len() + 1 + 5 + 3);
    assert_eq!(got[0], b'<');
    assert!(got[1..=data.len()] == data[..], "file content differs");
    assert_eq!(&got[data.len() + 1..data.len() + 7], b">ping\n");
    assert_eq!(&got[data.len() + 7..], &data[data.len() - 3..]);
    drop(dir);
}

#[test]
fn replies_from_another_thread_keep_their_order() {
    let data = random_bytes(1 << 20, 12);
    let (server, _h, dir) = files_server(&data, "later");
    let mut s = connect(server.local_addr());
    s.write_all(b"later\n").unwrap();
    let got = read_exact(&mut s, data.len() + 2);
    assert_eq!(got[0], b'[');
    assert!(got[1..=data.len()] == data[..]);
    assert_eq!(got[data.len() + 1], b']');
    drop(dir);
}

#[test]
fn a_file_shorter_than_its_region_closes_the_connection() {
    let data = random_bytes(1000, 13);
    let (server, h, dir) = files_server(&data, "short");
    let mut s = connect(server.local_addr());
    s.write_all(b"beyond\n").unwrap();
    // The whole file, then the end: never bytes that are not the file.
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert_eq!(got, data);
    wait_until("the close is reported", || !h.closes.lock().is_empty());
    assert_eq!(h.closes.lock()[0], CloseReason::FileTruncated.to_string());
    drop(dir);
}

#[test]
fn sending_to_a_closed_connection_says_closed() {
    let (server, h, dir) = files_server(b"x", "closed");
    let s = connect(server.local_addr());
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    w.write_all(b"hello\n").unwrap();
    assert_eq!(read_line(&mut r), "hello\n");
    let handle = h.handles.lock()[0].clone();
    assert!(!handle.is_closed());
    assert_eq!(handle.send("pushed\n"), Ok(()));
    assert_eq!(read_line(&mut r), "pushed\n");
    drop((r, w));
    wait_until("the handle sees the close and the handler is told", || {
        handle.is_closed() && !h.closes.lock().is_empty()
    });
    assert_eq!(handle.send("late\n"), Err(SendError::Closed));
    assert_eq!(*h.closes.lock(), [CloseReason::PeerClosed.to_string()]);
    drop(dir);
}

#[test]
fn a_handle_can_close_its_connection_after_flushing() {
    let (server, h, dir) = files_server(b"x", "handleclose");
    let mut s = connect(server.local_addr());
    wait_until("connection registered", || h.handles.lock().len() == 1);
    let handle = h.handles.lock()[0].clone();
    handle.send("last words\n").unwrap();
    handle.close();
    let mut got = String::new();
    s.read_to_string(&mut got).unwrap();
    assert_eq!(got, "last words\n");
    drop(dir);
}

/// Replies to every line from another thread, once the test allows it;
/// reports EOF to the test.
struct Later {
    go: crossbeam_channel::Receiver<()>,
    eof: crossbeam_channel::Sender<()>,
}

impl Handler for Later {
    type Session = ();
    fn framing(&self) -> Framing {
        Framing::lines(64)
    }
    fn open(&self, _: &mut Conn<'_>) {}
    fn frame(&self, _: &mut (), line: &[u8], conn: &mut Conn<'_>) -> Flow {
        let reply = conn.defer();
        let go = self.go.clone();
        let text = format!("done {}\n", String::from_utf8_lossy(line));
        std::thread::spawn(move || {
            let _ = go.recv();
            reply.send(text).unwrap();
        });
        Flow::Continue
    }
    fn eof(&self, _: &mut (), _: &mut Conn<'_>) {
        let _ = self.eof.send(());
    }
}

#[test]
fn deferred_replies_reach_a_client_that_half_closed_in_request_order() {
    let (go_tx, go) = crossbeam_channel::unbounded();
    let (eof, eof_rx) = crossbeam_channel::unbounded();
    // One deferred reply at a time (not pipelined).
    let server = start(Server::builder().workers(1).max_deferred(1), Later { go, eof });
    let mut s = connect(server.local_addr());
    s.write_all(b"one\ntwo\n").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    // "two" waits for the reply to "one": one frame in, the EOF not yet seen.
    wait_until("the first frame is taken", || server.stats().frames == 1);
    assert!(eof_rx.try_recv().is_err(), "EOF is not handled while a deferred reply is outstanding");
    go_tx.send(()).unwrap();
    go_tx.send(()).unwrap();
    let mut got = String::new();
    s.read_to_string(&mut got).unwrap();
    assert_eq!(got, "done one\ndone two\n");
    eof_rx.recv_timeout(TIMEOUT).expect("the handler sees EOF after both replies");
    assert_eq!(server.stats().frames, 2);
}

#[test]
fn pause_reading_delays_the_next_frames_and_loses_none() {
    let pause = std::time::Duration::from_millis(150);
    let handler = switchboard::handler_fn(Framing::lines(64), move |line, conn| {
        conn.send(line);
        conn.send(b"\n");
        conn.pause_reading(pause);
        Flow::Continue
    });
    let server = start(Server::builder().workers(1), handler);
    let s = connect(server.local_addr());
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    let started = std::time::Instant::now();
    // Four lines in one write: each waits for the pause after the one before.
    w.write_all(b"a\nb\nc\nd\n").unwrap();
    for want in ["a\n", "b\n", "c\n", "d\n"] {
        assert_eq!(read_line(&mut r), want);
    }
    assert!(started.elapsed() >= pause * 3, "paused {:?} in all", started.elapsed());
    // A paused peer that half-closes still gets every reply.
    w.write_all(b"e\nf\n").unwrap();
    w.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = String::new();
    r.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "e\nf\n");
}
