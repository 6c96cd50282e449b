//! `tokio-chat`: the baseline chat server of the benchmarks, in the shape of
//! tokio's own chat example: a task per member, a bounded channel per
//! member, and a shared map of members behind a mutex. It speaks the part
//! of `--handler chat`'s protocol that `switchboard-load chat` uses: a new
//! member gets `* welcome guest-N`, the others `* guest-N joined`; every
//! line a member sends reaches every other member as `<guest-N> LINE`; a
//! member that leaves is announced with `* guest-N left`.
//!
//! Limits as switchboard's defaults: a line is at most 4,096 bytes (a longer
//! one closes the member); a member's channel holds 4,096 lines, and a
//! member whose channel is full is cut off as a slow consumer (its queued
//! lines are still written, then it is closed), as switchboard cuts off a
//! member whose queue passes its budget.
//!
//! Usage: `tokio-chat [--listen ADDR] [--workers N]` (default 127.0.0.1:0 and
//! tokio's default worker count); prints `listening on ADDR` as its first
//! line.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

#[path = "../baseline.rs"]
mod baseline;

/// The longest line a member may send, newline excluded.
const MAX_LINE: usize = 4096;
/// Lines waiting for one member before it is cut off.
const CHANNEL: usize = 4096;

/// What every member task shares: the senders of the other members.
type Members = Arc<Mutex<HashMap<u64, mpsc::Sender<Arc<[u8]>>>>>;

fn main() -> ExitCode {
    const USAGE: &str = "usage: tokio-chat [--listen ADDR] [--workers N]\n  \
        --listen ADDR  address to listen on (default 127.0.0.1:0)\n  \
        --workers N    runtime worker threads, 1 to 1024 (default: tokio's, one per available core)";
    match baseline::parse("tokio-chat", USAGE, &[]) {
        Ok(args) => baseline::run("tokio-chat", args.workers, serve(&args.listen)),
        Err(code) => code,
    }
}

async fn serve(listen: &str) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    baseline::announce(listener.local_addr()?)?;
    let members: Members = Arc::default();
    let mut next_id = 1u64;
    loop {
        let socket = baseline::accept("tokio-chat", &listener).await;
        let id = next_id;
        next_id += 1;
        tokio::spawn(member(id, socket, members.clone()));
    }
}

/// Sends `line` to every member but `from`; a member whose channel is full
/// loses its place in the room (its task writes what it has, then closes).
fn broadcast(members: &Members, from: u64, line: &[u8]) {
    let line: Arc<[u8]> = Arc::from(line);
    let mut map = members.lock().unwrap_or_else(|e| e.into_inner());
    map.retain(|id, tx| {
        *id == from
            || match tx.try_send(line.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    eprintln!("tokio-chat: guest-{id} is not reading; cut off");
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
    });
}

/// One member, from its welcome to its departure.
async fn member(id: u64, socket: TcpStream, members: Members) {
    let (rx_half, tx_half) = socket.into_split();
    let mut reader = BufReader::new(rx_half);
    let mut writer = BufWriter::new(tx_half);
    let (tx, mut rx) = mpsc::channel::<Arc<[u8]>>(CHANNEL);
    let nick = format!("guest-{id}");
    if writer.write_all(format!("* welcome {nick}\n").as_bytes()).await.is_err()
        || writer.flush().await.is_err()
    {
        return;
    }
    broadcast(&members, id, format!("* {nick} joined\n").as_bytes());
    members.lock().unwrap_or_else(|e| e.into_inner()).insert(id, tx);

    let prefix = format!("<{nick}> ");
    let mut line = Vec::with_capacity(256);
    loop {
        let mut limited = (&mut reader).take((MAX_LINE + 1 - line.len().min(MAX_LINE)) as u64);
        tokio::select! {
            // `read_until` appends to `line` and resumes where it stopped when
            // the other branch wins the race, so no byte is lost.
            read = limited.read_until(b'\n', &mut line) => {
                match read {
                    Ok(0) | Err(_) => break,
                    Ok(_) if line.last() != Some(&b'\n') => {
                        if line.len() > MAX_LINE {
                            break; // over the limit
                        }
                        // Part of a line: the rest follows on the next read.
                    }
                    Ok(_) => {
                        let body = line.strip_suffix(b"\n").unwrap_or(&line);
                        let body = body.strip_suffix(b"\r").unwrap_or(body);
                        let mut msg = Vec::with_capacity(prefix.len() + body.len() + 1);
                        msg.extend_from_slice(prefix.as_bytes());
                        msg.extend_from_slice(body);
                        msg.push(b'\n');
                        broadcast(&members, id, &msg);
                        line.clear();
                    }
                }
            }
            msg = rx.recv() => {
                let Some(msg) = msg else { break }; // cut off as a slow consumer
                if writer.write_all(&msg).await.is_err() {
                    break;
                }
                // Write what else is queued before one flush.
                while let Ok(more) = rx.try_recv() {
                    if writer.write_all(&more).await.is_err() {
                        break;
                    }
                }
                if writer.flush().await.is_err() {
                    break;
                }
            }
        }
    }
    members.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
    broadcast(&members, id, format!("* {nick} left\n").as_bytes());
}
