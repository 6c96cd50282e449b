//! Accounts: `/register NAME PASSWORD` and `/login NAME PASSWORD`.
//!
//! Hashing takes tens of milliseconds (Argon2id, the `argon2` crate's
//! default parameters), so it never runs on a worker: the worker checks
//! the command's shape and the address's budgets ([`limits`]), promises a
//! reply ([`Conn::defer`](switchboard::Conn::defer), so the member's later lines wait behind it:
//! one request per connection at a time), and hands the work to a small
//! pool of account threads through a queue that serves addresses in turn
//! ([`queue`]; a full share: `! server busy, try again`). Each thread
//! hashes in one block of memory it allocated at start ([`hasher`]).
//! A name is looked up before its password is hashed, so a `/register`
//! of a taken name costs no hash. Passwords are hashed as the bytes the
//! member sent, never logged nor stored; the comparison is constant-time.

mod hasher;
mod limits;
mod queue;
mod store;

use std::fmt;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use parking_lot::Mutex;
use switchboard::{Deferred, Peer};

use super::cluster::{ClusterLink, Job};
use super::command::valid_nick;
use super::local::{self, SharedRoom};
use super::reply::{Caller, Reply, ACCOUNTS_NEED_TCP};
use super::room::NickError;
use super::text::{nick_key, normalize_nick};
use hasher::Hasher;
use limits::{Address, Limiter};
pub use limits::{
    ACCOUNT_REQUESTS_PER_ADDRESS, ADDRESS_REFILL, LOGIN_FAILURES_PER_ADDRESS, LOGIN_FAILURES_PER_NAME,
    LOGIN_FAILURES_PER_NAME_AND_ADDRESS, NAME_AND_ADDRESS_REFILL, NAME_REFILL, REGISTRATIONS_PER_ADDRESS,
    REGISTRATION_REFILL, REQUEST_REFILL,
};
use queue::{FairQueue, Pushed};
pub use store::{delete_account, AccountStore, AccountsError};
pub(crate) use store::{Account, Embedded, RedisStore, Store};

/// The shortest password accepted, in characters.
pub const MIN_PASSWORD: usize = 8;

/// Account threads, each with its own Argon2 block (19 MiB).
const THREADS: usize = 2;

/// One request for the account threads.
enum Task {
    Register { key: String, name: String, password: Vec<u8>, peer: Peer, reply: Deferred },
    Login { id: u64, key: String, password: Vec<u8>, peer: Peer, reply: Deferred },
}

/// What the account threads share.
struct Shared {
    store: Box<dyn Store>,
    room: SharedRoom,
    cluster: Option<ClusterLink>,
    limiter: Mutex<Limiter>,
    queue: FairQueue<Address, Task>,
    /// A hash to verify against when the name is unknown, so an unknown
    /// name takes as long as a wrong password.
    dummy: String,
}

/// The account threads of a chat; joined by [`stop`](Accounts::stop) or on
/// drop.
pub(crate) struct Accounts {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl fmt::Debug for Accounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Accounts").field("threads", &self.threads.lock().len()).finish()
    }
}

impl Accounts {
    /// Starts the account threads over `store`.
    pub(crate) fn start(
        store: Box<dyn Store>,
        room: SharedRoom,
        cluster: Option<ClusterLink>,
    ) -> Result<Accounts, AccountsError> {
        match store.rekey() {
            Ok(0) => {}
            Ok(n) => log::info!("accounts: {n} moved to the keys of the current nick rule"),
            Err(e) => log::warn!("accounts: cannot move accounts to the current nick rule's keys: {e}"),
        }
        let mut hashers: Vec<Hasher> = (0..THREADS).map(|_| Hasher::new()).collect();
        let dummy = hashers[0]
            .hash(b"not a password of anyone")
            .map_err(|e| AccountsError(format!("argon2: {e}")))?;
        let shared = Arc::new(Shared {
            store,
            room,
            cluster,
            limiter: Mutex::new(Limiter::default()),
            queue: FairQueue::new(queue::PER_ADDRESS, queue::TOTAL),
            dummy,
        });
        let accounts = Accounts { shared: Arc::clone(&shared), threads: Mutex::new(Vec::new()) };
        for (n, mut hasher) in hashers.drain(..).enumerate() {
            let shared = Arc::clone(&shared);
            let t = std::thread::Builder::new()
                .name(format!("accounts-{n}"))
                .spawn(move || {
                    while let Some(task) = shared.queue.pop() {
                        shared.run(task, &mut hasher);
                    }
                })
                .map_err(|e| AccountsError(format!("cannot start the account threads: {e}")))?;
            accounts.threads.lock().push(t);
        }
        Ok(accounts)
    }

    /// Whether `key` is registered, when known without blocking.
    pub(crate) fn registered(&self, key: &str) -> Option<bool> {
        self.shared.store.registered(key)
    }

    /// `/register NAME PASSWORD` from member `out` (one that can wait for
    /// the answer: [`Caller::waits`]); `password` as sent.
    pub(crate) fn register(&self, name: &str, password: &str, out: &mut dyn Caller) {
        let name = normalize_nick(name);
        if !valid_nick(&name) {
            return out.line("! invalid nick");
        }
        if name.to_lowercase().starts_with("guest-") {
            return out.line("! guest nicks cannot be registered");
        }
        if password.chars().count() < MIN_PASSWORD {
            return out.line(&format!("! password too short (at least {MIN_PASSWORD} characters)"));
        }
        let key = nick_key(&name);
        let Some(peer) = out.peer() else { return out.line(ACCOUNTS_NEED_TCP) };
        let addr = Address::of(peer);
        if let Err(refusal) = self.shared.limiter.lock().register(addr, Instant::now()) {
            log::debug!("accounts: /register {name} from {peer} refused: {}", &refusal.line()[2..]);
            return out.line(refusal.line());
        }
        // Known taken without asking the store: no queue, no hash.
        if self.registered(&key) == Some(true) {
            self.shared.limiter.lock().not_registered(addr);
            return out.line("! name already registered");
        }
        let Some(reply) = out.defer() else {
            self.shared.limiter.lock().not_registered(addr);
            return out.line(ACCOUNTS_NEED_TCP);
        };
        let password = password.as_bytes().to_vec();
        self.shared.submit(Task::Register { key, name, password, peer, reply });
    }

    /// `/login NAME PASSWORD` from member `id`, answered through `out`
    /// (one that can wait for the answer); `password` as sent.
    pub(crate) fn login(&self, id: u64, name: &str, password: &str, out: &mut dyn Caller) {
        let name = normalize_nick(name);
        if !valid_nick(&name) {
            return out.line("! wrong name or password");
        }
        let key = nick_key(&name);
        let Some(peer) = out.peer() else { return out.line(ACCOUNTS_NEED_TCP) };
        if let Err(refusal) = self.shared.limiter.lock().login(&key, Address::of(peer), Instant::now()) {
            log::debug!("accounts: login for {key} from {peer} refused: {}", &refusal.line()[2..]);
            return out.line(refusal.line());
        }
        let Some(reply) = out.defer() else { return out.line(ACCOUNTS_NEED_TCP) };
        let password = password.as_bytes().to_vec();
        self.shared.submit(Task::Login { id, key, password, peer, reply });
    }
}

impl Accounts {
    /// Closes the queue and joins the threads once the task each runs is
    /// done; the second call finds nothing to join.
    pub(crate) fn stop(&self) {
        self.shared.queue.close();
        let threads = std::mem::take(&mut *self.threads.lock());
        for t in threads {
            if t.join().is_err() {
                log::error!("accounts: a thread panicked");
            }
        }
    }
}

impl Drop for Accounts {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Shared {
    /// Queues `task` in its address's line, or answers it busy.
    fn submit(&self, task: Task) {
        let peer = match &task {
            Task::Register { peer, .. } | Task::Login { peer, .. } => *peer,
        };
        match self.queue.push(Address::of(peer), task) {
            Pushed::Queued => {}
            Pushed::Displaced(task) | Pushed::Refused(task) => self.busy(task),
        }
    }

    /// Answers `task` `! server busy` (a registration gives its token back).
    fn busy(&self, task: Task) {
        let (peer, mut reply) = match task {
            Task::Register { peer, reply, .. } => {
                self.limiter.lock().not_registered(Address::of(peer));
                (peer, reply)
            }
            Task::Login { peer, reply, .. } => (peer, reply),
        };
        log::warn!("accounts: queue share of {} full; answered busy", Address::of(peer));
        reply.line("! server busy, try again");
    }

    fn run(&self, task: Task, hasher: &mut Hasher) {
        match task {
            Task::Register { key, name, password, peer, mut reply } => {
                let answer = self.register(&key, &name, &password, peer, hasher);
                if !answer.starts_with("* ") {
                    self.limiter.lock().not_registered(Address::of(peer));
                }
                reply.line(&answer);
            }
            Task::Login { id, key, password, peer, reply } => {
                self.login(id, key, &password, peer, reply, hasher)
            }
        }
    }

    /// Registers `name`: the answer for the member.
    fn register(&self, key: &str, name: &str, password: &[u8], peer: Peer, hasher: &mut Hasher) -> String {
        let unavailable = "! accounts unavailable, try again later".to_owned();
        // Looked up before hashing: a taken name costs no hash.
        match self.store.find(key) {
            Ok(Some(_)) => return "! name already registered".to_owned(),
            Ok(None) => {}
            Err(e) => {
                log::error!("accounts: cannot read {key}: {e}");
                return unavailable;
            }
        }
        let hash = match hasher.hash(password) {
            Ok(hash) => hash,
            Err(e) => {
                log::error!("accounts: hashing failed: {e}");
                return unavailable;
            }
        };
        match self.store.register(key, &Account { name: name.to_owned(), hash }) {
            Ok(true) => {
                log::info!("accounts: registered {name} from {peer}");
                format!("* registered {name}")
            }
            Ok(false) => "! name already registered".to_owned(),
            Err(e) => {
                log::error!("accounts: cannot store {name}: {e}");
                unavailable
            }
        }
    }

    fn login(
        &self,
        id: u64,
        key: String,
        password: &[u8],
        peer: Peer,
        mut reply: Deferred,
        hasher: &mut Hasher,
    ) {
        // Again here: requests queued together may have spent the budget.
        let addr = Address::of(peer);
        if let Err(refusal) = self.limiter.lock().may_try(&key, addr, Instant::now()) {
            log::debug!("accounts: login for {key} from {peer} refused: {}", &refusal.line()[2..]);
            reply.line(refusal.line());
            return;
        }
        let account = match self.store.find(&key) {
            Ok(account) => account,
            Err(e) => {
                log::error!("accounts: cannot read {key}: {e}");
                reply.line("! accounts unavailable, try again later");
                return;
            }
        };
        let ok = match &account {
            Some(a) => hasher.verify(password, &a.hash).unwrap_or_else(|e| {
                log::error!("accounts: the hash of {key} cannot be checked: {e}");
                false
            }),
            None => {
                let _ = hasher.verify(password, &self.dummy);
                false
            }
        };
        let Some(account) = account.filter(|_| ok) else {
            log::info!("accounts: failed login for {key} from {peer}");
            self.limiter.lock().failed(&key, addr, Instant::now());
            reply.line("! wrong name or password");
            return;
        };
        self.limiter.lock().logged_in(&key, addr, Instant::now());
        log::info!("accounts: {} logged in from {peer}", account.name);
        match &self.cluster {
            Some(cluster) => {
                cluster.request(Job::Claim { id, nick: account.name, account: Some(key), reply })
            }
            None => match local::rename(&self.room, id, &account.name, Some(key), &mut reply) {
                Ok(_) | Err(NickError::NotMember) => {}
                Err(NickError::Taken) => reply.line("! nick taken"),
                Err(NickError::Invalid) => reply.line("! invalid nick"),
            },
        }
    }
}
