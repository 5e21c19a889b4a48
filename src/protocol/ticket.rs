//! One-time session tickets: 128 random bits from the operating system's CSPRNG.
//!
//! Owns making, parsing and printing tickets. A ticket is a bearer secret: its `Debug`
//! hides it so it never reaches a log, and only `Display` (for the wire) shows it. It also
//! computes the `ACCEPT` proof (a MAC keyed by the ticket, protocol.md §10). It must not
//! decide who may use a ticket (the server issues, the client checks).

use std::fmt;

/// A ticket: 16 random bytes, written as 32 lower-case hex digits.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Ticket([u8; 16]);

impl Ticket {
    /// A fresh ticket from the OS CSPRNG (never time- or counter-based).
    pub fn generate() -> Result<Ticket, getrandom::Error> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes)?;
        Ok(Ticket(bytes))
    }

    /// Parses exactly 32 hex digits (either case).
    pub fn parse(text: &str) -> Option<Ticket> {
        if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut bytes = [0u8; 16];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Ticket(bytes))
    }
}

/// The context string for deriving the `ACCEPT` MAC key from a ticket (BLAKE3
/// `derive_key`): fixed forever, so both sides derive the same key.
pub const ACCEPT_MAC_CONTEXT: &str = "peerchat 2026-12 peer ACCEPT mac v1";

impl Ticket {
    /// The proof in `ACCEPT <mac>`: keyed BLAKE3 over the session id and both names (lower
    /// case), under a key derived from the ticket. Only the two holders of the ticket can
    /// make it, so the requester knows the answer came from the target the server named.
    pub fn accept_mac(&self, session: u64, requester: &str, target: &str) -> blake3::Hash {
        let key = blake3::derive_key(ACCEPT_MAC_CONTEXT, &self.0);
        let input = format!(
            "{session}\n{}\n{}",
            requester.to_ascii_lowercase(),
            target.to_ascii_lowercase()
        );
        blake3::keyed_hash(&key, input.as_bytes())
    }
}

impl fmt::Display for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Ticket(<hidden>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_round_trip_and_differ() {
        let a = Ticket::generate().unwrap();
        let b = Ticket::generate().unwrap();
        assert_ne!(a, b);
        let text = a.to_string();
        assert_eq!(text.len(), 32);
        assert_eq!(Ticket::parse(&text), Some(a.clone()));
        assert_eq!(Ticket::parse(&text.to_uppercase()), Some(a.clone()));
        assert!(!format!("{a:?}").contains(&text));
    }

    #[test]
    fn accept_macs_bind_ticket_session_and_names() {
        let a = Ticket::generate().unwrap();
        let b = Ticket::generate().unwrap();
        let mac = a.accept_mac(7, "Alice", "bob");
        assert_eq!(mac, a.accept_mac(7, "alice", "BOB"));
        assert_ne!(mac, b.accept_mac(7, "alice", "bob"));
        assert_ne!(mac, a.accept_mac(8, "alice", "bob"));
        assert_ne!(mac, a.accept_mac(7, "alice", "carol"));
        assert_ne!(mac, a.accept_mac(7, "bob", "alice"));
    }

    #[test]
    fn the_accept_examples_of_protocol_md_hold() {
        let chat = Ticket::parse("6f1c0d3e9a2b4c5d8e7f60718293a4b5").unwrap();
        assert_eq!(
            chat.accept_mac(12, "alice", "bob").to_hex().as_str(),
            "785e6dad8ae7dac35e13084203dced2a7f10b157dec14d8af66f5fa32d553497"
        );
        let fetch = Ticket::parse("9f0c2a4e6b8d1f3a5c7e9b1d3f5a7c9e").unwrap();
        assert_eq!(
            fetch.accept_mac(7, "alice", "bob").to_hex().as_str(),
            "ec0e3b027ac899a6c85cbe295554fbb26cb2cd9a0e615685f5bc616e4136676e"
        );
    }

    #[test]
    fn malformed_tickets_are_rejected() {
        for bad in [
            "",
            "abc",
            &"0".repeat(31),
            &"0".repeat(33),
            &"g".repeat(32),
            &"é".repeat(16),
            "+1".repeat(16).as_str(),
        ] {
            assert_eq!(Ticket::parse(bad), None, "{bad}");
        }
    }
}
