//! What the client core tells its front ends.
//!
//! Owns the typed events (chat lines, presence, requests, offers, transfer progress,
//! session state, errors) and their JSON form for the web front end. It must not render
//! text for a terminal or know any transport; the serde helpers here give foreign
//! types (durations, hashes, protocol words) a stable JSON shape.

use std::time::Duration;

use serde::{Serialize, Serializer};

use crate::protocol::server_msg::{EndReason, TransferResult};

// The vocabulary events are made of, so front ends import it from here and never from
// the tables that produce it.
pub use super::history::Line;
pub use super::mail::MailNotice;
pub use super::sessions::{Closer, Notice, State};
pub use super::summary::{human_size, role_word};
pub use super::transfer::Outcome;
pub use super::transfers::{Role, Row, Stage, XferNotice};

/// One thing that happened. JSON form: `{"type":"users","data":{...}}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum Event {
    /// Logged in: our name and where peers reach us.
    Welcome { name: String, addr: String },
    /// Something about chat sessions.
    Session(Notice),
    /// Something about file offers and transfers.
    Transfer(XferNotice),
    /// Something about messages through the server.
    Mail(MailNotice),
    /// The session that gets `Command::Say` changed.
    Active { peer: Option<String> },
    /// Who is online (answer to `Command::List`).
    Users {
        /// One page of names.
        users: Vec<String>,
        /// Each user's numeric id (same order as `users`), for `Command::Msg`.
        ids: Vec<u64>,
        /// How many are online in all (`Command::List { offset }` for the other pages).
        total: usize,
    },
    /// Where an online user listens (answer to `Command::Info`).
    UserInfo {
        /// The user, as registered.
        user: String,
        /// Where the user listens for peers.
        addr: String,
        /// The user's identity key as the server has it (`None`: none registered).
        key: Option<[u8; 32]>,
    },
    /// The server's command list.
    ServerHelp { lines: Vec<String> },
    /// Shared files (answer to `Command::Files`): `total` may exceed the page shown.
    Files { files: Vec<FileRow>, total: usize },
    /// Search results: `total` matches, the first `files` shown.
    Search { files: Vec<FileRow>, total: usize },
    /// A user came online.
    Online { users: Vec<String> },
    /// A user went offline.
    Offline { users: Vec<String> },
    /// Too many users came and went at once to name them: only the counts.
    Presence { came: usize, went: usize },
    /// The server announced something (it is shutting down).
    ServerNotice { message: String },
    /// The server refused a command.
    ServerError { code: u16, message: String },
    /// The server connection was lost; sessions go on; `Command::Reconnect` logs in again.
    ServerLost,
    /// Logged in again after `Command::Reconnect`.
    Reconnected,
    /// A command needs the server and there is no connection.
    NotConnected,
    /// A plain line of information.
    Note { text: String },
    /// Something asked for cannot be done.
    Error { text: String },
    /// The core has logged out and stops; no more events follow.
    Bye,
}

/// One shared file in a listing or search result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileRow {
    /// Who shares it.
    pub user: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its name in that user's shared folder.
    pub name: String,
}

/// A duration as whole seconds.
pub fn secs<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs())
}

/// A duration as milliseconds.
pub fn millis<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A session end reason as its wire word.
pub fn end_reason<S: Serializer>(r: &EndReason, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(r.word())
}

/// A transfer result as its wire word.
pub fn transfer_result<S: Serializer>(r: &TransferResult, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(r.word())
}

/// A file hash as hex (or null).
pub fn hash<S: Serializer>(h: &Option<blake3::Hash>, s: S) -> Result<S::Ok, S::Error> {
    match h {
        Some(h) => s.serialize_str(h.to_hex().as_str()),
        None => s.serialize_none(),
    }
}
