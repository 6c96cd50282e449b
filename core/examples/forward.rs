//! A TCP (or Unix socket) forwarder: every connection is relayed to a
//! backend over a link on its own worker; the default `Handler::link`
//! relays the backend's bytes, EOF and end back.
//!
//! `forward --listen ADDR --backend ADDR` (each `HOST:PORT` or
//! `unix:PATH`). SIGTERM drains (a relayed transfer finishes) and prints
//! the report and the counters; a link that fails is logged (`RUST_LOG`,
//! `info` by default).

use switchboard::{Addr, Conn, Flow, Handler, LinkOptions, Server};

struct Forward(Addr);

impl Handler for Forward {
    type Session = ();
    fn open(&self, conn: &mut Conn<'_>) {
        if conn.connect(&self.0, &LinkOptions::default()).is_err() {
            conn.close();
        }
    }
    fn frame(&self, _: &mut (), data: &[u8], conn: &mut Conn<'_>) -> Flow {
        match conn.link().map(|mut link| link.send(data)) {
            Some(Ok(())) => Flow::Continue,
            _ => Flow::Close,
        }
    }
    fn eof(&self, _: &mut (), conn: &mut Conn<'_>) {
        if let Some(mut link) = conn.link() {
            link.shutdown_write();
        }
    }
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (listen, backend) = match args.as_slice() {
        [l, listen, b, backend] if l == "--listen" && b == "--backend" => (listen, backend),
        _ => usage("usage: forward --listen ADDR --backend ADDR"),
    };
    let parse = |a: &str| Addr::parse(a).unwrap_or_else(|e| usage(&format!("forward: {e}")));
    let (listen, backend) = (parse(listen), parse(backend));
    let server = Server::builder().shutdown_on_signals().start_at(&listen, Forward(backend));
    let server = server.unwrap_or_else(|e| {
        eprintln!("forward: {e}");
        std::process::exit(1)
    });
    println!("listening on {}", server.addr());
    let stats = server.stats_handle();
    println!("{}", server.wait());
    println!("stats: {}", stats.snapshot());
}

fn usage(why: &str) -> ! {
    eprintln!("{why}");
    std::process::exit(2)
}
