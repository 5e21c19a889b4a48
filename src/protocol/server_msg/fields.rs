//! Small field parsers shared by replies, events and client commands: addresses, ids,
//! tickets, relay tokens, usernames, the first word of a line, and a short echo of
//! untrusted text for error messages.
//!
//! Owns checking one field; it must not know which message the field belongs to.

use std::net::SocketAddr;

use super::super::ticket::Ticket;
use super::ParseError;
use super::one_line;

pub(super) fn parse_addr(text: &str) -> Result<SocketAddr, ParseError> {
    text.parse()
        .map_err(|_| ParseError::bad(format!("not an address: {text}")))
}

/// A relay token: up to 160 characters of `[0-9A-Za-z._-]` (protocol.md §13).
pub(super) fn parse_relay_token(text: &str) -> Result<String, ParseError> {
    let fine = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
    if text.is_empty() || text.len() > 160 || !text.bytes().all(fine) {
        return Err(ParseError::bad("not a relay token"));
    }
    Ok(text.to_string())
}

pub(in crate::protocol) fn parse_id(text: &str) -> Result<u64, ParseError> {
    text.parse()
        .map_err(|_| ParseError::bad(format!("not a session id: {}", shorten(text))))
}

pub(super) fn parse_ticket(text: &str) -> Result<Ticket, ParseError> {
    Ticket::parse(text).ok_or_else(|| ParseError::bad("malformed ticket"))
}

/// One or more usernames separated by single spaces.
pub(super) fn names(text: &str) -> Result<Vec<String>, ParseError> {
    text.split(' ').map(single_name).collect()
}

pub(super) fn single_name(text: &str) -> Result<String, ParseError> {
    if text.is_empty() || text.contains(' ') {
        return Err(ParseError::bad("expected one username"));
    }
    Ok(text.to_string())
}

/// The first space-separated word and the rest (leading spaces of the rest removed).
pub(in crate::protocol) fn split_word(text: &str) -> (&str, &str) {
    match text.split_once(' ') {
        Some((word, rest)) => (word, rest.trim_start_matches(' ')),
        None => (text, ""),
    }
}

/// At most 32 characters of untrusted text, for echoing it in an error message.
pub(in crate::protocol) fn shorten(text: &str) -> String {
    let mut short: String = one_line(text).chars().take(32).collect();
    if text.chars().count() > 32 {
        short.push('…');
    }
    short
}
