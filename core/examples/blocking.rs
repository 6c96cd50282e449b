//! Blocking work per request: every line `q` is answered `RESULT q` after a
//! blocking job (a sleep standing for a database call) on the server's
//! blocking pool.
//!
//! ```text
//! q                  -> RESULT q           (after --job-ms milliseconds)
//!                    -> BUSY q             (the pool's queue is full)
//! ```
//!
//! Run it with
//! `cargo run --release -p switchboard --example blocking -- --listen 127.0.0.1:7982 --job-ms 50`
//! and talk to it with `switchboard-client 127.0.0.1:7982`. SIGTERM or
//! Ctrl-C drains (the replies being prepared are delivered) and prints the
//! report.
//!
//! What it shows: [`Conn::spawn_blocking`] runs a job off the event loop
//! and its [`Deferred`](switchboard::Deferred) reply still leaves in request
//! order; the pool is shared fairly between connections (a client with a
//! long backlog does not hold up another's single request), bounded (a full
//! queue is a `BUSY` answer the handler chose), and joined when the server
//! stops.

use std::time::Duration;

use switchboard::{Conn, Flow, Framing, Handler, Server, SpawnError};

/// The longest request line.
const MAX_LINE: usize = 4096;
/// The longest job a flag may ask for.
const MAX_JOB: Duration = Duration::from_secs(60);

const USAGE: &str = "usage: blocking [--listen ADDR] [--job-ms MS] [--frame-timeout DURATION] [--threads N]

  --listen ADDR              where to listen (default 127.0.0.1:7982)
  --job-ms MS                how long each request's blocking job takes (default 50, at most 60000)
  --frame-timeout DURATION   how long a line may stay incomplete, as 500ms or 2s (default 30s)
  --threads N                blocking pool threads at most (default 512)";

struct Blocking {
    job: Duration,
}

impl Handler for Blocking {
    type Session = ();
    fn framing(&self) -> Framing {
        Framing::lines(MAX_LINE)
    }
    fn open(&self, _conn: &mut Conn<'_>) {}
    fn frame(&self, _: &mut (), line: &[u8], conn: &mut Conn<'_>) -> Flow {
        let (job, query) = (self.job, line.to_vec());
        let spawned = conn.spawn_blocking(move |reply| {
            // The blocking call: a pool thread waits, the event loop does not.
            std::thread::sleep(job);
            let _ = reply.send_frame(&[b"RESULT ", &query[..]].concat());
        });
        match spawned {
            Ok(()) => Flow::Continue,
            Err(SpawnError::Busy { .. }) => {
                let _ = conn.send_frame(&[b"BUSY ", line].concat());
                Flow::Continue
            }
            Err(e) => {
                eprintln!("blocking: {}: {e}; closing", conn.peer_addr());
                Flow::Close
            }
        }
    }
}

/// The command line, checked.
struct Args {
    listen: String,
    job: Duration,
    frame_timeout: Option<Duration>,
    threads: Option<usize>,
}

/// `500ms`, `2s` or a number of seconds.
fn duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration like 500ms or 2s");
    let (number, scale) = match text.strip_suffix("ms") {
        Some(ms) => (ms, 1),
        None => (text.strip_suffix('s').unwrap_or(text), 1000),
    };
    let n: u64 = number.parse().map_err(|_| bad())?;
    let ms = n.checked_mul(scale).ok_or_else(bad)?;
    Ok(Duration::from_millis(ms))
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut parsed = Args {
        listen: "127.0.0.1:7982".into(),
        job: Duration::from_millis(50),
        frame_timeout: None,
        threads: None,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => parsed.listen = value.clone(),
            "--job-ms" => {
                let ms: u64 = value.parse().map_err(|_| format!("--job-ms: {value:?} is not a number"))?;
                parsed.job = Duration::from_millis(ms);
                if parsed.job > MAX_JOB {
                    return Err(format!("--job-ms: at most {}, not {ms}", MAX_JOB.as_millis()));
                }
            }
            "--frame-timeout" => {
                parsed.frame_timeout = Some(duration(value).map_err(|e| format!("--frame-timeout: {e}"))?)
            }
            "--threads" => {
                parsed.threads =
                    Some(value.parse().map_err(|_| format!("--threads: {value:?} is not a number"))?)
            }
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(parsed)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args = parse(&args).unwrap_or_else(|e| {
        eprintln!("blocking: {e}\n{USAGE}");
        std::process::exit(2);
    });
    // SIGINT and SIGTERM: the first drains, the second closes everything.
    let mut builder = Server::builder().shutdown_on_signals();
    if let Some(d) = args.frame_timeout {
        builder = builder.frame_timeout(d);
    }
    if let Some(n) = args.threads {
        builder = builder.blocking_threads(n);
    }
    let server = match builder.start(args.listen.as_str(), Blocking { job: args.job }) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("blocking: {e}");
            std::process::exit(1);
        }
    };
    println!("listening on {}", server.local_addr());
    println!("{}", server.wait());
}
