//! The database schema as its migrations, in order: what every table and index is for
//! and the issue that added it.
//!
//! Owns the schema text only; it must not run it (each backend's `migrate` does) or
//! hold queries. A migration, once released, is never edited: add a new one.

/// Schema migrations; entry `i` takes the database from version i to i+1 (SQLite keeps
/// the version in `PRAGMA user_version`, PostgreSQL in the table `peerchat_schema`).
/// Written once in SQLite's dialect; `sql::postgres_dialect` rewrites them for
/// PostgreSQL (write types in capitals; `COLLATE NOCASE` for names; see there what else
/// it rewrites), and both backends run them.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: accounts, and failed logins per (username, source address) with their block.
    "CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        username TEXT NOT NULL UNIQUE COLLATE NOCASE,
        pw_hash TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE login_failures (
        username_key TEXT NOT NULL,
        ip TEXT NOT NULL,
        failures INTEGER NOT NULL,
        blocked_until_ms INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (username_key, ip)
    );",
    // 2: the log of chat sessions (seeds 000 and 002).
    "CREATE TABLE sessions (
        id INTEGER PRIMARY KEY,
        requester TEXT NOT NULL,
        target TEXT NOT NULL,
        started_at_ms INTEGER NOT NULL,
        accepted_at_ms INTEGER,
        ended_at_ms INTEGER,
        end_reason TEXT
    );
    CREATE INDEX sessions_open ON sessions (ended_at_ms) WHERE ended_at_ms IS NULL;",
    // 3: the log of file transfers, reported by the clients.
    "CREATE TABLE transfers (
        id INTEGER PRIMARY KEY,
        requester TEXT NOT NULL,
        target TEXT NOT NULL,
        started_at_ms INTEGER NOT NULL,
        ended_at_ms INTEGER,
        result TEXT,
        name TEXT,
        size INTEGER,
        hash TEXT,
        duration_ms INTEGER
    );",
    // 4: the truth about restarts and both sides of a transfer (issue 9). A session open
    // when the server stopped is "unknown since" then, not ended: its clients may report
    // the real end after reconnecting. Ends the old code invented at startup are undone.
    // Each side's transfer report is kept; the summary row says push or fetch, the bytes
    // that moved, the resume offset, and whether the receiver's report is the one shown.
    "ALTER TABLE sessions ADD COLUMN unknown_since_ms INTEGER;
    UPDATE sessions SET unknown_since_ms = ended_at_ms, ended_at_ms = NULL, end_reason = NULL
        WHERE end_reason = 'server_restart';
    ALTER TABLE transfers ADD COLUMN direction TEXT;
    ALTER TABLE transfers ADD COLUMN role TEXT;
    ALTER TABLE transfers ADD COLUMN moved INTEGER;
    ALTER TABLE transfers ADD COLUMN resumed_from INTEGER;
    ALTER TABLE transfers ADD COLUMN from_receiver INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE transfer_reports (
        transfer_id INTEGER NOT NULL,
        side TEXT NOT NULL,
        role TEXT,
        result TEXT NOT NULL,
        name TEXT NOT NULL,
        size INTEGER NOT NULL,
        moved INTEGER NOT NULL,
        resumed_from INTEGER NOT NULL,
        hash TEXT,
        duration_ms INTEGER NOT NULL,
        reported_at_ms INTEGER NOT NULL,
        PRIMARY KEY (transfer_id, side)
    );",
    // 5: resumable-login tokens (issue 14), stored as digests only.
    "CREATE TABLE login_tokens (
        digest TEXT PRIMARY KEY,
        username_key TEXT NOT NULL COLLATE NOCASE,
        expires_at_ms INTEGER NOT NULL,
        created_at_ms INTEGER NOT NULL
    );
    CREATE INDEX login_tokens_user ON login_tokens (username_key, created_at_ms);",
    // 6: the path each session and transfer took (issue 13): NULL is direct, or
    // 'reverse', 'relay'.
    "ALTER TABLE sessions ADD COLUMN path TEXT;
    ALTER TABLE transfers ADD COLUMN path TEXT;",
    // 7: each account's long-term X25519 identity public key (issue 12), 64 lower-case
    // hex digits, NULL until the client sends `KEY`; a later `KEY` replaces it.
    "ALTER TABLE users ADD COLUMN identity_key TEXT;",
    // 8: messages waiting for offline recipients (issue 13): sealed to the recipient's
    // identity key, so the server stores only ciphertext.
    // AUTOINCREMENT: a message id is never reused, even after the row was delivered.
    "CREATE TABLE mailbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        recipient_id INTEGER NOT NULL,
        sender TEXT NOT NULL,
        sender_key TEXT,
        sent_at_ms INTEGER NOT NULL,
        expires_at_ms INTEGER NOT NULL,
        sealed BLOB NOT NULL
    );
    CREATE INDEX mailbox_recipient ON mailbox (recipient_id, id);
    CREATE INDEX mailbox_expiry ON mailbox (expires_at_ms);",
    // 9: events held for offline users (issue 13): file offers made through the server
    // and answers to them, each a complete EVENT line, delivered at the next login.
    "CREATE TABLE held_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        recipient_id INTEGER NOT NULL,
        line TEXT NOT NULL,
        held_at_ms INTEGER NOT NULL,
        expires_at_ms INTEGER NOT NULL
    );
    CREATE INDEX held_events_recipient ON held_events (recipient_id, id);",
    // 10: file offers made through the server and not yet settled (issue 13), so an
    // answer to an offer that does not wait (unknown, expired, answered) is refused, and
    // an accepted offer the server numbered keeps its number for the later TRANSFER.
    // Names in lower case; `numbered` 1 when the server gave the number (a transfer id);
    // `accepted` 1 once its recipient said ok (then it waits for the offerer's TRANSFER).
    "CREATE TABLE open_offers (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        offerer TEXT NOT NULL,
        recipient TEXT NOT NULL,
        offer INTEGER NOT NULL,
        numbered INTEGER NOT NULL,
        accepted INTEGER NOT NULL,
        expires_at_ms INTEGER NOT NULL
    );
    CREATE INDEX open_offers_pair ON open_offers (offerer, recipient, offer);",
];
