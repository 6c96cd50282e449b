//! The typed lifecycle: phases, drain and force, one owner of the threads
//! on every start failure, durations that cannot overflow, the stats handle
//! while `wait` runs, the connection budget, and the services beside the
//! server, joined before its report.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use switchboard::{
    spawn_service, Conn, Flow, Handler, Phase, Server, ServerBuilder, Service, ShutdownHandle, StartError,
    StartProbe,
};
use switchboard_handlers::Echo;
use switchboard_test_support::*;

fn start_failure(builder: ServerBuilder) -> StartError {
    init_logs();
    match builder.start("127.0.0.1:0", Echo) {
        Ok(server) => panic!("start succeeded: {server:?}"),
        Err(e) => e,
    }
}

#[test]
fn the_probe_counts_every_server_thread() {
    let probe = StartProbe::default();
    let live = probe.live_threads.clone();
    let server = start(Server::builder().workers(3).probe(probe), Echo);
    // Three workers and the acceptor.
    wait_until("four threads run", || live.load(Ordering::Acquire) == 4);
    server.shutdown();
    assert_eq!(live.load(Ordering::Acquire), 0);
}

#[test]
fn a_worker_spawn_failure_joins_the_workers_already_started() {
    let probe = StartProbe { fail_worker: Some(2), ..StartProbe::default() };
    let live = probe.live_threads.clone();
    let e = start_failure(Server::builder().workers(4).probe(probe));
    assert!(matches!(e, StartError::Io(_)), "{e:?}");
    let text = e.to_string();
    assert!(text.contains("switchboard-worker-2") && text.contains("injected failure"), "{text}");
    // Workers 0 and 1 had started; start returned only after joining them.
    assert_eq!(live.load(Ordering::Acquire), 0);
}

#[test]
fn an_acceptor_spawn_failure_joins_every_worker() {
    let probe = StartProbe { fail_acceptor: true, ..StartProbe::default() };
    let live = probe.live_threads.clone();
    let e = start_failure(Server::builder().workers(3).probe(probe));
    assert!(e.to_string().contains("switchboard-acceptor"), "{e}");
    assert_eq!(live.load(Ordering::Acquire), 0);
}

/// A builder method setting one duration.
type Setter = fn(ServerBuilder, Duration) -> ServerBuilder;

#[test]
fn durations_that_overflow_an_instant_are_refused_at_start() {
    let huge = Duration::from_secs(u64::MAX);
    let settings: [(&str, Setter); 5] = [
        ("grace", ServerBuilder::grace),
        ("idle timeout", ServerBuilder::idle_timeout),
        ("frame timeout", ServerBuilder::frame_timeout),
        ("quiet period", ServerBuilder::quiet_period),
        ("linger", ServerBuilder::linger),
    ];
    for (name, set) in settings {
        for d in [huge, Duration::MAX] {
            let e = start_failure(set(Server::builder().workers(1), d));
            let StartError::Config(msg) = &e else { panic!("{name}: {e:?}") };
            assert!(msg.starts_with(&format!("{name} must be at most 100 years")), "{name}: {msg}");
        }
    }
    // A long but representable grace is fine.
    let server = start(Server::builder().workers(1).grace(Duration::from_secs(10 * 365 * 86_400)), Echo);
    server.shutdown_handle().force();
    server.wait();
}

#[test]
fn phases_move_forward_from_drain_to_force_to_stopped() {
    let server = start(
        Server::builder().workers(2).grace(Duration::from_secs(600)).quiet_period(Duration::from_secs(600)),
        Echo,
    );
    let handle = server.shutdown_handle();
    assert_eq!(handle.phase(), Phase::Running);
    let mut s = connect(server.local_addr());
    assert_eq!(round_trip(&mut s, b"x"), b"x");
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || tx.send(server.wait()).unwrap());
    handle.drain();
    assert_eq!(handle.phase(), Phase::Draining);
    handle.drain(); // a second drain is not a force
    assert_eq!(handle.phase(), Phase::Draining);
    assert_eq!(round_trip(&mut s, b"y"), b"y");
    assert!(rx.try_recv().is_err());
    handle.force();
    let report = rx.recv_timeout(TIMEOUT).expect("force ends the server");
    waiter.join().unwrap();
    assert_eq!(report.forced, 1);
    assert_eq!(handle.phase(), Phase::Stopped);
    handle.drain();
    assert_eq!(handle.phase(), Phase::Stopped);
}

#[test]
fn force_on_a_running_server_closes_everything_at_once() {
    let server = start(Server::builder().workers(1).grace(Duration::from_secs(600)), Echo);
    let handle = server.shutdown_handle();
    let mut s = connect(server.local_addr());
    assert_eq!(round_trip(&mut s, b"x"), b"x");
    handle.force();
    assert_eq!(handle.phase(), Phase::Forcing);
    let report = server.wait();
    assert_eq!((report.drained, report.forced), (0, 1));
    assert!(report.elapsed < Duration::from_secs(60));
    assert!(matches!(read_end(&mut s), End::Eof | End::Reset));
}

#[test]
fn stats_are_readable_while_wait_runs() {
    let server = start(Server::builder().workers(1).quiet_period(Duration::from_millis(50)), Echo);
    let addr = server.local_addr();
    let stats = server.stats_handle();
    let handle = server.shutdown_handle();
    let waiter = std::thread::spawn(move || server.wait());
    let mut s = connect(addr);
    assert_eq!(round_trip(&mut s, b"hello"), b"hello");
    // The reply can reach the client before the worker counts it: wait for
    // the counts themselves (a stats handle that did not move would fail).
    wait_until("the stats show the connection and its bytes", || {
        let now = stats.snapshot();
        (now.open, now.accepted, now.bytes_in, now.bytes_out) == (1, 1, 5, 5)
    });
    drop(s);
    wait_until("the stats show the close", || stats.snapshot().closed == 1);
    handle.drain();
    waiter.join().unwrap();
    // The handle outlives the server.
    assert_eq!(stats.snapshot().open, 0);
}

/// Echo that answers in its own framing when the server cannot take a client.
struct Framed;

impl switchboard::Handler for Framed {
    type Session = ();
    fn open(&self, _: &mut Conn<'_>) {}
    fn frame(&self, _: &mut (), data: &[u8], conn: &mut Conn<'_>) -> Flow {
        conn.send(data);
        Flow::Continue
    }
    fn busy_reply(&self) -> Vec<u8> {
        b"\x00\x00\x00\x04BUSY".to_vec()
    }
}

#[test]
fn the_handlers_busy_reply_is_sent_at_the_limit() {
    let server = start(Server::builder().workers(1).max_connections(1), Framed);
    let mut first = connect(server.local_addr());
    assert_eq!(round_trip(&mut first, b"x"), b"x");
    let mut second = connect(server.local_addr());
    let mut got = Vec::new();
    second.read_to_end(&mut got).expect("the busy reply, then EOF");
    assert_eq!(got, b"\x00\x00\x00\x04BUSY");
    assert_eq!(server.stats().rejected, 1);
    // The first is still served.
    first.write_all(b"y").unwrap();
    assert_eq!(read_exact(&mut first, 1), b"y");
}

#[test]
fn the_default_connection_limit_leaves_a_descriptor_reserve() {
    let server = start(Server::builder().workers(2), Echo);
    // Start raised the soft limit to the hard one.
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    assert_eq!(limit.current, limit.maximum);
    let nofile = limit.current.expect("a finite descriptor limit") as usize;
    let reserve = 64.max(nofile / 8);
    // What ServerBuilder::max_connections documents: the limit minus the
    // descriptors open at start, the server's own (4 + 2 × 2) and the
    // reserve. This process held at least its 3 standard streams.
    let own = 4 + 2 * 2;
    let ceiling = nofile - 3 - own - reserve;
    let default = server.max_connections();
    assert!(default <= ceiling, "{default} > {ceiling}");
    let open_at_start = ceiling + 3 - default;
    assert!(open_at_start < 1000, "{open_at_start} descriptors counted as open at start");
    // Asking for more than the descriptors allow is clamped; less is kept.
    let clamped = start(Server::builder().workers(2).max_connections(nofile * 4), Echo);
    assert!(clamped.max_connections() <= ceiling, "{} > {ceiling}", clamped.max_connections());
    let small = start(Server::builder().workers(2).max_connections(10), Echo);
    assert_eq!(small.max_connections(), 10);
}

/// A service that writes down what the server told it, and the phase then.
struct Recorder {
    name: &'static str,
    log: Arc<Mutex<Vec<String>>>,
    phase: ShutdownHandle,
}

impl Recorder {
    fn note(&self, what: &str) {
        self.log.lock().unwrap().push(format!("{} {what} ({})", self.name, self.phase.phase()));
    }
}

impl Service for Recorder {
    fn name(&self) -> &str {
        self.name
    }

    fn draining(&mut self) {
        self.note("draining");
    }

    fn stop(&mut self) {
        self.note("stop");
    }

    fn join(self: Box<Self>) {
        self.note("join");
    }
}

/// Echo that writes down when the server tells it to stop its threads.
struct StopNoted(Arc<Mutex<Vec<String>>>);

impl Handler for StopNoted {
    type Session = ();

    fn open(&self, _conn: &mut Conn<'_>) {}

    fn frame(&self, _: &mut (), frame: &[u8], conn: &mut Conn<'_>) -> Flow {
        conn.send(frame);
        Flow::Continue
    }

    fn stop(&self) {
        self.0.lock().unwrap().push("handler stop".into());
    }
}

/// Two recorders and a thread beside a server with an open connection.
fn server_with_services() -> (Server, Arc<Mutex<Vec<String>>>, Arc<AtomicBool>, TcpStream) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut server = start(
        Server::builder().workers(2).quiet_period(Duration::from_millis(50)),
        StopNoted(Arc::clone(&log)),
    );
    for name in ["first", "second"] {
        server.beside(Recorder { name, log: Arc::clone(&log), phase: server.shutdown_handle() });
    }
    let ended = Arc::new(AtomicBool::new(false));
    let thread_ended = Arc::clone(&ended);
    let thread = spawn_service("beside-test", move |stop| {
        // Never out by itself: only a stop ends it.
        while !stop.wait(Duration::from_secs(3600)) {}
        thread_ended.store(true, Ordering::Release);
    });
    server.beside(thread.unwrap());
    let mut client = connect(server.local_addr());
    client.write_all(b"ping").unwrap();
    let mut got = [0u8; 4];
    client.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");
    (server, log, ended, client)
}

#[test]
fn services_are_told_of_the_drain_stopped_after_the_workers_and_joined_before_wait_returns() {
    let (server, log, ended, _client) = server_with_services();
    assert_eq!(log.lock().unwrap().len(), 0, "told something while running");
    server.shutdown_handle().drain();
    let report = server.wait();
    assert_eq!(report.drained, 1);
    assert!(ended.load(Ordering::Acquire), "the thread beside the server was not joined");
    assert_eq!(
        *log.lock().unwrap(),
        [
            "first draining (draining)",
            "second draining (draining)",
            // The workers are joined: the server has stopped.
            "first stop (stopped)",
            "second stop (stopped)",
            "first join (stopped)",
            "second join (stopped)",
            // The handler's own threads end last: the services may use it.
            "handler stop",
        ]
    );
}

#[test]
fn dropping_a_server_forces_it_and_joins_its_services_too() {
    let (server, log, ended, mut client) = server_with_services();
    drop(server);
    assert!(ended.load(Ordering::Acquire), "the thread beside the server was not joined");
    assert_eq!(
        *log.lock().unwrap(),
        [
            "first draining (forcing)",
            "second draining (forcing)",
            "first stop (stopped)",
            "second stop (stopped)",
            "first join (stopped)",
            "second join (stopped)",
            "handler stop",
        ]
    );
    // Forced: the connection is closed.
    let mut rest = Vec::new();
    assert!(matches!(client.read_to_end(&mut rest), Ok(0) | Err(_)), "{rest:?}");
}
