//! A length-prefixed RPC server: each request is a frame (a 4-byte
//! big-endian length, then the body `method argument`), each reply a frame
//! `ok result` or `err message`.
//!
//! ```text
//! echo TEXT          -> ok TEXT
//! upper TEXT         -> ok TEXT in upper case
//! sum N N ...        -> ok the sum (64-bit, checked)
//! ```
//!
//! Run it with `cargo run -p switchboard --example rpc -- --listen 127.0.0.1:7981`.
//! SIGTERM or Ctrl-C drains and prints the report.
//!
//! What it shows: framing both ways ([`Conn::send_frame`] adds the prefix
//! the framing reads), and a frame error answered by what the prefix
//! declared: a request a little over the maximum is skipped with an error
//! reply, a length no client would send closes the connection at once
//! rather than read gigabytes to skip them.

use switchboard::{Conn, Flow, FrameError, Framing, Handler, Prefix, Server};

/// The largest request body.
const MAX_REQUEST: usize = 64 * 1024;
/// Declared lengths past this many times the maximum close the connection.
const SKIP_AT_MOST: u64 = 16;

struct Rpc;

fn call(body: &[u8]) -> String {
    let Ok(text) = std::str::from_utf8(body) else { return "err the request is not UTF-8".into() };
    let (method, arg) = text.split_once(' ').unwrap_or((text, ""));
    match method {
        "echo" => format!("ok {arg}"),
        "upper" => format!("ok {}", arg.to_uppercase()),
        "sum" => {
            let sum = arg.split_whitespace().try_fold(0i64, |sum, n| sum.checked_add(n.parse().ok()?));
            match sum {
                Some(sum) => format!("ok {sum}"),
                None => "err sum: integers that add up within 64 bits".into(),
            }
        }
        _ => format!("err unknown method {method:?}"),
    }
}

impl Handler for Rpc {
    type Session = ();
    fn framing(&self) -> Framing {
        Framing::length_prefixed(Prefix::U32Be, MAX_REQUEST)
    }
    fn open(&self, _conn: &mut Conn<'_>) {}
    fn frame(&self, _: &mut (), body: &[u8], conn: &mut Conn<'_>) -> Flow {
        let reply = call(body);
        if let Err(e) = conn.send_frame(reply.as_bytes()) {
            // `upper` may grow a text past the maximum.
            let _ = conn.send_frame(format!("err the reply cannot be sent: {e}").as_bytes());
        }
        Flow::Continue
    }
    fn frame_error(&self, _: &mut (), error: FrameError, conn: &mut Conn<'_>) -> Flow {
        match error {
            FrameError::TooLong { len: Some(len), max } if len <= SKIP_AT_MOST * max as u64 => {
                let _ = conn
                    .send_frame(format!("err a {len}-byte request, over the {max}-byte maximum").as_bytes());
                Flow::Continue
            }
            _ => {
                eprintln!("rpc: {}: {error}; closing", conn.peer_addr());
                Flow::Close
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let listen = match args.as_slice() {
        [] => "127.0.0.1:7981",
        [flag, addr] if flag == "--listen" => addr.as_str(),
        _ => {
            eprintln!("usage: rpc [--listen ADDR]");
            std::process::exit(2);
        }
    };
    // SIGINT and SIGTERM: the first drains, the second closes everything.
    let server = match Server::builder().shutdown_on_signals().start(listen, Rpc) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("rpc: {e}");
            std::process::exit(1);
        }
    };
    println!("listening on {}", server.local_addr());
    println!("{}", server.wait());
}
