//! Errors of starting a server.

use std::fmt;
use std::io;

use crate::signals::SignalError;

/// Why [`ServerBuilder::start`](crate::ServerBuilder::start) failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum StartError {
    /// A setting is out of range; the message names it.
    Config(String),
    /// The address could not be resolved or bound (in use, not local,
    /// permission denied).
    Bind {
        /// The address as given.
        addr: String,
        /// What the system said.
        source: io::Error,
    },
    /// Creating the poller, a waker or a thread failed.
    Io(io::Error),
    /// [`ServerBuilder::shutdown_on_signals`](crate::ServerBuilder::shutdown_on_signals)
    /// could not install the signal handler.
    Signals(SignalError),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Config(msg) => write!(f, "invalid configuration: {msg}"),
            StartError::Bind { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
            StartError::Io(e) => write!(f, "cannot start the server: {e}"),
            StartError::Signals(e) => write!(f, "{e}"),
        }
    }
}

/// The system's message is part of the [`Display`](fmt::Display) text
/// (`cannot listen on 127.0.0.1:7878: Address already in use (os error
/// 98)`), so `source` is `None`: an error chain printer (`anyhow`'s `{:#}`)
/// shows the cause once. The [`io::Error`] itself is in the variant.
impl std::error::Error for StartError {}

impl From<io::Error> for StartError {
    fn from(e: io::Error) -> StartError {
        StartError::Io(e)
    }
}
