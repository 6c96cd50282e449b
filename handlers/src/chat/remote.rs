//! Members that are not on a TCP connection (UDP peers, the operator
//! console): the same room, commands, cleaning and rate rules as a TCP
//! member (the one dispatcher, `chat/dispatch.rs`), with replies going to
//! their own [`Reply`].
//!
//! The one difference is flood control: a TCP sender over its rate is
//! paused, and TCP holds its next lines back, losing nothing; a datagram
//! cannot be held back by not reading. So a remote member over its rate (or
//! sending while the room's rate is in debt because of it) has its lines
//! *dropped* until its pause is over, and is told once per pause:
//! `! slow down: lines dropped`.
//!
//! With `--redis`, a remote member's lines, joins and leaves reach the
//! other servers, but what needs Redis's answer is for TCP members (a
//! remote member cannot wait for a deferred reply): `/nick` of a nick the
//! cluster must grant is refused, `/who` and `/msg` see this server only,
//! and accounts (`/register`, `/login`) need a TCP connection anywhere.

use std::time::{Duration, Instant};

use switchboard::Flow;

use super::member::Member;
use super::reply::{Caller, Reply};
use super::room::NickError;
use super::{Chat, Seat};

/// A remote member's state.
#[derive(Debug)]
pub(crate) struct RemoteSession {
    seat: Seat,
    /// Lines until then are dropped (the flood control's pause).
    paused_until: Option<Instant>,
    /// Told about the current pause.
    warned: bool,
}

impl RemoteSession {
    fn new(seat: Seat) -> RemoteSession {
        RemoteSession { seat, paused_until: None, warned: false }
    }
}

/// A remote member as the dispatcher's [`Caller`]: its replies go to
/// `out`; a hold is remembered, to drop its lines until it ends.
struct Dropping<'a> {
    out: &'a mut dyn Reply,
    help: &'static str,
    hold: Option<Duration>,
}

impl Reply for Dropping<'_> {
    fn send(&mut self, text: &str) {
        self.out.send(text);
    }

    fn line(&mut self, text: &str) {
        self.out.line(text);
    }
}

impl Caller for Dropping<'_> {
    fn hold(&mut self, wait: Duration) {
        self.hold = self.hold.max(Some(wait));
    }

    fn help(&self) -> &'static str {
        self.help
    }
}

impl Chat {
    /// `member` joins the room as the next guest: returns its session and
    /// the welcome line; the others hear of it.
    pub(crate) fn remote_join(&self, member: Member) -> (RemoteSession, String) {
        let (seat, nick) = self.join(member);
        (RemoteSession::new(seat), format!("* welcome {nick}\n"))
    }

    /// `member` joins the room as `nick`; refused when the nick is invalid
    /// or taken.
    pub(crate) fn remote_join_as(
        &self,
        member: Member,
        nick: &str,
    ) -> Result<(RemoteSession, String), NickError> {
        let (seat, nick) = self.join_as(member, nick)?;
        Ok((RemoteSession::new(seat), format!("* welcome {nick}\n")))
    }

    /// The member leaves (at `/quit`, or when it goes: idle, shutdown,
    /// EOF); the others hear of it. Does nothing the second time.
    pub(crate) fn remote_leave(&self, session: &mut RemoteSession) {
        self.leave(&mut session.seat, false);
    }

    /// One line from a remote member (without its line ending). Replies go
    /// to `out`; `help`: the `/help` lines of its transport's own commands.
    /// Returns [`Flow::Close`] after `/quit`.
    pub(crate) fn remote_line(
        &self,
        session: &mut RemoteSession,
        line: &[u8],
        out: &mut dyn Reply,
        help: &'static str,
    ) -> Flow {
        if !session.seat.joined {
            return Flow::Close;
        }
        let now = Instant::now();
        if session.paused_until.is_some_and(|t| now < t) {
            if !std::mem::replace(&mut session.warned, true) {
                out.line("! slow down: lines dropped");
            }
            return Flow::Continue;
        }
        session.paused_until = None;
        session.warned = false;
        let mut caller = Dropping { out, help, hold: None };
        let flow = if line.len() > self.max_line {
            self.too_long(&mut session.seat, &mut caller);
            Flow::Continue
        } else {
            self.line(&mut session.seat, line, &mut caller)
        };
        if let Some(wait) = caller.hold {
            session.paused_until = Some(now + wait);
        }
        flow
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use parking_lot::Mutex;

    use super::*;
    use crate::chat::member::Log;

    #[test]
    fn over_its_rate_a_remote_member_loses_lines_and_is_told_once() {
        let chat = Chat::new(64).rate_limit(1);
        let listener = Arc::new(Log(1, Mutex::default()));
        let (mut l, _) = chat.remote_join(Member::Remote(listener.clone()));
        let (mut s, welcome) = chat.remote_join(Member::Remote(Arc::new(Log(2, Mutex::default()))));
        assert_eq!(welcome, "* welcome guest-2\n");
        let mut replies: Vec<String> = Vec::new();
        // A burst of twice the rate passes; the third line puts the member
        // in debt (it is relayed, as over TCP), the next ones are dropped.
        for line in ["a", "b", "c", "d", "e"] {
            assert_eq!(chat.remote_line(&mut s, line.as_bytes(), &mut replies, ""), Flow::Continue);
        }
        assert_eq!(replies, vec!["! slow down: lines dropped\n"]);
        let heard = listener.1.lock().clone();
        assert_eq!(heard, vec!["* guest-2 joined\n", "<guest-2> a\n", "<guest-2> b\n", "<guest-2> c\n"]);
        // Too long, and /quit.
        let mut r2: Vec<String> = Vec::new();
        assert_eq!(chat.remote_line(&mut l, &[b'x'; 65], &mut r2, ""), Flow::Continue);
        assert_eq!(chat.remote_line(&mut l, b"/quit", &mut r2, ""), Flow::Close);
        assert_eq!(r2, vec!["! line too long\n", "* bye\n"]);
        assert_eq!(chat.members(), 1);
        chat.remote_leave(&mut l);
        assert_eq!(chat.members(), 1, "leaving twice does nothing");
    }
}
