//! The interactive mode: what is typed goes to the server, what the server
//! sends is printed the moment it arrives (no waiting for a newline, so
//! `upper` answers show up as they come), with control and bidi characters
//! and bytes that are not UTF-8 escaped ([`StreamEscaper`]): a chat line
//! cannot move the cursor, set the window title or reorder what follows.
//!
//! Two threads copy, one each way; the caller's thread waits for the first
//! to finish and decides:
//! - the server closes: done;
//! - the input ends: shut down our sending side (the server sees end of
//!   stream) and keep printing until the server closes, for at most the
//!   linger time;
//! - the output is closed (a broken pipe, e.g. `| head`): done, cleanly.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use super::terminal::StreamEscaper;
use super::{Error, Stream};

/// The copy buffer each way.
const CHUNK: usize = 16 * 1024;

/// How a copying thread finished.
#[derive(Debug)]
enum Event {
    /// The server closed its side.
    ServerClosed,
    /// Reading from the server failed (reset, ...).
    ServerFailed(io::Error),
    /// The output was closed by its reader.
    OutputClosed,
    /// Writing the output failed otherwise.
    OutputFailed(io::Error),
    /// The input ended.
    InputEnded,
    /// Reading the input failed.
    InputFailed(io::Error),
    /// Sending to the server failed.
    SendFailed(io::Error),
}

/// Runs the session on `stream` until one side is done (see the module
/// docs), copying `input` to the server and the server to `output`.
///
/// Returns `Ok` when the server closes, when `input` ends (after at most
/// `linger` for the server's last bytes) and when `output` is closed; an
/// error when a side fails. The input thread may still be blocked reading
/// when this returns (a terminal cannot be interrupted portably); the
/// process exiting ends it.
pub fn run<R, W>(stream: Stream, input: R, output: W, linger: Duration) -> Result<(), Error>
where
    R: Read + Send + 'static,
    W: Write + Send + 'static,
{
    let (tx, rx) = mpsc::channel();
    let reader = stream.try_clone().map_err(|e| Error::io("cloning the socket", e))?;
    let writer = stream.try_clone().map_err(|e| Error::io("cloning the socket", e))?;

    let tx_down = tx.clone();
    thread::Builder::new()
        .name("from-server".into())
        .spawn(move || {
            let _ = tx_down.send(server_to_output(reader, output));
        })
        .map_err(|e| Error::io("starting a thread", e))?;
    thread::Builder::new()
        .name("to-server".into())
        .spawn(move || {
            let _ = tx.send(input_to_server(input, writer));
        })
        .map_err(|e| Error::io("starting a thread", e))?;

    let result = decide(&stream, &rx, linger);
    // Ends the thread reading from the server, if still running.
    let _ = stream.shutdown(Shutdown::Both);
    result
}

fn decide(stream: &Stream, rx: &mpsc::Receiver<Event>, linger: Duration) -> Result<(), Error> {
    let Ok(first) = rx.recv() else {
        return Ok(());
    };
    match first {
        Event::ServerClosed | Event::OutputClosed => Ok(()),
        Event::ServerFailed(e) => Err(Error::io("connection lost", e)),
        Event::OutputFailed(e) => Err(Error::io("writing to stdout", e)),
        Event::InputFailed(e) => Err(Error::io("reading stdin", e)),
        Event::InputEnded => {
            if let Err(e) = stream.shutdown(Shutdown::Write) {
                if e.kind() != io::ErrorKind::NotConnected {
                    return Err(Error::io("closing the sending side", e));
                }
            }
            // What the server still sends is printed, for a bounded time.
            match wait_output(rx, linger) {
                Some(Event::ServerFailed(e)) => Err(Error::io("connection lost", e)),
                Some(Event::OutputFailed(e)) => Err(Error::io("writing to stdout", e)),
                _ => Ok(()),
            }
        }
        Event::SendFailed(e) => {
            // The server may have closed on purpose (chat's `/quit`): if its
            // side ends cleanly too, so do we.
            match wait_output(rx, linger) {
                Some(Event::ServerClosed | Event::OutputClosed) => Ok(()),
                _ => Err(Error::io("sending to the server", e)),
            }
        }
    }
}

/// Waits up to `linger` for the server-to-output thread to finish.
fn wait_output(rx: &mpsc::Receiver<Event>, linger: Duration) -> Option<Event> {
    let deadline = Instant::now() + linger;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        match rx.recv_timeout(left) {
            Ok(
                ev @ (Event::ServerClosed
                | Event::ServerFailed(_)
                | Event::OutputClosed
                | Event::OutputFailed(_)),
            ) => return Some(ev),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}

fn server_to_output(mut from: Stream, mut out: impl Write) -> Event {
    let mut buf = vec![0u8; CHUNK];
    let mut escaper = StreamEscaper::default();
    let mut shown = Vec::with_capacity(CHUNK);
    loop {
        shown.clear();
        let end = match from.read(&mut buf) {
            Ok(0) => {
                escaper.finish(&mut shown);
                Some(Event::ServerClosed)
            }
            Ok(n) => {
                escaper.push(&buf[..n], &mut shown);
                None
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                escaper.finish(&mut shown);
                Some(Event::ServerFailed(e))
            }
        };
        let written = out.write_all(&shown).and_then(|()| out.flush());
        if let (Some(end), Ok(())) = (end, &written) {
            return end;
        }
        if let Err(e) = written {
            return if e.kind() == io::ErrorKind::BrokenPipe {
                Event::OutputClosed
            } else {
                Event::OutputFailed(e)
            };
        }
    }
}

fn input_to_server(mut input: impl Read, mut to: Stream) -> Event {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return Event::InputEnded,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Event::InputFailed(e),
        };
        if let Err(e) = to.write_all(&buf[..n]) {
            return Event::SendFailed(e);
        }
    }
}
