//! `tokio-tls-echo`: the TLS baseline of the benchmarks. The `tokio-echo`
//! server (a task per connection, TCP_NODELAY, a 4 KiB buffer) with
//! `tokio-rustls` in front: the same rustls and ring provider as
//! `switchboard-server --tls-cert`, so the comparison is of the servers,
//! not of the TLS stacks.
//!
//! Usage: `tokio-tls-echo --cert PEM --key PEM [--listen ADDR] [--workers N]`;
//! prints `listening on ADDR` as its first line.

use std::io::Write;
use std::process::ExitCode;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

fn main() -> ExitCode {
    const USAGE: &str = "usage: tokio-tls-echo --cert PEM --key PEM [--listen ADDR] [--workers N]";
    let (mut listen, mut cert, mut key, mut workers) = (String::from("127.0.0.1:0"), None, None, None);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--listen", Some(v)) => listen = v,
            ("--cert", Some(v)) => cert = Some(v),
            ("--key", Some(v)) => key = Some(v),
            ("--workers", Some(v)) => match v.parse::<usize>() {
                Ok(n) if (1..=1024).contains(&n) => workers = Some(n),
                _ => {
                    eprintln!("tokio-tls-echo: --workers needs a number from 1 to 1024, not '{v}'");
                    return ExitCode::from(2);
                }
            },
            _ => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let (Some(cert), Some(key)) = (cert, key) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let config = match switchboard::tls_config_from_pem(&cert, &key) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tokio-tls-echo: {e}");
            return ExitCode::from(2);
        }
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = workers {
        builder.worker_threads(n);
    }
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokio-tls-echo: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(serve(&listen, TlsAcceptor::from(config))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tokio-tls-echo: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(listen: &str, acceptor: TlsAcceptor) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {}", listener.local_addr()?)?;
        out.flush()?;
    }
    loop {
        let (socket, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("tokio-tls-echo: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(mut tls) = acceptor.accept(socket).await else { return };
            let mut buf = [0u8; 4096];
            loop {
                match tls.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tls.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = tls.shutdown().await;
        });
    }
}
