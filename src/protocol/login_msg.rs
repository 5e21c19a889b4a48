//! The client's answers during login (protocol.md §3): the Y/N answer, `RESUME`, and the
//! username, password and port rules (the port answer may carry the identity key).
//!
//! Owns the text and rules of those answers; it must not touch sockets or run the
//! conversation (see `server::login` and `client::core::login`).

use std::fmt;

use super::ParseError;
use super::codes::ErrorCode;
use super::limits::{PASSWORD_MAX, PASSWORD_MIN, USERNAME_MAX, USERNAME_MIN};
use super::server_msg::*;
use super::session_token::SessionToken;

/// The answer to `ASK NEW`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewAnswer {
    /// A new client: register.
    Yes,
    /// A returning client: log in.
    No,
    /// Leave.
    Quit,
}

impl NewAnswer {
    /// Parses `Y`, `YES`, `N`, `NO` or `QUIT` in any case.
    pub fn parse(line: &str) -> Result<NewAnswer, ParseError> {
        let answer = line.trim();
        if answer.eq_ignore_ascii_case("y") || answer.eq_ignore_ascii_case("yes") {
            Ok(NewAnswer::Yes)
        } else if answer.eq_ignore_ascii_case("n") || answer.eq_ignore_ascii_case("no") {
            Ok(NewAnswer::No)
        } else if answer.eq_ignore_ascii_case("quit") {
            Ok(NewAnswer::Quit)
        } else if Command::looks_like_command(answer) {
            Err(ParseError {
                code: ErrorCode::LoginRequired,
                message: "log in first: answer Y or N".into(),
            })
        } else {
            Err(ParseError::bad("answer Y or N"))
        }
    }
}

/// `RESUME <username> <token>`, the answer to `ASK NEW` that logs in with a token
/// instead of a password. `None` if `line` is no `RESUME` at all; an error if it is one
/// with the wrong shape.
pub fn parse_resume(line: &str) -> Option<Result<(String, SessionToken), ParseError>> {
    let (word, rest) = split_word(line.trim());
    if !word.eq_ignore_ascii_case("RESUME") {
        return None;
    }
    let bad = || ParseError::bad("usage: RESUME <username> <token>");
    Some(match rest.split(' ').collect::<Vec<_>>().as_slice() {
        [name, token] if !name.is_empty() => SessionToken::parse(token)
            .map(|token| (name.to_string(), token))
            .ok_or_else(|| ParseError {
                code: ErrorCode::BadToken,
                message: "a token is 64 hex digits".into(),
            }),
        _ => Err(bad()),
    })
}

/// The `RESUME` answer's wire form (the client's side of [`parse_resume`]).
pub fn format_resume(name: &str, token: &SessionToken) -> String {
    format!("RESUME {name} {token}")
}

/// A username that follows the rules of protocol.md §3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    /// Checks the rules: length, characters, a letter first.
    pub fn parse(text: &str) -> Result<Username, ParseError> {
        let bad = |why: &str| ParseError {
            code: ErrorCode::BadUsername,
            message: format!(
                "{why}: a username has {USERNAME_MIN} to {USERNAME_MAX} letters, digits, _ or -, and starts with a letter"
            ),
        };
        let len = text.chars().count();
        if len < USERNAME_MIN {
            return Err(bad("too short"));
        }
        if len > USERNAME_MAX {
            return Err(bad("too long"));
        }
        if !text.starts_with(|c: char| c.is_ascii_alphabetic()) {
            return Err(bad("must start with a letter"));
        }
        if !text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(bad("invalid character"));
        }
        Ok(Username(text.to_string()))
    }

    /// The name as typed.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key under which names are unique: lower case.
    pub fn key(&self) -> String {
        self.0.to_ascii_lowercase()
    }
}

/// A password that follows the rules of protocol.md §3. Its `Debug` never shows it, so it
/// cannot reach a log by accident.
#[derive(Clone)]
pub struct Password(String);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<hidden>)")
    }
}

impl Password {
    /// Checks length in bytes and the absence of control characters.
    pub fn parse(text: &str) -> Result<Password, ParseError> {
        let bad = |why: &str| ParseError {
            code: ErrorCode::BadPassword,
            message: format!(
                "{why}: a password has {PASSWORD_MIN} to {PASSWORD_MAX} bytes and no control characters"
            ),
        };
        if text.len() < PASSWORD_MIN {
            return Err(bad("too short"));
        }
        if text.len() > PASSWORD_MAX {
            return Err(bad("too long"));
        }
        if text.chars().any(char::is_control) {
            return Err(bad("control character"));
        }
        Ok(Password(text.to_string()))
    }

    /// The secret itself, for hashing only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// The answer to `ASK PORT`: `<port>` or `<port> <key>`. The key is the client's identity
/// public key (64 hex digits, as in `KEY`): given here the server stores it before the
/// user is online, so no one is ever told the key of another device in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortAnswer {
    /// Where the client accepts peers.
    pub port: u16,
    /// The identity key, when the client gives it with the port (an older client sends
    /// `KEY` after `OK WELCOME` instead).
    pub key: Option<[u8; 32]>,
}

impl PortAnswer {
    /// Parses `<port> [<key>]` (words separated by spaces): `415 BAD_PORT` for a bad
    /// port, `400 BAD_REQUEST` for a bad key or more words.
    pub fn parse(text: &str) -> Result<PortAnswer, ParseError> {
        let mut words = text.split_whitespace();
        let port = parse_port(words.next().unwrap_or(""))?;
        let key = match (words.next(), words.next()) {
            (None, _) => None,
            (Some(key), None) => {
                Some(super::identity_key::parse_key_hex(key).ok_or_else(|| {
                    ParseError::bad("usage: <port> [<key>] (a key is 64 hex digits)")
                })?)
            }
            (Some(_), Some(_)) => return Err(ParseError::bad("usage: <port> [<key>]")),
        };
        Ok(PortAnswer { port, key })
    }
}

impl fmt::Display for PortAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(f, "{} {}", self.port, super::identity_key::key_hex(key)),
            None => write!(f, "{}", self.port),
        }
    }
}

/// Parses a port alone (the first word of the answer to `ASK PORT`): a number from 1
/// to 65535.
pub fn parse_port(text: &str) -> Result<u16, ParseError> {
    match text.trim().parse::<u16>() {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(ParseError {
            code: ErrorCode::BadPort,
            message: "the port must be a number from 1 to 65535".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_answers() {
        for yes in ["y", "Y", "yes", " YES "] {
            assert_eq!(NewAnswer::parse(yes).unwrap(), NewAnswer::Yes);
        }
        for no in ["n", "NO"] {
            assert_eq!(NewAnswer::parse(no).unwrap(), NewAnswer::No);
        }
        assert_eq!(NewAnswer::parse("quit").unwrap(), NewAnswer::Quit);
        assert_eq!(
            NewAnswer::parse("maybe").unwrap_err().code,
            ErrorCode::BadRequest
        );
        assert_eq!(
            NewAnswer::parse("LIST").unwrap_err().code,
            ErrorCode::LoginRequired
        );
        assert_eq!(
            NewAnswer::parse("info bob").unwrap_err().code,
            ErrorCode::LoginRequired
        );
    }

    #[test]
    fn username_rules() {
        for good in ["abc", "Alice", "a_b-c", "z23456789012345678901234567890AB"] {
            assert!(Username::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "ab",
            "1abc",
            "_abc",
            "a b",
            "al:ce",
            "ålice",
            "a\u{0}bc",
            "z234567890123456789012345678901AB",
        ] {
            assert_eq!(
                Username::parse(bad).unwrap_err().code,
                ErrorCode::BadUsername,
                "{bad}"
            );
        }
        assert_eq!(Username::parse("AlIce").unwrap().key(), "alice");
    }

    #[test]
    fn password_rules_and_hidden_debug() {
        assert!(Password::parse("four").is_ok());
        assert!(Password::parse("with spaces ok").is_ok());
        assert!(Password::parse(&"x".repeat(72)).is_ok());
        for bad in ["abc", "tab\there", "nul\u{0}x"] {
            assert_eq!(
                Password::parse(bad).unwrap_err().code,
                ErrorCode::BadPassword
            );
        }
        assert_eq!(
            Password::parse(&"x".repeat(73)).unwrap_err().code,
            ErrorCode::BadPassword
        );
        let secret = Password::parse("hunter22").unwrap();
        assert!(!format!("{secret:?}").contains("hunter22"));
        assert_eq!(secret.expose(), "hunter22");
    }

    #[test]
    fn ports() {
        assert_eq!(parse_port("40001").unwrap(), 40001);
        assert_eq!(parse_port(" 1 ").unwrap(), 1);
        for bad in ["0", "65536", "-1", "x", ""] {
            assert_eq!(parse_port(bad).unwrap_err().code, ErrorCode::BadPort);
            assert_eq!(PortAnswer::parse(bad).unwrap_err().code, ErrorCode::BadPort);
        }
    }

    #[test]
    fn a_port_answer_may_carry_the_identity_key() {
        let hex = "2B7C9D1E3F405162738495A6B7C8D9E0F1A2B3C4D5E6F708192A3B4C5D6E7F80";
        let plain = PortAnswer::parse(" 40001 ").unwrap();
        assert_eq!((plain.port, plain.key), (40001, None));
        assert_eq!(plain.to_string(), "40001");
        let keyed = PortAnswer::parse(&format!("40001  {hex}")).unwrap();
        assert_eq!(keyed.port, 40001);
        assert_eq!(
            keyed.to_string(),
            format!("40001 {}", hex.to_ascii_lowercase())
        );
        assert_eq!(PortAnswer::parse(&keyed.to_string()).unwrap(), keyed);
        for bad in [
            format!("40001 {}", &hex[1..]),
            "40001 xyz".to_string(),
            format!("40001 {hex} {hex}"),
        ] {
            assert_eq!(
                PortAnswer::parse(&bad).unwrap_err().code,
                ErrorCode::BadRequest,
                "{bad}"
            );
        }
        assert_eq!(
            PortAnswer::parse(&format!("0 {hex}")).unwrap_err().code,
            ErrorCode::BadPort
        );
    }
}
