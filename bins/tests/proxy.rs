//! `switchboard-server --handler proxy`: a relay in front of other
//! switchboard servers (echo, upper, chat with `--proxy-protocol`), a real
//! HAProxy with `accept-proxy`, and TLS clients; every process spawned on
//! 127.0.0.1:0, the proxy's admin endpoint read for its per-backend figures.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};

use switchboard_test_support::child::{run, Spawned};
use switchboard_test_support::pki::TestPki;
use switchboard_test_support::{http, random_bytes, read_end, temp_dir, wait_until, End, TIMEOUT};

const SERVER: &str = env!("CARGO_BIN_EXE_switchboard-server");
const CLIENT: &str = env!("CARGO_BIN_EXE_switchboard-client");

/// A spawned switchboard-server on 127.0.0.1:0 with two workers: its
/// address, and its admin endpoint's when asked for.
struct Running {
    proc: Spawned,
    addr: SocketAddr,
    admin: Option<SocketAddr>,
}

fn spawn(args: &[&str], admin: bool) -> Running {
    let mut cmd = Command::new(SERVER);
    cmd.args(["--listen", "127.0.0.1:0", "--workers", "2"]).args(args).stdin(Stdio::null());
    if admin {
        cmd.args(["--admin", "127.0.0.1:0"]);
    }
    let mut proc = Spawned::spawn(&mut cmd);
    let addr = proc.listening_addr();
    let admin = admin.then(|| {
        let line = proc.line_where(TIMEOUT, |l| l.starts_with("admin on "));
        line.trim().trim_start_matches("admin on http://").trim_end_matches('/').parse().unwrap()
    });
    Running { proc, addr, admin }
}

/// A `--handler proxy` to `backends`, with its admin endpoint.
fn proxy(backends: &[String], extra: &[&str]) -> Running {
    let list = backends.join(",");
    let mut args = vec!["--handler", "proxy", "--backend", &list];
    args.extend_from_slice(extra);
    spawn(&args, true)
}

/// A loopback port nothing listens on (bound, read back, released).
fn refused_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

fn client(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s
}

/// A sample of the proxy's `/metrics`: `name{backend="ADDR"}`.
fn metric(admin: SocketAddr, name: &str, backend: &str) -> Option<u64> {
    let body = http::get(admin, "/metrics").body;
    let series = format!("{name}{{backend=\"{backend}\"}} ");
    body.lines().find_map(|l| l.strip_prefix(series.as_str())).map(|v| v.trim().parse().unwrap())
}

fn wait_metric(admin: SocketAddr, name: &str, backend: &str, want: u64) {
    wait_until(&format!("{name} of {backend} is {want}"), || metric(admin, name, backend) == Some(want));
}

#[test]
fn bytes_both_ways_through_the_proxy_and_counted_per_backend() {
    let echo = spawn(&["--handler", "echo"], false);
    let backend = echo.addr.to_string();
    let p = proxy(std::slice::from_ref(&backend), &[]);
    let data = random_bytes(1 << 20, 7);
    let mut c = client(p.addr);
    let writer = {
        let mut w = c.try_clone().unwrap();
        let data = data.clone();
        std::thread::spawn(move || w.write_all(&data).unwrap())
    };
    let mut back = vec![0u8; data.len()];
    c.read_exact(&mut back).unwrap();
    writer.join().unwrap();
    assert!(back == data, "the bytes came back changed");
    drop(c);
    let admin = p.admin.unwrap();
    wait_metric(admin, "switchboard_proxy_backend_sent_bytes_total", &backend, 1 << 20);
    wait_metric(admin, "switchboard_proxy_backend_received_bytes_total", &backend, 1 << 20);
    wait_metric(admin, "switchboard_proxy_backend_open", &backend, 0);
    assert_eq!(metric(admin, "switchboard_proxy_backend_connections_total", &backend), Some(1));
    assert_eq!(metric(admin, "switchboard_proxy_backend_connect_failures_total", &backend), Some(0));
    assert_eq!(metric(admin, "switchboard_proxy_backend_up", &backend), Some(1));
    let connect_us = metric(admin, "switchboard_proxy_backend_connect_microseconds_total", &backend).unwrap();
    assert!((1..TIMEOUT.as_micros() as u64).contains(&connect_us), "{connect_us}");
    let body = http::get(admin, "/metrics").body;
    let parsed = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).unwrap();
    assert!(parsed
        .samples
        .iter()
        .any(|s| s.metric == "switchboard_proxy_backend_open"
            && s.labels.get("backend") == Some(backend.as_str())));
    let json = http::get(admin, "/stats.json").body;
    assert!(
        json.contains(&format!(
            r#""switchboard_proxy_backend_connections_total{{backend=\"{backend}\"}}":1"#
        )),
        "{json}"
    );
}

#[test]
fn a_half_close_passes_through_both_ways() {
    let echo = spawn(&["--handler", "echo"], false);
    let p = proxy(&[echo.addr.to_string()], &[]);
    let data = random_bytes(256 << 10, 9);
    let mut c = client(p.addr);
    let writer = {
        let mut w = c.try_clone().unwrap();
        let data = data.clone();
        // The client's EOF goes on to the echo server, whose EOF, after the
        // last of its echo, comes back.
        std::thread::spawn(move || {
            w.write_all(&data).unwrap();
            w.shutdown(Shutdown::Write).unwrap();
        })
    };
    let mut back = Vec::new();
    c.read_to_end(&mut back).unwrap_or_else(|e| {
        panic!("after {} bytes: {e}; proxy log:\n{}", back.len(), p.proc.stderr_so_far())
    });
    writer.join().unwrap();
    assert!(back == data, "{} bytes back of {}", back.len(), data.len());
}

#[test]
fn sigterm_lets_a_relayed_transfer_finish() {
    let echo = spawn(&["--handler", "echo"], false);
    let mut p = proxy(&[echo.addr.to_string()], &["--grace", "20s"]);
    let data = random_bytes(4 << 20, 11);
    let mut c = client(p.addr);
    c.write_all(&data[..64 << 10]).unwrap();
    let mut back = vec![0u8; 64 << 10];
    c.read_exact(&mut back).unwrap();
    // Draining from here: the transfer under way goes on to its end.
    p.proc.signal(rustix::process::Signal::TERM);
    p.proc.wait_stderr("draining", TIMEOUT);
    let writer = {
        let mut w = c.try_clone().unwrap();
        let rest = data[64 << 10..].to_vec();
        std::thread::spawn(move || {
            w.write_all(&rest).unwrap();
            w.shutdown(Shutdown::Write).unwrap();
        })
    };
    c.read_to_end(&mut back).unwrap();
    writer.join().unwrap();
    assert!(back == data, "{} bytes back of {}", back.len(), data.len());
    let status = p.proc.wait(TIMEOUT);
    assert!(status.success(), "{status}");
    let out = p.proc.stdout_so_far();
    assert!(out.contains("shutdown complete: 1 drained, 0 forced, in "), "{out}");
}

#[test]
fn clients_go_round_robin_over_the_backends() {
    // Told apart by what they answer: echo as sent, upper in upper case.
    let (echo, upper) = (spawn(&["--handler", "echo"], false), spawn(&["--handler", "upper"], false));
    let p = proxy(&[echo.addr.to_string(), upper.addr.to_string()], &[]);
    let mut answers = Vec::new();
    for _ in 0..4 {
        let mut c = client(p.addr);
        c.write_all(b"abc").unwrap();
        let mut got = [0u8; 3];
        c.read_exact(&mut got).unwrap();
        answers.push(String::from_utf8_lossy(&got).into_owned());
    }
    assert_eq!(answers, ["abc", "ABC", "abc", "ABC"]);
    let admin = p.admin.unwrap();
    for b in [&echo, &upper] {
        wait_metric(admin, "switchboard_proxy_backend_connections_total", &b.addr.to_string(), 2);
    }
}

#[test]
fn a_refused_backend_is_skipped_for_the_next_clients_and_counted() {
    let echo = spawn(&["--handler", "echo"], false);
    let refused = refused_port();
    let p = proxy(&[refused.to_string(), echo.addr.to_string()], &[]);
    // The first client's turn is the refused backend: a clean close.
    let mut first = client(p.addr);
    assert_eq!(read_end(&mut first), End::Eof);
    p.proc.wait_stderr(&format!("backend {refused} failed: "), TIMEOUT);
    // The next ones all go to the echo server: the refused one is skipped
    // on its turn (the third client's) for the next 2 s.
    for i in 0..3 {
        let mut c = client(p.addr);
        c.write_all(b"ping").unwrap();
        let mut got = [0u8; 4];
        c.read_exact(&mut got).unwrap_or_else(|e| panic!("client {i}: {e}"));
        assert_eq!(&got, b"ping");
    }
    let admin = p.admin.unwrap();
    assert_eq!(
        metric(admin, "switchboard_proxy_backend_connect_failures_total", &refused.to_string()),
        Some(1)
    );
    assert_eq!(metric(admin, "switchboard_proxy_backend_connections_total", &refused.to_string()), Some(0));
    assert_eq!(metric(admin, "switchboard_proxy_backend_up", &refused.to_string()), Some(0));
    wait_metric(admin, "switchboard_proxy_backend_connections_total", &echo.addr.to_string(), 3);
    let log = p.proc.stderr_so_far();
    let line = log.lines().find(|l| l.contains(&format!("backend {refused} failed: "))).unwrap();
    assert!(line.contains("refused") && line.contains("skipped for 2s"), "{line}");
}

#[test]
fn with_every_backend_down_a_client_is_closed_cleanly_with_the_reason_logged() {
    let refused = refused_port();
    let p = proxy(&[refused.to_string()], &[]);
    for n in 1..=2 {
        // Down already for the second client: tried anyway, as the one
        // that failed longest ago.
        let mut c = client(p.addr);
        assert_eq!(read_end(&mut c), End::Eof, "client {n}");
        wait_metric(
            p.admin.unwrap(),
            "switchboard_proxy_backend_connect_failures_total",
            &refused.to_string(),
            n,
        );
    }
    let log = p.proc.stderr_so_far();
    let failed: Vec<&str> =
        log.lines().filter(|l| l.contains(&format!("backend {refused} failed: "))).collect();
    assert_eq!(failed.len(), 2, "{log}");
    assert!(failed.iter().all(|l| l.contains("Connection refused")), "{log}");
}

#[test]
fn a_backend_that_never_accepts_times_out_after_backend_connect_timeout() {
    // A listener that never accepts, its backlog full: a connect to it
    // gets no answer (loopback only).
    let listener = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    listener.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into()).unwrap();
    listener.listen(1).unwrap();
    let full = listener.local_addr().unwrap().as_socket().unwrap();
    let mut held = Vec::new();
    let filled =
        (0..16).any(|_| match TcpStream::connect_timeout(&full, std::time::Duration::from_millis(300)) {
            Ok(s) => {
                held.push(s);
                false
            }
            Err(_) => true,
        });
    assert!(filled, "the backlog never filled ({} connections taken)", held.len());
    let p = proxy(&[full.to_string()], &["--backend-connect-timeout", "500ms"]);
    let started = std::time::Instant::now();
    let mut c = client(p.addr);
    assert_eq!(read_end(&mut c), End::Eof);
    let took = started.elapsed();
    assert!(took >= std::time::Duration::from_millis(500), "closed after {took:?}");
    p.proc.wait_stderr(&format!("backend {full} failed: connect timed out; skipped for 2s"), TIMEOUT);
    wait_metric(p.admin.unwrap(), "switchboard_proxy_backend_connect_failures_total", &full.to_string(), 1);
}

#[test]
fn a_unix_socket_backend() {
    let dir = temp_dir("proxy-unix");
    let path = dir.path().join("echo.sock");
    let listen = format!("unix:{}", path.display());
    let mut cmd = Command::new(SERVER);
    cmd.args(["--handler", "echo", "--listen", &listen]).stdin(Stdio::null());
    let mut echo = Spawned::spawn(&mut cmd);
    echo.line_where(TIMEOUT, |l| l.starts_with("listening on "));
    let p = proxy(std::slice::from_ref(&listen), &[]);
    let mut c = client(p.addr);
    c.write_all(b"over a Unix socket").unwrap();
    let mut got = [0u8; 18];
    c.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"over a Unix socket");
    wait_metric(p.admin.unwrap(), "switchboard_proxy_backend_connections_total", &listen, 1);
}

fn line(r: &mut BufReader<TcpStream>) -> String {
    let mut l = String::new();
    r.read_line(&mut l).expect("a line");
    l
}

#[test]
fn proxy_protocol_out_v1_and_v2_show_the_client_in_a_chats_who() {
    let chat = spawn(&["--handler", "chat", "--proxy-protocol", "--chat-who-addresses"], false);
    let backend = [chat.addr.to_string()];
    let (v1, v2) =
        (proxy(&backend, &["--proxy-protocol-out", "v1"]), proxy(&backend, &["--proxy-protocol-out", "v2"]));
    let a = client(v1.addr);
    let a_addr = a.local_addr().unwrap();
    let mut a = BufReader::new(a);
    assert_eq!(line(&mut a), "* welcome guest-1\n");
    let b = client(v2.addr);
    let b_addr = b.local_addr().unwrap();
    let mut b = BufReader::new(b);
    assert_eq!(line(&mut b), "* welcome guest-2\n");
    assert_eq!(line(&mut a), "* guest-2 joined\n");
    b.get_mut().write_all(b"/who\n").unwrap();
    // The clients' own addresses, not the proxies'.
    assert_eq!(line(&mut b), format!("* online: guest-1 ({a_addr}), guest-2 ({b_addr})\n"));
}

/// HAProxy in HTTP mode behind the proxy: a frontend that expects a PROXY
/// header (`accept-proxy`, v1 or v2) and answers every request with the
/// client address it took from it.
fn haproxy(dir: &std::path::Path) -> (Spawned, SocketAddr) {
    let port = refused_port().port();
    let config = format!(
        "global\n    maxconn 100\n\
         defaults\n    mode http\n    timeout connect 5s\n    timeout client 60s\n    timeout server 60s\n\
         frontend fe\n    bind 127.0.0.1:{port} accept-proxy\n    \
         http-request return status 200 content-type text/plain lf-string \"%[src]:%[src_port]\\n\"\n"
    );
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, config).unwrap();
    let check = run(Command::new("haproxy").arg("-c").arg("-f").arg(&path), TIMEOUT);
    assert!(check.status.success(), "haproxy -c: {}", String::from_utf8_lossy(&check.stderr));
    let proc = Spawned::spawn(Command::new("haproxy").arg("-db").arg("-f").arg(&path).stdin(Stdio::null()));
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // Listening, seen without a connection: the port can no longer be bound.
    wait_until("HAProxy listens", || TcpListener::bind(addr).is_err());
    (proc, addr)
}

#[test]
fn haproxy_with_accept_proxy_sees_the_clients_address() {
    let dir = temp_dir("proxy-haproxy");
    let (_haproxy, ha) = haproxy(dir.path());
    for version in ["v1", "v2"] {
        let p = proxy(&[ha.to_string()], &["--proxy-protocol-out", version]);
        let mut c = client(p.addr);
        let me = c.local_addr().unwrap();
        c.write_all(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n").unwrap();
        // The response: headers, then a body of one line.
        let mut response = Vec::new();
        let mut byte = [0u8; 1];
        let body_line = |r: &[u8]| {
            r.windows(4)
                .position(|w| w == b"\r\n\r\n")
                .is_some_and(|end| r.len() > end + 4 && r.ends_with(b"\n"))
        };
        while !body_line(&response) {
            let n = c.read(&mut byte).unwrap();
            assert_eq!(n, 1, "{version}: the response ended early: {}", String::from_utf8_lossy(&response));
            response.push(byte[0]);
        }
        let response = String::from_utf8(response).unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{version}: {response}");
        let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
        assert_eq!(body, format!("{me}\n"), "{version}: {response}");
        // HAProxy closes after its reply (connection: close): the EOF comes through.
        assert_eq!(read_end(&mut c), End::Eof, "{version}");
    }
}

#[test]
fn tls_is_terminated_in_front_of_a_plain_backend() {
    let dir = temp_dir("proxy-tls");
    let pki = TestPki::create(dir.path());
    let echo = spawn(&["--handler", "echo"], false);
    let backend = echo.addr.to_string();
    let mut p = pki.spawn_server(SERVER, &["--handler", "proxy", "--backend", &backend]);
    let addr = p.listening_addr();
    let mut cmd = Command::new(CLIENT);
    cmd.arg("--tls").arg("--ca").arg(&pki.ca).arg(addr.to_string()).stdin(Stdio::piped());
    let mut c = Spawned::spawn(&mut cmd);
    c.stdin().write_all(b"through TLS to a plain echo\n").unwrap();
    c.close_stdin();
    let status = c.wait(TIMEOUT);
    let out = c.output(status);
    assert!(status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "through TLS to a plain echo\n");

    // A rustls client of its own: binary bytes both ways.
    use switchboard::rustls::{ClientConnection, StreamOwned};
    let conn = ClientConnection::new(pki.client_config(), "localhost".try_into().unwrap()).unwrap();
    let mut tls = StreamOwned::new(conn, client(addr));
    let data = random_bytes(256 << 10, 3);
    tls.write_all(&data).unwrap();
    let mut back = vec![0u8; data.len()];
    tls.read_exact(&mut back).unwrap();
    assert!(back == data);
    drop(p);
}

#[test]
fn handler_proxy_without_backend_exits_2_with_the_reason() {
    let out = run(Command::new(SERVER).args(["--listen", "127.0.0.1:0", "--handler", "proxy"]), TIMEOUT);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--handler proxy needs --backend HOST:PORT[,HOST:PORT...]"), "{err}");
    assert!(out.stdout.is_empty());
    let out = run(
        Command::new(SERVER).args(["--listen", "127.0.0.1:0", "--handler", "proxy", "--backend", "unix:"]),
        TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--backend 'unix:': no path after unix:"));
}
