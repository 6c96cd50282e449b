//! A custom handler in a dozen lines: every line comes back reversed.
//!
//! Run it with `cargo run -p switchboard --example reverse`, then
//! `switchboard-client 127.0.0.1:7979` and type; Ctrl-C drains and exits.

use switchboard::{Conn, Flow, Framing, Handler, Phase, Server};

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
        conn.send(reply.as_bytes());
        Flow::Continue
    }
}

fn main() {
    let server = match Server::builder().start("127.0.0.1:7979", Reverse) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("reverse: {e}");
            std::process::exit(1);
        }
    };
    println!("listening on {}", server.local_addr());
    let shutdown = server.shutdown_handle();
    // The first Ctrl-C drains, a second one closes everything now.
    let on_signal = move || match shutdown.phase() {
        Phase::Running => shutdown.drain(),
        _ => shutdown.force(),
    };
    if let Err(e) = ctrlc::set_handler(on_signal) {
        eprintln!("reverse: cannot install the Ctrl-C handler: {e}");
    }
    println!("{}", server.wait());
}
