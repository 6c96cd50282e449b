//! The admin status page in a real browser: headless Chromium (Debian's
//! `chromium`, installed by `scripts/test.sh`) renders it from a running
//! `switchboard-server`; the test reads the live figures from the rendered
//! DOM, sees them follow the traffic, and keeps a screenshot in the target
//! folder (`$CARGO_TARGET_TMPDIR/admin-status-page.png`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use rustix::process::Signal;
use switchboard_test_support::child::{run, Spawned};
use switchboard_test_support::{connect, http, temp_dir, wait_until, TIMEOUT};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard-server");

/// Chromium's flags for this machine: no sandbox (root), and none of its
/// own network traffic (which is refused here and would stall the page).
fn chromium(profile: &Path) -> Command {
    let mut cmd = Command::new("chromium");
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1000,900",
        "--virtual-time-budget=3000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .stdin(Stdio::null());
    cmd
}

/// The page rendered after its scripts ran for a few seconds of virtual
/// time (several refreshes).
fn render(admin: SocketAddr, profile: &Path) -> String {
    let out =
        run(chromium(profile).arg("--dump-dom").arg(format!("http://{admin}/")), Duration::from_secs(60));
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("the DOM is UTF-8")
}

/// The start tag of the element with `id` in `dom`.
fn tag<'a>(dom: &'a str, id: &str) -> &'a str {
    let at = dom.find(&format!("id=\"{id}\"")).unwrap_or_else(|| panic!("no #{id} in the page:\n{dom}"));
    let start = dom[..at].rfind('<').unwrap();
    let end = at + dom[at..].find('>').unwrap();
    &dom[start..=end]
}

/// The `data-value` of the element with `id`: the figure the page shows.
fn figure(dom: &str, id: &str) -> u64 {
    let t = tag(dom, id);
    let v = t.split("data-value=\"").nth(1).unwrap_or_else(|| panic!("#{id} has no value: {t}"));
    v[..v.find('"').unwrap()].parse().unwrap_or_else(|e| panic!("#{id}: {t}: {e}"))
}

/// The text of the element with `id` (up to the next tag).
fn text<'a>(dom: &'a str, id: &str) -> &'a str {
    let t = tag(dom, id);
    let after = &dom[dom.find(t).unwrap() + t.len()..];
    &after[..after.find('<').unwrap()]
}

#[test]
fn the_status_page_shows_live_figures_in_a_browser() {
    let mut cmd = Command::new(BIN);
    cmd.args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--workers", "2"]).stdin(Stdio::null());
    let mut server = Spawned::spawn(&mut cmd);
    let addr = server.listening_addr();
    let line = server.line_where(TIMEOUT, |l| l.starts_with("admin on "));
    let admin: SocketAddr =
        line.trim().trim_start_matches("admin on http://").trim_end_matches('/').parse().unwrap();
    let profile = temp_dir("chromium");

    let before = render(admin, profile.path());
    assert!(figure(&before, "refreshes") >= 1, "the page refreshed itself");
    assert_eq!(text(&before, "phase"), "running");
    assert_eq!(text(&before, "handler"), "echo");
    assert_eq!(figure(&before, "accepted"), 0);
    assert_eq!(figure(&before, "bytes_in"), 0);

    // Traffic: four clients, 1000 bytes echoed each, still open.
    let mut clients: Vec<TcpStream> = (0..4).map(|_| connect(addr)).collect();
    for c in &mut clients {
        c.write_all(&[b'z'; 1000]).unwrap();
        let mut back = [0u8; 1000];
        c.read_exact(&mut back).unwrap();
    }
    wait_until("the server counted the traffic", || {
        let json: serde_json::Value = serde_json::from_str(&http::get(admin, "/stats.json").body).unwrap();
        json["stats"]["bytes_out"] == 4000
    });
    let after = render(admin, profile.path());
    assert_eq!(figure(&after, "accepted"), 4);
    assert_eq!(figure(&after, "open"), 4);
    assert_eq!(figure(&after, "bytes_in"), 4000);
    assert_eq!(figure(&after, "bytes_out"), 4000);
    // The chart has a line of connections open.
    let chart = tag(&after, "chart-open");
    assert!(chart.contains("points=\"") && !chart.contains("points=\"\""), "{chart}");

    // The screenshot, kept as an artifact of the test run.
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("admin-status-page.png");
    let _ = std::fs::remove_file(&shot);
    let out = run(
        chromium(profile.path())
            .arg(format!("--screenshot={}", shot.display()))
            .arg(format!("http://{admin}/")),
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    let png = std::fs::read(&shot).unwrap_or_else(|e| panic!("{}: {e}", shot.display()));
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000, "{} bytes", png.len());
    eprintln!("screenshot: {}", shot.display());

    drop(clients);
    server.signal(Signal::TERM);
    assert!(server.wait(TIMEOUT).success());
}
