//! The command line of the two floors (`floor-echo`, `uring-floor-echo`):
//! `NAME [--listen ADDR]`, default 127.0.0.1:0; the server prints
//! `listening on ADDR` as its first line.

use std::io;
use std::process::ExitCode;

/// Parses the arguments and runs `serve` on the address: exit 2 on a bad
/// argument, 1 with the reason when `serve` fails.
pub(crate) fn run(name: &str, serve: fn(&str) -> io::Result<()>) -> ExitCode {
    let mut listen = String::from("127.0.0.1:0");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--listen", Some(v)) => listen = v,
            _ => {
                eprintln!("usage: {name} [--listen ADDR]");
                return ExitCode::from(2);
            }
        }
    }
    match serve(&listen) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::FAILURE
        }
    }
}
