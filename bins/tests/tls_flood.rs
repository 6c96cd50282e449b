//! A TLS handshake flood against `switchboard-server --tls-cert --tls-key`
//! must not stall the connections already established: 160 client threads
//! loop connect + full handshake (no resumption) + close while one
//! established TLS connection measures its echo round trips. Its median
//! must stay under 20 ms, and the flood must go on being served meanwhile
//! (handshakes keep completing, none fails, the server's metrics count every
//! one and refuse none).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustls::{ClientConfig, ClientConnection, StreamOwned};
use switchboard_bins::tls::{client_config, server_name};
use switchboard_test_support::pki::TestPki;
use switchboard_test_support::{http, temp_dir, wait_until, TIMEOUT};

const SERVER: &str = env!("CARGO_BIN_EXE_switchboard-server");
/// Client threads looping full handshakes.
const FLOOD_THREADS: usize = 160;
/// Round trips the established connection measures at least.
const ROUND_TRIPS: usize = 400;
/// What the median round trip must stay under.
const P50_LIMIT: Duration = Duration::from_millis(20);
/// Handshakes that must complete while the round trips are measured (two
/// per flood thread): the flood is live throughout, and the server still
/// serves it.
const HANDSHAKES_MEANWHILE: u64 = 2 * FLOOD_THREADS as u64;

static ONE_FLOOD: Mutex<()> = Mutex::new(());

/// The flood's threads and what they counted.
struct Flood {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    errors: Arc<Mutex<Vec<String>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Flood {
    fn start(addr: SocketAddr, config: Arc<ClientConfig>) -> Flood {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..FLOOD_THREADS)
            .map(|_| {
                let (stop, done, errors, config) =
                    (Arc::clone(&stop), Arc::clone(&done), Arc::clone(&errors), Arc::clone(&config));
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match handshake(addr, &config) {
                            Ok(_) => done.fetch_add(1, Ordering::Relaxed),
                            Err(e) => {
                                errors.lock().unwrap().push(e);
                                return;
                            }
                        };
                    }
                })
            })
            .collect();
        Flood { stop, done, errors, threads }
    }

    fn stop(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("a flood thread panicked");
        }
        Arc::try_unwrap(self.errors).unwrap().into_inner().unwrap()
    }
}

/// Connects and completes a full handshake (the client's Finished sent).
fn handshake(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
) -> Result<StreamOwned<ClientConnection, TcpStream>, String> {
    let mut sock = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    sock.set_read_timeout(Some(TIMEOUT)).unwrap();
    sock.set_write_timeout(Some(TIMEOUT)).unwrap();
    let mut conn = ClientConnection::new(Arc::clone(config), server_name("127.0.0.1:0").unwrap()).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).map_err(|e| format!("handshake: {e}"))?;
    }
    Ok(StreamOwned::new(conn, sock))
}

fn round_trips_hold_under_a_handshake_flood(pki: &TestPki, kind: &str) {
    // One flood at a time: the two would measure each other.
    let _alone = ONE_FLOOD.lock().unwrap_or_else(|e| e.into_inner());
    let mut server = pki.spawn_server(SERVER, &["--handler", "echo", "--admin", "127.0.0.1:0"]);
    let addr = server.listening_addr();
    let line = server.line_where(TIMEOUT, |l| l.starts_with("admin on "));
    let admin: SocketAddr =
        line.trim().trim_start_matches("admin on http://").trim_end_matches('/').parse().unwrap();
    let mut config = (*client_config(Some(&pki.ca)).unwrap()).clone();
    // Every flood connection pays the server's full handshake.
    config.resumption = rustls::client::Resumption::disabled();
    let config = Arc::new(config);

    let mut established = handshake(addr, &config).expect("the measured connection");
    let flood = Flood::start(addr, Arc::clone(&config));
    wait_until("the flood is under way", || flood.done.load(Ordering::Relaxed) >= 2 * FLOOD_THREADS as u64);

    // Round trips until both enough of them and enough handshakes.
    let before = flood.done.load(Ordering::Relaxed);
    let meanwhile = || flood.done.load(Ordering::Relaxed) - before;
    let started = Instant::now();
    let mut times = Vec::new();
    let mut echo = [0u8; 32];
    while times.len() < ROUND_TRIPS || meanwhile() < HANDSHAKES_MEANWHILE {
        let i = times.len();
        assert!(
            started.elapsed() < TIMEOUT,
            "{kind}: {i} round trips and {} handshakes in {TIMEOUT:?}",
            meanwhile()
        );
        let msg = [b'a' + (i % 26) as u8; 32];
        let t = Instant::now();
        established.write_all(&msg).unwrap();
        established.read_exact(&mut echo).unwrap();
        times.push(t.elapsed());
        assert_eq!(echo, msg, "round trip {i}");
    }
    let elapsed = started.elapsed();
    let meanwhile = meanwhile();
    let done = Arc::clone(&flood.done);
    let errors = flood.stop();
    let flood_done = done.load(Ordering::Relaxed);
    times.sort();
    let (p50, p90, max) = (times[times.len() / 2], times[times.len() * 9 / 10], times[times.len() - 1]);
    let report = format!(
        "{kind}: {} round trips, p50 {p50:?} p90 {p90:?} max {max:?}; {meanwhile} handshakes in {elapsed:?} \
         ({:.0}/s)",
        times.len(),
        meanwhile as f64 / elapsed.as_secs_f64()
    );
    eprintln!("{report}");
    assert!(errors.is_empty(), "{report}; flood errors: {errors:?}");
    assert!(p50 < P50_LIMIT, "{report}: the established connection stalled");
    // The server counted every handshake (the flood's and the measured
    // connection's) and refused none.
    let done = flood_done + 1;
    let mut last = (0, 0);
    wait_until("the server counted every handshake", || {
        last = (
            metric(admin, "switchboard_tls_handshakes_total"),
            metric(admin, "switchboard_tls_handshakes_refused_total"),
        );
        last.0 >= done
    });
    assert_eq!(last, (done, 0), "{report}: (handshakes, refused) counted by the server");
}

/// The value of an unlabelled sample of the server's `/metrics`.
fn metric(admin: SocketAddr, name: &str) -> u64 {
    let r = http::get(admin, "/metrics");
    assert_eq!(r.status, 200, "{}", r.body);
    let sample = r.body.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' '));
    sample.unwrap_or_else(|| panic!("no {name} in {}", r.body)).trim().parse().unwrap()
}

#[test]
fn rsa_handshake_flood_leaves_established_round_trips_fast() {
    let dir = temp_dir("tls-flood-rsa");
    round_trips_hold_under_a_handshake_flood(&TestPki::create_rsa(dir.path()), "RSA-2048");
}

#[test]
fn ecdsa_handshake_flood_leaves_established_round_trips_fast() {
    let dir = temp_dir("tls-flood-ecdsa");
    round_trips_hold_under_a_handshake_flood(&TestPki::create(dir.path()), "ECDSA P-256");
}
