//! `switchboard-server`'s flags for running on the open internet and
//! behind load balancers: TLS, the PROXY protocol, shared ports and
//! inherited listeners. One block of flags, applied to a
//! [`ServerBuilder`].

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use switchboard::{tls_config_from_pem, ServerBuilder, TlsConfigError};

use crate::cli::parse_positive_duration;

/// The flags (flattened into the server's).
#[derive(Debug, Clone, clap::Args)]
pub struct EdgeArgs {
    /// Serve TLS 1.2/1.3 with this certificate chain (PEM, the server's first).
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Expect a PROXY protocol header (v1 or v2) first on every connection, as
    /// HAProxy's send-proxy or nginx's proxy_protocol sends it; the address it
    /// names is the client's in logs, stats and to the handler. A connection
    /// without a valid header is closed. Only for a port that only the load
    /// balancer can reach.
    #[arg(long)]
    pub proxy_protocol: bool,

    /// The time a new connection has for its PROXY header and TLS handshake.
    #[arg(long, value_name = "DURATION", value_parser = parse_positive_duration, default_value = "10s")]
    pub handshake_timeout: Duration,

    /// With --tls-cert: threads of the TLS handshake pool, which runs the
    /// costly first step of every handshake (the server's signature) at a
    /// lower priority than the event loops, so a handshake flood does not stall established
    /// connections (0: as many as --workers).
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=1024))]
    pub handshake_threads: u16,

    /// With --tls-cert: new TLS handshakes waiting for the handshake pool at
    /// most; past it a new connection's handshake is refused (the connection
    /// is closed, counted as tls_handshakes_refused, and each worker logs the
    /// number refused once a second).
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1 << 20))]
    pub handshake_backlog: u32,

    /// Bind with SO_REUSEPORT, so several server processes share --listen and
    /// the kernel spreads new connections over them; one that drains
    /// (SIGTERM) serves the connections it accepted to their end.
    #[arg(long)]
    pub reuse_port: bool,
}

/// A flag value or an inherited socket the server cannot start with.
#[derive(Debug)]
#[non_exhaustive]
pub enum EdgeError {
    /// The certificate or key.
    Tls(TlsConfigError),
    /// `LISTEN_FDS` names a descriptor that is no TCP or Unix stream socket.
    Inherited(std::io::Error),
}

impl fmt::Display for EdgeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EdgeError::Tls(e) => write!(f, "--tls-cert/--tls-key: {e}"),
            EdgeError::Inherited(e) => {
                write!(f, "LISTEN_FDS: the first descriptor handed down is unusable: {e}")
            }
        }
    }
}

impl std::error::Error for EdgeError {}

impl EdgeArgs {
    /// Applies the flags to `builder`; a certificate or key that cannot be
    /// used is an error (one line, naming the file).
    ///
    /// A listening socket handed down by systemd socket activation
    /// (`LISTEN_FDS`, with `LISTEN_PID` this process) is served instead of
    /// binding --listen. Call it before starting threads: it clears those
    /// variables.
    pub fn apply(&self, mut builder: ServerBuilder) -> Result<ServerBuilder, EdgeError> {
        let mut fds = listenfd::ListenFd::from_env();
        if fds.len() > 0 {
            // A TCP socket, or a Unix stream socket (`ListenStream=/path`).
            match fds.take_tcp_listener(0) {
                Ok(Some(l)) => {
                    log::info!("serving the listening socket handed down (LISTEN_FDS), not --listen");
                    builder = builder.listener(l);
                }
                Ok(None) => {}
                Err(tcp) => match fds.take_unix_listener(0) {
                    Ok(Some(l)) => {
                        log::info!("serving the Unix socket handed down (LISTEN_FDS), not --listen");
                        builder = builder.unix_listener(l);
                    }
                    Ok(None) => {}
                    Err(_) => return Err(EdgeError::Inherited(tcp)),
                },
            }
        }
        if self.reuse_port {
            builder = builder.reuse_port(true);
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            let config = tls_config_from_pem(cert, key).map_err(EdgeError::Tls)?;
            log::info!("serving TLS with {}", cert.display());
            builder = builder.tls(config);
        }
        if self.proxy_protocol {
            log::info!("expecting a PROXY protocol header on every connection");
        }
        Ok(builder
            .proxy_protocol(self.proxy_protocol)
            .handshake_timeout(self.handshake_timeout)
            .handshake_threads(self.handshake_threads.into())
            .handshake_backlog(self.handshake_backlog as usize))
    }
}
