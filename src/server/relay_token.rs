//! One-time relay tokens: what the server gives both ends of a relayed circuit and the
//! relay checks, without the two sharing anything but a secret.
//!
//! A token is `<circuit>.<side>.<user>.<expires>[.<payer>].<mac>`: a random 64-bit
//! circuit id (hex), the side (`a` for the requester, `b` for the target), the user it
//! was issued to, the Unix second it expires, on the target's token the requester (who
//! the circuit is charged to), and a keyed BLAKE3 MAC over the rest under the relay
//! secret.
//! The relay can therefore run as a separate process: it needs the secret only, never
//! the server's database. Single use is enforced by the relay (it remembers spent
//! tokens until they expire). This module must not do I/O.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Hex digits of the MAC kept in a token (128 bits).
const MAC_HEX: usize = 32;

/// Bytes of the relay secret.
pub const SECRET_LEN: usize = 32;

/// The secret shared by the server that issues tokens and the relay that checks them.
#[derive(Clone)]
pub struct RelaySecret([u8; SECRET_LEN]);

impl std::fmt::Debug for RelaySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key itself.
        f.write_str("RelaySecret(..)")
    }
}

impl RelaySecret {
    /// A fresh random secret (the in-process relay uses one per run).
    pub fn random() -> std::io::Result<RelaySecret> {
        let mut key = [0u8; SECRET_LEN];
        getrandom::fill(&mut key).map_err(|e| std::io::Error::other(format!("{e}")))?;
        Ok(RelaySecret(key))
    }

    /// The secret derived from the text of a shared secret file (any length, at least 16
    /// bytes after trimming), so operators can use `openssl rand -hex 32 > relay.key`.
    pub fn from_text(text: &str) -> Result<RelaySecret, String> {
        let text = text.trim();
        if text.len() < 16 {
            return Err("the relay secret must be at least 16 characters".into());
        }
        Ok(RelaySecret(blake3::derive_key(
            "peerchat 2026 relay secret",
            text.as_bytes(),
        )))
    }

    fn mac(&self, body: &str) -> String {
        let hash = blake3::keyed_hash(&self.0, body.as_bytes());
        hash.to_hex()[..MAC_HEX].to_string()
    }

    /// Issues the two tokens of a new circuit: the requester's (`a`) and the target's (`b`).
    pub fn issue_pair(
        &self,
        requester: &str,
        target: &str,
        valid: Duration,
    ) -> std::io::Result<(String, String)> {
        let mut id = [0u8; 8];
        getrandom::fill(&mut id).map_err(|e| std::io::Error::other(format!("{e}")))?;
        let circuit = u64::from_be_bytes(id);
        let expires = unix_now().saturating_add(valid.as_secs().max(1));
        Ok((
            self.issue(circuit, Side::A, requester, expires),
            self.issue_charged(circuit, Side::B, target, expires, requester),
        ))
    }

    /// One token charged to its own user (tests use this to forge expired or wrong-side
    /// tokens deliberately).
    pub fn issue(&self, circuit: u64, side: Side, user: &str, expires: u64) -> String {
        let body = format!("{circuit:016x}.{}.{user}.{expires}", side.letter());
        let mac = self.mac(&body);
        format!("{body}.{mac}")
    }

    /// One token whose circuit is charged to `payer` (the requester, on the target's
    /// token): a target's end waiting at the relay for a requester who never comes is
    /// the requester's, not the target's, so nobody can use up someone else's circuits.
    pub fn issue_charged(
        &self,
        circuit: u64,
        side: Side,
        user: &str,
        expires: u64,
        payer: &str,
    ) -> String {
        let body = format!("{circuit:016x}.{}.{user}.{expires}.{payer}", side.letter());
        let mac = self.mac(&body);
        format!("{body}.{mac}")
    }

    /// The token's contents if its MAC is right; expiry is checked by the caller.
    pub fn check(&self, token: &str) -> Option<Token> {
        let (body, mac) = token.rsplit_once('.')?;
        let want = self.mac(body);
        // Constant-time comparison through blake3's hash type is not available for a
        // truncated MAC, so compare every byte without early exit.
        if mac.len() != want.len()
            || mac
                .bytes()
                .zip(want.bytes())
                .fold(0u8, |acc, (x, y)| acc | (x ^ y))
                != 0
        {
            return None;
        }
        let mut parts = body.split('.');
        let circuit = u64::from_str_radix(parts.next()?, 16).ok()?;
        let side = match parts.next()? {
            "a" => Side::A,
            "b" => Side::B,
            _ => return None,
        };
        let user = parts.next()?.to_string();
        let expires = parts.next()?.parse().ok()?;
        let payer = parts.next().map_or_else(|| user.clone(), str::to_string);
        if parts.next().is_some() || payer.is_empty() {
            return None;
        }
        Some(Token {
            circuit,
            side,
            user,
            expires,
            payer,
        })
    }
}

/// Which end of a circuit a token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The requester.
    A,
    /// The target.
    B,
}

impl Side {
    fn letter(self) -> char {
        match self {
            Side::A => 'a',
            Side::B => 'b',
        }
    }
}

/// A token whose MAC checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// Pairs the two ends.
    pub circuit: u64,
    /// Which end.
    pub side: Side,
    /// Who it was issued to.
    pub user: String,
    /// Unix second after which it is refused.
    pub expires: u64,
    /// Who the circuit counts against (the per-user circuit limit): the requester, on
    /// both ends' tokens (a token without the field: its own user).
    pub payer: String,
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_checks_and_a_changed_one_does_not() {
        let secret = RelaySecret::random().unwrap();
        let (a, b) = secret
            .issue_pair("alice", "bob", Duration::from_secs(60))
            .unwrap();
        let ta = secret.check(&a).unwrap();
        let tb = secret.check(&b).unwrap();
        assert_eq!(ta.circuit, tb.circuit);
        assert_eq!((ta.side, tb.side), (Side::A, Side::B));
        assert_eq!(ta.user, "alice");
        assert_eq!((tb.user.as_str(), tb.payer.as_str()), ("bob", "alice"));
        assert_eq!(ta.payer, "alice");
        let forged = a.replace(".alice.", ".mallory.");
        assert!(secret.check(&forged).is_none());
        // Nobody can move the charge to someone else.
        let forged = b.replace(".alice.", ".bob.");
        assert!(secret.check(&forged).is_none());
        let other = RelaySecret::random().unwrap();
        assert!(other.check(&a).is_none());
        assert!(secret.check("x").is_none());
    }
}
