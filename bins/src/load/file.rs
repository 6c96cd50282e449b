//! File mode: `get NAME` against the file handler. Each response is a 4-byte
//! little-endian header length, a JSON header, then `file_size` raw bytes;
//! their md5 is checked against the header's.

use std::collections::VecDeque;

use md5::{Digest, Md5};
use switchboard_handlers::file::proto::{self, LEN_PREFIX};

use super::worker::{Cx, Protocol};

/// The largest `file_size` a header may declare (1 TiB): past it the
/// header is a protocol error and the connection is closed, rather than
/// reading (and hashing) for ever what a broken server says is coming.
pub const MAX_FILE_SIZE: u64 = 1 << 40;

/// Open loop: requests one connection may have in flight.
const OPEN_LOOP_MAX_IN_FLIGHT: usize = 1024;

/// The file protocol.
#[derive(Debug)]
pub(crate) struct FileGet {
    request: Vec<u8>,
    verify: bool,
    out: FileOutput,
}

/// What one thread found.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FileOutput {
    /// Downloads whose md5 matched the header's.
    pub(crate) md5_ok: u64,
    /// Downloads whose md5 did not.
    pub(crate) md5_mismatch: u64,
    /// Error responses (`not found` and the like).
    pub(crate) error_replies: u64,
    /// The size announced by the last header.
    pub(crate) file_size: u64,
    /// Headers that declared more than [`MAX_FILE_SIZE`].
    pub(crate) oversized: u64,
}

enum Stage {
    /// Reading the 4-byte header length.
    Len { buf: [u8; LEN_PREFIX], got: usize },
    /// Reading the JSON header.
    Header { buf: Vec<u8>, need: usize },
    /// Reading the content.
    Body { remaining: u64, md5: Option<Md5>, expected: String },
}

/// One connection.
pub(crate) struct FileConn {
    stage: Stage,
    in_flight: VecDeque<u64>,
}

impl std::fmt::Debug for FileConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileConn").field("in_flight", &self.in_flight.len()).finish_non_exhaustive()
    }
}

impl FileGet {
    pub(crate) fn new(name: &str, verify: bool) -> FileGet {
        FileGet { request: format!("get {name}\n").into_bytes(), verify, out: FileOutput::default() }
    }

    /// One response is over.
    fn done(&mut self, c: &mut FileConn, cx: &mut Cx<'_>) -> Result<(), String> {
        let sent_at = c.in_flight.pop_front().ok_or("a response arrived that was never asked for")?;
        cx.complete(sent_at);
        c.stage = Stage::Len { buf: [0; 4], got: 0 };
        Ok(())
    }

    fn header(&mut self, c: &mut FileConn, json: &[u8], cx: &mut Cx<'_>) -> Result<(), String> {
        let header = proto::parse(json).map_err(|e| e.to_string())?;
        let size = header.file_size;
        if size > MAX_FILE_SIZE {
            if self.out.oversized == 0 {
                log::warn!("a header declares {size} bytes, more than {MAX_FILE_SIZE}: a protocol error");
            }
            self.out.oversized += 1;
            return Err(format!("a header declares {size} bytes, more than {MAX_FILE_SIZE}"));
        }
        if let Some(err) = &header.error {
            log::debug!("server error: {err}");
            self.out.error_replies += 1;
            cx.tally.errors.protocol += 1;
        }
        self.out.file_size = size;
        let expected = header.md5.unwrap_or_default();
        if size == 0 {
            if header.error.is_none() {
                self.check_md5(&expected, Md5::new(), cx);
            }
            return self.done(c, cx);
        }
        let md5 = self.verify.then(Md5::new);
        c.stage = Stage::Body { remaining: size, md5, expected };
        Ok(())
    }

    fn check_md5(&mut self, expected: &str, md5: Md5, cx: &mut Cx<'_>) {
        let got: String = md5.finalize().iter().map(|b| format!("{b:02x}")).collect();
        if got == expected {
            self.out.md5_ok += 1;
        } else {
            log::debug!("md5 mismatch: header {expected}, content {got}");
            self.out.md5_mismatch += 1;
            cx.tally.errors.mismatches += 1;
        }
    }
}

impl Protocol for FileGet {
    type Conn = FileConn;
    type Output = FileOutput;

    fn open(&mut self, _global: usize) -> FileConn {
        FileConn { stage: Stage::Len { buf: [0; 4], got: 0 }, in_flight: VecDeque::new() }
    }

    fn on_data(&mut self, c: &mut FileConn, mut data: &[u8], cx: &mut Cx<'_>) -> Result<(), String> {
        while !data.is_empty() {
            if c.in_flight.is_empty() {
                return Err("bytes arrived that were never asked for".into());
            }
            match &mut c.stage {
                Stage::Len { buf, got } => {
                    let n = (LEN_PREFIX - *got).min(data.len());
                    buf[*got..*got + n].copy_from_slice(&data[..n]);
                    *got += n;
                    data = &data[n..];
                    if *got == LEN_PREFIX {
                        let need = proto::decode_len(*buf).map_err(|e| e.to_string())?;
                        if need == 0 {
                            return Err("bad header length 0".into());
                        }
                        c.stage = Stage::Header { buf: Vec::with_capacity(need), need };
                    }
                }
                Stage::Header { buf, need } => {
                    let n = (*need - buf.len()).min(data.len());
                    buf.extend_from_slice(&data[..n]);
                    data = &data[n..];
                    if buf.len() == *need {
                        let json = std::mem::take(buf);
                        self.header(c, &json, cx)?;
                    }
                }
                Stage::Body { remaining, md5, .. } => {
                    let n = usize::try_from(*remaining).unwrap_or(usize::MAX).min(data.len());
                    if let Some(m) = md5 {
                        m.update(&data[..n]);
                    }
                    *remaining -= n as u64;
                    cx.bytes(n);
                    data = &data[n..];
                    if *remaining == 0 {
                        let stage = std::mem::replace(&mut c.stage, Stage::Len { buf: [0; 4], got: 0 });
                        if let Stage::Body { md5: Some(m), expected, .. } = stage {
                            self.check_md5(&expected, m, cx);
                        }
                        self.done(c, cx)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn may_send(&self, c: &FileConn, depth: usize) -> bool {
        c.in_flight.len() < depth
    }

    fn may_send_open(&self, c: &FileConn) -> bool {
        c.in_flight.len() < OPEN_LOOP_MAX_IN_FLIGHT
    }

    fn send(&mut self, c: &mut FileConn, intended_ns: u64, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.request);
        c.in_flight.push_back(intended_ns);
    }

    fn in_flight(&self, c: &FileConn) -> usize {
        c.in_flight.len()
    }

    fn close(&mut self, _c: FileConn) {}

    fn finish(self) -> FileOutput {
        self.out
    }
}
