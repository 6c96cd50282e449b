//! The PROXY protocol (HAProxy's, versions 1 and 2): the header a load
//! balancer sends first on each connection, naming the client it accepted.
//! Parsed with the `ppp` crate; bounded in size here (and in time by the
//! handshake timeout).

use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr};

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

#[cfg(test)]
mod tests {
    use super::*;

    fn header(client: Option<&str>, rest: &[u8]) -> Parsed {
        Parsed::Header { client: client.map(|c| c.parse().unwrap()), rest: rest.to_vec() }
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
