//! Chat over UDP, in the same room as TCP members.
//!
//! A datagram is one line or several, split on LF (a CR before the LF is
//! dropped, and the end of the datagram ends its last line). A peer joins on
//! its first datagram and leaves after the server's UDP idle time or at
//! `/quit`. Everything sent to a UDP member goes as datagrams of at most
//! [`MAX_CHAT_DATAGRAM`] bytes, each holding whole lines; a longer line is
//! split into several datagrams (at character boundaries).
//!
//! A source address may be forged, so a member hears the room only once it
//! has proven it receives at its address: the welcome datagram carries a
//! cookie line (`* cookie HEX`), and the member sends `/cookie HEX` back.
//! Until then it may speak, and its own replies (`/who`, `/help`, errors)
//! stay within the core's budget of three times what it sent.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use switchboard::datagram::{DatagramHandler, DatagramSender, PeerClose, Reply};
use switchboard::{Flow, SendError};

use super::member::{Member, Remote};
use super::remote::RemoteSession;
use super::reply;
use super::Chat;

/// The largest datagram sent to a UDP chat member: it fits the smallest
/// path MTU of IPv6 (1,280 bytes) with its headers, so it is never
/// fragmented.
pub const MAX_CHAT_DATAGRAM: usize = 1200;

/// Room ids of UDP members start here, far above any TCP connection id.
const FIRST_UDP_ID: u64 = 1 << 48;

static NEXT_UDP_ID: AtomicU64 = AtomicU64::new(FIRST_UDP_ID);

/// The command that proves a UDP member receives at its address:
/// `/cookie HEX`, with the cookie of the welcome datagram's `* cookie HEX`.
pub const COOKIE_COMMAND: &str = "/cookie";

/// The `/help` line of the one command only UDP members have.
const HELP_COOKIE: &str = "* /cookie HEX      prove you receive at your address, to hear the room\n";

/// The line that gives a UDP member its cookie: `* cookie HEX`.
fn cookie_line(cookie: &str) -> String {
    format!("* cookie {cookie}\n")
}

/// The cookie in a datagram from the server, if it holds a `* cookie HEX`
/// line (what `switchboard-client --udp` answers with `/cookie HEX`).
pub fn cookie_in(datagram: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(datagram).ok()?;
    text.lines().find_map(|line| {
        let hex = line.strip_prefix("* cookie ")?;
        (hex.len() == switchboard::datagram::COOKIE_LEN && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .then_some(hex)
    })
}

/// A UDP member as the room reaches it.
#[derive(Debug)]
struct UdpMember {
    id: u64,
    addr: SocketAddr,
    sender: DatagramSender,
    /// It sent its cookie back: room traffic may go to its address.
    proven: AtomicBool,
}

impl Remote for UdpMember {
    fn id(&self) -> u64 {
        self.id
    }

    fn addr(&self) -> Option<SocketAddr> {
        Some(self.addr)
    }

    fn deliver(&self, msg: &[u8]) -> Result<(), SendError> {
        // An unproven address may be a forged one: it hears nothing.
        if !self.proven.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut result = Ok(());
        for d in datagrams(msg, MAX_CHAT_DATAGRAM) {
            if self.sender.send_to(self.addr, d).is_err() {
                result = Err(SendError::Dropped);
            }
        }
        result
    }
}

/// Cuts `msg` into datagrams of at most `max` bytes: whole lines packed
/// together, a line longer than `max` cut at character boundaries.
pub(crate) fn datagrams(msg: &[u8], max: usize) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < msg.len() {
        let rest = &msg[start..];
        if rest.len() <= max {
            out.push(rest);
            break;
        }
        // The last LF within the limit ends this datagram; else cut the line.
        let end = match rest[..max].iter().rposition(|&b| b == b'\n') {
            Some(lf) => lf + 1,
            None => {
                let mut cut = max;
                while cut > 1 && (rest[cut] & 0xc0) == 0x80 {
                    cut -= 1;
                }
                cut
            }
        };
        out.push(&rest[..end]);
        start += end;
    }
    out
}

/// A UDP member's state.
#[derive(Debug)]
pub struct UdpChatPeer {
    session: RemoteSession,
    member: Arc<UdpMember>,
}

fn send_lines(out: &mut Reply<'_>, text: &str) {
    for d in datagrams(text.as_bytes(), MAX_CHAT_DATAGRAM) {
        let _ = out.send(d);
    }
}

/// A UDP member's replies: datagrams of whole lines.
impl reply::Reply for Reply<'_> {
    fn send(&mut self, text: &str) {
        send_lines(self, text);
    }
}

impl Chat {
    /// `/cookie HEX`: the member proves it receives at its address, and
    /// hears the room from now on; a wrong cookie gets a fresh one.
    fn prove(&self, peer: &mut UdpChatPeer, cookie: &[u8], out: &mut Reply<'_>) {
        if out.prove(cookie) {
            if !peer.member.proven.swap(true, Ordering::AcqRel) {
                log::debug!("chat: udp member {} proved its address", out.addr());
            }
            send_lines(out, "* cookie accepted: you hear the room\n");
        } else {
            send_lines(out, &format!("! wrong cookie\n{}", cookie_line(&out.cookie())));
        }
    }
}

/// The chat over UDP: see the module's docs and PROTOCOLS.md.
impl DatagramHandler for Chat {
    type Peer = UdpChatPeer;

    fn open(&self, out: &mut Reply<'_>) -> UdpChatPeer {
        let id = NEXT_UDP_ID.fetch_add(1, Ordering::Relaxed);
        let member = Arc::new(UdpMember {
            id,
            addr: out.addr(),
            sender: out.sender(),
            proven: AtomicBool::new(out.is_proven()),
        });
        let (session, welcome) = self.remote_join(Member::Remote(member.clone()));
        // One small datagram: what even an empty datagram's budget allows.
        send_lines(out, &(welcome + &cookie_line(&out.cookie())));
        UdpChatPeer { session, member }
    }

    fn datagram(&self, peer: &mut UdpChatPeer, data: &[u8], out: &mut Reply<'_>) -> Flow {
        let data = data.strip_suffix(b"\n").unwrap_or(data);
        for line in data.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if let Some(rest) = line.strip_prefix(COOKIE_COMMAND.as_bytes()) {
                if rest.is_empty() || rest[0] == b' ' {
                    self.prove(peer, rest.trim_ascii(), out);
                    continue;
                }
            }
            let flow = self.remote_line(&mut peer.session, line, out, HELP_COOKIE);
            if flow == Flow::Close {
                return Flow::Close;
            }
        }
        Flow::Continue
    }

    fn drain(&self, _peer: &mut UdpChatPeer, out: &mut Reply<'_>) {
        send_lines(out, "* server shutting down\n");
    }

    fn close(&self, mut peer: UdpChatPeer, addr: SocketAddr, reason: PeerClose) {
        peer.member.proven.store(false, Ordering::Release);
        log::debug!("chat: udp member {addr} gone: {reason}");
        self.remote_leave(&mut peer.session);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_line_is_found_in_a_datagram() {
        let d = format!("* welcome guest-1\n{}", cookie_line("0123456789abcdef"));
        assert_eq!(cookie_in(d.as_bytes()), Some("0123456789abcdef"));
        assert_eq!(cookie_in(b"* cookie 0123"), None, "too short");
        assert_eq!(cookie_in(b"<bob> * cookie 0123456789abcdef"), None, "not at a line's start");
        assert_eq!(cookie_in(b"* cookie 0123456789abcdeg"), None, "not hex");
    }

    #[test]
    fn datagrams_hold_whole_lines_and_cut_long_ones() {
        assert_eq!(datagrams(b"a\nb\n", 10), vec![&b"a\nb\n"[..]]);
        assert_eq!(datagrams(b"aaaa\nbbbb\ncc\n", 10), vec![&b"aaaa\nbbbb\n"[..], b"cc\n"]);
        assert_eq!(datagrams(b"0123456789abc\n", 10), vec![&b"0123456789"[..], b"abc\n"]);
        // A two-byte character is never cut in half.
        let s = "aaaaaaaaaé\n".as_bytes();
        assert_eq!(datagrams(s, 10), vec![&s[..9], &s[9..]]);
        assert!(datagrams(b"", 10).is_empty());
        let long = "x".repeat(4000) + "\n";
        let d = datagrams(long.as_bytes(), MAX_CHAT_DATAGRAM);
        assert_eq!(d.iter().map(|d| d.len()).collect::<Vec<_>>(), vec![1200, 1200, 1200, 401]);
    }
}
