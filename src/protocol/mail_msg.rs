//! The fields of messages sent through the server (protocol.md §4d): the sealed
//! ciphertext as hex, bounded by `MAX_SEALED_MESSAGE`, and a recipient named by its
//! numeric id or its username.
//!
//! Owns only the text of these fields; the lines themselves are in `command` (`WHOIS`,
//! `SEND`) and `server_msg` (`OK WHOIS`, `OK SENT`, `EVENT MAILBOX`, `EVENT MESSAGE`).
//! It must not seal or open anything (`crypto::sealed`) or touch sockets.

use super::ParseError;
use super::codes::ErrorCode;
use super::limits::MAX_SEALED_MESSAGE;

/// Lower-case hex of a sealed message.
pub fn sealed_hex(sealed: &[u8]) -> String {
    sealed.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses a sealed message's hex: an even number of hex digits (either case), at most
/// `MAX_SEALED_MESSAGE` bytes once decoded (`453 MESSAGE_TOO_LARGE` beyond).
pub fn parse_sealed(text: &str) -> Result<Vec<u8>, ParseError> {
    if text.len() > 2 * MAX_SEALED_MESSAGE {
        return Err(ParseError {
            code: ErrorCode::MessageTooLarge,
            message: format!("a sealed message may hold at most {MAX_SEALED_MESSAGE} bytes"),
        });
    }
    let bytes = text.as_bytes();
    if bytes.is_empty() || !bytes.len().is_multiple_of(2) {
        return Err(ParseError::bad(
            "a sealed message is an even number of hex digits",
        ));
    }
    let digit = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    bytes
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(|| ParseError::bad("a sealed message is hex digits"))
}

/// Who a `WHOIS` or `SEND` names: a numeric id (as `LIST` shows it) or a username
/// (usernames start with a letter, so the two never collide).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserRef {
    /// The account's id.
    Id(u64),
    /// The account's name, any case.
    Name(String),
}

impl UserRef {
    /// Reads an id (all digits) or a name.
    pub fn parse(text: &str) -> UserRef {
        match text.parse::<u64>() {
            Ok(id) if text.bytes().all(|b| b.is_ascii_digit()) => UserRef::Id(id),
            _ => UserRef::Name(text.to_string()),
        }
    }
}

impl std::fmt::Display for UserRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UserRef::Id(id) => write!(f, "{id}"),
            UserRef::Name(name) => f.write_str(name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_messages_round_trip_and_are_bounded() {
        let bytes = vec![0u8, 1, 0xab, 0xff];
        assert_eq!(parse_sealed(&sealed_hex(&bytes)).unwrap(), bytes);
        assert_eq!(parse_sealed("ABff").unwrap(), vec![0xab, 0xff]);
        for bad in ["", "a", "zz", "0g", "é0"] {
            assert_eq!(
                parse_sealed(bad).unwrap_err().code,
                ErrorCode::BadRequest,
                "{bad:?}"
            );
        }
        let big = "00".repeat(MAX_SEALED_MESSAGE + 1);
        assert_eq!(
            parse_sealed(&big).unwrap_err().code,
            ErrorCode::MessageTooLarge
        );
        assert!(parse_sealed(&"00".repeat(MAX_SEALED_MESSAGE)).is_ok());
    }

    #[test]
    fn ids_and_names_are_told_apart() {
        assert_eq!(UserRef::parse("12"), UserRef::Id(12));
        assert_eq!(UserRef::parse("bob"), UserRef::Name("bob".into()));
        assert_eq!(UserRef::parse("+12"), UserRef::Name("+12".into()));
        assert_eq!(UserRef::parse("12").to_string(), "12");
    }
}
