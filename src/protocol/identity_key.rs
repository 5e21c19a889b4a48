//! The identity-key field of server lines (protocol.md §4): a user's long-term X25519
//! public key as 64 hex digits, or `-` when that user registered none.
//!
//! Owns only the text of that field (parse and format); it must not decide whether a
//! key is trusted (pins are `crypto::identity`'s) or touch sockets.

use std::fmt;

use super::ParseError;

/// A key field: `Some` 32-byte public key, or `None` written `-`.
pub type KeyField = Option<[u8; 32]>;

/// Parses exactly 64 hex digits (either case) into a key; anything else is `None`.
pub fn parse_key_hex(text: &str) -> Option<[u8; 32]> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let digit = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut key = [0u8; 32];
    for (i, out) in key.iter_mut().enumerate() {
        *out = digit(bytes[2 * i])? << 4 | digit(bytes[2 * i + 1])?;
    }
    Some(key)
}

/// Parses a key field: `-` (no key) or 64 hex digits.
pub fn parse_key_field(text: &str) -> Result<KeyField, ParseError> {
    if text == "-" {
        return Ok(None);
    }
    parse_key_hex(text)
        .map(Some)
        .ok_or_else(|| ParseError::bad("a key is 64 hex digits or -"))
}

/// Lower-case hex of a key.
pub fn key_hex(key: &[u8; 32]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

/// Formats a key field: its lower-case hex, or `-`.
pub struct ShowKey<'a>(pub &'a KeyField);

impl fmt::Display for ShowKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(key) => f.write_str(&key_hex(key)),
            None => f.write_str("-"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_fields_round_trip_and_refuse_garbage() {
        let key = [0xabu8; 32];
        let text = ShowKey(&Some(key)).to_string();
        assert_eq!(text.len(), 64);
        assert_eq!(parse_key_field(&text), Ok(Some(key)));
        assert_eq!(parse_key_field(&text.to_uppercase()), Ok(Some(key)));
        assert_eq!(parse_key_field("-"), Ok(None));
        assert_eq!(ShowKey(&None).to_string(), "-");
        for bad in [
            "",
            "--",
            "ab",
            &"g".repeat(64),
            &"a".repeat(63),
            &"a".repeat(65),
            "+a",
        ] {
            assert!(parse_key_field(bad).is_err(), "{bad:?}");
        }
        // Multi-byte characters must not pass as digits or split a char.
        assert!(parse_key_hex(&format!("é{}", "a".repeat(62))).is_none());
    }
}
