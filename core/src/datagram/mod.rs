//! The datagram side: a [`DatagramHandler`] served over UDP beside the TCP
//! workers, sharing their lifecycle.
//!
//! A [`DatagramServer`] owns one UDP socket and one thread (an event loop on
//! a `mio::net::UdpSocket`). Each datagram from an address the server has
//! not seen opens a *peer* ([`DatagramHandler::open`]); the peer's state
//! lives in a bounded table keyed by the address and is closed after an
//! idle time, by the handler ([`Flow::Close`](crate::Flow::Close)), or at shutdown. Replies go
//! through [`Reply`] inside a callback (batched and sent with `sendmmsg`),
//! or through a [`DatagramSender`] from any thread (queued to the datagram
//! thread, which sends them in its batches: no `sendto` on the caller's
//! thread).
//!
//! Limits, all set on the [`DatagramBuilder`]:
//! - a datagram is at most [`max_datagram`](DatagramBuilder::max_datagram)
//!   bytes ([`MAX_UDP_PAYLOAD`] = 65,507 by default, the largest UDP
//!   payload over IPv4: 65,535 − 20 (IP header) − 8 (UDP header)); a larger
//!   one received is **dropped and counted** in [`DatagramStats::oversize`],
//!   the handler never sees it; a larger reply is refused with
//!   [`DatagramSendError::TooLarge`];
//! - at most [`max_peers`](DatagramBuilder::max_peers) peers at once: a
//!   datagram from a new address past that takes the place of the least
//!   recently heard peer (counted in [`DatagramStats::evicted`]); at most
//!   [`max_peers_per_prefix`](DatagramBuilder::max_peers_per_prefix) from
//!   one IPv4 /24 or IPv6 /64, past which a new address is dropped and
//!   counted in [`DatagramStats::peers_refused`]; a handler that keeps no
//!   peers ([`DatagramHandler::keeps_peers`]) has no table;
//! - to an address that has not proven it receives there
//!   ([`Reply::prove`]), replies stay within [`AMPLIFICATION`] (3) times
//!   the bytes it sent, counted on the wire; past that they are not sent
//!   and counted in [`DatagramStats::limited`];
//! - replies that find the socket's send buffer full wait in a queue of at
//!   most [`MAX_PENDING`] datagrams, and the thread reads nothing more until
//!   it has drained; past it they are dropped and counted in
//!   [`DatagramStats::send_dropped`] (UDP promises no delivery; the count
//!   says what the server knows it lost); so are sends from other threads
//!   past [`MAX_QUEUED`] datagrams or [`MAX_QUEUED_BYTES`] bytes waiting.
//!
//! ```no_run
//! use switchboard::datagram::{DatagramHandler, DatagramServer, Reply};
//! use switchboard::Flow;
//!
//! /// Sends every datagram back to its sender.
//! struct Echo;
//!
//! impl DatagramHandler for Echo {
//!     type Peer = ();
//!     fn open(&self, _out: &mut Reply<'_>) {}
//!     fn datagram(&self, _: &mut (), data: &[u8], out: &mut Reply<'_>) -> Flow {
//!         let _ = out.send(data);
//!         Flow::Continue
//!     }
//! }
//!
//! let server = DatagramServer::builder().start("127.0.0.1:0", Echo)?;
//! println!("listening on udp {}", server.local_addr());
//! # server.shutdown_handle().drain();
//! let report = server.wait();
//! # Ok::<(), switchboard::StartError>(())
//! ```

mod batch;
mod cookie;
mod gate;
mod handler;
mod peers;
mod recv;
mod sender;
mod server;
mod stats;

pub use cookie::{COOKIE_LEN, COOKIE_PERIOD};
pub use gate::AMPLIFICATION;
pub use handler::{DatagramHandler, PeerClose, Reply};
pub use sender::{DatagramSendError, DatagramSender, MAX_QUEUED, MAX_QUEUED_BYTES};
pub use server::{DatagramBuilder, DatagramReport, DatagramServer};
pub use stats::{DatagramStats, DatagramStatsHandle};

/// The largest UDP payload over IPv4: 65,535 − 20 − 8 bytes. The default
/// and the largest [`max_datagram`](DatagramBuilder::max_datagram).
pub const MAX_UDP_PAYLOAD: usize = 65_507;

/// Replies held at most while the socket's send buffer is full.
pub const MAX_PENDING: usize = 4096;
