//! chat: one room shared by every connection, line by line.

mod accounts;
mod cluster;
mod command;
mod console;
mod dispatch;
mod local;
mod member;
mod reach;
mod remote;
mod reply;
mod room;
mod text;
mod udp;

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use member::Member;
use parking_lot::Mutex;
use switchboard::{CloseReason, Conn, Flow, FrameError, Framing, Handler, Message, SendError};

pub use command::{parse, valid_nick, Command};
pub use console::{ConsoleError, CONSOLE_NICK};
use reach::Reach;
use reply::Reply;
use room::Room;
pub use text::{clean, is_unsafe};
pub use udp::{cookie_in, UdpChatPeer, COOKIE_COMMAND, MAX_CHAT_DATAGRAM};
// Cluster (--redis) and accounts (--accounts).
pub use accounts::{
    delete_account, AccountStore, AccountsError, ACCOUNT_REQUESTS_PER_ADDRESS, ADDRESS_REFILL,
    LOGIN_FAILURES_PER_ADDRESS, LOGIN_FAILURES_PER_NAME, LOGIN_FAILURES_PER_NAME_AND_ADDRESS, MIN_PASSWORD,
    NAME_AND_ADDRESS_REFILL, NAME_REFILL, REGISTRATIONS_PER_ADDRESS, REGISTRATION_REFILL, REQUEST_REFILL,
};
pub use cluster::{ClusterConfig, ClusterError, DEFAULT_LEASE, DEFAULT_QUEUE};

/// The line limit of [`Chat::default`], in bytes.
pub(crate) const DEFAULT_MAX_LINE: usize = 4096;

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
///   connection stays. Invalid UTF-8 becomes U+FFFD, and so does every
///   control and bidi character ([`clean`]) before a line goes anywhere;
/// - nicks that look alike are one nick: compared after NFKC case folding
///   without combining marks and the UTS #39 confusable skeleton; a nick is
///   letters and digits that show as themselves (no combining marks, no
///   default-ignorable code points), `_` or `-`;
/// - whoever leaves, for whatever reason, is announced as `* NAME left`, or
///   `* NAME left (too slow)` when the server cut it off as a slow consumer;
/// - when the server drains, every member gets `* server shutting down`.
///
/// Broadcasts are one shared [`Message`] sent through each member's
/// [`ConnHandle`](switchboard::ConnHandle): a slow member never holds anyone up, it is cut off (or
/// loses messages) by the server's slow-consumer policy.
///
/// Flood control, two token buckets; a sender over either is not cut off
/// and loses nothing: the server stops reading from it for as long as the
/// bucket requires, so TCP slows the sender down.
///
/// - Each member may send [`DEFAULT_RATE`] lines a second on average, in
///   bursts of twice that ([`Chat::rate_limit`]).
/// - The room as a whole carries at most [`DEFAULT_ROOM_RATE`] bytes of
///   lines a second, in bursts of [`DEFAULT_ROOM_BURST`]
///   ([`Chat::room_rate`]): every text line, private message and nick
///   change costs its length on the wire. This is what keeps readers
///   connected: whatever the number of senders, a member hears at most
///   the room's burst plus one line per member sending at that moment
///   beyond what the room's rate drains, so a member that reads at least
///   the room's rate never has more queued than
///   `room burst + senders at once × 3 × max line` (3: a line may triple
///   when control characters become U+FFFD), which the default 1 MiB
///   outbound budget holds for fewer than 64 members sending at the same
///   moment (256 KiB + 64 × 12 KiB = 1 MiB).
///
/// Join and leave notices go out only while the room has at most
/// [`DEFAULT_ANNOUNCE_UP_TO`] members ([`Chat::announce_up_to`]): past
/// that, announcing every arrival to every member costs memory in the
/// square of the members (10,000 members that never read held 2.2 GB of
/// notices), and `/who` tells who is there.
pub struct Chat {
    max_line: usize,
    room: Arc<Mutex<Room<Member>>>,
    /// Lines per second per member; 0: no limit.
    rate: u32,
    /// Bytes per second through the room, and its burst; 0: no limit.
    room_rate: u64,
    room_burst: u64,
    /// The room's bucket, shared by every sender.
    room_bucket: Arc<Mutex<Bucket>>,
    /// Join and leave notices only while the room has at most this many.
    announce_up_to: usize,
    /// This server alone, or the bridge to the other servers (`--redis`):
    /// chosen once, when the chat is built.
    reach: Box<dyn Reach>,
    /// `/register` and `/login` (`--accounts`, or Redis with `--redis`).
    accounts: Option<accounts::Accounts>,
}

/// The default rate limit of each member, in lines per second.
pub const DEFAULT_RATE: u32 = 100;

/// The default rate of the whole room, in bytes of lines a second.
pub const DEFAULT_ROOM_RATE: u64 = 512 << 10;

/// The default burst of the whole room, in bytes of lines.
pub const DEFAULT_ROOM_BURST: u64 = 256 << 10;

/// The default room size up to which joins and leaves are announced.
pub const DEFAULT_ANNOUNCE_UP_TO: usize = 200;

/// A token bucket: `tokens` may go negative, the debt is paid by waiting.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
}

impl Bucket {
    fn full(burst: f64) -> Bucket {
        Bucket { tokens: burst, refilled: Instant::now() }
    }

    /// Spends `cost`; returns how long the spender should wait for the
    /// bucket to be out of debt, if it is in debt.
    fn spend(&mut self, cost: f64, rate: f64, burst: f64) -> Option<Duration> {
        let now = Instant::now();
        let refill = now.duration_since(self.refilled).as_secs_f64() * rate;
        self.tokens = (self.tokens + refill).min(burst) - cost;
        self.refilled = now;
        (self.tokens < 0.0).then(|| Duration::from_secs_f64(-self.tokens / rate))
    }
}

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
        Chat {
            max_line,
            room: Arc::default(),
            rate: DEFAULT_RATE,
            room_rate: DEFAULT_ROOM_RATE,
            room_burst: DEFAULT_ROOM_BURST,
            room_bucket: Arc::new(Mutex::new(Bucket::full(DEFAULT_ROOM_BURST as f64))),
            announce_up_to: DEFAULT_ANNOUNCE_UP_TO,
            reach: Box::new(reach::Alone),
            accounts: None,
        }
    }

    /// Joins the cluster of every chat server on the Redis of `config`
    /// (PROTOCOLS.md, "Chat cluster"): one room, nicks held across servers,
    /// and accounts kept in that Redis (replacing an [`accounts_file`]).
    /// Call it after the other settings, which it reads. Fails with a clear
    /// error when Redis cannot be reached.
    ///
    /// [`accounts_file`]: Chat::accounts_file
    pub fn cluster(mut self, config: ClusterConfig) -> Result<Chat, ClusterError> {
        let bucket = Arc::clone(&self.room_bucket);
        let (rate, burst) = (self.room_rate as f64, self.room_burst as f64);
        let spend: cluster::Spend = Box::new(move |bytes| {
            if rate == 0.0 {
                return None;
            }
            bucket.lock().spend(bytes as f64, rate, burst)
        });
        let c = cluster::Cluster::start(
            &config,
            Arc::clone(&self.room),
            self.announce_up_to,
            self.max_line,
            spend,
        )?;
        self.room.lock().set_guest_prefix(c.guest_prefix());
        let store = Box::new(accounts::RedisStore::new(c.client()));
        self.accounts = None;
        let accounts = accounts::Accounts::start(store, Arc::clone(&self.room), Some(c.link()))
            .map_err(|e| ClusterError(e.to_string()))?;
        self.accounts = Some(accounts);
        self.reach = Box::new(c);
        Ok(self)
    }

    /// Keeps accounts (`/register`, `/login`) in the embedded store at
    /// `path` (a redb file, created if missing). A store that cannot be
    /// opened, read or written is an error here, at start.
    pub fn accounts_file(mut self, path: impl AsRef<Path>) -> Result<Chat, AccountsError> {
        let store = Box::new(accounts::Embedded::open(path.as_ref())?);
        self.accounts = Some(accounts::Accounts::start(store, Arc::clone(&self.room), None)?);
        Ok(self)
    }

    /// Makes `/who` list each member with its address: `alice
    /// (203.0.113.7:41234)`, the client's address from a PROXY header when
    /// there is one, a UDP member's own, a member on a Unix socket by its
    /// process's credentials (`bob (unix:uid=1000,pid=4242)`); the console
    /// and members on other servers of a cluster by nick alone. Off by
    /// default: it tells every member where the others connect from.
    pub fn who_addresses(self, on: bool) -> Chat {
        self.room.lock().set_show_addresses(on);
        self
    }

    /// Limits the whole room to `bytes_per_sec` bytes of lines a second,
    /// in bursts of `burst` bytes (see the type's docs for the rule that
    /// sizes them against the outbound budget); a rate of 0 lifts the
    /// limit.
    pub fn room_rate(mut self, bytes_per_sec: u64, burst: u64) -> Chat {
        self.room_rate = bytes_per_sec;
        self.room_burst = burst.max(1);
        self.room_bucket = Arc::new(Mutex::new(Bucket::full(self.room_burst as f64)));
        self
    }

    /// Announces joins and leaves only while the room has at most
    /// `members` members.
    pub fn announce_up_to(mut self, members: usize) -> Chat {
        self.announce_up_to = members;
        self
    }

    /// The members to tell of a join or leave: nobody in a big room.
    fn announce_to(&self, members: Vec<Member>) -> Vec<Member> {
        if members.len() >= self.announce_up_to {
            Vec::new()
        } else {
            members
        }
    }

    /// Limits each member to `lines_per_sec` lines a second on average, with
    /// bursts of twice that; 0 lifts the limit.
    pub fn rate_limit(mut self, lines_per_sec: u32) -> Chat {
        self.rate = lines_per_sec;
        self
    }

    /// The line limit in bytes.
    pub fn max_line(&self) -> usize {
        self.max_line
    }

    /// How many members are in the room now.
    pub fn members(&self) -> usize {
        self.room.lock().len()
    }

    /// The nick of member `id` and every member (`id` too: skip it),
    /// read under the lock.
    fn me_and_everyone(&self, id: u64) -> Option<(String, Arc<[Member]>)> {
        let mut room = self.room.lock();
        let nick = room.nick(id)?.to_owned();
        Some((nick, room.everyone()))
    }
}

/// A member's place in the room, whatever carries it: its id there,
/// whether it is still in it, and its rate limit's bucket.
#[derive(Debug)]
pub(crate) struct Seat {
    /// The member's id, its key in the room.
    id: u64,
    /// Whether it is still in the room (it leaves at `/quit` or as it goes).
    joined: bool,
    /// Lines the member may still send at once (the rate limit's bucket).
    bucket: Bucket,
}

/// A chat connection's state.
#[derive(Debug)]
pub struct ChatSession {
    seat: Seat,
}

/// Sends one shared message to every handle. A member over its outbound
/// budget is being closed by the server; its close announces it.
fn broadcast(handles: &[Member], msg: impl Into<Message>) {
    broadcast_but(handles, None, msg);
}

/// [`broadcast`] to every handle but that of member `but`.
fn broadcast_but(handles: &[Member], but: Option<u64>, msg: impl Into<Message>) {
    if handles.iter().all(|h| Some(h.id()) == but) {
        return;
    }
    let msg = msg.into();
    for h in handles.iter().filter(|h| Some(h.id()) != but) {
        match h.send(msg.clone()) {
            Ok(()) => {}
            Err(SendError::Disconnected) => {
                log::debug!("chat: conn {} cut off as a slow consumer", h.id());
            }
            Err(_) => {}
        }
    }
}

/// A TCP member: its lines go to the dispatcher (`chat/dispatch.rs`) with the
/// connection as the `Caller`.
impl Handler for Chat {
    type Session = ChatSession;

    fn framing(&self) -> Framing {
        Framing::lines(self.max_line)
    }

    /// A member may write a last line and half-close: it reaches the room.
    /// (A partial line the member waits on is a line only with the server's
    /// `accept_unterminated`.)
    fn last_line_at_eof(&self) -> bool {
        true
    }

    /// One deferred reply at a time: a login, a claim or a cluster request
    /// decides how the next lines are handled.
    fn max_deferred(&self) -> Option<usize> {
        Some(1)
    }

    fn open(&self, conn: &mut Conn<'_>) -> ChatSession {
        let (seat, nick) = self.join(Member::Tcp(conn.handle()));
        // Straight into this connection's queue: ahead of any broadcast,
        // which comes through the worker's mailbox after this callback.
        conn.line(&format!("* welcome {nick}"));
        ChatSession { seat }
    }

    fn frame(&self, session: &mut ChatSession, line: &[u8], conn: &mut Conn<'_>) -> Flow {
        self.line(&mut session.seat, line, conn)
    }

    fn frame_error(&self, session: &mut ChatSession, error: FrameError, conn: &mut Conn<'_>) -> Flow {
        match error {
            FrameError::TooLong { .. } => {
                self.too_long(&mut session.seat, conn);
                Flow::Continue
            }
            _ => Flow::Close,
        }
    }

    fn drain(&self, _session: &mut ChatSession, conn: &mut Conn<'_>) -> Flow {
        conn.line("* server shutting down");
        Flow::Continue
    }

    fn close(&self, mut session: ChatSession, reason: &CloseReason) {
        self.leave(&mut session.seat, matches!(reason, CloseReason::SlowConsumer));
    }

    /// The server has stopped: the account threads, then the cluster
    /// bridge (which they use), end before its report.
    fn stop(&self) {
        if let Some(a) = &self.accounts {
            a.stop();
        }
        self.reach.stop();
    }
}
