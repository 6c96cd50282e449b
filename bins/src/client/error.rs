//! The client's error: one variant per way a command can fail, each
//! displayed as one line a person can act on.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use super::protocol::ProtocolError;
use super::terminal::escape_name as printable;

/// Why a client command failed.
#[derive(Debug)]
pub enum Error {
    /// The address did not resolve.
    Resolve {
        /// The address as given.
        addr: String,
        /// The resolver's error.
        source: io::Error,
    },
    /// No connection could be made.
    Connect {
        /// The address as given.
        addr: String,
        /// The connect timeout in force.
        timeout: Duration,
        /// The last attempt's error.
        source: io::Error,
    },
    /// The server answered with an error reason (`not found`, ...).
    Server(String),
    /// The server's answer broke the protocol or was cut short.
    Protocol(ProtocolError),
    /// The file is larger than the space free where it would be saved.
    NoSpace {
        /// The folder it would be saved in.
        dir: PathBuf,
        /// The file's size, from the server's header.
        needed: u64,
        /// The bytes free there for this user.
        free: u64,
    },
    /// The server sent nothing for the read timeout.
    Stalled(Duration),
    /// The content does not match the md5 the server announced.
    Md5Mismatch {
        /// The md5 from the header.
        expected: String,
        /// The md5 of the bytes received.
        actual: String,
    },
    /// The file name cannot be requested or saved.
    BadName(String),
    /// The destination exists and `--force` was not given.
    Exists(PathBuf),
    /// A local or socket operation failed.
    Io {
        /// What was being done, e.g. `writing out.bin`.
        what: String,
        /// The error.
        source: io::Error,
    },
}

impl Error {
    /// An [`Error::Io`] for `what`.
    pub fn io(what: impl Into<String>, source: io::Error) -> Error {
        Error::Io { what: what.into(), source }
    }

    /// Maps a protocol error, telling a read timeout apart.
    pub(crate) fn from_protocol(e: ProtocolError, read_timeout: Duration) -> Error {
        match e {
            ProtocolError::Io(ref io) if super::protocol::is_timeout(io) => Error::Stalled(read_timeout),
            e => Error::Protocol(e),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Resolve { addr, source } => {
                write!(f, "cannot resolve '{addr}' ({source}): use HOST:PORT, e.g. 127.0.0.1:7878")
            }
            Error::Connect { addr, timeout, source } if super::protocol::is_timeout(source) => {
                write!(f, "cannot connect to {addr}: no answer within {timeout:?} (see --timeout)")
            }
            Error::Connect { addr, source, .. } => write!(f, "cannot connect to {addr}: {source}"),
            Error::Server(reason) => write!(f, "server: {}", printable(reason)),
            Error::Protocol(e) => e.fmt(f),
            Error::NoSpace { dir, needed, free } => write!(
                f,
                "the file is {needed} bytes but only {free} bytes are free in {}; nothing saved",
                dir.display()
            ),
            Error::Stalled(d) => {
                write!(f, "the server sent nothing for {d:?} (see --read-timeout)")
            }
            Error::Md5Mismatch { expected, actual } => write!(
                f,
                "md5 mismatch: the server announced {expected}, the content received hashes to {actual}"
            ),
            Error::BadName(why) => f.write_str(why),
            Error::Exists(path) => {
                write!(f, "{} already exists (use --force to overwrite it)", path.display())
            }
            Error::Io { what, source } => write!(f, "{what}: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Resolve { source, .. } | Error::Connect { source, .. } | Error::Io { source, .. } => {
                Some(source)
            }
            Error::Protocol(e) => Some(e),
            _ => None,
        }
    }
}
