//! Argon2id with one memory block per account thread.
//!
//! The `argon2` crate's `PasswordHasher` allocates a fresh block of
//! `m_cost` KiB (19 MiB with the defaults) for every hash, and the
//! allocator keeps what was freed: resident memory grew by hundreds of
//! MiB over a few dozen logins. A [`Hasher`] allocates its block once
//! and hands it to `hash_password_into_with_memory` for every hash, so
//! the account threads hold `THREADS × 19 MiB`, whatever the logins.

use std::io::Read;

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};

/// The bytes of a fresh salt.
const SALT_LEN: usize = 16;

/// Hashes and verifies passwords in one preallocated block.
pub(super) struct Hasher {
    blocks: Vec<Block>,
}

impl Hasher {
    /// A hasher with the block for the default parameters (the ones
    /// [`hash`](Hasher::hash) uses), allocated and touched now.
    pub(super) fn new() -> Hasher {
        Hasher { blocks: vec![Block::default(); Params::DEFAULT.block_count()] }
    }

    /// The Argon2id hash of `password` (PHC string) with a fresh salt and
    /// the default parameters.
    pub(super) fn hash(&mut self, password: &[u8]) -> Result<String, String> {
        let mut salt = [0u8; SALT_LEN];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut salt))
            .map_err(|e| format!("/dev/urandom: {e}"))?;
        let salt_string = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::DEFAULT);
        let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
        argon
            .hash_password_into_with_memory(password, &salt, &mut out, &mut self.blocks)
            .map_err(|e| e.to_string())?;
        let phc = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&Params::DEFAULT).map_err(|e| e.to_string())?,
            salt: Some(salt_string.as_salt()),
            hash: Some(Output::new(&out).map_err(|e| e.to_string())?),
        };
        Ok(phc.to_string())
    }

    /// Whether `password` matches `phc`, compared in constant time
    /// (`Output`'s equality). A hash that is not Argon2 or needs more
    /// memory than this hasher's block is an error, never an allocation.
    pub(super) fn verify(&mut self, password: &[u8], phc: &str) -> Result<bool, String> {
        let hash = PasswordHash::new(phc).map_err(|e| format!("not a PHC string: {e}"))?;
        let algorithm = Algorithm::try_from(hash.algorithm).map_err(|e| e.to_string())?;
        let version = hash.version.map(Version::try_from).transpose().map_err(|e| e.to_string())?;
        let params = Params::try_from(&hash).map_err(|e| e.to_string())?;
        if params.block_count() > self.blocks.len() {
            return Err(format!(
                "the hash needs {} KiB, more than the {} KiB of an account thread",
                params.block_count(),
                self.blocks.len()
            ));
        }
        let (Some(salt), Some(want)) = (hash.salt, hash.hash) else {
            return Err("the hash has no salt or no output".to_owned());
        };
        let mut salt_buf = [0u8; 64];
        let salt = salt.decode_b64(&mut salt_buf).map_err(|e| e.to_string())?;
        let argon = Argon2::new(algorithm, version.unwrap_or_default(), params);
        let mut out = [0u8; Output::MAX_LENGTH];
        let out = &mut out[..want.len()];
        argon
            .hash_password_into_with_memory(password, salt, out, &mut self.blocks)
            .map_err(|e| e.to_string())?;
        Ok(Output::new(out).map_err(|e| e.to_string())? == want)
    }
}

#[cfg(test)]
mod tests {
    use argon2::password_hash::{PasswordHasher, PasswordVerifier};

    use super::*;

    #[test]
    fn hashes_verify_and_hold_no_password() {
        let mut h = Hasher::new();
        let phc = h.hash(b"correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(!phc.contains("correct horse"));
        assert_eq!(h.verify(b"correct horse", &phc), Ok(true));
        assert_eq!(h.verify(b"correct horsE", &phc), Ok(false));
        assert!(h.verify(b"x", "not a phc string").is_err());
        // Salted: the same password hashes differently.
        assert_ne!(phc, h.hash(b"correct horse").unwrap());
    }

    #[test]
    fn hashes_agree_with_the_argon2_crate_both_ways() {
        let mut h = Hasher::new();
        let ours = h.hash(b"pa\x01\x02ss\xffword").unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(Argon2::default().verify_password(b"pa\x01\x02ss\xffword", &parsed).is_ok());
        let salt = SaltString::encode_b64(&[7u8; 16]).unwrap();
        let theirs = Argon2::default().hash_password(b"hunter2hunter2", &salt).unwrap().to_string();
        assert_eq!(h.verify(b"hunter2hunter2", &theirs), Ok(true));
        assert_eq!(h.verify(b"hunter2hunter3", &theirs), Ok(false));
        // Other parameters that fit the block verify too (older hashes).
        let small = Params::new(1024, 1, 1, None).unwrap();
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, small);
        let theirs = argon.hash_password(b"hunter2hunter2", &salt).unwrap().to_string();
        assert_eq!(h.verify(b"hunter2hunter2", &theirs), Ok(true));
    }

    #[test]
    fn a_hash_needing_more_memory_is_refused_not_allocated() {
        let mut h = Hasher::new();
        let phc = "$argon2id$v=19$m=1048576,t=2,p=1$BwcHBwcHBwcHBwcHBwcHBw$\
                   AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        let e = h.verify(b"whatever", phc).unwrap_err();
        assert!(e.contains("1048576 KiB, more than the 19456 KiB"), "{e}");
    }
}
