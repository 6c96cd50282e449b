//! What an address may ask of the account threads, and how many wrong
//! passwords a name takes, keyed so that nobody spends another's budget.
//!
//! Every budget is a token bucket: a burst, and one more token every
//! refill period. Addresses are counted as [`Address`]es: an IPv4
//! address, an IPv6 /64 (one host's share of addresses, [`address_key`]),
//! or for a process on this machine connected over a Unix socket its user
//! id (every process of one user shares one budget, as every connection
//! from one host does).
//!
//! - Account requests (a `/register` or `/login` that reaches the store):
//!   [`ACCOUNT_REQUESTS_PER_ADDRESS`] per address, one more every
//!   [`REQUEST_REFILL`].
//! - Registrations: [`REGISTRATIONS_PER_ADDRESS`] per address, one more
//!   every [`REGISTRATION_REFILL`] (5 an hour); a request for a name
//!   already taken gives its token back.
//! - Failed logins, three budgets; a login waits when any is spent:
//!   - per name and address: [`LOGIN_FAILURES_PER_NAME_AND_ADDRESS`], one
//!     more every [`NAME_AND_ADDRESS_REFILL`]: a guesser at one address
//!     slows down at once, and only there;
//!   - per address over all names: [`LOGIN_FAILURES_PER_ADDRESS`], one
//!     more every [`ADDRESS_REFILL`];
//!   - per name over all addresses: [`LOGIN_FAILURES_PER_NAME`], one more
//!     every [`NAME_REFILL`], against guessers at many addresses. An
//!     address that has logged in as the name before (since the server
//!     started) neither spends nor waits for this one, so the owner at a
//!     known address gets in however many addresses guess.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use switchboard::Peer;

/// Account requests an address may make in a burst; one more every
/// [`REQUEST_REFILL`].
pub const ACCOUNT_REQUESTS_PER_ADDRESS: u32 = 10;
/// How long an address waits for one more account request.
pub const REQUEST_REFILL: Duration = Duration::from_secs(2);

/// Accounts an address may register in a burst; one more every
/// [`REGISTRATION_REFILL`].
pub const REGISTRATIONS_PER_ADDRESS: u32 = 5;
/// How long an address waits for one more registration (5 an hour).
pub const REGISTRATION_REFILL: Duration = Duration::from_secs(12 * 60);

/// Failed logins as one name from one address in a burst; one more every
/// [`NAME_AND_ADDRESS_REFILL`].
pub const LOGIN_FAILURES_PER_NAME_AND_ADDRESS: u32 = 5;
/// How long a name at one address waits for one more try.
pub const NAME_AND_ADDRESS_REFILL: Duration = Duration::from_secs(12);

/// Failed logins an address may have over all names in a burst; one more
/// every [`ADDRESS_REFILL`].
pub const LOGIN_FAILURES_PER_ADDRESS: u32 = 20;
/// How long an address waits for one more try.
pub const ADDRESS_REFILL: Duration = Duration::from_secs(3);

/// Failed logins a name may have from addresses that never logged in as
/// it, in a burst; one more every [`NAME_REFILL`].
pub const LOGIN_FAILURES_PER_NAME: u32 = 50;
/// How long a name waits for one more try from an unknown address.
pub const NAME_REFILL: Duration = Duration::from_secs(2);

/// Past this many entries, a budget forgets the full ones (they are as
/// good as new), and the addresses known for a name the oldest half.
const ENTRIES: usize = 10_000;

/// The address an account budget is kept for: an IPv4 address (an
/// IPv4-mapped IPv6 one as IPv4), or the /64 of an IPv6 address.
pub(crate) fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let mut seg = v6.segments();
            seg[4..].fill(0);
            IpAddr::from(seg)
        }
        v4 => v4,
    }
}

/// Who an account budget is kept for: the "address" of a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Address {
    /// A network peer: its IPv4 address, or its IPv6 /64 ([`address_key`]).
    Ip(IpAddr),
    /// A process on this machine over a Unix socket: its user id, the
    /// natural address of a local peer (a user can start as many processes
    /// as a host can open connections). `None`: the kernel did not tell
    /// the credentials; such peers share one budget.
    Uid(Option<u32>),
}

impl Address {
    /// The budget key of `peer`.
    pub(crate) fn of(peer: Peer) -> Address {
        match peer {
            Peer::Ip(a) => Address::from(a.ip()),
            Peer::Unix(c) => Address::Uid(c.map(|c| c.uid)),
        }
    }
}

impl From<IpAddr> for Address {
    fn from(ip: IpAddr) -> Address {
        Address::Ip(address_key(ip))
    }
}

/// `192.0.2.7`, `2001:db8:1:2::` (a /64), `unix:uid=1000` or
/// `unix:uid=unknown`.
impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Ip(ip) => ip.fmt(f),
            Address::Uid(Some(uid)) => write!(f, "unix:uid={uid}"),
            Address::Uid(None) => f.write_str("unix:uid=unknown"),
        }
    }
}

/// Tokens left, as of `at`.
#[derive(Debug, Clone, Copy)]
struct Tokens {
    tokens: f64,
    at: Instant,
}

/// One kind of budget, per key.
#[derive(Debug)]
struct Budgets<K> {
    burst: u32,
    refill: Duration,
    map: HashMap<K, Tokens>,
}

impl<K: Hash + Eq + Clone> Budgets<K> {
    fn new(burst: u32, refill: Duration) -> Budgets<K> {
        Budgets { burst, refill, map: HashMap::new() }
    }

    fn refilled(&self, t: &mut Tokens, now: Instant) {
        let gained = now.saturating_duration_since(t.at).as_secs_f64() / self.refill.as_secs_f64();
        t.tokens = (t.tokens + gained).min(f64::from(self.burst));
        t.at = now;
    }

    /// Whether `key` has a token left.
    fn has(&mut self, key: &K, now: Instant) -> bool {
        let Some(mut t) = self.map.get(key).copied() else { return true };
        self.refilled(&mut t, now);
        self.map.insert(key.clone(), t);
        t.tokens >= 1.0
    }

    /// Spends one of `key`'s tokens.
    fn spend(&mut self, key: &K, now: Instant) {
        let mut t = self.map.get(key).copied().unwrap_or(Tokens { tokens: f64::from(self.burst), at: now });
        self.refilled(&mut t, now);
        t.tokens -= 1.0;
        self.map.insert(key.clone(), t);
        if self.map.len() > ENTRIES {
            let (burst, refill) = (f64::from(self.burst), self.refill.as_secs_f64());
            self.map
                .retain(|_, t| t.tokens + now.saturating_duration_since(t.at).as_secs_f64() / refill < burst);
        }
    }

    /// Gives back a token spent for a request that did not need it.
    fn refund(&mut self, key: &K) {
        if let Some(t) = self.map.get_mut(key) {
            t.tokens = (t.tokens + 1.0).min(f64::from(self.burst));
        }
    }
}

/// Why an account request is refused before it reaches the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// The address's account requests are spent.
    Requests,
    /// The address's registrations are spent.
    Registrations,
    /// A failure budget of the name or the address is spent.
    Failures,
}

impl Refusal {
    /// The line the member gets.
    pub(super) fn line(self) -> &'static str {
        match self {
            Refusal::Requests => "! too many account requests, try again later",
            Refusal::Registrations => "! too many registrations from your address, try again later",
            Refusal::Failures => "! too many failed logins, try again later",
        }
    }
}

/// Every account budget of a server.
#[derive(Debug)]
pub(super) struct Limiter {
    requests: Budgets<Address>,
    registrations: Budgets<Address>,
    pair_failures: Budgets<(String, Address)>,
    address_failures: Budgets<Address>,
    name_failures: Budgets<String>,
    /// The addresses that logged in as a name, and when last.
    known: HashMap<(String, Address), Instant>,
}

impl Default for Limiter {
    fn default() -> Limiter {
        Limiter {
            requests: Budgets::new(ACCOUNT_REQUESTS_PER_ADDRESS, REQUEST_REFILL),
            registrations: Budgets::new(REGISTRATIONS_PER_ADDRESS, REGISTRATION_REFILL),
            pair_failures: Budgets::new(LOGIN_FAILURES_PER_NAME_AND_ADDRESS, NAME_AND_ADDRESS_REFILL),
            address_failures: Budgets::new(LOGIN_FAILURES_PER_ADDRESS, ADDRESS_REFILL),
            name_failures: Budgets::new(LOGIN_FAILURES_PER_NAME, NAME_REFILL),
            known: HashMap::new(),
        }
    }
}

impl Limiter {
    /// A `/register` from `addr`: spends a request and a registration, or
    /// says why not.
    pub(super) fn register(&mut self, addr: Address, now: Instant) -> Result<(), Refusal> {
        if !self.requests.has(&addr, now) {
            return Err(Refusal::Requests);
        }
        self.requests.spend(&addr, now);
        if !self.registrations.has(&addr, now) {
            return Err(Refusal::Registrations);
        }
        self.registrations.spend(&addr, now);
        Ok(())
    }

    /// The registration of `addr` did not happen (the name was taken, the
    /// store failed, the queue was full): its token comes back.
    pub(super) fn not_registered(&mut self, addr: Address) {
        self.registrations.refund(&addr);
    }

    /// A `/login` as `key` from `addr`: spends a request, or says why not.
    pub(super) fn login(&mut self, key: &str, addr: Address, now: Instant) -> Result<(), Refusal> {
        if !self.requests.has(&addr, now) {
            return Err(Refusal::Requests);
        }
        self.requests.spend(&addr, now);
        self.may_try(key, addr, now)
    }

    /// Whether a login as `key` from `addr` may be tried now (failure
    /// budgets only; spends nothing).
    pub(super) fn may_try(&mut self, key: &str, addr: Address, now: Instant) -> Result<(), Refusal> {
        let pair = (key.to_owned(), addr);
        let known = self.known.contains_key(&pair);
        let ok = self.pair_failures.has(&pair, now)
            && self.address_failures.has(&addr, now)
            && (known || self.name_failures.has(&pair.0, now));
        if ok {
            Ok(())
        } else {
            Err(Refusal::Failures)
        }
    }

    /// A wrong password (or an unknown name) for `key` from `addr`.
    pub(super) fn failed(&mut self, key: &str, addr: Address, now: Instant) {
        let pair = (key.to_owned(), addr);
        self.pair_failures.spend(&pair, now);
        self.address_failures.spend(&addr, now);
        if !self.known.contains_key(&pair) {
            self.name_failures.spend(&pair.0, now);
        }
    }

    /// `addr` logged in as `key`: from now on it is exempt from the name's
    /// budget over all addresses.
    pub(super) fn logged_in(&mut self, key: &str, addr: Address, now: Instant) {
        self.known.insert((key.to_owned(), addr), now);
        if self.known.len() > ENTRIES {
            let mut times: Vec<Instant> = self.known.values().copied().collect();
            times.sort_unstable();
            let cut = times[times.len() / 2];
            self.known.retain(|_, at| *at > cut);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Address {
        IpAddr::from([127, 0, 0, last]).into()
    }

    #[test]
    fn a_guesser_spends_its_own_budget_not_the_owners() {
        let mut l = Limiter::default();
        let now = Instant::now();
        for _ in 0..LOGIN_FAILURES_PER_NAME_AND_ADDRESS {
            assert_eq!(l.may_try("bob", ip(9), now), Ok(()));
            l.failed("bob", ip(9), now);
        }
        assert_eq!(l.may_try("bob", ip(9), now), Err(Refusal::Failures));
        // Only there: the owner at another address tries at once, and so
        // does the guesser for another name.
        assert_eq!(l.may_try("bob", ip(1), now), Ok(()));
        assert_eq!(l.may_try("alice", ip(9), now), Ok(()));
        // One more try once the refill has passed.
        assert_eq!(l.may_try("bob", ip(9), now + NAME_AND_ADDRESS_REFILL), Ok(()));
    }

    #[test]
    fn many_guessing_addresses_spend_the_name_but_not_for_a_known_address() {
        let mut l = Limiter::default();
        let now = Instant::now();
        l.logged_in("bob", ip(1), now);
        let guessers = LOGIN_FAILURES_PER_NAME.div_ceil(LOGIN_FAILURES_PER_NAME_AND_ADDRESS);
        for g in 0..guessers {
            for _ in 0..LOGIN_FAILURES_PER_NAME_AND_ADDRESS {
                l.failed("bob", ip(100 + g as u8), now);
            }
        }
        // A fresh address waits; the address that logged in before does not.
        assert_eq!(l.may_try("bob", ip(2), now), Err(Refusal::Failures));
        assert_eq!(l.may_try("bob", ip(1), now), Ok(()));
        assert_eq!(l.may_try("bob", ip(2), now + NAME_REFILL), Ok(()));
        // The known address's own wrong passwords do not spend the name's.
        let mut l = Limiter::default();
        l.logged_in("bob", ip(1), now);
        for _ in 0..LOGIN_FAILURES_PER_NAME_AND_ADDRESS {
            l.failed("bob", ip(1), now);
        }
        assert_eq!(l.may_try("bob", ip(1), now), Err(Refusal::Failures));
        assert!(l.name_failures.map.is_empty());
    }

    #[test]
    fn failures_over_many_names_are_limited_per_address() {
        let mut l = Limiter::default();
        let now = Instant::now();
        for n in 0..LOGIN_FAILURES_PER_ADDRESS {
            assert_eq!(l.may_try(&format!("user{n}"), ip(9), now), Ok(()));
            l.failed(&format!("user{n}"), ip(9), now);
        }
        assert_eq!(l.may_try("fresh", ip(9), now), Err(Refusal::Failures));
        assert_eq!(l.may_try("fresh", ip(8), now), Ok(()));
    }

    #[test]
    fn requests_and_registrations_per_address() {
        let mut l = Limiter::default();
        let now = Instant::now();
        for _ in 0..REGISTRATIONS_PER_ADDRESS {
            assert_eq!(l.register(ip(9), now), Ok(()));
        }
        assert_eq!(l.register(ip(9), now), Err(Refusal::Registrations));
        // A name that was taken gives its registration back.
        l.not_registered(ip(9));
        assert_eq!(l.register(ip(9), now), Ok(()));
        assert_eq!(l.register(ip(8), now), Ok(()));
        // Every request spends one, refused or not.
        let spent = REGISTRATIONS_PER_ADDRESS + 2;
        for _ in spent..ACCOUNT_REQUESTS_PER_ADDRESS {
            assert_eq!(l.login("x", ip(9), now), Ok(()));
        }
        assert_eq!(l.login("x", ip(9), now), Err(Refusal::Requests));
        assert_eq!(l.register(ip(9), now), Err(Refusal::Requests));
        assert_eq!(l.login("x", ip(9), now + REQUEST_REFILL), Ok(()));
        assert_eq!(
            l.register(ip(9), now + REGISTRATION_REFILL + REQUEST_REFILL * 2),
            Ok(()),
            "one more registration after the refill"
        );
    }

    #[test]
    fn addresses_are_counted_by_host() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::7".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(address_key(mapped), IpAddr::from([192, 0, 2, 7]));
        assert_eq!(address_key([127, 0, 0, 3].into()), IpAddr::from([127, 0, 0, 3]));
    }

    #[test]
    fn a_unix_peer_is_counted_by_its_uid() {
        use switchboard::Credentials;
        let unix = |uid, pid| Address::of(Peer::Unix(Some(Credentials { uid, gid: 100, pid })));
        assert_eq!(unix(1000, 1), unix(1000, 2), "one user, two processes: one address");
        assert_ne!(unix(1000, 1), unix(1001, 1));
        assert_eq!(unix(1000, 7).to_string(), "unix:uid=1000");
        assert_eq!(Address::of(Peer::Unix(None)).to_string(), "unix:uid=unknown");
        // Not the unspecified address IP peers' code sees for every Unix peer.
        let unspecified = Address::of(Peer::Ip("0.0.0.0:0".parse().unwrap()));
        assert_ne!(unix(0, 1), unspecified);
        assert_ne!(Address::of(Peer::Unix(None)), unspecified);
        // One budget for both processes of user 1000, another for user 1001.
        let mut l = Limiter::default();
        let now = Instant::now();
        for n in 0..LOGIN_FAILURES_PER_NAME_AND_ADDRESS {
            l.failed("bob", unix(1000, 1 + n as i32 % 2), now);
        }
        assert_eq!(l.may_try("bob", unix(1000, 3), now), Err(Refusal::Failures));
        assert_eq!(l.may_try("bob", unix(1001, 3), now), Ok(()));
    }

    #[test]
    fn budgets_stay_bounded() {
        let mut l = Limiter::default();
        let t0 = Instant::now();
        for n in 0..(ENTRIES as u32 + 10) {
            let ip = Address::from(IpAddr::from(n.to_be_bytes()));
            l.requests.spend(&ip, t0);
            l.logged_in("bob", ip, t0 + Duration::from_millis(u64::from(n)));
        }
        // Much later, every entry is full again and forgotten at the next spend.
        l.requests.spend(&ip(1), t0 + REQUEST_REFILL * 2);
        assert_eq!(l.requests.map.len(), 1);
        assert!(l.known.len() <= ENTRIES, "{}", l.known.len());
    }
}
