//! Shutdown under load: 500 clients ping-ponging with an echo server and 5
//! slow downloads from a file server, both servers shut down at once. Every
//! reply to a ping the server read is delivered and the pingers are drained
//! cleanly; the downloads are cut at the grace deadline, counted as forced,
//! and what they received is a true prefix of the file.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use switchboard::Server;
use switchboard_handlers::file::proto;
use switchboard_handlers::{Echo, FileGet};
use switchboard_test_support::*;

const PINGERS: usize = 500;
const PINGER_THREADS: usize = 10;
const DOWNLOADS: usize = 5;

/// What one download got: its bytes of content and whether it was whole.
struct Download {
    body: Vec<u8>,
    expected: usize,
}

fn download(addr: std::net::SocketAddr, name: &str, started: Arc<AtomicUsize>) -> Download {
    let mut s = connect(addr);
    s.write_all(format!("get {name}\n").as_bytes()).unwrap();
    let len = proto::decode_len(read_exact(&mut s, proto::LEN_PREFIX).try_into().unwrap()).unwrap();
    let header = proto::parse(&read_exact(&mut s, len)).unwrap();
    let size = usize::try_from(header.file_size).unwrap();
    let mut body = Vec::with_capacity(size);
    let mut buf = vec![0u8; 64 << 10];
    let mut counted = false;
    while body.len() < size {
        match s.read(&mut buf[..(size - body.len()).min(64 << 10)]) {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&buf[..n]),
        }
        if !counted && body.len() >= 1 << 20 {
            counted = true;
            started.fetch_add(1, Ordering::SeqCst);
        }
        // A slow reader: about 10 MiB/s.
        std::thread::sleep(Duration::from_millis(6));
    }
    if !counted {
        started.fetch_add(1, Ordering::SeqCst);
    }
    Download { body, expected: size }
}

#[test]
fn shutdown_with_500_ping_pong_clients_and_5_downloads() {
    let limit = raise_fd_limit();
    assert!(limit >= 2 * PINGERS as u64 + 200, "descriptor limit {limit} too low for this test");
    let dir = std::env::temp_dir().join(format!("switchboard-shutdown-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let content = random_bytes(48 << 20, 31);
    std::fs::write(dir.join("big.bin"), &content).unwrap();

    let grace = Duration::from_millis(1500);
    let echo = start(
        Server::builder().workers(2).grace(Duration::from_secs(15)).quiet_period(Duration::from_millis(200)),
        Echo,
    );
    let files = start(
        Server::builder().workers(1).grace(grace).quiet_period(Duration::from_millis(200)),
        FileGet::new(&dir, 4096).unwrap(),
    );
    let (echo_addr, file_addr) = (echo.local_addr(), files.local_addr());

    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicUsize::new(0));
    let pingers: Vec<_> = (0..PINGER_THREADS)
        .map(|t| {
            let (stop, rounds) = (Arc::clone(&stop), Arc::clone(&rounds));
            std::thread::spawn(move || {
                let mut socks: Vec<TcpStream> =
                    (0..PINGERS / PINGER_THREADS).map(|_| connect(echo_addr)).collect();
                let mut replies = 0usize;
                for round in 0..1_000_000usize {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    for (i, s) in socks.iter_mut().enumerate() {
                        let msg = format!("t{t} c{i} r{round}\n");
                        // A ping the server read is always answered, even
                        // once the shutdown has begun.
                        assert_eq!(round_trip(s, msg.as_bytes()), msg.as_bytes());
                        replies += 1;
                    }
                    rounds.fetch_add(1, Ordering::SeqCst);
                }
                // Quiet now: each is drained with a clean EOF, nothing extra.
                for (i, s) in socks.iter_mut().enumerate() {
                    assert_eq!(read_end(s), End::Eof, "thread {t} client {i}");
                }
                replies
            })
        })
        .collect();
    let started = Arc::new(AtomicUsize::new(0));
    let downloads: Vec<_> = (0..DOWNLOADS)
        .map(|_| {
            let started = Arc::clone(&started);
            std::thread::spawn(move || download(file_addr, "big.bin", started))
        })
        .collect();
    wait_until("every pinger has done 3 rounds and every download is under way", || {
        rounds.load(Ordering::SeqCst) >= 3 * PINGER_THREADS && started.load(Ordering::SeqCst) == DOWNLOADS
    });
    assert_eq!(echo.stats().open, PINGERS);

    let (echo_stop, file_stop) = (echo.shutdown_handle(), files.shutdown_handle());
    echo_stop.drain();
    file_stop.drain();
    stop.store(true, Ordering::SeqCst);
    let echo_report = std::thread::spawn(move || echo.wait());
    let file_report = std::thread::spawn(move || files.wait());

    let replies: usize = pingers.into_iter().map(|p| p.join().expect("pinger")).sum();
    let got: Vec<Download> = downloads.into_iter().map(|d| d.join().expect("download")).collect();
    let echo_report = echo_report.join().unwrap();
    let file_report = file_report.join().unwrap();
    eprintln!("echo: {echo_report}; {replies} replies. files: {file_report}");

    assert_eq!(echo_report.drained, PINGERS);
    assert_eq!(echo_report.forced, 0);
    let mut cut = 0;
    for (i, d) in got.iter().enumerate() {
        assert_eq!(d.expected, content.len());
        assert!(d.body[..] == content[..d.body.len()], "download {i}: not a prefix of the file");
        if d.body.len() < d.expected {
            cut += 1;
        }
    }
    assert_eq!(file_report.forced, cut, "every cut download is counted as forced");
    assert_eq!(file_report.drained + file_report.forced, DOWNLOADS);
    assert!(cut > 0, "no download was still running at the grace deadline");
    assert!(file_report.elapsed >= grace, "forced before the grace period: {file_report}");
    std::fs::remove_dir_all(dir).unwrap();
}
