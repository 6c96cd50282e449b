//! The client side of TLS for `switchboard-client --tls`: a blocking
//! rustls connection, handed to the rest of the client as a plain loopback
//! socket. A pair of threads carries the bytes between that socket and the
//! TLS connection, so the interactive client, `get` and `list` work over
//! TLS unchanged (read timeouts and half-closes included: the end of the
//! client's sending side becomes a TLS `close_notify`).

use std::fs;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};

use crate::client::Stream;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

/// Where the system's CA bundle is looked for when no `--ca` is given
/// (after `SSL_CERT_FILE`): Debian/Ubuntu, Fedora/RHEL, Alpine, openSUSE.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
    "/etc/ssl/ca-bundle.pem",
];

/// Bytes moved per read either way.
const CHUNK: usize = 16 << 10;

/// The TLS flags of the client and the load generator.
#[derive(Debug, Clone, clap::Args)]
pub struct TlsArgs {
    /// Speak TLS to the server (it runs with --tls-cert and --tls-key).
    #[arg(long, global = true)]
    pub tls: bool,

    /// With --tls: the CA certificate(s) to trust, PEM [default: the system's bundle].
    #[arg(long, global = true, value_name = "PEM", requires = "tls")]
    pub ca: Option<std::path::PathBuf>,
}

impl TlsArgs {
    /// Connects to `addr` (see [`client::connect`](crate::client::connect)),
    /// over TLS when asked: the socket returned then carries the plaintext.
    pub fn connect(&self, addr: &str, timeout: Duration) -> Result<Stream, String> {
        let sock = crate::client::connect(addr, timeout).map_err(|e| e.to_string())?;
        if !self.tls {
            return Ok(sock);
        }
        let config = client_config(self.ca.as_deref())?;
        let name = server_name(addr)?;
        wrap(sock, config, name, timeout).map_err(|e| format!("{addr}: {e}"))
    }

    /// What `switchboard-load` needs to speak TLS to `target`, if asked.
    pub fn load_tls(&self, target: &str) -> Result<Option<crate::load::LoadTls>, String> {
        if !self.tls {
            return Ok(None);
        }
        Ok(Some(crate::load::LoadTls {
            config: client_config(self.ca.as_deref())?,
            name: server_name(target)?,
        }))
    }
}

/// A TLS client configuration trusting the CA certificates in `ca` (PEM),
/// or the system's bundle without it. Errors are one line naming the file.
pub fn client_config(ca: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    let path = match ca {
        Some(p) => p.to_path_buf(),
        None => {
            let env = std::env::var_os("SSL_CERT_FILE").map(std::path::PathBuf::from);
            env.into_iter()
                .chain(SYSTEM_BUNDLES.iter().map(Into::into))
                .find(|p| p.is_file())
                .ok_or("no system CA bundle found; give the server's CA with --ca PEM")?
        }
    };
    let (_, roots) = read_ca(&path)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The CA certificates in the PEM file at `path`: its text and the
/// certificates read from it, at least one. Errors are one line naming
/// the file.
pub fn read_ca(path: &Path) -> Result<(Vec<u8>, RootCertStore), String> {
    let pem = fs::read(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("{}: not a PEM certificate file: {e}", path.display()))?;
        roots.add(cert).map_err(|e| format!("{}: a certificate is unusable: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: no CERTIFICATE in the file", path.display()));
    }
    Ok((pem, roots))
}

/// The name the server's certificate must hold: the host part of
/// `HOST:PORT` (an IP address is checked against the IP names), and
/// `localhost` for a Unix socket (`unix:PATH`), which is on this machine.
pub fn server_name(addr: &str) -> Result<ServerName<'static>, String> {
    if switchboard::unix_path(addr).is_some() {
        return Ok(ServerName::try_from("localhost").expect("a valid DNS name"));
    }
    let host = match addr.rsplit_once(':') {
        Some((host, _)) => host.trim_start_matches('[').trim_end_matches(']'),
        None => addr,
    };
    ServerName::try_from(host.to_owned()).map_err(|e| format!("'{host}' is no server name for TLS: {e}"))
}

/// Completes a TLS handshake over `sock` (within `timeout`, zero: none) and
/// returns a loopback socket that carries the plaintext: what is written to
/// it is encrypted to the server, what the server sends is read from it.
pub fn wrap(
    sock: Stream,
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
    timeout: Duration,
) -> io::Result<Stream> {
    let mut conn = ClientConnection::new(config, name).map_err(io::Error::other)?;
    // Each write is at most a chunk and its records are sent at once.
    conn.set_buffer_limit(None);
    let limit = (!timeout.is_zero()).then_some(timeout);
    sock.set_read_timeout(limit)?;
    sock.set_write_timeout(limit)?;
    let mut s = &sock;
    while conn.is_handshaking() {
        conn.complete_io(&mut s).map_err(|e| handshake_error(e, timeout))?;
    }
    sock.set_read_timeout(None)?;
    sock.set_write_timeout(None)?;
    let (mine, theirs) = loopback_pair()?;
    let shared = Arc::new(Shared { conn: Mutex::new(conn), out: Mutex::new(sock.try_clone()?) });
    let (up_shared, up_local) = (Arc::clone(&shared), theirs.try_clone()?);
    let up_sock = sock;
    thread::Builder::new().name("tls-from-server".into()).spawn(move || {
        if let Err(e) = from_server(&up_shared, up_sock, &up_local) {
            log_bridge("from the server", &e);
        }
        let _ = up_local.shutdown(Shutdown::Write);
    })?;
    thread::Builder::new().name("tls-to-server".into()).spawn(move || {
        if let Err(e) = to_server(&shared, theirs) {
            log_bridge("to the server", &e);
        }
    })?;
    Ok(Stream::Tcp(mine))
}

fn handshake_error(e: io::Error, timeout: Duration) -> io::Error {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            io::Error::new(io::ErrorKind::TimedOut, format!("TLS handshake not done within {timeout:?}"))
        }
        _ => io::Error::new(e.kind(), format!("TLS handshake failed: {e}")),
    }
}

fn log_bridge(dir: &str, e: &io::Error) {
    // The client reports what it sees on its side (a cut connection); the
    // TLS reason goes to stderr once, for the person reading it.
    if e.kind() != io::ErrorKind::BrokenPipe && e.kind() != io::ErrorKind::NotConnected {
        eprintln!("switchboard-client: TLS {dir}: {e}");
    }
}

/// A connected pair of loopback sockets.
fn loopback_pair() -> io::Result<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let mine = TcpStream::connect(listener.local_addr()?)?;
    let expect: SocketAddr = mine.local_addr()?;
    loop {
        let (theirs, from) = listener.accept()?;
        if from == expect {
            let _ = mine.set_nodelay(true);
            let _ = theirs.set_nodelay(true);
            return Ok((mine, theirs));
        }
        // Someone else on the machine raced to the port: not ours.
    }
}

/// The TLS connection, and the socket's writing side (its lock keeps TLS
/// records in order: it is taken before the connection's is released).
struct Shared {
    conn: Mutex<ClientConnection>,
    out: Mutex<Stream>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Writes the records rustls has ready.
fn send_records(shared: &Shared, mut conn: std::sync::MutexGuard<'_, ClientConnection>) -> io::Result<()> {
    let mut bytes = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut bytes)?;
    }
    if bytes.is_empty() {
        return Ok(());
    }
    let mut out = lock(&shared.out);
    drop(conn);
    out.write_all(&bytes)
}

fn from_server(shared: &Shared, mut sock: Stream, local: &TcpStream) -> io::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    let mut plain = Vec::new();
    loop {
        let n = match sock.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let mut conn = lock(&shared.conn);
        let mut input = &buf[..n];
        loop {
            conn.read_tls(&mut input)?;
            conn.process_new_packets().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            if input.is_empty() {
                break;
            }
        }
        plain.clear();
        let ended = loop {
            let start = plain.len();
            plain.resize(start + CHUNK, 0);
            match conn.reader().read(&mut plain[start..]) {
                Ok(0) => {
                    plain.truncate(start);
                    break true;
                }
                Ok(m) => plain.truncate(start + m),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    plain.truncate(start);
                    break false;
                }
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    plain.truncate(start);
                    break true;
                }
                Err(e) => return Err(e),
            }
        };
        send_records(shared, conn)?;
        (&*local).write_all(&plain)?;
        if ended || n == 0 {
            return Ok(());
        }
    }
}

fn to_server(shared: &Shared, mut local: TcpStream) -> io::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match local.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let mut conn = lock(&shared.conn);
        if n == 0 {
            conn.send_close_notify();
            send_records(shared, conn)?;
            return Ok(());
        }
        conn.writer().write_all(&buf[..n])?;
        send_records(shared, conn)?;
    }
}
