//! `switchboard-server --admin ADDR` and `--stats-every`: the metrics in
//! the Prometheus text format move with traffic, /healthz turns 503 while
//! draining, a flood on the admin port leaves the main port's replies alone.

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::process::Signal;
use switchboard_test_support::child::Spawned;
use switchboard_test_support::http;
use switchboard_test_support::{connect, wait_until, TIMEOUT};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard-server");

/// A running server with its admin endpoint.
struct Running {
    proc: Spawned,
    addr: SocketAddr,
    admin: SocketAddr,
}

fn spawn(args: &[&str]) -> Running {
    let mut cmd = Command::new(BIN);
    cmd.args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"]).args(args).stdin(Stdio::null());
    let mut proc = Spawned::spawn(&mut cmd);
    let addr = proc.listening_addr();
    let line = proc.line_where(TIMEOUT, |l| l.starts_with("admin on "));
    let admin = line.trim().trim_start_matches("admin on http://").trim_end_matches('/').parse().unwrap();
    Running { proc, addr, admin }
}

/// The samples of a /metrics body, checked against the text format's rules
/// on the way: every family has one `# HELP` and one `# TYPE` before its
/// samples, names are valid and `switchboard_`-prefixed, counters end in
/// `_total`, values parse. Keyed by name and labels (`name{worker="0"}`).
fn scrape(body: &str) -> BTreeMap<String, f64> {
    let is_name = |n: &str| {
        let mut c = n.chars();
        c.next().is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
            && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':')
    };
    assert!(body.ends_with('\n'), "the exposition ends with a newline");
    let mut helped = HashSet::new();
    let mut typed = BTreeMap::new();
    let mut samples = BTreeMap::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or_else(|| panic!("HELP without text: {line}"));
            assert!(is_name(name) && !help.is_empty(), "{line}");
            assert!(helped.insert(name.to_owned()), "second HELP for {name}");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(["counter", "gauge"].contains(&kind), "{line}");
            assert!(helped.contains(name), "TYPE before HELP: {line}");
            assert!(typed.insert(name.to_owned(), kind.to_owned()).is_none(), "second TYPE for {name}");
            assert!(name.starts_with("switchboard_"), "{name}");
            assert_eq!(
                kind == "counter",
                name.ends_with("_total"),
                "counters and only they end in _total: {name}"
            );
        } else {
            assert!(!line.starts_with('#') && !line.is_empty(), "stray line {line:?}");
            let (key, value) = line.rsplit_once(' ').unwrap();
            let name = key.split('{').next().unwrap();
            assert!(is_name(name), "{line}");
            assert!(typed.contains_key(name), "a sample before its TYPE: {line}");
            if let Some(labels) = key.strip_prefix(name) {
                if !labels.is_empty() {
                    assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
                    for pair in labels[1..labels.len() - 1].split(',') {
                        let (l, v) = pair.split_once('=').unwrap();
                        assert!(
                            is_name(l) && v.len() >= 2 && v.starts_with('"') && v.ends_with('"'),
                            "{line}"
                        );
                    }
                }
            }
            let v: f64 = value.parse().unwrap_or_else(|e| panic!("{line}: {e}"));
            assert!(samples.insert(key.to_owned(), v).is_none(), "duplicate sample {key}");
        }
    }
    // The same text through a Prometheus parser crate: same samples.
    let lines = body.lines().map(|l| Ok(l.to_owned()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("prometheus-parse reads it");
    assert_eq!(parsed.samples.len(), samples.len());
    for s in &parsed.samples {
        assert!(
            typed.contains_key(&s.metric) || typed.contains_key(s.metric.trim_end_matches("_total")),
            "{}",
            s.metric
        );
    }
    samples
}

fn metrics(admin: SocketAddr) -> BTreeMap<String, f64> {
    let r = http::get(admin, "/metrics");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    scrape(&r.body)
}

/// The sum of a per-worker family (or the one unlabelled sample).
fn total(m: &BTreeMap<String, f64>, name: &str) -> u64 {
    let found: Vec<f64> =
        m.iter().filter(|(k, _)| k.split('{').next() == Some(name)).map(|(_, v)| *v).collect();
    assert!(!found.is_empty(), "no {name} in {m:?}");
    found.iter().sum::<f64>() as u64
}

#[test]
fn metrics_parse_and_move_with_traffic() {
    let mut server = spawn(&["--workers", "2"]);
    let m = metrics(server.admin);
    assert_eq!(total(&m, "switchboard_connections_accepted_total"), 0);
    assert_eq!(total(&m, "switchboard_bytes_in_total"), 0);
    assert_eq!(m["switchboard_workers"], 2.0);
    assert_eq!(m["switchboard_phase{phase=\"running\"}"], 1.0);
    // Per-worker families have one sample per worker.
    assert!(m.contains_key("switchboard_bytes_in_total{worker=\"1\"}"));
    assert!(!m.contains_key("switchboard_bytes_in_total{worker=\"2\"}"));

    let mut clients: Vec<TcpStream> = (0..3).map(|_| connect(server.addr)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        let msg = vec![b'a' + i as u8; 100];
        c.write_all(&msg).unwrap();
        let mut back = vec![0u8; 100];
        c.read_exact(&mut back).unwrap();
        assert_eq!(back, msg);
    }
    let mut m = BTreeMap::new();
    wait_until("the echo traffic counted", || {
        m = metrics(server.admin);
        total(&m, "switchboard_bytes_out_total") == 300
    });
    assert_eq!(total(&m, "switchboard_connections_accepted_total"), 3);
    assert_eq!(total(&m, "switchboard_connections_open"), 3);
    assert_eq!(total(&m, "switchboard_bytes_in_total"), 300);
    let frames = total(&m, "switchboard_frames_total");
    assert!((3..=300).contains(&frames), "raw frames are reads: {frames}");
    assert_eq!(total(&m, "switchboard_frame_errors_total"), 0);
    assert_eq!(total(&m, "switchboard_connections_closed_total"), 0);

    drop(clients);
    wait_until("the closes counted", || {
        m = metrics(server.admin);
        total(&m, "switchboard_connections_open") == 0
    });
    assert_eq!(total(&m, "switchboard_connections_closed_total"), 3);
    assert_eq!(total(&m, "switchboard_connections_accepted_total"), 3);
    // The admin endpoint's own requests are not counted as the main port's.
    assert_eq!(total(&m, "switchboard_bytes_in_total"), 300);

    server.proc.signal(Signal::TERM);
    assert!(server.proc.wait(TIMEOUT).success());
    // The shutdown report is on stdout, after the admin line.
    let out = server.proc.stdout_so_far();
    assert!(out.lines().last().unwrap().starts_with("shutdown complete: 0 drained, 0 forced"), "{out}");
}

#[test]
fn routes_and_bad_requests() {
    let server = spawn(&[]);
    let ok = http::get(server.admin, "/healthz");
    assert_eq!((ok.status, ok.body.as_str()), (200, "ok\n"));
    let head = http::request(server.admin, "HEAD", "/metrics");
    assert_eq!((head.status, head.body.as_str()), (200, ""));
    assert_eq!(http::get(server.admin, "/nope").status, 404);
    let post = http::request(server.admin, "POST", "/metrics");
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    let page = http::get(server.admin, "/");
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(page.body.contains("<svg") && page.body.contains("/stats.json"));
    assert!(!page.body.contains("http://") && !page.body.contains("https://"), "no external assets");
    let json: serde_json::Value = serde_json::from_str(&http::get(server.admin, "/stats.json").body).unwrap();
    assert_eq!(json["phase"], "running");
    assert_eq!(json["handler"], "echo");
    assert_eq!(json["stats"]["accepted"], 0);

    // A request over the size bound: 431, and the connection is closed.
    let mut s = connect(server.admin);
    let mut big = b"GET / HTTP/1.1\r\nX-Fill: ".to_vec();
    big.resize(9000, b'a');
    let _ = s.write_all(&big);
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    assert!(reply.starts_with(b"HTTP/1.1 431 "), "{:?}", String::from_utf8_lossy(&reply));
    // Garbage: 400.
    let mut s = connect(server.admin);
    s.write_all(b"\x01\x02 nonsense\r\n\r\n").unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).unwrap();
    assert!(reply.starts_with(b"HTTP/1.1 400 "), "{:?}", String::from_utf8_lossy(&reply));
}

#[test]
fn an_incomplete_request_times_out_with_408() {
    let server = spawn(&[]);
    let mut s = connect(server.admin);
    let started = Instant::now();
    s.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).unwrap();
    let took = started.elapsed();
    assert!(reply.starts_with(b"HTTP/1.1 408 "), "{:?}", String::from_utf8_lossy(&reply));
    // REQUEST_TIMEOUT is 2s.
    assert!(took >= Duration::from_millis(1900), "{took:?}");
}

#[test]
fn healthz_turns_503_while_draining() {
    // A grace far longer than the test: the server stays in the drain as
    // long as a connection has replies it does not read.
    let mut server = spawn(&["--grace", "10m"]);
    let mut stuck = connect(server.addr);
    stuck.set_nonblocking(true).unwrap();
    let chunk = vec![b'x'; 64 << 10];
    let mut written = 0usize;
    let deadline = Instant::now() + TIMEOUT;
    // Write until the server stops reading: its replies back up unread.
    let mut blocked_since: Option<Instant> = None;
    while Instant::now() < deadline {
        match stuck.write(&chunk) {
            Ok(n) => {
                written += n;
                blocked_since = None;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let since = *blocked_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_millis(300) {
                    break;
                }
                std::thread::yield_now();
            }
            Err(e) => panic!("write: {e}"),
        }
    }
    assert!(written > 256 << 10, "wrote {written}");
    assert_eq!(http::get(server.admin, "/healthz").status, 200);
    server.proc.signal(Signal::TERM);
    let mut last = None;
    wait_until("/healthz fails", || {
        let r = http::get(server.admin, "/healthz");
        let failing = r.status != 200;
        last = Some(r);
        failing
    });
    let r = last.unwrap();
    assert_eq!((r.status, r.body.as_str()), (503, "draining\n"));
    let m = metrics(server.admin);
    assert_eq!(m["switchboard_phase{phase=\"draining\"}"], 1.0);
    assert_eq!(m["switchboard_phase{phase=\"running\"}"], 0.0);
    assert_eq!(m["switchboard_connections_open"], 1.0);
    // The second signal ends it: the stuck connection is forced.
    server.proc.signal(Signal::TERM);
    assert!(server.proc.wait(TIMEOUT).success());
    let out = server.proc.stdout_so_far();
    assert!(out.contains("shutdown complete: 0 drained, 1 forced"), "{out}");
}

/// Round-trip times of `n` one-byte echoes on `s`, sorted.
fn round_trips(s: &mut TcpStream, n: usize) -> Vec<Duration> {
    let mut times: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            s.write_all(b"p").unwrap();
            let mut b = [0u8; 1];
            s.read_exact(&mut b).unwrap();
            t.elapsed()
        })
        .collect();
    times.sort();
    times
}

#[test]
fn an_admin_flood_does_not_delay_the_main_port() {
    let server = spawn(&["--workers", "1"]);
    let mut echo = connect(server.addr);
    echo.set_nodelay(true).unwrap();
    let baseline = round_trips(&mut echo, 300);

    // The flood: 64 connections held open (the admin limit; all but 8, the
    // share of one address, are closed with 429 to make room) and two
    // clients asking for /metrics in a loop.
    let held: Vec<TcpStream> = (0..64).filter_map(|_| TcpStream::connect(server.admin).ok()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let (served, busy) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let flooders: Vec<_> = (0..2)
        .map(|_| {
            let (stop, served, busy, admin) = (stop.clone(), served.clone(), busy.clone(), server.admin);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match http::try_request(admin, "GET", "/metrics") {
                        Ok(r) if r.status == 200 => served.fetch_add(1, Ordering::Relaxed),
                        Ok(r) if r.status == 429 => busy.fetch_add(1, Ordering::Relaxed),
                        Ok(r) => panic!("unexpected {}", r.status),
                        Err(_) => busy.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    wait_until("the flood is under way", || {
        served.load(Ordering::Relaxed) + busy.load(Ordering::Relaxed) >= 20
    });
    let flooded = round_trips(&mut echo, 300);
    let requests = served.load(Ordering::Relaxed) + busy.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    for f in flooders {
        f.join().unwrap();
    }
    drop(held);

    let median = |t: &[Duration]| t[t.len() / 2];
    let p99 = |t: &[Duration]| t[t.len() * 99 / 100];
    eprintln!(
        "baseline median {:?} p99 {:?}; under a flood of {requests} admin requests: median {:?} p99 {:?}",
        median(&baseline),
        p99(&baseline),
        median(&flooded),
        p99(&flooded)
    );
    assert!(requests >= 20);
    // The flood competes for the CPU (two cores, shared), but never for the
    // main port's worker or connections: replies stay within a small
    // multiple of the baseline.
    let bound_median = median(&baseline) * 10 + Duration::from_millis(5);
    let bound_p99 = p99(&baseline) * 10 + Duration::from_millis(50);
    assert!(median(&flooded) <= bound_median, "median {:?} > {bound_median:?}", median(&flooded));
    assert!(p99(&flooded) <= bound_p99, "p99 {:?} > {bound_p99:?}", p99(&flooded));
}

#[test]
fn stats_every_prints_a_line_per_period() {
    let mut cmd = Command::new(BIN);
    cmd.args(["--listen", "127.0.0.1:0", "--stats-every", "200ms"]).stdin(Stdio::null());
    let mut proc = Spawned::spawn(&mut cmd);
    let addr = proc.listening_addr();
    let first = proc.line_where(TIMEOUT, |l| l.starts_with("stats: "));
    assert!(first.starts_with("stats: open 0 accepted 0 (+0/s)"), "{first}");
    let mut s = connect(addr);
    s.write_all(b"hello").unwrap();
    let mut b = [0u8; 5];
    s.read_exact(&mut b).unwrap();
    let line = proc.line_where(TIMEOUT, |l| l.starts_with("stats: open 1 accepted 1 "));
    assert!(line.contains(" closed 0 "), "{line}");
    drop(s);
    proc.line_where(TIMEOUT, |l| l.starts_with("stats: open 0 accepted 1 ") && l.contains(" closed 1 "));
    proc.signal(Signal::TERM);
    assert!(proc.wait(TIMEOUT).success());
    assert!(proc.stdout_so_far().lines().last().unwrap().starts_with("shutdown complete:"));
}

#[test]
fn file_and_chat_handlers_add_their_own_figures() {
    let dir = switchboard_test_support::temp_dir("admin-file");
    std::fs::write(dir.path().join("f.bin"), vec![7u8; 1000]).unwrap();
    let root = dir.path().to_str().unwrap().to_owned();
    let server = spawn(&["--handler", "file", "--root", &root]);
    let m = metrics(server.admin);
    assert_eq!(m["switchboard_file_bytes_sent_total"], 0.0);
    let mut c = connect(server.addr);
    c.write_all(b"get f.bin\n").unwrap();
    let mut m = BTreeMap::new();
    wait_until("the first get counted", || {
        m = metrics(server.admin);
        m["switchboard_file_bytes_sent_total"] == 1000.0
    });
    assert_eq!(m["switchboard_file_md5_computed_total"], 1.0);
    assert_eq!(m["switchboard_file_md5_cache_hits_total"], 0.0);
    c.write_all(b"get f.bin\n").unwrap();
    wait_until("the second get counted", || {
        m = metrics(server.admin);
        m["switchboard_file_bytes_sent_total"] == 2000.0
    });
    assert_eq!(m["switchboard_file_md5_computed_total"], 1.0);
    assert_eq!(m["switchboard_file_md5_cache_hits_total"], 1.0);

    let chat = spawn(&["--handler", "chat"]);
    assert_eq!(metrics(chat.admin)["switchboard_chat_members"], 0.0);
    let a = connect(chat.addr);
    let b = connect(chat.addr);
    wait_until("two members", || metrics(chat.admin)["switchboard_chat_members"] == 2.0);
    drop(a);
    wait_until("one member", || metrics(chat.admin)["switchboard_chat_members"] == 1.0);
    drop(b);
}

/// Connects to `to` from `from`, another loopback address: a client the
/// server counts apart from 127.0.0.1.
fn connect_from(from: std::net::IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    s.bind(&SocketAddr::new(from, 0).into())?;
    s.connect_timeout(&to.into(), TIMEOUT)?;
    Ok(s.into())
}

#[test]
fn healthz_stays_200_while_40_sockets_hold_the_admin_port() {
    use switchboard_bins::admin::MAX_WAITING;

    let server = spawn(&[]);
    let admin = server.admin;
    let stop = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicU64::new(0));
    // 40 sockets from five other addresses (more than the waiting places,
    // each address at its share), each opened again as soon as the server
    // closes it; none ever sends a byte.
    let holders: Vec<_> = (0..40u8)
        .map(|i| {
            let (stop, opened) = (stop.clone(), opened.clone());
            let from = std::net::IpAddr::from([127, 0, 0, 2 + i % 5]);
            std::thread::spawn(move || {
                let mut buf = [0u8; 512];
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut s) = connect_from(from, admin) else { continue };
                    opened.fetch_add(1, Ordering::Relaxed);
                    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
                    // Held until the server closes it (or the test ends).
                    while !stop.load(Ordering::Relaxed) {
                        match s.read(&mut buf) {
                            Ok(0) => break,
                            Ok(_) => {}
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                            Err(_) => break,
                        }
                    }
                }
            })
        })
        .collect();
    // Every waiting place taken, and the holders pushing each other out.
    let mut m = BTreeMap::new();
    wait_until("the holders fill the waiting places", || {
        m = metrics(admin);
        m["switchboard_admin_waiting"] == MAX_WAITING as f64 && m["switchboard_admin_evicted_total"] >= 40.0
    });
    // A load balancer's probes, each answered 200 within a second, while
    // the holders push each other out 40 more times.
    let evicted_before = m["switchboard_admin_evicted_total"];
    let mut probes = 0;
    wait_until("the holders keep pushing each other out", || {
        for _ in 0..5 {
            let asked = Instant::now();
            let r = http::get(admin, "/healthz");
            let took = asked.elapsed();
            assert_eq!((r.status, r.body.as_str()), (200, "ok\n"), "probe {probes}");
            assert!(took < Duration::from_secs(1), "probe {probes} took {took:?}");
            probes += 1;
        }
        m = metrics(admin);
        m["switchboard_admin_evicted_total"] >= evicted_before + 40.0
    });
    stop.store(true, Ordering::Relaxed);
    for h in holders {
        h.join().unwrap();
    }
    assert!(opened.load(Ordering::Relaxed) >= 80, "{} opened", opened.load(Ordering::Relaxed));
    // The log says so (summed up, at most once a second).
    server.proc.wait_stderr("waiting connection(s) closed with 429 to make room", TIMEOUT);
}

/// A PROXY v1 header naming `client`, as a load balancer sends it.
fn proxy_v1(client: &str) -> Vec<u8> {
    format!("PROXY TCP4 {client} 127.0.0.1 40000 9100\r\n").into_bytes()
}

/// The admin endpoint's `/metrics` behind `--admin-proxy-protocol`.
fn proxied_metrics(admin: SocketAddr) -> BTreeMap<String, f64> {
    let r = http::try_request_after(admin, &proxy_v1("192.0.2.250"), "GET", "/metrics").unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    scrape(&r.body)
}

#[test]
fn behind_send_proxy_health_checks_get_200_and_the_header_names_the_client_counted() {
    use switchboard_bins::admin::PER_ADDRESS;

    let server = spawn(&["--admin-proxy-protocol"]);
    let admin = server.admin;
    // A health check with a v1 header, and with a v2 header (TCP over
    // IPv4 from 198.51.100.9:40000).
    let r = http::try_request_after(admin, &proxy_v1("203.0.113.7"), "GET", "/healthz").unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    v2.extend_from_slice(&[198, 51, 100, 9, 127, 0, 0, 1]);
    v2.extend_from_slice(&40000u16.to_be_bytes());
    v2.extend_from_slice(&9100u16.to_be_bytes());
    let r = http::try_request_after(admin, &v2, "GET", "/healthz").unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));
    // Without a header: closed, no answer.
    let mut bare = connect(admin);
    bare.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").unwrap();
    let mut reply = Vec::new();
    let _ = bare.read_to_end(&mut reply);
    assert!(reply.is_empty(), "{:?}", String::from_utf8_lossy(&reply));

    // Waiting connections counted by the address their header names (all
    // come from 127.0.0.1): a full share from 198.51.100.1 ...
    let silent = |client: &str| {
        let mut s = connect(admin);
        s.write_all(&proxy_v1(client)).unwrap();
        s
    };
    let mut first: Vec<TcpStream> = (0..PER_ADDRESS).map(|_| silent("198.51.100.1")).collect();
    wait_until("the first share waits", || {
        proxied_metrics(admin)["switchboard_admin_waiting"] == PER_ADDRESS as f64
    });
    // ... a full share from others, which takes no place of the first's ...
    let mut others: Vec<TcpStream> =
        (0..PER_ADDRESS).map(|i| silent(&format!("198.51.100.{}", 10 + i))).collect();
    wait_until("both shares wait", || {
        proxied_metrics(admin)["switchboard_admin_waiting"] == (2 * PER_ADDRESS) as f64
    });
    assert_eq!(proxied_metrics(admin)["switchboard_admin_evicted_total"], 0.0);
    // ... and one more from 198.51.100.1: its oldest is closed with 429.
    let _newcomer = silent("198.51.100.1");
    let mut reply = Vec::new();
    first[0].read_to_end(&mut reply).unwrap();
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 429 Too Many Requests\r\n"), "{reply}");
    assert!(
        reply.contains("\r\nRetry-After: 1\r\n")
            && reply.ends_with("admin endpoint busy: closed to make room\n"),
        "{reply}"
    );
    assert_eq!(proxied_metrics(admin)["switchboard_admin_evicted_total"], 1.0);
    // The others still wait, and are answered when they ask.
    for s in [&mut first[1], &mut others[0]] {
        s.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").unwrap();
        let mut reply = Vec::new();
        s.read_to_end(&mut reply).unwrap();
        assert!(reply.starts_with(b"HTTP/1.1 200 OK\r\n"), "{:?}", String::from_utf8_lossy(&reply));
    }
}

#[test]
fn admin_proxy_protocol_needs_admin() {
    let out = switchboard_test_support::child::run(Command::new(BIN).arg("--admin-proxy-protocol"), TIMEOUT);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--admin <ADDR>") && err.contains("Usage:"), "{err}");
}
