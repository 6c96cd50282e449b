//! What the cluster bridge and the accounts threads do to the local room
//! away from the workers: renames (a claimed nick, a login, an eviction)
//! and deliveries, through the members' handles and `Deferred` replies.

use std::sync::Arc;

use parking_lot::Mutex;
use switchboard::{Message, Peer};

use super::member::Member;
use super::reply::Reply;
use super::room::{NickError, Room};
use super::text::{nick_key, normalize_nick};

/// The room, shared by the workers, the bridge and the accounts threads.
pub(crate) type SharedRoom = Arc<Mutex<Room<Member>>>;

/// One line, LF added, as a shared message.
pub(crate) fn line(text: &str) -> Message {
    let mut bytes = Vec::with_capacity(text.len() + 1);
    bytes.extend_from_slice(text.as_bytes());
    bytes.push(b'\n');
    Message::from(bytes)
}

/// Sends `text` as one line to every handle (a member over its budget is
/// being closed by its server's slow-consumer policy).
pub(crate) fn send_all(handles: &[Member], text: &str) {
    if handles.is_empty() {
        return;
    }
    let msg = line(text);
    for h in handles {
        let _ = h.send(msg.clone());
    }
}

/// A nick change that happened: `(old, new)`.
pub(crate) type Change = (String, String);

/// Renames member `id` to `new`, replying `* you are now NEW` through
/// `reply` and telling the others `* OLD is now NEW`.
///
/// With `account` (the key of the account the member just logged in as),
/// the member is recorded as logged in, and any other member holding the
/// nick first goes back to a guest nick (told `* you are now guest-N`,
/// after `* NAME logged in elsewhere` if it was logged in as it: the latest
/// login of an account takes over).
/// Returns the changes made, evictions first, for the cluster to announce.
pub(crate) fn rename(
    room: &Mutex<Room<Member>>,
    id: u64,
    new: &str,
    account: Option<String>,
    reply: &mut dyn Reply,
) -> Result<Vec<Change>, NickError> {
    let new = normalize_nick(new);
    let mut changes = Vec::new();
    let mut notices: Vec<(Option<Member>, bool, Change, Vec<Member>)> = Vec::new();
    let result = {
        let mut room = room.lock();
        if account.is_some() {
            if let Some((holder, handle)) = room.find(&new).filter(|(holder, _)| *holder != id) {
                let owner = room.account(holder).is_some_and(|a| a == nick_key(&new));
                if let Some((old, guest, others)) = room.make_guest(holder) {
                    notices.push((Some(handle), owner, (old, guest), others));
                }
            }
        }
        let result = room.rename(id, &new);
        if let (Ok(_), Some(account)) = (&result, account) {
            room.set_account(id, account);
        }
        result
    };
    for (handle, owner, (old, guest), others) in notices {
        if let Some(h) = handle {
            if owner {
                let _ = h.send(line(&format!("* {old} logged in elsewhere")));
            }
            let _ = h.send(line(&format!("* you are now {guest}")));
        }
        send_all(&others, &format!("* {old} is now {guest}"));
        changes.push((old, guest));
    }
    let (old, new, others) = result?;
    reply.line(&format!("* you are now {new}"));
    if old != new {
        send_all(&others, &format!("* {old} is now {new}"));
    }
    changes.push((old, new));
    Ok(changes)
}

/// Sends the member holding `nick` back to a guest nick because another
/// server holds it now: its account's owner logged in there (the latest
/// login of an account takes over), or it took the nick while this server's
/// link was down. The member is told `* you are now guest-N` (after
/// `* NICK logged in elsewhere` if it was logged in as that account), the
/// others `* NICK is now guest-N`. Returns the change made.
pub(crate) fn evict(room: &Mutex<Room<Member>>, nick: &str) -> Option<Change> {
    let key = nick_key(&normalize_nick(nick));
    let (handle, owner, old, guest, others) = {
        let mut room = room.lock();
        let (holder, handle) = room.find(nick)?;
        let owner = room.account(holder) == Some(key.as_str());
        let (old, guest, others) = room.make_guest(holder)?;
        (handle, owner, old, guest, others)
    };
    if owner {
        let _ = handle.send(line(&format!("* {old} logged in elsewhere")));
    }
    let _ = handle.send(line(&format!("* you are now {guest}")));
    send_all(&others, &format!("* {old} is now {guest}"));
    Some((old, guest))
}

/// The local members as `/who` lists them: nicks in the room's order,
/// each followed by ` (ADDRESS)` when the room shows addresses and the
/// member has one ([`who_address`]).
pub(crate) fn who_names(room: &Room<Member>) -> Vec<String> {
    let show = room.shows_addresses();
    room.listing()
        .into_iter()
        .map(|(nick, m)| match m.peer().filter(|_| show) {
            Some(p) => format!("{nick} ({})", who_address(p)),
            None => nick.to_owned(),
        })
        .collect()
}

/// A member's address as `/who` shows it: `203.0.113.7:41234`, or for a
/// process on this machine over a Unix socket `unix:uid=1000,pid=4242`
/// (`unix:uid=unknown` when the kernel did not tell).
pub(crate) fn who_address(peer: Peer) -> String {
    match peer {
        Peer::Ip(a) => a.to_string(),
        Peer::Unix(Some(c)) => format!("unix:uid={},pid={}", c.uid, c.pid),
        Peer::Unix(None) => "unix:uid=unknown".to_owned(),
    }
}

/// `* online: ...`: nicks sorted ignoring case (ties by code point),
/// each once.
pub(crate) fn online(mut nicks: Vec<String>) -> String {
    let mut keyed: Vec<(String, String)> = nicks.drain(..).map(|n| (n.to_lowercase(), n)).collect();
    keyed.sort_unstable();
    keyed.dedup_by(|a, b| a.1 == b.1);
    let names: Vec<String> = keyed.into_iter().map(|(_, n)| n).collect();
    format!("* online: {}", names.join(", "))
}
