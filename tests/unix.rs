//! A server on a Unix domain socket (`ServerBuilder::start_unix`): the
//! handler sees its peer's credentials (`SO_PEERCRED`), a stale socket file
//! is replaced and a live one refused, the file gets the mode asked for
//! and is removed when the server drains; TLS runs over it too. The chat
//! tells Unix members apart by their credentials: `/who` shows them, and
//! the account limits count a Unix peer by its uid.

use std::io::{BufReader, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};

use switchboard::{
    tls_config_from_pem, Addr, Conn, Flow, Framing, Handler, Peer, Server, ServerBuilder, StartError,
};
use switchboard_handlers::chat::LOGIN_FAILURES_PER_NAME_AND_ADDRESS;
use switchboard_handlers::Chat;
use switchboard_test_support::pki::TestPki;
use switchboard_test_support::{read_line, temp_dir, unix_client, wait_stats, TIMEOUT};

/// Says the peer on open (`uid UID pid PID`, or its address), then echoes
/// lines.
struct WhoEcho;

impl Handler for WhoEcho {
    type Session = ();
    fn framing(&self) -> Framing {
        Framing::lines(1024)
    }
    fn open(&self, conn: &mut Conn<'_>) {
        let who = match conn.peer() {
            Peer::Unix(Some(c)) => format!("uid {} pid {}\n", c.uid, c.pid),
            other => format!("{other}\n"),
        };
        conn.send(who.as_bytes());
    }
    fn frame(&self, _: &mut (), line: &[u8], conn: &mut Conn<'_>) -> Flow {
        conn.send(line);
        conn.send(b"\n");
        Flow::Continue
    }
}

fn builder() -> ServerBuilder {
    ServerBuilder::default().workers(2)
}

#[test]
fn a_unix_peer_is_served_with_its_credentials_and_the_file_goes_at_drain() {
    let dir = temp_dir("unix");
    let path = dir.path().join("s.sock");
    let server = builder().unix_mode(0o660).start_unix(&path, WhoEcho).expect("start");
    assert_eq!(server.addr(), &Addr::Unix(path.clone()));
    assert_eq!(server.addr().to_string(), format!("unix:{}", path.display()));
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);

    let mut c = unix_client(&path);
    let (uid, pid) = (rustix::process::getuid().as_raw(), std::process::id());
    assert_eq!(read_line(&mut c), format!("uid {uid} pid {pid}\n"));
    c.get_mut().write_all(b"hello\n").unwrap();
    assert_eq!(read_line(&mut c), "hello\n");

    // A second server on the same path is refused, the first untouched.
    match builder().start_unix(&path, WhoEcho) {
        Err(StartError::Bind { addr, source }) => {
            assert_eq!(addr, format!("unix:{}", path.display()));
            assert_eq!(source.kind(), std::io::ErrorKind::AddrInUse, "{source}");
        }
        other => panic!("a live socket must be refused: {other:?}"),
    }
    assert!(path.exists());
    c.get_mut().write_all(b"still\n").unwrap();
    assert_eq!(read_line(&mut c), "still\n");
    // The refused server's probe connected to the live socket: accepted
    // before the drain (otherwise it stays in the backlog and is reset).
    let stats = server.stats_handle();
    switchboard_test_support::wait_until("the probe is accepted", || stats.snapshot().accepted == 2);

    let handle = server.shutdown_handle();
    let t = std::thread::spawn(move || server.wait());
    handle.drain();
    // Drain stops accepting: the file goes then, while this client is
    // still served.
    switchboard_test_support::wait_until("the socket file is removed", || !path.exists());
    c.get_mut().write_all(b"last\n").unwrap();
    assert_eq!(read_line(&mut c), "last\n");
    drop(c);
    let report = t.join().unwrap();
    assert_eq!((report.drained, report.forced), (1, 0), "{report}");
    // The client and the probe, and nothing else.
    assert_eq!(stats.snapshot().accepted, 2);
}

#[test]
fn a_stale_socket_file_is_replaced_and_other_files_are_refused() {
    let dir = temp_dir("unix-stale");
    let path = dir.path().join("s.sock");
    // What a killed server leaves: the file, nobody listening.
    drop(UnixListener::bind(&path).unwrap());
    let server = builder().start_unix(&path, WhoEcho).expect("a stale file is replaced");
    let mut c = unix_client(&path);
    assert!(read_line(&mut c).starts_with("uid "));
    drop(c);
    drop(server);
    assert!(!path.exists(), "removed when the server is dropped");

    std::fs::write(&path, b"data").unwrap();
    match builder().start_unix(&path, WhoEcho) {
        Err(StartError::Bind { source, .. }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::AlreadyExists, "{source}")
        }
        other => panic!("a regular file must not be replaced: {other:?}"),
    }
    assert_eq!(std::fs::read(&path).unwrap(), b"data");
    match builder().unix_mode(0o1777).start_unix(dir.path().join("m.sock"), WhoEcho) {
        Err(StartError::Config(msg)) => assert!(msg.contains("0o1777"), "{msg}"),
        other => panic!("a mode past 0o777 must be refused: {other:?}"),
    }
}

#[test]
fn a_socket_handed_down_is_served_and_its_file_left_in_place() {
    let dir = temp_dir("unix-inherited");
    let path = dir.path().join("s.sock");
    let l = UnixListener::bind(&path).unwrap();
    let server = builder().unix_listener(l).start("127.0.0.1:0", WhoEcho).expect("start");
    assert_eq!(server.addr(), &Addr::Unix(path.clone()));
    let mut c = unix_client(&path);
    assert!(read_line(&mut c).starts_with("uid "));
    drop(c);
    let report = server.shutdown();
    assert_eq!(report.forced, 0, "{report}");
    assert!(path.exists(), "a socket handed down is not this server's to remove");
}

#[test]
fn tls_runs_over_a_unix_socket() {
    let dir = temp_dir("unix-tls");
    let path = dir.path().join("s.sock");
    let pki = TestPki::create(dir.path());
    let config = tls_config_from_pem(&pki.cert, &pki.key).expect("the test PKI loads");
    let server: Server = builder().tls(config).start_unix(&path, WhoEcho).expect("start");
    let conn = rustls::ClientConnection::new(pki.client_config(), "localhost".try_into().unwrap()).unwrap();
    let sock = UnixStream::connect(&path).unwrap();
    sock.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut tls = BufReader::new(rustls::StreamOwned::new(conn, sock));
    let uid = rustix::process::getuid().as_raw();
    assert_eq!(read_line(&mut tls), format!("uid {uid} pid {}\n", std::process::id()));
    tls.get_mut().write_all(b"secret\n").unwrap();
    assert_eq!(read_line(&mut tls), "secret\n");
    wait_stats(&server, "one TLS handshake", |s| s.tls_handshakes == 1);
}

#[test]
fn a_proxy_header_over_a_unix_socket_names_the_client() {
    // A local load balancer (HAProxy's `server s1 unix@PATH send-proxy`).
    let dir = temp_dir("unix-proxy");
    let path = dir.path().join("s.sock");
    let server = builder().proxy_protocol(true).start_unix(&path, WhoEcho).expect("start");
    let mut c = unix_client(&path);
    c.get_mut().write_all(b"PROXY TCP4 198.51.100.9 127.0.0.1 40000 7000\r\nafter\n").unwrap();
    assert_eq!(read_line(&mut c), "198.51.100.9:40000\n");
    assert_eq!(read_line(&mut c), "after\n");
    drop(c);
    let report = server.shutdown();
    assert_eq!(report.forced, 0, "{report}");
}

/// Sends one line.
fn say(c: &mut BufReader<UnixStream>, line: &str) {
    c.get_mut().write_all(format!("{line}\n").as_bytes()).unwrap();
}

/// `/who` with `--chat-who-addresses` shows each Unix member by its
/// credentials, `unix:uid=U,pid=P` (not one `0.0.0.0:0` for all).
#[test]
fn chat_who_shows_a_unix_members_uid_and_pid() {
    let dir = temp_dir("unix-chat-who");
    let path = dir.path().join("chat.sock");
    let server = builder().start_unix(&path, Chat::new(4096).who_addresses(true)).expect("start");
    let (uid, pid) = (rustix::process::getuid().as_raw(), std::process::id());
    let mut a = unix_client(&path);
    assert_eq!(read_line(&mut a), "* welcome guest-1\n");
    let mut b = unix_client(&path);
    assert_eq!(read_line(&mut b), "* welcome guest-2\n");
    assert_eq!(read_line(&mut a), "* guest-2 joined\n");
    say(&mut b, "/who");
    let me = format!("unix:uid={uid},pid={pid}");
    assert_eq!(read_line(&mut b), format!("* online: guest-1 ({me}), guest-2 ({me})\n"));
    drop((a, b));
    assert_eq!(server.shutdown().forced, 0);
}

/// Connects to `path` from a thread running as user `uid` (Linux keeps
/// credentials per thread; the kernel records the connecting thread's).
fn unix_client_as(path: &std::path::Path, uid: u32) -> BufReader<UnixStream> {
    let path = path.to_owned();
    std::thread::spawn(move || {
        let uid = rustix::process::Uid::from_raw(uid);
        rustix::thread::set_thread_res_uid(uid, uid, uid).expect("become another user");
        unix_client(&path)
    })
    .join()
    .expect("the connecting thread")
}

/// The account limits count a Unix peer by its uid: two connections of
/// one user spend one budget of failed logins for a name (after it, even
/// the right password waits), while (when the test may act as another
/// user, as root) a process of another user has a budget of its own and
/// gets in.
#[test]
fn unix_members_of_one_user_share_the_account_budget_of_an_address() {
    let dir = temp_dir("unix-chat-accounts");
    let path = dir.path().join("chat.sock");
    let chat = Chat::new(4096).accounts_file(dir.path().join("accounts.redb")).expect("accounts");
    let server = builder().unix_mode(0o666).start_unix(&path, chat).expect("start");
    let mut a = unix_client(&path);
    assert_eq!(read_line(&mut a), "* welcome guest-1\n");
    let mut b = unix_client(&path);
    assert_eq!(read_line(&mut b), "* welcome guest-2\n");
    assert_eq!(read_line(&mut a), "* guest-2 joined\n");
    say(&mut a, "/register gina gina-password");
    assert_eq!(read_line(&mut a), "* registered gina\n");
    // The failures alternate between the two connections: one budget.
    for n in 0..LOGIN_FAILURES_PER_NAME_AND_ADDRESS {
        let c = if n % 2 == 0 { &mut a } else { &mut b };
        say(c, "/login gina not-her-password");
        assert_eq!(read_line(c), "! wrong name or password\n", "failure {n}");
    }
    for c in [&mut a, &mut b] {
        say(c, "/login gina gina-password");
        assert_eq!(read_line(c), "! too many failed logins, try again later\n");
    }
    if rustix::process::geteuid().is_root() {
        // Another user may reach the socket (mode 666) through the folder.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut other = unix_client_as(&path, 65534);
        assert_eq!(read_line(&mut other), "* welcome guest-3\n");
        say(&mut other, "/login gina gina-password");
        assert_eq!(read_line(&mut other), "* you are now gina\n");
        assert_eq!(read_line(&mut a), "* guest-3 joined\n");
        assert_eq!(read_line(&mut a), "* guest-3 is now gina\n");
    }
    drop((a, b));
    assert_eq!(server.shutdown().forced, 0);
}
