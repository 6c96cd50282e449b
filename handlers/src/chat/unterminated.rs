//! `accept_unterminated`: a partial line that has waited long enough with
//! no more bytes is taken as a complete line.
//!
//! The socket tutorials' clients send `hello` with no newline and block on
//! `recv(1024)` for the answer; a line protocol would wait for the newline
//! forever. With this option the chat cuts its own lines (raw framing and
//! the core's line [`Decoder`], so the line rules are the same: LF or CRLF,
//! the line limit, over-long lines skipped) and arms a timer whenever a
//! partial line is left; when the timer fires with no byte since, the
//! partial line is handled as a line (a CR at its end dropped). At EOF a
//! partial line is handled too.
//!
//! Off by default: on a slow link a line can arrive in several TCP
//! segments with a pause between them longer than the wait, and would be
//! cut in two lines. It needs no hook in the core: `Conn::set_timer` is the
//! quiet-period clock. The core's frame timeout no longer sees a partial
//! line (the chat holds it, at most the line limit), so a peer trickling a
//! line byte by byte is cut by the timer instead, and by the idle timeout.

use std::time::Duration;

use switchboard::{Conn, Decoder, Flow, Framing, Handler, Step};

use super::{Chat, ChatSession};

/// The id of the quiet-period timer.
const QUIET_TIMER: u64 = 0x5155_4945_5400;

/// The bytes of a partial line, and the line rules.
#[derive(Debug)]
pub(crate) struct Splitter {
    decoder: Decoder,
    pending: Vec<u8>,
    after: Duration,
}

impl Chat {
    /// Takes a partial line as a complete line once it has waited `after`
    /// with no more bytes (see PROTOCOLS.md; off by default, because a line
    /// split across TCP segments by a slow link would be cut in two).
    pub fn accept_unterminated(mut self, after: Duration) -> Chat {
        self.unterminated = Some(after);
        self
    }

    /// The framing: lines, or raw when the chat cuts lines itself.
    pub(crate) fn chat_framing(&self) -> Framing {
        match self.unterminated {
            Some(_) => Framing::Raw,
            None => Framing::lines(self.max_line),
        }
    }

    /// A new connection's splitter, when the chat cuts lines itself.
    pub(crate) fn splitter(&self) -> Option<Splitter> {
        self.unterminated.map(|after| Splitter {
            decoder: Decoder::new(Framing::lines(self.max_line)),
            pending: Vec::new(),
            after,
        })
    }

    /// Raw bytes in: each whole line handled as a frame; a partial line is
    /// kept and the quiet timer armed.
    pub(crate) fn split_input(
        &self,
        session: &mut ChatSession,
        split: &mut Splitter,
        data: &[u8],
        conn: &mut Conn<'_>,
    ) -> Flow {
        split.pending.extend_from_slice(data);
        let mut used = 0;
        let mut flow = Flow::Continue;
        while flow == Flow::Continue {
            match split.decoder.next(&split.pending[used..]) {
                Step::Frame(line, n) => {
                    used += n;
                    flow = Handler::frame(self, session, line, conn);
                }
                Step::Error(e, n) => {
                    used += n;
                    flow = Handler::frame_error(self, session, e, conn);
                }
                Step::Skip(n) => used += n,
                Step::Incomplete => break,
            }
        }
        split.pending.drain(..used);
        if flow == Flow::Continue && !split.pending.is_empty() {
            // Re-armed by every read: the wait is for quiet, not in all.
            if !conn.set_timer(QUIET_TIMER, split.after) {
                log::warn!("chat: conn {}: no timer left for a partial line", conn.id());
            }
        } else {
            conn.cancel_timer(QUIET_TIMER);
        }
        flow
    }

    /// The partial line as a line (the quiet timer fired, or EOF).
    pub(crate) fn split_flush(
        &self,
        session: &mut ChatSession,
        split: &mut Splitter,
        conn: &mut Conn<'_>,
    ) -> Flow {
        if split.pending.is_empty() {
            return Flow::Continue;
        }
        let mut line = std::mem::take(&mut split.pending);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        Handler::frame(self, session, &line, conn)
    }

    /// A timer of the chat fired: the quiet timer takes the partial line.
    pub(crate) fn split_timer(&self, session: &mut ChatSession, id: u64, conn: &mut Conn<'_>) -> Flow {
        match (id, session.split.take()) {
            (QUIET_TIMER, Some(mut split)) => {
                let flow = self.split_flush(session, &mut split, conn);
                session.split = Some(split);
                flow
            }
            (_, split) => {
                session.split = split;
                Flow::Continue
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use switchboard::Harness;

    use super::*;

    fn text(h: &mut Harness<Chat>) -> String {
        String::from_utf8(h.output()).unwrap()
    }

    #[test]
    fn a_partial_line_is_a_line_once_the_quiet_timer_fires() {
        let chat = Chat::new(16).accept_unterminated(Duration::from_millis(200));
        let mut h = Harness::new(chat);
        assert_eq!(text(&mut h), "* welcome guest-1\n");
        // Whole lines are handled at once; the partial one waits.
        assert_eq!(h.input(b"/who\n/w"), Flow::Continue);
        assert_eq!(text(&mut h), "* online: guest-1\n");
        assert_eq!(h.timers().iter().map(|t| t.0).collect::<Vec<_>>(), vec![QUIET_TIMER]);
        assert!(h.timers()[0].1 <= Duration::from_millis(200));
        h.input(b"ho");
        assert_eq!(text(&mut h), "");
        assert_eq!(h.fire_timer(QUIET_TIMER), Some(Flow::Continue));
        assert_eq!(text(&mut h), "* online: guest-1\n");
        // Nothing pending: no timer.
        h.input(b"/who\r\n");
        assert_eq!(text(&mut h), "* online: guest-1\n");
        assert!(h.timers().is_empty());
        // Over the line limit: the same rule as the line framing.
        h.input(&[b'x'; 40]);
        assert_eq!(text(&mut h), "! line too long\n");
        h.input(b"xx\nquit\r");
        assert_eq!(h.fire_timer(QUIET_TIMER), Some(Flow::Close));
        assert_eq!(text(&mut h), "* bye\n");
    }

    #[test]
    fn off_by_default_a_partial_line_waits_for_its_newline() {
        let mut h = Harness::new(Chat::new(16));
        text(&mut h);
        h.input(b"/who");
        assert_eq!(text(&mut h), "");
        assert!(h.timers().is_empty());
        h.input(b"\n");
        assert_eq!(text(&mut h), "* online: guest-1\n");
    }
}
