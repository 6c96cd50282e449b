//! Members that are not on a TCP connection (UDP peers, the operator
//! console): the same room, commands, cleaning and rate rules as a TCP
//! member, with replies handed to a closure instead of a `Conn`.
//!
//! The one difference is flood control: a TCP sender over its rate is
//! paused, and TCP holds its next lines back, losing nothing; a datagram
//! cannot be held back by not reading. So a remote member over its rate (or
//! sending while the room's rate is in debt because of it) has its lines
//! *dropped* until its pause is over, and is told once per pause:
//! `! slow down: lines dropped`.
//!
//! With `--redis`, a remote member's lines, joins and leaves reach the
//! other servers, but what needs Redis's answer is for TCP members:
//! `/nick` is refused, `/who` and `/msg` see this server only, and
//! accounts (`/register`, `/login`) need a TCP connection anywhere.

use std::time::{Duration, Instant};

use switchboard::Flow;

use super::local;
use super::member::Member;
use super::room::NickError;
use super::{broadcast, clean, cluster, parse, Bucket, Chat, Command, HELP};

/// The answer to what needs a Redis round trip (a nick claimed across
/// servers) from a member without a TCP connection.
const CLUSTER_TCP_ONLY: &str = "! on a clustered server, /nick needs a TCP connection\n";

/// A remote member's state.
#[derive(Debug)]
pub(crate) struct RemoteSession {
    /// The member's id in the room.
    pub(crate) id: u64,
    /// Whether it is still in the room.
    pub(crate) joined: bool,
    bucket: Bucket,
    /// Lines until then are dropped (the flood control's pause).
    paused_until: Option<Instant>,
    /// Told about the current pause.
    warned: bool,
}

impl Chat {
    /// `member` joins the room: returns its session and the welcome line;
    /// the others hear of it.
    pub(crate) fn remote_join(&self, member: Member) -> (RemoteSession, String) {
        let id = member.id();
        // A UDP join may be one of a flood: no list of a big room for it.
        let (nick, others) = self.room.lock().join_announced_up_to(id, member, self.announce_up_to);
        broadcast(&self.announce_to(others), format!("* {nick} joined\n"));
        if let Some(c) = &self.cluster {
            c.publish(cluster::Event::Join { nick: nick.clone() });
        }
        let session = RemoteSession {
            id,
            joined: true,
            bucket: Bucket::full(2.0 * f64::from(self.rate)),
            paused_until: None,
            warned: false,
        };
        (session, format!("* welcome {nick}\n"))
    }

    /// The session of a member already in the room, and its nick.
    pub(crate) fn remote_session(&self, id: u64) -> (RemoteSession, Option<String>) {
        let nick = self.room.lock().nick(id).map(str::to_owned);
        let session = RemoteSession {
            id,
            joined: nick.is_some(),
            bucket: Bucket::full(2.0 * f64::from(self.rate)),
            paused_until: None,
            warned: false,
        };
        (session, nick)
    }

    /// The member leaves (at `/quit`, or when it goes: idle, shutdown,
    /// EOF); the others hear of it. Does nothing the second time.
    pub(crate) fn remote_leave(&self, session: &mut RemoteSession) {
        if !std::mem::replace(&mut session.joined, false) {
            return;
        }
        let left = self.room.lock().leave_announced_up_to(session.id, self.announce_up_to);
        if let Some((nick, others)) = left {
            broadcast(&self.announce_to(others), format!("* {nick} left\n"));
            if let Some(c) = &self.cluster {
                c.publish(cluster::Event::Leave { nick, slow: false });
            }
        }
    }

    /// One line from a remote member (without its line ending). Replies
    /// (each one or more LF-ended lines) go to `reply`. Returns
    /// [`Flow::Close`] after `/quit`.
    pub(crate) fn remote_line(
        &self,
        session: &mut RemoteSession,
        line: &[u8],
        reply: &mut dyn FnMut(&str),
    ) -> Flow {
        if !session.joined {
            return Flow::Close;
        }
        let now = Instant::now();
        if session.paused_until.is_some_and(|t| now < t) {
            if !std::mem::replace(&mut session.warned, true) {
                reply("! slow down: lines dropped\n");
            }
            return Flow::Continue;
        }
        session.paused_until = None;
        session.warned = false;
        let mut wait = self.remote_spend(session);
        if line.len() > self.max_line {
            reply("! line too long\n");
            self.pause(session, now, wait);
            return Flow::Continue;
        }
        let lossy = String::from_utf8_lossy(line);
        let text = clean(&lossy);
        let id = session.id;
        match parse(&text) {
            Command::Empty => {}
            Command::Text(text) => {
                if let Some((nick, others)) = self.me_and_others(id) {
                    let line = format!("<{nick}> {text}\n");
                    wait = wait.max(self.remote_spend_room(line.len()));
                    broadcast(&others, line);
                    if let Some(c) = &self.cluster {
                        c.publish(cluster::Event::Text { nick, text: text.to_owned() });
                    }
                }
            }
            // Across servers a nick is claimed in Redis, an answer that
            // comes later: through a reply a TCP connection can wait for.
            Command::Nick(_) if self.cluster.is_some() => reply(CLUSTER_TCP_ONLY),
            Command::Nick(new) => {
                let result = self.room.lock().rename(id, new);
                match result {
                    Ok((old, new, others)) => {
                        reply(&format!("* you are now {new}\n"));
                        if old != new {
                            let line = format!("* {old} is now {new}\n");
                            wait = wait.max(self.remote_spend_room(line.len()));
                            broadcast(&others, line);
                        }
                    }
                    Err(NickError::Invalid) => reply("! invalid nick\n"),
                    Err(NickError::Taken) => reply("! nick taken\n"),
                    Err(NickError::NotMember) => return Flow::Close,
                }
            }
            Command::Who if self.cluster.is_some() => reply(&format!(
                "* online on this server: {}\n",
                local::who_names(&self.room.lock()).join(", ")
            )),
            Command::Who => reply(&format!("* online: {}\n", local::who_names(&self.room.lock()).join(", "))),
            Command::Msg { to, text } => {
                let found = {
                    let room = self.room.lock();
                    room.nick(id).map(str::to_owned).map(|me| (me, room.find(to)))
                };
                match found {
                    None => return Flow::Close,
                    Some((_, None)) if self.cluster.is_some() => {
                        reply(&format!("! no such user {to} on this server\n"))
                    }
                    Some((_, None)) => reply(&format!("! no such user {to}\n")),
                    Some((me, Some((target, member)))) => {
                        let line = format!("*{me}* {text}\n");
                        if target == id {
                            reply(&line);
                        } else {
                            wait = wait.max(self.remote_spend_room(line.len()));
                            broadcast(&[member], line);
                        }
                    }
                }
            }
            Command::MsgUsage => reply("! usage: /msg NAME text\n"),
            Command::Help => reply(HELP),
            Command::Quit => {
                reply("* bye\n");
                self.remote_leave(session);
                return Flow::Close;
            }
            Command::Unknown(word) => reply(&format!("! unknown command {word}\n")),
            Command::Register { .. } | Command::Login { .. } | Command::AccountUsage(_) => {
                reply("! accounts need a TCP connection\n")
            }
        }
        self.pause(session, now, wait);
        Flow::Continue
    }

    fn pause(&self, session: &mut RemoteSession, now: Instant, wait: Option<Duration>) {
        if let Some(wait) = wait {
            session.paused_until = Some(now + wait);
        }
    }

    /// One line of the member's rate: how long it must wait, if at all.
    fn remote_spend(&self, session: &mut RemoteSession) -> Option<Duration> {
        if self.rate == 0 {
            return None;
        }
        let rate = f64::from(self.rate);
        session.bucket.spend(1.0, rate, 2.0 * rate)
    }

    /// `bytes` of the room's rate: how long this member must wait, if at all.
    fn remote_spend_room(&self, bytes: usize) -> Option<Duration> {
        if self.room_rate == 0 {
            return None;
        }
        self.room_bucket.lock().spend(bytes as f64, self.room_rate as f64, self.room_burst as f64)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use parking_lot::Mutex;

    use super::*;
    use crate::chat::member::Remote;

    /// A remote member that records what it is sent.
    #[derive(Debug, Default)]
    struct Log(u64, Mutex<Vec<String>>);

    impl Remote for Log {
        fn id(&self) -> u64 {
            self.0
        }
        fn deliver(&self, msg: &[u8]) -> Result<(), switchboard::SendError> {
            self.1.lock().push(String::from_utf8_lossy(msg).into_owned());
            Ok(())
        }
    }

    #[test]
    fn over_its_rate_a_remote_member_loses_lines_and_is_told_once() {
        let chat = Chat::new(64).rate_limit(1);
        let listener = Arc::new(Log(1, Mutex::default()));
        let (mut l, _) = chat.remote_join(Member::Remote(listener.clone()));
        let (mut s, welcome) = chat.remote_join(Member::Remote(Arc::new(Log(2, Mutex::default()))));
        assert_eq!(welcome, "* welcome guest-2\n");
        let mut replies = Vec::new();
        // A burst of twice the rate passes; the third line puts the member
        // in debt (it is relayed, as over TCP), the next ones are dropped.
        for line in ["a", "b", "c", "d", "e"] {
            assert_eq!(
                chat.remote_line(&mut s, line.as_bytes(), &mut |r| replies.push(r.to_owned())),
                Flow::Continue
            );
        }
        assert_eq!(replies, vec!["! slow down: lines dropped\n"]);
        let heard = listener.1.lock().clone();
        assert_eq!(heard, vec!["* guest-2 joined\n", "<guest-2> a\n", "<guest-2> b\n", "<guest-2> c\n"]);
        // Too long, and /quit.
        let mut r2 = Vec::new();
        assert_eq!(chat.remote_line(&mut l, &[b'x'; 65], &mut |r| r2.push(r.to_owned())), Flow::Continue);
        assert_eq!(chat.remote_line(&mut l, b"/quit", &mut |r| r2.push(r.to_owned())), Flow::Close);
        assert_eq!(r2, vec!["! line too long\n", "* bye\n"]);
        assert_eq!(chat.members(), 1);
        chat.remote_leave(&mut l);
        assert_eq!(chat.members(), 1, "leaving twice does nothing");
    }
}
