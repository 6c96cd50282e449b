//! `tokio-udp-echo`: the baseline UDP echo server of the benchmarks. A tokio
//! multi-thread runtime (tokio's default worker count, unless `--workers N`)
//! and one task on one `tokio::net::UdpSocket`: `recv_from`, then `send_to`
//! back, the idiomatic tokio UDP echo.
//!
//! Usage: `tokio-udp-echo [--listen ADDR] [--workers N]` (default
//! 127.0.0.1:0); prints `listening on ADDR` as its first line.

use std::process::ExitCode;

use tokio::net::UdpSocket;

#[path = "../baseline.rs"]
mod baseline;

fn main() -> ExitCode {
    const USAGE: &str = "usage: tokio-udp-echo [--listen ADDR] [--workers N]\n  \
        --listen ADDR  UDP address to bind (default 127.0.0.1:0)\n  \
        --workers N    runtime worker threads, 1 to 1024 (default: tokio's)";
    match baseline::parse("tokio-udp-echo", USAGE, &[]) {
        Ok(args) => baseline::run("tokio-udp-echo", args.workers, serve(&args.listen)),
        Err(code) => code,
    }
}

async fn serve(listen: &str) -> std::io::Result<()> {
    let socket = UdpSocket::bind(listen).await?;
    baseline::announce(socket.local_addr()?)?;
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
