//! The chat's input path: bytes cut into lines by the chat's framing, made
//! UTF-8 (lossily, as the handler does), parsed as a command, account
//! commands included. Parsing never panics and every part it returns is a
//! piece of the line, as documented.
#![no_main]

use switchboard_test_support::lines;

use libfuzzer_sys::fuzz_target;
use switchboard_handlers::chat::{parse, valid_nick, Command};

fn check_line(line: &str) {
    // Every non-empty part borrows from the line (an empty one may be a
    // literal "").
    let within = |part: &str| {
        if part.is_empty() {
            return;
        }
        let (start, end) = (part.as_ptr() as usize, part.as_ptr() as usize + part.len());
        let (lo, hi) = (line.as_ptr() as usize, line.as_ptr() as usize + line.len());
        assert!(lo <= start && end <= hi, "{part:?} is not a piece of {line:?}");
    };
    match parse(line) {
        Command::Empty => assert!(line.is_empty()),
        Command::Text(t) => {
            assert_eq!(t, line);
            assert!(!line.starts_with('/') && line != "quit");
        }
        Command::Nick(n) => {
            within(n);
            assert!(line.starts_with("/nick"));
            assert_eq!(n, n.trim());
        }
        Command::Msg { to, text } => {
            within(to);
            within(text);
            assert!(line.starts_with("/msg"));
            assert!(!to.is_empty() && !to.contains(char::is_whitespace), "{to:?}");
            assert!(!text.is_empty() && !text.starts_with(char::is_whitespace), "{text:?}");
        }
        Command::Register { name, password } | Command::Login { name, password } => {
            within(name);
            within(password);
            assert!(line.starts_with("/register") || line.starts_with("/login"));
            assert!(!name.is_empty() && !name.contains(char::is_whitespace), "{name:?}");
            // The password keeps its inner spaces; its ends are trimmed.
            assert!(!password.is_empty() && password == password.trim(), "{password:?}");
        }
        Command::AccountUsage(w) => {
            within(w);
            assert!(matches!(w, "/register" | "/login"), "{w:?}");
            assert!(line.starts_with(w));
        }
        Command::Unknown(w) => {
            within(w);
            assert!(line.starts_with(w) && w.starts_with('/'));
            assert!(!w.contains(char::is_whitespace));
            let known = ["/nick", "/who", "/help", "/quit", "/msg", "/register", "/login"];
            assert!(!known.contains(&w), "{w:?}");
        }
        Command::Who | Command::Help | Command::Quit | Command::MsgUsage => {
            assert!(line.starts_with('/') || line == "quit");
        }
    }
    if valid_nick(line) {
        let n = line.chars().count();
        assert!((1..=32).contains(&n), "{line:?}");
        assert!(line.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '-'), "{line:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    // Each line, and the last one even without its newline.
    lines::for_each_line(data, 4096, |line| check_line(&String::from_utf8_lossy(line)));
    // The raw input as one line.
    if let Ok(s) = std::str::from_utf8(data) {
        check_line(s);
    }
});
