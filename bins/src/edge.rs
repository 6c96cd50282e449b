//! `switchboard-server`'s flags for running on the open internet and
//! behind load balancers: TLS, the PROXY protocol, shared ports and
//! inherited listeners. One block of flags, applied to a
//! [`ServerBuilder`].

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use switchboard::{tls_config_from_pem, ServerBuilder, TlsConfigError};

use crate::cli::parse_duration;

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
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "10s")]
    pub handshake_timeout: Duration,
}

/// A flag value the server cannot start with.
#[derive(Debug)]
pub struct EdgeError(TlsConfigError);

impl fmt::Display for EdgeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "--tls-cert/--tls-key: {}", self.0)
    }
}

impl std::error::Error for EdgeError {}

impl EdgeArgs {
    /// Applies the flags to `builder`; a certificate or key that cannot be
    /// used is an error (one line, naming the file).
    pub fn apply(&self, mut builder: ServerBuilder) -> Result<ServerBuilder, EdgeError> {
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            let config = tls_config_from_pem(cert, key).map_err(EdgeError)?;
            log::info!("serving TLS with {}", cert.display());
            builder = builder.tls(config);
        }
        if self.proxy_protocol {
            log::info!("expecting a PROXY protocol header on every connection");
        }
        Ok(builder.proxy_protocol(self.proxy_protocol).handshake_timeout(self.handshake_timeout))
    }
}
