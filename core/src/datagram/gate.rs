//! The anti-amplification budget: what the server may send to an address
//! that has not proven it receives there.

use std::net::SocketAddr;

/// An unproven address is sent at most this many times the bytes it sent
/// (QUIC's anti-amplification limit, RFC 9000 section 8).
pub const AMPLIFICATION: u64 = 3;

/// The bytes of a datagram on the wire: its payload and the IP and UDP
/// headers (20 + 8 over IPv4, 40 + 8 over IPv6), what a reflection attack
/// costs its sender and brings its victim.
pub(crate) fn wire_bytes(addr: &SocketAddr, len: usize) -> u64 {
    let headers = match addr {
        SocketAddr::V4(_) => 28,
        SocketAddr::V6(a) if a.ip().to_ipv4_mapped().is_some() => 28,
        SocketAddr::V6(_) => 48,
    };
    len as u64 + headers
}

/// One address's budget: until it is proven, what it was sent stays within
/// [`AMPLIFICATION`] times what it sent, counted on the wire.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Gate {
    proven: bool,
    allowed: u64,
    spent: u64,
}

impl Gate {
    /// A datagram of `len` bytes came from `addr`.
    pub(crate) fn received(&mut self, addr: &SocketAddr, len: usize) {
        self.allowed = self.allowed.saturating_add(AMPLIFICATION * wire_bytes(addr, len));
    }

    /// Whether `len` more bytes may go to `addr`; if so they are spent.
    pub(crate) fn spend(&mut self, addr: &SocketAddr, len: usize) -> bool {
        if self.proven {
            return true;
        }
        let cost = wire_bytes(addr, len);
        if self.spent.saturating_add(cost) > self.allowed {
            return false;
        }
        self.spent += cost;
        true
    }

    /// The address proved it receives: no budget from now on.
    pub(crate) fn prove(&mut self) {
        self.proven = true;
    }

    pub(crate) fn is_proven(&self) -> bool {
        self.proven
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unproven_address_gets_at_most_three_times_its_bytes_on_the_wire() {
        let v4: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut g = Gate::default();
        assert!(!g.spend(&v4, 0), "nothing before it sent anything");
        g.received(&v4, 1); // 29 bytes on the wire: 87 allowed
        assert!(g.spend(&v4, 30)); // 58
        assert!(!g.spend(&v4, 2), "58 + 30 > 87");
        assert!(g.spend(&v4, 1)); // 87
        assert!(!g.spend(&v4, 0));
        g.prove();
        assert!(g.spend(&v4, 65_000) && g.is_proven());
        let v6: SocketAddr = "[::1]:9".parse().unwrap();
        let mut g = Gate::default();
        g.received(&v6, 0); // 48: 144 allowed
        assert!(g.spend(&v6, 96) && !g.spend(&v6, 0));
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:9".parse().unwrap();
        assert_eq!(wire_bytes(&mapped, 1), 29);
    }
}
