//! `tokio-blocking`: the baseline of the blocking-work rows, speaking the
//! protocol of the core's `blocking` example: every line `q` is answered
//! `RESULT q` after a blocking job (a sleep) of `--job-ms` milliseconds.
//! Written as the tokio user would: a task per connection reads lines, each
//! line's job goes to `spawn_blocking` (tokio's pool, up to 512 threads), and
//! the replies are written in request order with up to 16 jobs of a
//! connection in flight, as `try_buffered(16)` over a framed stream would
//! (here with a semaphore and a channel of join handles, to need no crate
//! beyond tokio).
//!
//! Usage: `tokio-blocking [--listen ADDR] [--workers N] [--job-ms MS]`;
//! prints `listening on ADDR` as its first line.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};

#[path = "../baseline.rs"]
mod baseline;

/// Jobs of one connection in flight at most (`try_buffered(16)`).
const IN_FLIGHT: usize = 16;
/// The longest request line.
const MAX_LINE: u64 = 4096;

fn main() -> ExitCode {
    const USAGE: &str = "usage: tokio-blocking [--listen ADDR] [--workers N] [--job-ms MS]\n  \
        --listen ADDR  address to listen on (default 127.0.0.1:0)\n  \
        --workers N    runtime worker threads, 1 to 1024 (default: tokio's, one per available core)\n  \
        --job-ms MS    each request's blocking job, 0 to 60000 ms (default 50)";
    let args = match baseline::parse("tokio-blocking", USAGE, &["--job-ms"]) {
        Ok(args) => args,
        Err(code) => return code,
    };
    let job = match args.own[0].as_deref().map(str::parse::<u64>) {
        None => Duration::from_millis(50),
        Some(Ok(ms)) if ms <= 60_000 => Duration::from_millis(ms),
        Some(_) => {
            eprintln!("tokio-blocking: --job-ms needs a number from 0 to 60000");
            return ExitCode::from(2);
        }
    };
    baseline::run("tokio-blocking", args.workers, serve(&args.listen, job))
}

async fn serve(listen: &str, job: Duration) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    baseline::announce(listener.local_addr()?)?;
    loop {
        let socket = baseline::accept("tokio-blocking", &listener).await;
        tokio::spawn(async move {
            let (read, mut write) = socket.into_split();
            let (tx, mut rx) = mpsc::unbounded_channel();
            let slots = Arc::new(Semaphore::new(IN_FLIGHT));
            // The writer: the replies in request order.
            let writer = tokio::spawn(async move {
                while let Some((permit, reply)) = rx.recv().await {
                    let Ok(reply): Result<Vec<u8>, _> = reply.await else { return };
                    if write.write_all(&reply).await.is_err() {
                        return;
                    }
                    drop(permit);
                }
            });
            let mut lines = BufReader::new(read);
            let mut line = Vec::new();
            loop {
                line.clear();
                match (&mut lines).take(MAX_LINE + 1).read_until(b'\n', &mut line).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) if line.last() != Some(&b'\n') => break,
                    Ok(_) => {}
                }
                let Ok(permit) = Arc::clone(&slots).acquire_owned().await else { break };
                let query = line[..line.len() - 1].to_vec();
                let reply = tokio::task::spawn_blocking(move || {
                    std::thread::sleep(job);
                    [b"RESULT ", &query[..], b"\n"].concat()
                });
                if tx.send((permit, reply)).is_err() {
                    break;
                }
            }
            drop(tx);
            let _ = writer.await;
        });
    }
}
