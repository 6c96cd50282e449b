//! proxy: a TCP relay to backends, on the core's public API alone. Each
//! client gets an outbound connection (a link, [`Conn::connect`]) to the
//! next backend in turn; bytes, half-closes and closes pass through both
//! ways, with the core's flow control between the two. Optionally a PROXY
//! protocol header first, naming the client to the backend.

mod backends;

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use switchboard::{
    Addr, CloseReason, Conn, Flow, Handler, LinkEvent, LinkOptions, ProxyHeader, ProxyVersion,
};

use backends::Backends;
pub use backends::{BackendStats, FIRST_BACKOFF, MAX_BACKOFF};

/// Relayed bytes a connection counts on its own before it adds them to its
/// backend's shared meters (and when it ends).
const FLUSH_BYTES: u64 = 64 << 10;

/// Relays every client to a backend: round robin over the backends, a
/// backend whose connect fails skipped for a while (2 s, doubling to 30 s).
#[derive(Debug)]
pub struct Proxy {
    backends: Backends,
    header: Option<ProxyVersion>,
    options: LinkOptions,
    /// The address clients connect to, for the PROXY header.
    listening: OnceLock<SocketAddr>,
}

/// A client's relay: its backend, and bytes not yet in the meters.
#[derive(Debug)]
pub struct Relay {
    backend: usize,
    connected: bool,
    up: u64,
    down: u64,
}

impl Proxy {
    /// A relay to `backends`, round robin.
    ///
    /// # Panics
    ///
    /// If `backends` is empty (`switchboard-server` refuses that as a
    /// usage error first).
    pub fn new(backends: Vec<Addr>) -> Proxy {
        Proxy {
            backends: Backends::new(backends),
            header: None,
            options: LinkOptions::default(),
            listening: OnceLock::new(),
        }
    }

    /// Sends a PROXY protocol header in `version` first to the backend.
    pub fn proxy_protocol(mut self, version: Option<ProxyVersion>) -> Proxy {
        self.header = version;
        self
    }

    /// How long a backend has to accept (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Proxy {
        self.options = LinkOptions::default().connect_timeout(timeout);
        self
    }

    /// The address the server listens on: the destination the PROXY header
    /// names (until it is set, the unspecified address).
    pub fn listening_on(&self, addr: SocketAddr) {
        let _ = self.listening.set(addr);
    }

    /// Each backend's figures now.
    pub fn backend_stats(&self) -> Vec<BackendStats> {
        self.backends.snapshot(Instant::now())
    }

    /// A connect to `r`'s backend failed: counted, logged, skipped a while.
    fn failed(&self, r: &Relay, id: u64, why: &dyn std::fmt::Display) {
        let skipped = self.backends.failed(r.backend, Instant::now());
        let addr = self.backends.addr(r.backend);
        log::warn!("connection {id}: backend {addr} failed: {why}; skipped for {:?}", skipped.for_);
    }

    /// Adds `r`'s bytes to the meters once there are enough of them, or
    /// when it ends (`all`).
    fn flush(&self, r: &mut Relay, all: bool) {
        if all || r.up + r.down >= FLUSH_BYTES {
            self.backends.meters(r.backend).add_bytes(std::mem::take(&mut r.up), std::mem::take(&mut r.down));
        }
    }
}

impl Handler for Proxy {
    type Session = Relay;

    fn open(&self, conn: &mut Conn<'_>) -> Relay {
        let r = Relay { backend: self.backends.pick(Instant::now()), connected: false, up: 0, down: 0 };
        match conn.connect(self.backends.addr(r.backend), &self.options) {
            Err(e) => {
                self.failed(&r, conn.id(), &e);
                conn.close();
            }
            Ok(()) => {
                if let Some(version) = self.header {
                    let header = ProxyHeader::new(conn.peer(), self.listening.get().copied()).encode(version);
                    if let Some(mut link) = conn.link() {
                        let _ = link.send(header);
                    }
                }
            }
        }
        r
    }

    fn frame(&self, r: &mut Relay, data: &[u8], conn: &mut Conn<'_>) -> Flow {
        let Some(mut link) = conn.link() else { return Flow::Close };
        if link.send(data).is_err() {
            return Flow::Close;
        }
        r.up += data.len() as u64;
        self.flush(r, false);
        Flow::Continue
    }

    fn eof(&self, _: &mut Relay, conn: &mut Conn<'_>) {
        if let Some(mut link) = conn.link() {
            link.shutdown_write();
        }
    }

    fn link(&self, r: &mut Relay, event: LinkEvent<'_>, conn: &mut Conn<'_>) -> Flow {
        match event {
            LinkEvent::Connected { took } => {
                r.connected = true;
                self.backends.connected(r.backend, took);
            }
            LinkEvent::Frame(data) => {
                conn.send(data);
                r.down += data.len() as u64;
                self.flush(r, false);
            }
            LinkEvent::Eof => conn.shutdown_write(),
            LinkEvent::Closed(why) if !r.connected => {
                self.failed(r, conn.id(), why);
                return Flow::Close;
            }
            LinkEvent::Closed(_) => return Flow::Close,
            _ => {}
        }
        Flow::Continue
    }

    fn close(&self, mut r: Relay, _: &CloseReason) {
        self.flush(&mut r, true);
        if r.connected {
            self.backends.meters(r.backend).closed();
        }
    }
}
