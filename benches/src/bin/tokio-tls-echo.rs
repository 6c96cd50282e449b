//! `tokio-tls-echo`: the TLS baseline of the benchmarks. The `tokio-echo`
//! server (a task per connection, TCP_NODELAY, a 4 KiB buffer) with
//! `tokio-rustls` in front: the same rustls and ring provider as
//! `switchboard-server --tls-cert`, so the comparison is of the servers,
//! not of the TLS stacks.
//!
//! Usage: `tokio-tls-echo --cert PEM --key PEM [--listen ADDR] [--workers N]`;
//! prints `listening on ADDR` as its first line.

use std::process::ExitCode;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

#[path = "../baseline.rs"]
mod baseline;

fn main() -> ExitCode {
    const USAGE: &str = "usage: tokio-tls-echo --cert PEM --key PEM [--listen ADDR] [--workers N]\n  \
        --cert PEM     the certificate chain, the server's first\n  \
        --key PEM      its private key\n  \
        --listen ADDR  address to listen on (default 127.0.0.1:0)\n  \
        --workers N    runtime worker threads, 1 to 1024 (default: tokio's, one per available core)";
    let args = match baseline::parse("tokio-tls-echo", USAGE, &["--cert", "--key"]) {
        Ok(args) => args,
        Err(code) => return code,
    };
    let [Some(cert), Some(key)] = &args.own[..] else {
        eprintln!("tokio-tls-echo: --cert and --key are required\n{USAGE}");
        return ExitCode::from(2);
    };
    let config = match switchboard::tls_config_from_pem(cert, key) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tokio-tls-echo: {e}");
            return ExitCode::from(2);
        }
    };
    baseline::run("tokio-tls-echo", args.workers, serve(&args.listen, TlsAcceptor::from(config)))
}

async fn serve(listen: &str, acceptor: TlsAcceptor) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    baseline::announce(listener.local_addr()?)?;
    loop {
        let socket = baseline::accept("tokio-tls-echo", &listener).await;
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(mut tls) = acceptor.accept(socket).await else { return };
            if baseline::echo(&mut tls).await.is_ok() {
                let _ = tls.shutdown().await;
            }
        });
    }
}
