//! Chat mode: every member of one room sends; every member checks that it
//! receives every other member's messages, in order, and measures each
//! delivery's latency from the send time carried in the message:
//! `m <sender> <seq> <nanoseconds since the run's epoch>` (padded to `--size`).

use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::shared::Shared;
use super::worker::{Cx, Protocol, Tally};

/// The longest line accepted from the server.
const MAX_INCOMING_LINE: usize = 16 * 1024;

/// The chat protocol.
#[derive(Debug)]
pub(crate) struct Chat {
    size: usize,
    members: usize,
    shared: Arc<Shared>,
    out: ChatOutput,
}

/// One member.
#[derive(Debug)]
pub(crate) struct ChatConn {
    id: usize,
    welcomed: bool,
    seq: u64,
    /// The start of a line whose end has not arrived.
    partial: Vec<u8>,
    /// Per sender: the next sequence number expected from it.
    next: Vec<u32>,
    received: u64,
}

/// What one thread found.
#[derive(Debug, Default)]
pub(crate) struct ChatOutput {
    /// Per member of this thread: (global id, welcomed, messages sent, messages received).
    pub(crate) members: Vec<(usize, bool, u64, u64)>,
    /// Messages that came out of order or twice.
    pub(crate) out_of_order: u64,
}

impl Chat {
    pub(crate) fn new(size: usize, members: usize, shared: Arc<Shared>) -> Chat {
        Chat { size, members, shared, out: ChatOutput::default() }
    }

    fn others(&self) -> i64 {
        self.shared.ready_total.load(Ordering::Acquire).saturating_sub(1) as i64
    }

    fn line(&mut self, c: &mut ChatConn, line: &[u8], cx: &mut Cx<'_>) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if !c.welcomed {
            if line.starts_with(b"* welcome") {
                c.welcomed = true;
                c.next = vec![0; self.members];
            }
            return;
        }
        if line.is_empty() || line.starts_with(b"* ") {
            return; // joined, left, renamed: not measured
        }
        match parse(line) {
            Some((sender, seq, sent_ns)) if sender < self.members && sender != c.id => {
                let next = &mut c.next[sender];
                if seq < u64::from(*next) {
                    self.out.out_of_order += 1;
                    cx.tally.errors.mismatches += 1;
                    return;
                }
                if seq > u64::from(*next) {
                    self.out.out_of_order += 1;
                    cx.tally.errors.mismatches += 1;
                }
                *next = u32::try_from(seq + 1).unwrap_or(u32::MAX);
                c.received += 1;
                cx.complete(sent_ns);
                if let Some(chat) = &self.shared.chat {
                    chat.outstanding[sender].fetch_sub(1, Ordering::AcqRel);
                    chat.total.fetch_sub(1, Ordering::AcqRel);
                }
            }
            _ => {
                log::debug!("member {}: unexpected line {:?}", c.id, String::from_utf8_lossy(line));
                cx.tally.errors.protocol += 1;
            }
        }
    }
}

/// `<nick> m <sender> <seq> <nanos> [padding]`
fn parse(line: &[u8]) -> Option<(usize, u64, u64)> {
    let text = std::str::from_utf8(line).ok()?;
    let mut words = text.split(' ');
    let _nick = words.next()?;
    if words.next()? != "m" {
        return None;
    }
    let sender = words.next()?.parse().ok()?;
    let seq = words.next()?.parse().ok()?;
    let nanos = words.next()?.parse().ok()?;
    Some((sender, seq, nanos))
}

impl Protocol for Chat {
    type Conn = ChatConn;
    type Output = ChatOutput;

    fn open(&mut self, global: usize) -> ChatConn {
        ChatConn { id: global, welcomed: false, seq: 0, partial: Vec::new(), next: Vec::new(), received: 0 }
    }

    fn is_ready(&self, c: &ChatConn) -> bool {
        c.welcomed
    }

    fn on_data(&mut self, c: &mut ChatConn, mut data: &[u8], cx: &mut Cx<'_>) -> Result<(), String> {
        if !c.partial.is_empty() {
            match data.iter().position(|&b| b == b'\n') {
                Some(end) => {
                    let mut line = std::mem::take(&mut c.partial);
                    line.extend_from_slice(&data[..end]);
                    self.line(c, &line, cx);
                    line.clear();
                    c.partial = line; // keep the allocation
                    data = &data[end + 1..];
                }
                None => data = self.keep(c, data)?,
            }
        }
        while let Some(end) = data.iter().position(|&b| b == b'\n') {
            self.line(c, &data[..end], cx);
            data = &data[end + 1..];
        }
        self.keep(c, data)?;
        Ok(())
    }

    fn may_send(&self, c: &ChatConn, depth: usize) -> bool {
        let others = self.others();
        let Some(chat) = &self.shared.chat else { return false };
        others > 0 && chat.outstanding[c.id].load(Ordering::Acquire) < depth as i64 * others
    }

    fn may_send_open(&self, _c: &ChatConn) -> bool {
        true
    }

    fn send(&mut self, c: &mut ChatConn, intended_ns: u64, out: &mut Vec<u8>) {
        let start = out.len();
        let _ = write!(out, "m {} {} {}", c.id, c.seq, intended_ns);
        let len = out.len() - start;
        if len + 1 < self.size {
            out.push(b' ');
            out.resize(start + self.size, b'x');
        }
        out.push(b'\n');
        c.seq += 1;
        let others = self.others();
        if let Some(chat) = &self.shared.chat {
            chat.outstanding[c.id].fetch_add(others, Ordering::AcqRel);
            chat.total.fetch_add(others, Ordering::AcqRel);
        }
    }

    fn in_flight(&self, _c: &ChatConn) -> usize {
        0 // what is missing is counted per member at the end
    }

    fn all_done(&self, _tally: &Tally) -> bool {
        match &self.shared.chat {
            Some(c) => c.total.load(Ordering::Acquire) <= 0,
            None => true,
        }
    }

    fn pump_all(&self) -> bool {
        true
    }

    fn close(&mut self, c: ChatConn) {
        self.out.members.push((c.id, c.welcomed, c.seq, c.received));
    }

    fn finish(self) -> ChatOutput {
        self.out
    }
}

impl Chat {
    /// Keeps the start of an unfinished line; returns the empty rest.
    fn keep<'a>(&self, c: &mut ChatConn, data: &'a [u8]) -> Result<&'a [u8], String> {
        if c.partial.len() + data.len() > MAX_INCOMING_LINE {
            return Err(format!("a line from the server is longer than {MAX_INCOMING_LINE} bytes"));
        }
        c.partial.extend_from_slice(data);
        Ok(&data[data.len()..])
    }
}

/// The check over all members: who received everything the others sent.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ChatCheck {
    pub(crate) members: u64,
    pub(crate) expected: u64,
    pub(crate) received: u64,
    pub(crate) missing: u64,
    pub(crate) complete_members: u64,
    pub(crate) out_of_order: u64,
}

/// Merges the threads' findings.
pub(crate) fn check(outputs: &[ChatOutput]) -> ChatCheck {
    let members: Vec<_> = outputs.iter().flat_map(|o| o.members.iter()).filter(|m| m.1).collect();
    let total_sent: u64 = members.iter().map(|m| m.2).sum();
    let mut ck = ChatCheck { members: members.len() as u64, ..ChatCheck::default() };
    for &&(_, _, sent, received) in &members {
        let expected = total_sent - sent;
        ck.expected += expected;
        ck.received += received;
        ck.missing += expected.saturating_sub(received);
        if received >= expected {
            ck.complete_members += 1;
        }
    }
    ck.out_of_order = outputs.iter().map(|o| o.out_of_order).sum();
    ck
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_relayed_lines() {
        assert_eq!(parse(b"<guest-1> m 3 17 123456 xxxx"), Some((3, 17, 123456)));
        assert_eq!(parse(b"guest-1 m 3 17 123456"), Some((3, 17, 123456)));
        assert_eq!(parse(b"<guest-1> hello there"), None);
        assert_eq!(parse(b"<guest-1> m x 1 2"), None);
    }

    #[test]
    fn check_counts_missing_deliveries() {
        let out =
            ChatOutput { members: vec![(0, true, 5, 3), (1, true, 3, 5), (2, false, 0, 0)], out_of_order: 0 };
        let ck = check(&[out]);
        assert_eq!(ck.members, 2);
        assert_eq!(ck.expected, 8);
        assert_eq!(ck.received, 8);
        assert_eq!(ck.complete_members, 2);
        let out = ChatOutput { members: vec![(0, true, 5, 2), (1, true, 3, 5)], out_of_order: 0 };
        let ck = check(&[out]);
        assert_eq!(ck.missing, 1);
        assert_eq!(ck.complete_members, 1);
    }
}
