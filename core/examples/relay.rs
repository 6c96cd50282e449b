//! A relay from a producer thread to a slow reader, with backpressure and
//! without polling: each connection gets a thread that sends it `--mib`
//! MiB (a byte pattern: byte `i` is `i % 251`) in 64 KiB messages, waiting
//! with [`ConnHandle::wait_below`] whenever 256 KiB are queued, then
//! closes it. A reader that stops reading stops the producer; nothing is
//! lost, the connection is never cut off as a slow consumer, and the
//! server's memory stays bounded by the mark, however much is relayed.
//!
//! Run it with `cargo run -p switchboard --example relay -- --listen
//! 127.0.0.1:7982 --mib 200` and read with `nc 127.0.0.1 7982 | wc -c`.
//! SIGTERM or Ctrl-C drains and prints the report.

use std::thread;
use std::time::Duration;

use switchboard::{Conn, ConnHandle, Flow, Framing, Handler, Server};

/// Bytes per message.
const CHUNK: usize = 64 << 10;
/// The producer waits while this much is queued.
const MARK: usize = 256 << 10;
/// How long a producer waits for a reader that reads nothing.
const PATIENCE: Duration = Duration::from_secs(60);
/// Connections at once (each has a producer thread).
const MAX_CONNECTIONS: usize = 64;

struct Relay {
    bytes: u64,
}

/// Sends `total` bytes of the pattern to `to`, never more than the mark
/// ahead of the reader.
fn produce(to: ConnHandle, total: u64) {
    let mut sent = 0u64;
    while sent < total {
        let len = (total - sent).min(CHUNK as u64) as usize;
        let chunk: Vec<u8> = (sent..sent + len as u64).map(|i| (i % 251) as u8).collect();
        if let Err(e) = to.wait_below(MARK, PATIENCE) {
            eprintln!("relay: connection {}: {e}; stopping after {sent} bytes", to.id());
            return;
        }
        if let Err(e) = to.send(chunk) {
            eprintln!("relay: connection {}: {e}; stopping after {sent} bytes", to.id());
            return;
        }
        sent += len as u64;
    }
    to.close();
}

impl Handler for Relay {
    type Session = ();
    fn framing(&self) -> Framing {
        Framing::lines(64)
    }
    fn open(&self, conn: &mut Conn<'_>) {
        let (to, total) = (conn.handle(), self.bytes);
        if let Err(e) = thread::Builder::new().name("relay".into()).spawn(move || produce(to, total)) {
            eprintln!("relay: cannot start a producer: {e}");
            conn.close();
        }
    }
    fn frame(&self, _: &mut (), _: &[u8], _: &mut Conn<'_>) -> Flow {
        // What the reader sends is ignored.
        Flow::Continue
    }
}

fn usage() -> ! {
    eprintln!("usage: relay [--listen ADDR] [--mib N (1 to 100000, default 200)]");
    std::process::exit(2);
}

fn main() {
    let mut listen = "127.0.0.1:7982".to_string();
    let mut mib = 200u64;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let Some(value) = args.next() else { usage() };
        match flag.as_str() {
            "--listen" => listen = value,
            "--mib" => match value.parse() {
                Ok(n @ 1..=100_000) => mib = n,
                _ => usage(),
            },
            _ => usage(),
        }
    }
    let builder = Server::builder().max_connections(MAX_CONNECTIONS).shutdown_on_signals();
    let server = match builder.start(listen.as_str(), Relay { bytes: mib << 20 }) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("relay: {e}");
            std::process::exit(1);
        }
    };
    println!("listening on {}", server.local_addr());
    println!("{}", server.wait());
}
