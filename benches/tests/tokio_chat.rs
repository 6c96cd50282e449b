//! The chat baseline speaks what `switchboard-load chat` expects of
//! `--handler chat`, and keeps its limits: otherwise the chat row would
//! compare switchboard with a server doing less.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use switchboard_test_support::child::Spawned;

/// A member: its reader and its socket.
struct Member {
    reader: BufReader<TcpStream>,
    sock: TcpStream,
}

impl Member {
    fn join(addr: SocketAddr) -> Member {
        let sock = TcpStream::connect(addr).expect("connect");
        sock.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
        Member { reader: BufReader::new(sock.try_clone().expect("clone")), sock }
    }

    fn line(&mut self) -> String {
        let mut s = String::new();
        self.reader.read_line(&mut s).expect("a line within the deadline");
        s
    }

    fn send(&mut self, bytes: &[u8]) {
        self.sock.write_all(bytes).expect("send");
    }
}

#[test]
fn welcomes_relays_to_the_others_and_announces() {
    let mut server =
        Spawned::spawn(Command::new(env!("CARGO_BIN_EXE_tokio-chat")).args(["--listen", "127.0.0.1:0"]));
    let addr = server.listening_addr();

    let mut a = Member::join(addr);
    assert_eq!(a.line(), "* welcome guest-1\n");
    let mut b = Member::join(addr);
    assert_eq!(b.line(), "* welcome guest-2\n");
    assert_eq!(a.line(), "* guest-2 joined\n");

    // A line split over two writes, with a CR before its LF, and two lines in one write.
    a.send(b"hel");
    a.send(b"lo\r\n");
    a.send(b"one\ntwo\n");
    assert_eq!(b.line(), "<guest-1> hello\n");
    assert_eq!(b.line(), "<guest-1> one\n");
    assert_eq!(b.line(), "<guest-1> two\n");
    b.send(b"back\n");
    assert_eq!(a.line(), "<guest-2> back\n", "the sender does not hear its own lines");

    // Over the 4,096-byte limit: the member is closed, the others hear it leave.
    let mut long = vec![b'x'; 5000];
    long.push(b'\n');
    b.send(&long);
    assert_eq!(a.line(), "* guest-2 left\n");
    let mut rest = String::new();
    assert_eq!(b.reader.read_line(&mut rest).expect("EOF, not an error"), 0, "closed, got {rest:?}");
    server.signal(rustix::process::Signal::KILL);
}
