//! The two yard sticks echo every byte back in order, across partial sends
//! and buffer boundaries, and close what a client closes: otherwise the
//! profile section's floors would measure something other than an echo.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use rustix::process::{kill_process, Pid, Signal};
use switchboard_test_support::child::Spawned;
use switchboard_test_support::wait_until;

/// A floor server the test owns (killed on drop, its output read as it
/// comes) and where it listens.
struct Floor {
    proc: Spawned,
    addr: SocketAddr,
}

impl Floor {
    fn start(bin: &str) -> Floor {
        let mut proc = Spawned::spawn(Command::new(bin).args(["--listen", "127.0.0.1:0"]));
        let addr = proc.listening_addr();
        Floor { proc, addr }
    }

    fn signal(&self, sig: Signal) {
        let pid = Pid::from_raw(self.proc.pid().id() as i32).expect("a child's pid");
        kill_process(pid, sig).expect("signal the server");
    }

    /// Descriptors the server holds now.
    fn fds(&self) -> usize {
        self.proc.pid().open_fds()
    }
}

/// Bytes that differ at every offset within a long stretch, so a lost,
/// doubled or reordered chunk shows.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3] ^ seed).collect()
}

/// Three clients at once each send 1 MiB (bigger than one receive buffer
/// and than the socket buffers, so the server's sends come back short) and
/// read it back while sending; then they close, and the server's descriptor
/// count returns to what it was before they came.
fn echoes_in_order_and_closes(bin: &str) {
    let floor = Floor::start(bin);
    let idle = floor.fds();
    let clients: Vec<_> = (0..3u8)
        .map(|seed| {
            let addr = floor.addr;
            std::thread::spawn(move || {
                let sock = TcpStream::connect(addr).expect("connect");
                sock.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
                let sent = pattern(1 << 20, seed);
                let mut writer = sock.try_clone().expect("clone");
                let data = sent.clone();
                let w = std::thread::spawn(move || {
                    for chunk in data.chunks(7_000) {
                        writer.write_all(chunk).expect("send");
                    }
                });
                let mut got = vec![0u8; sent.len()];
                (&sock).read_exact(&mut got).expect("echo back");
                w.join().expect("writer");
                assert!(got == sent, "{addr}: client {seed} got its bytes back changed or out of order");
            })
        })
        .collect();
    for c in clients {
        c.join().expect("client");
    }
    wait_until(&format!("{bin} holds its {idle} descriptors of before the clients"), || floor.fds() == idle);
    // Clients that send and shut their side while the server is stopped:
    // when it goes on, each one's data and FIN come in one wake-up, and the
    // server must still see the EOF (a short read is not the end then):
    // it echoes the line and closes.
    floor.signal(Signal::STOP);
    let halves: Vec<TcpStream> = (0..5)
        .map(|_| {
            let mut sock = TcpStream::connect(floor.addr).expect("connect");
            sock.write_all(b"bye\n").expect("send");
            sock.shutdown(Shutdown::Write).expect("shutdown");
            sock
        })
        .collect();
    floor.signal(Signal::CONT);
    for mut sock in halves {
        sock.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let mut back = Vec::new();
        sock.read_to_end(&mut back).unwrap_or_else(|e| panic!("{bin} did not close after the EOF: {e}"));
        assert_eq!(back, b"bye\n", "{bin}");
    }
    wait_until(&format!("{bin} holds its {idle} descriptors after clients that sent and closed"), || {
        floor.fds() == idle
    });
    // Still serving after the closes.
    let mut sock = TcpStream::connect(floor.addr).expect("connect again");
    sock.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    sock.write_all(b"ping\n").expect("send");
    let mut back = [0u8; 5];
    sock.read_exact(&mut back).expect("echo");
    assert_eq!(&back, b"ping\n");
}

#[test]
fn floor_echo_echoes_in_order_and_closes() {
    echoes_in_order_and_closes(env!("CARGO_BIN_EXE_floor-echo"));
}

#[test]
fn uring_floor_echo_echoes_in_order_and_closes() {
    echoes_in_order_and_closes(env!("CARGO_BIN_EXE_uring-floor-echo"));
}

#[test]
fn floors_refuse_a_bad_argument() {
    for bin in [env!("CARGO_BIN_EXE_floor-echo"), env!("CARGO_BIN_EXE_uring-floor-echo")] {
        let out = Command::new(bin).arg("--port").output().expect("run");
        assert_eq!(out.status.code(), Some(2), "{bin}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("usage:"), "{bin}");
        let out = Command::new(bin).args(["--listen", "no-such-address"]).output().expect("run");
        assert_eq!(out.status.code(), Some(1), "{bin}");
    }
}
