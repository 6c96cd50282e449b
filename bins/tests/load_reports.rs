//! `switchboard-load`'s reports: the SVG plot agrees with the JSON
//! percentiles, the .hgrm file with the histogram, per-interval lines,
//! the partial report after SIGINT, and the one-line hint when the server
//! speaks another protocol.

use std::net::SocketAddr;
use std::process::{Command, Stdio};

use rustix::process::Signal;
use serde_json::Value;
use switchboard::Server;
use switchboard_handlers::{Chat, Echo};
use switchboard_test_support::child::{run, Spawned};
use switchboard_test_support::{start, temp_dir, TIMEOUT};

const LOAD: &str = env!("CARGO_BIN_EXE_switchboard-load");

fn echo_server() -> Server {
    start(Server::builder().workers(1), Echo)
}

/// The points of the `<polyline>` drawn in `colour` in `svg`.
fn polyline(svg: &str, colour: &str) -> Vec<(f64, f64)> {
    let at =
        svg.find(&format!("stroke=\"{colour}\"")).unwrap_or_else(|| panic!("no {colour} line in the SVG"));
    let start = svg[..at].rfind("<polyline").expect("a polyline");
    let tag = &svg[start..start + svg[start..].find("/>").unwrap()];
    let points = tag.split("points=\"").nth(1).unwrap();
    points[..points.find('"').unwrap()]
        .split_whitespace()
        .map(|p| {
            let (x, y) = p.split_once(',').unwrap();
            (x.parse().unwrap(), y.parse().unwrap())
        })
        .collect()
}

/// Checks that pixel coordinates `px` are a linear image of `values`
/// (within a pixel and a half: plotters rounds to whole pixels), fitting
/// the line through the two most distant values.
fn assert_linear(what: &str, values: &[f64], px: &[f64]) {
    let (lo, hi) = (0..values.len()).fold((0, 0), |(lo, hi), i| {
        (if values[i] < values[lo] { i } else { lo }, if values[i] > values[hi] { i } else { hi })
    });
    assert!(values[hi] > values[lo], "{what}: the values do not vary: {values:?}");
    let scale = (px[hi] - px[lo]) / (values[hi] - values[lo]);
    assert!(scale.abs() > 0.0, "{what}: flat");
    for (v, p) in values.iter().zip(px) {
        let expected = px[lo] + (v - values[lo]) * scale;
        assert!((expected - p).abs() <= 1.5, "{what}: value {v} drawn at {p}, expected {expected:.1}");
    }
}

#[test]
fn the_plot_draws_the_json_percentiles_and_the_hgrm_holds_the_histogram() {
    let server = echo_server();
    let dir = temp_dir("load-plot");
    let (svg_path, hgrm_path) = (dir.path().join("out.svg"), dir.path().join("out.hgrm"));
    let target = server.local_addr().to_string();
    let out = run(
        Command::new(LOAD)
            .args(["echo", "-t", &target, "-c", "2", "-n", "3000", "--json", "-q", "--interval", "100ms"])
            .arg("--plot")
            .arg(&svg_path)
            .arg("--hdr-out")
            .arg(&hgrm_path),
        TIMEOUT,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["message_size"], 64);
    assert_eq!(json["messages"]["received"], 3000);
    assert_eq!(json["bytes"], 3000 * 64);
    assert_eq!(json["interrupted"], false);
    // With --json the interval lines go to stderr, one per interval listed.
    let intervals = json["intervals"].as_array().unwrap();
    assert!(!intervals.is_empty());
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with('[') && l.contains(" msg/s")).count(),
        intervals.len()
    );
    let completed: u64 = intervals.iter().map(|i| i["completed"].as_u64().unwrap()).sum();
    assert!(completed <= 3000 && completed > 0, "{completed}");

    // The SVG is well-formed XML, and its latency curve is the JSON's
    // percentiles: x on a log scale of 1/(1-p), y linear in microseconds.
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    let xml = run(
        Command::new("python3")
            .args([
                "-c",
                "import sys, xml.etree.ElementTree as E; r = E.parse(sys.argv[1]).getroot(); print(r.tag)",
            ])
            .arg(&svg_path),
        TIMEOUT,
    );
    assert!(xml.status.success(), "{}", String::from_utf8_lossy(&xml.stderr));
    assert_eq!(String::from_utf8_lossy(&xml.stdout).trim(), "{http://www.w3.org/2000/svg}svg");
    let curve = polyline(&svg, "#2277CC");
    let percentiles = json["percentiles_us"].as_array().unwrap();
    assert_eq!(curve.len(), percentiles.len());
    let xs: Vec<f64> = percentiles
        .iter()
        .map(|p| (1.0 / (1.0 - p["percentile"].as_f64().unwrap() / 100.0)).log10())
        .collect();
    let ys: Vec<f64> = percentiles.iter().map(|p| p["us"].as_f64().unwrap()).collect();
    assert_linear("x", &xs, &curve.iter().map(|p| p.0).collect::<Vec<_>>());
    assert_linear("y", &ys, &curve.iter().map(|p| p.1).collect::<Vec<_>>());
    // Higher latency is drawn higher up (smaller y).
    assert!(curve.first().unwrap().1 > curve.last().unwrap().1);
    // The p50 the JSON summary gives is the curve's p50.
    let p50 = percentiles.iter().find(|p| p["percentile"] == 50.0).unwrap()["us"].as_f64().unwrap();
    assert_eq!(p50, json["latency_us"]["p50"].as_f64().unwrap());
    // The throughput line has one point per interval.
    assert_eq!(polyline(&svg, "#EE7733").len(), intervals.len());

    // The .hgrm: cumulative counts up to every sample, its max the JSON max.
    let hgrm = std::fs::read_to_string(&hgrm_path).unwrap();
    assert!(hgrm.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)\n\n"), "{hgrm}");
    let rows: Vec<Vec<&str>> = hgrm
        .lines()
        .skip(2)
        .take_while(|l| !l.starts_with('#'))
        .map(|l| l.split_whitespace().collect())
        .collect();
    let last = rows.last().unwrap();
    assert_eq!((last[1], last[2]), ("1.000000000000", "3000"));
    let max_ms = json["latency_us"]["max"].as_f64().unwrap() / 1e3;
    assert!(
        (last[0].parse::<f64>().unwrap() - max_ms).abs() < 0.001 + max_ms * 0.001,
        "{last:?} vs {max_ms}"
    );
    assert!(hgrm.contains("Total count    =         3000]"), "{hgrm}");
    // Only the final files are left: no temporary beside them.
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["out.hgrm", "out.svg"]);
}

fn spawn_load(target: SocketAddr, args: &[&str]) -> Spawned {
    let mut cmd = Command::new(LOAD);
    cmd.args(["echo", "-t", &target.to_string(), "-q"]).args(args).stdin(Stdio::null());
    Spawned::spawn(&mut cmd)
}

#[test]
fn sigint_mid_run_prints_the_partial_report_and_exits_0() {
    let server = echo_server();
    let mut load = spawn_load(server.local_addr(), &["-c", "4", "-d", "10m", "--interval", "100ms"]);
    // Running: two interval lines have come.
    load.line_where(TIMEOUT, |l| l.starts_with('['));
    load.line_where(TIMEOUT, |l| l.starts_with('['));
    load.signal(Signal::INT);
    let status = load.wait(TIMEOUT);
    let out = load.stdout_so_far();
    assert!(status.success(), "{status}: {out}{}", load.stderr_so_far());
    assert!(out.contains("[interrupted: what ran until the signal]"), "{out}");
    let window: f64 = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("window"))
        .and_then(|w| w.trim().strip_suffix(" s"))
        .unwrap_or_else(|| panic!("no window line: {out}"))
        .parse()
        .unwrap();
    assert!((0.2..60.0).contains(&window), "{window}");
    assert!(out.contains("errors       0 "), "{out}");
}

#[test]
fn sigterm_with_json_reports_what_ran() {
    let server = echo_server();
    let mut load =
        spawn_load(server.local_addr(), &["-c", "2", "-d", "10m", "--json", "--interval", "100ms"]);
    load.wait_stderr("msg/s", TIMEOUT);
    load.signal(Signal::TERM);
    let status = load.wait(TIMEOUT);
    assert!(status.success(), "{status}: {}", load.stderr_so_far());
    let json: Value = serde_json::from_str(&load.stdout_so_far()).unwrap();
    assert_eq!(json["interrupted"], true);
    assert!(json["messages"]["received"].as_u64().unwrap() > 0);
    assert_eq!(json["errors"]["total"], 0);
}

#[test]
fn a_mode_against_the_wrong_handler_says_so_in_one_line() {
    let chat = start(Server::builder().workers(1), Chat::new(4096));
    let target = chat.local_addr().to_string();
    let out = run(
        Command::new(LOAD).args([
            "echo",
            "-t",
            &target,
            "-c",
            "2",
            "-d",
            "300ms",
            "-q",
            "--drain-timeout",
            "300ms",
        ]),
        TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let hints: Vec<&str> = stderr.lines().filter(|l| l.contains("is this")).collect();
    assert_eq!(hints, ["switchboard-load: no reply echoed what was sent: is this an echo server (switchboard-server --handler echo)?"], "{stderr}");

    let echo = echo_server();
    let target = echo.local_addr().to_string();
    let out = run(
        Command::new(LOAD).args([
            "chat",
            "-t",
            &target,
            "-c",
            "2",
            "-d",
            "300ms",
            "-q",
            "--connect-timeout",
            "300ms",
        ]),
        TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    // An echo server says nothing to a new connection: as if it had not
    // accepted it, which the hint names first.
    assert!(
        stderr.lines().any(|l| l
            == "switchboard-load: nothing came back on any connection: the server did not accept them, \
                or it is not a chat server (switchboard-server --handler chat)?"),
        "{stderr}"
    );
}

#[test]
fn each_mode_help_names_the_handler_it_needs() {
    for (mode, needs) in [("echo", "--handler echo"), ("chat", "--handler chat"), ("file", "--handler file")]
    {
        let out = run(Command::new(LOAD).args([mode, "--help"]), TIMEOUT);
        assert!(out.status.success());
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains(&format!("Needs `switchboard-server {needs}")), "{mode}: {help}");
    }
}
