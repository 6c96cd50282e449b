//! Where the listening socket comes from: `--reuse-port` (two server
//! processes on one port, both served; one drains on SIGTERM and loses none
//! of the connections it accepted) and socket activation (a parent binds,
//! then execs the server with the socket as `LISTEN_FDS`).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};

use rustix::process::Signal;
use switchboard_test_support::child::Spawned;
use switchboard_test_support::{connect, random_bytes, wait_until, TIMEOUT};

const SERVER: &str = env!("CARGO_BIN_EXE_switchboard-server");
const ACTIVATE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/activate.py");

fn echo_server(listen: &str, extra: &[&str]) -> (Spawned, SocketAddr) {
    let mut cmd = Command::new(SERVER);
    cmd.args(["--listen", listen, "--workers", "2", "--reuse-port"])
        .args(extra)
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null());
    let mut proc = Spawned::spawn(&mut cmd);
    let addr = proc.listening_addr();
    (proc, addr)
}

/// The local ports of the clients a server's log says it opened.
fn opened_ports(server: &Spawned) -> Vec<u16> {
    server
        .stderr_so_far()
        .lines()
        .filter(|l| l.contains(" open on worker "))
        .filter_map(|l| l.split("] ").nth(1)?.split(": ").next()?.parse::<SocketAddr>().ok())
        .map(|a| a.port())
        .collect()
}

#[test]
fn two_processes_share_a_port_and_a_drained_one_loses_no_connection() {
    let (mut a, addr) = echo_server("127.0.0.1:0", &[]);
    let (b, addr_b) = echo_server(&addr.to_string(), &[]);
    assert_eq!(addr, addr_b, "both listen on one address");

    const CLIENTS: usize = 48;
    let mut clients: Vec<TcpStream> = (0..CLIENTS).map(|_| connect(addr)).collect();
    let ports: Vec<u16> = clients.iter().map(|c| c.local_addr().unwrap().port()).collect();
    wait_until("both servers opened every client", || {
        opened_ports(&a).len() + opened_ports(&b).len() == CLIENTS
    });
    let on_a: HashMap<u16, ()> = opened_ports(&a).into_iter().map(|p| (p, ())).collect();
    let on_b = opened_ports(&b);
    assert!(!on_a.is_empty() && !on_b.is_empty(), "the kernel gave all {CLIENTS} to one process");
    assert!(ports.iter().all(|p| on_a.contains_key(p) || on_b.contains(p)));

    // Requests in flight on every connection, then A is told to stop.
    let payload = random_bytes(64 << 10, 9);
    for c in &mut clients {
        c.write_all(&payload).unwrap();
    }
    a.signal(Signal::TERM);
    for (c, port) in clients.iter_mut().zip(&ports) {
        let mut got = vec![0u8; payload.len()];
        c.read_exact(&mut got).unwrap_or_else(|e| panic!("client {port}: {e}"));
        assert!(got == payload, "client {port}: the reply differs");
        if on_a.contains_key(port) {
            // Drained: a clean EOF once quiet, never a reset.
            let mut rest = Vec::new();
            c.read_to_end(&mut rest).unwrap_or_else(|e| panic!("client {port} of the drained server: {e}"));
            assert!(rest.is_empty());
        }
    }
    let status = a.wait(TIMEOUT);
    assert!(status.success(), "{status}");
    let report = format!("shutdown complete: {} drained, 0 forced", on_a.len());
    assert!(a.stderr_so_far().contains(&report), "no '{report}' in:\n{}", a.stderr_so_far());

    // B goes on: its clients and new ones are served.
    for (c, port) in clients.iter_mut().zip(&ports).filter(|(_, p)| on_b.contains(p)) {
        c.write_all(b"still here\n").unwrap();
        let mut got = [0u8; 11];
        c.read_exact(&mut got).unwrap_or_else(|e| panic!("client {port} of the remaining server: {e}"));
        assert_eq!(&got, b"still here\n");
    }
    for _ in 0..8 {
        let mut c = connect(addr);
        c.write_all(b"new\n").unwrap();
        let mut got = [0u8; 4];
        c.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"new\n");
    }
}

#[test]
fn an_inherited_listening_socket_is_served_instead_of_binding() {
    // --listen names an address no process here can bind (TEST-NET-1): only
    // the socket handed down can serve.
    let mut cmd = Command::new("python3");
    cmd.arg(ACTIVATE).arg(SERVER).args(["--listen", "192.0.2.1:7", "--workers", "1"]).stdin(Stdio::null());
    let mut server = Spawned::spawn(&mut cmd);
    let bound = server.next_line(TIMEOUT).expect("the parent's line");
    let port: u16 = bound.trim().strip_prefix("bound ").unwrap().parse().unwrap();
    let addr = server.listening_addr();
    assert_eq!(addr, SocketAddr::from(([127, 0, 0, 1], port)));
    server.wait_stderr("serving the listening socket handed down (LISTEN_FDS), not --listen", TIMEOUT);
    let mut c = connect(addr);
    c.write_all(b"activated\n").unwrap();
    let mut got = [0u8; 10];
    c.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"activated\n");
}

#[test]
fn a_descriptor_that_is_no_socket_is_one_line_and_exit_2() {
    // Descriptor 3 is a file here, not a socket.
    let dir = switchboard_test_support::temp_dir("listen-fds");
    let file = dir.write("not-a-socket", b"x");
    let script = format!(
        "import os,sys\nfd=os.open({file:?}, os.O_RDONLY)\nos.dup2(fd,3)\nos.set_inheritable(3,True)\n\
         env=dict(os.environ,LISTEN_FDS='1',LISTEN_PID=str(os.getpid()))\nos.execve(sys.argv[1],sys.argv[1:],env)\n"
    );
    let out = switchboard_test_support::child::run(
        Command::new("python3").arg("-c").arg(script).arg(SERVER).args(["--listen", "127.0.0.1:0"]),
        TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("switchboard-server: LISTEN_FDS: the first descriptor handed down is unusable"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}
