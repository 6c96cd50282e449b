//! What `switchboard-server` runs beside its TCP server: the handler over
//! UDP on the same port number (`--udp`) and the operator console
//! (`--console`, chat). Each is a [`Service`] of the TCP server: it ends
//! with the server's shutdown and is joined before the report.

use std::io::{self, BufReader, Read};
use std::net::{SocketAddr, TcpListener, ToSocketAddrs, UdpSocket};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use switchboard::datagram::{DatagramBuilder, DatagramHandler, DatagramServer, DatagramStatsHandle};
use switchboard::{spawn_service, Server, Stop};
use switchboard_handlers::Chat;

use crate::printer::Printer;

/// The UDP side and the console of one server, started after the TCP
/// server and ended with it: [`Beside::start`] makes each a service of
/// the TCP server.
#[derive(Default)]
pub struct Beside {
    udp: Option<DatagramServer>,
    console: Option<Box<dyn FnOnce(Stop) + Send>>,
}

impl std::fmt::Debug for Beside {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Beside").field("udp", &self.udp).field("console", &self.console.is_some()).finish()
    }
}

impl Beside {
    /// Nothing beside the TCP server.
    pub fn none() -> Beside {
        Beside::default()
    }

    /// Serves `handler` over UDP on the TCP server's address (the same port
    /// number), with the settings of `builder` (idle time, spin); the TCP
    /// server's shutdown handle drains it too.
    /// `reserved` is the socket [`reserve`] bound, if it did.
    pub fn udp<H: DatagramHandler>(
        server: &Server,
        builder: DatagramBuilder,
        reserved: Option<UdpSocket>,
        handler: H,
    ) -> anyhow::Result<Beside> {
        let builder = builder.lifecycle(server.shutdown_handle());
        let udp = match reserved {
            Some(socket) => builder.start_socket(socket, handler)?,
            None => {
                // (`local_addr` would be 0.0.0.0:0 for a Unix socket: a
                // random port on every interface.)
                let Some(addr) = server.addr().ip() else {
                    anyhow::bail!("UDP serves on the TCP listener's port: {} has none", server.addr())
                };
                builder.start(addr, handler)?
            }
        };
        Ok(Beside { udp: Some(udp), console: None })
    }

    /// [`Beside::udp`] when `enabled` (`--udp`), else nothing.
    pub fn udp_if<H: DatagramHandler>(
        enabled: bool,
        server: &Server,
        builder: DatagramBuilder,
        reserved: Option<UdpSocket>,
        handler: H,
    ) -> anyhow::Result<Beside> {
        if enabled {
            Beside::udp(server, builder, reserved, handler)
        } else {
            Ok(Beside::none())
        }
    }

    /// Runs `console` on a thread of its own once the `listening on` lines
    /// are printed ([`Beside::start`]), until its input ends or its
    /// [`Stop`] says so.
    pub fn with_console(mut self, console: impl FnOnce(Stop) + Send + 'static) -> Beside {
        self.console = Some(Box::new(console));
        self
    }

    /// The UDP side's counters, if it runs (for the admin endpoint).
    pub fn udp_stats(&self) -> Option<DatagramStatsHandle> {
        self.udp.as_ref().map(DatagramServer::stats_handle)
    }

    /// Prints the lines that follow `listening on ADDR` (`listening on udp
    /// ADDR` with `--udp`), then starts the console, whose output comes
    /// after them; both become services of `server`, joined before its
    /// report.
    pub fn start(mut self, server: &mut Server, out: &Printer) -> io::Result<()> {
        if let Some(udp) = self.udp.take() {
            out.line(format_args!("listening on udp {}", udp.local_addr()));
            server.beside(udp);
        }
        if let Some(console) = self.console.take() {
            server.beside(spawn_service("switchboard-console", console)?);
        }
        Ok(())
    }
}

/// The operator console (`--console`): stdin to the chat room as member
/// `nick`, the room to `out` (stdout, through its queue: a terminal that
/// is not read drops the room's lines rather than hold anything up); logs
/// when the input ends. It leaves the room when the input ends or when
/// `stop` says the server has stopped.
pub fn console(chat: Arc<Chat>, nick: String, out: Printer) -> impl FnOnce(Stop) + Send + 'static {
    move |stop| {
        let input = BufReader::new(StdinUntil { stop, poll: STOP_POLL });
        match chat.run_console(&nick, input, out) {
            Ok(()) => log::info!("console: input ended; {nick} left the room"),
            Err(e) => log::error!("{e}"),
        }
    }
}

/// How often a console waiting for input checks whether to stop.
const STOP_POLL: Duration = Duration::from_millis(100);

/// Standard input that ends (reads 0 bytes) once `stop` says so: it waits
/// for input in slices of `poll`, so a terminal nobody types on never
/// holds up the shutdown. Reads the descriptor itself, never through
/// `Stdin`'s buffer, so that what `poll` sees is what there is to read.
struct StdinUntil {
    stop: Stop,
    poll: Duration,
}

impl Read for StdinUntil {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let stdin = io::stdin();
        let timeout = rustix::time::Timespec::try_from(self.poll).map_err(io::Error::other)?;
        loop {
            if self.stop.is_stopped() {
                return Ok(0);
            }
            let mut fds = [rustix::event::PollFd::new(&stdin, rustix::event::PollFlags::IN)];
            match rustix::event::poll(&mut fds, Some(&timeout)) {
                Ok(0) => continue,
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
            // Readable, hung up or in error: the read says which, at once.
            match rustix::io::read(stdin.as_fd(), &mut *buf) {
                Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => continue,
                r => return r.map_err(io::Error::from),
            }
        }
    }
}

/// Where the TCP server should listen. With `udp` and port 0, a port number
/// free for both TCP and UDP is chosen (a UDP socket is bound on a free port
/// and kept, and that port is checked free for TCP; up to 32 tries), so the
/// UDP side cannot find its port taken by another program's socket; the UDP
/// socket is returned, to be served by [`Beside::udp`].
pub fn reserve(listen: &str, udp: bool) -> anyhow::Result<(String, Option<UdpSocket>)> {
    if !udp {
        return Ok((listen.to_owned(), None));
    }
    let addr: SocketAddr = listen
        .to_socket_addrs()
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?
        .next()
        .ok_or_else(|| anyhow::anyhow!("cannot listen on {listen}: no address"))?;
    if addr.port() != 0 {
        return Ok((listen.to_owned(), None));
    }
    for _ in 0..32 {
        let socket =
            UdpSocket::bind(addr).map_err(|e| anyhow::anyhow!("cannot listen on udp {addr}: {e}"))?;
        let chosen = socket.local_addr()?;
        match TcpListener::bind(chosen) {
            Ok(probe) => {
                drop(probe);
                return Ok((chosen.to_string(), Some(socket)));
            }
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {}
            Err(e) => anyhow::bail!("cannot listen on {chosen}: {e}"),
        }
    }
    anyhow::bail!("cannot find a port number free for both TCP and UDP on {}", addr.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server on a Unix socket has no port for UDP: refused with the
    /// reason, not bound to a random port on every interface.
    #[test]
    fn udp_beside_a_unix_socket_is_refused() {
        let dir = switchboard_test_support::temp_dir("beside-unix");
        let path = dir.path().join("s.sock");
        let listen = format!("unix:{}", path.display());
        let server = Server::builder().start_unix(&path, switchboard_handlers::Echo).unwrap();
        let err = Beside::udp(&server, DatagramBuilder::default(), None, switchboard_handlers::Echo)
            .expect_err("no UDP beside a Unix socket");
        assert_eq!(err.to_string(), format!("UDP serves on the TCP listener's port: {listen} has none"));
        server.shutdown();
    }
}
