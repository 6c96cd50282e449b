//! The chat across two servers sharing one Redis: half the members on
//! each, beside the single-server chat row, to show what the hop through
//! Redis costs (deliveries/s, and the p99 it adds).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::procs::{Bins, ServerProc};
use crate::{chat_sample, ChatSample, Options};

/// A `redis-server` of the run's own on a free loopback port; killed on drop.
struct RedisProc {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Drop for RedisProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One inline command; the whole answer read within a second.
fn ask(port: u16, line: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(200))).ok()?;
    s.write_all(format!("{line}\r\n").as_bytes()).ok()?;
    let mut buf = vec![0u8; 512];
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) if !got.is_empty() => break,
            Err(_) => {}
        }
    }
    Some(String::from_utf8_lossy(&got).into_owned())
}

/// Polls `cond` every 50 ms for at most 20 s.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if cond() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("timed out waiting for {what}"))
}

impl RedisProc {
    fn start() -> Result<RedisProc, String> {
        let dir = std::env::temp_dir().join(format!("switchboard-bench-redis-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for _ in 0..10 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| e.to_string())?
                .port();
            let child = Command::new("redis-server")
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .arg("--dir")
                .arg(&dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("cannot start redis-server (apt-get install redis-server): {e}"))?;
            let mut r = RedisProc { child, port, dir: dir.clone() };
            let up = wait_for("redis", || {
                matches!(r.child.try_wait(), Ok(Some(_)))
                    || ask(port, "PING").is_some_and(|a| a.starts_with("+PONG"))
            });
            if up.is_ok() && matches!(r.child.try_wait(), Ok(None)) {
                return Ok(r);
            }
        }
        Err("redis-server did not start on a free port".into())
    }
}

/// `switchboard-load chat` with `members` members, half on each of two
/// chat servers sharing one Redis.
pub(crate) fn chat_cluster_run(opts: &Options, bins: &Bins, members: usize) -> Result<ChatSample, String> {
    let redis = RedisProc::start()?;
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let start = |bin: &Path| {
        ServerProc::start(bin, &["--handler", "chat", "--listen", "127.0.0.1:0", "--redis", &url])
    };
    let a = start(&bins.server)?;
    let b = start(&bins.server)?;
    // Both bridges subscribed: Redis counts them.
    wait_for("both servers to subscribe", || {
        ask(redis.port, "PUBSUB NUMSUB switchboard:room").is_some_and(|a| a.trim_end().ends_with(":2"))
    })?;
    let (cpu_a, cpu_b) = (a.cpu(), b.cpu());
    let v = crate::chat_load(opts, bins, &[&a.addr, &b.addr], members)?;
    let cpu = a.cpu().saturating_sub(cpu_a) + b.cpu().saturating_sub(cpu_b);
    Ok(chat_sample(&v, cpu))
}
