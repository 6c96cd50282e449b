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
    /// Per sender: deliveries of its messages this thread has seen and not
    /// yet taken off the shared counts ([`Protocol::turn_done`]): one
    /// atomic per sender and turn, not per delivery.
    seen: Vec<u32>,
    /// The senders with a count in `seen`.
    seen_from: Vec<usize>,
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
        Chat {
            size,
            members,
            shared,
            out: ChatOutput::default(),
            seen: vec![0; members],
            seen_from: Vec::new(),
        }
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
                if self.seen[sender] == 0 {
                    self.seen_from.push(sender);
                }
                self.seen[sender] += 1;
            }
            _ => {
                log::debug!("member {}: unexpected line {:?}", c.id, String::from_utf8_lossy(line));
                cx.tally.errors.protocol += 1;
            }
        }
    }
}

/// `<nick> m <sender> <seq> <nanos> [padding]`, read from the bytes (no
/// UTF-8 pass over the padding: the fields are ASCII digits).
fn parse(line: &[u8]) -> Option<(usize, u64, u64)> {
    let nick_end = line.iter().position(|&b| b == b' ')?;
    let rest = line[nick_end + 1..].strip_prefix(b"m ")?;
    let (sender, rest) = number(rest)?;
    let (seq, rest) = number(rest)?;
    let (nanos, _padding) = number(rest)?;
    Some((usize::try_from(sender).ok()?, seq, nanos))
}

/// A decimal number ending at a space (taken) or at the end: it and the
/// rest. One pass over the digits.
fn number(b: &[u8]) -> Option<(u64, &[u8])> {
    let mut n: u64 = 0;
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        match c {
            b'0'..=b'9' => n = n.checked_mul(10)?.checked_add(u64::from(c - b'0'))?,
            b' ' => break,
            _ => return None,
        }
        i += 1;
    }
    if i == 0 {
        return None;
    }
    Some((n, b.get(i + 1..).unwrap_or(&[])))
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
            match memchr::memchr(b'\n', data) {
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
        while let Some(end) = memchr::memchr(b'\n', data) {
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

    /// Takes this turn's deliveries off the shared counts that let their
    /// senders send again and end the run.
    fn turn_done(&mut self) {
        let Some(chat) = &self.shared.chat else { return };
        let mut total = 0i64;
        for sender in self.seen_from.drain(..) {
            let n = i64::from(std::mem::take(&mut self.seen[sender]));
            chat.outstanding[sender].fetch_sub(n, Ordering::AcqRel);
            total += n;
        }
        if total > 0 {
            chat.total.fetch_sub(total, Ordering::AcqRel);
        }
    }

    fn close(&mut self, c: ChatConn) {
        self.out.members.push((c.id, c.welcomed, c.seq, c.received));
    }

    fn finish(mut self) -> ChatOutput {
        self.turn_done();
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
        assert_eq!(parse(b"<guest-1> m 3 17"), None);
        assert_eq!(parse(b"<guest-1> m 3 17 "), None);
        assert_eq!(parse(b"<guest-1> m 3  17 5"), None);
        assert_eq!(parse(b"<guest-1> m 3 17 5\xff\xfe"), None);
        assert_eq!(parse(b"<guest-1> m 3 17 99999999999999999999"), None, "past u64");
        assert_eq!(parse(b"<guest-1>m 3 17 5"), None);
        assert_eq!(parse(b"<guest-1> n 3 17 5"), None);
    }

    /// Deliveries seen in a turn are taken off the shared counts once, at
    /// the turn's end: per sender and in total, so the senders may go on.
    #[test]
    fn a_turns_deliveries_free_their_senders_at_its_end() {
        let shared = Arc::new(Shared::new(1, None, Some(3)));
        shared.ready_total.store(3, Ordering::Release);
        let mut chat = Chat::new(64, 3, Arc::clone(&shared));
        let (mut a, mut b, mut c) = (chat.open(0), chat.open(1), chat.open(2));
        let mut out = Vec::new();
        chat.send(&mut a, 5, &mut out);
        chat.send(&mut b, 5, &mut out);
        let counts = || {
            let ck = shared.chat.as_ref().unwrap();
            let per: Vec<i64> = ck.outstanding.iter().map(|o| o.load(Ordering::Acquire)).collect();
            (per, ck.total.load(Ordering::Acquire))
        };
        assert_eq!(counts(), (vec![2, 2, 0], 4));
        assert!(!chat.may_send(&a, 1), "a's message is on its way");
        let mut hist = super::super::worker::new_histogram();
        let mut tally = Tally::default();
        let mut interval = super::super::intervals::IntervalAcc::new();
        let mut cx =
            Cx { now_ns: 10, stop_ns: u64::MAX, hist: &mut hist, tally: &mut tally, interval: &mut interval };
        for (conn, data) in [
            (&mut c, &b"* welcome guest-3\n<guest-1> m 0 0 5 xx\n<guest-2> m 1 0 5\n"[..]),
            (&mut b, b"* welcome guest-2\n<guest-1> m 0 0 5\n"),
        ] {
            chat.on_data(conn, data, &mut cx).unwrap();
        }
        assert_eq!(counts(), (vec![2, 2, 0], 4), "nothing published before the turn ends");
        chat.turn_done();
        assert_eq!(counts(), (vec![0, 1, 0], 1));
        assert!(chat.may_send(&a, 1));
        assert_eq!((c.received, b.received, cx.tally.received), (2, 1, 3));
        chat.turn_done();
        assert_eq!(counts(), (vec![0, 1, 0], 1), "a second turn end publishes nothing twice");
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
