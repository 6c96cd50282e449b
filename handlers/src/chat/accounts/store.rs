//! Where accounts live: an embedded redb file, or Redis beside the cluster.
//!
//! Each account is one record under its nick key ([`nick_key`]): the name
//! as registered and its Argon2id hash in PHC form, as JSON. No password is
//! ever stored.
//!
//! [`nick_key`]: super::super::text::nick_key

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use redb::{Database, ReadableTable, TableDefinition};
use redis::{Client, Connection};
use serde::{Deserialize, Serialize};

use super::super::cluster::account_entry;
use super::super::text::{nick_key, normalize_nick};

/// One account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Account {
    /// The name as registered (NFC).
    pub(crate) name: String,
    /// The Argon2id hash, PHC string.
    pub(crate) hash: String,
}

/// Why the account store could not be opened.
#[derive(Debug)]
pub struct AccountsError(pub(crate) String);

impl fmt::Display for AccountsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AccountsError {}

/// An account store. Called from the accounts threads only (never a
/// worker): it may block.
pub(crate) trait Store: Send + Sync {
    /// Adds an account; `Ok(false)` when one has that key already. When it
    /// returns `Ok(true)` the account is durable.
    fn register(&self, key: &str, account: &Account) -> Result<bool, String>;
    /// The account with that key.
    fn find(&self, key: &str) -> Result<Option<Account>, String>;
    /// Whether that key is registered, when the store can tell without
    /// blocking (the embedded store keeps the names in memory); `None`
    /// otherwise.
    fn registered(&self, key: &str) -> Option<bool>;
    /// Removes the account with that key; the account removed, if any.
    fn delete(&self, key: &str) -> Result<Option<Account>, String>;
    /// Moves accounts kept under the key of an older nick rule to their
    /// key now; how many moved. (The embedded store does it as it opens.)
    fn rekey(&self) -> Result<usize, String> {
        Ok(0)
    }
}

/// Where the accounts are, for [`delete_account`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountStore {
    /// The embedded store at this path (`--accounts PATH`).
    File(PathBuf),
    /// The cluster's Redis at this URL (`--redis URL`).
    Redis(String),
}

/// Removes the account of `name` (compared as nicks are: `ALICE` removes
/// `alice`; an exact stored key is tried too, for an account kept under
/// a key of an older nick rule). Returns the name as it was registered,
/// or `None` when no account has that name. The embedded store must not
/// be open in a running server (redb locks the file: a clear error).
pub fn delete_account(store: &AccountStore, name: &str) -> Result<Option<String>, AccountsError> {
    let key = nick_key(&normalize_nick(name));
    let (store, what): (Box<dyn Store>, String) = match store {
        AccountStore::File(path) => {
            if !path.exists() {
                return Err(AccountsError(format!("account store {}: no such file", path.display())));
            }
            (Box::new(Embedded::open(path)?), format!("account store {}", path.display()))
        }
        AccountStore::Redis(url) => {
            let client =
                Client::open(url.as_str()).map_err(|e| AccountsError(format!("bad Redis URL {url}: {e}")))?;
            (Box::new(RedisStore::new(client)), format!("Redis at {url}"))
        }
    };
    let fail = |e: String| AccountsError(format!("{what}: {e}"));
    let mut removed = store.delete(&key).map_err(fail)?;
    if removed.is_none() && key != name {
        removed = store.delete(name).map_err(fail)?;
    }
    if let Some(a) = &removed {
        log::info!("accounts: deleted {} from {what}", a.name);
    }
    Ok(removed.map(|a| a.name))
}

const TABLE: TableDefinition<'_, &str, &str> = TableDefinition::new("accounts");

/// Accounts in a redb file: pure Rust, ACID, each registration committed
/// with fsync before it is acknowledged.
pub(crate) struct Embedded {
    db: Database,
    names: Mutex<HashSet<String>>,
}

impl Embedded {
    /// Opens (or creates) the store at `path`, checking that it can be
    /// read and written: a clear error, never a panic, when it cannot.
    pub(crate) fn open(path: &Path) -> Result<Embedded, AccountsError> {
        let what = |e: &dyn fmt::Display| AccountsError(format!("account store {}: {e}", path.display()));
        let db = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => {
                what(&"in use by another process (a running server? stop it first)")
            }
            e => what(&e),
        })?;
        let tx = db.begin_write().map_err(|e| what(&e))?;
        tx.open_table(TABLE).map_err(|e| what(&e))?;
        tx.commit().map_err(|e| what(&e))?;
        let mut names = HashSet::new();
        let mut moved = Vec::new();
        {
            let rx = db.begin_read().map_err(|e| what(&e))?;
            let table = rx.open_table(TABLE).map_err(|e| what(&e))?;
            for item in table.iter().map_err(|e| what(&e))? {
                let (k, v) = item.map_err(|e| what(&e))?;
                let account = serde_json::from_str::<Account>(v.value())
                    .map_err(|e| what(&format!("account {:?} is not readable: {e}", k.value())))?;
                let key = nick_key(&normalize_nick(&account.name));
                if key != k.value() {
                    moved.push((k.value().to_owned(), key, v.value().to_owned(), account.name));
                }
                names.insert(k.value().to_owned());
            }
        }
        if !moved.is_empty() {
            rekey(&db, &mut names, moved).map_err(|e| what(&e))?;
        }
        log::info!("accounts: {} in {}", names.len(), path.display());
        Ok(Embedded { db, names: Mutex::new(names) })
    }
}

/// Moves accounts stored under the key of an older nick rule to their
/// key now, so their owners still log in. One whose key now is another
/// account's stays where it is (logged): its owner no longer logs in, and
/// `switchboard-server accounts delete` removes it by its old key.
fn rekey(
    db: &Database,
    names: &mut HashSet<String>,
    moved: Vec<(String, String, String, String)>,
) -> Result<(), String> {
    let tx = db.begin_write().map_err(|e| e.to_string())?;
    {
        let mut table = tx.open_table(TABLE).map_err(|e| e.to_string())?;
        for (old, new, json, name) in moved {
            if names.contains(&new) {
                log::warn!(
                    "accounts: {name:?} (key {old:?}) is now the same name as another account; kept apart"
                );
                continue;
            }
            table.insert(new.as_str(), json.as_str()).map_err(|e| e.to_string())?;
            table.remove(old.as_str()).map_err(|e| e.to_string())?;
            names.remove(&old);
            names.insert(new);
            log::info!("accounts: {name:?} moved to the key of the current nick rule");
        }
    }
    tx.commit().map_err(|e| e.to_string())?;
    Ok(())
}

impl Store for Embedded {
    fn register(&self, key: &str, account: &Account) -> Result<bool, String> {
        let json = serde_json::to_string(account).map_err(|e| e.to_string())?;
        let tx = self.db.begin_write().map_err(|e| e.to_string())?;
        {
            let mut table = tx.open_table(TABLE).map_err(|e| e.to_string())?;
            if table.get(key).map_err(|e| e.to_string())?.is_some() {
                return Ok(false);
            }
            table.insert(key, json.as_str()).map_err(|e| e.to_string())?;
        }
        tx.commit().map_err(|e| e.to_string())?;
        self.names.lock().insert(key.to_owned());
        Ok(true)
    }

    fn find(&self, key: &str) -> Result<Option<Account>, String> {
        let rx = self.db.begin_read().map_err(|e| e.to_string())?;
        let table = rx.open_table(TABLE).map_err(|e| e.to_string())?;
        let Some(v) = table.get(key).map_err(|e| e.to_string())? else { return Ok(None) };
        serde_json::from_str(v.value()).map(Some).map_err(|e| format!("account {key:?} is not readable: {e}"))
    }

    fn registered(&self, key: &str) -> Option<bool> {
        Some(self.names.lock().contains(key))
    }

    fn delete(&self, key: &str) -> Result<Option<Account>, String> {
        let tx = self.db.begin_write().map_err(|e| e.to_string())?;
        let removed = {
            let mut table = tx.open_table(TABLE).map_err(|e| e.to_string())?;
            let json = table.remove(key).map_err(|e| e.to_string())?.map(|v| v.value().to_owned());
            json.map(|j| serde_json::from_str::<Account>(&j))
        };
        tx.commit().map_err(|e| e.to_string())?;
        self.names.lock().remove(key);
        removed.transpose().map_err(|e| format!("account {key:?} is not readable: {e}"))
    }
}

/// Moves an account from one key to another unless the other is taken
/// (KEYS: from, to): 1 moved, 2 taken, 0 gone meanwhile.
const MOVE: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
if redis.call('SETNX', KEYS[2], v) == 1 then redis.call('DEL', KEYS[1]) return 1 end
return 2";

/// The nick rule the account keys in Redis follow, once a server moved
/// them: the servers after it skip the scan.
const KEY_RULE: &str = "switchboard:account-key-rule";
const KEY_RULE_NOW: &str = "2 (no combining marks)";

/// SCAN calls [`RedisStore::rekey`] makes at most (each of up to 1,000 keys).
const REKEY_SCANS: usize = 100_000;

/// Accounts in the cluster's Redis (`switchboard:account:KEY`, set with
/// NX), so an account registered through one server logs in through any.
/// As durable as that Redis is configured to be (`appendfsync always` for
/// a registration to survive a crash of Redis itself).
pub(crate) struct RedisStore {
    client: Client,
    con: Mutex<Option<Connection>>,
}

impl RedisStore {
    pub(crate) fn new(client: Client) -> RedisStore {
        RedisStore { client, con: Mutex::new(None) }
    }

    /// Runs `f` on a connection, opening one if needed; a failed command
    /// drops the connection so the next call opens a fresh one.
    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> redis::RedisResult<T>) -> Result<T, String> {
        let mut slot = self.con.lock();
        if slot.is_none() {
            let con = self
                .client
                .get_connection_with_timeout(std::time::Duration::from_secs(1))
                .map_err(|e| e.to_string())?;
            con.set_read_timeout(Some(std::time::Duration::from_secs(2))).map_err(|e| e.to_string())?;
            *slot = Some(con);
        }
        let con = slot.as_mut().expect("opened above");
        f(con).map_err(|e| {
            *slot = None;
            e.to_string()
        })
    }
}

impl Store for RedisStore {
    fn register(&self, key: &str, account: &Account) -> Result<bool, String> {
        let json = serde_json::to_string(account).map_err(|e| e.to_string())?;
        let set: Option<String> =
            self.with(|c| redis::cmd("SET").arg(account_entry(key)).arg(&json).arg("NX").query(c))?;
        Ok(set.is_some())
    }

    fn find(&self, key: &str) -> Result<Option<Account>, String> {
        let json: Option<String> = self.with(|c| redis::cmd("GET").arg(account_entry(key)).query(c))?;
        match json {
            None => Ok(None),
            Some(j) => serde_json::from_str(&j)
                .map(Some)
                .map_err(|e| format!("account {key:?} is not readable: {e}")),
        }
    }

    fn registered(&self, _key: &str) -> Option<bool> {
        None
    }

    fn rekey(&self) -> Result<usize, String> {
        let rule: Option<String> = self.with(|c| redis::cmd("GET").arg(KEY_RULE).query(c))?;
        if rule.as_deref() == Some(KEY_RULE_NOW) {
            return Ok(0);
        }
        let prefix = account_entry("");
        let pattern = format!("{prefix}*");
        let mut entries = Vec::new();
        let mut cursor = 0u64;
        for _ in 0..REKEY_SCANS {
            let (next, batch): (u64, Vec<String>) = self.with(|c| {
                redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(1000).query(c)
            })?;
            entries.extend(batch);
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        let mut moved = 0;
        for entry in entries {
            let Some(old) = entry.strip_prefix(&prefix) else { continue };
            let json: Option<String> = self.with(|c| redis::cmd("GET").arg(&entry).query(c))?;
            let Some(account) = json.and_then(|j| serde_json::from_str::<Account>(&j).ok()) else {
                continue;
            };
            let key = nick_key(&normalize_nick(&account.name));
            if key == old {
                continue;
            }
            let done: u32 = self.with(|c| {
                redis::cmd("EVAL").arg(MOVE).arg(2).arg(&entry).arg(account_entry(&key)).query(c)
            })?;
            match done {
                1 => {
                    moved += 1;
                    log::info!("accounts: {:?} moved to the key of the current nick rule", account.name);
                }
                2 => log::warn!(
                    "accounts: {:?} (key {old:?}) is now the same name as another account; kept apart",
                    account.name
                ),
                _ => {}
            }
        }
        self.with(|c| redis::cmd("SET").arg(KEY_RULE).arg(KEY_RULE_NOW).query::<()>(c))?;
        Ok(moved)
    }

    fn delete(&self, key: &str) -> Result<Option<Account>, String> {
        let entry = account_entry(key);
        let (json, _): (Option<String>, u32) =
            self.with(|c| redis::pipe().atomic().get(&entry).del(&entry).query(c))?;
        json.map(|j| serde_json::from_str(&j).map_err(|e| format!("account {key:?} is not readable: {e}")))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_keeps_accounts_across_reopen_and_refuses_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("accounts.redb");
        let acc = Account { name: "Bob".into(), hash: "$argon2id$v=19$x".into() };
        {
            let store = Embedded::open(&path).unwrap();
            assert_eq!(store.register("bob", &acc), Ok(true));
            assert_eq!(store.register("bob", &acc), Ok(false));
            assert_eq!(store.registered("bob"), Some(true));
        }
        let store = Embedded::open(&path).unwrap();
        assert_eq!(store.find("bob"), Ok(Some(acc.clone())));
        assert_eq!(store.find("alice"), Ok(None));
        assert_eq!(store.registered("bob"), Some(true));
        assert_eq!(store.registered("alice"), Some(false));
        // Deleted: gone, and the name is free again.
        assert_eq!(store.delete("bob"), Ok(Some(acc.clone())));
        assert_eq!(store.delete("bob"), Ok(None));
        assert_eq!(store.registered("bob"), Some(false));
        assert_eq!(store.register("bob", &acc), Ok(true));
    }

    #[test]
    fn accounts_under_an_older_key_move_to_the_current_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("accounts.redb");
        let cafe = Account { name: "café".into(), hash: "$argon2id$v=19$x".into() };
        let alice = Account { name: "alice".into(), hash: "$argon2id$v=19$a".into() };
        let marked = Account { name: "alice\u{345}".into(), hash: "$argon2id$v=19$b".into() };
        {
            let store = Embedded::open(&path).unwrap();
            // The keys the rule before marks were dropped gave them.
            assert_eq!(store.register("cafe\u{301}", &cafe), Ok(true));
            assert_eq!(store.register("alice", &alice), Ok(true));
            assert_eq!(store.register("alice\u{345}", &marked), Ok(true));
        }
        let store = Embedded::open(&path).unwrap();
        assert_eq!(store.find(&nick_key("café")), Ok(Some(cafe)));
        assert_eq!(store.find("cafe\u{301}"), Ok(None));
        // The second alice stays apart, reachable by its old key only.
        assert_eq!(store.find("alice"), Ok(Some(alice)));
        assert_eq!(store.find("alice\u{345}"), Ok(Some(marked)));
    }

    #[test]
    fn a_corrupt_or_unusable_store_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.redb");
        std::fs::write(&junk, vec![0x5a; 8192]).unwrap();
        let e = Embedded::open(&junk).err().expect("junk is refused");
        assert!(e.to_string().starts_with(&format!("account store {}: ", junk.display())), "{e}");
        // A folder where the file should be.
        let e = Embedded::open(dir.path()).err().expect("a folder is refused");
        assert!(e.to_string().starts_with("account store "), "{e}");
        // A folder that does not exist.
        let e = Embedded::open(&dir.path().join("no/such/dir/a.redb"))
            .err()
            .expect("a missing folder is refused");
        assert!(e.to_string().contains("a.redb"), "{e}");
    }
}
