//! Accounts (`/register`, `/login`) of `switchboard-server --handler chat`,
//! in the embedded store (`--accounts PATH`) and in Redis (`--redis`), on
//! server processes this test owns (PROTOCOLS.md, "Accounts").

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchboard_handlers::chat::{
    ACCOUNT_REQUESTS_PER_ADDRESS, LOGIN_FAILURES_PER_NAME, LOGIN_FAILURES_PER_NAME_AND_ADDRESS,
};
use switchboard_test_support::redis::TestRedis;
use switchboard_test_support::{temp_dir, wait_until, ChatClient, ChatNode, TIMEOUT};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard-server");

#[test]
fn register_on_one_server_log_in_on_another_and_evict_the_guest() {
    let redis = TestRedis::start();
    let a = ChatNode::start(Path::new(BIN), &["--redis", &redis.url()]);
    let b = ChatNode::start(Path::new(BIN), &["--redis", &redis.url()]);
    let (mut reg, _) = a.join();
    reg.send("/register dave hunter2hunter2");
    reg.expect_answer("* registered dave");
    reg.send("/register DAVE other-password");
    reg.expect_answer("! name already registered");
    // Nobody but its owner may take a registered nick.
    reg.send("/nick dave");
    reg.expect_answer("! nick registered");

    // A guest on B holds a nick before it is registered...
    let (mut squatter, guest) = b.join();
    squatter.send("/nick erin");
    squatter.expect_answer("* you are now erin");
    reg.send("/register erin erins-password");
    reg.until("* registered erin");
    // ...and goes back to a guest nick when the owner logs in on A.
    let (mut erin, _) = a.join();
    erin.send("/login erin erins-password");
    erin.until("* you are now erin");
    let back = squatter.until_prefix("* you are now ");
    assert!(back.starts_with("guest-2-"), "{back}");
    assert_ne!(back, guest);

    // Registered through A, logged in through B.
    let (mut dave, _) = b.join();
    dave.send("/login dave wrong-password");
    dave.until("! wrong name or password");
    dave.send("/login dave hunter2hunter2");
    dave.until("* you are now dave");
    dave.send("/nick d2");
    dave.until("* you are now d2");
    // The owner may take it back.
    dave.send("/nick dave");
    dave.until("* you are now dave");
    assert_eq!(back, "guest-2-2");
    reg.until_who("dave, erin, guest-1-1, guest-2-2");
}

#[test]
fn embedded_store_survives_a_restart_and_holds_no_password() {
    let dir = temp_dir("accounts");
    let path = dir.path().join("accounts.redb");
    let store = path.to_str().unwrap();
    let password = "correct-horse-battery";
    {
        let a = ChatNode::start(Path::new(BIN), &["--accounts", store]);
        let (mut m, _) = a.join();
        m.send("/register frank correct-horse-battery");
        m.expect("* registered frank");
        m.send("/register g short");
        m.expect("! password too short (at least 8 characters)");
        m.send("/register guest-9 long-enough-pw");
        m.expect("! guest nicks cannot be registered");
        m.send("/login frank");
        m.expect("! usage: /login NAME PASSWORD");
        let (status, stderr) = a.stop();
        assert!(status.success(), "{status}");
        assert!(!stderr.contains(password), "the log shows the password:\n{stderr}");
    }
    let bytes = std::fs::read(&path).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains("$argon2id$v=19$"), "no Argon2id hash in the store");
    assert!(!text.contains(password), "the store holds the password in plain text");

    let b = ChatNode::start(Path::new(BIN), &["--accounts", store]);
    let (mut m, _) = b.join();
    m.send("/nick frank");
    m.expect("! nick registered");
    m.send("/login frank correct-horse-battery");
    m.expect("* you are now frank");
}

#[test]
fn wrong_passwords_are_refused_then_rate_limited() {
    let dir = temp_dir("accounts");
    let path = dir.path().join("a.redb");
    let a = ChatNode::start(Path::new(BIN), &["--accounts", path.to_str().unwrap()]);
    let (mut m, _) = a.join();
    m.send("/register gina gina-password");
    m.expect("* registered gina");
    for _ in 0..LOGIN_FAILURES_PER_NAME_AND_ADDRESS {
        m.send("/login gina not-her-password");
        m.expect("! wrong name or password");
    }
    // Past the budget of the name at this address even the right password
    // waits (PROTOCOLS.md, "Accounts": another address would not).
    m.send("/login gina gina-password");
    m.expect("! too many failed logins, try again later");
    // An unknown name gets the same answer as a wrong password.
    m.send("/login nobody whatever-pass");
    m.expect("! wrong name or password");
    m.expect_nothing_before_who("guest-1");
}

#[test]
fn a_corrupt_or_unusable_store_is_a_clear_error_at_start() {
    let dir = temp_dir("accounts");
    let junk = dir.write("junk.redb", &[0x5a; 8192]);
    for path in [junk.clone(), dir.path().to_path_buf(), dir.path().join("missing/a.redb")] {
        let out = switchboard_test_support::child::run(
            std::process::Command::new(BIN)
                .args(["--handler", "chat", "--listen", "127.0.0.1:0", "--accounts"])
                .arg(&path),
            TIMEOUT,
        );
        assert!(!out.status.success(), "{}", path.display());
        let err = String::from_utf8_lossy(&out.stderr);
        let want = format!("switchboard-server: --accounts: account store {}: ", path.display());
        assert!(err.contains(&want), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    // Nothing was written over the junk.
    assert_eq!(std::fs::read(&junk).unwrap(), vec![0x5a; 8192]);
}

#[test]
fn the_owner_logging_in_sends_a_guest_on_the_same_server_back_to_a_guest_nick() {
    let dir = temp_dir("accounts");
    let path = dir.path().join("a.redb");
    let a = ChatNode::start(Path::new(BIN), &["--accounts", path.to_str().unwrap()]);
    let (mut squatter, _) = a.join();
    let (mut owner, _) = a.join();
    squatter.expect("* guest-2 joined");
    squatter.send("/nick hank");
    squatter.expect("* you are now hank");
    owner.until("* guest-1 is now hank");
    owner.send("/register hank hank-password");
    owner.expect("* registered hank");
    owner.send("/login hank hank-password");
    owner.expect("* hank is now guest-3");
    owner.expect("* you are now hank");
    squatter.expect("* you are now guest-3");
    squatter.expect("* guest-2 is now hank");
    // Renaming away and back is the owner's right; not the guest's.
    squatter.send("/nick hank");
    squatter.expect("! nick registered");
    owner.send("/help");
    let help: Vec<String> = (0..7).map(|_| owner.line()).collect();
    assert!(help[5].starts_with("* /register NAME PASSWORD "), "{help:?}");
    assert!(help[6].starts_with("* /login NAME PASSWORD "), "{help:?}");
    owner.expect_nothing_before_who("guest-3, hank");
}

/// A loopback address that plays another host: 127.0.N.M.
fn host(n: u8, m: u8) -> IpAddr {
    IpAddr::from([127, 0, n, m])
}

/// `switchboard-server accounts ARGS...`, to the end.
fn accounts_tool(args: &[&str]) -> Output {
    switchboard_test_support::child::run(Command::new(BIN).arg("accounts").args(args), TIMEOUT)
}

#[test]
fn guessing_from_other_addresses_never_locks_the_owner_out() {
    let dir = temp_dir("accounts");
    let path = dir.path().join("a.redb");
    let node = ChatNode::start(Path::new(BIN), &["--accounts", path.to_str().unwrap()]);
    let addr = node.addr();
    let (mut reg, _) = node.join();
    reg.send("/register alice alice-password");
    reg.expect("* registered alice");

    // Three guessing hosts send wrong passwords for alice without pause,
    // past their own budgets, until the owner is in.
    let stop = Arc::new(AtomicBool::new(false));
    let limited = Arc::new(AtomicUsize::new(0));
    let guessers: Vec<_> = (0..3)
        .map(|g| {
            let (stop, limited) = (Arc::clone(&stop), Arc::clone(&limited));
            std::thread::spawn(move || {
                let (mut c, _) = ChatClient::join_from(addr, host(0, 10 + g));
                let (mut wrong, mut refused) = (0, false);
                for _ in 0..2000 {
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                    c.send("/login alice not-her-password");
                    match c.answer().as_str() {
                        "! wrong name or password" => wrong += 1,
                        "! too many failed logins, try again later"
                        | "! too many account requests, try again later" => {
                            if !refused {
                                refused = true;
                                limited.fetch_add(1, Ordering::AcqRel);
                            }
                        }
                        other => panic!("a guess answered {other:?}"),
                    }
                }
                wrong
            })
        })
        .collect();
    wait_until("every guesser has spent its budget", || limited.load(Ordering::Acquire) == 3);

    // The owner, at an address that never logged in: in at the first try.
    let (mut owner, _) = ChatClient::join_from(addr, host(0, 2));
    owner.send("/login alice alice-password");
    owner.expect_answer("* you are now alice");
    stop.store(true, Ordering::Release);
    for g in guessers {
        let wrong = g.join().unwrap();
        // Each host had its own budget for the name, no more.
        assert_eq!(wrong, LOGIN_FAILURES_PER_NAME_AND_ADDRESS, "wrong passwords checked for one host");
    }
    // Three hosts' budgets together stay within the name's over all
    // addresses (against guessers at many hosts; limits unit tests).
    const { assert!(3 * LOGIN_FAILURES_PER_NAME_AND_ADDRESS < LOGIN_FAILURES_PER_NAME) };
}

#[test]
fn an_owner_who_logged_in_before_gets_in_while_many_hosts_spend_the_names_budget() {
    let dir = temp_dir("accounts");
    let path = dir.path().join("a.redb");
    let node = ChatNode::start(Path::new(BIN), &["--accounts", path.to_str().unwrap()]);
    let addr = node.addr();
    let (mut owner, _) = ChatClient::join_from(addr, host(2, 1));
    owner.send("/register alice alice-password");
    owner.expect("* registered alice");
    owner.send("/login alice alice-password");
    owner.expect("* you are now alice");

    // 15 hosts guess until refused: together more than the name's budget
    // over all addresses, so the name's budget, not each host's, stops them.
    const HOSTS: u32 = 15;
    const { assert!(HOSTS * LOGIN_FAILURES_PER_NAME_AND_ADDRESS > LOGIN_FAILURES_PER_NAME + 10) };
    let guessers: Vec<_> = (0..HOSTS as u8)
        .map(|g| {
            std::thread::spawn(move || {
                let (mut c, _) = ChatClient::join_from(addr, host(3, g));
                let mut wrong = 0;
                for _ in 0..=LOGIN_FAILURES_PER_NAME_AND_ADDRESS {
                    c.send("/login alice not-her-password");
                    match c.answer().as_str() {
                        "! wrong name or password" => wrong += 1,
                        "! too many failed logins, try again later" => break,
                        other => panic!("a guess answered {other:?}"),
                    }
                }
                wrong
            })
        })
        .collect();
    let wrong: u32 = guessers.into_iter().map(|g| g.join().unwrap()).sum();
    assert!(wrong < HOSTS * LOGIN_FAILURES_PER_NAME_AND_ADDRESS, "{wrong} wrong passwords checked");
    assert!(wrong >= LOGIN_FAILURES_PER_NAME, "{wrong} wrong passwords checked");

    // The owner's address logged in before: in at the first try.
    let (mut again, _) = ChatClient::join_from(addr, host(2, 1));
    again.send("/login alice alice-password");
    again.expect_answer("* you are now alice");
}

#[test]
fn a_hundred_connections_looping_register_never_keep_a_login_waiting() {
    let dir = temp_dir("accounts");
    let path = dir.path().join("a.redb");
    flood_register_and_log_in(ChatNode::start(Path::new(BIN), &["--accounts", path.to_str().unwrap()]));
}

/// The same with Redis, which the server cannot ask without blocking: every
/// flood request that passes the address's budget goes through the queue.
#[test]
fn a_hundred_connections_looping_register_never_keep_a_login_waiting_with_redis() {
    let redis = TestRedis::start();
    flood_register_and_log_in(ChatNode::start(Path::new(BIN), &["--redis", &redis.url()]));
}

/// 100 connections from one host loop `/register bob ...` on `node` while
/// bob logs in from another host 5 times: each login is answered within a
/// second and never busy (the flood may be: its host's share is full).
fn flood_register_and_log_in(node: ChatNode) {
    let addr = node.addr();
    let (mut user, _) = ChatClient::join_from(addr, host(0, 3));
    user.send("/register bob bobs-password");
    user.expect_answer("* registered bob");

    // 100 connections from one host, ten threads of ten, each sending
    // `/register bob ...` and reading the answer, over and over.
    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(AtomicUsize::new(0));
    let flood: Vec<_> = (0..10)
        .map(|_| {
            let (stop, answers) = (Arc::clone(&stop), Arc::clone(&answers));
            std::thread::spawn(move || {
                let mut conns: Vec<ChatClient> =
                    (0..10).map(|_| ChatClient::join_from(addr, host(0, 66)).0).collect();
                for _ in 0..500 {
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                    for c in &mut conns {
                        c.send("/register bob squatters-password");
                    }
                    for c in &mut conns {
                        let a = c.answer();
                        // Busy: the host's share of the queue is full;
                        // registrations: those in the queue hold them.
                        assert!(
                            [
                                "! name already registered",
                                "! too many account requests, try again later",
                                "! too many registrations from your address, try again later",
                                "! server busy, try again",
                            ]
                            .contains(&a.as_str()),
                            "{a:?}"
                        );
                        answers.fetch_add(1, Ordering::AcqRel);
                    }
                }
            })
        })
        .collect();
    wait_until("the flood is on", || answers.load(Ordering::Acquire) >= 1000);

    // Another user's logins: each answered within a second, never busy.
    for _ in 0..5 {
        let sent = Instant::now();
        user.send("/login bob bobs-password");
        let answer = user.answer();
        let took = sent.elapsed();
        assert_eq!(answer, "* you are now bob");
        assert!(took < Duration::from_secs(1), "a login took {took:?} under the flood");
    }
    stop.store(true, Ordering::Release);
    for t in flood {
        t.join().unwrap();
    }
    // The flood went on past the account budget of its one host.
    assert!(answers.load(Ordering::Acquire) > ACCOUNT_REQUESTS_PER_ADDRESS as usize);
    drop(node);
}

#[test]
fn forty_logins_keep_the_server_under_64_mib() {
    let dir = temp_dir("accounts");
    let path = dir.path().join("a.redb");
    let mut node = ChatNode::start(Path::new(BIN), &["--accounts", path.to_str().unwrap()]);
    let addr: SocketAddr = node.addr();
    // 8 hosts at once (both account threads hash), each registering an
    // account and logging in 5 times: 40 logins, within each host's budget.
    let hosts: Vec<_> = (0..8)
        .map(|h| {
            std::thread::spawn(move || {
                let (mut c, _) = ChatClient::join_from(addr, host(1, h));
                c.send(&format!("/register carol{h} carols-password"));
                assert_eq!(c.answer(), format!("* registered carol{h}"));
                for _ in 0..5 {
                    c.send(&format!("/login carol{h} carols-password"));
                    assert_eq!(c.answer(), format!("* you are now carol{h}"));
                }
            })
        })
        .collect();
    for h in hosts {
        h.join().unwrap();
    }
    let pid = node.proc().pid();
    let (rss, peak) = (pid.rss_bytes(), pid.peak_rss_bytes());
    assert!(peak < 64 << 20, "peak resident memory {} MiB (now {} MiB)", peak >> 20, rss >> 20);
}

#[test]
fn nicks_that_hide_marks_or_show_nothing_are_refused_and_marks_do_not_tell_names_apart() {
    let dir = temp_dir("accounts");
    let path = dir.path().join("a.redb");
    let node = ChatNode::start(Path::new(BIN), &["--accounts", path.to_str().unwrap()]);
    let (mut a, _) = node.join();
    a.send("/register alice alice-password");
    a.expect("* registered alice");
    for bad in ["alice\u{345}", "\u{3164}", "\u{115f}\u{1160}", "bob\u{200b}"] {
        a.send(&format!("/nick {bad}"));
        a.expect("! invalid nick");
        a.send(&format!("/register {bad} long-enough-pw"));
        a.expect("! invalid nick");
    }
    // Marks are dropped from the comparison: one name, one account.
    a.send("/register ALİCE long-enough-pw");
    a.expect("! name already registered");
    a.send("/nick I");
    a.expect("* you are now I");
    let (mut b, _) = node.join();
    a.expect("* guest-2 joined");
    b.send("/nick İ");
    b.expect("! nick taken");
    b.send("/nick Zoë");
    b.expect("* you are now Zoë");
    a.expect("* guest-2 is now Zoë");
    a.send("/nick zoe");
    a.expect("! nick taken");
}

#[test]
fn passwords_are_hashed_as_sent() {
    let dir = temp_dir("accounts");
    let path = dir.path().join("a.redb");
    let node = ChatNode::start(Path::new(BIN), &["--accounts", path.to_str().unwrap()]);
    let (mut m, _) = node.join();
    // Eight controls, which the chat shows as U+FFFD anywhere else.
    m.send_raw(b"/register pat \x01\x02\x03\x04\x05\x06\x07\x08\n");
    m.expect("* registered pat");
    m.send_raw(b"/login pat \x11\x12\x13\x14\x15\x16\x17\x18\n");
    m.expect("! wrong name or password");
    m.send("/login pat \u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}");
    m.expect("! wrong name or password");
    // Invalid UTF-8 is refused, not hashed as U+FFFD.
    m.send_raw(b"/login pat \xff\xfe\x01\x02\x03\x04\x05\x06\n");
    m.expect("! a name or password must be UTF-8");
    m.send_raw(b"/login pat \x01\x02\x03\x04\x05\x06\x07\x08\n");
    m.expect("* you are now pat");
}

#[test]
fn accounts_delete_frees_a_name_in_the_embedded_store() {
    let dir = temp_dir("accounts");
    let path = dir.path().join("a.redb");
    let store = path.to_str().unwrap();
    let node = ChatNode::start(Path::new(BIN), &["--accounts", store]);
    let (mut m, _) = node.join();
    m.send("/register dora doras-password");
    m.expect("* registered dora");
    // The running server holds the file: a clear error, nothing deleted.
    let out = accounts_tool(&["delete", "dora", "--accounts", store]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    let want = format!("switchboard-server: account store {store}: in use by another process");
    assert!(err.starts_with(&want), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let (status, _) = node.stop();
    assert!(status.success());

    // Any form of the name; the name as registered is printed.
    let out = accounts_tool(&["delete", "DORA", "--accounts", store]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "deleted account dora\n");
    let out = accounts_tool(&["delete", "dora", "--accounts", store]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("switchboard-server: no account named dora\n"));
    // A store that does not exist is not created.
    let missing = dir.path().join("missing.redb");
    let out = accounts_tool(&["delete", "dora", "--accounts", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(!missing.exists());
    // No store named: usage error.
    let out = accounts_tool(&["delete", "dora"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");

    let node = ChatNode::start(Path::new(BIN), &["--accounts", store]);
    let (mut m, _) = node.join();
    m.send("/login dora doras-password");
    m.expect("! wrong name or password");
    m.send("/register dora new-owners-password");
    m.expect("* registered dora");
}

#[test]
fn accounts_delete_frees_a_name_in_redis_while_the_servers_run() {
    let redis = TestRedis::start();
    let node = ChatNode::start(Path::new(BIN), &["--redis", &redis.url()]);
    let (mut m, _) = node.join();
    m.send("/register edna ednas-password");
    m.expect_answer("* registered edna");
    let out = accounts_tool(&["delete", "Edna", "--redis", &redis.url()]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "deleted account edna\n");
    let out = accounts_tool(&["delete", "edna", "--redis", &redis.url()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("switchboard-server: no account named edna\n"));
    m.send("/login edna ednas-password");
    m.expect_answer("! wrong name or password");
    m.send("/register edna new-owners-password");
    m.expect_answer("* registered edna");
    // Redis down: a clear error.
    drop(redis);
    let out = accounts_tool(&["delete", "edna", "--redis", "redis://127.0.0.1:1"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("switchboard-server: Redis at redis://127.0.0.1:1: "), "{err}");
}

#[test]
fn an_account_under_an_older_key_in_redis_moves_to_its_key_now() {
    let redis = TestRedis::start();
    let a = ChatNode::start(Path::new(BIN), &["--redis", &redis.url()]);
    let (mut m, _) = a.join();
    m.send("/register café cafes-password");
    m.expect_answer("* registered café");
    // Where the rule before marks were dropped from keys kept it.
    let old = "switchboard:account:cafe\u{301}";
    assert_eq!(redis.command(&format!("RENAME switchboard:account:cafe {old}")), "+OK");
    // As servers before that rule left Redis: without the mark of the rule.
    assert_eq!(redis.command("DEL switchboard:account-key-rule"), ":1");
    // A server starting on that Redis moves it back: café logs in.
    let b = ChatNode::start(Path::new(BIN), &["--redis", &redis.url()]);
    let (mut m, _) = b.join();
    m.send("/login CAFE cafes-password");
    m.expect_answer("* you are now café");
    assert_eq!(redis.command(&format!("EXISTS {old}")), ":0");
    assert_eq!(redis.command("EXISTS switchboard:account:cafe"), ":1");
}
