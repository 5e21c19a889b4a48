//! Resumable-login tokens (protocol.md §3, "Resuming a login"): 256 random bits.
//!
//! Owns making, parsing and printing a token and the digest under which the server
//! stores it. A token is a bearer secret: its `Debug` hides it so it never reaches a log,
//! only `Display` (for the wire) shows it, and the server keeps only its digest. It must
//! not decide who may use a token or for how long (the server's login and store do).

use std::fmt;

/// A session token: 32 random bytes, written as 64 lower-case hex digits.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionToken([u8; 32]);

/// The context string for the stored digest (BLAKE3 `derive_key` mode): fixed forever,
/// so digests stored by one run match tokens presented to the next.
const DIGEST_CONTEXT: &str = "peerchat 2026-12 session token digest v1";

impl SessionToken {
    /// A fresh token from the OS CSPRNG.
    pub fn generate() -> Result<SessionToken, getrandom::Error> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)?;
        Ok(SessionToken(bytes))
    }

    /// Parses exactly 64 hex digits (either case).
    pub fn parse(text: &str) -> Option<SessionToken> {
        if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(SessionToken(bytes))
    }

    /// What the server stores instead of the token: a hash of 256 random bits, so a
    /// stolen database holds nothing that logs in (no salt or slow hash is needed for a
    /// secret that cannot be guessed).
    pub fn digest(&self) -> String {
        blake3::Hasher::new_derive_key(DIGEST_CONTEXT)
            .update(&self.0)
            .finalize()
            .to_hex()
            .to_string()
    }
}

impl fmt::Display for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionToken(<hidden>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_differ_and_hide() {
        let a = SessionToken::generate().unwrap();
        let b = SessionToken::generate().unwrap();
        assert_ne!(a, b);
        let text = a.to_string();
        assert_eq!(text.len(), 64);
        assert_eq!(SessionToken::parse(&text), Some(a.clone()));
        assert_eq!(SessionToken::parse(&text.to_uppercase()), Some(a.clone()));
        assert!(!format!("{a:?}").contains(&text));
        assert_ne!(a.digest(), b.digest());
        assert!(!a.digest().contains(&text));
        assert_eq!(SessionToken::parse(&text[1..]), None);
        assert_eq!(SessionToken::parse(&"g".repeat(64)), None);
    }
}
