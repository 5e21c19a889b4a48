//! Every fixed limit and default timeout of the protocol, in one place.
//!
//! Owns numbers only; it must not hold logic. protocol.md §8 lists the same values:
//! change both together.

use std::time::Duration;

/// Longest line, in bytes before the terminator, that either side accepts.
/// 4 KiB holds any command with room to spare and caps what one slow client can pin.
pub const MAX_LINE: usize = 4096;

/// Shortest username, in characters.
pub const USERNAME_MIN: usize = 3;
/// Longest username, in characters.
pub const USERNAME_MAX: usize = 32;

/// Shortest password, in bytes.
pub const PASSWORD_MIN: usize = 4;
/// Longest password, in bytes: bcrypt ignores everything past 72 bytes, so longer
/// passwords are refused rather than silently cut.
pub const PASSWORD_MAX: usize = 72;

/// Consecutive failed logins for one (username, source IP) that trigger a block, and
/// failed logins on one connection that close it.
pub const MAX_LOGIN_FAILURES: u32 = 3;

/// Default time a blocked (username, source IP) stays blocked.
pub const DEFAULT_BLOCK: Duration = Duration::from_secs(300);

/// Default time from connect to `OK WELCOME`.
pub const DEFAULT_LOGIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Default time a logged-in connection may stay silent before the server drops it.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// How often `peerchat-client` sends `PING`: a third of the default idle timeout, so two
/// lost pings in a row still leave the client online.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(30);

/// Default cap on simultaneous connections to the server.
pub const DEFAULT_MAX_CLIENTS: usize = 1024;

/// Messages that may wait in one connection's outgoing queue before the server gives up
/// on that client.
pub const OUTGOING_QUEUE: usize = 1024;

/// Default bcrypt cost for new password hashes.
pub const DEFAULT_BCRYPT_COST: u32 = 12;

/// Most lines a list reply may announce; a bound for readers so a hostile count cannot
/// make them wait for or allocate an unbounded amount.
pub const MAX_LIST_LINES: usize = 1_000_000;

/// How long the server waits for a writer to push bytes into a client's socket before it
/// considers the client dead.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
