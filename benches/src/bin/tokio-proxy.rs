//! `tokio-proxy`: the baseline TCP relay of the benchmarks. Every accepted
//! connection gets a task that connects to the next backend (round robin)
//! and relays both ways with `tokio::io::copy_bidirectional`, half-close
//! passed on: the idiomatic tokio proxy (21 lines of logic).
//!
//! Usage: `tokio-proxy --backend ADDR[,ADDR...] [--listen ADDR] [--workers N]`;
//! prints `listening on ADDR` as its first line.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};

#[path = "../baseline.rs"]
mod baseline;

fn main() -> ExitCode {
    const USAGE: &str = "usage: tokio-proxy --backend ADDR[,ADDR...] [--listen ADDR] [--workers N]\n  \
        --backend ADDRS  the backends, tried round robin (required)\n  \
        --listen ADDR    address to listen on (default 127.0.0.1:0)\n  \
        --workers N      runtime worker threads, 1 to 1024 (default: tokio's, one per available core)";
    let args = match baseline::parse("tokio-proxy", USAGE, &["--backend"]) {
        Ok(args) => args,
        Err(code) => return code,
    };
    let Some(list) = args.own[0].as_deref() else {
        eprintln!("tokio-proxy: --backend is required\n{USAGE}");
        return ExitCode::from(2);
    };
    let mut backends = Vec::new();
    for b in list.split(',') {
        match b.parse::<SocketAddr>() {
            Ok(a) => backends.push(a),
            Err(_) => {
                eprintln!("tokio-proxy: --backend needs IP:PORT addresses, not '{b}'");
                return ExitCode::from(2);
            }
        }
    }
    baseline::run("tokio-proxy", args.workers, serve(args.listen, backends))
}

async fn serve(listen: String, backends: Vec<SocketAddr>) -> std::io::Result<()> {
    let listener = TcpListener::bind(&listen).await?;
    baseline::announce(listener.local_addr()?)?;
    let backends = Arc::new(backends);
    let next = Arc::new(AtomicUsize::new(0));
    loop {
        let mut client = baseline::accept("tokio-proxy", &listener).await;
        let backend = backends[next.fetch_add(1, Ordering::Relaxed) % backends.len()];
        tokio::spawn(async move {
            let mut upstream = match TcpStream::connect(backend).await {
                Ok(s) => s,
                Err(e) => return eprintln!("tokio-proxy: connect {backend}: {e}"),
            };
            let _ = upstream.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        });
    }
}
