//! The cluster bridge: one chat room across every server given the same
//! Redis (`--redis URL`).
//!
//! Two threads per server, neither of them a worker, each with its own
//! blocking Redis connection (the `redis` crate's blocking API: no async
//! runtime in the core):
//!
//! - the **outbound** thread takes [`Job`]s from a bounded queue that the
//!   workers fill without ever waiting (a full queue drops the event,
//!   counted and logged): it publishes room events, claims and renews nick
//!   leases, keeps this server's member set, and answers the requests that
//!   need Redis (`/nick`, `/who`, a `/msg` to another server) through the
//!   member's [`Deferred`] reply;
//! - the **inbound** thread is subscribed to the room's channel and hands
//!   every other server's events to the local members through their
//!   `ConnHandle`s, cleaning them again and spending the room's byte budget
//!   (when the budget is in debt it stops reading, so Redis holds the rest).
//!
//! When either link drops, the local room keeps working, the members get
//! `* cluster link lost`, each thread reconnects with capped backoff (the
//! inbound one subscribes again), and once both are back the members get
//! `* cluster link restored` and this server's nicks and members are
//! written again. Pub/sub is at-most-once: what was published while a
//! server was cut off never reaches it.
//!
//! Redis may be reached over TLS (`rediss://`, rustls, a CA of one's own
//! with [`ClusterConfig::ca_pem`]); its password is never shown
//! ([`secret`]). Each link hears from Redis every third of the lease and
//! waits at most that long for an answer ([`link`] keeps a pipeline to one
//! wait), so a dead Redis is noticed within the lease, idle or not.

mod event;
mod link;
mod secret;

use std::fmt;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use redis::{
    Client, Connection, ConnectionAddr, IntoConnectionInfo, RedisError, RedisResult, TlsCertificates,
};
use switchboard::Deferred;

use super::command::valid_nick;
use super::local::{self, SharedRoom};
use super::reply::Reply;
use super::room::NickError;
use super::text::{clean, nick_key, normalize_nick};
use event::Envelope;
pub(crate) use event::Event;
use link::Link;
use secret::RedisUrl;

/// The default nick lease: a crashed server's nicks are free after it.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);

/// The default length of the queue from the workers to the bridge.
pub const DEFAULT_QUEUE: usize = 1024;

/// The pub/sub channel of the room.
const CHANNEL: &str = "switchboard:room";
/// The set of server ids.
const SERVERS: &str = "switchboard:servers";
/// The counter that numbers servers (their guest nicks: `guest-S-N`).
const SEQ: &str = "switchboard:server-seq";

/// Reconnection backoff: doubles from the first to the cap.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Connecting, and each command, give up after these (a command after a
/// third of the lease if that is shorter: see [`Inner::io_timeout`]).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Connection attempts left waiting on a Redis that does not answer, at
/// most (see [`Inner::connect`]).
const MAX_STUCK: usize = 4;
/// How often the inbound thread looks up from a quiet channel.
const POLL: Duration = Duration::from_millis(100);

/// Takes a nick unless another server holds it or an account owns it
/// (KEYS: nick, account; ARGV: server id, lease ms, force): 0 taken,
/// 1 held elsewhere, 2 registered. The same server may hold it already:
/// the local room decides between its own members.
const CLAIM: &str = r"
if ARGV[3] ~= '1' and redis.call('EXISTS', KEYS[2]) == 1 then return 2 end
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] and ARGV[3] ~= '1' then return 1 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 0";

/// Extends this server's lease on a nick, or takes it again if it expired
/// (ARGV: server id, lease ms): 1 held, 0 someone else has it (for a
/// registered nick: its owner logged in there later, and takes over).
const RENEW: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur == false or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0";

/// Keeps the server counter at least this server's number (a Redis that
/// restarted empty would otherwise number a new server like an old one,
/// and their guest nicks would clash).
const KEEP_SEQ: &str = r"
if tonumber(redis.call('GET', KEYS[1]) or '0') < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return 0";

/// Deletes a nick only if this server holds it (ARGV: server id).
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0";

fn nick_entry(key: &str) -> String {
    format!("switchboard:nick:{key}")
}

/// The Redis key of the account whose nick key is `key`.
pub(crate) fn account_entry(key: &str) -> String {
    format!("switchboard:account:{key}")
}

fn members_entry(sid: &str) -> String {
    format!("switchboard:members:{sid}")
}

/// How a chat joins a cluster: the Redis URL, the CA that signed a TLS
/// Redis's certificate, the nick lease and the length of the bridge's queue.
///
/// ```
/// use std::time::Duration;
/// use switchboard_handlers::chat::ClusterConfig;
///
/// let config = ClusterConfig::new("rediss://:s3cret@127.0.0.1:6380").lease(Duration::from_secs(5));
/// assert_eq!(config.url(), "rediss://:s3cret@127.0.0.1:6380");
/// // Debug (and every log line and error) hides the password.
/// assert!(!format!("{config:?}").contains("s3cret"));
/// ```
#[derive(Clone)]
pub struct ClusterConfig {
    url: RedisUrl,
    ca: Option<Vec<u8>>,
    lease: Duration,
    queue: usize,
}

impl fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("url", &self.url)
            .field("ca", &self.ca.as_ref().map(|pem| format!("{} bytes of PEM", pem.len())))
            .field("lease", &self.lease)
            .field("queue", &self.queue)
            .finish()
    }
}

impl ClusterConfig {
    /// Redis at `url` (`redis://[[USER]:PASSWORD@]HOST:PORT[/DB]`, or
    /// `rediss://...` for TLS), the default lease and queue. The password
    /// is never logged: the URL is shown with `***` in its place.
    pub fn new(url: impl AsRef<str>) -> ClusterConfig {
        ClusterConfig {
            url: RedisUrl::new(url.as_ref()),
            ca: None,
            lease: DEFAULT_LEASE,
            queue: DEFAULT_QUEUE,
        }
    }

    /// With a `rediss://` URL: trust only the CA certificates in `pem`
    /// (PEM text) for Redis's certificate, instead of the system's.
    pub fn ca_pem(mut self, pem: Vec<u8>) -> ClusterConfig {
        self.ca = Some(pem);
        self
    }

    /// How long a nick stays held when its server stops renewing it (it
    /// renews every third of this); at least 300 ms.
    pub fn lease(mut self, lease: Duration) -> ClusterConfig {
        self.lease = lease.max(Duration::from_millis(300));
        self
    }

    /// How many events may wait for the bridge (at least 1); past it they
    /// are dropped, counted and logged.
    pub fn queue(mut self, events: usize) -> ClusterConfig {
        self.queue = events.max(1);
        self
    }

    /// The Redis URL as given, password included.
    pub fn url(&self) -> &str {
        self.url.full()
    }

    /// Whether the URL holds a password.
    pub fn has_password(&self) -> bool {
        self.url.has_password()
    }

    /// The Redis URL as it is shown: its password as `***`.
    pub fn shown_url(&self) -> String {
        self.url.to_string()
    }

    /// A client for the URL (over TLS for `rediss://`, trusting the CA
    /// given); a clear error, the password hidden, when it cannot be.
    fn client(&self) -> Result<Client, ClusterError> {
        let url = &self.url;
        let bad = |e: RedisError| ClusterError(format!("bad Redis URL {url}: {}", url.scrub(&e.to_string())));
        let info = url.full().into_connection_info().map_err(bad)?;
        if matches!(info.addr, ConnectionAddr::TcpTls { insecure: true, .. }) {
            return Err(ClusterError(format!(
                "{url}: #insecure (TLS without checking Redis's certificate) is refused; \
                 trust the CA that signed it instead"
            )));
        }
        let tls = matches!(info.addr, ConnectionAddr::TcpTls { .. });
        match &self.ca {
            Some(_) if !tls => Err(ClusterError(format!(
                "a CA for Redis's certificate is given but {url} is not a rediss:// (TLS) URL"
            ))),
            Some(pem) => Client::build_with_tls(
                info,
                TlsCertificates { client_tls: None, root_cert: Some(pem.clone()) },
            )
            .map_err(bad),
            None => Client::open(info).map_err(bad),
        }
    }
}

/// Why a chat could not join its cluster at start.
#[derive(Debug)]
pub struct ClusterError(pub(crate) String);

impl fmt::Display for ClusterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ClusterError {}

/// Spends bytes of the room's budget; returns how long to wait when it is
/// in debt.
pub(crate) type Spend = Box<dyn Fn(usize) -> Option<Duration> + Send + Sync>;

/// What the workers (and the accounts threads) ask of the bridge.
pub(crate) enum Job {
    /// Tell the other servers (and keep the member set and nick leases).
    Publish(Event),
    /// Member `id` wants `nick`; `account`: the account it logged in as.
    Claim { id: u64, nick: String, account: Option<String>, reply: Deferred },
    /// `/who` across the servers.
    Who { reply: Deferred },
    /// A `/msg` to a member not on this server.
    Msg { from: String, to: String, text: String, reply: Deferred },
    /// Another server says the owner of account `nick` logged in there:
    /// the local holder goes back to a guest nick unless this server
    /// holds the nick in Redis (its own login came later).
    Evict { nick: String },
}

impl Job {
    fn reply(&mut self) -> Option<&mut Deferred> {
        match self {
            Job::Publish(_) | Job::Evict { .. } => None,
            Job::Claim { reply, .. } | Job::Who { reply } | Job::Msg { reply, .. } => Some(reply),
        }
    }
}

/// Which link.
#[derive(Debug, Clone, Copy)]
enum Side {
    Out,
    In,
}

/// The two links, and whether the members were told one is down.
#[derive(Debug, Default)]
struct LinkState {
    out: bool,
    inn: bool,
    was_up: bool,
    lost: bool,
}

/// What both bridge threads share.
struct Inner {
    sid: String,
    /// This server's number.
    seq: u64,
    /// Where Redis is (shown with its password hidden).
    url: RedisUrl,
    client: Client,
    lease: Duration,
    room: SharedRoom,
    announce_up_to: usize,
    max_line: usize,
    spend: Spend,
    stop: AtomicBool,
    link: parking_lot::Mutex<LinkState>,
    /// Set when the outbound link is lost: the inbound one, likely as dead
    /// but not yet told, subscribes again, so that `* cluster link
    /// restored` means both links work again.
    resubscribe: AtomicBool,
    /// Connection attempts given up on but not ended yet.
    stuck: Arc<AtomicUsize>,
    dropped: AtomicU64,
}

/// Hands `job` to the bridge without waiting; a full queue answers a
/// request `! cluster busy, try again` and drops (counting) an event.
pub(crate) fn submit(tx: &Sender<Job>, dropped: &AtomicU64, job: Job) {
    match tx.try_send(job) {
        Ok(()) => {}
        Err(TrySendError::Full(mut job)) | Err(TrySendError::Disconnected(mut job)) => {
            if let Some(reply) = job.reply() {
                reply.line("! cluster busy, try again");
            } else {
                count_drop(dropped);
            }
        }
    }
}

fn count_drop(dropped: &AtomicU64) {
    let n = dropped.fetch_add(1, Ordering::Relaxed) + 1;
    if n == 1 || n % 1000 == 0 {
        log::warn!("cluster: {n} room events not sent to the other servers so far (queue full or link down)");
    }
}

/// A chat's membership of a cluster: the bridge threads, joined by
/// [`stop`](Cluster::stop) (the server's, through the chat's
/// [`Handler::stop`](switchboard::Handler::stop)) or on drop.
pub(crate) struct Cluster {
    tx: Sender<Job>,
    inner: Arc<Inner>,
    threads: parking_lot::Mutex<Vec<JoinHandle<()>>>,
    guest_prefix: String,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster").field("server", &self.inner.sid).finish()
    }
}

/// A random id for this server (its number is reused when Redis loses it).
fn random_id() -> String {
    let a = std::collections::hash_map::RandomState::new().hash_one(std::process::id());
    let b = std::collections::hash_map::RandomState::new().hash_one(Instant::now());
    format!("{:016x}", a ^ b.rotate_left(17))
}

impl Cluster {
    /// Connects to Redis (a clear error if it cannot), numbers this server
    /// and starts the bridge threads.
    pub(crate) fn start(
        config: &ClusterConfig,
        room: SharedRoom,
        announce_up_to: usize,
        max_line: usize,
        spend: Spend,
    ) -> Result<Cluster, ClusterError> {
        let url = &config.url;
        let client = config.client()?;
        let inner = Inner {
            sid: String::new(),
            seq: 0,
            url: url.clone(),
            client,
            lease: config.lease,
            room,
            announce_up_to,
            max_line,
            spend,
            stop: AtomicBool::new(false),
            link: parking_lot::Mutex::new(LinkState { out: true, ..LinkState::default() }),
            resubscribe: AtomicBool::new(false),
            stuck: Arc::new(AtomicUsize::new(0)),
            dropped: AtomicU64::new(0),
        };
        let mut con = inner.connect().map_err(|e| {
            ClusterError(format!("cannot reach Redis at {url}: {}", url.scrub(&e.to_string())))
        })?;
        let seq: u64 = redis::cmd("INCR").arg(SEQ).query(&mut con).map_err(|e| {
            ClusterError(format!("Redis at {url} refused INCR: {}", url.scrub(&e.to_string())))
        })?;
        let inner = Arc::new(Inner { sid: format!("{seq}-{}", random_id()), seq, ..inner });
        log::info!("cluster: server {} on Redis {url}", inner.sid);
        let (tx, rx) = bounded(config.queue);
        let out = {
            let inner = Arc::clone(&inner);
            std::thread::Builder::new()
                .name("cluster-out".into())
                .spawn(move || inner.run_out(rx, con))
                .map_err(|e| ClusterError(format!("cannot start the cluster bridge: {e}")))?
        };
        let inn = {
            let inner = Arc::clone(&inner);
            let tx = tx.clone();
            std::thread::Builder::new()
                .name("cluster-in".into())
                .spawn(move || inner.run_in(&tx))
                .map_err(|e| ClusterError(format!("cannot start the cluster bridge: {e}")))?
        };
        let threads = parking_lot::Mutex::new(vec![out, inn]);
        Ok(Cluster { tx, inner, threads, guest_prefix: format!("guest-{seq}-") })
    }

    /// What this server's guest nicks start with.
    pub(crate) fn guest_prefix(&self) -> String {
        self.guest_prefix.clone()
    }

    /// Tells the other servers, never waiting.
    pub(crate) fn publish(&self, event: Event) {
        submit(&self.tx, &self.inner.dropped, Job::Publish(event));
    }

    /// Asks the bridge, never waiting.
    pub(crate) fn request(&self, job: Job) {
        submit(&self.tx, &self.inner.dropped, job);
    }

    /// A way for the accounts threads to ask the bridge.
    pub(crate) fn link(&self) -> ClusterLink {
        ClusterLink { tx: self.tx.clone(), inner: Arc::clone(&self.inner) }
    }

    /// A client of the same Redis (for the account store).
    pub(crate) fn client(&self) -> Client {
        self.inner.client.clone()
    }
}

impl Cluster {
    /// Stops the bridge and joins its threads (each notices within a beat);
    /// the second call finds nothing to join. Events published after it
    /// are dropped (counted).
    pub(crate) fn stop(&self) {
        self.inner.stop.store(true, Ordering::Release);
        let threads = std::mem::take(&mut *self.threads.lock());
        if threads.is_empty() {
            return;
        }
        for t in threads {
            if t.join().is_err() {
                log::error!("cluster: a bridge thread panicked");
            }
        }
        log::debug!("cluster: bridge threads of server {} joined", self.inner.sid);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The bridge's queue, for the accounts threads.
#[derive(Clone)]
pub(crate) struct ClusterLink {
    tx: Sender<Job>,
    inner: Arc<Inner>,
}

impl fmt::Debug for ClusterLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterLink").finish()
    }
}

impl ClusterLink {
    /// Asks the bridge, never waiting.
    pub(crate) fn request(&self, job: Job) {
        submit(&self.tx, &self.inner.dropped, job);
    }
}

/// A nick from another server, cleaned and checked like a local one.
fn checked_nick(nick: &str) -> Option<String> {
    let nick = normalize_nick(&clean(nick));
    valid_nick(&nick).then_some(nick)
}

/// `text` cut to at most `max` bytes, at a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl Inner {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    fn lease_ms(&self) -> u64 {
        self.lease.as_millis() as u64
    }

    /// How often each link hears from Redis at the least: the outbound
    /// one renews, the inbound one subscribes again when the channel was
    /// quiet this long.
    fn beat(&self) -> Duration {
        self.lease / 3
    }

    /// How long a command waits for its answer: with the beat, a dead
    /// Redis is noticed within two thirds of the lease, before this
    /// server's nicks run out elsewhere.
    fn io_timeout(&self) -> Duration {
        IO_TIMEOUT.min(self.beat())
    }

    /// A new connection, within the connect timeout plus one command's.
    ///
    /// The `redis` crate sets no read timeout while it sets a connection up
    /// (the TLS handshake, `AUTH`, `CLIENT SETINFO`), so a Redis that
    /// accepts and then says nothing (stopped, hung) would hold the caller,
    /// and a shutdown waiting for it, until it answers. The attempt runs on
    /// a thread of its own; one that does not finish in time is left to end
    /// when Redis answers or goes away, and at most [`MAX_STUCK`] are left
    /// at once (past that, no new attempt until one ends).
    fn connect(&self) -> RedisResult<Connection> {
        let timeout_error =
            |what: &str| RedisError::from(std::io::Error::new(std::io::ErrorKind::TimedOut, what.to_owned()));
        if self.stuck.load(Ordering::Acquire) >= MAX_STUCK {
            return Err(timeout_error("earlier connection attempts are still waiting for Redis"));
        }
        let (tx, rx) = bounded(1);
        let client = self.client.clone();
        let io = self.io_timeout();
        self.stuck.fetch_add(1, Ordering::AcqRel);
        let stuck = Arc::clone(&self.stuck);
        let spawned = std::thread::Builder::new().name("cluster-connect".into()).spawn(move || {
            let con = client.get_connection_with_timeout(CONNECT_TIMEOUT).and_then(|con| {
                con.set_read_timeout(Some(io))?;
                con.set_write_timeout(Some(io))?;
                Ok(con)
            });
            stuck.fetch_sub(1, Ordering::AcqRel);
            let _ = tx.send(con);
        });
        if let Err(e) = spawned {
            self.stuck.fetch_sub(1, Ordering::AcqRel);
            return Err(e.into());
        }
        match rx.recv_timeout(CONNECT_TIMEOUT + io) {
            Ok(con) => con,
            Err(_) => Err(timeout_error("Redis accepted the connection but did not answer its set-up")),
        }
    }

    /// Records a link going up or down and tells the members when the
    /// cluster as a whole is lost or restored.
    fn set_link(&self, side: Side, up: bool) {
        let notice = {
            let mut l = self.link.lock();
            match side {
                Side::Out => {
                    l.out = up;
                    if !up {
                        l.inn = false;
                        self.resubscribe.store(true, Ordering::Release);
                    }
                }
                Side::In => l.inn = up,
            }
            if l.out && l.inn {
                let first = !l.was_up;
                l.was_up = true;
                if first {
                    log::info!("cluster: link up (server {})", self.sid);
                }
                std::mem::take(&mut l.lost).then_some("restored")
            } else if l.was_up && !l.lost && !self.stopping() {
                l.lost = true;
                Some("lost")
            } else {
                None
            }
        };
        if let Some(what) = notice {
            log::warn!("cluster: link {what}");
            let all = self.room.lock().all();
            local::send_all(&all, &format!("* cluster link {what}"));
        }
    }

    // ---- outbound ----

    fn run_out(&self, rx: Receiver<Job>, con: Connection) {
        let mut con = Some(Link::new(con));
        let mut backoff = MIN_BACKOFF;
        let mut retry_at = Instant::now();
        let mut renew_at = Instant::now();
        let period = self.beat();
        loop {
            let now = Instant::now();
            if con.is_none() && now >= retry_at && !self.stopping() {
                // The link is back once Redis answers (a connection it
                // accepts but does not serve, as under `CLIENT PAUSE`, is
                // not): this server's nicks and members written again first.
                match self.connect().map(Link::new).and_then(|mut c| self.renew(&mut c).map(|()| c)) {
                    Ok(c) => {
                        con = Some(c);
                        backoff = MIN_BACKOFF;
                        renew_at = Instant::now() + period;
                        self.set_link(Side::Out, true);
                    }
                    Err(e) => {
                        log::debug!("cluster: reconnecting: {}", self.url.scrub(&e.to_string()));
                        retry_at = now + backoff;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
            if let Some(c) = con.as_mut() {
                if now >= renew_at {
                    renew_at = now + period;
                    if let Err(e) = self.renew(c) {
                        self.lost(&mut con, e);
                        retry_at = now + backoff;
                    }
                }
            }
            let next = if con.is_some() { renew_at } else { retry_at };
            let wait = next.saturating_duration_since(Instant::now()).min(POLL);
            match rx.recv_timeout(wait) {
                Ok(job) => {
                    if self.handle(job, &mut con) {
                        retry_at = Instant::now() + backoff;
                    }
                }
                Err(RecvTimeoutError::Timeout) if self.stopping() => break,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        if let Some(c) = con.as_mut() {
            let _ = redis::pipe()
                .cmd("SREM")
                .arg(SERVERS)
                .arg(&self.sid)
                .ignore()
                .cmd("DEL")
                .arg(members_entry(&self.sid))
                .ignore()
                .query::<()>(c);
        }
        log::info!("cluster: bridge stopped");
    }

    fn lost(&self, con: &mut Option<Link>, e: RedisError) {
        log::warn!("cluster: Redis link error: {}", self.url.scrub(&e.to_string()));
        *con = None;
        self.set_link(Side::Out, false);
    }

    /// Does one job; returns whether the link was lost doing it.
    fn handle(&self, mut job: Job, con: &mut Option<Link>) -> bool {
        let Some(c) = con.as_mut() else {
            self.offline(job);
            return false;
        };
        let result = match &mut job {
            Job::Publish(e) => self.publish(c, e),
            Job::Claim { id, nick, account, reply } => self.claim(c, *id, nick, account.clone(), reply),
            Job::Who { reply } => self.who(c, reply),
            Job::Msg { from, to, text, reply } => self.msg(c, from, to, text, reply),
            Job::Evict { nick } => self.evict(c, nick),
        };
        match result {
            Ok(()) => false,
            Err(e) => {
                self.lost(con, e);
                self.offline(job);
                true
            }
        }
    }

    /// A job while the link is down: answered from the local room.
    fn offline(&self, job: Job) {
        match job {
            Job::Publish(_) => count_drop(&self.dropped),
            Job::Claim { mut reply, .. } => reply.line("! cluster link lost, try again later"),
            Job::Who { mut reply } => {
                let nicks = local::who_names(&self.room.lock());
                reply.line(&local::online(nicks));
            }
            Job::Msg { to, mut reply, .. } => reply.line(&format!("! no such user {to} (cluster link lost)")),
            // Told a moment ago by the other server, and Redis cannot be
            // asked: the latest login takes over.
            Job::Evict { nick } => {
                let _ = local::evict(&self.room, &nick);
            }
        }
    }

    /// Sends the local holder of `nick` back to a guest nick unless this
    /// server holds it in Redis. Two owners logging in at once on two
    /// servers both claim the nick and both publish `evict`: Redis keeps
    /// the last claim, and only that server's member keeps the nick.
    fn evict(&self, c: &mut Link, nick: &str) -> RedisResult<()> {
        let holder: Option<String> = redis::cmd("GET").arg(nick_entry(&nick_key(nick))).query(c)?;
        if holder.as_deref() != Some(self.sid.as_str()) {
            if let Some((old, new)) = local::evict(&self.room, nick) {
                self.publish(c, &Event::Nick { old, new })?;
            }
        }
        Ok(())
    }

    /// Whether no local member holds `nick`.
    fn free_here(&self, nick: &str) -> bool {
        self.room.lock().find(nick).is_none()
    }

    fn publish(&self, c: &mut Link, e: &Event) -> RedisResult<()> {
        let members = members_entry(&self.sid);
        let mut p = redis::pipe();
        let take = |p: &mut redis::Pipeline, nick: &str| {
            p.cmd("SADD").arg(&members).arg(nick).ignore();
            p.cmd("SET")
                .arg(nick_entry(&nick_key(nick)))
                .arg(&self.sid)
                .arg("NX")
                .arg("PX")
                .arg(self.lease_ms())
                .ignore();
        };
        let release = |p: &mut redis::Pipeline, nick: &str| {
            p.cmd("SREM").arg(&members).arg(nick).ignore();
            if self.free_here(nick) {
                p.cmd("EVAL").arg(RELEASE).arg(1).arg(nick_entry(&nick_key(nick))).arg(&self.sid).ignore();
            }
        };
        match e {
            Event::Join { nick } => take(&mut p, nick),
            Event::Leave { nick, .. } => release(&mut p, nick),
            Event::Nick { old, new } => {
                release(&mut p, old);
                take(&mut p, new);
            }
            _ => {}
        }
        let env = Envelope { s: self.sid.clone(), e: e.clone() };
        p.cmd("PUBLISH").arg(CHANNEL).arg(env.encode()).ignore();
        p.query::<()>(c)
    }

    fn claim(
        &self,
        c: &mut Link,
        id: u64,
        nick: &str,
        account: Option<String>,
        reply: &mut Deferred,
    ) -> RedisResult<()> {
        let nick = normalize_nick(nick);
        let key = nick_key(&nick);
        let force = account.as_deref() == Some(key.as_str());
        let r: i64 = redis::cmd("EVAL")
            .arg(CLAIM)
            .arg(2)
            .arg(nick_entry(&key))
            .arg(account_entry(&key))
            .arg(&self.sid)
            .arg(self.lease_ms())
            .arg(if force { "1" } else { "0" })
            .query(c)?;
        let refused = match r {
            1 => "! nick taken",
            2 => "! nick registered",
            _ => {
                if force {
                    self.publish(c, &Event::Evict { nick: nick.clone() })?;
                }
                match local::rename(&self.room, id, &nick, account, reply) {
                    Ok(changes) => {
                        for (old, new) in changes {
                            self.publish(c, &Event::Nick { old, new })?;
                        }
                        return Ok(());
                    }
                    Err(e) => {
                        if self.free_here(&nick) {
                            redis::cmd("EVAL")
                                .arg(RELEASE)
                                .arg(1)
                                .arg(nick_entry(&key))
                                .arg(&self.sid)
                                .query::<()>(c)?;
                        }
                        match e {
                            NickError::Taken => "! nick taken",
                            NickError::Invalid => "! invalid nick",
                            NickError::NotMember => return Ok(()),
                        }
                    }
                }
            }
        };
        reply.line(refused);
        Ok(())
    }

    fn who(&self, c: &mut Link, reply: &mut Deferred) -> RedisResult<()> {
        let servers: Vec<String> = redis::cmd("SMEMBERS").arg(SERVERS).query(c)?;
        // Members elsewhere by nick alone: their addresses stay with the
        // server they are connected to.
        let mut nicks = local::who_names(&self.room.lock());
        for s in servers.iter().filter(|s| **s != self.sid) {
            let (exists, members): (bool, Vec<String>) = redis::pipe()
                .cmd("EXISTS")
                .arg(members_entry(s))
                .cmd("SMEMBERS")
                .arg(members_entry(s))
                .query(c)?;
            if !exists {
                // A server that stopped renewing (or has nobody).
                redis::cmd("SREM").arg(SERVERS).arg(s).query::<()>(c)?;
            }
            nicks.extend(members.iter().filter_map(|n| checked_nick(n)));
        }
        reply.line(&local::online(nicks));
        Ok(())
    }

    fn msg(&self, c: &mut Link, from: &str, to: &str, text: &str, reply: &mut Deferred) -> RedisResult<()> {
        let name = normalize_nick(to);
        let owner: Option<String> = redis::cmd("GET").arg(nick_entry(&nick_key(&name))).query(c)?;
        match owner {
            Some(s) if s != self.sid => {
                let e = Event::Msg { from: from.to_owned(), to: name, text: text.to_owned() };
                self.publish(c, &e)
            }
            _ => {
                reply.line(&format!("! no such user {to}"));
                Ok(())
            }
        }
    }

    /// Renews this server's nick leases (taking back those that expired
    /// while the link was down), rewrites its member set, and sends back
    /// to guest nicks the members whose nick another server took meanwhile.
    fn renew(&self, c: &mut Link) -> RedisResult<()> {
        let roster = self.room.lock().roster();
        let members = members_entry(&self.sid);
        let mut p = redis::pipe();
        for (_, nick, _) in &roster {
            p.cmd("EVAL")
                .arg(RENEW)
                .arg(1)
                .arg(nick_entry(&nick_key(nick)))
                .arg(&self.sid)
                .arg(self.lease_ms());
        }
        p.cmd("DEL").arg(&members).ignore();
        if !roster.is_empty() {
            p.cmd("SADD")
                .arg(&members)
                .arg(roster.iter().map(|(_, n, _)| n.as_str()).collect::<Vec<_>>())
                .ignore();
            p.cmd("PEXPIRE").arg(&members).arg(self.lease_ms()).ignore();
        }
        p.cmd("SADD").arg(SERVERS).arg(&self.sid).ignore();
        p.cmd("EVAL").arg(KEEP_SEQ).arg(1).arg(SEQ).arg(self.seq).ignore();
        let held: Vec<i64> = p.query(c)?;
        for ((_, nick, _), ok) in roster.iter().zip(held) {
            if ok == 0 {
                log::warn!("cluster: another server holds {nick} now (a later login, or taken while the link was down)");
                if let Some((old, new)) = local::evict(&self.room, nick) {
                    self.publish(c, &Event::Nick { old, new })?;
                }
            }
        }
        Ok(())
    }

    // ---- inbound ----

    fn run_in(&self, tx: &Sender<Job>) {
        let mut backoff = MIN_BACKOFF;
        while !self.stopping() {
            if let Err(e) = self.listen(tx, &mut backoff) {
                log::debug!("cluster: subscription: {}", self.url.scrub(&e.to_string()));
            }
            if self.stopping() {
                break;
            }
            self.set_link(Side::In, false);
            let until = Instant::now() + backoff;
            while Instant::now() < until && !self.stopping() {
                std::thread::sleep(POLL.min(until.saturating_duration_since(Instant::now())));
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Subscribes and delivers until the link drops or the bridge stops.
    /// A channel quiet for a beat is subscribed to again, which Redis
    /// answers: a Redis that does not (stopped, or the network gone
    /// without a reset) is a lost link, not a quiet room.
    fn listen(&self, tx: &Sender<Job>, backoff: &mut Duration) -> RedisResult<()> {
        self.resubscribe.store(false, Ordering::Release);
        let mut con = self.connect()?;
        let mut ps = con.as_pubsub();
        ps.subscribe(CHANNEL)?;
        ps.set_read_timeout(Some(POLL))?;
        *backoff = MIN_BACKOFF;
        self.set_link(Side::In, true);
        let mut heard = Instant::now();
        while !self.stopping() {
            if self.resubscribe.swap(false, Ordering::AcqRel) {
                log::debug!("cluster: subscribing again (the outbound link was lost)");
                return Ok(());
            }
            match ps.get_message() {
                Ok(msg) => {
                    heard = Instant::now();
                    self.deliver(msg.get_payload_bytes(), tx);
                }
                Err(e) if e.is_timeout() => {}
                Err(e) => return Err(e),
            }
            if heard.elapsed() >= self.beat() {
                // Events that come meanwhile are kept for get_message.
                ps.set_read_timeout(Some(self.io_timeout()))?;
                ps.subscribe(CHANNEL)?;
                ps.set_read_timeout(Some(POLL))?;
                heard = Instant::now();
            }
        }
        Ok(())
    }

    /// Hands another server's event to the local members, cleaned again.
    fn deliver(&self, bytes: &[u8], tx: &Sender<Job>) {
        let Some(env) = Envelope::decode(bytes) else {
            log::debug!("cluster: ignoring a message that is not an event ({} bytes)", bytes.len());
            return;
        };
        if env.s == self.sid {
            return;
        }
        let announce = |text: String| {
            let all = self.room.lock().all();
            if all.len() < self.announce_up_to {
                local::send_all(&all, &text);
            }
        };
        match env.e {
            Event::Join { nick } => {
                if let Some(nick) = checked_nick(&nick) {
                    announce(format!("* {nick} joined"));
                }
            }
            Event::Leave { nick, slow } => {
                if let Some(nick) = checked_nick(&nick) {
                    announce(format!("* {nick} left{}", if slow { " (too slow)" } else { "" }));
                }
            }
            Event::Nick { old, new } => {
                if let (Some(old), Some(new)) = (checked_nick(&old), checked_nick(&new)) {
                    let line = format!("* {old} is now {new}");
                    self.pace(line.len());
                    let all = self.room.lock().all();
                    local::send_all(&all, &line);
                }
            }
            Event::Text { nick, text } => {
                if let Some(nick) = checked_nick(&nick) {
                    let line = format!("<{nick}> {}", clean(cut(&text, self.max_line)));
                    self.pace(line.len() + 1);
                    let all = self.room.lock().all();
                    local::send_all(&all, &line);
                }
            }
            Event::Msg { from, to, text } => {
                let (Some(from), Some(to)) = (checked_nick(&from), checked_nick(&to)) else { return };
                let found = self.room.lock().find(&to);
                if let Some((_, handle)) = found {
                    let line = format!("*{from}* {}", clean(cut(&text, self.max_line)));
                    self.pace(line.len() + 1);
                    local::send_all(&[handle], &line);
                }
            }
            Event::Evict { nick } => {
                if let Some(nick) = checked_nick(&nick) {
                    submit(tx, &self.dropped, Job::Evict { nick });
                }
            }
        }
    }

    /// Spends the room's budget for a line from another server; in debt,
    /// stops reading from Redis for as long (Redis buffers the rest).
    fn pace(&self, bytes: usize) {
        if let Some(wait) = (self.spend)(bytes) {
            std::thread::sleep(wait.min(Duration::from_secs(1)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_and_checked_nick() {
        assert_eq!(cut("héllo", 2), "h");
        assert_eq!(cut("héllo", 3), "hé");
        assert_eq!(cut("abc", 10), "abc");
        assert_eq!(checked_nick("bob"), Some("bob".to_string()));
        assert_eq!(checked_nick("b\u{1b}ob"), None);
        assert_eq!(checked_nick("cafe\u{301}"), Some("café".to_string()));
        assert_eq!(checked_nick(""), None);
    }

    #[test]
    fn a_full_queue_drops_and_counts_events_without_waiting() {
        let (tx, rx) = bounded(2);
        let dropped = AtomicU64::new(0);
        for i in 0..5 {
            submit(&tx, &dropped, Job::Publish(Event::Join { nick: format!("n{i}") }));
        }
        assert_eq!(dropped.load(Ordering::Relaxed), 3);
        assert_eq!(rx.len(), 2);
        drop(rx);
        submit(&tx, &dropped, Job::Publish(Event::Join { nick: "late".into() }));
        assert_eq!(dropped.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn a_bad_url_or_absent_redis_is_a_clear_error() {
        let room = SharedRoom::default();
        let spend: Spend = Box::new(|_| None);
        let e = Cluster::start(&ClusterConfig::new("nonsense://x"), Arc::clone(&room), 10, 100, spend)
            .unwrap_err();
        assert!(e.to_string().starts_with("bad Redis URL nonsense://x"), "{e}");
        let spend: Spend = Box::new(|_| None);
        let e = Cluster::start(
            &ClusterConfig::new("rediss://:pw@h:1/#insecure"),
            Arc::clone(&room),
            10,
            100,
            spend,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "rediss://:***@h:1/#insecure: #insecure (TLS without checking Redis's certificate) is refused; \
             trust the CA that signed it instead"
        );
        let spend: Spend = Box::new(|_| None);
        let plain = ClusterConfig::new("redis://:pw@h:1").ca_pem(b"PEM".to_vec());
        let e = Cluster::start(&plain, Arc::clone(&room), 10, 100, spend).unwrap_err();
        assert_eq!(
            e.to_string(),
            "a CA for Redis's certificate is given but redis://:***@h:1 is not a rediss:// (TLS) URL"
        );
        // A port nobody listens on: bind one and release it.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = format!("redis://127.0.0.1:{port}");
        let spend: Spend = Box::new(|_| None);
        let e = Cluster::start(&ClusterConfig::new(url.clone()), room, 10, 100, spend).unwrap_err();
        assert!(e.to_string().starts_with(&format!("cannot reach Redis at {url}")), "{e}");
    }
}
