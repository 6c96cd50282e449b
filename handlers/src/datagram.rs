//! echo and upper over UDP: one reply datagram per datagram, never longer
//! than it, and no peer table (`keeps_peers` is false): a reply is all the
//! state, so forged sources hold no memory and get back no more bytes than
//! they sent.

use switchboard::datagram::{DatagramHandler, Reply};
use switchboard::Flow;

use crate::upper::{upper_into, MAX_HELD};
use crate::{Echo, Upper};

/// Each datagram goes back to its sender unchanged, as one datagram.
impl DatagramHandler for Echo {
    type Peer = ();

    fn open(&self, _out: &mut Reply<'_>) {}

    fn datagram(&self, _: &mut (), data: &[u8], out: &mut Reply<'_>) -> Flow {
        // Within the limit: the reply is the same size as the datagram.
        let _ = out.send(data);
        Flow::Continue
    }

    fn keeps_peers(&self) -> bool {
        false
    }
}

/// Each datagram goes back in Unicode upper case (the TCP rules: invalid
/// UTF-8, and an incomplete character at the end, pass through unchanged),
/// as one datagram. Upper case may be longer (`ΐ` → `Ϊ́`, three times the
/// bytes): a reply is cut at the last whole character within the length of
/// the datagram it answers, so a forged source cannot have the server send
/// more than it did (`straße` → `STRASSE` is the same length).
impl DatagramHandler for Upper {
    type Peer = ();

    fn open(&self, _out: &mut Reply<'_>) {}

    fn datagram(&self, _: &mut (), data: &[u8], out: &mut Reply<'_>) -> Flow {
        let mut reply = Vec::with_capacity(data.len() + data.len() / 4 + MAX_HELD);
        let mut held = [0u8; MAX_HELD];
        let n = upper_into(data, &mut reply, &mut held);
        reply.extend_from_slice(&held[..n]);
        let max = data.len();
        if reply.len() > max {
            let mut cut = max;
            while cut > 0 && (reply[cut] & 0xc0) == 0x80 {
                cut -= 1;
            }
            reply.truncate(cut);
        }
        let _ = out.send(&reply);
        Flow::Continue
    }

    fn keeps_peers(&self) -> bool {
        false
    }
}
