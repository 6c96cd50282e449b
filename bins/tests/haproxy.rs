//! `switchboard-server --proxy-protocol` behind a real HAProxy (Debian's
//! `haproxy`, started by the test with a generated configuration on free
//! loopback ports): with `send-proxy` (v1) and `send-proxy-v2`, the server
//! sees and logs the client's address, not HAProxy's; chat works through
//! it; TLS passes through HAProxy to a server that expects the header.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};

use switchboard_test_support::child::{run, Spawned};
use switchboard_test_support::pki::TestPki;
use switchboard_test_support::{temp_dir, wait_until, TIMEOUT};

const SERVER: &str = env!("CARGO_BIN_EXE_switchboard-server");
const CLIENT: &str = env!("CARGO_BIN_EXE_switchboard-client");

/// A free loopback port (bound, read back, released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct HaProxy {
    _proc: Spawned,
    /// Frontend ports: (send-proxy, send-proxy-v2).
    v1: SocketAddr,
    v2: SocketAddr,
}

/// HAProxy in TCP mode: one frontend with `send-proxy` and one with
/// `send-proxy-v2`, both to `backend`.
fn haproxy(dir: &Path, backend: SocketAddr) -> HaProxy {
    let (v1, v2) = (free_port(), free_port());
    let config = format!(
        "global\n    maxconn 100\n\
         defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 60s\n    timeout server 60s\n\
         frontend fe_v1\n    bind 127.0.0.1:{v1}\n    default_backend be_v1\n\
         backend be_v1\n    server s1 {backend} send-proxy\n\
         frontend fe_v2\n    bind 127.0.0.1:{v2}\n    default_backend be_v2\n\
         backend be_v2\n    server s1 {backend} send-proxy-v2\n"
    );
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, config).unwrap();
    let check = run(Command::new("haproxy").arg("-c").arg("-f").arg(&path), TIMEOUT);
    assert!(check.status.success(), "haproxy -c: {}", String::from_utf8_lossy(&check.stderr));
    let proc = Spawned::spawn(Command::new("haproxy").arg("-db").arg("-f").arg(&path).stdin(Stdio::null()));
    let (v1, v2): (SocketAddr, SocketAddr) =
        (format!("127.0.0.1:{v1}").parse().unwrap(), format!("127.0.0.1:{v2}").parse().unwrap());
    // Listening, seen without a connection (which HAProxy would carry to
    // the server): the ports can no longer be bound.
    wait_until("HAProxy listens", || TcpListener::bind(v1).is_err() && TcpListener::bind(v2).is_err());
    HaProxy { _proc: proc, v1, v2 }
}

fn server(args: &[&str]) -> (Spawned, SocketAddr) {
    let mut cmd = Command::new(SERVER);
    cmd.args(["--listen", "127.0.0.1:0", "--workers", "2", "--proxy-protocol"])
        .args(args)
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null());
    let mut proc = Spawned::spawn(&mut cmd);
    let addr = proc.listening_addr();
    (proc, addr)
}

fn line(r: &mut BufReader<TcpStream>) -> String {
    let mut l = String::new();
    r.read_line(&mut l).expect("a line");
    l
}

/// The server's log names `client` as the connection's peer from the
/// PROXY header on, and HAProxy's own address only in the line that says
/// which client it carries.
fn assert_logged_as(server: &Spawned, client: SocketAddr) {
    let wanted = format!(" is from {client} (PROXY header)");
    server.wait_stderr(&wanted, TIMEOUT);
    let log = server.stderr_so_far();
    let via = log.lines().find(|l| l.contains(&wanted)).unwrap();
    // "... DEBUG switchboard::worker] HAPROXY_ADDR: connection N is from CLIENT (PROXY header)"
    let after = via.split("] ").nth(1).unwrap();
    let (haproxy_addr, rest) = after.split_once(": connection ").unwrap();
    let id = rest.split(' ').next().unwrap();
    assert_ne!(haproxy_addr, client.to_string());
    let opened = format!("{client}: connection {id} open on worker");
    assert!(log.contains(&opened), "no '{opened}' in:\n{log}");
    assert!(
        !log.contains(&format!("{haproxy_addr}: connection {id} open")),
        "the connection was logged under HAProxy's address:\n{log}"
    );
}

#[test]
fn behind_haproxy_v1_and_v2_the_server_sees_the_client_address() {
    let dir = temp_dir("haproxy-chat");
    let (srv, addr) = server(&["--handler", "chat", "--chat-who-addresses"]);
    let ha = haproxy(dir.path(), addr);

    let a = TcpStream::connect(ha.v1).unwrap();
    a.set_read_timeout(Some(TIMEOUT)).unwrap();
    let a_addr = a.local_addr().unwrap();
    let mut a = BufReader::new(a);
    assert_eq!(line(&mut a), "* welcome guest-1\n");
    assert_logged_as(&srv, a_addr);

    let b = TcpStream::connect(ha.v2).unwrap();
    b.set_read_timeout(Some(TIMEOUT)).unwrap();
    let b_addr = b.local_addr().unwrap();
    let mut b = BufReader::new(b);
    assert_eq!(line(&mut b), "* welcome guest-2\n");
    assert_logged_as(&srv, b_addr);
    assert_eq!(line(&mut a), "* guest-2 joined\n");

    a.get_mut().write_all(b"/nick alice\n").unwrap();
    assert_eq!(line(&mut a), "* you are now alice\n");
    assert_eq!(line(&mut b), "* guest-1 is now alice\n");
    b.get_mut().write_all(b"/who\n").unwrap();
    // The clients' own addresses (HAProxy connects from other ports).
    assert_eq!(line(&mut b), format!("* online: alice ({a_addr}), guest-2 ({b_addr})\n"));

    // A client that bypasses HAProxy is closed, with the reason logged.
    let mut direct = TcpStream::connect(addr).unwrap();
    direct.set_read_timeout(Some(TIMEOUT)).unwrap();
    let direct_addr = direct.local_addr().unwrap();
    direct.write_all(b"hello\n").unwrap();
    let mut rest = Vec::new();
    let _ = std::io::Read::read_to_end(&mut direct, &mut rest);
    assert!(rest.is_empty(), "{rest:?}");
    wait_until("the direct client's close is logged with its reason", || {
        srv.stderr_so_far().lines().any(|l| {
            l.contains(&format!("{direct_addr}: connection "))
                && l.contains(" closed: no valid PROXY protocol header: invalid PROXY v1 header")
        })
    });

    // Leaving is logged under the client's address too.
    drop(a);
    srv.wait_stderr(&format!("{a_addr}: connection"), TIMEOUT);
    wait_until("the close is logged under the client's address", || {
        srv.stderr_so_far()
            .lines()
            .any(|l| l.contains(&format!("{a_addr}: connection")) && l.contains("closed"))
    });
}

#[test]
fn tls_passes_through_haproxy_to_a_server_expecting_the_header() {
    let dir = temp_dir("haproxy-tls");
    let pki = TestPki::create(dir.path());
    let cert = pki.cert.to_str().unwrap();
    let key = pki.key.to_str().unwrap();
    let (srv, addr) = server(&["--handler", "upper", "--tls-cert", cert, "--tls-key", key]);
    let ha = haproxy(dir.path(), addr);
    for front in [ha.v1, ha.v2] {
        let mut cmd = Command::new(CLIENT);
        // A linger past the deadline: the session must end when the input does.
        cmd.arg("--tls").arg("--ca").arg(&pki.ca).args(["--linger", "10m"]);
        cmd.arg(front.to_string()).stdin(Stdio::piped());
        let mut client = Spawned::spawn(&mut cmd);
        client.stdin().write_all(b"through the proxy\n").unwrap();
        client.close_stdin();
        let status = client.wait(TIMEOUT);
        let out = client.output(status);
        assert!(status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "THROUGH THE PROXY\n");
    }
    let log = srv.stderr_so_far();
    assert_eq!(log.matches("(PROXY header)").count(), 2, "{log}");
    assert!(!log.contains("TLS error"), "{log}");
}
