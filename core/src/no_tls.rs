//! Without the `tls` feature: the TLS types the transport, the worker and
//! the handshake pool name, uninhabited. The code that handles TLS
//! connections still compiles, so it cannot rot, but no value of these
//! types can exist and it never runs: without `ServerBuilder::tls` no
//! connection begins with a handshake.

// Nothing here is ever constructed: that is the point.
#![allow(dead_code)]

use std::io::{self, IoSlice, Read, Write};
use std::sync::Arc;

use crate::stream::Stream;

/// Where a handshake stands after a step (as in `tls.rs`).
#[derive(Debug)]
pub(crate) enum Handshake {
    Pending,
    Done,
    PeerClosed,
}

/// A TLS server configuration: none without the feature.
#[derive(Debug)]
pub(crate) enum ServerConfig {}

/// A TLS stream: none without the feature.
#[derive(Debug)]
pub(crate) enum TlsStream {}

impl TlsStream {
    pub(crate) fn accept(config: Arc<ServerConfig>, _: Stream) -> io::Result<TlsStream> {
        match *config {}
    }

    pub(crate) fn feed(&mut self, _: &[u8]) -> io::Result<()> {
        match *self {}
    }

    pub(crate) fn handshake(&mut self) -> io::Result<Handshake> {
        match *self {}
    }

    pub(crate) fn shutdown_write(&mut self) -> io::Result<()> {
        match *self {}
    }

    pub(crate) fn sock_mut(&mut self) -> &mut Stream {
        match *self {}
    }

    pub(crate) fn eof_pending(&self) -> bool {
        match *self {}
    }

    pub(crate) fn wants_write(&self) -> bool {
        match *self {}
    }
}

impl Read for TlsStream {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        match *self {}
    }
}

impl Write for TlsStream {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        match *self {}
    }

    fn write_vectored(&mut self, _: &[IoSlice<'_>]) -> io::Result<usize> {
        match *self {}
    }

    fn flush(&mut self) -> io::Result<()> {
        match *self {}
    }
}
