//! Replies waiting to be sent, sent many at once with `sendmmsg`.

use std::io::IoSlice;
use std::net::{SocketAddr, UdpSocket};

use rustix::io::Errno;
use rustix::net::{MMsgHdr, SendAncillaryBuffer, SendFlags, SocketAddrAny};

use super::stats::DgCounters;
use super::MAX_PENDING;

/// Datagrams per `sendmmsg` call.
const PER_CALL: usize = 64;

/// Replies queued by callbacks, in order; at most [`MAX_PENDING`].
#[derive(Debug, Default)]
pub(crate) struct Batch {
    items: Vec<(SocketAddr, Vec<u8>)>,
    /// Set when the kernel has no `sendmmsg`: one `sendto` per datagram.
    no_mmsg: bool,
}

/// What a [`Batch::flush`] left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flushed {
    /// Everything was sent (or dropped on an error and counted).
    All,
    /// The send buffer is full: the rest waits for the socket to be writable.
    Blocked,
}

impl Batch {
    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Queues a datagram; false (nothing queued) past [`MAX_PENDING`].
    pub(crate) fn push(&mut self, addr: SocketAddr, data: &[u8]) -> bool {
        self.push_owned(addr, data.to_vec())
    }

    /// [`push`](Batch::push) of a datagram already copied.
    pub(crate) fn push_owned(&mut self, addr: SocketAddr, data: Vec<u8>) -> bool {
        if self.items.len() >= MAX_PENDING {
            return false;
        }
        self.items.push((addr, data));
        true
    }

    /// Datagrams that may still be queued.
    pub(crate) fn room(&self) -> usize {
        MAX_PENDING.saturating_sub(self.items.len())
    }

    /// Sends what is queued, in order, until done or the socket's send
    /// buffer is full.
    pub(crate) fn flush(&mut self, socket: &UdpSocket, stats: &DgCounters) -> Flushed {
        let mut done = 0;
        let mut result = Flushed::All;
        while done < self.items.len() {
            let end = (done + PER_CALL).min(self.items.len());
            let sent = if self.no_mmsg {
                send_one(socket, &self.items[done])
            } else {
                send_many(socket, &self.items[done..end])
            };
            match sent {
                Ok(0) | Err(Errno::AGAIN) => {
                    result = Flushed::Blocked;
                    break;
                }
                Ok(n) => {
                    for (_, data) in &self.items[done..done + n] {
                        stats.sent(data.len());
                    }
                    done += n;
                }
                Err(Errno::INTR) => {}
                Err(Errno::NOSYS) if !self.no_mmsg => {
                    log::info!("udp: the kernel has no sendmmsg; sending one datagram per call");
                    self.no_mmsg = true;
                }
                Err(e) => {
                    // The first datagram of the call failed (an address
                    // the system refuses): drop it, go on with the rest.
                    log::debug!("udp: send to {}: {e}", self.items[done].0);
                    stats.dropped(1);
                    done += 1;
                }
            }
        }
        self.items.drain(..done);
        result
    }
}

fn send_one(socket: &UdpSocket, (addr, data): &(SocketAddr, Vec<u8>)) -> Result<usize, Errno> {
    rustix::net::sendto(socket, data, SendFlags::DONTWAIT, addr).map(|_| 1)
}

/// One `sendmmsg`: how many of `items` were sent (at least one on success).
fn send_many(socket: &UdpSocket, items: &[(SocketAddr, Vec<u8>)]) -> Result<usize, Errno> {
    let addrs: Vec<SocketAddrAny> = items.iter().map(|(a, _)| SocketAddrAny::from(*a)).collect();
    let iovs: Vec<[IoSlice<'_>; 1]> = items.iter().map(|(_, d)| [IoSlice::new(d)]).collect();
    let mut controls: Vec<SendAncillaryBuffer<'_, '_, '_>> =
        items.iter().map(|_| SendAncillaryBuffer::default()).collect();
    let mut msgs: Vec<MMsgHdr<'_>> = addrs
        .iter()
        .zip(&iovs)
        .zip(controls.iter_mut())
        .map(|((addr, iov), control)| MMsgHdr::new_with_addr(addr, iov, control))
        .collect();
    rustix::net::sendmmsg(socket, &mut msgs, SendFlags::DONTWAIT)
}
