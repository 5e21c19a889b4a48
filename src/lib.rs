//! peerchat: peer-to-peer chat and file sharing with a central server for accounts and
//! presence. Module map (each module's own doc says what it owns and must not do):
//!
//! - [`error`]: the crate's error type.
//! - [`protocol`]: the wire protocols of protocol.md; no sockets except `protocol::line`.
//!   - `protocol::line`: bounded line framing.
//!   - `protocol::server_msg`: client↔server messages, parse and format.
//!   - `protocol::codes`: `ERR` codes.
//!   - `protocol::limits`: every limit and default timeout.
//! - [`server`]: the central server.
//!   - `server` (mod): settings, accept loop, connection cap, shutdown.
//!   - `server::conn`: one connection's read → parse → dispatch → reply loop.
//!   - `server::login`: the Y/N login conversation, registration, blocks.
//!   - `server::commands`: what each command does.
//!   - `server::registry`: who is connected and online (one mutex, leaf lock).
//!   - `server::outbox`: one connection's bounded outgoing queue and writer thread.
//!   - `server::store`: SQLite schema, migrations and queries.
//! - [`client`]: the terminal client.
//!   - `client` (mod): wiring and the UI loop.
//!   - `client::server_link`: reader and writer threads of the server connection.
//!   - `client::login`: answering the server's login questions.
//!   - `client::ui`: parsing what the user types and rendering what happens; no sockets.

pub mod client;
pub mod error;
pub mod protocol;
pub mod server;

pub use error::{Error, Result};
