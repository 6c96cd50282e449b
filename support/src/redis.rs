//! A `redis-server` of the test's own, on a free loopback port.
//!
//! Redis refuses `--port 0`, so a port is picked by binding 127.0.0.1:0 and
//! releasing it, and the start is retried on another port when someone took
//! it in between. Nothing is saved (`--save '' --appendonly no`), the
//! working folder is a temp dir of its own, and the server is killed when
//! the [`TestRedis`] is dropped. [`TestRedis::stop`] and
//! [`TestRedis::restart`] take the same Redis down and up again on the same
//! port, for the tests of a lost link. [`TestRedis::start_tls`] starts one
//! that speaks only TLS (`--tls-port`, `--port 0`) with a certificate of a
//! [`TestPki`] and asks for a password (`requirepass`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::child::Spawned;
use crate::net::{temp_dir, TempDir};
use crate::pki::TestPki;
use crate::wait::{poll, TIMEOUT};

/// How many ports are tried before giving up.
const PORT_TRIES: usize = 20;

/// A running `redis-server` (from PATH) owned by the test.
#[derive(Debug)]
pub struct TestRedis {
    proc: Option<Spawned>,
    port: u16,
    dir: TempDir,
    tls: Option<Tls>,
}

/// How a TLS Redis is started and reached.
#[derive(Debug)]
struct Tls {
    pki: TestPki,
    password: String,
}

impl TestRedis {
    /// Starts a Redis on a free loopback port and waits until it answers
    /// `PING`. Fails the test (saying what to install) when `redis-server`
    /// is not on PATH: no test skips for want of it.
    pub fn start() -> TestRedis {
        TestRedis::start_on(temp_dir("redis"), None)
    }

    /// Starts a Redis that speaks only TLS, with a certificate for
    /// `127.0.0.1` signed by a test CA made in its temp dir
    /// ([`ca`](TestRedis::ca)), and takes commands only after `AUTH
    /// password`; waits until it answers `PING` (through `redis-cli`).
    pub fn start_tls(password: &str) -> TestRedis {
        let dir = temp_dir("redis-tls");
        let pki = TestPki::create(dir.path());
        TestRedis::start_on(dir, Some(Tls { pki, password: password.to_owned() }))
    }

    fn start_on(dir: TempDir, tls: Option<Tls>) -> TestRedis {
        for _ in 0..PORT_TRIES {
            let port = free_port();
            if let Some(proc) = spawn(port, &dir, tls.as_ref()) {
                return TestRedis { proc: Some(proc), port, dir, tls };
            }
        }
        panic!("redis-server did not start on any of {PORT_TRIES} free ports");
    }

    /// `redis://127.0.0.1:PORT`, for `--redis`; for a TLS Redis,
    /// `rediss://:PASSWORD@127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        match &self.tls {
            None => format!("redis://127.0.0.1:{}", self.port),
            Some(tls) => format!("rediss://:{}@127.0.0.1:{}", tls.password, self.port),
        }
    }

    /// The CA that signed a TLS Redis's certificate (PEM), for `--redis-ca`.
    pub fn ca(&self) -> &Path {
        &self.tls.as_ref().expect("a Redis started with start_tls").pki.ca
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Whether it is running (not [`stop`](TestRedis::stop)ped).
    pub fn is_running(&self) -> bool {
        self.proc.is_some()
    }

    /// Kills the server (every client sees its connection drop) and waits
    /// until the port refuses connections.
    pub fn stop(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.signal(rustix::process::Signal::KILL);
            proc.wait(TIMEOUT);
        }
        let addr = self.addr();
        assert!(
            poll(TIMEOUT, || TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err()),
            "redis on {addr} still accepts connections after being killed"
        );
    }

    /// Stops the server in its tracks (SIGSTOP): connections stay open
    /// and nothing answers, as when its host hangs or the network drops
    /// every packet. [`thaw`](TestRedis::thaw) lets it go on.
    pub fn freeze(&self) {
        self.proc.as_ref().expect("a running redis").signal(rustix::process::Signal::STOP);
    }

    /// Lets a [`freeze`](TestRedis::freeze)d server go on (SIGCONT).
    pub fn thaw(&self) {
        self.proc.as_ref().expect("a running redis").signal(rustix::process::Signal::CONT);
    }

    /// Starts the server again on the same port (empty: nothing was saved)
    /// and waits for `PING`; retried while the port is busy.
    pub fn restart(&mut self) {
        self.stop();
        let mut last = None;
        let started = poll(TIMEOUT, || {
            last = spawn(self.port, &self.dir, self.tls.as_ref());
            last.is_some()
        });
        assert!(started, "redis-server did not start again on port {}", self.port);
        self.proc = last;
    }

    /// Sends one command (inline form) and returns the first line of the
    /// answer, e.g. `+PONG` or `:3` (for a TLS Redis, through `redis-cli`:
    /// `PONG`, `3`).
    pub fn command(&self, line: &str) -> String {
        match &self.tls {
            None => command(self.addr(), line),
            Some(tls) => cli(self.port, tls, line),
        }
        .unwrap_or_else(|e| panic!("redis {line:?}: {e}"))
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        if let Some(proc) = self.proc.take() {
            // Spawned's drop kills and reaps it.
            drop(proc);
        }
    }
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// Starts redis-server on `port` (only TLS with `tls`); `None` when it
/// exited (port taken) before answering `PING`.
fn spawn(port: u16, dir: &TempDir, tls: Option<&Tls>) -> Option<Spawned> {
    let mut cmd = Command::new("redis-server");
    cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(["--protected-mode", "no", "--daemonize", "no", "--loglevel", "warning"])
        .arg("--dir")
        .arg(dir.path())
        .stdin(Stdio::null());
    match tls {
        None => {
            cmd.args(["--port", &port.to_string()]);
        }
        Some(tls) => {
            cmd.args(["--port", "0", "--tls-port", &port.to_string(), "--tls-auth-clients", "no"])
                .arg("--tls-cert-file")
                .arg(&tls.pki.cert)
                .arg("--tls-key-file")
                .arg(&tls.pki.key)
                .arg("--tls-ca-cert-file")
                .arg(&tls.pki.ca)
                .args(["--requirepass", &tls.password]);
        }
    }
    if Command::new("redis-server").arg("--version").stdout(Stdio::null()).status().is_err() {
        panic!("redis-server is not on PATH: install it (apt-get install -y redis-server, or run scripts/test.sh)");
    }
    let mut proc = Spawned::spawn(&mut cmd);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut exited = false;
    let up = poll(TIMEOUT, || {
        if proc.has_exited().is_some() {
            exited = true;
            return true;
        }
        match tls {
            None => matches!(command(addr, "PING"), Ok(ref pong) if pong == "+PONG"),
            Some(tls) => matches!(cli(port, tls, "PING"), Ok(ref pong) if pong == "PONG"),
        }
    });
    if exited || !up {
        if !exited {
            panic!("redis-server on port {port} does not answer PING:\n{}", proc.stdout_so_far());
        }
        return None;
    }
    Some(proc)
}

/// One command through `redis-cli` over TLS, with the password; its
/// output's first line.
fn cli(port: u16, tls: &Tls, line: &str) -> std::io::Result<String> {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "--tls", "--cacert"])
        .arg(&tls.pki.ca)
        .args(["--no-auth-warning", "-a", &tls.password])
        .args(line.split_whitespace())
        .stdin(Stdio::null())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.lines().next().unwrap_or("").trim_end().to_owned())
}

/// One inline command over a fresh connection; the answer's first line.
fn command(addr: SocketAddr, line: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(format!("{line}\r\n").as_bytes())?;
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    while !answer.ends_with(b"\r\n") {
        if s.read(&mut byte)? == 0 {
            break;
        }
        answer.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&answer).trim_end().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_stops_and_restarts_on_the_same_port() {
        let mut redis = TestRedis::start();
        assert_eq!(redis.command("PING"), "+PONG");
        assert_eq!(redis.command("SET k v"), "+OK");
        let port = redis.port;
        redis.stop();
        assert!(!redis.is_running());
        assert!(command(redis.addr(), "PING").is_err());
        redis.restart();
        assert_eq!(redis.port, port);
        assert_eq!(redis.command("PING"), "+PONG");
        // Nothing was saved: the restarted Redis is empty.
        assert_eq!(redis.command("EXISTS k"), ":0");
    }

    #[test]
    fn a_tls_redis_speaks_only_tls_and_wants_the_password() {
        let redis = TestRedis::start_tls("pw-4711");
        assert_eq!(redis.command("SET k v"), "OK");
        assert_eq!(redis.command("GET k"), "v");
        assert!(redis.url().starts_with("rediss://:pw-4711@127.0.0.1:"), "{}", redis.url());
        assert!(redis.ca().is_file());
        // In clear text it answers nothing a client could use.
        assert!(!matches!(command(redis.addr(), "PING"), Ok(ref pong) if pong == "+PONG"));
    }
}
