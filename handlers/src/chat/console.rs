//! The operator console: the person at the server's terminal as a member
//! of the room.
//!
//! What the operator types goes to the room (or `/msg NAME`), with the same
//! commands and rules as any member; the room's lines, and the replies to
//! the operator, are written to the console's output. End of input leaves
//! the room; the server keeps running.

use std::fmt;
use std::io::{self, BufRead, Read, Write};
use std::sync::Arc;
use std::thread;

use crossbeam_channel::{Sender, TrySendError};
use switchboard::{Flow, SendError};

use super::member::{Member, Remote};
use super::reply::Reply;
use super::room::NickError;
use super::Chat;

/// The console's id in the room, far from TCP and UDP ids.
const CONSOLE_ID: u64 = 1 << 47;

/// Lines waiting to be written to the console's output; past it a line is
/// dropped rather than hold up the sender (a worker, the UDP thread).
const CONSOLE_QUEUE: usize = 4096;

/// The default nick of the operator.
pub const CONSOLE_NICK: &str = "operator";

/// Why the console could not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConsoleError {
    /// The nick is not 1–32 letters, digits, `_` or `-`, or is taken.
    Nick(String),
    /// Reading the input or starting the output thread failed.
    Io(io::Error),
}

impl fmt::Display for ConsoleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConsoleError::Nick(msg) => f.write_str(msg),
            ConsoleError::Io(e) => write!(f, "console: {e}"),
        }
    }
}

impl std::error::Error for ConsoleError {}

/// The console as the room reaches it: lines into the output thread's queue.
#[derive(Debug)]
struct ConsoleMember {
    tx: Sender<Vec<u8>>,
}

impl Remote for ConsoleMember {
    fn id(&self) -> u64 {
        CONSOLE_ID
    }

    fn deliver(&self, msg: &[u8]) -> Result<(), SendError> {
        match self.tx.try_send(msg.to_vec()) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(SendError::Dropped),
            Err(TrySendError::Disconnected(_)) => Err(SendError::Closed),
        }
    }
}

/// The operator's replies: into the output thread's queue, dropped when
/// it is full.
impl Reply for Sender<Vec<u8>> {
    fn send(&mut self, text: &str) {
        let _ = self.try_send(text.as_bytes().to_vec());
    }
}

impl Chat {
    /// Runs the operator console until `input` ends (or the operator sends
    /// `/quit`): joins the room as `nick`, hands every input line to the
    /// room as the operator's, and writes the room's lines and the replies
    /// to `output`, on a thread of its own so a slow terminal never holds
    /// up the room. Leaves the room at the end. One console per chat.
    pub fn run_console(
        &self,
        nick: &str,
        mut input: impl BufRead,
        mut output: impl Write + Send + 'static,
    ) -> Result<(), ConsoleError> {
        let (tx, rx) = crossbeam_channel::bounded::<Vec<u8>>(CONSOLE_QUEUE);
        let member = Arc::new(ConsoleMember { tx: tx.clone() });
        let joined = self.remote_join_as(Member::Remote(member), nick);
        let (mut session, welcome) = joined.map_err(|e| match e {
            NickError::Invalid => {
                ConsoleError::Nick(format!("console nick {nick:?} is not 1-32 letters, digits, _ or -"))
            }
            _ => ConsoleError::Nick(format!("console nick {nick:?} is taken")),
        })?;
        let printer = thread::Builder::new()
            .name("switchboard-console-out".into())
            .spawn(move || {
                for line in rx {
                    if output.write_all(&line).and_then(|()| output.flush()).is_err() {
                        // A closed output: the room goes on without it.
                        break;
                    }
                }
            })
            .map_err(ConsoleError::Io)?;
        let mut reply = tx;
        Reply::send(&mut reply, &welcome);
        let limit = self.max_line as u64 + 2;
        let mut result = Ok(());
        loop {
            let mut line = Vec::new();
            match input.by_ref().take(limit).read_until(b'\n', &mut line) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    result = Err(ConsoleError::Io(e));
                    break;
                }
            }
            let ended = line.last() == Some(&b'\n');
            if ended {
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
            } else if line.len() as u64 == limit {
                // Over the limit: the rest of the line is skipped.
                let _ = input.by_ref().skip_until(b'\n');
            }
            if self.remote_line(&mut session, &line, &mut reply, "") == Flow::Close {
                break;
            }
        }
        self.remote_leave(&mut session);
        drop(reply);
        // Its queue ends once the room drops the member (it left).
        let _ = printer.join();
        result
    }
}
