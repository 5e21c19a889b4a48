//! peerchat: peer-to-peer chat and file sharing with a central server for accounts and
//! presence. Module map (each module's own doc says what it owns and must not do):
//!
//! - [`error`]: the crate's error type.
//! - [`sanitize`]: the one rule for showing, logging or storing text from others
//!   (control and Unicode format characters become U+FFFD).
//! - [`protocol`]: the wire protocols of protocol.md; no sockets except `protocol::line`.
//!   - `protocol::line`: bounded line framing (and the raw bytes after a `CHUNK` line).
//!   - `protocol::server_msg`: server→client lines, parse and format; re-exports the two
//!     below. `mod.rs` the message and its dispatch, `reply` (`OK`), `event` (`EVENT`),
//!     `body` (list body lines), `transfer_end` (outcome words), `fields` (field parsers).
//!   - `protocol::command`: client→server commands after login (parse and format);
//!     `command::table` the command table (HELP, argument counts), `command::end_reason`
//!     why a session ended.
//!   - `protocol::login_msg`: the answers during login and the username, password and port rules.
//!   - `protocol::peer_msg`: peer↔peer messages, including data connections' first lines.
//!   - `protocol::transfer_msg`: the lines of a file transfer and the file hash scheme.
//!   - `protocol::identity_key`: the `<key>` field (a user's identity key or `-`).
//!   - `protocol::mail_msg`: sealed messages' hex and `<id|username>` (`WHOIS`, `SEND`).
//!   - `protocol::ticket`: one-time tickets (128 random bits; hidden from `Debug`).
//!   - `protocol::session_token`: resumable-login tokens (256 random bits; stored hashed).
//!   - `protocol::codes`: `ERR` codes.
//!   - `protocol::file_name`: the one rule for safe file names.
//!   - `protocol::limits`: every limit and default timeout.
//! - [`crypto`]: encrypted, authenticated links; no peerchat line is parsed there.
//!   - `crypto::tls`: TLS 1.3 with rustls (ring); everything re-exported from its mod.rs.
//!     - `tls::cert`: fingerprints, the server's certificate and key, the server config.
//!     - `tls::pinning`: what the client trusts, the pinning verifier, the client config.
//!     - `tls::stream`: the TLS stream a reader and a writer thread share; handshakes.
//!   - `crypto::trust`: the client's decision about a server's certificate (pins, TOFU).
//!   - `crypto::noise`: the peer-link Noise handshake (ticket as PSK); `noise::stream`
//!     the framed reader and writer after it.
//!   - `crypto::identity`: long-term X25519 keys, pins of peers' keys, safety numbers.
//!   - `crypto::sealed`: one-way Noise messages sealed to a user's identity key.
//! - [`server`]: the central server.
//!   - `server` (mod): settings, accept loop, connection cap, shutdown.
//!   - `server::conn`: one connection's read → parse → dispatch → reply loop.
//!   - `server::login`: the Y/N login conversation, registration, blocks.
//!   - `server::login_limits`: password checks reserved per (name, address) and per name.
//!   - `server::hash_gate`: the bcrypt queue (permits, deadlines, per-address cap).
//!   - `server::rate_limit`: token buckets and per-address slots (pure memory).
//!   - `server::commands`: what each command does (presence, sessions, transfers, files).
//!   - `server::registry`: who is connected and online (one mutex, leaf lock), and the
//!     presence changes not yet announced.
//!   - `server::presence`: announces presence changes in batches, once per interval.
//!   - `server::cluster`: presence and delivery across servers through Redis
//!     (`--cluster`): login keys, heartbeat, pub/sub; `cluster::message` their text.
//!   - `server::file_index`: shared files of online users, for FILES and SEARCH.
//!   - `server::futex_hash`: sizes the kernel's futex hash for many threads (Linux 6.16+).
//!   - `server::outbox`: one connection's bounded outgoing queue and writer thread.
//!   - `server::store`: the storage interface (one `Store`, SQLite or PostgreSQL) and
//!     its connection pool; `store::schema` the migrations; `store::accounts` the account
//!     and login-failure queries.
//!   - `server::store::sql`: values, rows, the backends' `Conn` trait, and the SQLite
//!     to PostgreSQL dialect rewrite.
//!   - `server::store::sqlite`: the SQLite backend (the embedded default).
//!   - `server::store::postgres`: the PostgreSQL backend (`--db postgres://...`).
//!   - `server::store::location`: `--db` as a file path or a URL, shown without password.
//!   - `server::store::logs`: the session and transfer logs' records and queries.
//!   - `server::store::tokens`: resumable-login token digests, owners and expiry.
//!   - `server::store::identity`: each account's identity key (`KEY`).
//!   - `server::store::mailbox`: sealed messages waiting for offline users; account ids.
//!   - `server::mailbox`: `WHOIS`, `SEND`, and delivering waiting messages at login.
//!   - `server::offers`: file offers and answers through the server, held for offline users.
//!   - `server::store::held`: the offers and answers held for offline users.
//!   - `server::session_log`: the printed log of sessions and transfers.
//!   - `server::ladder`: address hints (`HINTS`) and asking a target to dial back
//!     (`REVERSE` → `EVENT DIAL`).
//!   - `server::relay`: the relay: pairing by one-time token, two copy threads per pair.
//!   - `server::relay_token`: issuing and checking relay tokens (pure, no I/O).
//! - [`client`]: the client: one core, two front ends (`client` (mod) picks one).
//!   - `client::core`: the engine, with no terminal and no HTTP code: `start` logs in
//!     through a `Prompter`, then one loop takes `Command`s and emits `Event`s.
//!     - `core::command` / `core::event`: what a front end may ask and is told (serde).
//!     - `core::engine`: the select loop moving work between links, sessions, transfers.
//!       - `engine::server`: server messages, losing the link, reconnect, logout.
//!       - `engine::turns`: the loop itself, and the shortcuts that let the thread with
//!         a chat line run it through the engine when it is idle.
//!     - `core::lane`: a queue into the core whose sender may handle an item itself.
//!     - `core::server_link`: reader and writer threads of the server connection.
//!     - `core::login`: answering the server's login questions (the `Prompter` trait),
//!       with the server's resumable-login token first when logging in again.
//!     - `core::retry`: when `--auto-reconnect` tries again (doubling, jittered).
//!     - `core::peer_link`: each established peer link's reader and writer threads.
//!     - `core::peer_accept`: the peer listener, dial-backs and relayed arrivals: the
//!       responder's handshake and first line, until the connection is accepted.
//!     - `core::peer_dial`: asking peers and opening data connections; the target's proof.
//!     - `core::ladder`: obtaining a connected stream: all hints at once (first wins),
//!       waiting to be dialled back, the listener's `REVERSE` check, dialling back
//!       (`transfers::ladder`: the rungs' order for one data connection).
//!     - `core::peer_limits`: handshake slots per address and the tally of refusals.
//!     - `core::sessions`: ticket checks and the chat sessions.
//!       - `sessions::connect`: requests, tickets, the incoming check, answers, reversal.
//!       - `sessions::chat`: open sessions: messages, the active one, list, close, history.
//!     - `core::history`: the local SQLite history of chat lines.
//!     - `core::mail`: `\msg` through the server: sealing, opening, checking the sender.
//!     - `core::offer_route`: file offers without a session go through the server.
//!     - `core::transfers`: the table of file offers and transfers (`transfers::refusals`:
//!       the refusals a cap or a lookup decides, and the size a fetch expects;
//!       `transfers::offers`: offers, accepts, declines and fetches; `transfers::running`:
//!       data connections, transfer threads' events, `\transfers`, `\cancel`, `tick`).
//!     - `core::transfer`: moving one file: chunks, hashes, resume, safe names, shares.
//!       (`transfer::wire`: the data connection's lines and stops; `transfer::send`,
//!       `transfer::receive`: the two sides; `transfer::partial`: kept partial files;
//!       `transfer::names`: final file names; `transfer::share`: the shared folder).
//!     - `core::transfer_index`: O(1) lookups and per-peer caps beside the transfer table.
//!     - `core::disk_space`: free space before a receive, and the cap on kept partials.
//!     - `core::resume_check`: re-checks a resumed transfer's kept prefix on disk.
//!     - `core::summary`: the words for sizes, roles and a finished transfer's summary.
//!   - `client::tui`: the terminal front end: its loop (lines → commands, events → text).
//!     - `tui::ui`: parsing what the user types and rendering events; no sockets.
//!       `mod.rs` the dispatch and server lists, `commands`, `notices` (chat), `transfers`.
//!     - `tui::terminal`: where output goes (above the typed line, the status line,
//!       colours) and where typed lines come from; pipes get plain lines.
//!     - `tui::editor`: the line editor (rustyline) for a terminal and restoring the
//!       terminal's modes on every way out.
//!     - `tui::menu`: seed 003's numbered `\menu`.
//!     - `tui::send_paths`: `\send`'s argument: `~`, globs, several paths.
//!   - `client::web`: the web front end (`--gui`): loopback HTTP server, token, login
//!     thread and the pump from core events to the event log and the snapshot.
//!     - `web::guard`: the Host/Origin/token checks and security headers, in one place.
//!     - `web::routes`: the page (compiled-in `assets/`) and the JSON API; body caps.
//!     - `web::log`: events with ids rising by one, for long polls (capped in number).
//!     - `web::state`: the snapshot the page draws itself from (`GET /api/state`).
//!     - `web::prompter`: the login's `Prompter` answered by the page.
//!     - `web::staging`: uploads staged to be offered, deleted when their offer ends.

pub mod client;
pub mod crypto;
pub mod error;
pub mod protocol;
pub mod sanitize;
pub mod server;

pub use error::{Error, Result};
