//! A key-value store over lines, with expiry timers and change
//! notifications broadcast from another thread.
//!
//! ```text
//! SET key value      -> OK                 (notifies watchers: CHANGED key)
//! GET key            -> VALUE value | NONE
//! DEL key            -> OK | NONE          (notifies watchers: CHANGED key)
//! EXPIRE key ms      -> OK | NONE          (after ms: the key is deleted, watchers get EXPIRED key)
//! WATCH              -> OK                 (this connection gets the notifications)
//! ```
//!
//! Run it with `cargo run -p switchboard --example kv -- --listen 127.0.0.1:7980`
//! and talk to it with `switchboard-client 127.0.0.1:7980`. SIGTERM or
//! Ctrl-C drains and prints the report.
//!
//! What it shows: per-connection state (the session's timers), timers
//! ([`Conn::set_timer`], [`Handler::timer`]), and a broadcast from a thread
//! of its own through [`ConnHandle`]s and one shared [`Message`], bounded
//! everywhere (keys, timers, the notification queue).

use std::collections::HashMap;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Mutex;
use std::time::Duration;

use switchboard::{Conn, ConnHandle, Flow, Framing, Handler, Message, SendError, Server};

/// The most keys stored.
const MAX_KEYS: usize = 100_000;
/// The longest line (command, key and value).
const MAX_LINE: usize = 4096;
/// Notifications waiting for the broadcaster before new ones are dropped.
const MAX_PENDING_NOTES: usize = 4096;

/// What the broadcaster thread is told.
enum Note {
    /// A connection wants the notifications.
    Watch(ConnHandle),
    /// A line for every watcher.
    Line(String),
}

struct Kv {
    store: Mutex<HashMap<String, String>>,
    notes: SyncSender<Note>,
}

/// A connection's expiry timers: timer id → key.
#[derive(Default)]
struct Session {
    expiring: HashMap<u64, String>,
    next_timer: u64,
}

impl Kv {
    fn notify(&self, note: Note) {
        // The event loop never waits: when the broadcaster is this far
        // behind, the notification is dropped (and said so).
        if let Err(TrySendError::Full(_)) = self.notes.try_send(note) {
            eprintln!("kv: {MAX_PENDING_NOTES} notifications pending; one dropped");
        }
    }

    fn command(&self, session: &mut Session, line: &str, conn: &mut Conn<'_>) -> String {
        let mut words = line.splitn(3, ' ');
        let store = || self.store.lock().unwrap_or_else(|e| e.into_inner());
        match (words.next().unwrap_or(""), words.next(), words.next()) {
            ("SET", Some(key), Some(value)) => {
                let mut store = store();
                if store.len() >= MAX_KEYS && !store.contains_key(key) {
                    return format!("ERR the store is full ({MAX_KEYS} keys)");
                }
                store.insert(key.to_string(), value.to_string());
                drop(store);
                self.notify(Note::Line(format!("CHANGED {key}\n")));
                "OK".into()
            }
            ("GET", Some(key), None) => match store().get(key) {
                Some(value) => format!("VALUE {value}"),
                None => "NONE".into(),
            },
            ("DEL", Some(key), None) => match store().remove(key) {
                Some(_) => {
                    self.notify(Note::Line(format!("CHANGED {key}\n")));
                    "OK".into()
                }
                None => "NONE".into(),
            },
            ("EXPIRE", Some(key), Some(ms)) => {
                let Ok(ms) = ms.parse::<u64>() else { return format!("ERR not a number of ms: {ms}") };
                if !store().contains_key(key) {
                    return "NONE".into();
                }
                session.next_timer += 1;
                if !conn.set_timer(session.next_timer, Duration::from_millis(ms)) {
                    return "ERR too many expiries pending on this connection".into();
                }
                session.expiring.insert(session.next_timer, key.to_string());
                "OK".into()
            }
            ("WATCH", None, None) => {
                self.notify(Note::Watch(conn.handle()));
                "OK".into()
            }
            _ => "ERR usage: SET key value | GET key | DEL key | EXPIRE key ms | WATCH".into(),
        }
    }
}

impl Handler for Kv {
    type Session = Session;
    fn framing(&self) -> Framing {
        Framing::lines(MAX_LINE)
    }
    fn open(&self, _conn: &mut Conn<'_>) -> Session {
        Session::default()
    }
    fn frame(&self, session: &mut Session, line: &[u8], conn: &mut Conn<'_>) -> Flow {
        let reply = match std::str::from_utf8(line) {
            Ok(line) => self.command(session, line, conn),
            Err(_) => "ERR not UTF-8".into(),
        };
        if let Err(e) = conn.send_frame(reply.as_bytes()) {
            // A value ending in a carriage return cannot go out as a line.
            let _ = conn.send_frame(format!("ERR the reply cannot be sent: {e}").as_bytes());
        }
        Flow::Continue
    }
    fn timer(&self, session: &mut Session, id: u64, _conn: &mut Conn<'_>) -> Flow {
        if let Some(key) = session.expiring.remove(&id) {
            if self.store.lock().unwrap_or_else(|e| e.into_inner()).remove(&key).is_some() {
                self.notify(Note::Line(format!("EXPIRED {key}\n")));
            }
        }
        Flow::Continue
    }
}

/// The broadcaster: keeps the watchers and sends each notification to all
/// of them as one shared message. Watchers that closed are forgotten.
fn broadcast(notes: Receiver<Note>) {
    let mut watchers: Vec<ConnHandle> = Vec::new();
    for note in notes {
        match note {
            Note::Watch(handle) => watchers.push(handle),
            Note::Line(line) => {
                let msg = Message::from(line);
                // A watcher too slow for its outbound budget is dropped
                // as a slow consumer by the server (the default policy).
                watchers.retain(|w| {
                    !matches!(w.send(msg.clone()), Err(SendError::Closed | SendError::Disconnected))
                });
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let listen = match args.as_slice() {
        [] => "127.0.0.1:7980",
        [flag, addr] if flag == "--listen" => addr.as_str(),
        _ => {
            eprintln!("usage: kv [--listen ADDR]");
            std::process::exit(2);
        }
    };
    let (notes, rx) = mpsc::sync_channel(MAX_PENDING_NOTES);
    std::thread::spawn(move || broadcast(rx));
    let kv = Kv { store: Mutex::new(HashMap::new()), notes };
    // SIGINT and SIGTERM: the first drains, the second closes everything.
    let server = match Server::builder().shutdown_on_signals().start(listen, kv) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("kv: {e}");
            std::process::exit(1);
        }
    };
    println!("listening on {}", server.local_addr());
    println!("{}", server.wait());
}
