//! Return-routability cookies: a tag of the peer's address that only
//! someone who receives at that address learns, checked without any state.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use blake2::digest::{KeyInit, Mac};
use blake2::Blake2sMac256;

/// A cookie is valid for one or two of these (the current period and the
/// one before).
pub const COOKIE_PERIOD: Duration = Duration::from_secs(60);

/// The length of a cookie: 16 lower-case hex digits (64 bits of a keyed
/// BLAKE2s MAC of the address and the period, under a key drawn at start).
pub const COOKIE_LEN: usize = 16;

/// The server's cookie key and clock.
pub(crate) struct Cookies {
    /// The MAC keyed, ready to be cloned for each tag.
    mac: Blake2sMac256,
    start: Instant,
}

impl std::fmt::Debug for Cookies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cookies").finish_non_exhaustive()
    }
}

impl Cookies {
    /// A new random key.
    pub(crate) fn new() -> std::io::Result<Cookies> {
        let mut key = [0u8; 32];
        let mut filled = 0;
        while filled < key.len() {
            match rustix::rand::getrandom(&mut key[filled..], rustix::rand::GetRandomFlags::empty()) {
                Ok(n) => filled += n,
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => {
                    return Err(std::io::Error::other(format!(
                        "cannot draw a random key for udp cookies: {e}"
                    )))
                }
            }
        }
        let mac = <Blake2sMac256 as KeyInit>::new_from_slice(&key)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Cookies { mac, start: Instant::now() })
    }

    fn period(&self) -> u64 {
        self.start.elapsed().as_secs() / COOKIE_PERIOD.as_secs()
    }

    fn tag(&self, addr: &SocketAddr, period: u64) -> [u8; COOKIE_LEN] {
        let mut mac = self.mac.clone();
        match addr {
            SocketAddr::V4(a) => mac.update(&a.ip().octets()),
            SocketAddr::V6(a) => mac.update(&a.ip().octets()),
        }
        mac.update(&addr.port().to_be_bytes());
        mac.update(&period.to_be_bytes());
        let tag = mac.finalize().into_bytes();
        let mut hex = [0u8; COOKIE_LEN];
        for (i, b) in tag[..COOKIE_LEN / 2].iter().enumerate() {
            hex[2 * i] = HEX[usize::from(b >> 4)];
            hex[2 * i + 1] = HEX[usize::from(b & 15)];
        }
        hex
    }

    /// The cookie of `addr` now.
    pub(crate) fn make(&self, addr: &SocketAddr) -> String {
        String::from_utf8_lossy(&self.tag(addr, self.period())).into_owned()
    }

    /// Whether `given` is a cookie of `addr` of this period or the last.
    pub(crate) fn check(&self, addr: &SocketAddr, given: &[u8]) -> bool {
        if given.len() != COOKIE_LEN {
            return false;
        }
        let now = self.period();
        [Some(now), now.checked_sub(1)].into_iter().flatten().any(|p| same(&self.tag(addr, p), given))
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Compares in a time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_holds_for_its_address_only() {
        let c = Cookies::new().unwrap();
        let a: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:5001".parse().unwrap();
        let ca = c.make(&a);
        assert_eq!(ca.len(), COOKIE_LEN);
        assert!(ca.bytes().all(|x| x.is_ascii_hexdigit() && !x.is_ascii_uppercase()));
        assert!(c.check(&a, ca.as_bytes()));
        assert!(!c.check(&b, ca.as_bytes()), "another port");
        assert!(!c.check(&a, &ca.as_bytes()[1..]), "too short");
        assert!(!Cookies::new().unwrap().check(&a, ca.as_bytes()), "another server's key");
    }
}
