//! `tokio-echo`: the baseline echo server of the benchmarks. A tokio
//! multi-thread runtime (tokio's default: one worker per available core,
//! unless `--workers N`), a task per connection, TCP_NODELAY and a 4 KiB
//! buffer: the idiomatic tokio echo server.
//!
//! Usage: `tokio-echo [--listen ADDR] [--workers N]` (default 127.0.0.1:0 and
//! tokio's default worker count); prints `listening on ADDR` as its first
//! line.

use std::io::Write;
use std::process::ExitCode;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn main() -> ExitCode {
    const USAGE: &str = "usage: tokio-echo [--listen ADDR] [--workers N]\n  \
        --listen ADDR  address to listen on (default 127.0.0.1:0)\n  \
        --workers N    runtime worker threads, 1 to 1024 (default: tokio's, one per available core)";
    let mut listen = String::from("127.0.0.1:0");
    let mut workers: Option<usize> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "-h" || a == "--help" {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        match (a.as_str(), args.next()) {
            ("--listen", Some(v)) => listen = v,
            ("--workers", Some(v)) => match v.parse::<usize>() {
                Ok(n) if (1..=1024).contains(&n) => workers = Some(n),
                _ => {
                    eprintln!("tokio-echo: --workers needs a number from 1 to 1024, not '{v}'");
                    return ExitCode::from(2);
                }
            },
            _ => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    raise_fd_limit();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = workers {
        builder.worker_threads(n);
    }
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokio-echo: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(serve(&listen)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tokio-echo: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(listen: &str) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {}", listener.local_addr()?)?;
        out.flush()?;
    }
    loop {
        let (mut socket, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                eprintln!("tokio-echo: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
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

fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        let _ = setrlimit(Resource::Nofile, limit);
    }
}
