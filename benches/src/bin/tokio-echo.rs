//! `tokio-echo`: the baseline echo server of the benchmarks. A tokio
//! multi-thread runtime (tokio's default: one worker per available core,
//! unless `--workers N`), a task per connection, TCP_NODELAY and a 4 KiB
//! buffer: the idiomatic tokio echo server.
//!
//! Usage: `tokio-echo [--listen ADDR] [--workers N]` (default 127.0.0.1:0 and
//! tokio's default worker count); prints `listening on ADDR` as its first
//! line.

use std::process::ExitCode;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[path = "../baseline.rs"]
mod baseline;

fn main() -> ExitCode {
    const USAGE: &str = "usage: tokio-echo [--listen ADDR] [--workers N]\n  \
        --listen ADDR  address to listen on (default 127.0.0.1:0)\n  \
        --workers N    runtime worker threads, 1 to 1024 (default: tokio's, one per available core)";
    match baseline::parse("tokio-echo", USAGE, &[]) {
        Ok(args) => baseline::run("tokio-echo", args.workers, serve(&args.listen)),
        Err(code) => code,
    }
}

async fn serve(listen: &str) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    baseline::announce(listener.local_addr()?)?;
    loop {
        let mut socket = baseline::accept("tokio-echo", &listener).await;
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            loop {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if socket.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
}
