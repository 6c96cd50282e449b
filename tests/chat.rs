//! The chat handler over real sockets: PROTOCOLS.md "chat".
//!
//! Synchronisation is by lines only: after a connect the test waits for its
//! `* welcome`, and a line is known to be handled once some client has
//! received what it causes.

use std::net::TcpStream;
use std::time::Duration;

use switchboard::Server;
use switchboard_handlers::Chat;
use switchboard_test_support::{start, ChatClient as Client};

fn server() -> Server {
    start(Server::builder().workers(2), Chat::new(4096))
}

/// Three members, guest-1 to guest-3, each past the others' join notices.
fn three_members(addr: std::net::SocketAddr) -> (Client, Client, Client) {
    let (mut a, _) = Client::join(addr);
    let (mut b, _) = Client::join(addr);
    let (c, _) = Client::join(addr);
    a.expect("* guest-2 joined");
    a.expect("* guest-3 joined");
    b.expect("* guest-3 joined");
    (a, b, c)
}

#[test]
fn welcome_and_joined() {
    let server = server();
    let addr = server.local_addr();
    let (mut a, na) = Client::join(addr);
    assert_eq!(na, "guest-1");
    let (mut b, nb) = Client::join(addr);
    assert_eq!(nb, "guest-2");
    a.expect("* guest-2 joined");
    b.expect_nothing_before_who("guest-1, guest-2");
    a.expect_nothing_before_who("guest-1, guest-2");
}

#[test]
fn text_goes_to_every_other_member_only() {
    let server = server();
    let addr = server.local_addr();
    let (mut a, mut b, mut c) = three_members(addr);
    a.send("some text");
    b.expect("<guest-1> some text");
    c.expect("<guest-1> some text");
    // The sender gets nothing back.
    a.expect_nothing_before_who("guest-1, guest-2, guest-3");
    // Text is sent as is: spaces, slashes inside, "quit" with more.
    for line in ["  spaced  ", "a/b", " /who", "quit now", "Quit", "名前 😀"] {
        a.send(line);
        b.expect(&format!("<guest-1> {line}"));
    }
}

#[test]
fn a_last_line_without_its_newline_reaches_the_room_when_the_member_half_closes() {
    let server = server();
    let addr = server.local_addr();
    let (mut a, _) = Client::join(addr);
    let (mut b, _) = Client::join(addr);
    a.expect("* guest-2 joined");
    b.send_raw(b"bye for now");
    b.stream().shutdown(std::net::Shutdown::Write).unwrap();
    a.expect("<guest-2> bye for now");
    a.expect("* guest-2 left");
    // A command too: the last line is a line like any other.
    let (mut c, _) = Client::join(addr);
    a.expect("* guest-3 joined");
    c.send_raw(b"/who\r");
    c.stream().shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(c.lines_to_eof(), ["* online: guest-1, guest-3"]);
}

#[test]
fn nick_changes_and_rules() {
    let server = server();
    let addr = server.local_addr();
    let (mut a, _) = Client::join(addr);
    let (mut b, _) = Client::join(addr);
    a.expect("* guest-2 joined");

    a.send("/nick alice");
    a.expect("* you are now alice");
    b.expect("* guest-1 is now alice");
    a.send("hi");
    b.expect("<alice> hi");

    // Taken, ignoring case, by someone else.
    b.send("/nick ALICE");
    b.expect("! nick taken");
    b.send("/nick Alice");
    b.expect("! nick taken");
    // Invalid: empty, spaces, punctuation, too long, a symbol.
    let long = "x".repeat(33);
    for bad in
        ["/nick", "/nick ", "/nick a b", "/nick bob!", "/nick a.b", &format!("/nick {long}"), "/nick 😀"]
    {
        b.send(bad);
        b.expect("! invalid nick");
    }
    // Any script, digits, _ and -, up to 32 characters.
    let max = "é".repeat(32);
    for good in ["名前", "Ünï_cödé-2", max.as_str(), "bob"] {
        b.send(&format!("/nick {good}"));
        b.expect(&format!("* you are now {good}"));
    }
    a.expect("* guest-2 is now 名前");
    a.expect("* 名前 is now Ünï_cödé-2");
    a.expect(&format!("* Ünï_cödé-2 is now {max}"));
    a.expect(&format!("* {max} is now bob"));
    // Changing only the case of one's own nick is allowed.
    a.send("/nick ALICE");
    a.expect("* you are now ALICE");
    b.expect("* alice is now ALICE");
    // A freed nick can be taken, and the old one is free.
    b.send("/nick alice");
    b.expect("! nick taken");
    b.send("/nick guest-1");
    b.expect("* you are now guest-1");
    a.expect("* bob is now guest-1");
    // A guest number taken by a nick is skipped for the next joiner.
    b.send("/nick guest-3");
    b.expect("* you are now guest-3");
    a.expect("* guest-1 is now guest-3");
    let (_c, nc) = Client::join(addr);
    assert_eq!(nc, "guest-4");
}

#[test]
fn who_is_sorted_ignoring_case() {
    let server = server();
    let addr = server.local_addr();
    let (mut a, mut b, mut c) = three_members(addr);
    let mut clients = [a, b, c];
    for (i, nick) in [(0, "carol"), (1, "Bob"), (2, "alice")] {
        let guest = format!("guest-{}", i + 1);
        clients[i].send(&format!("/nick {nick}"));
        clients[i].expect(&format!("* you are now {nick}"));
        for (j, other) in clients.iter_mut().enumerate() {
            if j != i {
                other.expect(&format!("* {guest} is now {nick}"));
            }
        }
    }
    [a, b, c] = clients;
    c.send("/who");
    c.expect("* online: alice, Bob, carol");
    b.send("/nick Carl");
    b.expect("* you are now Carl");
    c.expect("* Bob is now Carl");
    c.send("/who");
    c.expect("* online: alice, Carl, carol");
    a.expect("* Bob is now Carl");
}

/// `who_addresses` (`--chat-who-addresses`) lists each member with its
/// address, in the same order; without it (the `welcome_and_joined` and
/// `who_is_sorted_ignoring_case` rooms) nicks stand alone.
#[test]
fn who_can_show_each_members_address() {
    let server = start(Server::builder().workers(2), Chat::new(4096).who_addresses(true));
    let addr = server.local_addr();
    let (mut a, _) = Client::join(addr);
    let (mut b, _) = Client::join(addr);
    a.expect("* guest-2 joined");
    let (a_addr, b_addr) = (a.stream().local_addr().unwrap(), b.stream().local_addr().unwrap());
    b.send("/nick Bob");
    b.expect("* you are now Bob");
    a.expect("* guest-2 is now Bob");
    a.send("/who");
    a.expect(&format!("* online: Bob ({b_addr}), guest-1 ({a_addr})"));
}

#[test]
fn private_messages() {
    let server = server();
    let addr = server.local_addr();
    let (mut a, mut b, mut c) = three_members(addr);
    b.send("/nick bob");
    b.expect("* you are now bob");
    a.expect("* guest-2 is now bob");
    c.expect("* guest-2 is now bob");

    a.send("/msg bob hello  there");
    b.expect("*guest-1* hello  there");
    // Names match ignoring case.
    a.send("/msg BOB again");
    b.expect("*guest-1* again");
    // Only bob got them.
    c.expect_nothing_before_who("bob, guest-1, guest-3");
    a.expect_nothing_before_who("bob, guest-1, guest-3");

    a.send("/msg nobody hi");
    a.expect("! no such user nobody");
    a.send("/msg");
    a.expect("! usage: /msg NAME text");
    a.send("/msg bob");
    a.expect("! usage: /msg NAME text");
    a.send("/msg bob   ");
    a.expect("! usage: /msg NAME text");
    // To oneself.
    a.send("/msg guest-1 note to self");
    a.expect("*guest-1* note to self");
    b.expect_nothing_before_who("bob, guest-1, guest-3");
}

#[test]
fn help_unknown_and_empty_lines() {
    let server = server();
    let (mut a, _) = Client::join(server.local_addr());
    a.send("/help");
    let mut help = Vec::new();
    for _ in 0..5 {
        help.push(a.line());
    }
    for (line, cmd) in help.iter().zip(["/nick NAME", "/who", "/msg NAME text", "/help", "/quit"]) {
        assert!(line.starts_with(&format!("* {cmd} ")), "help line {line:?} for {cmd}");
    }
    a.expect_nothing_before_who("guest-1");

    a.send("/other");
    a.expect("! unknown command /other");
    a.send("/other with args");
    a.expect("! unknown command /other");
    a.send("/");
    a.expect("! unknown command /");
    a.send("/WHO");
    a.expect("! unknown command /WHO");

    // Empty lines, LF or CRLF, get no answer.
    a.send_raw(b"\n\r\n\n");
    a.expect_nothing_before_who("guest-1");
}

#[test]
fn quit_and_leave_notices() {
    let server = server();
    let addr = server.local_addr();
    let (mut a, _) = Client::join(addr);
    let (mut b, _) = Client::join(addr);
    let (mut c, _) = Client::join(addr);
    let (d, _) = Client::join(addr);
    for n in 2..=4 {
        a.expect(&format!("* guest-{n} joined"));
    }
    b.expect("* guest-3 joined");
    b.expect("* guest-4 joined");
    c.expect("* guest-4 joined");
    b.send("/quit");
    b.expect("* bye");
    assert_eq!(b.lines_to_eof(), Vec::<String>::new(), "closed after the bye");
    a.expect("* guest-2 left");
    c.expect("* guest-2 left");

    c.send("quit");
    c.expect("* bye");
    assert_eq!(c.lines_to_eof(), Vec::<String>::new());
    a.expect("* guest-3 left");

    // A peer that just goes away (EOF) is announced too.
    drop(d);
    a.expect("* guest-4 left");
    a.expect_nothing_before_who("guest-1");
}

#[test]
fn bad_input_is_handled() {
    let server = start(Server::builder().workers(2), Chat::new(64));
    let addr = server.local_addr();
    let (mut a, _) = Client::join(addr);
    let (mut b, _) = Client::join(addr);
    a.expect("* guest-2 joined");

    // Invalid UTF-8 becomes U+FFFD, in text and in commands.
    b.send_raw(b"caf\xe9 \xff\xfe\n");
    a.expect("<guest-2> caf\u{fffd} \u{fffd}\u{fffd}");
    b.send_raw(b"/nick b\xff\n");
    b.expect("! invalid nick");
    // NUL bytes, like every control character, arrive as U+FFFD.
    b.send_raw(b"a\0b\0\n");
    a.expect("<guest-2> a\u{fffd}b\u{fffd}");
    // CRLF: the CR is not part of the line.
    b.send_raw(b"crlf\r\n/who\r\n");
    a.expect("<guest-2> crlf");
    b.expect("* online: guest-1, guest-2");

    // One byte over the limit: an error, the line is dropped, the
    // connection stays.
    b.send(&"y".repeat(65));
    b.expect("! line too long");
    // Exactly the limit is fine, with LF or CRLF.
    let max = "z".repeat(64);
    b.send(&max);
    a.expect(&format!("<guest-2> {max}"));
    b.send_raw(format!("{max}\r\n").as_bytes());
    a.expect(&format!("<guest-2> {max}"));
    b.send("still here");
    a.expect("<guest-2> still here");
    // Nothing of the long line reached a.
    a.expect_nothing_before_who("guest-1, guest-2");
    b.expect_nothing_before_who("guest-1, guest-2");
}

#[test]
fn far_over_long_lines_keep_the_connection() {
    let server = start(Server::builder().workers(2), Chat::new(64));
    let addr = server.local_addr();
    let (mut a, _) = Client::join(addr);
    let (mut b, _) = Client::join(addr);
    a.expect("* guest-2 joined");
    let long = "y".repeat(200);
    b.send(&long);
    b.expect("! line too long");
    b.send("next");
    a.expect("<guest-2> next");
    // Several in one write, and one far over the limit: each answered once.
    b.send_raw(format!("{long}\nok1\n{long}\r\nok2\n{}\n", "w".repeat(100_000)).as_bytes());
    b.expect("! line too long");
    b.expect("! line too long");
    b.expect("! line too long");
    a.expect("<guest-2> ok1");
    a.expect("<guest-2> ok2");
    b.send("still here");
    a.expect("<guest-2> still here");
    a.expect_nothing_before_who("guest-1, guest-2");
    b.expect_nothing_before_who("guest-1, guest-2");
}

#[test]
fn three_members_see_everything_in_order() {
    let server = server();
    let addr = server.local_addr();
    let (mut a, _) = Client::join(addr);
    let (mut b, _) = Client::join(addr);
    a.expect("* guest-2 joined");
    let (mut c, _) = Client::join(addr);
    a.expect("* guest-3 joined");
    b.expect("* guest-3 joined");

    a.send("/nick ann");
    a.expect("* you are now ann");
    for i in 0..20 {
        a.send(&format!("message {i}"));
    }
    a.send("/msg guest-3 psst");
    a.send("last");
    for other in [&mut b, &mut c] {
        other.expect("* guest-1 is now ann");
        for i in 0..20 {
            other.expect(&format!("<ann> message {i}"));
        }
    }
    c.expect("*ann* psst");
    b.expect("<ann> last");
    c.expect("<ann> last");

    c.send("/nick cy");
    c.expect("* you are now cy");
    a.expect("* guest-3 is now cy");
    b.expect("* guest-3 is now cy");
    b.send("from b");
    a.expect("<guest-2> from b");
    c.expect("<guest-2> from b");

    drop(b);
    a.expect("* guest-2 left");
    c.expect("* guest-2 left");
    c.send("bye all");
    a.expect("<cy> bye all");
    a.expect_nothing_before_who("ann, cy");
}

#[test]
fn slow_member_is_cut_off_and_the_others_carry_on() {
    let server = start(
        Server::builder().workers(2).max_outbound(64 << 10).high_water(16 << 10),
        Chat::new(4096).rate_limit(0),
    );
    let addr = server.local_addr();
    let (mut watcher, _) = Client::join(addr);
    let (mut flooder, _) = Client::join(addr);
    watcher.expect("* guest-2 joined");
    // Never reads a byte.
    let slow = TcpStream::connect(addr).expect("connect");
    watcher.expect("* guest-3 joined");
    flooder.expect("* guest-3 joined");

    // Batches of 8 lines of ~4 KB: the watcher reads each whole batch
    // before the next is sent, so it never has more than 32 KB pending,
    // while the slow member's queue grows until the server cuts it off.
    let pad = "x".repeat(4000);
    let mut cut_off = false;
    let mut batch = 0;
    while !cut_off {
        batch += 1;
        assert!(batch <= 2000, "the slow member was not cut off after {} MB", batch * 32 / 1000);
        let mut out = String::new();
        for i in 0..8 {
            out.push_str(&format!("{batch}.{i} {pad}\n"));
        }
        flooder.send_raw(out.as_bytes());
        let last = format!("<guest-2> {batch}.7 {pad}");
        loop {
            let line = watcher.line();
            if line == "* guest-3 left (too slow)" {
                cut_off = true;
            } else if line == last {
                break;
            } else {
                assert!(line.starts_with(&format!("<guest-2> {batch}.")), "unexpected line {line:?}");
            }
        }
    }
    flooder.expect("* guest-3 left (too slow)");
    // The others are still served.
    flooder.send("after");
    watcher.expect("<guest-2> after");
    flooder.expect_nothing_before_who("guest-1, guest-2");
    watcher.expect_nothing_before_who("guest-1, guest-2");
    assert_eq!(server.stats().slow_consumer_disconnects, 1);
    drop(slow);
}

#[test]
fn members_hear_the_server_shutting_down() {
    let server = start(
        Server::builder().workers(2).quiet_period(Duration::from_millis(100)).grace(Duration::from_secs(5)),
        Chat::new(4096),
    );
    let addr = server.local_addr();
    let (mut a, _) = Client::join(addr);
    let (mut b, _) = Client::join(addr);
    a.expect("* guest-2 joined");
    server.shutdown_handle().drain();
    a.expect("* server shutting down");
    b.expect("* server shutting down");
    // Then the server closes both; one may hear the other leave first.
    for (client, other) in [(&mut a, "guest-2"), (&mut b, "guest-1")] {
        for line in client.lines_to_eof() {
            assert_eq!(line, format!("* {other} left"));
        }
    }
    drop((a, b));
    let report = server.wait();
    assert_eq!(report.forced, 0, "{report}");
}

#[test]
fn members_closed_by_a_timeout_are_announced() {
    let server =
        start(Server::builder().workers(2).frame_timeout(Duration::from_millis(200)), Chat::new(4096));
    let addr = server.local_addr();
    let (mut a, _) = Client::join(addr);
    let (mut b, _) = Client::join(addr);
    a.expect("* guest-2 joined");
    // Half a line, never finished: the frame timeout closes b.
    b.send_raw(b"never ends");
    a.expect("* guest-2 left");
    assert_eq!(b.lines_to_eof(), Vec::<String>::new());
    assert_eq!(server.stats().timed_out, 1);
    a.expect_nothing_before_who("guest-1");
}
