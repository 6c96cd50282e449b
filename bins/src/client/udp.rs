//! `switchboard-client --udp ADDR`: interactive over UDP, a datagram per
//! line.
//!
//! Each line typed (without its line ending) is sent as one datagram to
//! the server; every datagram from the server is printed as it arrives,
//! escaped like the TCP mode's output ([`StreamEscaper`]), with a newline
//! added when it does not end in one (echo and upper answer `hello` with
//! `hello`). The socket is connected to the server, so datagrams from
//! anyone else are never shown. When the input ends, what the server still
//! sends is printed for the linger time; UDP has no end of stream.
//!
//! A chat server's welcome carries a cookie (`* cookie HEX`): the client
//! sends `/cookie HEX` back at once, which proves it receives at its address,
//! so it hears the room (PROTOCOLS.md, "chat over UDP").

use std::io::{self, BufRead, Write};
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use switchboard_handlers::chat::{cookie_in, COOKIE_COMMAND};

use super::terminal::StreamEscaper;
use super::Error;

/// The largest datagram the client sends or shows whole (the largest UDP
/// payload over IPv4).
const MAX_DATAGRAM: usize = 65_507;

/// A UDP socket bound to a free local port and connected to `addr`.
pub fn connect(addr: &str) -> Result<UdpSocket, Error> {
    let server: SocketAddr = addr
        .to_socket_addrs()
        .map_err(|source| Error::Resolve { addr: addr.to_owned(), source })?
        .next()
        .ok_or_else(|| Error::Resolve {
            addr: addr.to_owned(),
            source: io::Error::new(io::ErrorKind::NotFound, "no address found"),
        })?;
    let local: SocketAddr = if server.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let socket = UdpSocket::bind(local).map_err(|e| Error::io("binding a UDP socket", e))?;
    socket.connect(server).map_err(|e| Error::io(format!("connecting to {server} over UDP"), e))?;
    Ok(socket)
}

/// Runs the session: `input` lines out as datagrams, datagrams in to
/// `output`, until the input ends (then for `linger` more) or the output is
/// closed.
pub fn run<R, W>(socket: UdpSocket, input: R, mut output: W, linger: Duration) -> Result<(), Error>
where
    R: BufRead + Send + 'static,
    W: Write,
{
    let sender = socket.try_clone().map_err(|e| Error::io("cloning the socket", e))?;
    let (done_tx, done_rx) = mpsc::channel::<Result<(), Error>>();
    thread::Builder::new()
        .name("to-server".into())
        .spawn(move || {
            let _ = done_tx.send(send_lines(input, &sender));
        })
        .map_err(|e| Error::io("starting a thread", e))?;
    let tick = Duration::from_millis(100);
    socket.set_read_timeout(Some(tick)).map_err(|e| Error::io("setting a read timeout", e))?;
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    let mut until: Option<Instant> = None;
    loop {
        if until.is_none() {
            match done_rx.try_recv() {
                Ok(Err(e)) => return Err(e),
                Ok(Ok(())) | Err(mpsc::TryRecvError::Disconnected) => until = Some(Instant::now() + linger),
                Err(mpsc::TryRecvError::Empty) => {}
            }
        }
        if until.is_some_and(|t| Instant::now() >= t) {
            return Ok(());
        }
        match socket.recv(&mut buf) {
            Ok(n) => {
                if let Some(cookie) = cookie_in(&buf[..n]) {
                    let answer = format!("{COOKIE_COMMAND} {cookie}");
                    match socket.send(answer.as_bytes()) {
                        Ok(_) => {}
                        Err(e) => eprintln!("switchboard-client: cannot send the cookie back: {e}"),
                    }
                }
                let mut shown = Vec::with_capacity(n + 1);
                let mut escaper = StreamEscaper::default();
                escaper.push(&buf[..n], &mut shown);
                escaper.finish(&mut shown);
                if shown.last() != Some(&b'\n') {
                    shown.push(b'\n');
                }
                match output.write_all(&shown).and_then(|()| output.flush()) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
                    Err(e) => return Err(Error::io("writing to stdout", e)),
                }
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // An ICMP "port unreachable" of an earlier datagram: nobody
            // listens there (yet); say so and keep going.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                eprintln!("switchboard-client: no UDP server answers at {}", peer(&socket));
            }
            Err(e) => return Err(Error::io("receiving from the server", e)),
        }
    }
}

fn peer(socket: &UdpSocket) -> String {
    socket.peer_addr().map_or_else(|_| "the server".to_owned(), |a| a.to_string())
}

/// Sends each input line (without its LF or CRLF) as one datagram.
fn send_lines(mut input: impl BufRead, socket: &UdpSocket) -> Result<(), Error> {
    let mut line = Vec::new();
    loop {
        line.clear();
        match input.read_until(b'\n', &mut line) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("reading stdin", e)),
        }
        if line.last() == Some(&b'\n') {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        }
        if line.len() > MAX_DATAGRAM {
            eprintln!("switchboard-client: a line of {} bytes is over the {MAX_DATAGRAM}-byte datagram limit; not sent", line.len());
            continue;
        }
        loop {
            match socket.send(&line) {
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The ICMP error of an earlier datagram surfaces here too.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
                Err(e) => return Err(Error::io("sending to the server", e)),
            }
        }
    }
}
