//! The wire protocols of protocol.md: framing, messages, codes and limits.
//!
//! Owns turning bytes into typed messages and back; apart from `line`, nothing here
//! touches a socket, and nothing here decides what a message does.

pub mod codes;
pub mod command;
pub mod file_name;
pub mod hints;
pub mod identity_key;
pub mod limits;
pub mod line;
pub mod login_msg;
pub mod mail_msg;
pub mod peer_msg;
pub mod server_msg;
pub mod session_token;
pub mod ticket;
pub mod transfer_msg;

use codes::ErrorCode;

/// Why a line could not be parsed: the code and message the peer should get back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The stable code for the `ERR` reply.
    pub code: ErrorCode,
    /// A message for people.
    pub message: String,
}

impl ParseError {
    /// A `BAD_REQUEST` error.
    pub fn bad(message: impl Into<String>) -> ParseError {
        ParseError {
            code: ErrorCode::BadRequest,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.message)
    }
}

impl std::error::Error for ParseError {}

/// Parses what follows `ERR` in every protocol: `<code> <NAME> <message>`.
pub(crate) fn parse_err(rest: &str) -> Result<(ErrorCode, String), ParseError> {
    let mut words = rest.splitn(3, ' ');
    let number = words.next().and_then(|n| n.parse::<u16>().ok());
    let name = words.next().unwrap_or("");
    let code = number
        .and_then(|n| ErrorCode::from_wire(n, name))
        .ok_or_else(|| ParseError::bad("unknown error code"))?;
    Ok((code, words.next().unwrap_or("").to_string()))
}

/// Writes `ERR <code> <NAME> <message>`, the message made one line.
pub(crate) fn write_err(
    f: &mut std::fmt::Formatter<'_>,
    code: ErrorCode,
    message: &str,
) -> std::fmt::Result {
    write!(
        f,
        "ERR {} {} {}",
        code.number(),
        code.name(),
        server_msg::one_line(message)
    )
}
