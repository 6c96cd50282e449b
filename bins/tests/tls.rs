//! TLS end to end: `switchboard-server --tls-cert --tls-key` with a CA and
//! certificate made at run time, spoken to by `switchboard-client --tls`
//! and by Python's `ssl` module (OpenSSL) as an outside client; a plain
//! client and a stalled handshake are closed with their reasons; a bad
//! certificate or key stops the server at start.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use switchboard_test_support::child::{run, Spawned};
use switchboard_test_support::pki::TestPki;
use switchboard_test_support::{random_bytes, temp_dir, TIMEOUT};

const SERVER: &str = env!("CARGO_BIN_EXE_switchboard-server");
const CLIENT: &str = env!("CARGO_BIN_EXE_switchboard-client");
const PY_CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/tls_client.py");

struct TlsServer {
    proc: Spawned,
    addr: SocketAddr,
}

fn start(pki: &TestPki, args: &[&str]) -> TlsServer {
    let mut proc = pki.spawn_server(SERVER, args);
    let addr = proc.listening_addr();
    TlsServer { proc, addr }
}

/// `switchboard-client --tls --ca CA ADDR ARGS` with `stdin`, run to the end.
/// Its linger outlasts the test's deadline: it ends in time only if the
/// server ends the session when the client's input ends (the client's
/// `close_notify` seen, the server's sent back).
fn client(pki: &TestPki, addr: SocketAddr, args: &[&str], stdin: &[u8], cwd: &Path) -> Output {
    let mut cmd = Command::new(CLIENT);
    cmd.arg("--tls").arg("--ca").arg(&pki.ca).arg("--linger").arg("10m");
    cmd.arg(addr.to_string()).args(args).current_dir(cwd);
    cmd.stdin(Stdio::piped());
    let mut child = Spawned::spawn(&mut cmd);
    child.stdin().write_all(stdin).unwrap();
    child.close_stdin();
    let status = child.wait(TIMEOUT);
    child.output(status)
}

/// The Python client in `mode`; its one result line.
fn python(pki: &TestPki, addr: SocketAddr, mode: &str, extra: &[&str]) -> String {
    let out = run(
        Command::new("python3")
            .arg(PY_CLIENT)
            .arg(addr.port().to_string())
            .arg(&pki.ca)
            .arg(mode)
            .args(extra),
        TIMEOUT,
    );
    assert!(out.status.success(), "python {mode}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn stdout_of(out: &Output) -> &str {
    assert!(out.status.success(), "client failed: {}", String::from_utf8_lossy(&out.stderr));
    std::str::from_utf8(&out.stdout).unwrap()
}

#[test]
fn echo_and_upper_over_tls_with_both_clients() {
    let dir = temp_dir("tls-echo");
    let pki = TestPki::create(dir.path());
    let echo = start(&pki, &["--handler", "echo"]);
    let out = client(&pki, echo.addr, &[], b"hello over tls\n", dir.path());
    assert_eq!(stdout_of(&out), "hello over tls\n");
    // 128 KiB of every byte value, then close_notify both ways.
    assert_eq!(python(&pki, echo.addr, "echo", &[]), "echo 131072 True\n");

    let upper = start(&pki, &["--handler", "upper"]);
    let out = client(&pki, upper.addr, &[], "straße\n".as_bytes(), dir.path());
    assert_eq!(stdout_of(&out), "STRASSE\n");
    assert_eq!(python(&pki, upper.addr, "upper", &[]), "upper GRÜSSE ÜBER TLS\n");
    // Python's unwrap() returned: the server answered its close_notify
    // with its own before closing, and logged a clean close.
    let err = upper.proc.stderr_so_far();
    assert!(!err.contains("TLS error"), "{err}");
}

#[test]
fn chat_over_tls_with_both_clients() {
    let dir = temp_dir("tls-chat");
    let pki = TestPki::create(dir.path());
    let chat = start(&pki, &["--handler", "chat"]);
    let out = client(&pki, chat.addr, &[], b"/nick rusty\n/who\n/quit\n", dir.path());
    assert_eq!(stdout_of(&out), "* welcome guest-1\n* you are now rusty\n* online: rusty\n* bye\n");
    assert_eq!(
        python(&pki, chat.addr, "chat", &[]),
        "chat * welcome guest-2|* you are now py|* online: py\n"
    );
}

#[test]
fn file_get_over_tls_goes_through_the_cipher_in_bounded_chunks() {
    let dir = temp_dir("tls-file");
    let pki = TestPki::create(dir.path());
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    const SIZE: usize = 24 << 20;
    let content = random_bytes(SIZE, 13);
    std::fs::write(root.join("big.bin"), &content).unwrap();
    let md5 = format!("{:x}", Md5::digest(&content));
    let server = start(&pki, &["--handler", "file", "--root", root.to_str().unwrap()]);
    let before = server.proc.pid().rss_bytes();

    let out = client(&pki, server.addr, &["get", "big.bin", "-o", "got.bin"], b"", dir.path());
    assert!(stdout_of(&out).contains(&format!("md5 {md5} verified")), "{}", stdout_of(&out));
    assert_eq!(std::fs::read(dir.path().join("got.bin")).unwrap(), content);
    assert_eq!(python(&pki, server.addr, "get", &["big.bin"]), format!("get {SIZE} {md5} True\n"));
    let out = client(&pki, server.addr, &["list"], b"", dir.path());
    assert!(stdout_of(&out).contains("big.bin"), "{}", stdout_of(&out));

    // No sendfile under TLS, and no whole file in memory either: the peak
    // grew by far less than the 24 MiB file (chunks of the read buffer).
    let peak = server.proc.pid().peak_rss_bytes();
    let grown = peak.saturating_sub(before);
    assert!(grown < (SIZE as u64) / 2, "peak RSS grew by {grown} bytes serving a {SIZE}-byte file");
}

#[test]
fn a_plain_client_on_the_tls_port_is_closed_with_the_tls_reason() {
    let dir = temp_dir("tls-plain");
    let pki = TestPki::create(dir.path());
    let server = start(&pki, &["--handler", "echo"]);
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(b"hello in the clear\n").unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    // What comes back is a TLS alert record (content type 21), never an echo.
    assert_eq!(got.first(), Some(&21), "{got:?}");
    assert!(!got.windows(5).any(|w| w == b"hello"), "{got:?}");
    server
        .proc
        .wait_stderr("closed: TLS error: received corrupt message of type InvalidContentType", TIMEOUT);
}

#[test]
fn a_stalled_handshake_is_closed_at_the_handshake_timeout() {
    let dir = temp_dir("tls-stall");
    let pki = TestPki::create(dir.path());
    let timeout = Duration::from_millis(600);
    let server = start(&pki, &["--handler", "echo", "--handshake-timeout", "600ms", "--idle-timeout", "5m"]);
    // Before the connection exists: the server's deadline cannot start earlier.
    let started = Instant::now();
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    // The first bytes of a ClientHello record, then nothing.
    s.write_all(&[0x16, 0x03, 0x01, 0x00, 0x80, 0x01]).unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    let waited = started.elapsed();
    assert!(waited >= timeout, "closed after {waited:?}, before the {timeout:?} handshake timeout");
    assert!(waited < TIMEOUT, "not closed by the handshake timeout ({waited:?})");
    server.proc.wait_stderr("closed: TLS handshake not completed in time", TIMEOUT);
}

#[test]
fn past_the_connection_limit_a_tls_client_is_closed_without_a_plaintext_reply() {
    let dir = temp_dir("tls-busy");
    let pki = TestPki::create(dir.path());
    let mut cmd = Command::new(SERVER);
    cmd.args(["--listen", "127.0.0.1:0", "--workers", "1", "--max-connections", "1", "--tls-cert"])
        .arg(&pki.cert)
        .arg("--tls-key")
        .arg(&pki.key)
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null());
    let mut server = Spawned::spawn(&mut cmd);
    let addr = server.listening_addr();
    // The one connection allowed, held in its handshake.
    let mut first = TcpStream::connect(addr).unwrap();
    first.write_all(&[0x16, 0x03, 0x01]).unwrap();
    server.wait_stderr("awaiting its preamble", TIMEOUT);
    let mut second = TcpStream::connect(addr).unwrap();
    second.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut got = Vec::new();
    let _ = second.read_to_end(&mut got);
    assert!(got.is_empty(), "a TLS port sent {:?}", String::from_utf8_lossy(&got));
    server.wait_stderr("connection limit (1) reached", TIMEOUT);
}

#[test]
fn a_bad_certificate_or_key_is_one_line_and_exit_2() {
    let dir = temp_dir("tls-bad");
    let pki = TestPki::create(dir.path());
    let garbage = dir.write("garbage.pem", b"not a key\n");
    let missing = dir.path().join("missing.pem");
    for (cert, key, needle) in [
        (&pki.key, &pki.key, "no CERTIFICATE in the file"),
        (&pki.cert, &garbage, "no usable PEM private key"),
        (&missing, &pki.key, "cannot read"),
    ] {
        let out = run(
            Command::new(SERVER)
                .args(["--listen", "127.0.0.1:0", "--tls-cert"])
                .arg(cert)
                .arg("--tls-key")
                .arg(key),
            TIMEOUT,
        );
        assert_eq!(out.status.code(), Some(2), "{cert:?} {key:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = err.lines().filter(|l| !l.contains(" INFO ")).collect();
        assert_eq!(lines.len(), 1, "{err}");
        assert!(lines[0].starts_with("switchboard-server: --tls-cert/--tls-key: "), "{err}");
        assert!(lines[0].contains(needle), "{needle}: {err}");
        assert!(out.stdout.is_empty(), "it never listened");
    }
}
