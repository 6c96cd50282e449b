//! Accounts: `/register NAME PASSWORD` and `/login NAME PASSWORD`.
//!
//! Hashing takes tens of milliseconds (Argon2id, the `argon2` crate's
//! defaults), so it never runs on a worker: the worker checks the command's
//! shape, promises a reply ([`Conn::defer`], so the member's later lines
//! wait behind it), and hands the work to a small pool of account threads
//! through a bounded queue (full: `! server busy, try again`). Passwords are
//! never logged nor stored; argon2's verify compares in constant time.
//! Failed logins are limited per name and per address (token buckets of
//! [`LOGIN_FAILURES_PER_NAME`] and [`LOGIN_FAILURES_PER_ADDRESS`]).

mod store;

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::net::IpAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use parking_lot::Mutex;
use switchboard::{Conn, Deferred};

use super::cluster::{ClusterLink, Job};
use super::command::valid_nick;
use super::local::{self, SharedRoom};
use super::room::NickError;
use super::text::{nick_key, normalize_nick};
pub use store::AccountsError;
pub(crate) use store::{Account, Embedded, RedisStore, Store};

/// The shortest password accepted, in characters.
pub const MIN_PASSWORD: usize = 8;

/// Failed logins a name may have in a burst; one more is allowed every
/// [`NAME_REFILL`].
pub const LOGIN_FAILURES_PER_NAME: u32 = 5;

/// Failed logins an address may have in a burst; one more is allowed every
/// [`ADDRESS_REFILL`].
pub const LOGIN_FAILURES_PER_ADDRESS: u32 = 20;

/// How long a name waits for one more try.
pub const NAME_REFILL: Duration = Duration::from_secs(12);

/// How long an address waits for one more try.
pub const ADDRESS_REFILL: Duration = Duration::from_secs(3);

/// Account threads, and how many requests may wait for them.
const THREADS: usize = 2;
const QUEUE: usize = 64;
/// Past this many names or addresses, the limiter forgets those with no
/// failure left to pay.
const LIMITER_ENTRIES: usize = 10_000;

/// A failure budget: `tokens` tries left, refilled one per `refill`.
#[derive(Debug, Clone, Copy)]
struct Tokens {
    tokens: f64,
    at: Instant,
}

impl Tokens {
    fn refill(&mut self, burst: u32, refill: Duration, now: Instant) {
        let gained = now.duration_since(self.at).as_secs_f64() / refill.as_secs_f64();
        self.tokens = (self.tokens + gained).min(f64::from(burst));
        self.at = now;
    }
}

/// Failed logins per name and per address.
#[derive(Debug, Default)]
struct Limiter {
    names: HashMap<String, Tokens>,
    addrs: HashMap<IpAddr, Tokens>,
}

impl Limiter {
    /// Whether a login for `key` from `ip` must wait.
    fn blocked(&mut self, key: &str, ip: IpAddr, now: Instant) -> bool {
        let name = self.names.get_mut(key).map(|t| {
            t.refill(LOGIN_FAILURES_PER_NAME, NAME_REFILL, now);
            t.tokens < 1.0
        });
        let addr = self.addrs.get_mut(&ip).map(|t| {
            t.refill(LOGIN_FAILURES_PER_ADDRESS, ADDRESS_REFILL, now);
            t.tokens < 1.0
        });
        name == Some(true) || addr == Some(true)
    }

    /// Counts a failed login.
    fn fail(&mut self, key: &str, ip: IpAddr, now: Instant) {
        let fresh = |burst: u32| Tokens { tokens: f64::from(burst), at: now };
        let t = self.names.entry(key.to_owned()).or_insert_with(|| fresh(LOGIN_FAILURES_PER_NAME));
        t.refill(LOGIN_FAILURES_PER_NAME, NAME_REFILL, now);
        t.tokens -= 1.0;
        let t = self.addrs.entry(ip).or_insert_with(|| fresh(LOGIN_FAILURES_PER_ADDRESS));
        t.refill(LOGIN_FAILURES_PER_ADDRESS, ADDRESS_REFILL, now);
        t.tokens -= 1.0;
        if self.names.len() > LIMITER_ENTRIES {
            self.names.retain(|_, t| {
                t.refill(LOGIN_FAILURES_PER_NAME, NAME_REFILL, now);
                t.tokens < f64::from(LOGIN_FAILURES_PER_NAME)
            });
        }
        if self.addrs.len() > LIMITER_ENTRIES {
            self.addrs.retain(|_, t| {
                t.refill(LOGIN_FAILURES_PER_ADDRESS, ADDRESS_REFILL, now);
                t.tokens < f64::from(LOGIN_FAILURES_PER_ADDRESS)
            });
        }
    }
}

/// One request for the account threads.
enum Task {
    Register { key: String, name: String, password: String, reply: Deferred },
    Login { id: u64, key: String, password: String, ip: IpAddr, reply: Deferred },
}

/// What the account threads share.
struct Shared {
    store: Box<dyn Store>,
    room: SharedRoom,
    cluster: Option<ClusterLink>,
    limiter: Mutex<Limiter>,
    /// A hash to verify against when the name is unknown, so an unknown
    /// name takes as long as a wrong password.
    dummy: String,
}

/// The account threads of a chat; joined on drop.
pub(crate) struct Accounts {
    tx: Option<Sender<Task>>,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl fmt::Debug for Accounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Accounts").field("threads", &self.threads.len()).finish()
    }
}

/// 16 bytes from the kernel's random source.
fn random_salt() -> Result<SaltString, String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| e.to_string())?;
    SaltString::encode_b64(&bytes).map_err(|e| e.to_string())
}

/// The Argon2id hash of `password` (PHC string), with a fresh salt.
fn hash(password: &str) -> Result<String, String> {
    let salt = random_salt()?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Whether `password` matches `phc` (constant-time compare inside argon2).
fn verify(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

impl Accounts {
    /// Starts the account threads over `store`.
    pub(crate) fn start(
        store: Box<dyn Store>,
        room: SharedRoom,
        cluster: Option<ClusterLink>,
    ) -> Result<Accounts, AccountsError> {
        let dummy = hash("not a password of anyone").map_err(|e| AccountsError(format!("argon2: {e}")))?;
        let shared =
            Arc::new(Shared { store, room, cluster, limiter: Mutex::new(Limiter::default()), dummy });
        let (tx, rx) = bounded::<Task>(QUEUE);
        let mut threads = Vec::new();
        for n in 0..THREADS {
            let shared = Arc::clone(&shared);
            let rx: Receiver<Task> = rx.clone();
            let t = std::thread::Builder::new()
                .name(format!("accounts-{n}"))
                .spawn(move || {
                    for task in rx {
                        shared.run(task);
                    }
                })
                .map_err(|e| AccountsError(format!("cannot start the account threads: {e}")))?;
            threads.push(t);
        }
        Ok(Accounts { tx: Some(tx), shared, threads })
    }

    /// Whether `key` is registered, when known without blocking.
    pub(crate) fn registered(&self, key: &str) -> Option<bool> {
        self.shared.store.registered(key)
    }

    /// `/register NAME PASSWORD` from member `conn`.
    pub(crate) fn register(&self, name: &str, password: &str, conn: &mut Conn<'_>) {
        let name = normalize_nick(name);
        if !valid_nick(&name) {
            return say(conn, "! invalid nick");
        }
        if name.to_lowercase().starts_with("guest-") {
            return say(conn, "! guest nicks cannot be registered");
        }
        if password.chars().count() < MIN_PASSWORD {
            return say(conn, &format!("! password too short (at least {MIN_PASSWORD} characters)"));
        }
        let key = nick_key(&name);
        self.submit(Task::Register { key, name, password: password.to_owned(), reply: conn.defer() });
    }

    /// `/login NAME PASSWORD` from member `conn`.
    pub(crate) fn login(&self, name: &str, password: &str, conn: &mut Conn<'_>) {
        let name = normalize_nick(name);
        if !valid_nick(&name) {
            return say(conn, "! wrong name or password");
        }
        let key = nick_key(&name);
        let ip = conn.peer_addr().ip();
        self.submit(Task::Login {
            id: conn.id(),
            key,
            password: password.to_owned(),
            ip,
            reply: conn.defer(),
        });
    }

    fn submit(&self, task: Task) {
        let Some(tx) = &self.tx else { return };
        if let Err(TrySendError::Full(task) | TrySendError::Disconnected(task)) = tx.try_send(task) {
            let (Task::Register { reply, .. } | Task::Login { reply, .. }) = task;
            let _ = reply.send(local::line("! server busy, try again"));
        }
    }
}

impl Drop for Accounts {
    fn drop(&mut self) {
        drop(self.tx.take());
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                log::error!("accounts: a thread panicked");
            }
        }
    }
}

fn say(conn: &mut Conn<'_>, line: &str) {
    let mut bytes = line.as_bytes().to_vec();
    bytes.push(b'\n');
    conn.send(&bytes);
}

impl Shared {
    fn run(&self, task: Task) {
        match task {
            Task::Register { key, name, password, reply } => {
                let answer = match hash(&password) {
                    Err(e) => {
                        log::error!("accounts: hashing failed: {e}");
                        "! accounts unavailable, try again later".to_owned()
                    }
                    Ok(hash) => match self.store.register(&key, &Account { name: name.clone(), hash }) {
                        Ok(true) => {
                            log::info!("accounts: registered {name}");
                            format!("* registered {name}")
                        }
                        Ok(false) => "! name already registered".to_owned(),
                        Err(e) => {
                            log::error!("accounts: cannot store {name}: {e}");
                            "! accounts unavailable, try again later".to_owned()
                        }
                    },
                };
                let _ = reply.send(local::line(&answer));
            }
            Task::Login { id, key, password, ip, reply } => {
                if self.limiter.lock().blocked(&key, ip, Instant::now()) {
                    log::warn!("accounts: login for {key} from {ip} refused: too many failures");
                    let _ = reply.send(local::line("! too many failed logins, try again later"));
                    return;
                }
                let account = match self.store.find(&key) {
                    Ok(account) => account,
                    Err(e) => {
                        log::error!("accounts: cannot read {key}: {e}");
                        let _ = reply.send(local::line("! accounts unavailable, try again later"));
                        return;
                    }
                };
                let ok = match &account {
                    Some(a) => verify(&password, &a.hash),
                    None => {
                        let _ = verify(&password, &self.dummy);
                        false
                    }
                };
                let Some(account) = account.filter(|_| ok) else {
                    log::info!("accounts: failed login for {key} from {ip}");
                    self.limiter.lock().fail(&key, ip, Instant::now());
                    let _ = reply.send(local::line("! wrong name or password"));
                    return;
                };
                log::info!("accounts: {} logged in from {ip}", account.name);
                match &self.cluster {
                    Some(cluster) => {
                        cluster.request(Job::Claim { id, nick: account.name, account: Some(key), reply })
                    }
                    None => match local::rename(&self.room, id, &account.name, Some(key), &reply) {
                        Ok(_) | Err(NickError::NotMember) => {}
                        Err(NickError::Taken) => {
                            let _ = reply.send(local::line("! nick taken"));
                        }
                        Err(NickError::Invalid) => {
                            let _ = reply.send(local::line("! invalid nick"));
                        }
                    },
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_hold_no_password() {
        let h = hash("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$v=19$"), "{h}");
        assert!(!h.contains("correct horse"));
        assert!(verify("correct horse", &h));
        assert!(!verify("correct horsE", &h));
        assert!(!verify("x", "not a phc string"));
        // Salted: the same password hashes differently.
        assert_ne!(h, hash("correct horse").unwrap());
    }

    #[test]
    fn failures_are_limited_per_name_and_per_address() {
        let mut l = Limiter::default();
        let now = Instant::now();
        let ip: IpAddr = [127, 0, 0, 1].into();
        let other: IpAddr = [127, 0, 0, 2].into();
        for _ in 0..LOGIN_FAILURES_PER_NAME {
            assert!(!l.blocked("bob", ip, now));
            l.fail("bob", ip, now);
        }
        assert!(l.blocked("bob", ip, now));
        // Per name: another address is refused too; another name is not.
        assert!(l.blocked("bob", other, now));
        assert!(!l.blocked("alice", ip, now));
        // One more try once NAME_REFILL has passed.
        assert!(!l.blocked("bob", other, now + NAME_REFILL));
        // Per address: many names from one address.
        let mut l = Limiter::default();
        for n in 0..LOGIN_FAILURES_PER_ADDRESS {
            assert!(!l.blocked(&format!("user{n}"), ip, now));
            l.fail(&format!("user{n}"), ip, now);
        }
        assert!(l.blocked("fresh", ip, now));
        assert!(!l.blocked("fresh", other, now));
    }
}
