//! `switchboard-load --tls` against `switchboard-server --tls-cert
//! --tls-key`: echo and file runs complete with every reply checked, and a
//! server whose certificate the load tool does not trust fails every
//! connection with the reason shown.

use std::process::Command;

use switchboard_test_support::child::{run, Spawned};
use switchboard_test_support::pki::TestPki;
use switchboard_test_support::{random_bytes, temp_dir, TIMEOUT};

const SERVER: &str = env!("CARGO_BIN_EXE_switchboard-server");
const LOAD: &str = env!("CARGO_BIN_EXE_switchboard-load");

fn server(pki: &TestPki, args: &[&str]) -> (Spawned, String) {
    let mut proc = pki.spawn_server(SERVER, args);
    let addr = proc.listening_addr().to_string();
    (proc, addr)
}

fn load(ca: &std::path::Path, addr: &str, args: &[&str]) -> (Option<i32>, serde_json::Value, String) {
    let out =
        run(Command::new(LOAD).args(args).args(["--tls", "--json", "-t", addr]).arg("--ca").arg(ca), TIMEOUT);
    let report = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.code(), report, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn echo_and_file_loads_over_tls_check_every_reply() {
    let dir = temp_dir("tls-load");
    let pki = TestPki::create(dir.path());
    let (_echo, addr) = server(&pki, &["--handler", "echo"]);
    let (code, r, err) = load(&pki.ca, &addr, &["echo", "-c", "8", "-n", "400", "--size", "100"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(r["connections"]["established"], 8, "{r}");
    assert_eq!(r["messages"]["sent"], 400, "{r}");
    assert_eq!(r["messages"]["received"], 400, "{r}");
    assert_eq!(r["errors"]["total"], 0, "{r}");

    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("f.bin"), random_bytes(3 << 20, 5)).unwrap();
    let (_files, addr) = server(&pki, &["--handler", "file", "--root", root.to_str().unwrap()]);
    let (code, r, err) = load(&pki.ca, &addr, &["file", "f.bin", "-c", "2", "-n", "4"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(r["file"]["md5_ok"], 4, "{r}");
    assert_eq!(r["errors"]["total"], 0, "{r}");
}

#[test]
fn an_untrusted_certificate_fails_every_connection_with_the_reason() {
    let dir = temp_dir("tls-load-untrusted");
    let pki = TestPki::create(dir.path());
    let other = temp_dir("tls-load-other");
    let stranger = TestPki::create(other.path());
    let (_echo, addr) = server(&pki, &["--handler", "echo"]);
    let (code, r, err) = load(&stranger.ca, &addr, &["echo", "-c", "3", "-n", "10"]);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(r["connections"]["failed"], 3, "{r}");
    assert_eq!(r["connections"]["established"], 0, "{r}");
    assert!(err.contains("a connection failed before it was ready: invalid peer certificate"), "{err}");
}
