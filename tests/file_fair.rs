//! The file handler against careless and hostile clients: a storm of `list`
//! requests does not hold up another client, many pipelined requests are
//! all answered in order (none refused), a last request ended by EOF is answered,
//! a trailing `/` on a file is `not a file`, and `list` names only what a
//! request can name.

use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use switchboard::Server;
use switchboard_handlers::file::proto::{self, Header};
use switchboard_handlers::FileGet;
use switchboard_test_support::{connect, random_bytes};

/// `list` requests each storm client sends in one write.
const STORM_LISTS: usize = 64;

fn start(root: &Path) -> Server {
    switchboard_test_support::init_logs();
    let handler = FileGet::new(root, 4096).expect("file handler");
    Server::builder().workers(2).start("127.0.0.1:0", handler).expect("server starts")
}

/// One reply read through the protocol's decoder: the header and the body.
fn read_reply(s: &mut impl Read) -> (Header, Vec<u8>) {
    let mut len = [0u8; proto::LEN_PREFIX];
    s.read_exact(&mut len).expect("a reply, not EOF");
    let len = proto::decode_len(len).unwrap_or_else(|e| panic!("{e}"));
    let mut json = vec![0u8; len];
    s.read_exact(&mut json).expect("the header");
    let header = proto::parse(&json).unwrap_or_else(|e| panic!("{e}"));
    let mut body = vec![0u8; usize::try_from(header.file_size).unwrap()];
    s.read_exact(&mut body).expect("the content");
    (header, body)
}

fn md5_hex(data: &[u8]) -> String {
    proto::hex(&Md5::digest(data))
}

fn assert_eof(s: &mut TcpStream) {
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).expect("EOF");
    assert!(rest.is_empty(), "{} stray bytes", rest.len());
}

#[test]
fn a_list_storm_does_not_hold_up_another_clients_first_get() {
    let dir = switchboard_test_support::temp_dir("storm");
    // Empty files: quick to create and to remove (folders are far slower
    // to remove on some filesystems).
    for i in 0..100_000 {
        fs::File::create(dir.path().join(format!("e{i:06}"))).unwrap();
    }
    let big = random_bytes(1 << 20, 3);
    dir.write("big.bin", &big);
    let server = start(dir.path());
    let addr = server.local_addr();

    // 4 clients, each 64 `list` requests in one write; each reads its
    // answers as they come.
    let storm: Vec<_> = (0..4)
        .map(|_| {
            let mut s = connect(addr);
            s.write_all(&b"list\n".repeat(STORM_LISTS)).unwrap();
            std::thread::spawn(move || {
                (0..STORM_LISTS)
                    .map(|_| {
                        let (h, body) = read_reply(&mut s);
                        assert!(body.is_empty());
                        assert_eq!(h.error, None);
                        h.files.expect("a list").len()
                    })
                    .collect::<Vec<usize>>()
            })
        })
        .collect();

    let mut other = connect(addr);
    let asked = Instant::now();
    other.write_all(b"get big.bin\n").unwrap();
    let (header, body) = read_reply(&mut other);
    let waited = asked.elapsed();
    eprintln!("the first get was answered in {waited:?} during the list storm");
    assert_eq!(header.error, None);
    assert_eq!(header.md5.as_deref(), Some(md5_hex(&big).as_str()));
    assert!(body == big);
    // The requirement itself is a latency bound (issue: 2 s; it was 73 s).
    assert!(waited < Duration::from_secs(2), "the first get waited {waited:?} behind the list storm");

    for t in storm {
        let counts = t.join().expect("a storm client");
        assert_eq!(counts.len(), STORM_LISTS);
        // The root holds 100,001 entries: every answer is cut, never empty.
        assert!(counts.iter().all(|&n| n > 0), "{counts:?}");
    }
}

#[test]
fn a_hundred_pipelined_gets_of_uncached_files_are_all_served_in_order() {
    let dir = switchboard_test_support::temp_dir("pipeline");
    let total = 100;
    // Distinct, uncached files: each first `get` needs the pool, and each
    // waits for the file before it to be written.
    let contents: Vec<Vec<u8>> = (0..total).map(|i| random_bytes(256 * 1024, i as u64 + 1)).collect();
    for (i, c) in contents.iter().enumerate() {
        dir.write(format!("f{i:03}"), c);
    }
    let server = start(dir.path());
    let mut s = connect(server.local_addr());
    let requests: String = (0..total).map(|i| format!("get f{i:03}\n")).collect();
    s.write_all(requests.as_bytes()).unwrap();

    for (i, content) in contents.iter().enumerate() {
        let (h, body) = read_reply(&mut s);
        assert_eq!(h.filename.as_deref(), Some(format!("f{i:03}").as_str()), "replies in request order");
        assert_eq!(h.error, None, "f{i:03}");
        assert!(body == *content, "content of f{i:03}");
    }
    // The connection goes on.
    s.write_all(b"get f099\n").unwrap();
    let (h, body) = read_reply(&mut s);
    assert_eq!(h.error, None);
    assert!(body == contents[99]);
    s.shutdown(Shutdown::Write).unwrap();
    assert_eof(&mut s);
}

#[test]
fn a_last_request_ended_by_eof_is_answered() {
    let dir = switchboard_test_support::temp_dir("eof");
    dir.write("a.txt", b"alpha");
    dir.write("b.txt", b"beta");
    let server = start(dir.path());

    // `printf 'get a.txt' | nc`
    let mut s = connect(server.local_addr());
    s.write_all(b"get a.txt").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let (h, body) = read_reply(&mut s);
    assert_eq!(h, Header::found("a.txt", 5, &Md5::digest(b"alpha").into()));
    assert_eq!(body, b"alpha");
    assert_eof(&mut s);

    // After other requests, ended by CR, and a `list` without its newline.
    let mut s = connect(server.local_addr());
    s.write_all(b"get a.txt\nget b.txt\r").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_reply(&mut s).1, b"alpha");
    assert_eq!(read_reply(&mut s).1, b"beta");
    assert_eof(&mut s);
    let mut s = connect(server.local_addr());
    s.write_all(b"list").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_reply(&mut s).0.files.map(|f| f.len()), Some(2));
    assert_eof(&mut s);
}

#[test]
fn a_trailing_slash_on_a_file_is_not_a_file() {
    let dir = switchboard_test_support::temp_dir("slash");
    dir.write("a.txt", b"a");
    fs::create_dir(dir.path().join("sub")).unwrap();
    dir.write("sub/b", b"b");
    let server = start(dir.path());
    let mut s = connect(server.local_addr());
    for name in ["a.txt/", "a.txt/.", "sub/b/", "sub/", "a.txt//"] {
        s.write_all(format!("get {name}\n").as_bytes()).unwrap();
        let (h, _) = read_reply(&mut s);
        assert_eq!(h, Header::error(name, proto::Reason::NotAFile), "{name}");
    }
    s.write_all(b"get sub/../a.txt\n").unwrap();
    assert_eq!(read_reply(&mut s).1, b"a");
}

#[test]
fn list_leaves_out_names_no_request_can_carry() {
    let dir = switchboard_test_support::temp_dir("unnameable");
    dir.write("plain", b"1");
    dir.write("tab\there", b"22");
    dir.write("new\nline", b"x");
    dir.write("carriage\rreturn", b"x");
    dir.write(OsStr::from_bytes(b"not-utf8-\xff"), b"x");
    fs::create_dir(dir.path().join("bad\ndir")).unwrap();
    dir.write("bad\ndir/inner", b"x");
    let server = start(dir.path());
    let mut s = connect(server.local_addr());
    s.write_all(b"list\n").unwrap();
    let (h, _) = read_reply(&mut s);
    let files: Vec<(String, u64)> = h.files.unwrap().into_iter().map(|e| (e.name, e.size)).collect();
    assert_eq!(files, [("plain".to_owned(), 1), ("tab\there".to_owned(), 2)]);
    assert!(!h.truncated);
    // What is listed can be fetched.
    s.write_all(b"get tab\there\n").unwrap();
    assert_eq!(read_reply(&mut s).1, b"22");
}
