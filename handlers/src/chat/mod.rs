//! chat: one room shared by every connection, line by line.

mod command;
mod room;
mod text;

use std::fmt;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use switchboard::{CloseReason, Conn, ConnHandle, Flow, FrameError, Framing, Handler, Message, SendError};

pub use command::{parse, valid_nick, Command};
pub use text::{clean, is_unsafe};
use room::{NickError, Room};

/// The line limit of [`Chat::default`], in bytes.
pub(crate) const DEFAULT_MAX_LINE: usize = 4096;

/// The `/help` text: one `* ...` line per command.
const HELP: &str = "\
* /nick NAME       change your nick (1-32 letters, digits, _ or -)
* /who             list who is online
* /msg NAME text   send text to NAME only
* /help            show these commands
* /quit            leave (or send exactly: quit)
";

/// A chat relay: every client is in one room, and every line a member sends
/// goes to every other member. The wire format is in PROTOCOLS.md:
///
/// - on connect a member is `guest-N` (N counts from 1; a number someone
///   took with `/nick` is skipped) and gets `* welcome guest-N`; the others
///   get `* guest-N joined`;
/// - a text line reaches every other member as `<nick> text`;
/// - commands: `/nick NAME`, `/who` (nicks sorted ignoring case),
///   `/msg NAME text`, `/help`, `/quit` (or exactly `quit`); command words
///   are matched exactly, in lower case; errors start with `! `;
/// - a line over the limit is answered `! line too long` and dropped; the
///   connection stays. Invalid UTF-8 becomes U+FFFD.
/// - whoever leaves, for whatever reason, is announced as `* NAME left`, or
///   `* NAME left (too slow)` when the server cut it off as a slow consumer;
/// - when the server drains, every member gets `* server shutting down`.
///
/// Broadcasts are one shared [`Message`] sent through each member's
/// [`ConnHandle`]: a slow member never holds anyone up, it is cut off (or
/// loses messages) by the server's slow-consumer policy.
///
/// Flood control: each member may send [`DEFAULT_RATE`] lines a second on
/// average, in bursts of twice that ([`Chat::rate_limit`]). A member over
/// its rate is not cut off and loses nothing: the server stops reading from
/// it for as long as the rate requires, so TCP slows the sender down, and
/// the members who read keep up with the room.
pub struct Chat {
    max_line: usize,
    room: Mutex<Room<ConnHandle>>,
    /// Lines per second per member; 0: no limit.
    rate: u32,
}

/// The default rate limit of each member, in lines per second.
pub const DEFAULT_RATE: u32 = 100;

impl fmt::Debug for Chat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chat")
            .field("max_line", &self.max_line)
            .field("members", &self.room.lock().len())
            .finish()
    }
}

impl Default for Chat {
    /// A chat with the default 4,096-byte line limit.
    fn default() -> Chat {
        Chat::new(DEFAULT_MAX_LINE)
    }
}

impl Chat {
    /// A chat with an empty room whose lines are at most `max_line` bytes
    /// (without the line ending).
    pub fn new(max_line: usize) -> Chat {
        Chat { max_line, room: Mutex::new(Room::default()), rate: DEFAULT_RATE }
    }

    /// Limits each member to `lines_per_sec` lines a second on average, with
    /// bursts of twice that; 0 lifts the limit.
    pub fn rate_limit(mut self, lines_per_sec: u32) -> Chat {
        self.rate = lines_per_sec;
        self
    }

    /// Spends one line of the member's rate; past it, pauses reading from
    /// the member until the rate allows the next line.
    fn spend(&self, session: &mut ChatSession, conn: &mut Conn<'_>) {
        if self.rate == 0 {
            return;
        }
        let rate = f64::from(self.rate);
        let now = Instant::now();
        let refill = now.duration_since(session.refilled).as_secs_f64() * rate;
        session.tokens = (session.tokens + refill).min(2.0 * rate) - 1.0;
        session.refilled = now;
        if session.tokens < 0.0 {
            conn.pause_reading(Duration::from_secs_f64(-session.tokens / rate));
        }
    }

    /// The line limit in bytes.
    pub fn max_line(&self) -> usize {
        self.max_line
    }

    /// How many members are in the room now.
    pub fn members(&self) -> usize {
        self.room.lock().len()
    }

    /// The nick of member `id` and every other member, read under the lock.
    fn me_and_others(&self, id: u64) -> Option<(String, Vec<ConnHandle>)> {
        let room = self.room.lock();
        let nick = room.nick(id)?.to_owned();
        Some((nick, room.others(id)))
    }
}

/// A chat connection's state.
#[derive(Debug)]
pub struct ChatSession {
    /// The connection's id, its key in the room.
    id: u64,
    /// Whether it is still in the room (it leaves at `/quit` or close).
    joined: bool,
    /// Lines the member may still send at once (the rate limit's bucket).
    tokens: f64,
    /// When `tokens` was last brought up to date.
    refilled: Instant,
}

/// Sends one shared message to every handle. A member over its outbound
/// budget is being closed by the server; its close announces it.
fn broadcast(handles: &[ConnHandle], msg: impl Into<Message>) {
    if handles.is_empty() {
        return;
    }
    let msg = msg.into();
    for h in handles {
        match h.send(msg.clone()) {
            Ok(()) => {}
            Err(SendError::Disconnected) => {
                log::debug!("chat: conn {} cut off as a slow consumer", h.id());
            }
            Err(_) => {}
        }
    }
}

fn reply(conn: &mut Conn<'_>, line: &str) {
    let mut bytes = Vec::with_capacity(line.len() + 1);
    bytes.extend_from_slice(line.as_bytes());
    bytes.push(b'\n');
    conn.send(&bytes);
}

impl Handler for Chat {
    type Session = ChatSession;

    fn framing(&self) -> Framing {
        Framing::lines(self.max_line)
    }

    fn open(&self, conn: &mut Conn<'_>) -> ChatSession {
        let id = conn.id();
        let (nick, others) = self.room.lock().join(id, conn.handle());
        // Straight into this connection's queue: ahead of any broadcast,
        // which comes through the worker's mailbox after this callback.
        reply(conn, &format!("* welcome {nick}"));
        broadcast(&others, format!("* {nick} joined\n"));
        ChatSession { id, joined: true, tokens: 2.0 * f64::from(self.rate), refilled: Instant::now() }
    }

    fn frame(&self, session: &mut ChatSession, line: &[u8], conn: &mut Conn<'_>) -> Flow {
        self.spend(session, conn);
        // Nothing a terminal would act on goes further, whatever the line
        // turns out to be (text, a /msg, a name echoed in an error).
        let lossy = String::from_utf8_lossy(line);
        let text = clean(&lossy);
        let id = session.id;
        match parse(&text) {
            Command::Empty => {}
            Command::Text(text) => match self.me_and_others(id) {
                Some((nick, others)) => broadcast(&others, format!("<{nick}> {text}\n")),
                None => return not_in_room(conn),
            },
            Command::Nick(new) => {
                let result = self.room.lock().rename(id, new);
                match result {
                    Ok((old, new, others)) => {
                        reply(conn, &format!("* you are now {new}"));
                        if old != new {
                            broadcast(&others, format!("* {old} is now {new}\n"));
                        }
                    }
                    Err(NickError::Invalid) => reply(conn, "! invalid nick"),
                    Err(NickError::Taken) => reply(conn, "! nick taken"),
                    Err(NickError::NotMember) => return not_in_room(conn),
                }
            }
            Command::Who => {
                let line = format!("* online: {}", self.room.lock().who().join(", "));
                reply(conn, &line);
            }
            Command::Msg { to, text } => {
                let found = {
                    let room = self.room.lock();
                    room.nick(id).map(str::to_owned).map(|me| (me, room.find(to)))
                };
                match found {
                    None => return not_in_room(conn),
                    Some((_, None)) => reply(conn, &format!("! no such user {to}")),
                    Some((me, Some((target, handle)))) => {
                        let line = format!("*{me}* {text}");
                        if target == id {
                            reply(conn, &line);
                        } else {
                            broadcast(&[handle], line + "\n");
                        }
                    }
                }
            }
            Command::MsgUsage => reply(conn, "! usage: /msg NAME text"),
            Command::Help => conn.send(HELP.as_bytes()),
            Command::Quit => {
                reply(conn, "* bye");
                if session.joined {
                    session.joined = false;
                    // Leave now, not when the close completes: the nick is
                    // free and the others hear it at once.
                    let left = self.room.lock().leave(id);
                    if let Some((nick, others)) = left {
                        broadcast(&others, format!("* {nick} left\n"));
                    }
                }
                return Flow::Close;
            }
            Command::Unknown(word) => reply(conn, &format!("! unknown command {word}")),
        }
        Flow::Continue
    }

    fn frame_error(&self, session: &mut ChatSession, error: FrameError, conn: &mut Conn<'_>) -> Flow {
        self.spend(session, conn);
        match error {
            FrameError::TooLong { .. } => {
                reply(conn, "! line too long");
                Flow::Continue
            }
            _ => Flow::Close,
        }
    }

    fn drain(&self, _session: &mut ChatSession, conn: &mut Conn<'_>) -> Flow {
        reply(conn, "* server shutting down");
        Flow::Continue
    }

    fn close(&self, session: ChatSession, reason: &CloseReason) {
        if !session.joined {
            return;
        }
        let left = self.room.lock().leave(session.id);
        if let Some((nick, others)) = left {
            let why = if matches!(reason, CloseReason::SlowConsumer) { " (too slow)" } else { "" };
            broadcast(&others, format!("* {nick} left{why}\n"));
        }
    }
}

/// The connection is not in the room (cannot happen: it joins at open and
/// leaves only as it closes).
fn not_in_room(conn: &mut Conn<'_>) -> Flow {
    log::error!("chat: conn {} sent a line but is not in the room; closing", conn.id());
    reply(conn, "! not in the room");
    Flow::Close
}
