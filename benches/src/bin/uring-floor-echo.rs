//! `uring-floor-echo`: the least an io_uring server does per echoed message,
//! as a yard stick beside `floor-echo` (epoll). It answers one question: would
//! an io_uring engine spend less CPU per message than an epoll one on this
//! kernel? One thread, one ring (`SINGLE_ISSUER | DEFER_TASKRUN`, so
//! completions are reaped only when the thread asks). Each connection has one
//! multishot `recv` into a ring of provided buffers, which stays armed across
//! messages, so there is no re-arming per message; what arrives is copied to
//! the connection's out buffer and sent with one `send` entry; the entries of
//! a loop pass go to the kernel in the one `io_uring_enter` that also waits
//! for the next completions. No framing, no timers, no limits, no shutdown:
//! not a server to run, only the kernel work of an io_uring echo.
//!
//! Usage: `uring-floor-echo [--listen ADDR]` (default 127.0.0.1:0); prints
//! `listening on ADDR` as its first line. Exits 1 with the reason when the
//! kernel refuses io_uring (disabled by `kernel.io_uring_disabled`, or older
//! than 6.1).

use std::alloc::{self, Layout};
use std::io::{self, Write};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::{cqueue, opcode, squeue, types, IoUring};

/// Provided receive buffers (a power of two) and their size.
const BUFFERS: u16 = 4096;
const BUF_SIZE: usize = 4096;
/// The buffer group of the receive buffers.
const GROUP: u16 = 0;
/// `user_data`: the listener's multishot accept, else a connection's key in
/// the low bits and what the entry is in the top ones.
const ACCEPT: u64 = u64::MAX;
const SEND: u64 = 1 << 62;
const KEY: u64 = (1 << 62) - 1;

#[path = "../floor_main.rs"]
mod floor_main;

fn main() -> ExitCode {
    floor_main::run("uring-floor-echo", serve)
}

/// A connection: the bytes being sent (at most one `send` in flight, so the
/// buffer stays put until it completes) and the bytes that came meanwhile.
struct Peer {
    fd: OwnedFd,
    sending: Vec<u8>,
    queued: Vec<u8>,
    /// The multishot receive ended for good (EOF or error): close once
    /// `sending` is done. The descriptor is closed only then, so no entry
    /// of a closed connection is ever in flight.
    recv_done: bool,
}

/// The provided-buffer ring: `BUFFERS` entries the kernel takes receive
/// buffers from, and the memory they point at.
struct BufRing {
    entries: *mut types::BufRingEntry,
    data: Vec<u8>,
    tail: u16,
}

impl BufRing {
    fn layout() -> Layout {
        let size = BUFFERS as usize * std::mem::size_of::<types::BufRingEntry>();
        Layout::from_size_align(size, 4096).expect("page-aligned ring layout")
    }

    fn new() -> io::Result<BufRing> {
        // SAFETY: the layout has a non-zero size; the memory is zeroed, which
        // is a valid `io_uring_buf` array, and freed in `Drop`.
        let entries = unsafe { alloc::alloc_zeroed(Self::layout()) }.cast::<types::BufRingEntry>();
        if entries.is_null() {
            return Err(io::Error::other("out of memory for the buffer ring"));
        }
        let mut ring = BufRing { entries, data: vec![0; BUFFERS as usize * BUF_SIZE], tail: 0 };
        for bid in 0..BUFFERS {
            ring.give_back(bid);
        }
        ring.publish();
        Ok(ring)
    }

    /// The bytes of buffer `bid`.
    fn buf(&self, bid: u16) -> &[u8] {
        let start = bid as usize * BUF_SIZE;
        &self.data[start..start + BUF_SIZE]
    }

    /// Puts buffer `bid` back in the ring (seen by the kernel after `publish`).
    fn give_back(&mut self, bid: u16) {
        let slot = (self.tail & (BUFFERS - 1)) as usize;
        // SAFETY: `slot` < BUFFERS, inside the allocation; the kernel reads
        // only entries below the published tail, and this one is above it.
        let e = unsafe { &mut *self.entries.add(slot) };
        e.set_addr(self.buf(bid).as_ptr() as u64);
        e.set_len(BUF_SIZE as u32);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes the buffers given back so far visible to the kernel.
    fn publish(&self) {
        // SAFETY: the tail field lies in the first entry, which is allocated
        // and aligned for a u16; the kernel reads it concurrently, hence the
        // atomic store with release ordering (the entries before it).
        unsafe {
            let tail = types::BufRingEntry::tail(self.entries).cast::<AtomicU16>();
            (*tail).store(self.tail, Ordering::Release);
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with the same layout.
        unsafe { alloc::dealloc(self.entries.cast(), Self::layout()) }
    }
}

fn serve(listen: &str) -> io::Result<()> {
    let listener = TcpListener::bind(listen)?;
    let mut bufs = BufRing::new()?;
    let mut ring: IoUring =
        IoUring::builder().setup_single_issuer().setup_defer_taskrun().setup_cqsize(32768).build(4096)?;
    // SAFETY: the ring memory lives in `bufs`, which is dropped after `ring`
    // (declared earlier) and never moves its allocation.
    unsafe { ring.submitter().register_buf_ring_with_flags(bufs.entries as u64, BUFFERS, GROUP, 0)? };
    println!("listening on {}", listener.local_addr()?);
    io::stdout().flush()?;
    let lfd = listener.as_raw_fd();
    let mut peers: Vec<Option<Peer>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut next: Vec<squeue::Entry> = vec![accept(lfd)];
    loop {
        {
            let mut sq = ring.submission();
            for e in next.drain(..) {
                // SAFETY: every buffer an entry points at (a peer's `sending`)
                // stays allocated and unchanged until its completion.
                if unsafe { sq.push(&e) }.is_err() {
                    return Err(io::Error::other("submission queue full"));
                }
            }
        }
        match ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for c in ring.completion() {
            let (data, res, flags) = (c.user_data(), c.result(), c.flags());
            if data == ACCEPT {
                if !cqueue::more(flags) {
                    next.push(accept(lfd));
                }
                if res < 0 {
                    continue; // EMFILE and the like: a yard stick has no limits to apply
                }
                // SAFETY: a completed accept's result is a new descriptor we own.
                let fd = unsafe { OwnedFd::from_raw_fd(res) };
                rustix::net::sockopt::set_tcp_nodelay(&fd, true)?;
                let key = free.pop().unwrap_or_else(|| {
                    peers.push(None);
                    peers.len() - 1
                });
                next.push(recv(fd.as_raw_fd(), key));
                peers[key] = Some(Peer { fd, sending: Vec::new(), queued: Vec::new(), recv_done: false });
                continue;
            }
            let key = (data & KEY) as usize;
            let Some(Some(peer)) = peers.get_mut(key) else { continue };
            if data & SEND != 0 {
                match usize::try_from(res) {
                    Ok(n) if n < peer.sending.len() => {
                        peer.sending.drain(..n);
                        next.push(send(peer, key));
                        continue;
                    }
                    Ok(_) => peer.sending.clear(),
                    Err(_) => {
                        // The peer is gone: end the receive too (it completes
                        // with EOF), then close.
                        peer.sending.clear();
                        peer.queued.clear();
                        let _ = rustix::net::shutdown(&peer.fd, rustix::net::Shutdown::Both);
                    }
                }
                if !peer.queued.is_empty() {
                    std::mem::swap(&mut peer.sending, &mut peer.queued);
                    next.push(send(peer, key));
                }
            } else {
                if let Some(bid) = cqueue::buffer_select(flags) {
                    if let Ok(n @ 1..) = usize::try_from(res) {
                        peer.queued.extend_from_slice(&bufs.buf(bid)[..n]);
                    }
                    bufs.give_back(bid);
                }
                if res == -(rustix::io::Errno::NOBUFS.raw_os_error()) {
                    next.push(recv(peer.fd.as_raw_fd(), key)); // out of buffers: re-arm
                } else if !cqueue::more(flags) {
                    if res <= 0 {
                        peer.recv_done = true;
                    } else {
                        next.push(recv(peer.fd.as_raw_fd(), key));
                    }
                }
                if peer.sending.is_empty() && !peer.queued.is_empty() {
                    std::mem::swap(&mut peer.sending, &mut peer.queued);
                    next.push(send(peer, key));
                }
            }
            if peer.recv_done && peer.sending.is_empty() {
                peers[key] = None; // closes the descriptor: nothing of it is in flight
                free.push(key);
            }
        }
        bufs.publish();
    }
}

fn accept(lfd: RawFd) -> squeue::Entry {
    opcode::AcceptMulti::new(types::Fd(lfd)).build().user_data(ACCEPT)
}

fn recv(fd: RawFd, key: usize) -> squeue::Entry {
    opcode::RecvMulti::new(types::Fd(fd), GROUP).build().user_data(key as u64)
}

fn send(peer: &Peer, key: usize) -> squeue::Entry {
    let len = u32::try_from(peer.sending.len()).unwrap_or(u32::MAX);
    opcode::Send::new(types::Fd(peer.fd.as_raw_fd()), peer.sending.as_ptr(), len)
        .flags(rustix::net::SendFlags::NOSIGNAL.bits() as i32)
        .build()
        .user_data(SEND | key as u64)
}
