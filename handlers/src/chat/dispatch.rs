//! The chat's one command dispatcher: every member's line, whatever
//! carries it (a TCP connection, a UDP datagram, the console), is handled
//! here, over a [`Caller`] that says how to answer the member and what its
//! transport allows, and the room's [`Reach`](super::reach::Reach) for what
//! goes beyond this server. A new command is one arm of
//! [`Chat::command`] (and its line in [`HELP`], its parse in
//! `command.rs`, its row in PROTOCOLS.md).

use std::borrow::Cow;
use std::time::Duration;

use super::cluster::Event;
use super::command::{parse, valid_nick, Command};
use super::member::Member;
use super::reply::{Caller, ACCOUNTS_NEED_TCP};
use super::room::NickError;
use super::text::{self, clean};
use super::{broadcast, broadcast_but, Bucket, Chat, Seat};
use switchboard::Flow;

/// The `/help` text: one `* ...` line per command.
pub(crate) const HELP: &str = "\
* /nick NAME       change your nick (1-32 letters, digits, _ or -)
* /who             list who is online
* /msg NAME text   send text to NAME only
* /help            show these commands
* /quit            leave (or send exactly: quit)
";

/// More `/help` lines when accounts are on, for members that can use them.
const HELP_ACCOUNTS: &str = "\
* /register NAME PASSWORD   register NAME (a password of 8 characters or more)
* /login NAME PASSWORD      become NAME, whoever holds it now
";

impl Chat {
    /// `member` joins the room as the next guest; the others hear of it,
    /// and so do the other servers. Returns its seat and nick (the caller
    /// sends the welcome).
    pub(crate) fn join(&self, member: Member) -> (Seat, String) {
        let id = member.id();
        // A join may be one of a flood: no list of a big room for it.
        let (nick, others) = self.room.lock().join_announced_up_to(id, member, self.announce_up_to);
        (self.joined(id, &nick, others), nick)
    }

    /// [`join`](Chat::join) as `nick` (the console), refused when it is
    /// invalid or taken.
    pub(crate) fn join_as(&self, member: Member, nick: &str) -> Result<(Seat, String), NickError> {
        let id = member.id();
        let (nick, others) = self.room.lock().join_as(id, nick, member)?;
        Ok((self.joined(id, &nick, others), nick))
    }

    /// Announces member `id`'s join as `nick` to `others`; its seat.
    fn joined(&self, id: u64, nick: &str, others: Vec<Member>) -> Seat {
        broadcast(&self.announce_to(others), format!("* {nick} joined\n"));
        self.reach.publish(Event::Join { nick: nick.to_owned() });
        Seat { id, joined: true, bucket: Bucket::full(2.0 * f64::from(self.rate)) }
    }

    /// The member leaves (at `/quit`, or as it goes; `slow`: cut off as a
    /// slow consumer); the others hear of it. Does nothing the second time.
    pub(crate) fn leave(&self, seat: &mut Seat, slow: bool) {
        if !std::mem::replace(&mut seat.joined, false) {
            return;
        }
        let left = self.room.lock().leave_announced_up_to(seat.id, self.announce_up_to);
        if let Some((nick, others)) = left {
            let why = if slow { " (too slow)" } else { "" };
            broadcast(&self.announce_to(others), format!("* {nick} left{why}\n"));
            self.reach.publish(Event::Leave { nick, slow });
        }
    }

    /// A line over the limit: it costs a line of the member's rate.
    pub(crate) fn too_long(&self, seat: &mut Seat, out: &mut dyn Caller) {
        self.spend(seat, out);
        out.line("! line too long");
    }

    /// One line from a member (without its line ending). Returns
    /// [`Flow::Close`] after `/quit`.
    pub(crate) fn line(&self, seat: &mut Seat, line: &[u8], out: &mut dyn Caller) -> Flow {
        self.spend(seat, out);
        let lossy = String::from_utf8_lossy(line);
        // A password is hashed as the bytes sent: an account command is
        // parsed before cleaning (which would make any two controls one).
        if let cmd @ (Command::Register { .. } | Command::Login { .. }) = parse(&lossy) {
            self.account_command(seat.id, cmd, matches!(lossy, Cow::Owned(_)), out);
            return Flow::Continue;
        }
        // Nothing a terminal would act on goes further, whatever the line
        // turns out to be (text, a /msg, a name echoed in an error).
        let text = clean(&lossy);
        self.command(seat, parse(&text), matches!(lossy, Cow::Owned(_)), out)
    }

    /// One command (`lossy`: its line was not UTF-8): the dispatcher.
    fn command(&self, seat: &mut Seat, command: Command<'_>, lossy: bool, out: &mut dyn Caller) -> Flow {
        let id = seat.id;
        match command {
            Command::Empty => {}
            Command::Text(text) => {
                let Some((nick, everyone)) = self.me_and_everyone(id) else { return not_in_room(id, out) };
                let line = format!("<{nick}> {text}\n");
                self.spend_room(line.len(), out);
                broadcast_but(&everyone, Some(id), line);
                self.reach.publish(Event::Text { nick, text: text.to_owned() });
            }
            Command::Nick(new) => return self.nick(id, new, out),
            Command::Who => self.reach.who(&self.room, out),
            Command::Msg { to, text } => {
                let found = {
                    let room = self.room.lock();
                    room.nick(id).map(str::to_owned).map(|me| (me, room.find(to)))
                };
                match found {
                    None => return not_in_room(id, out),
                    Some((me, None)) => {
                        let cost = me.len() + text.len() + 4;
                        if self.reach.msg(me, to, text, out) {
                            self.spend_room(cost, out);
                        }
                    }
                    Some((me, Some((target, member)))) => {
                        let line = format!("*{me}* {text}\n");
                        if target == id {
                            out.send(&line);
                        } else {
                            self.spend_room(line.len(), out);
                            broadcast(&[member], line);
                        }
                    }
                }
            }
            Command::MsgUsage => out.line("! usage: /msg NAME text"),
            Command::Help => {
                let accounts = if self.accounts.is_some() && out.waits() { HELP_ACCOUNTS } else { "" };
                out.send(&format!("{HELP}{accounts}{}", out.help()));
            }
            // Parsed before cleaning ([`Chat::line`]); here only when
            // cleaning made one (a control became U+FFFD, a password).
            cmd @ (Command::Register { .. } | Command::Login { .. }) => {
                self.account_command(id, cmd, lossy, out)
            }
            Command::AccountUsage(_) if !out.waits() => out.line(ACCOUNTS_NEED_TCP),
            Command::AccountUsage(word) => out.line(&format!("! usage: {word} NAME PASSWORD")),
            Command::Quit => {
                out.line("* bye");
                // Leave now, not when the close completes: the nick is
                // free and the others hear it at once.
                self.leave(seat, false);
                return Flow::Close;
            }
            Command::Unknown(word) => out.line(&format!("! unknown command {word}")),
        }
        Flow::Continue
    }

    /// `/nick NAME`: refuses a nick an account owns (to anyone not logged
    /// in as it); a nick that only the cluster can grant goes to it; the
    /// local room decides the rest.
    fn nick(&self, id: u64, new: &str, out: &mut dyn Caller) -> Flow {
        let name = text::normalize_nick(new);
        if valid_nick(&name) {
            let key = text::nick_key(&name);
            let (mine, account, holder) = {
                let room = self.room.lock();
                let mine = room.nick(id).map(text::nick_key);
                (mine, room.account(id).map(str::to_owned), room.find(&name).map(|(h, _)| h))
            };
            let registered = self.accounts.as_ref().and_then(|a| a.registered(&key)) == Some(true);
            if registered && account.as_deref() != Some(key.as_str()) {
                out.line("! nick registered");
                return Flow::Continue;
            }
            // Taken here, or another form of one's own nick: the room decides.
            let here = holder.is_some_and(|h| h != id) || mine.as_deref() == Some(key.as_str());
            if !here && self.reach.claim(id, name, account, out) {
                return Flow::Continue;
            }
        }
        let result = self.room.lock().rename(id, new);
        match result {
            Ok((old, new, others)) => {
                out.line(&format!("* you are now {new}"));
                if old != new {
                    let line = format!("* {old} is now {new}\n");
                    self.spend_room(line.len(), out);
                    broadcast(&others, line);
                    self.reach.publish(Event::Nick { old, new });
                }
            }
            Err(NickError::Invalid) => out.line("! invalid nick"),
            Err(NickError::Taken) => out.line("! nick taken"),
            Err(NickError::NotMember) => return not_in_room(id, out),
        }
        Flow::Continue
    }

    /// `/register` or `/login`, its password as sent; `lossy`: the line
    /// was not UTF-8 (a password must be: refused rather than hashed as
    /// U+FFFD, which any other invalid bytes would match).
    fn account_command(&self, id: u64, cmd: Command<'_>, lossy: bool, out: &mut dyn Caller) {
        if !out.waits() {
            return out.line(ACCOUNTS_NEED_TCP);
        }
        let Some(accounts) = &self.accounts else {
            return out.line("! accounts are not enabled on this server");
        };
        if lossy {
            return out.line("! a name or password must be UTF-8");
        }
        match cmd {
            Command::Register { name, password } => accounts.register(name, password, out),
            Command::Login { name, password } => accounts.login(id, name, password, out),
            _ => {}
        }
    }

    /// Spends one line of the member's rate; past it, holds the member
    /// back until the rate allows the next line.
    fn spend(&self, seat: &mut Seat, out: &mut dyn Caller) {
        if self.rate == 0 {
            return;
        }
        let rate = f64::from(self.rate);
        if let Some(wait) = seat.bucket.spend(1.0, rate, 2.0 * rate) {
            out.hold(wait);
        }
    }

    /// Spends `bytes` of the room's rate for a line from this member; past
    /// it, holds the member back until the room is out of debt.
    fn spend_room(&self, bytes: usize, out: &mut dyn Caller) {
        if let Some(wait) = self.room_debt(bytes) {
            out.hold(wait);
        }
    }

    /// Spends `bytes` of the room's rate: how long to wait, if at all.
    pub(crate) fn room_debt(&self, bytes: usize) -> Option<Duration> {
        if self.room_rate == 0 {
            return None;
        }
        self.room_bucket.lock().spend(bytes as f64, self.room_rate as f64, self.room_burst as f64)
    }
}

/// The member is not in the room (cannot happen: it joins first and
/// leaves only as it goes).
fn not_in_room(id: u64, out: &mut dyn Caller) -> Flow {
    log::error!("chat: member {id} sent a line but is not in the room; closing");
    out.line("! not in the room");
    Flow::Close
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use switchboard::Harness;

    use super::*;
    use crate::chat::member::Log;

    #[test]
    fn a_command_gets_the_same_answer_over_tcp_and_from_a_remote_member() {
        let chat = Arc::new(Chat::new(64));
        let mut tcp = Harness::new(Arc::clone(&chat));
        assert_eq!(tcp.output(), b"* welcome guest-1\n");
        let (mut remote, welcome) =
            chat.remote_join(Member::Remote(Arc::new(Log(1 << 48, Default::default()))));
        assert_eq!(welcome, "* welcome guest-2\n");
        assert_eq!(tcp.output(), b"* guest-2 joined\n");
        let lines = [
            "/who",
            "",
            "/msg nobody hi",
            "/msg",
            "/msg guest-1",
            "/nick bad nick",
            "/nick",
            "/bogus x",
            "/\x1b[31m",
            "/help",
        ];
        for line in lines {
            assert_eq!(tcp.input(format!("{line}\n").as_bytes()), Flow::Continue, "{line:?}");
            let over_tcp = String::from_utf8(tcp.output()).unwrap();
            let mut replies: Vec<String> = Vec::new();
            assert_eq!(chat.remote_line(&mut remote, line.as_bytes(), &mut replies, ""), Flow::Continue);
            assert_eq!(replies.concat(), over_tcp, "{line:?}");
            assert!(line.is_empty() || over_tcp.ends_with('\n'), "{line:?}: {over_tcp:?}");
        }
        // Where the transports differ, each gets its own answer.
        tcp.input(b"/register bob password1\n");
        assert_eq!(tcp.output(), b"! accounts are not enabled on this server\n");
        let mut replies: Vec<String> = Vec::new();
        chat.remote_line(&mut remote, b"/register bob password1", &mut replies, "* /extra\n");
        chat.remote_line(&mut remote, b"/login bob", &mut replies, "* /extra\n");
        chat.remote_line(&mut remote, b"/help", &mut replies, "* /extra\n");
        assert_eq!(
            replies[..2],
            ["! accounts need a TCP connection\n", "! accounts need a TCP connection\n"]
        );
        assert_eq!(replies[2], format!("{HELP}* /extra\n"));
        // Both leave through the same path: /quit, then the close does nothing more.
        assert_eq!(tcp.input(b"/quit\n"), Flow::Close);
        assert_eq!(tcp.output(), b"* bye\n");
        assert_eq!(chat.members(), 1);
        assert_eq!(chat.remote_line(&mut remote, b"quit", &mut replies, ""), Flow::Close);
        assert_eq!(chat.members(), 0);
    }

    #[test]
    fn a_registered_nick_is_refused_to_every_member_and_help_lists_what_each_can_use() {
        let dir = tempfile::tempdir().unwrap();
        let chat = Chat::new(64).accounts_file(dir.path().join("accounts.redb")).unwrap();
        let chat = Arc::new(chat);
        let mut owner = Harness::new(Arc::clone(&chat));
        assert_eq!(owner.output(), b"* welcome guest-1\n");
        owner.input(b"/register alice password1\n");
        assert!(owner.wait_deferred(Duration::from_secs(30)));
        assert_eq!(owner.output(), b"* registered alice\n");
        let mut guest = Harness::new(Arc::clone(&chat));
        assert_eq!(guest.output(), b"* welcome guest-2\n");
        let (mut remote, _) = chat.remote_join(Member::Remote(Arc::new(Log(1 << 48, Default::default()))));
        assert_eq!(guest.output(), b"* guest-3 joined\n");
        guest.input(b"/nick alice\n");
        assert_eq!(guest.output(), b"! nick registered\n");
        let mut replies: Vec<String> = Vec::new();
        chat.remote_line(&mut remote, b"/nick ALICE", &mut replies, "");
        chat.remote_line(&mut remote, b"/help", &mut replies, "");
        assert_eq!(replies, ["! nick registered\n", HELP]);
        guest.input(b"/help\n");
        assert_eq!(guest.output(), format!("{HELP}{HELP_ACCOUNTS}").as_bytes());
    }
}
