//! Switchboard: a multithreaded TCP server framework.
//!
//! A [`Server`] owns the accept loop and a pool of worker threads, each an
//! event loop (`mio`) over many connections, and hands every connection to
//! a [`Handler`]: per-connection session state, callbacks for open, each
//! frame, drain and close, and a [`Conn`] to reply through. Framing (raw,
//! lines, length-prefixed), limits, backpressure, slow consumers, timeouts
//! and graceful shutdown are the framework's job; the protocol is yours.
//!
//! ```no_run
//! use switchboard::{Conn, Flow, Framing, Handler, Server};
//!
//! /// Sends every line back reversed.
//! struct Reverse;
//!
//! impl Handler for Reverse {
//!     type Session = ();
//!     fn framing(&self) -> Framing {
//!         Framing::lines(1024)
//!     }
//!     fn open(&self, _conn: &mut Conn<'_>) {}
//!     fn frame(&self, _: &mut (), line: &[u8], conn: &mut Conn<'_>) -> Flow {
//!         let mut reply: String = String::from_utf8_lossy(line).chars().rev().collect();
//!         reply.push('\n');
//!         conn.send(&reply);
//!         Flow::Continue
//!     }
//! }
//!
//! // The first SIGTERM or Ctrl-C drains, a second one closes everything.
//! let server = Server::builder().shutdown_on_signals().start("127.0.0.1:7878", Reverse)?;
//! let report = server.wait();
//! println!("{report}");
//! # Ok::<(), switchboard::StartError>(())
//! ```
//!
//! More complete examples, each run by the tests: `core/examples/kv.rs`
//! (timers, a broadcast from another thread), `core/examples/rpc.rs`
//! (length-prefixed both ways with [`Conn::send_frame`]),
//! `core/examples/blocking.rs` (blocking work per request on the server's
//! pool with [`Conn::spawn_blocking`]) and `core/examples/async_backend.rs`
//! (replies from async tasks on a tokio runtime beside the server).
#![forbid(unsafe_code)]

// First: the counters! macro is used by the modules after it.
#[macro_use]
mod counters;
mod acceptor;
mod admission;
mod budget;
mod clock;
mod close;
mod config;
mod conn;
mod connection;
mod cpu;
pub mod datagram;
mod err;
mod framer;
mod framing;
mod handler;
mod handler_arc;
mod handshakes;
mod harness;
mod link;
mod listener;
mod mailbox;
mod message;
mod order;
mod outbound;
mod pool;
mod proxy;
mod server;
mod service;
mod shutdown;
mod signals;
mod stats;
mod stream;
#[cfg_attr(not(feature = "tls"), path = "no_tls.rs")]
mod tls;
mod transport;
mod worker;
mod worker_stats;

pub use close::CloseReason;
pub use conn::{Conn, ConnHandle, Deferred, SendError, SlowConsumerPolicy, WaitError, MAX_TIMERS};
pub use counters::{CounterInfo, CounterKind, LineForm};
pub use err::StartError;
pub use framer::{Fed, Framer, Item};
pub use framing::{Decoder, EncodeError, FrameError, Framing, Prefix, Step};
pub use handler::{handler_fn, Flow, FnHandler, Handler};
pub use harness::{Harness, Held};
pub use link::{ConnectError, Link, LinkEvent, LinkOptions};
pub use message::{Message, Payload};
pub use pool::SpawnError;
pub use proxy::{ProxyHeader, ProxyVersion};
/// The rustls version the server speaks, to build a
/// [`ServerConfig`](rustls::ServerConfig) for [`ServerBuilder::tls`]
/// (feature `tls`).
#[cfg(feature = "tls")]
pub use rustls;
#[doc(hidden)]
pub use server::StartProbe;
pub use server::{Server, ServerBuilder};
pub use service::{spawn_service, Service, Stop, ThreadService};
pub use shutdown::{Phase, ShutdownHandle, ShutdownReport};
pub use signals::{SignalError, Signals};
pub use stats::{Stats, StatsHandle, WorkerStats};
pub use stream::{unix_path, Addr, Credentials, Peer, Stream, UNIX_PREFIX};
#[cfg(feature = "tls")]
pub use tls::{tls_config_from_pem, TlsConfigError, TlsSocket};
