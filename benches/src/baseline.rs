//! What the tokio baselines share: their command line (`--listen ADDR`,
//! `--workers N` and any options of their own), the runtime (tokio's
//! multi-thread default, or N workers), the descriptor limit raised to the
//! hard limit as `switchboard-server` does, and the `listening on ADDR`
//! line the runner waits for.

use std::fmt::Display;
use std::future::Future;
use std::io::{self, Write};
use std::process::ExitCode;

/// A baseline's command line.
pub(crate) struct Args {
    /// `--listen ADDR` (default `127.0.0.1:0`).
    pub(crate) listen: String,
    /// `--workers N`: tokio's worker threads (default: tokio's, one per core).
    pub(crate) workers: Option<usize>,
    /// The values of the baseline's own options, in the order `own` named them.
    pub(crate) own: Vec<Option<String>>,
}

/// Parses the command line of `name`. `own` lists options of its own that
/// take a value (`--cert`); `usage` is printed for `--help` and, on
/// standard error, for anything else it does not know. `Err` is the exit
/// code to end with.
pub(crate) fn parse(name: &str, usage: &str, own: &[&str]) -> Result<Args, ExitCode> {
    let mut parsed = Args { listen: String::from("127.0.0.1:0"), workers: None, own: vec![None; own.len()] };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "-h" || a == "--help" {
            println!("{usage}");
            return Err(ExitCode::SUCCESS);
        }
        let value = args.next();
        match (a.as_str(), value) {
            ("--listen", Some(v)) => parsed.listen = v,
            ("--workers", Some(v)) => match v.parse::<usize>() {
                Ok(n) if (1..=1024).contains(&n) => parsed.workers = Some(n),
                _ => {
                    eprintln!("{name}: --workers needs a number from 1 to 1024, not '{v}'");
                    return Err(ExitCode::from(2));
                }
            },
            (flag, Some(v)) if own.contains(&flag) => {
                let i = own.iter().position(|o| *o == flag).unwrap_or_default();
                parsed.own[i] = Some(v);
            }
            _ => {
                eprintln!("{usage}");
                return Err(ExitCode::from(2));
            }
        }
    }
    Ok(parsed)
}

/// Runs `serve` on a tokio runtime with `workers` threads (tokio's default
/// when `None`) after raising the descriptor limit; an error ends the
/// process with a message naming `name`.
pub(crate) fn run<F>(name: &str, workers: Option<usize>, serve: F) -> ExitCode
where
    F: Future<Output = io::Result<()>>,
{
    raise_fd_limit();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = workers {
        builder.worker_threads(n);
    }
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(serve) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints `listening on ADDR`, the line the benchmark runner waits for.
pub(crate) fn announce(addr: impl Display) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "listening on {addr}")?;
    out.flush()
}

/// Raises the soft descriptor limit to the hard one, as
/// `switchboard-server` does, so 10,000 connections fit.
fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        let _ = setrlimit(Resource::Nofile, limit);
    }
}

/// The next connection of `listener`, with TCP_NODELAY set (as every
/// baseline wants). Out of descriptors and the like: says so, naming
/// `name`, and backs off 10 ms instead of spinning.
#[allow(dead_code)] // the UDP baseline includes this file and has no listener
pub(crate) async fn accept(name: &str, listener: &tokio::net::TcpListener) -> tokio::net::TcpStream {
    let socket = accept_with(name, || listener.accept()).await;
    let _ = socket.set_nodelay(true);
    socket
}

/// The next connection of a Unix socket `listener`, as [`accept`].
#[allow(dead_code)] // only tokio-echo serves a Unix socket
pub(crate) async fn accept_unix(name: &str, listener: &tokio::net::UnixListener) -> tokio::net::UnixStream {
    accept_with(name, || listener.accept()).await
}

/// Echoes what `socket` sends (through a 4 KiB buffer) until it ends or a
/// read fails; `Err` when a write failed.
#[allow(dead_code)] // the echo baselines' alone
pub(crate) async fn echo(
    socket: &mut (impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin),
) -> io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = [0u8; 4096];
    loop {
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return Ok(()),
            Ok(n) => socket.write_all(&buf[..n]).await?,
        }
    }
}

/// Calls `accept` until it gives a connection, backing off 10 ms after an
/// error (said on stderr, naming `name`).
async fn accept_with<S, P, A, F>(name: &str, mut accept: F) -> S
where
    F: FnMut() -> A,
    A: Future<Output = io::Result<(S, P)>>,
{
    loop {
        match accept().await {
            Ok((socket, _)) => return socket,
            Err(e) => {
                eprintln!("{name}: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}
