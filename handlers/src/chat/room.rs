//! The room: who is in it, under which nick, and how to reach them.
//!
//! Pure bookkeeping under the chat's lock: nothing here sends. Operations
//! that lead to a broadcast return the handles to send to, so the caller
//! sends after releasing the lock.

use std::collections::HashMap;
use std::sync::Arc;

use super::command::valid_nick;
use super::text::{nick_key, normalize_nick};

/// One member; `H` is how to reach it (a `ConnHandle` in the server).
#[derive(Debug)]
struct Member<H> {
    nick: String,
    handle: H,
    /// The key ([`nick_key`]) of the account the member logged in as.
    account: Option<String>,
}

/// Why a nick change was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NickError {
    /// Not 1–32 letters, digits, `_` or `-`.
    Invalid,
    /// Another member has it or a name that looks the same (see
    /// [`nick_key`]).
    Taken,
    /// The connection is not in the room.
    NotMember,
}

/// Every member, by connection id, and a nick index by [`nick_key`].
#[derive(Debug)]
pub(crate) struct Room<H> {
    members: HashMap<u64, Member<H>>,
    /// `nick_key(nick)` → connection id.
    by_nick: HashMap<String, u64>,
    /// The number of the last `guest-N` handed out.
    guests: u64,
    /// What guest nicks start with: `guest-`, or `guest-S-` in a cluster
    /// (S: the server's number there).
    guest_prefix: String,
    /// `/who` shows each member's address (`--chat-who-addresses`).
    show_addresses: bool,
    /// Every member's handle, shared by the lines sent to everyone until
    /// someone joins or leaves ([`Room::everyone`]).
    everyone: Option<Arc<[H]>>,
}

/// The key nicks are compared by: the same ignoring case, compatibility
/// forms and look-alikes of other scripts.
fn key(nick: &str) -> String {
    nick_key(nick)
}

impl<H> Default for Room<H> {
    fn default() -> Self {
        Room {
            members: HashMap::new(),
            by_nick: HashMap::new(),
            guests: 0,
            guest_prefix: "guest-".into(),
            show_addresses: false,
            everyone: None,
        }
    }
}

impl<H: Clone> Room<H> {
    /// How many members there are.
    pub(crate) fn len(&self) -> usize {
        self.members.len()
    }

    /// Adds a member as the next guest; returns its nick and every other
    /// member.
    #[cfg(test)]
    pub(crate) fn join(&mut self, id: u64, handle: H) -> (String, Vec<H>) {
        self.join_announced_up_to(id, handle, usize::MAX)
    }

    /// Adds a member under the next free `guest-N` (a number someone took
    /// by `/nick` is skipped). Returns its nick and the other members, only
    /// while they are fewer than `up_to` (those a join is announced to): a
    /// join to a big room then costs no list of everyone.
    pub(crate) fn join_announced_up_to(&mut self, id: u64, handle: H, up_to: usize) -> (String, Vec<H>) {
        let nick = self.next_guest();
        let others = if self.members.len() < up_to { self.others(id) } else { Vec::new() };
        self.everyone = None;
        if let Some(old) = self.members.insert(id, Member { nick: nick.clone(), handle, account: None }) {
            // A connection id joined twice (cannot happen): forget the old nick.
            self.by_nick.remove(&key(&old.nick));
        }
        self.by_nick.insert(key(&nick), id);
        (nick, others)
    }

    /// Adds a member under `nick` (in NFC; valid and unlike any other, as
    /// for a rename). Returns its nick and the other members.
    pub(crate) fn join_as(&mut self, id: u64, nick: &str, handle: H) -> Result<(String, Vec<H>), NickError> {
        let nick = normalize_nick(nick);
        if !valid_nick(&nick) {
            return Err(NickError::Invalid);
        }
        if self.by_nick.contains_key(&key(&nick)) || self.members.contains_key(&id) {
            return Err(NickError::Taken);
        }
        let others = self.others(id);
        self.everyone = None;
        self.members.insert(id, Member { nick: nick.clone(), handle, account: None });
        self.by_nick.insert(key(&nick), id);
        Ok((nick, others))
    }

    /// Removes a member; returns its nick and every member left.
    #[cfg(test)]
    pub(crate) fn leave(&mut self, id: u64) -> Option<(String, Vec<H>)> {
        self.leave_announced_up_to(id, usize::MAX)
    }

    /// Removes a member. Returns its nick and the members left, only while
    /// they are fewer than `up_to`, or `None` if it was not in the room.
    pub(crate) fn leave_announced_up_to(&mut self, id: u64, up_to: usize) -> Option<(String, Vec<H>)> {
        let member = self.members.remove(&id)?;
        self.everyone = None;
        self.by_nick.remove(&key(&member.nick));
        let others = if self.members.len() < up_to { self.others(id) } else { Vec::new() };
        Some((member.nick, others))
    }

    /// The next free guest nick.
    fn next_guest(&mut self) -> String {
        // At most one number per member is taken, so this ends.
        loop {
            self.guests = self.guests.wrapping_add(1);
            let nick = format!("{}{}", self.guest_prefix, self.guests);
            if !self.by_nick.contains_key(&key(&nick)) {
                break nick;
            }
        }
    }

    /// Sets what guest nicks start with (`guest-` by default).
    pub(crate) fn set_guest_prefix(&mut self, prefix: String) {
        self.guest_prefix = prefix;
    }

    /// Renames member `id` to the next guest nick (it lost its nick to the
    /// account that owns it). Returns the old nick, the new one and the
    /// other members.
    pub(crate) fn make_guest(&mut self, id: u64) -> Option<(String, String, Vec<H>)> {
        self.members.get(&id)?;
        let new = self.next_guest();
        let member = self.members.get_mut(&id)?;
        let old = std::mem::replace(&mut member.nick, new.clone());
        member.account = None;
        self.by_nick.remove(&key(&old));
        self.by_nick.insert(key(&new), id);
        Some((old, new, self.others(id)))
    }

    /// The account member `id` logged in as (its [`nick_key`]).
    pub(crate) fn account(&self, id: u64) -> Option<&str> {
        self.members.get(&id)?.account.as_deref()
    }

    /// Records that member `id` logged in as the account keyed `account`.
    pub(crate) fn set_account(&mut self, id: u64, account: String) {
        if let Some(m) = self.members.get_mut(&id) {
            m.account = Some(account);
        }
    }

    /// Every member's id, nick and account key.
    pub(crate) fn roster(&self) -> Vec<(u64, String, Option<String>)> {
        self.members.iter().map(|(&id, m)| (id, m.nick.clone(), m.account.clone())).collect()
    }

    /// Every member's handle.
    pub(crate) fn all(&self) -> Vec<H> {
        self.members.values().map(|m| m.handle.clone()).collect()
    }

    /// A member's nick.
    pub(crate) fn nick(&self, id: u64) -> Option<&str> {
        self.members.get(&id).map(|m| m.nick.as_str())
    }

    /// Every member's handle, the caller's too (a sender skips itself by
    /// id): one list shared by every line until someone joins or leaves,
    /// so a line to a big room costs no copy of its members.
    pub(crate) fn everyone(&mut self) -> Arc<[H]> {
        let members = &self.members;
        Arc::clone(self.everyone.get_or_insert_with(|| members.values().map(|m| m.handle.clone()).collect()))
    }

    /// Every member but `id`.
    pub(crate) fn others(&self, id: u64) -> Vec<H> {
        self.members.iter().filter(|(&other, _)| other != id).map(|(_, m)| m.handle.clone()).collect()
    }

    /// Renames member `id` to `new` (in NFC). Returns the old nick, the new
    /// one and the other members. Changing one's own nick to a variant of
    /// it (another case, say) is allowed.
    pub(crate) fn rename(&mut self, id: u64, new: &str) -> Result<(String, String, Vec<H>), NickError> {
        let new = normalize_nick(new);
        if !valid_nick(&new) {
            return Err(NickError::Invalid);
        }
        let new_key = key(&new);
        if self.by_nick.get(&new_key).is_some_and(|&owner| owner != id) {
            return Err(NickError::Taken);
        }
        let member = self.members.get_mut(&id).ok_or(NickError::NotMember)?;
        let old = std::mem::replace(&mut member.nick, new.clone());
        self.by_nick.remove(&key(&old));
        self.by_nick.insert(new_key, id);
        Ok((old, new, self.others(id)))
    }

    /// The member called `name` (by [`nick_key`]): its connection id and handle.
    pub(crate) fn find(&self, name: &str) -> Option<(u64, H)> {
        let id = *self.by_nick.get(&key(&normalize_nick(name)))?;
        self.members.get(&id).map(|m| (id, m.handle.clone()))
    }

    /// Every member's nick and handle, sorted by nick ignoring case (ties,
    /// which unique nicks cannot have, by code point): `/who`'s order.
    pub(crate) fn listing(&self) -> Vec<(&str, &H)> {
        let mut nicks: Vec<(String, &str, &H)> =
            self.members.values().map(|m| (m.nick.to_lowercase(), m.nick.as_str(), &m.handle)).collect();
        nicks.sort_unstable_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        nicks.into_iter().map(|(_, nick, h)| (nick, h)).collect()
    }

    /// Whether `/who` shows addresses.
    pub(crate) fn shows_addresses(&self) -> bool {
        self.show_addresses
    }

    /// Makes `/who` show (or not) each member's address.
    pub(crate) fn set_show_addresses(&mut self, on: bool) {
        self.show_addresses = on;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guests_rename_and_leave() {
        let mut room: Room<u64> = Room::default();
        assert_eq!(room.join(10, 10), ("guest-1".to_string(), vec![]));
        assert_eq!(room.join(11, 11), ("guest-2".to_string(), vec![10]));
        assert_eq!(room.rename(10, "guest-3"), Ok(("guest-1".to_string(), "guest-3".to_string(), vec![11])));
        // guest-3 is taken by a rename: the next guest skips it.
        assert_eq!(room.join(12, 12).0, "guest-4");
        assert_eq!(room.rename(11, "GUEST-3"), Err(NickError::Taken));
        assert_eq!(room.rename(11, "bad nick"), Err(NickError::Invalid));
        assert_eq!(room.rename(99, "nobody"), Err(NickError::NotMember));
        // Changing the case of one's own nick is fine.
        assert_eq!(room.rename(10, "Guest-3").map(|(old, _, _)| old), Ok("guest-3".to_string()));
        assert_eq!(room.find("GUEST-3"), Some((10, 10)));
        assert_eq!(room.nick(10), Some("Guest-3"));
        let (nick, mut others) = room.leave(10).unwrap();
        others.sort_unstable();
        assert_eq!((nick.as_str(), others), ("Guest-3", vec![11, 12]));
        assert_eq!(room.leave(10), None);
        assert_eq!(room.find("guest-3"), None);
        assert_eq!(room.len(), 2);
        // The freed nick can be taken again.
        assert!(room.rename(11, "guest-3").is_ok());
    }

    #[test]
    fn everyone_is_shared_until_someone_joins_or_leaves() {
        let mut room: Room<u64> = Room::default();
        room.join(1, 1);
        room.join(2, 2);
        let a = room.everyone();
        let mut ids = a.to_vec();
        ids.sort_unstable();
        assert_eq!(ids, [1, 2]);
        room.rename(1, "alice").unwrap();
        assert!(Arc::ptr_eq(&a, &room.everyone()), "a rename keeps the list");
        room.join(3, 3);
        let b = room.everyone();
        assert_eq!(b.len(), 3);
        assert!(!Arc::ptr_eq(&a, &b));
        room.leave(1);
        let mut ids = room.everyone().to_vec();
        ids.sort_unstable();
        assert_eq!(ids, [2, 3]);
        assert!(room.join_as(4, "bob", 4).is_ok());
        assert_eq!(room.everyone().len(), 3);
    }

    #[test]
    fn make_guest_and_accounts() {
        let mut room: Room<u64> = Room::default();
        room.set_guest_prefix("guest-7-".into());
        assert_eq!(room.join(1, 1).0, "guest-7-1");
        assert_eq!(room.join(2, 2).0, "guest-7-2");
        room.rename(1, "alice").unwrap();
        room.set_account(1, key("alice"));
        assert_eq!(room.account(1), Some("alice"));
        assert_eq!(room.account(2), None);
        assert_eq!(room.make_guest(1), Some(("alice".to_string(), "guest-7-3".to_string(), vec![2])));
        assert_eq!(room.account(1), None);
        assert_eq!(room.find("alice"), None);
        assert_eq!(room.find("guest-7-3").map(|(id, _)| id), Some(1));
        assert_eq!(room.make_guest(9), None);
    }

    #[test]
    fn look_alikes_are_taken() {
        let mut room: Room<u64> = Room::default();
        for id in 1..=3 {
            room.join(id, id);
        }
        let groups: [&[&str]; 4] = [
            &["ΑΣ", "ασ", "ας"],
            &["straße", "STRASSE", "Strasse"],
            &["alice", "\u{430}lice", "ａｌｉｃｅ", "ALICE"],
            &["café", "cafe\u{301}", "CAFÉ"],
        ];
        for group in groups {
            let (first, rest) = group.split_first().unwrap();
            assert!(room.rename(1, first).is_ok(), "{first}");
            for other in rest {
                assert_eq!(room.rename(2, other), Err(NickError::Taken), "{first} / {other}");
                assert_eq!(room.find(other).map(|(id, _)| id), Some(1), "{other}");
            }
        }
        // Stored in NFC: the combining form is shown precomposed.
        assert_eq!(room.rename(3, "zoe\u{308}").map(|(_, new, _)| new), Ok("zoë".to_string()));
        assert_eq!(room.nick(3), Some("zoë"));
        // A mark that composes with nothing is not a letter: invalid.
        assert_eq!(room.rename(3, "x\u{20dd}"), Err(NickError::Invalid));
        // The owner may switch between its own variants.
        assert!(room.rename(1, "CAFE\u{301}").is_ok());
    }

    #[test]
    fn who_is_sorted_ignoring_case() {
        let mut room: Room<()> = Room::default();
        for (id, nick) in [(1, "bob"), (2, "Alice"), (3, "carol"), (4, "Émile"), (5, "_x"), (6, "Zed")] {
            room.join(id, ());
            room.rename(id, nick).unwrap();
        }
        let nicks: Vec<&str> = room.listing().into_iter().map(|(nick, _)| nick).collect();
        assert_eq!(nicks, vec!["_x", "Alice", "bob", "carol", "Zed", "Émile"]);
    }
}
