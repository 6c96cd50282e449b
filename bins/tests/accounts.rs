//! Accounts (`/register`, `/login`) of `switchboard-server --handler chat`,
//! in the embedded store (`--accounts PATH`) and in Redis (`--redis`), on
//! server processes this test owns (PROTOCOLS.md, "Accounts").

use std::path::Path;

use switchboard_handlers::chat::LOGIN_FAILURES_PER_NAME;
use switchboard_test_support::redis::TestRedis;
use switchboard_test_support::{temp_dir, ChatNode, TIMEOUT};

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
    for _ in 0..LOGIN_FAILURES_PER_NAME {
        m.send("/login gina not-her-password");
        m.expect("! wrong name or password");
    }
    // Past the name's budget even the right password waits.
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
