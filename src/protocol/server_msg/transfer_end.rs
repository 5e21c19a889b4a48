//! The words of a `TRANSFER_END` report: how a transfer ended (`TransferResult`) and
//! which side reports it (`TransferRole`).
//!
//! Owns those words and what they imply (direction, who receives, who requested); it
//! must not log or store a transfer (see `server::commands` and the store).

/// How a transfer ended, as logged by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferResult {
    /// Delivered and verified.
    Ok,
    /// Broke off (connection lost, disk error); may be resumed.
    Failed,
    /// Cancelled by either side.
    Cancelled,
    /// A chunk or the whole file failed its hash.
    Corrupt,
    /// Refused (declined offer, unsafe name, not shared).
    Refused,
}

impl TransferResult {
    /// Every result.
    pub const ALL: &'static [TransferResult] = &[
        TransferResult::Ok,
        TransferResult::Failed,
        TransferResult::Cancelled,
        TransferResult::Corrupt,
        TransferResult::Refused,
    ];

    /// The word on the wire and in the log.
    pub fn word(self) -> &'static str {
        match self {
            TransferResult::Ok => "ok",
            TransferResult::Failed => "failed",
            TransferResult::Cancelled => "cancelled",
            TransferResult::Corrupt => "corrupt",
            TransferResult::Refused => "refused",
        }
    }

    /// Parses a word (case-insensitive).
    pub fn from_word(word: &str) -> Option<TransferResult> {
        TransferResult::ALL
            .iter()
            .copied()
            .find(|r| r.word().eq_ignore_ascii_case(word))
    }
}

/// Which side of a transfer a `TRANSFER_END` report comes from, and so the direction:
/// `send`/`receive` are the two sides of a push, `fetch`/`serve` of a fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferRole {
    /// Pushes a file it offered (asked for the ticket).
    Send,
    /// Receives a pushed file.
    Receive,
    /// Downloads from the other's shared folder (asked for the ticket).
    Fetch,
    /// Serves a file from its shared folder.
    Serve,
}

impl TransferRole {
    /// Every role.
    pub const ALL: &'static [TransferRole] = &[
        TransferRole::Send,
        TransferRole::Receive,
        TransferRole::Fetch,
        TransferRole::Serve,
    ];

    /// The word on the wire and in the log.
    pub fn word(self) -> &'static str {
        match self {
            TransferRole::Send => "send",
            TransferRole::Receive => "receive",
            TransferRole::Fetch => "fetch",
            TransferRole::Serve => "serve",
        }
    }

    /// Parses a word (case-insensitive).
    pub fn from_word(word: &str) -> Option<TransferRole> {
        TransferRole::ALL
            .iter()
            .copied()
            .find(|r| r.word().eq_ignore_ascii_case(word))
    }

    /// `push` or `fetch`.
    pub fn direction(self) -> &'static str {
        match self {
            TransferRole::Send | TransferRole::Receive => "push",
            TransferRole::Fetch | TransferRole::Serve => "fetch",
        }
    }

    /// True for the side that writes the file and verifies its hash.
    pub fn receives(self) -> bool {
        matches!(self, TransferRole::Receive | TransferRole::Fetch)
    }

    /// True for the side that asked for the ticket (the requester in the log).
    pub fn requests(self) -> bool {
        matches!(self, TransferRole::Send | TransferRole::Fetch)
    }
}
