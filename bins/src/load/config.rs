//! What a load run does: the target, the connections, the mode and when to stop.

use std::time::Duration;

use switchboard::Addr;

/// The longest message line chat mode sends (the server's default limit is 4,096).
pub(crate) const MAX_CHAT_LINE: usize = 4000;
/// Members a chat run may have (each member keeps a counter per member).
pub(crate) const MAX_CHAT_MEMBERS: usize = 4096;

/// One load run, as `switchboard-load` builds it from its command line.
#[derive(Debug, Clone)]
pub struct Config {
    /// The server to load.
    pub target: Addr,
    /// More servers (a chat cluster): connection `i` goes to
    /// [`Config::target_of`]`(i)`, taking the targets in turn.
    pub also: Vec<Addr>,
    /// Connections to open (chat: members of the room).
    pub connections: usize,
    /// Event-loop threads, each driving its share of the connections.
    pub threads: usize,
    /// New connections per second, over all threads (the ramp).
    pub connect_rate: f64,
    /// When to stop sending.
    pub stop: Stop,
    /// `Some(r)`: open loop, `r` messages per second in total, sent on a fixed
    /// schedule whatever the replies do; latency counts from the scheduled
    /// time. `None`: closed loop, each connection keeps `depth` in flight.
    pub rate: Option<f64>,
    /// After sending stops, how long at most to wait for the replies still in
    /// flight (what does not arrive is counted as lost); replies that keep
    /// trickling in do not extend it.
    pub drain_timeout: Duration,
    /// How long a connection may take to connect (and, for chat, to be welcomed).
    pub connect_timeout: Duration,
    /// What to send.
    pub mode: Mode,
    /// The period of the per-interval figures (`--interval`, and the
    /// throughput curve of the report).
    pub interval: Duration,
    /// Speak TLS (`--tls`).
    pub tls: Option<super::stream::LoadTls>,
}

/// When a run stops sending.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stop {
    /// After this long, counted from the moment every connection is ready.
    Duration(Duration),
    /// After this many messages in total (chat: sent; file: gets).
    Messages(u64),
}

/// The protocol spoken and what is measured.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Ping-pong against the echo handler.
    Echo {
        /// Bytes per message.
        size: usize,
        /// Messages in flight per connection (closed loop).
        depth: usize,
    },
    /// One room of the chat handler: every member sends, every member checks
    /// that it receives every other member's messages.
    Chat {
        /// Length of each message line (without the newline), at least the
        /// room needed for the sender id, sequence number and timestamp.
        size: usize,
        /// Messages per member not yet delivered to every other member
        /// (closed loop).
        depth: usize,
    },
    /// `get NAME` against the file handler, the md5 checked against the header.
    File {
        /// The name to request.
        name: String,
        /// Requests in flight per connection (closed loop).
        depth: usize,
        /// Whether to compute and check the md5 of every download.
        verify_md5: bool,
    },
    /// Connections that only stay open (for memory per connection).
    Idle,
}

impl Mode {
    /// The mode's name, as on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            Mode::Echo { .. } => "echo",
            Mode::Chat { .. } => "chat",
            Mode::File { .. } => "file",
            Mode::Idle => "idle",
        }
    }

    /// Payload bytes of one completed message: echo and chat their size,
    /// file `None` (counted as it arrives), idle `None`.
    pub fn message_size(&self) -> Option<usize> {
        match self {
            Mode::Echo { size, .. } | Mode::Chat { size, .. } => Some(*size),
            Mode::File { .. } | Mode::Idle => None,
        }
    }

    /// Messages in flight per connection in the closed loop.
    pub(crate) fn depth(&self) -> usize {
        match self {
            Mode::Echo { depth, .. } | Mode::Chat { depth, .. } | Mode::File { depth, .. } => (*depth).max(1),
            Mode::Idle => 0,
        }
    }
}

impl Config {
    /// A configuration with the defaults of the command line: one thread,
    /// 5,000 connections per second, 10 s, closed loop.
    pub fn new(target: impl Into<Addr>, connections: usize, mode: Mode) -> Config {
        Config {
            target: target.into(),
            also: Vec::new(),
            connections,
            threads: 1,
            connect_rate: 5_000.0,
            stop: Stop::Duration(Duration::from_secs(10)),
            rate: None,
            drain_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            mode,
            interval: Duration::from_secs(1),
            tls: None,
        }
    }

    /// Where connection `i` (counted over all threads) connects: the
    /// target and the [`also`](Config::also) servers in turn.
    pub fn target_of(&self, i: usize) -> &Addr {
        match i % (1 + self.also.len()) {
            0 => &self.target,
            k => &self.also[k - 1],
        }
    }

    /// Checks the values that cannot work, with a line a person can act on.
    pub fn validate(&self) -> Result<(), String> {
        if self.connections == 0 {
            return Err("--connections must be at least 1".into());
        }
        if self.threads == 0 {
            return Err("--threads must be at least 1".into());
        }
        if !(self.connect_rate > 0.0 && self.connect_rate.is_finite()) {
            return Err("--connect-rate must be a positive number of connections per second".into());
        }
        if let Some(r) = self.rate {
            if !(r > 0.0 && r.is_finite()) {
                return Err("--rate must be a positive number of messages per second".into());
            }
        }
        if self.interval < Duration::from_millis(10) {
            return Err("--interval must be at least 10ms".into());
        }
        match (&self.mode, self.stop) {
            (Mode::Idle, Stop::Messages(_)) => {
                return Err("idle mode sends no messages: use --duration".into());
            }
            (_, Stop::Messages(0)) => return Err("--messages must be at least 1".into()),
            (_, Stop::Duration(d)) if d.is_zero() => return Err("--duration must be more than 0".into()),
            _ => {}
        }
        match &self.mode {
            Mode::Echo { size, .. } if *size == 0 => Err("--size must be at least 1 byte".into()),
            Mode::Echo { size, .. } if *size > 16 << 20 => Err("--size is limited to 16 MiB".into()),
            Mode::Chat { size, .. } if *size > MAX_CHAT_LINE => {
                Err(format!("--size is limited to {} bytes in chat mode (the line limit)", MAX_CHAT_LINE))
            }
            Mode::Chat { .. } if self.connections < 2 => Err("chat needs at least 2 members".into()),
            Mode::Chat { .. } if self.connections > MAX_CHAT_MEMBERS => {
                Err(format!("chat mode supports up to {} members", MAX_CHAT_MEMBERS))
            }
            Mode::File { name, .. } if name.is_empty() || name.contains('\n') => {
                Err("the file name must be non-empty and on one line".into())
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod cluster_targets {
    use super::*;
    use std::net::SocketAddr;

    #[test]
    fn connections_take_the_targets_in_turn() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let mut cfg = Config::new(a, 4, Mode::Idle);
        let (a, b) = (Addr::Ip(a), Addr::Ip(b));
        assert_eq!((0..3).map(|i| cfg.target_of(i)).collect::<Vec<_>>(), vec![&a, &a, &a]);
        cfg.also = vec![b.clone()];
        assert_eq!((0..4).map(|i| cfg.target_of(i)).collect::<Vec<_>>(), vec![&a, &b, &a, &b]);
    }
}
