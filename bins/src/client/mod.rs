//! The interactive and file-download client behind `switchboard-client`.
//!
//! - [`interactive`]: stdin to the server, the server to stdout, as bytes
//!   arrive (echo, upper, chat);
//! - [`download`]: `get NAME` and `list` against the file handler, with the
//!   md5 checked before anything appears under the final name;
//! - [`protocol`]: the file protocol's reader and request writers, free of
//!   sockets and files, shared with the load generator;
//! - [`udp`]: the interactive mode over UDP, a datagram per line;
//! - [`terminal`]: escapes for everything printed, so no control or bidi
//!   character from a server reaches the terminal.
//!
//! ```no_run
//! use std::time::Duration;
//! use switchboard_bins::client::{self, download};
//!
//! let target = download::plan("notes/today.txt", None, false)?;
//! let mut conn = client::connect("127.0.0.1:7878", Duration::from_secs(10))?;
//! conn.set_read_timeout(Some(Duration::from_secs(30)))?;
//! let saved = download::fetch(&mut conn, &target, false)?;
//! println!("{} bytes, md5 {}", saved.size, saved.md5);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::time::Duration;

pub mod download;
mod error;
pub mod interactive;
pub mod protocol;
mod stream;
pub mod terminal;
pub mod udp;

pub use error::Error;
pub use protocol::{read_header, Header, ProtocolError, MAX_HEADER_LEN};
pub use stream::Stream;

/// Connects to `addr`: `HOST:PORT`, trying each address it resolves to,
/// each for at most `timeout` (zero: the system's own limit), or
/// `unix:PATH`, a Unix domain socket.
pub fn connect(addr: &str, timeout: Duration) -> Result<Stream, Error> {
    if let Some(path) = switchboard::unix_path(addr) {
        let path = path.map_err(|source| Error::Resolve { addr: addr.to_owned(), source })?;
        return UnixStream::connect(path).map(Stream::Unix).map_err(|source| Error::Connect {
            addr: addr.to_owned(),
            timeout,
            source,
        });
    }
    let addrs: Vec<SocketAddr> =
        addr.to_socket_addrs().map_err(|source| Error::Resolve { addr: addr.to_owned(), source })?.collect();
    let mut last = None;
    for sa in &addrs {
        let attempt =
            if timeout.is_zero() { TcpStream::connect(sa) } else { TcpStream::connect_timeout(sa, timeout) };
        match attempt {
            Ok(stream) => {
                // Requests are small and answered at once: don't hold them back.
                let _ = stream.set_nodelay(true);
                return Ok(Stream::Tcp(stream));
            }
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(source) => Error::Connect { addr: addr.to_owned(), timeout, source },
        None => Error::Resolve {
            addr: addr.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no address found"),
        },
    })
}

/// Sets the read timeout of `stream`; zero means none (wait forever).
pub fn set_read_timeout(stream: &Stream, timeout: Duration) -> std::io::Result<()> {
    stream.set_read_timeout(if timeout.is_zero() { None } else { Some(timeout) })
}
