//! What a front end may ask the client core to do.
//!
//! Owns the typed commands both front ends send (the terminal parses typed lines into
//! them, the web page posts them as JSON). It must not parse terminal syntax or know
//! any transport: a command is plain data.

use std::path::PathBuf;

use serde::Deserialize;

/// One request from a front end to the core. JSON form: `{"type":"say","text":"hi"}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// Ask the server who is online, one page from `offset` (answered by `Event::Users`).
    List {
        /// Position of the first name (the server pages by 1000).
        #[serde(default)]
        offset: usize,
    },
    /// Ask the server where `user` listens for peers (answered by `Event::UserInfo`).
    Info { user: String },
    /// Ask the server for its own command list (answered by `Event::ServerHelp`).
    ServerHelp,
    /// Open a chat session with `user`.
    Connect { user: String },
    /// Accept a chat request (from `user`, or the only one waiting).
    Accept { user: Option<String> },
    /// Decline a chat request (from `user`, or the only one waiting).
    Decline { user: Option<String> },
    /// List the sessions (answered by a session notice).
    Sessions,
    /// Make the session with `user` the active one.
    Switch { user: String },
    /// End the active session, or the one with `user`.
    Close { user: Option<String> },
    /// The last `n` lines said with `user`.
    History { user: String, n: usize },
    /// Say `text` in the active session.
    Say { text: String },
    /// Say `text` in the session with `user`, without switching.
    SayTo { user: String, text: String },
    /// Accept file offer `id`.
    AcceptFile { id: u64 },
    /// Decline file offer `id`.
    DeclineFile { id: u64 },
    /// Offer the file at `path` to `to` (or to the active session's peer).
    SendFile { path: PathBuf, to: Option<String> },
    /// The files online users share (or one user's).
    Files { user: Option<String> },
    /// Shared files whose names contain `text`.
    Search { text: String },
    /// Download `name` from `user`'s shared folder.
    Fetch { user: String, name: String },
    /// List transfers (answered by a transfer notice).
    Transfers,
    /// Stop transfer `id` (or withdraw an offer).
    Cancel { id: u64 },
    /// Tell the server again what the shared folder holds.
    Rescan,
    /// Accept `user`'s changed identity key (after checking it): it is pinned instead.
    Trust { user: String },
    /// Show the safety number of our key and `user`'s, to compare by voice.
    Verify { user: String },
    /// Send `text` to `to` (a username or the id `\\list` shows) through the server,
    /// sealed to their identity key; it waits at the server if they are offline.
    Msg { to: String, text: String },
    /// Log in to the server again after it went away.
    Reconnect,
    /// Log out and stop the core.
    Quit,
}
