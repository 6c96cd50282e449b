//! `tokio-udp-echo`: the baseline UDP echo server of the benchmarks. A tokio
//! multi-thread runtime (tokio's default worker count, unless `--workers N`)
//! and one task on one `tokio::net::UdpSocket`: `recv_from`, then `send_to`
//! back, the idiomatic tokio UDP echo.
//!
//! Usage: `tokio-udp-echo [--listen ADDR] [--workers N]` (default
//! 127.0.0.1:0); prints `listening on ADDR` as its first line.

use std::io::Write;
use std::process::ExitCode;

use tokio::net::UdpSocket;

fn main() -> ExitCode {
    const USAGE: &str = "usage: tokio-udp-echo [--listen ADDR] [--workers N]\n  \
        --listen ADDR  UDP address to bind (default 127.0.0.1:0)\n  \
        --workers N    runtime worker threads, 1 to 1024 (default: tokio's)";
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
                    eprintln!("tokio-udp-echo: --workers needs a number from 1 to 1024, not '{v}'");
                    return ExitCode::from(2);
                }
            },
            _ => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = workers {
        builder.worker_threads(n);
    }
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokio-udp-echo: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(serve(&listen)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tokio-udp-echo: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(listen: &str) -> std::io::Result<()> {
    let socket = UdpSocket::bind(listen).await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {}", socket.local_addr()?)?;
        out.flush()?;
    }
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, from) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            // An ICMP error of an earlier send: the next datagram is fine.
            Err(_) => continue,
        };
        let _ = socket.send_to(&buf[..n], from).await;
    }
}
