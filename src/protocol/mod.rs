//! The wire protocols of protocol.md: framing, messages, codes and limits.
//!
//! Owns turning bytes into typed messages and back; apart from `line`, nothing here
//! touches a socket, and nothing here decides what a message does.

pub mod codes;
pub mod limits;
pub mod line;
pub mod peer_msg;
pub mod server_msg;
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
