//! `switchboard-server --handler chat` in a process of its own, for the
//! cluster and accounts tests: started with the flags given, its address
//! read from its first line, its log on stderr to wait on.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};

use crate::child::Spawned;
use crate::wait::TIMEOUT;
use crate::ChatClient;

/// Where `switchboard-server` reads `--redis` from when it is not given.
const REDIS_URL_ENV: &str = "SWITCHBOARD_REDIS_URL";

/// A chat server process; killed when dropped.
#[derive(Debug)]
pub struct ChatNode {
    proc: Spawned,
    addr: SocketAddr,
}

impl ChatNode {
    /// Starts `bin` (the `switchboard-server` binary) as a chat on
    /// 127.0.0.1:0 with `args` after `--handler chat`, logging at info.
    /// With `--redis`, waits until its cluster link is up (subscribed), so
    /// what other servers publish from then on reaches it.
    pub fn start(bin: &Path, args: &[&str]) -> ChatNode {
        ChatNode::start_env(bin, args, &[])
    }

    /// [`start`](ChatNode::start) with these environment variables too
    /// (`RUST_LOG` among them overrides `info`); `SWITCHBOARD_REDIS_URL`
    /// is passed only when given here. With a Redis URL from the flags or
    /// the environment, waits until the cluster link is up.
    pub fn start_env(bin: &Path, args: &[&str], env: &[(&str, &str)]) -> ChatNode {
        let mut cmd = Command::new(bin);
        cmd.args(["--handler", "chat", "--listen", "127.0.0.1:0", "--workers", "1"])
            .args(args)
            .env("RUST_LOG", "info")
            .env_remove(REDIS_URL_ENV)
            .envs(env.iter().copied())
            .stdin(Stdio::null());
        let mut proc = Spawned::spawn(&mut cmd);
        let addr = proc.listening_addr();
        let clustered = args.iter().any(|a| *a == "--redis" || *a == "--redis-url-file")
            || env.iter().any(|(k, _)| *k == REDIS_URL_ENV);
        if clustered {
            proc.wait_stderr("cluster: link up", TIMEOUT);
        }
        ChatNode { proc, addr }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A member joined to it, and its nick.
    pub fn join(&self) -> (ChatClient, String) {
        ChatClient::join(self.addr)
    }

    /// The process.
    pub fn proc(&mut self) -> &mut Spawned {
        &mut self.proc
    }

    /// Kills it at once (SIGKILL: no goodbye to Redis).
    pub fn kill(mut self) {
        self.proc.signal(rustix::process::Signal::KILL);
        self.proc.wait(TIMEOUT);
    }

    /// Asks it to shut down (SIGINT) and waits for it to exit.
    pub fn stop(mut self) -> (ExitStatus, String) {
        self.proc.signal(rustix::process::Signal::INT);
        let status = self.proc.wait(TIMEOUT);
        (status, self.proc.stderr_so_far())
    }
}

impl ChatClient {
    /// The next line that answers this member's own command: notices of
    /// what others did (`* X joined`, `* X left`, `* X is now Y`, the
    /// cluster link) and room lines (`<X> ...`) are skipped, as another
    /// server's notice may arrive at any moment before the answer.
    pub fn answer(&mut self) -> String {
        for _ in 0..1000 {
            let line = self.line();
            let notice = line.starts_with('<')
                || line.starts_with("* cluster link ")
                || (line.starts_with("* ")
                    && !line.starts_with("* you are now ")
                    && (line.ends_with(" joined") || line.contains(" left") || line.contains(" is now ")));
            if !notice {
                return line;
            }
        }
        panic!("no answer in 1000 lines");
    }

    /// The answer to this member's command ([`answer`](Self::answer)) is
    /// `want`.
    pub fn expect_answer(&mut self, want: &str) {
        assert_eq!(self.answer(), want);
    }

    /// Reads lines until one equals `want` (at most 1,000 lines, each
    /// within the read timeout); returns the lines skipped.
    pub fn until(&mut self, want: &str) -> Vec<String> {
        let mut skipped = Vec::new();
        for _ in 0..1000 {
            let line = self.line();
            if line == want {
                return skipped;
            }
            skipped.push(line);
        }
        panic!("no {want:?} in 1000 lines: {skipped:?}");
    }

    /// Reads lines until one starts with `prefix`; returns the rest of it.
    pub fn until_prefix(&mut self, prefix: &str) -> String {
        for _ in 0..1000 {
            if let Some(rest) = self.line().strip_prefix(prefix) {
                return rest.to_owned();
            }
        }
        panic!("no line starting {prefix:?} in 1000 lines");
    }

    /// Sends `/who` until the answer is `* online: ONLINE` (other lines
    /// are skipped), within the test timeout: another server's member set
    /// is written a moment after its members join.
    pub fn until_who(&mut self, online: &str) {
        let want = format!("* online: {online}");
        let deadline = std::time::Instant::now() + TIMEOUT;
        let mut last = String::new();
        while std::time::Instant::now() < deadline {
            self.send("/who");
            loop {
                let line = self.line();
                if line.starts_with("* online: ") {
                    last = line;
                    break;
                }
            }
            if last == want {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("/who never answered {want:?}; last {last:?}");
    }
}
