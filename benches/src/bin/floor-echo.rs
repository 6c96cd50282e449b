//! `floor-echo`: the least a server can do per echoed message, as a yard
//! stick for the benchmarks' CPU figures. One thread, one `mio` poll,
//! edge-triggered; a readable connection is read into one 4 KiB buffer and
//! written straight back, a short read taken as drained (as switchboard and
//! tokio do). No framing, no timers, no limits, no shutdown: not a server
//! to run, only the system calls every echo server must make (one `recv`
//! and one `send` per message, an `epoll_wait` per batch) and nothing else.
//!
//! Usage: `floor-echo [--listen ADDR]` (default 127.0.0.1:0); prints
//! `listening on ADDR` as its first line.

use std::io::{self, Read, Write};
use std::process::ExitCode;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

const LISTENER: Token = Token(usize::MAX);

/// A connection and the bytes it could not take yet.
struct Peer {
    sock: TcpStream,
    pending: Vec<u8>,
}

#[path = "../floor_main.rs"]
mod floor_main;

fn main() -> ExitCode {
    floor_main::run("floor-echo", serve)
}

fn serve(listen: &str) -> io::Result<()> {
    let addr =
        listen.parse().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{listen}: {e}")))?;
    let mut listener = TcpListener::bind(addr)?;
    let mut poll = Poll::new()?;
    poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
    println!("listening on {}", listener.local_addr()?);
    io::stdout().flush()?;
    // Connections by token; a closed one's slot is reused.
    let mut peers: Vec<Option<Peer>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut events = Events::with_capacity(1024);
    let mut buf = [0u8; 4096];
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for ev in events.iter() {
            if ev.token() == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((mut sock, _)) => {
                            sock.set_nodelay(true)?;
                            let key = free.pop().unwrap_or_else(|| {
                                peers.push(None);
                                peers.len() - 1
                            });
                            poll.registry().register(
                                &mut sock,
                                Token(key),
                                Interest::READABLE | Interest::WRITABLE,
                            )?;
                            peers[key] = Some(Peer { sock, pending: Vec::new() });
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                }
                continue;
            }
            let key = ev.token().0;
            let Some(Some(peer)) = peers.get_mut(key) else { continue };
            // Data and the FIN can come in one edge: then a short read is not
            // the end, read on to EOF (as switchboard does).
            let to_eof = ev.is_read_closed() || ev.is_error();
            if serve_peer(peer, &mut buf, to_eof).is_err() {
                if let Some(mut gone) = peers[key].take() {
                    let _ = poll.registry().deregister(&mut gone.sock);
                }
                free.push(key);
            }
        }
    }
}

/// Writes what waits, then echoes what came (up to EOF when `to_eof`); an
/// error or EOF closes.
fn serve_peer(peer: &mut Peer, buf: &mut [u8], to_eof: bool) -> io::Result<()> {
    flush(peer)?;
    loop {
        let n = match peer.sock.read(buf) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        peer.pending.extend_from_slice(&buf[..n]);
        flush(peer)?;
        if n < buf.len() && !to_eof {
            return Ok(());
        }
    }
}

fn flush(peer: &mut Peer) -> io::Result<()> {
    while !peer.pending.is_empty() {
        match peer.sock.write(&peer.pending) {
            Ok(n) => {
                peer.pending.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
