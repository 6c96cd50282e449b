//! Every handler-specific flag of `switchboard-server`, given to each
//! handler it does not apply to: a usage error (exit 2) naming the handlers
//! it belongs to, and nothing listens.

use std::process::Command;

use switchboard_bins::server_args::{handler_flags, HandlerName};
use switchboard_test_support::child::run;
use switchboard_test_support::{temp_dir, TIMEOUT};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard-server");

const HANDLERS: [HandlerName; 5] =
    [HandlerName::Echo, HandlerName::Upper, HandlerName::Chat, HandlerName::File, HandlerName::Proxy];

/// A valid value for each handler-specific flag that takes one (`None`: a
/// switch), and flags it needs beside it. A flag missing here fails the
/// test, so a new flag is tested as soon as it is declared.
fn sample(flag: &str, dir: &str) -> Option<(Option<String>, Vec<String>)> {
    let v = |s: &str| Some(s.to_owned());
    let file = format!("{dir}/some-file");
    let value = match flag {
        "max-frame" => v("100"),
        "accept-unterminated" => v("200ms"),
        "chat-rate" => v("5"),
        "chat-room-rate" => v("64KiB"),
        "chat-who-addresses" | "console" | "udp" => None,
        "console-nick" => v("sysop"),
        "redis" => v("redis://127.0.0.1:1"),
        "redis-url-file" | "redis-ca" | "accounts" => Some(file),
        "redis-lease" => v("3s"),
        "redis-queue" => v("16"),
        "root" => v(dir),
        "udp-idle" => v("1m"),
        "backend" => v("127.0.0.1:1,127.0.0.1:2"),
        "proxy-protocol-out" => v("v2"),
        "backend-connect-timeout" => v("2s"),
        _ => return None,
    };
    // --redis-ca needs a Redis URL beside it (clap checks that first).
    let beside = match flag {
        "redis-ca" => vec!["--redis".to_owned(), "redis://127.0.0.1:1".to_owned()],
        _ => Vec::new(),
    };
    Some((value, beside))
}

#[test]
fn every_handler_flag_given_to_another_handler_exits_2_naming_its_handlers() {
    let dir = temp_dir("handler-flags");
    let dir = dir.path().to_str().unwrap().to_owned();
    let flags = handler_flags();
    assert!(flags.len() >= 19, "the handler-specific flags: {flags:?}");
    let mut checked = 0;
    for (flag, owners) in &flags {
        let (value, beside) =
            sample(flag, &dir).unwrap_or_else(|| panic!("--{flag}: add a sample value to this test"));
        let owners_text = match owners.iter().map(|h| h.as_str()).collect::<Vec<_>>().as_slice() {
            [one] => one.to_string(),
            [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
            [] => panic!("--{flag} has no handler"),
        };
        for handler in HANDLERS.iter().filter(|h| !owners.contains(h)) {
            let mut cmd = Command::new(BIN);
            cmd.args(["--listen", "127.0.0.1:0", "--handler", handler.as_str()])
                .env_remove("SWITCHBOARD_REDIS_URL")
                .arg(format!("--{flag}"));
            cmd.args(value.iter()).args(&beside);
            if *handler == HandlerName::File && flag != "root" {
                cmd.args(["--root", &dir]);
            }
            if *handler == HandlerName::Proxy {
                cmd.args(["--backend", "127.0.0.1:1"]);
            }
            let out = run(&mut cmd, TIMEOUT);
            let err = String::from_utf8_lossy(&out.stderr);
            let why = format!("--{flag} applies to --handler {owners_text}, not {}", handler.as_str());
            assert_eq!(out.status.code(), Some(2), "--{flag} with {}: {err}", handler.as_str());
            assert!(err.contains(&why), "--{flag} with {}: want {why:?} in {err}", handler.as_str());
            assert!(err.contains("Usage: switchboard-server"), "{err}");
            assert!(out.stdout.is_empty(), "--{flag} with {} listened", handler.as_str());
            checked += 1;
        }
    }
    // 19 flags: 2 line flags x 3 handlers, 11 chat flags x 4, root x 4, 3 proxy
    // flags x 4, 2 UDP flags x 2.
    assert_eq!(checked, flags.len() * 5 - flags.iter().map(|(_, o)| o.len()).sum::<usize>());
    assert!(checked >= 70, "{checked} cases");
}
