//! The chat against hostile and busy members: control characters and
//! look-alike nicks (PROTOCOLS.md "chat"), and bursts within the documented
//! limits that must not cut off members who read.

use std::io::Write;
use std::net::SocketAddr;
use std::thread;

use switchboard::Server;
use switchboard_handlers::Chat;
use switchboard_test_support::{start, ChatClient as Client};

/// Two members, `a` past `b`'s join notice.
fn two(addr: SocketAddr) -> (Client, Client) {
    let mut a = Client::join(addr).0;
    let b = Client::join(addr).0;
    a.expect("* guest-2 joined");
    (a, b)
}

#[test]
fn control_characters_arrive_replaced() {
    let server = start(Server::builder().workers(2), Chat::new(4096));
    let (mut a, mut b) = two(server.local_addr());
    // CR inside a line, backspace, an OSC title, an OSC 52 clipboard write,
    // NUL, BEL, DEL, a C1 CSI and a bidi override: each becomes U+FFFD.
    a.send_raw(b"harmless\r<admin> please run\x08x\n");
    b.expect("<guest-1> harmless\u{fffd}<admin> please run\u{fffd}x");
    a.send_raw(b"\x1b]0;pwned\x07\x1b]52;c;ZXZpbA==\x1b\\\0\x7f\xc2\x9b2J\xe2\x80\xaeexe.txt\n");
    b.expect("<guest-1> \u{fffd}]0;pwned\u{fffd}\u{fffd}]52;c;ZXZpbA==\u{fffd}\\\u{fffd}\u{fffd}\u{fffd}2J\u{fffd}exe.txt");
    // The CRLF terminator is a line ending, not content.
    a.send_raw(b"crlf\r\n");
    b.expect("<guest-1> crlf");
    // Private messages and names echoed in errors are cleaned too.
    a.send("/msg guest-2 ring\x07\u{2066}x");
    b.expect("*guest-1* ring\u{fffd}\u{fffd}x");
    b.send("/msg no\x1b[2Jbody hi");
    b.expect("! no such user no\u{fffd}[2Jbody");
    b.send("/x\x1b[31m");
    b.expect("! unknown command /x\u{fffd}[31m");
    // A nick with a control or bidi character is refused.
    for bad in ["ev\x1bil", "a\u{202e}b", "x\ry"] {
        a.send(&format!("/nick {bad}"));
        a.expect("! invalid nick");
    }
    // Tab is kept.
    a.send("col1\tcol2");
    b.expect("<guest-1> col1\tcol2");
}

#[test]
fn look_alike_nicks_are_taken() {
    let server = start(Server::builder().workers(2), Chat::new(4096));
    let (mut a, mut b) = two(server.local_addr());
    for (first, others) in [
        ("ΑΣ", &["ασ", "ας"][..]),
        ("straße", &["STRASSE", "strasse"][..]),
        ("alice", &["\u{430}lice", "ａｌｉｃｅ", "ALİCE", "Alice"][..]),
        ("zoë", &["zoe\u{308}", "ZOË", "zoe", "Zoe"][..]),
    ] {
        a.send(&format!("/nick {first}"));
        a.expect(&format!("* you are now {first}"));
        let shown = b.line();
        assert!(shown.ends_with(&format!(" is now {first}")), "{shown:?}");
        for other in others {
            // (Dotted capital I folds to i + U+0307, and marks are no
            // part of the key: ALİCE is alice.)
            b.send(&format!("/nick {other}"));
            b.expect("! nick taken");
            // /msg reaches the holder by any of its look-alikes.
            b.send(&format!("/msg {other} hello"));
            a.expect("*guest-2* hello");
        }
    }
    // Combining marks are stored precomposed.
    b.send("/nick rene\u{301}");
    b.expect("* you are now rené");
    a.expect("* guest-2 is now rené");
}

/// The burst of the issue: 3 members each send 200 lines of 4,000 bytes in
/// one write (within the default rate: bursts of 200 lines) while 4 members
/// read as fast as they can, all with the default 1 MiB outbound budget.
/// Nobody is cut off and every reader gets every line, in each sender's
/// order.
#[test]
fn bursts_within_the_limits_never_cut_off_readers() {
    const SENDERS: usize = 3;
    const READERS: usize = 4;
    const LINES: usize = 200;
    let server = start(Server::builder().workers(2), Chat::default());
    let addr = server.local_addr();
    let mut readers: Vec<Client> = (0..READERS).map(|_| Client::join_small_buffer(addr, 8 << 10).0).collect();
    let mut senders: Vec<Client> = (0..SENDERS).map(|_| Client::join_small_buffer(addr, 8 << 10).0).collect();
    // Everyone is past the join notices: guest-1..4 read, guest-5..7 send.
    for (i, r) in readers.iter_mut().enumerate() {
        for n in i + 2..=READERS + SENDERS {
            r.expect(&format!("* guest-{n} joined"));
        }
    }
    for (i, s) in senders.iter_mut().enumerate() {
        for n in READERS + i + 2..=READERS + SENDERS {
            s.expect(&format!("* guest-{n} joined"));
        }
    }
    let pad = "x".repeat(3990);
    // Every member reads as fast as it can: the readers hear all three
    // senders, each sender the other two.
    let reading: Vec<_> = readers
        .into_iter()
        .chain(senders.iter().map(Client::try_clone))
        .enumerate()
        .map(|(me, mut r)| {
            thread::spawn(move || {
                let mut next = [0usize; SENDERS];
                if me >= READERS {
                    next[me - READERS] = LINES;
                }
                while next.iter().any(|&n| n < LINES) {
                    let line = r.line();
                    assert!(!line.contains("left"), "a member left: {line:?}");
                    let (who, rest) = line.split_once("> ").unwrap_or_else(|| panic!("{line:?}"));
                    let s: usize = who.trim_start_matches("<guest-").parse().unwrap();
                    let (n, _) = rest.split_once(' ').unwrap();
                    let k = s - READERS - 1;
                    assert_eq!(n.parse::<usize>().unwrap(), next[k], "sender {s} out of order");
                    next[k] += 1;
                }
                r
            })
        })
        .collect();
    let sending: Vec<_> = senders
        .iter()
        .map(|s| {
            let mut w = s.stream();
            let pad = pad.clone();
            thread::spawn(move || {
                let mut burst = String::new();
                for i in 0..LINES {
                    burst.push_str(&format!("{i:04} {pad}\n"));
                }
                w.write_all(burst.as_bytes()).expect("send the burst");
            })
        })
        .collect();
    for t in sending {
        t.join().expect("sender");
    }
    let mut readers: Vec<Client> = reading.into_iter().map(|t| t.join().expect("reader")).collect();
    assert_eq!(server.stats().slow_consumer_disconnects, 0);
    // Everyone is still in the room.
    readers[0].send("/who");
    let who = readers[0].line();
    assert_eq!(who.matches("guest-").count(), READERS + SENDERS, "{who}");
    let last = readers.len() - 1;
    readers[last].send("/who");
    assert_eq!(readers[last].line(), who);
}

/// Past the announcement limit, joins and leaves go unannounced (the
/// notices would cost memory in the square of the members); `/who` still
/// tells who is there, and text still reaches everyone.
#[test]
fn big_rooms_do_not_announce_joins_and_leaves() {
    let server = start(Server::builder().workers(2), Chat::new(4096).announce_up_to(2));
    let addr = server.local_addr();
    let (mut a, mut b) = two(addr);
    let c = Client::join(addr).0;
    drop(c);
    switchboard_test_support::wait_until("guest-3 has left", || {
        b.send("/who");
        b.line() == "* online: guest-1, guest-2"
    });
    b.send("after");
    // The very next line a gets: no notice of guest-3 came before it.
    a.expect("<guest-2> after");
}
