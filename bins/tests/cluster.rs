//! One chat across several `switchboard-server` processes sharing a real
//! `redis-server` of the test's own (PROTOCOLS.md, "Chat cluster").

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use switchboard_handlers::chat::cookie_in;
use switchboard_test_support::redis::TestRedis;
use switchboard_test_support::{ChatNode, TIMEOUT};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard-server");

fn node(redis: &TestRedis, lease: &str) -> ChatNode {
    ChatNode::start(Path::new(BIN), &["--redis", &redis.url(), "--redis-lease", lease])
}

#[test]
fn two_servers_share_lines_msgs_who_nicks_joins_and_leaves() {
    let redis = TestRedis::start();
    let a = node(&redis, "10s");
    let b = node(&redis, "10s");
    let (mut alice, ga) = a.join();
    let (mut bob, gb) = b.join();
    // Servers are numbered in the order they joined Redis.
    assert_eq!((ga.as_str(), gb.as_str()), ("guest-1-1", "guest-2-1"));
    alice.until(&format!("* {gb} joined"));

    alice.send("/nick alice");
    alice.expect_answer("* you are now alice");
    bob.until(&format!("* {ga} is now alice"));
    bob.send("/nick bob");
    bob.expect_answer("* you are now bob");
    alice.until(&format!("* {gb} is now bob"));

    // A nick held on A is taken on B, look-alikes included.
    bob.send("/nick ALICE");
    bob.expect_answer("! nick taken");
    bob.send("/nick \u{430}lice");
    bob.expect_answer("! nick taken");

    // Lines cross in order per sender, cleaned of control characters.
    for i in 0..50 {
        alice.send(&format!("line {i}"));
    }
    alice.send("bell\u{7}esc\u{1b}[2J");
    for i in 0..50 {
        bob.expect(&format!("<alice> line {i}"));
    }
    bob.expect("<alice> bell\u{fffd}esc\u{fffd}[2J");

    bob.send("/msg alice psst");
    alice.expect("*bob* psst");
    bob.send("/msg nobody hi");
    bob.expect_answer("! no such user nobody");
    bob.until_who("alice, bob");
    alice.until_who("alice, bob");

    // A third member on A; bob leaves: A hears it.
    let (mut carol, gc) = a.join();
    bob.until(&format!("* {gc} joined"));
    bob.send("/quit");
    bob.expect_answer("* bye");
    alice.until("* bob left");
    carol.until("* bob left");
    alice.until_who(&format!("alice, {gc}"));
    // The nick is free again across servers.
    let (mut dave, _) = b.join();
    dave.send("/nick bob");
    dave.expect_answer("* you are now bob");
    // Another form of one's own nick is decided locally, and announced everywhere.
    alice.send("/nick Alice");
    alice.until("* you are now Alice");
    dave.until("* alice is now Alice");
    dave.until_who(&format!("Alice, bob, {gc}"));
}

/// The datagrams from `server` to `s` until one is `want`, skipping the
/// room's lines a proven member hears meanwhile (at most 100 datagrams).
fn udp_until(s: &UdpSocket, server: SocketAddr, want: &str) {
    let mut seen = Vec::new();
    for _ in 0..100 {
        let mut buf = [0u8; 2048];
        let (n, from) =
            s.recv_from(&mut buf).unwrap_or_else(|e| panic!("waiting for {want:?}: {e}; saw {seen:?}"));
        assert_eq!(from, server);
        let got = String::from_utf8_lossy(&buf[..n]).into_owned();
        if got == want {
            return;
        }
        seen.push(got);
    }
    panic!("no {want:?} in 100 datagrams: {seen:?}");
}

#[test]
fn a_udp_member_of_a_clustered_server_is_answered_from_this_server() {
    let redis = TestRedis::start();
    let mut a = ChatNode::start(Path::new(BIN), &["--redis", &redis.url(), "--redis-lease", "10s", "--udp"]);
    let line = a.proc().next_line(TIMEOUT).expect("a second line");
    let udp: SocketAddr =
        line.strip_prefix("listening on udp ").expect("listening on udp").trim().parse().unwrap();
    let b = node(&redis, "10s");
    let (mut alice, ga) = a.join();
    let (mut bob, gb) = b.join();
    alice.until(&format!("* {gb} joined"));
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.send_to(b"", udp).unwrap();
    let mut buf = [0u8; 2048];
    let (n, _) = s.recv_from(&mut buf).unwrap();
    let welcome = String::from_utf8_lossy(&buf[..n]).into_owned();
    let cookie = cookie_in(welcome.as_bytes()).unwrap_or_else(|| panic!("no cookie in {welcome:?}"));
    assert!(welcome.starts_with("* welcome guest-1-2\n"), "{welcome:?}");
    s.send_to(format!("/cookie {cookie}").as_bytes(), udp).unwrap();
    udp_until(&s, udp, "* cookie accepted: you hear the room\n");
    // Its join and its lines reach the other server.
    bob.until("* guest-1-2 joined");
    s.send_to(b"hello from udp", udp).unwrap();
    bob.until("<guest-1-2> hello from udp");
    alice.until("<guest-1-2> hello from udp");
    // What needs Redis's answer is answered from this server.
    s.send_to(b"/who", udp).unwrap();
    udp_until(&s, udp, &format!("* online on this server: {ga}, guest-1-2\n"));
    s.send_to(format!("/msg {gb} hi").as_bytes(), udp).unwrap();
    udp_until(&s, udp, &format!("! no such user {gb} on this server\n"));
    s.send_to(b"/nick carol", udp).unwrap();
    udp_until(&s, udp, "! on a clustered server, /nick needs a TCP connection\n");
    // What this server decides alone gets the answer a TCP member gets.
    s.send_to(b"/nick bad nick", udp).unwrap();
    udp_until(&s, udp, "! invalid nick\n");
    s.send_to(format!("/msg {ga} psst").as_bytes(), udp).unwrap();
    alice.until("*guest-1-2* psst");
    s.send_to(b"/quit", udp).unwrap();
    udp_until(&s, udp, "* bye\n");
    bob.until("* guest-1-2 left");
}

#[test]
fn what_arrives_from_redis_is_cleaned_again() {
    let redis = TestRedis::start();
    let a = node(&redis, "10s");
    let (mut m, _) = a.join();
    // Another "server" publishing by hand: an escape in the text, a bell in
    // a nick, a line over the limit, junk.
    let publish = |json: &str| {
        let quoted = json.replace('\\', "\\\\").replace('"', "\\\"");
        let answer = redis.command(&format!("PUBLISH switchboard:room \"{quoted}\""));
        assert_eq!(answer, ":1", "one subscriber");
    };
    publish(r#"{"s":"x","k":"text","nick":"eve","text":"a\u001b[2Jb\u202e"}"#);
    publish(r#"{"s":"x","k":"text","nick":"e\u0007ve","text":"hidden"}"#);
    publish("not json at all");
    publish(&format!(r#"{{"s":"x","k":"text","nick":"eve","text":"{}"}}"#, "y".repeat(5000)));
    publish(r#"{"s":"x","k":"join","nick":"fr\u0000ed"}"#);
    publish(r#"{"s":"x","k":"text","nick":"eve","text":"last"}"#);
    m.expect("<eve> a\u{fffd}[2Jb\u{fffd}");
    // The line limit of this server (4,096) holds for remote lines too.
    m.expect(&format!("<eve> {}", "y".repeat(4096)));
    m.expect("<eve> last");
}

#[test]
fn three_servers_one_room() {
    let redis = TestRedis::start();
    let nodes: Vec<ChatNode> = (0..3).map(|_| node(&redis, "10s")).collect();
    let mut members: Vec<_> = nodes.iter().map(|n| n.join().0).collect();
    for (i, m) in members.iter_mut().enumerate() {
        m.send(&format!("/nick m{i}"));
        m.until(&format!("* you are now m{i}"));
    }
    members[2].send("from the third");
    members[0].until("<m2> from the third");
    members[1].until("<m2> from the third");
    members[0].send("/msg m2 hello three");
    members[2].until("*m0* hello three");
    members[1].until_who("m0, m1, m2");
}

#[test]
fn a_killed_servers_nicks_free_up_after_the_lease() {
    let redis = TestRedis::start();
    let lease = Duration::from_secs(3);
    let a = node(&redis, "3s");
    let b = node(&redis, "3s");
    let (mut held, _) = a.join();
    held.send("/nick keeper");
    held.expect_answer("* you are now keeper");
    let (mut other, _) = b.join();
    other.until_who("guest-2-1, keeper");
    let killed = Instant::now();
    a.kill();
    // Still held right after the crash: nobody renews, nobody releases.
    other.send("/nick keeper");
    let first = other.answer();
    let early = killed.elapsed();
    if early < lease {
        assert_eq!(first, "! nick taken", "{early:?} after the kill");
    }
    // Free once the lease ran out (polled with a deadline).
    let deadline = Instant::now() + TIMEOUT;
    loop {
        other.send("/nick keeper");
        let answer = other.answer();
        if answer == "* you are now keeper" {
            break;
        }
        assert_eq!(answer, "! nick taken");
        assert!(Instant::now() < deadline, "keeper still held {TIMEOUT:?} after the kill");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(killed.elapsed() >= lease - Duration::from_millis(400), "freed after {:?}", killed.elapsed());
    other.until_who("keeper");
}

#[test]
fn losing_redis_keeps_the_local_room_and_the_link_comes_back() {
    let mut redis = TestRedis::start();
    let a = node(&redis, "2s");
    let b = node(&redis, "2s");
    let (mut alice, _) = a.join();
    alice.send("/nick alice");
    alice.expect_answer("* you are now alice");
    let (mut amy, _) = a.join();
    amy.send("/nick amy");
    amy.until("* you are now amy");
    let (mut bob, _) = b.join();
    bob.send("/nick bob");
    bob.expect_answer("* you are now bob");
    alice.until("* guest-2-1 is now bob");

    redis.stop();
    alice.until("* cluster link lost");
    amy.until("* cluster link lost");
    bob.until("* cluster link lost");
    // The local room keeps working.
    alice.send("still here");
    amy.until("<alice> still here");
    amy.send("/who");
    amy.expect_answer("* online: alice, amy");
    bob.send("/nick zed");
    bob.expect_answer("! cluster link lost, try again later");

    redis.restart();
    alice.until("* cluster link restored");
    bob.until("* cluster link restored");
    alice.send("back again");
    bob.until("<alice> back again");
    bob.until_who("alice, amy, bob");
    // The restarted Redis was empty: the nicks were written again.
    bob.send("/nick amy");
    bob.expect_answer("! nick taken");

    // With Redis gone, a server still shuts down cleanly.
    redis.stop();
    alice.until("* cluster link lost");
    let (status, stderr) = a.stop();
    assert!(status.success(), "{status}; stderr:\n{stderr}");
    assert!(stderr.contains("cluster: bridge stopped"), "{stderr}");
}

#[test]
fn an_unreachable_redis_is_a_clear_error_at_start() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("redis://127.0.0.1:{port}");
    let out = switchboard_test_support::child::run(
        std::process::Command::new(BIN).args([
            "--handler",
            "chat",
            "--listen",
            "127.0.0.1:0",
            "--redis",
            &url,
        ]),
        TIMEOUT,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("switchboard-server: --redis: cannot reach Redis at {url}: ")), "{err}");
}

#[test]
fn a_redis_that_stops_answering_never_holds_up_the_local_room() {
    let redis = TestRedis::start();
    let a = node(&redis, "10s");
    let b = node(&redis, "10s");
    let (mut alice, _) = a.join();
    let (mut amy, _) = a.join();
    let (mut bob, _) = b.join();
    bob.until_who("guest-1-1, guest-1-2, guest-2-1");
    // Redis takes no command from anyone for a while (as when it cannot
    // keep up): the bridge waits, the workers do not.
    let pause = Duration::from_secs(6);
    let paused = Instant::now();
    assert_eq!(redis.command(&format!("CLIENT PAUSE {}", pause.as_millis())), "+OK");
    for i in 0..20 {
        alice.send(&format!("during {i}"));
    }
    for i in 0..20 {
        amy.until(&format!("<guest-1-1> during {i}"));
    }
    assert!(paused.elapsed() < pause, "local lines waited for Redis: {:?}", paused.elapsed());
    // The bridge gives up on a Redis that does not answer within its
    // timeout, says so, and comes back when Redis does.
    amy.until("* cluster link lost");
    amy.until("* cluster link restored");
    bob.until("* cluster link restored");
    alice.send("after");
    let mut a = a;
    let mut b = b;
    bob.stream().set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| bob.until("<guest-1-1> after")));
    assert!(
        got.is_ok(),
        "bob never got the line sent after the link came back; A:\n{}\nB:\n{}",
        a.proc().stderr_so_far(),
        b.proc().stderr_so_far()
    );
}

#[test]
fn every_member_of_two_servers_gets_every_line_under_load() {
    let redis = TestRedis::start();
    let a = node(&redis, "10s");
    let b = node(&redis, "10s");
    let members = 20;
    let out = switchboard_test_support::child::run(
        std::process::Command::new(env!("CARGO_BIN_EXE_switchboard-load")).args([
            "chat",
            "--target",
            &a.addr().to_string(),
            "--also-target",
            &b.addr().to_string(),
            "--connections",
            &members.to_string(),
            "--messages",
            "400",
            "--json",
        ]),
        TIMEOUT,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let chat = &v["chat"];
    assert_eq!(chat["members"], members, "{v}");
    assert_eq!(chat["complete_members"], members, "{v}");
    assert_eq!(chat["missing"], 0, "{v}");
    assert_eq!(chat["out_of_order"], 0, "{v}");
    // 400 lines, each to the 19 other members, half of them across Redis.
    assert_eq!(chat["received"], 400 * (members - 1), "{v}");
}

/// The password of the TLS Redis: looked for in every log line.
const PASSWORD: &str = "pw-never-shown-4711";

#[test]
fn two_servers_share_a_room_through_a_tls_redis_and_never_log_its_password() {
    let redis = TestRedis::start_tls(PASSWORD);
    let url = redis.url();
    let ca = redis.ca().to_str().unwrap();
    let debug = ("RUST_LOG", "debug");
    // A: the URL on the command line; B: in the environment; C: in a file.
    let a = ChatNode::start_env(Path::new(BIN), &["--redis", &url, "--redis-ca", ca], &[debug]);
    let b =
        ChatNode::start_env(Path::new(BIN), &["--redis-ca", ca], &[debug, ("SWITCHBOARD_REDIS_URL", &url)]);
    let dir = switchboard_test_support::temp_dir("redis-url");
    let file = dir.write("redis-url", format!("{url}\n").as_bytes());
    let c = ChatNode::start_env(
        Path::new(BIN),
        &["--redis-url-file", file.to_str().unwrap(), "--redis-ca", ca],
        &[debug],
    );
    let (mut alice, _) = a.join();
    let (mut bob, _) = b.join();
    let (mut carol, _) = c.join();
    alice.send("/nick alice");
    alice.expect_answer("* you are now alice");
    bob.send("/nick bob");
    bob.expect_answer("* you are now bob");
    carol.send("/nick carol");
    carol.expect_answer("* you are now carol");
    bob.send("/nick alice");
    bob.expect_answer("! nick taken");
    alice.send("over TLS");
    bob.until("<alice> over TLS");
    carol.until("<alice> over TLS");
    carol.send("/msg bob from the file");
    bob.until("*carol* from the file");
    alice.until_who("alice, bob, carol");

    let shown = url.replace(PASSWORD, "***");
    assert_eq!(shown, format!("rediss://:***@{}", redis.addr()));
    for (name, node, warned) in [("A", a, true), ("B", b, false), ("C", c, false)] {
        let (status, stderr) = node.stop();
        assert!(status.success(), "{name}: {status}; stderr:\n{stderr}");
        assert!(stderr.contains(" DEBUG "), "{name} logged at debug:\n{stderr}");
        assert!(!stderr.contains(PASSWORD), "{name} logged the password:\n{stderr}");
        assert!(stderr.contains(&format!(" on Redis {shown}")), "{name}:\n{stderr}");
        // Only the URL given on the command line is warned about.
        let warning = "the Redis password given in --redis shows in the process list";
        assert_eq!(stderr.contains(warning), warned, "{name}:\n{stderr}");
    }
}

/// Runs the server with `args` and `env` until it exits; its exit code and
/// stderr.
fn failed_start(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = switchboard_test_support::child::run(
        std::process::Command::new(BIN)
            .args(["--handler", "chat", "--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "debug")
            .env_remove("SWITCHBOARD_REDIS_URL")
            .envs(env.iter().copied()),
        TIMEOUT,
    );
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_wrong_password_a_wrong_ca_or_a_bad_url_file_is_a_clear_error_without_the_password() {
    let redis = TestRedis::start_tls(PASSWORD);
    let ca = redis.ca().to_str().unwrap();
    let addr = redis.addr();
    let dir = switchboard_test_support::temp_dir("redis-errors");

    // A wrong password, from the environment: Redis's refusal, neither
    // password shown.
    let wrong = format!("rediss://:wrong-{PASSWORD}@{addr}");
    let (code, err) = failed_start(&["--redis-ca", ca], &[("SWITCHBOARD_REDIS_URL", &wrong)]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("switchboard-server: --redis: cannot reach Redis at rediss://:***@{addr}: ")),
        "{err}"
    );
    assert!(err.contains("Password authentication failed"), "{err}");
    assert!(!err.contains(PASSWORD), "{err}");

    // The right password but a CA that did not sign Redis's certificate.
    let other = switchboard_test_support::pki::TestPki::create(dir.path());
    let (code, err) =
        failed_start(&["--redis-ca", other.ca.to_str().unwrap()], &[("SWITCHBOARD_REDIS_URL", &redis.url())]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("switchboard-server: --redis: cannot reach Redis at rediss://:***@{addr}: ")),
        "{err}"
    );
    assert!(err.contains("certificate"), "{err}");
    assert!(!err.contains(PASSWORD), "{err}");

    // A CA file with no certificate in it.
    let junk = dir.write("junk.pem", b"not a certificate\n");
    let (code, err) =
        failed_start(&["--redis-ca", junk.to_str().unwrap()], &[("SWITCHBOARD_REDIS_URL", &redis.url())]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "switchboard-server: --redis-ca: {}: no CERTIFICATE in the file",
            junk.display()
        )),
        "{err}"
    );
    assert!(!err.contains(PASSWORD), "{err}");

    // A CA with a URL that is not TLS.
    let plain = format!("redis://:{PASSWORD}@{addr}");
    let (code, err) = failed_start(&["--redis", &plain, "--redis-ca", ca], &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("switchboard-server: --redis: a CA for Redis's certificate is given but redis://:***@"),
        "{err}"
    );
    assert!(!err.contains(PASSWORD), "{err}");

    // A URL file that is missing, empty, or holds no URL.
    let missing = dir.path().join("missing");
    let (code, err) = failed_start(&["--redis-url-file", missing.to_str().unwrap()], &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("switchboard-server: --redis-url-file: {}: cannot open: ", missing.display())),
        "{err}"
    );
    let empty = dir.write("empty", b"\n");
    let (code, err) = failed_start(&["--redis-url-file", empty.to_str().unwrap()], &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("--redis-url-file: {}: no URL on its first line", empty.display())),
        "{err}"
    );
    // A password pasted where the URL belongs is not shown either.
    let pasted = dir.write("pasted", format!("{PASSWORD}\n").as_bytes());
    let (code, err) = failed_start(&["--redis-url-file", pasted.to_str().unwrap()], &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("switchboard-server: --redis: bad Redis URL (not a URL, not shown): "), "{err}");
    assert!(!err.contains(PASSWORD), "{err}");

    // The URL and the file at once: a usage error.
    let (code, err) = failed_start(&["--redis", &plain, "--redis-url-file", empty.to_str().unwrap()], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("cannot be used with"), "{err}");
}

#[test]
fn an_idle_server_notices_a_dead_redis_within_the_lease() {
    let redis = TestRedis::start();
    let lease = Duration::from_secs(3);
    let mut a = node(&redis, "3s");
    let (mut alice, _) = a.join();
    alice.until_who("guest-1-1");
    // Nothing is said: only the bridge's own traffic can find out.
    redis.freeze();
    let frozen = Instant::now();
    alice.stream().set_read_timeout(Some(lease * 10)).unwrap();
    alice.until("* cluster link lost");
    let noticed = frozen.elapsed();
    redis.thaw();
    alice.until("* cluster link restored");
    assert!(
        noticed < lease,
        "a dead Redis noticed after {noticed:?}, the lease is {lease:?}:\n{}",
        a.proc().stderr_so_far()
    );
}

#[test]
fn the_latest_login_of_an_account_takes_its_nick_over_across_servers() {
    let redis = TestRedis::start();
    let a = node(&redis, "10s");
    let b = node(&redis, "10s");
    let (mut first, _) = a.join();
    first.send("/register frank franks-password");
    first.expect_answer("* registered frank");
    first.send("/login frank franks-password");
    first.expect_answer("* you are now frank");

    // The same account on B: B's member is frank, A's goes back to a guest
    // nick and is told why.
    let (mut second, _) = b.join();
    second.send("/login frank franks-password");
    // B publishes the evict before it answers: A's renaming may come first.
    let before = second.until("* you are now frank");
    first.until("* frank logged in elsewhere");
    let guest = first.until_prefix("* you are now ");
    assert!(guest.starts_with("guest-1-"), "{guest}");
    let renamed = format!("* frank is now {guest}");
    if !before.contains(&renamed) {
        second.until(&renamed);
    }
    // One frank in the cluster, seen alike from both servers; the leases
    // renewed since do not bring the second one back.
    second.until_who(&format!("frank, {guest}"));
    first.until_who(&format!("frank, {guest}"));
    // No longer logged in: the nick is not the guest's.
    first.send("/nick frank");
    first.expect_answer("! nick registered");
    first.send("hello from A");
    second.until(&format!("<{guest}> hello from A"));

    // Logging in again on A takes it back.
    first.send("/login frank franks-password");
    first.expect_answer("* you are now frank");
    second.until("* frank logged in elsewhere");
    let guest2 = second.until_prefix("* you are now ");
    assert!(guest2.starts_with("guest-2-"), "{guest2}");
    second.until_who(&format!("frank, {guest2}"));
    second.send("from B");
    first.until(&format!("<{guest2}> from B"));

    // Two logins on one server: the same, locally.
    let (mut third, _) = a.join();
    third.send("/login frank franks-password");
    third.expect_answer("* you are now frank");
    first.until("* frank logged in elsewhere");
    let guest3 = first.until_prefix("* you are now ");
    assert!(guest3.starts_with("guest-1-"), "{guest3}");
    second.until_who(&format!("frank, {guest3}, {guest2}"));
}

#[test]
fn a_server_shuts_down_promptly_while_its_redis_hangs() {
    let redis = TestRedis::start();
    let a = node(&redis, "3s");
    let (mut alice, _) = a.join();
    alice.until_who("guest-1-1");
    // Redis accepts connections (the kernel does) but answers nothing: the
    // bridge keeps trying to connect again.
    redis.freeze();
    alice.until("* cluster link lost");
    let asked = Instant::now();
    let (status, stderr) = a.stop();
    let took = asked.elapsed();
    redis.thaw();
    assert!(status.success(), "{status}; stderr:\n{stderr}");
    assert!(stderr.contains("cluster: bridge stopped"), "{stderr}");
    // The grace for members plus one connection attempt and one command.
    assert!(took < Duration::from_secs(8), "shutdown took {took:?}:\n{stderr}");
}
