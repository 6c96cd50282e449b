//! A custom handler in a dozen lines: every line comes back reversed.
//!
//! Run it with `cargo run -p switchboard --example reverse` (or with
//! `-- --listen ADDR`), then `switchboard-client 127.0.0.1:7979` and type.
//! Ctrl-C or SIGTERM drains and prints the report; a second one closes
//! everything now.

use switchboard::{Conn, Flow, Framing, Handler, Server};

struct Reverse;

impl Handler for Reverse {
    type Session = ();
    fn framing(&self) -> Framing {
        Framing::lines(1024)
    }
    fn open(&self, _conn: &mut Conn<'_>) {}
    fn frame(&self, _: &mut (), line: &[u8], conn: &mut Conn<'_>) -> Flow {
        let mut reply: String = String::from_utf8_lossy(line).chars().rev().collect();
        reply.push('\n');
        conn.send(&reply);
        Flow::Continue
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let listen = match args.as_slice() {
        [] => "127.0.0.1:7979",
        [flag, addr] if flag == "--listen" => addr.as_str(),
        _ => {
            eprintln!("usage: reverse [--listen ADDR]");
            std::process::exit(2);
        }
    };
    // SIGINT and SIGTERM: the first drains, the second closes everything.
    let server = match Server::builder().shutdown_on_signals().start(listen, Reverse) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("reverse: {e}");
            std::process::exit(1);
        }
    };
    println!("listening on {}", server.local_addr());
    println!("{}", server.wait());
}
