//! A line-oriented chat member for the tests.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};

use crate::net::{connect, connect_from, small_window_client_with};

/// A chat member: sends lines, reads the server's lines (LF-ended, UTF-8).
#[derive(Debug)]
pub struct ChatClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl ChatClient {
    /// Connects without waiting for anything.
    pub fn connect(addr: SocketAddr) -> ChatClient {
        ChatClient::from_stream(connect(addr))
    }

    /// Connects and waits for the welcome; returns the member and its nick.
    pub fn join(addr: SocketAddr) -> (ChatClient, String) {
        ChatClient::welcome(ChatClient::connect(addr))
    }

    /// As [`join`](ChatClient::join), from the loopback address `source`
    /// ([`connect_from`](crate::connect_from)).
    pub fn join_from(addr: SocketAddr, source: IpAddr) -> (ChatClient, String) {
        ChatClient::welcome(ChatClient::from_stream(connect_from(addr, source)))
    }

    /// As [`join`](ChatClient::join), with a receive buffer of `rcvbuf`
    /// bytes, so what the member has not read yet waits in the server's
    /// queue rather than in the kernel's.
    pub fn join_small_buffer(addr: SocketAddr, rcvbuf: usize) -> (ChatClient, String) {
        ChatClient::welcome(ChatClient::from_stream(small_window_client_with(addr, rcvbuf)))
    }

    fn from_stream(s: TcpStream) -> ChatClient {
        let writer = s.try_clone().expect("clone");
        ChatClient { reader: BufReader::new(s), writer }
    }

    fn welcome(mut c: ChatClient) -> (ChatClient, String) {
        let welcome = c.line();
        let nick = welcome.strip_prefix("* welcome ").unwrap_or_else(|| panic!("not a welcome: {welcome:?}"));
        let nick = nick.to_owned();
        (c, nick)
    }

    /// Another member object on the same socket (for a reading thread).
    /// Lines this one has buffered but not returned are not seen by it.
    pub fn try_clone(&self) -> ChatClient {
        ChatClient::from_stream(self.writer.try_clone().expect("clone"))
    }

    /// The socket, to write from another thread.
    pub fn stream(&self) -> TcpStream {
        self.writer.try_clone().expect("clone")
    }

    /// Sends bytes as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("write");
    }

    /// Sends one line (LF added).
    pub fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\n").as_bytes());
    }

    /// The next line, without its LF; server lines never carry CR.
    pub fn line(&mut self) -> String {
        let mut buf = Vec::new();
        let n = self.reader.read_until(b'\n', &mut buf).expect("read a line");
        assert!(n > 0, "EOF where a line was expected");
        assert_eq!(buf.pop(), Some(b'\n'), "a server line ends in LF: {buf:?}");
        String::from_utf8(buf).expect("server lines are UTF-8")
    }

    /// The next line is `want`.
    pub fn expect(&mut self, want: &str) {
        assert_eq!(self.line(), want);
    }

    /// Reads to EOF (a reset also counts as closed); returns the lines read.
    pub fn lines_to_eof(&mut self) -> Vec<String> {
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            Err(e) => panic!("waiting for EOF: {e}"),
        }
        String::from_utf8(rest).expect("UTF-8").lines().map(str::to_owned).collect()
    }

    /// Proves nothing else was queued for this member before the command:
    /// `/who`'s answer must be the very next line.
    pub fn expect_nothing_before_who(&mut self, online: &str) {
        self.send("/who");
        self.expect(&format!("* online: {online}"));
    }
}
