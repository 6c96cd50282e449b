//! The Unix echo rows' baseline: `tokio-echo --listen unix:PATH` serves a
//! tokio `UnixListener`, replaces a file left at PATH, and echoes every
//! byte back on each of several connections.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::Command;
use std::time::Duration;

use switchboard_test_support::child::Spawned;
use switchboard_test_support::temp_dir;

#[test]
fn echoes_over_a_unix_socket() {
    let dir = temp_dir("tokio-echo-unix");
    let path = dir.path().join("echo.sock");
    // What a killed run leaves behind.
    drop(UnixListener::bind(&path).unwrap());
    let listen = format!("unix:{}", path.display());
    let mut server =
        Spawned::spawn(Command::new(env!("CARGO_BIN_EXE_tokio-echo")).args(["--listen", &listen]));
    let line = server.line_where(Duration::from_secs(20), |l| l.starts_with("listening on "));
    assert_eq!(line.trim_end(), format!("listening on {listen}"));

    let mut clients: Vec<UnixStream> = (0..3).map(|_| UnixStream::connect(&path).expect("connect")).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        // More than the baseline's 4 KiB buffer, so it takes several reads.
        let sent: Vec<u8> = (0..10_000u32).map(|n| (n as usize * 7 + i) as u8).collect();
        c.write_all(&sent).unwrap();
        let mut got = vec![0u8; sent.len()];
        c.read_exact(&mut got).unwrap();
        assert!(got == sent, "connection {i}: the bytes echoed differ");
    }
}
