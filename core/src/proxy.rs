//! The PROXY protocol (HAProxy's, versions 1 and 2): the header a load
//! balancer sends first on each connection, naming the client it accepted.
//! Parsed with the `ppp` crate; bounded in size here (and in time by the
//! handshake timeout). The other direction too: [`ProxyHeader`] writes the
//! header a relay sends first on its outbound connection (the proxy
//! handler's `--proxy-protocol-out`), in the form this parser reads.

use std::fmt;
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::stream::Peer;

use ppp::{v1, v2, HeaderResult, PartialResult};

/// The largest PROXY header taken: a v1 header is at most 107 bytes; a v2
/// header is 16 bytes plus its addresses and TLVs (a cloud load balancer's
/// few TLVs fit with room to spare).
pub(crate) const MAX_HEADER: usize = 4096;

/// What reading the header gave.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// More bytes are needed.
    Incomplete,
    /// A valid header: the client's address (`None`: a `LOCAL` command, an
    /// `UNKNOWN` or non-IP source; the socket's peer stands), and the bytes
    /// read past it, which belong to the stream.
    Header { client: Option<SocketAddr>, rest: Vec<u8> },
}

/// Reads one PROXY header from a socket, a read at a time.
#[derive(Debug, Default)]
pub(crate) struct HeaderReader {
    buf: Vec<u8>,
}

impl HeaderReader {
    /// Reads what the socket has and parses. `Err`: an I/O error, EOF, or
    /// an invalid or oversized header (`InvalidData`, with the reason).
    pub(crate) fn read_from(&mut self, sock: &mut impl Read) -> io::Result<Parsed> {
        let mut chunk = [0u8; MAX_HEADER];
        loop {
            let room = MAX_HEADER - self.buf.len();
            match sock.read(&mut chunk[..room.max(1)]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("closed after {} bytes, before a complete PROXY header", self.buf.len()),
                    ))
                }
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    match parse(&self.buf)? {
                        Parsed::Incomplete if self.buf.len() >= MAX_HEADER => {
                            return Err(invalid(format!("PROXY header over the {MAX_HEADER}-byte limit")))
                        }
                        Parsed::Incomplete => {}
                        done => return Ok(done),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Parsed::Incomplete),
                Err(e) => return Err(e),
            }
        }
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// The client a header names: an IPv4 client written as an IPv4-mapped
/// IPv6 address (`::ffff:a.b.c.d`, as a dual-stack proxy may) is the IPv4
/// client, so it is logged, limited and counted as one address.
fn client(ip: IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(ip.to_canonical(), port)
}

/// Parses a header at the start of `input`.
pub(crate) fn parse(input: &[u8]) -> io::Result<Parsed> {
    let result = HeaderResult::parse(input);
    if result.is_incomplete() {
        // ppp calls a v1 line with a field missing incomplete even once its
        // CRLF has come: no byte after it can complete it.
        if input.starts_with(b"PROXY ") && input.windows(2).any(|w| w == b"\r\n") {
            return Err(invalid("invalid PROXY v1 header: a field is missing".into()));
        }
        return Ok(Parsed::Incomplete);
    }
    let (len, client) = match result {
        HeaderResult::V1(Ok(h)) => {
            let client = match h.addresses {
                v1::Addresses::Tcp4(a) => Some(client(IpAddr::V4(a.source_address), a.source_port)),
                v1::Addresses::Tcp6(a) => Some(client(IpAddr::V6(a.source_address), a.source_port)),
                v1::Addresses::Unknown => None,
            };
            (h.header.len(), client)
        }
        HeaderResult::V2(Ok(h)) => {
            // ppp reads the TLVs only when asked: one whose length runs
            // past the header's end (or bytes too few for a TLV) makes the
            // whole header invalid.
            if h.tlvs().any(|tlv| tlv.is_err()) {
                return Err(invalid("invalid PROXY v2 header: a TLV runs past the header's end".into()));
            }
            let client = match (h.command, h.addresses) {
                (v2::Command::Proxy, v2::Addresses::IPv4(a)) => {
                    Some(client(IpAddr::V4(a.source_address), a.source_port))
                }
                (v2::Command::Proxy, v2::Addresses::IPv6(a)) => {
                    Some(client(IpAddr::V6(a.source_address), a.source_port))
                }
                _ => None,
            };
            (h.len(), client)
        }
        HeaderResult::V1(Err(e)) => return Err(invalid(format!("invalid PROXY v1 header: {e}"))),
        HeaderResult::V2(Err(e)) => return Err(invalid(format!("invalid PROXY v2 header: {e}"))),
    };
    Ok(Parsed::Header { client, rest: input[len..].to_vec() })
}

/// The PROXY protocol version a [`ProxyHeader`] is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProxyVersion {
    /// Version 1: one text line, `PROXY TCP4 SRC DST SPORT DPORT\r\n`
    /// (at most 107 bytes).
    V1,
    /// Version 2: a binary header, 16 bytes and the addresses (28 bytes
    /// for IPv4, 52 for IPv6).
    V2,
}

impl fmt::Display for ProxyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProxyVersion::V1 => "v1",
            ProxyVersion::V2 => "v2",
        })
    }
}

/// The PROXY header a relay sends first on its connection to a backend,
/// naming the client it accepted (`source`) and the address that client
/// connected to (`destination`), so that the backend sees the client as
/// if it had connected directly (HAProxy's `send-proxy`, `send-proxy-v2`).
///
/// - Both IP: `TCP4` when both are IPv4, else `TCP6` (an IPv4 address
///   beside an IPv6 one written IPv4-mapped, `::ffff:a.b.c.d`, which the
///   reader takes back as the IPv4 address). A destination not known is
///   the unspecified address of the source's family, port 0.
/// - A client over a Unix socket has no address to tell: v1 writes
///   `PROXY UNKNOWN\r\n` and v2 the `LOCAL` command, after which the
///   backend takes the relay's own address as the peer's.
///
/// ```
/// use switchboard::{Peer, ProxyHeader, ProxyVersion};
///
/// let client = Peer::Ip("203.0.113.7:51234".parse().unwrap());
/// let header = ProxyHeader::new(client, Some("192.0.2.1:7000".parse().unwrap()));
/// assert_eq!(header.encode(ProxyVersion::V1), b"PROXY TCP4 203.0.113.7 192.0.2.1 51234 7000\r\n");
/// assert_eq!(header.encode(ProxyVersion::V2).len(), 16 + 12);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHeader {
    /// The client's address; `None`: unknown (a Unix socket client).
    source: Option<SocketAddr>,
    destination: Option<SocketAddr>,
}

impl ProxyHeader {
    /// The header for `client`, which connected to `destination` (the
    /// relay's listening address, if known).
    pub fn new(client: Peer, destination: Option<SocketAddr>) -> ProxyHeader {
        ProxyHeader { source: client.ip(), destination }
    }

    /// The source and destination as they are written: both of one family
    /// (`None`: unknown, written `UNKNOWN` / `LOCAL`).
    fn addresses(&self) -> Option<(SocketAddr, SocketAddr)> {
        let src = self.source?;
        let dst = self.destination.unwrap_or_else(|| match src {
            SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
        });
        let (src_ip, dst_ip) = (src.ip().to_canonical(), dst.ip().to_canonical());
        let (src_ip, dst_ip) = match (src_ip, dst_ip) {
            (IpAddr::V4(s), IpAddr::V4(d)) => (IpAddr::V4(s), IpAddr::V4(d)),
            (s, d) => (IpAddr::V6(v6(s)), IpAddr::V6(v6(d))),
        };
        Some((SocketAddr::new(src_ip, src.port()), SocketAddr::new(dst_ip, dst.port())))
    }

    /// The header's bytes in `version`.
    pub fn encode(&self, version: ProxyVersion) -> Vec<u8> {
        let addresses = self.addresses();
        match version {
            ProxyVersion::V1 => match addresses {
                None => b"PROXY UNKNOWN\r\n".to_vec(),
                Some((src, dst)) => {
                    let family = if src.is_ipv4() { "TCP4" } else { "TCP6" };
                    format!("PROXY {family} {} {} {} {}\r\n", src.ip(), dst.ip(), src.port(), dst.port())
                        .into_bytes()
                }
            },
            ProxyVersion::V2 => {
                let built = match addresses {
                    None => v2::Builder::with_addresses(
                        v2::Version::Two | v2::Command::Local,
                        v2::Protocol::Unspecified,
                        v2::Addresses::Unspecified,
                    ),
                    Some(pair) => v2::Builder::with_addresses(
                        v2::Version::Two | v2::Command::Proxy,
                        v2::Protocol::Stream,
                        pair,
                    ),
                }
                .build();
                // ppp fails only on a header over 64 KiB (TLVs): none here.
                built.expect("a PROXY v2 header without TLVs fits its length field")
            }
        }
    }
}

/// An address as IPv6: IPv4 IPv4-mapped.
fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(client: Option<&str>, rest: &[u8]) -> Parsed {
        Parsed::Header { client: client.map(|c| c.parse().unwrap()), rest: rest.to_vec() }
    }

    fn peer(s: &str) -> Peer {
        Peer::Ip(s.parse().unwrap())
    }

    /// Encoded in each version and read back by the parser: the client,
    /// and nothing more consumed than the header.
    fn round_trip(h: ProxyHeader) -> Vec<Option<SocketAddr>> {
        [ProxyVersion::V1, ProxyVersion::V2]
            .into_iter()
            .map(|v| {
                let mut bytes = h.encode(v);
                bytes.extend_from_slice(b"payload");
                match parse(&bytes).unwrap() {
                    Parsed::Header { client, rest } => {
                        assert_eq!(rest, b"payload", "{v}");
                        client
                    }
                    Parsed::Incomplete => panic!("{v}: incomplete"),
                }
            })
            .collect()
    }

    #[test]
    fn written_tcp4_and_tcp6_headers_read_back_as_the_client() {
        let h = ProxyHeader::new(peer("203.0.113.7:51234"), Some("192.0.2.1:7000".parse().unwrap()));
        assert_eq!(h.encode(ProxyVersion::V1), b"PROXY TCP4 203.0.113.7 192.0.2.1 51234 7000\r\n");
        let v2 = h.encode(ProxyVersion::V2);
        // Signature, version 2 PROXY, TCP over IPv4, 12 bytes of addresses.
        assert_eq!(&v2[..16], b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c");
        assert_eq!(&v2[16..], [203, 0, 113, 7, 192, 0, 2, 1, 0xc8, 0x22, 0x1b, 0x58]);
        assert_eq!(round_trip(h), vec![Some(peer("203.0.113.7:51234").ip().unwrap()); 2]);

        let h = ProxyHeader::new(peer("[2001:db8::5]:4000"), Some("[2001:db8::1]:7000".parse().unwrap()));
        assert_eq!(h.encode(ProxyVersion::V1), b"PROXY TCP6 2001:db8::5 2001:db8::1 4000 7000\r\n");
        assert_eq!(h.encode(ProxyVersion::V2).len(), 16 + 36);
        assert_eq!(round_trip(h), vec![Some("[2001:db8::5]:4000".parse().unwrap()); 2]);
    }

    #[test]
    fn mixed_families_are_written_as_tcp6_and_read_back_as_the_ipv4_client() {
        // An IPv4 client of a relay listening on [::].
        let h = ProxyHeader::new(peer("203.0.113.7:51234"), Some("[::]:7000".parse().unwrap()));
        assert_eq!(h.encode(ProxyVersion::V1), b"PROXY TCP6 ::ffff:203.0.113.7 :: 51234 7000\r\n");
        assert_eq!(round_trip(h), vec![Some("203.0.113.7:51234".parse().unwrap()); 2]);
        // An IPv4-mapped client beside an IPv4 destination: plain TCP4.
        let h = ProxyHeader::new(peer("[::ffff:203.0.113.7]:1"), Some("127.0.0.1:2".parse().unwrap()));
        assert_eq!(h.encode(ProxyVersion::V1), b"PROXY TCP4 203.0.113.7 127.0.0.1 1 2\r\n");
        // No destination known: the unspecified address, port 0.
        let h = ProxyHeader::new(peer("[2001:db8::5]:4000"), None);
        assert_eq!(h.encode(ProxyVersion::V1), b"PROXY TCP6 2001:db8::5 :: 4000 0\r\n");
        assert_eq!(round_trip(h), vec![Some("[2001:db8::5]:4000".parse().unwrap()); 2]);
    }

    #[test]
    fn a_unix_client_is_unknown_in_v1_and_local_in_v2() {
        let h = ProxyHeader::new(Peer::Unix(None), Some("127.0.0.1:7000".parse().unwrap()));
        assert_eq!(h.encode(ProxyVersion::V1), b"PROXY UNKNOWN\r\n");
        let v2 = h.encode(ProxyVersion::V2);
        assert_eq!(v2, b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00");
        assert_eq!(round_trip(h), vec![None, None]);
    }

    #[test]
    fn v1_tcp4_and_tcp6_name_the_client_and_keep_the_bytes_after() {
        let got = parse(b"PROXY TCP4 203.0.113.7 192.0.2.1 51234 7000\r\nhello\n").unwrap();
        assert_eq!(got, header(Some("203.0.113.7:51234"), b"hello\n"));
        let got = parse(b"PROXY TCP6 2001:db8::5 2001:db8::1 4000 7000\r\n").unwrap();
        assert_eq!(got, header(Some("[2001:db8::5]:4000"), b""));
        assert_eq!(parse(b"PROXY UNKNOWN\r\nx").unwrap(), header(None, b"x"));
    }

    #[test]
    fn v2_proxy_and_local() {
        let src: SocketAddr = "198.51.100.9:40000".parse().unwrap();
        let dst: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        let mut bytes = v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Proxy,
            v2::Protocol::Stream,
            (src, dst),
        )
        .build()
        .unwrap();
        bytes.extend_from_slice(b"tail");
        assert_eq!(parse(&bytes).unwrap(), header(Some("198.51.100.9:40000"), b"tail"));
        for cut in [1, 10, 16, bytes.len() - 5] {
            assert_eq!(parse(&bytes[..cut]).unwrap(), Parsed::Incomplete, "cut at {cut}");
        }
        let local = v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Local,
            v2::Protocol::Unspecified,
            v2::Addresses::Unspecified,
        )
        .build()
        .unwrap();
        assert_eq!(parse(&local).unwrap(), header(None, b""));
    }

    #[test]
    fn an_ipv4_mapped_client_is_the_ipv4_client() {
        let got = parse(b"PROXY TCP6 ::ffff:203.0.113.7 ::ffff:192.0.2.1 4000 7000\r\n").unwrap();
        assert_eq!(got, header(Some("203.0.113.7:4000"), b""));
        let src: SocketAddr = "[::ffff:198.51.100.9]:40000".parse().unwrap();
        let dst: SocketAddr = "[::1]:7000".parse().unwrap();
        let bytes = v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Proxy,
            v2::Protocol::Stream,
            (src, dst),
        )
        .build()
        .unwrap();
        assert_eq!(parse(&bytes).unwrap(), header(Some("198.51.100.9:40000"), b""));
    }

    #[test]
    fn a_v2_tlv_that_runs_past_the_header_is_refused() {
        let src: SocketAddr = "198.51.100.9:40000".parse().unwrap();
        let dst: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        let good = v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Proxy,
            v2::Protocol::Stream,
            (src, dst),
        )
        .write_tlv(0x04, b"noop")
        .unwrap()
        .build()
        .unwrap();
        assert_eq!(parse(&good).unwrap(), header(Some("198.51.100.9:40000"), b""));
        // The same header with the TLV's length saying 200 bytes, of which
        // the header holds 4; then 2 bytes, too few for any TLV.
        let mut long = good.clone();
        let at = long.len() - 4 - 2;
        long[at..at + 2].copy_from_slice(&200u16.to_be_bytes());
        long.extend_from_slice(b"the stream's bytes");
        let e = parse(&long).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("a TLV runs past the header's end"), "{e}");
        let mut short = good[..good.len() - 7].to_vec();
        short.extend_from_slice(b"\x04\x00");
        let len = (short.len() - 16) as u16;
        short[14..16].copy_from_slice(&len.to_be_bytes());
        assert!(parse(&short).unwrap_err().to_string().contains("a TLV runs past"));
    }

    #[test]
    fn data_that_is_no_header_is_refused() {
        let e = parse(b"hello world\r\n").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("invalid PROXY v1 header"), "{e}");
        assert_eq!(parse(b"PROXY TC").unwrap(), Parsed::Incomplete);
        let e = parse(b"PROXY TCP4 1.2.3.4\r\nhello\n").unwrap_err();
        assert!(e.to_string().contains("a field is missing"), "{e}");
    }

    #[test]
    fn a_header_that_never_ends_stops_at_the_limit() {
        // "PROXY " then bytes without CR: v1 says too long past 107 bytes.
        let mut input = b"PROXY TCP4 ".to_vec();
        input.resize(200, b'1');
        let mut reader = HeaderReader::default();
        let e = reader.read_from(&mut &input[..]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        // A v2 header announcing more than the limit holds.
        let mut big = b"\r\n\r\n\0\r\nQUIT\n\x21\x11".to_vec();
        big.extend_from_slice(&u16::MAX.to_be_bytes());
        big.resize(MAX_HEADER + 100, 0);
        let mut reader = HeaderReader::default();
        let e = reader.read_from(&mut &big[..]).unwrap_err();
        assert!(e.to_string().contains("over the 4096-byte limit"), "{e}");
    }
}
