//! What `switchboard-server` runs beside its TCP server: the handler over
//! UDP on the same port number (`--udp`) and the operator console
//! (`--console`, chat).

use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs, UdpSocket};
use std::sync::Arc;

use switchboard::datagram::{DatagramBuilder, DatagramHandler, DatagramServer, DatagramStatsHandle};
use switchboard::Server;
use switchboard_handlers::Chat;

use crate::printer::Printer;

/// The UDP side and the console of one server, started after the TCP
/// server and ended with it: the TCP server's shutdown handle drains both.
#[derive(Default)]
pub struct Beside {
    udp: Option<DatagramServer>,
    console: Option<Box<dyn FnOnce() + Send>>,
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
            None => builder.start(server.local_addr(), handler)?,
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
    /// are printed ([`Beside::announce`]).
    pub fn with_console(mut self, console: impl FnOnce() + Send + 'static) -> Beside {
        self.console = Some(Box::new(console));
        self
    }

    /// Prints the lines that follow `listening on ADDR` (`listening on udp
    /// ADDR` with `--udp`), then starts the console, whose output comes
    /// after them.
    pub fn announce(&mut self, out: &Printer) -> io::Result<()> {
        if let Some(udp) = &self.udp {
            out.line(format_args!("listening on udp {}", udp.local_addr()));
        }
        if let Some(console) = self.console.take() {
            // Not joined: it may be blocked reading a terminal that never
            // ends; the process ends with the server.
            std::thread::Builder::new().name("switchboard-console".into()).spawn(console)?;
        }
        Ok(())
    }

    /// The UDP side's counters, if it runs (for the admin endpoint).
    pub fn udp_stats(&self) -> Option<DatagramStatsHandle> {
        self.udp.as_ref().map(DatagramServer::stats_handle)
    }

    /// Waits for the UDP side to end (the TCP server's shutdown ends it).
    pub fn wait(self) {
        if let Some(udp) = self.udp {
            udp.wait();
        }
    }
}

/// The operator console (`--console`): stdin to the chat room as member
/// `nick`, the room to `out` (stdout, through its queue: a terminal that
/// is not read drops the room's lines rather than hold anything up); logs
/// when the input ends.
pub fn console(chat: Arc<Chat>, nick: String, out: Printer) -> impl FnOnce() + Send + 'static {
    move || {
        let stdin = io::stdin().lock();
        match chat.run_console(&nick, stdin, out) {
            Ok(()) => log::info!("console: input ended; {nick} left the room"),
            Err(e) => log::error!("{e}"),
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
