//! Replies from the async ecosystem: every line `q` is looked up by an
//! async client, on a small tokio runtime beside the server, in a backend
//! service over TCP, and the backend's answer `VALUE q` is the reply.
//!
//! ```text
//! q                  -> VALUE q            (the backend's answer, after --delay-ms)
//!                    -> BUSY q             (--max-lookups already in flight)
//!                    -> ERROR q: reason    (the backend failed)
//! ```
//!
//! Run it with
//! `cargo run -p switchboard --example async_backend -- --listen 127.0.0.1:7983 --delay-ms 20`
//! and talk to it with `switchboard-client 127.0.0.1:7983`. SIGTERM or
//! Ctrl-C drains (lookups in flight are answered) and prints the report.
//! The backend here is a tiny tokio TCP service of the example's own, on
//! the same runtime; `--backend ADDR` points the lookups at another one
//! that speaks the same protocol (a line in, a line out).
//!
//! What it shows: a handler hands each request to an async task with a
//! [`Deferred`] ([`Conn::defer`]) and the task completes it, so replies
//! leave in request order and a drain waits for them; lookups in flight
//! are bounded (a full count is a `BUSY` answer), and the runtime is shut
//! down after the server. tokio is a dependency of this example only.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use switchboard::{Conn, Deferred, Flow, Framing, Handler, Server};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// The longest request line.
const MAX_LINE: usize = 4096;
/// The longest a lookup may take before it is answered with an error.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest backend delay a flag may ask for.
const MAX_DELAY: Duration = Duration::from_secs(60);

const USAGE: &str = "usage: async_backend [--listen ADDR] [--delay-ms MS] [--max-lookups N] [--backend ADDR]

  --listen ADDR        where to listen (default 127.0.0.1:7983)
  --delay-ms MS        how long the example's backend takes per lookup (default 20, at most 60000)
  --max-lookups N      lookups in flight at most, past it requests are answered BUSY (default 10000)
  --backend ADDR       look up in this backend instead of the example's own";

struct AsyncBackend {
    runtime: tokio::runtime::Handle,
    backend: SocketAddr,
    /// Lookups in flight, and their limit.
    in_flight: Arc<AtomicUsize>,
    max_lookups: usize,
}

/// Counts a lookup in flight while it lives.
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Handler for AsyncBackend {
    type Session = ();
    fn framing(&self) -> Framing {
        Framing::lines(MAX_LINE)
    }
    fn open(&self, _conn: &mut Conn<'_>) {}
    fn frame(&self, _: &mut (), line: &[u8], conn: &mut Conn<'_>) -> Flow {
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= self.max_lookups {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            let _ = conn.send_frame(&[b"BUSY ", line].concat());
            return Flow::Continue;
        }
        let counted = InFlight(Arc::clone(&self.in_flight));
        let (reply, query, backend) = (conn.defer(), line.to_vec(), self.backend);
        self.runtime.spawn(async move {
            answer(reply, backend, query).await;
            drop(counted);
        });
        Flow::Continue
    }
}

/// Looks `query` up and completes the promised reply with the answer.
async fn answer(reply: Deferred, backend: SocketAddr, query: Vec<u8>) {
    let answer = match tokio::time::timeout(LOOKUP_TIMEOUT, lookup(backend, &query)).await {
        Ok(Ok(value)) => value,
        Ok(Err(e)) => [b"ERROR ", &query[..], b": ", e.to_string().as_bytes()].concat(),
        Err(_) => [b"ERROR ", &query[..], b": the backend did not answer in time"].concat(),
    };
    // The connection may have gone meanwhile: nothing to do then. Dropping
    // `reply` says the reply is complete.
    let _ = reply.send_frame(&answer);
}

/// The async client: one connection to the backend per lookup, a line out,
/// a line back.
async fn lookup(backend: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(backend).await?;
    stream.write_all(&[query, b"\n"].concat()).await?;
    let mut line = Vec::new();
    BufReader::new(stream).take(MAX_LINE as u64 + 64).read_until(b'\n', &mut line).await?;
    if line.pop() != Some(b'\n') {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the backend closed mid-answer"));
    }
    Ok(line)
}

/// The example's backend: answers each line `q` with `VALUE q` after
/// `delay`.
async fn backend(listener: TcpListener, delay: Duration) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors, say: let the others finish first.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            // A lookup connection carries one line: its bytes are bounded.
            let mut lines = BufReader::new(read.take(MAX_LINE as u64 + 1)).lines();
            while let Ok(Some(q)) = lines.next_line().await {
                tokio::time::sleep(delay).await;
                if write.write_all(format!("VALUE {q}\n").as_bytes()).await.is_err() {
                    break;
                }
            }
        });
    }
}

/// The command line, checked.
struct Args {
    listen: String,
    delay: Duration,
    max_lookups: usize,
    backend: Option<SocketAddr>,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut parsed = Args {
        listen: "127.0.0.1:7983".into(),
        delay: Duration::from_millis(20),
        max_lookups: 10_000,
        backend: None,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number =
            |what: &str| value.parse::<u64>().map_err(|_| format!("{what}: {value:?} is not a number"));
        match flag.as_str() {
            "--listen" => parsed.listen = value.clone(),
            "--delay-ms" => {
                parsed.delay = Duration::from_millis(number("--delay-ms")?);
                if parsed.delay > MAX_DELAY {
                    return Err(format!("--delay-ms: at most {}, not {value}", MAX_DELAY.as_millis()));
                }
            }
            "--max-lookups" => {
                parsed.max_lookups = usize::try_from(number("--max-lookups")?).unwrap_or(usize::MAX).max(1)
            }
            "--backend" => {
                parsed.backend = Some(
                    value
                        .parse()
                        .map_err(|_| format!("--backend: {value:?} is not an address like 127.0.0.1:7000"))?,
                )
            }
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(parsed)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args = parse(&args).unwrap_or_else(|e| {
        eprintln!("async_backend: {e}\n{USAGE}");
        std::process::exit(2);
    });
    let fail = |e: &dyn std::fmt::Display| -> ! {
        eprintln!("async_backend: {e}");
        std::process::exit(1);
    };
    // A small runtime beside the server's workers: two threads for the
    // lookups (and the example's backend).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("async-backend")
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(&e));
    let backend_addr = match args.backend {
        Some(addr) => addr,
        None => {
            let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap_or_else(|e| fail(&e));
            let addr = listener.local_addr().unwrap_or_else(|e| fail(&e));
            runtime.spawn(backend(listener, args.delay));
            addr
        }
    };
    let handler = AsyncBackend {
        runtime: runtime.handle().clone(),
        backend: backend_addr,
        in_flight: Arc::default(),
        max_lookups: args.max_lookups,
    };
    // SIGINT and SIGTERM: the first drains, the second closes everything.
    let server = Server::builder()
        .shutdown_on_signals()
        .start(args.listen.as_str(), handler)
        .unwrap_or_else(|e| fail(&e));
    println!("listening on {}", server.local_addr());
    let report = server.wait();
    // Every promised reply was delivered or its connection forced closed:
    // what still runs on the runtime has no one to answer.
    runtime.shutdown_timeout(Duration::from_secs(1));
    println!("{report}");
}
