//! `tokio-echo`: the baseline echo server of the benchmarks. A tokio
//! multi-thread runtime (tokio's default: one worker per available core,
//! unless `--workers N`), a task per connection, TCP_NODELAY and a 4 KiB
//! buffer: the idiomatic tokio echo server. With `--listen unix:PATH` the
//! same over a tokio `UnixListener` (the Unix echo rows' baseline).
//!
//! Usage: `tokio-echo [--listen ADDR|unix:PATH] [--workers N]` (default
//! 127.0.0.1:0 and tokio's default worker count); prints `listening on ADDR`
//! as its first line.

use std::process::ExitCode;

use tokio::net::{TcpListener, UnixListener};

#[path = "../baseline.rs"]
mod baseline;

fn main() -> ExitCode {
    const USAGE: &str = "usage: tokio-echo [--listen ADDR|unix:PATH] [--workers N]\n  \
        --listen ADDR  address to listen on (default 127.0.0.1:0); unix:PATH: a Unix\n                 \
        domain socket (a file left at PATH is replaced)\n  \
        --workers N    runtime worker threads, 1 to 1024 (default: tokio's, one per available core)";
    match baseline::parse("tokio-echo", USAGE, &[]) {
        Ok(args) => baseline::run("tokio-echo", args.workers, serve(&args.listen)),
        Err(code) => code,
    }
}

async fn serve(listen: &str) -> std::io::Result<()> {
    if let Some(path) = listen.strip_prefix("unix:") {
        // A file left by an earlier run that was killed.
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)?;
        baseline::announce(listen)?;
        loop {
            let mut socket = baseline::accept_unix("tokio-echo", &listener).await;
            tokio::spawn(async move { baseline::echo(&mut socket).await });
        }
    }
    let listener = TcpListener::bind(listen).await?;
    baseline::announce(listener.local_addr()?)?;
    loop {
        let mut socket = baseline::accept("tokio-echo", &listener).await;
        tokio::spawn(async move { baseline::echo(&mut socket).await });
    }
}
