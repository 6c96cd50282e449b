//! A connection's queue of replies: bytes, shared messages and file regions,
//! written in order with `writev` and `sendfile`.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, IoSlice, Write};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rustix::io::Errno;

use crate::message::Message;
use crate::transport::Transport;

/// Small replies are appended to the last owned chunk up to this size.
const COALESCE: usize = 16 * 1024;
/// At most this many chunks go into one `writev`.
const MAX_IOV: usize = 64;
/// A shared message this small is copied into the coalescing buffer: its
/// bytes cost less than a queue entry of its own.
const SMALL_SHARED: usize = 256;
/// The largest count handed to one `sendfile` call.
const MAX_SENDFILE: usize = 1 << 30;

enum Chunk {
    Owned(Vec<u8>),
    Shared(Message),
    File { file: Arc<File>, offset: u64, end: u64 },
}

impl Chunk {
    fn bytes(&self) -> Option<&[u8]> {
        match self {
            Chunk::Owned(v) => Some(v),
            Chunk::Shared(m) => Some(m),
            Chunk::File { .. } => None,
        }
    }
}

/// Why writing stopped for good.
#[derive(Debug)]
pub(crate) enum WriteError {
    Io(io::Error),
    /// A file region could not be sent whole: the file shrank.
    FileTruncated,
}

/// The queue. Holds no allocation while empty.
#[derive(Default)]
pub(crate) struct Outbound {
    chunks: VecDeque<Chunk>,
    /// Bytes of the front chunk already written.
    head: usize,
    /// File regions queued.
    files: usize,
}

impl Outbound {
    /// File regions queued (each holds a descriptor).
    pub(crate) fn files(&self) -> usize {
        self.files
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Queues a copy of `data`; `total` is the server-wide count of queued
    /// memory bytes (every change to what a queue holds is counted there).
    pub(crate) fn push_bytes(&mut self, data: &[u8], total: &AtomicUsize) {
        total.fetch_add(data.len(), Ordering::Relaxed);
        // The front chunk may be partly written: never append to it.
        let appendable = self.chunks.len() > 1 || self.head == 0;
        if let Some(Chunk::Owned(last)) = self.chunks.back_mut() {
            if appendable && last.len() + data.len() <= COALESCE {
                last.extend_from_slice(data);
                return;
            }
        }
        self.chunks.push_back(Chunk::Owned(data.to_vec()));
    }

    pub(crate) fn push_message(&mut self, msg: Message, total: &AtomicUsize) {
        if msg.len() <= SMALL_SHARED {
            return self.push_bytes(&msg, total);
        }
        total.fetch_add(msg.len(), Ordering::Relaxed);
        self.chunks.push_back(Chunk::Shared(msg));
    }

    pub(crate) fn push_file(&mut self, file: Arc<File>, offset: u64, len: u64) {
        let end = offset.saturating_add(len);
        self.files += 1;
        self.chunks.push_back(Chunk::File { file, offset, end });
    }

    /// The memory bytes queued (file regions not included).
    pub(crate) fn mem(&self) -> usize {
        let all: usize = self.chunks.iter().filter_map(Chunk::bytes).map(<[u8]>::len).sum();
        all - if self.chunks.front().and_then(Chunk::bytes).is_some() { self.head } else { 0 }
    }

    /// Drops everything queued; returns the memory bytes dropped.
    pub(crate) fn clear(&mut self, total: &AtomicUsize) -> usize {
        let mut n = 0;
        for (i, c) in self.chunks.drain(..).enumerate() {
            if let Some(b) = c.bytes() {
                n += b.len() - if i == 0 { self.head } else { 0 };
            }
        }
        self.head = 0;
        self.files = 0;
        self.chunks = VecDeque::new();
        total.fetch_sub(n, Ordering::Relaxed);
        n
    }

    /// Writes until the socket would block or the queue is empty. Returns the
    /// bytes written; memory bytes written are counted off the connection's
    /// queue. `spare` is a buffer for the read-and-write fallback of file
    /// regions.
    pub(crate) fn write_to(
        &mut self,
        sock: &mut Transport,
        queued: &AtomicUsize,
        held: &AtomicUsize,
        spare: &mut [u8],
    ) -> Result<u64, WriteError> {
        let mut total = 0u64;
        loop {
            let result = match self.chunks.front() {
                // Below the replies, a transport may hold bytes (TLS records).
                None => match sock.flush() {
                    Ok(()) => break,
                    Err(e) => Err(WriteError::Io(e)),
                },
                Some(Chunk::File { .. }) => self.write_file(sock, spare),
                Some(_) => self.write_bytes(sock).inspect(|&n| {
                    queued.fetch_sub(n, Ordering::AcqRel);
                    held.fetch_sub(n, Ordering::Relaxed);
                }),
            };
            match result {
                Ok(n) => total += n as u64,
                Err(WriteError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(WriteError::Io(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.chunks.is_empty() && self.chunks.capacity() > 16 {
            self.chunks = VecDeque::new();
        }
        Ok(total)
    }

    /// Everything queued, as bytes (file regions read), for a test harness
    /// with no socket. Memory bytes are counted off the connection's queue.
    pub(crate) fn drain_into(
        &mut self,
        sink: &mut Vec<u8>,
        queued: &AtomicUsize,
        total: &AtomicUsize,
    ) -> Result<(), WriteError> {
        while let Some(chunk) = self.chunks.pop_front() {
            let head = std::mem::take(&mut self.head);
            if let Chunk::File { file, offset, end } = chunk {
                self.files -= 1;
                let len = usize::try_from(end - offset).map_err(|_| WriteError::FileTruncated)?;
                let start = sink.len();
                sink.resize(start + len, 0);
                file.read_exact_at(&mut sink[start..], offset).map_err(|_| WriteError::FileTruncated)?;
            } else if let Some(bytes) = chunk.bytes() {
                sink.extend_from_slice(&bytes[head..]);
                queued.fetch_sub(bytes.len() - head, Ordering::AcqRel);
                total.fetch_sub(bytes.len() - head, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    fn write_bytes<S: Write>(&mut self, sock: &mut S) -> Result<usize, WriteError> {
        let n = match self.chunks.len() {
            // One chunk (a request-response reply, the usual case): a plain
            // `send`, without building the `writev` array.
            1 => {
                let bytes = self.chunks.front().and_then(Chunk::bytes).unwrap_or_default();
                sock.write(&bytes[self.head..])
            }
            _ => {
                let mut slices: [IoSlice<'_>; MAX_IOV] = [IoSlice::new(&[]); MAX_IOV];
                let mut count = 0;
                for (i, chunk) in self.chunks.iter().enumerate().take(MAX_IOV) {
                    let Some(bytes) = chunk.bytes() else { break };
                    slices[i] = IoSlice::new(if i == 0 { &bytes[self.head..] } else { bytes });
                    count += 1;
                }
                if count == 1 {
                    sock.write(&slices[0])
                } else {
                    sock.write_vectored(&slices[..count])
                }
            }
        }
        .map_err(WriteError::Io)?;
        if n == 0 {
            return Err(WriteError::Io(io::ErrorKind::WriteZero.into()));
        }
        let mut left = n;
        while left > 0 {
            let len = self.chunks.front().and_then(Chunk::bytes).map_or(0, <[u8]>::len);
            let rest = len - self.head;
            if left >= rest {
                left -= rest;
                self.head = 0;
                self.chunks.pop_front();
            } else {
                self.head += left;
                left = 0;
            }
        }
        Ok(n)
    }

    fn write_file(&mut self, sock: &mut Transport, spare: &mut [u8]) -> Result<usize, WriteError> {
        let Some(Chunk::File { file, offset, end }) = self.chunks.front_mut() else {
            unreachable!("write_file is called with a file region at the front");
        };
        let want = usize::try_from(*end - *offset).unwrap_or(usize::MAX).min(MAX_SENDFILE);
        let mut pos = *offset;
        let sent = match sock.zero_copy() {
            Some(fd) => rustix::fs::sendfile(fd, &**file, Some(&mut pos), want),
            None => Err(Errno::OPNOTSUPP),
        };
        let n = match sent {
            Ok(n) => n,
            Err(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => {
                // No sendfile for this pair: read and write. Only what the
                // socket took is consumed; the rest is read again next time.
                let len = want.min(spare.len());
                let got = file.read_at(&mut spare[..len], *offset).map_err(WriteError::Io)?;
                if got == 0 {
                    return Err(WriteError::FileTruncated);
                }
                sock.write(&spare[..got]).map_err(WriteError::Io)?
            }
            Err(e) => return Err(WriteError::Io(e.into())),
        };
        if n == 0 {
            return Err(WriteError::FileTruncated);
        }
        *offset += n as u64;
        if *offset >= *end {
            self.chunks.pop_front();
            self.files -= 1;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalesces_small_replies_and_small_shared_messages() {
        let mut out = Outbound::default();
        let total = AtomicUsize::new(0);
        for i in 0..100u8 {
            out.push_bytes(&[i], &total);
        }
        out.push_message(Message::from("abc"), &total);
        let big = Message::from(vec![7u8; SMALL_SHARED + 1]);
        out.push_message(big.clone(), &total);
        assert_eq!(total.load(Ordering::Relaxed), 103 + big.len());
        assert_eq!(out.chunks.len(), 2, "small bytes and the small message share one chunk");
        let mut sink: Vec<u8> = Vec::new();
        // A Vec is no socket; exercise the byte path directly.
        let n = out.write_bytes(&mut sink).unwrap();
        assert_eq!(n, 103 + big.len());
        assert_eq!(&sink[..100], &(0..100u8).collect::<Vec<_>>()[..]);
        assert_eq!(&sink[100..103], b"abc");
        assert_eq!(&sink[103..], &big[..]);
        assert!(out.is_empty());
    }

    #[test]
    fn clear_counts_unwritten_bytes() {
        let mut out = Outbound::default();
        let total = AtomicUsize::new(0);
        out.push_bytes(b"hello", &total);
        out.push_message(Message::from(vec![b'w'; 300]), &total);
        out.head = 2;
        assert_eq!(out.clear(&total), 303);
        assert_eq!(total.load(Ordering::Relaxed), 2, "what was written before is counted off by the writer");
        assert!(out.is_empty());
    }
}
