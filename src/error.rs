//! The crate's error type and `Result` alias.
//!
//! Owns the kinds of failure that cross module boundaries; it must not decide what a
//! failure means to a user (the callers map errors to reply codes or messages).

use std::fmt;
use std::io;

/// Everything that can go wrong below the user interface.
#[derive(Debug)]
pub enum Error {
    /// A socket or file failed.
    Io(io::Error),
    /// SQLite failed.
    Db(rusqlite::Error),
    /// PostgreSQL failed (the server's `--db postgres://...`).
    Postgres(postgres::Error),
    /// The database answered something the store cannot use, or no connection was free.
    Store(String),
    /// bcrypt failed (a malformed stored hash, or a bad cost).
    Hash(bcrypt::BcryptError),
    /// A message from the other side broke the protocol.
    Protocol(crate::protocol::ParseError),
    /// A setting or argument is unusable.
    Config(String),
}

/// `Result` with the crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "I/O error: {e}"),
            Error::Db(e) => write!(f, "database error: {e}"),
            Error::Postgres(e) => write!(f, "database error: {e}"),
            Error::Store(e) => write!(f, "database error: {e}"),
            Error::Hash(e) => write!(f, "password hashing error: {e}"),
            Error::Protocol(e) => write!(f, "protocol error: {e}"),
            Error::Config(e) => write!(f, "configuration error: {e}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Db(e)
    }
}

impl From<postgres::Error> for Error {
    fn from(e: postgres::Error) -> Self {
        Error::Postgres(e)
    }
}

impl From<bcrypt::BcryptError> for Error {
    fn from(e: bcrypt::BcryptError) -> Self {
        Error::Hash(e)
    }
}

impl From<crate::protocol::ParseError> for Error {
    fn from(e: crate::protocol::ParseError) -> Self {
        Error::Protocol(e)
    }
}
