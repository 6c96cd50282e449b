//! A connection's queue of replies: bytes, shared messages and file regions,
//! written in order with `writev` and `sendfile`.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, IoSlice, Write};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rustix::io::Errno;

use crate::conn::Message;

/// Small replies are appended to the last owned chunk up to this size.
const COALESCE: usize = 16 * 1024;
/// At most this many chunks go into one `writev`.
const MAX_IOV: usize = 64;
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

    pub(crate) fn push_bytes(&mut self, data: &[u8]) {
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

    pub(crate) fn push_message(&mut self, msg: Message) {
        self.chunks.push_back(Chunk::Shared(msg));
    }

    pub(crate) fn push_file(&mut self, file: Arc<File>, offset: u64, len: u64) {
        let end = offset.saturating_add(len);
        self.files += 1;
        self.chunks.push_back(Chunk::File { file, offset, end });
    }

    /// Drops everything queued; returns the memory bytes dropped.
    pub(crate) fn clear(&mut self) -> usize {
        let mut n = 0;
        for (i, c) in self.chunks.drain(..).enumerate() {
            if let Some(b) = c.bytes() {
                n += b.len() - if i == 0 { self.head } else { 0 };
            }
        }
        self.head = 0;
        self.files = 0;
        self.chunks = VecDeque::new();
        n
    }

    /// Writes until the socket would block or the queue is empty. Returns the
    /// bytes written; memory bytes written are taken off `queued`. `spare` is
    /// a buffer for the read-and-write fallback of file regions.
    pub(crate) fn write_to<S: Write + std::os::fd::AsFd>(
        &mut self,
        sock: &mut S,
        queued: &AtomicUsize,
        spare: &mut [u8],
    ) -> Result<u64, WriteError> {
        let mut total = 0u64;
        loop {
            let result = match self.chunks.front() {
                None => break,
                Some(Chunk::File { .. }) => self.write_file(sock, spare),
                Some(_) => self.write_bytes(sock, queued),
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

    fn write_bytes<S: Write>(&mut self, sock: &mut S, queued: &AtomicUsize) -> Result<usize, WriteError> {
        let mut slices: [IoSlice<'_>; MAX_IOV] = [IoSlice::new(&[]); MAX_IOV];
        let mut count = 0;
        for (i, chunk) in self.chunks.iter().enumerate().take(MAX_IOV) {
            let Some(bytes) = chunk.bytes() else { break };
            slices[i] = IoSlice::new(if i == 0 { &bytes[self.head..] } else { bytes });
            count += 1;
        }
        let n = if count == 1 { sock.write(&slices[0]) } else { sock.write_vectored(&slices[..count]) }
            .map_err(WriteError::Io)?;
        if n == 0 {
            return Err(WriteError::Io(io::ErrorKind::WriteZero.into()));
        }
        queued.fetch_sub(n, Ordering::AcqRel);
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

    fn write_file<S: Write + std::os::fd::AsFd>(
        &mut self,
        sock: &mut S,
        spare: &mut [u8],
    ) -> Result<usize, WriteError> {
        let Some(Chunk::File { file, offset, end }) = self.chunks.front_mut() else {
            unreachable!("write_file is called with a file region at the front");
        };
        let want = usize::try_from(*end - *offset).unwrap_or(usize::MAX).min(MAX_SENDFILE);
        let mut pos = *offset;
        let n = match rustix::fs::sendfile(&*sock, &**file, Some(&mut pos), want) {
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
    fn coalesces_small_replies_and_accounts_bytes() {
        let mut out = Outbound::default();
        let queued = AtomicUsize::new(0);
        for i in 0..100u8 {
            queued.fetch_add(1, Ordering::AcqRel);
            out.push_bytes(&[i]);
        }
        queued.fetch_add(3, Ordering::AcqRel);
        out.push_message(Message::from("abc"));
        assert_eq!(out.chunks.len(), 2);
        let mut sink: Vec<u8> = Vec::new();
        // A Vec is no socket; exercise the byte path directly.
        let n = out.write_bytes(&mut sink, &queued).unwrap();
        assert_eq!(n, 103);
        assert_eq!(&sink[..100], &(0..100u8).collect::<Vec<_>>()[..]);
        assert_eq!(&sink[100..], b"abc");
        assert_eq!(queued.load(Ordering::Acquire), 0);
        assert!(out.is_empty());
    }

    #[test]
    fn clear_counts_unwritten_bytes() {
        let mut out = Outbound::default();
        out.push_bytes(b"hello");
        out.push_message(Message::from("world"));
        out.head = 2;
        assert_eq!(out.clear(), 8);
        assert!(out.is_empty());
    }
}
