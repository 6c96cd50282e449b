//! Receiving many datagrams per system call: `recvmmsg` through nix, one
//! `recv_from` each where the kernel has no `recvmmsg`.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use nix::errno::Errno;
use nix::sys::socket::{recvmmsg, MsgFlags, MultiHeaders, SockaddrStorage};

/// Datagrams per `recvmmsg` call.
const PER_CALL: usize = 32;

/// The receive slots, each one byte longer than the largest datagram taken,
/// so an oversize datagram shows as such (longer than the limit, or cut by
/// the kernel with `MSG_TRUNC`).
pub(crate) struct Receiver {
    headers: MultiHeaders<SockaddrStorage>,
    slots: Vec<Vec<u8>>,
    /// Set when the kernel has no `recvmmsg`.
    no_mmsg: bool,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver").field("slots", &self.slots.len()).field("no_mmsg", &self.no_mmsg).finish()
    }
}

/// One datagram received: who sent it, how long it is, whether the kernel
/// cut it (longer than the slot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Got {
    pub(crate) from: SocketAddr,
    pub(crate) len: usize,
    pub(crate) truncated: bool,
}

impl Receiver {
    /// Slots for datagrams of up to `max` bytes.
    pub(crate) fn new(max: usize) -> Receiver {
        Receiver {
            headers: MultiHeaders::preallocate(PER_CALL, None),
            slots: (0..PER_CALL).map(|_| vec![0u8; max + 1]).collect(),
            no_mmsg: false,
        }
    }

    /// The bytes of the `i`th datagram of the last [`recv`](Receiver::recv).
    pub(crate) fn data(&self, i: usize, len: usize) -> &[u8] {
        &self.slots[i][..len.min(self.slots[i].len())]
    }

    /// Receives what is waiting, up to [`PER_CALL`] datagrams, without
    /// blocking; `WouldBlock` when nothing is.
    /// Whether a call that brought `got` datagrams emptied the socket's
    /// queue: fewer than a `recvmmsg` asks for. The next datagram brings a
    /// new readiness edge, so reading need not go on to `EAGAIN` (one
    /// system call saved per wake-up at low load). Unknowable one datagram
    /// per call.
    pub(crate) fn drained_by(&self, got: usize) -> bool {
        !self.no_mmsg && got < PER_CALL
    }

    pub(crate) fn recv(&mut self, socket: &mio::net::UdpSocket, got: &mut Vec<Got>) -> io::Result<()> {
        got.clear();
        if !self.no_mmsg {
            match self.recv_many(socket.as_raw_fd(), got) {
                Err(Errno::ENOSYS) => {
                    log::info!("udp: the kernel has no recvmmsg; receiving one datagram per call");
                    self.no_mmsg = true;
                }
                Err(e) => return Err(io::Error::from(e)),
                Ok(()) => return Ok(()),
            }
        }
        let (len, from) = socket.recv_from(&mut self.slots[0])?;
        got.push(Got { from, len, truncated: false });
        Ok(())
    }

    fn recv_many(&mut self, fd: std::os::fd::RawFd, got: &mut Vec<Got>) -> Result<(), Errno> {
        let mut slices: Vec<[IoSliceMut<'_>; 1]> =
            self.slots.iter_mut().map(|s| [IoSliceMut::new(s)]).collect();
        let results = recvmmsg(fd, &mut self.headers, slices.iter_mut(), MsgFlags::MSG_DONTWAIT, None)?;
        for msg in results {
            // A datagram always has a sender; one whose address is not IP
            // (cannot happen on a UDP socket) is dropped with its slot.
            let from = msg.address.and_then(|a| to_std(&a));
            let truncated = msg.flags.contains(MsgFlags::MSG_TRUNC);
            match from {
                Some(from) => got.push(Got { from, len: msg.bytes, truncated }),
                None => got.push(Got { from: SocketAddr::from(([0, 0, 0, 0], 0)), len: 0, truncated: true }),
            }
        }
        Ok(())
    }
}

fn to_std(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::from(*v4));
    }
    a.as_sockaddr_in6().map(|v6| SocketAddr::from(*v6))
}
