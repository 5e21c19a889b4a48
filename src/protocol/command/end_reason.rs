//! Why a session ended (`SESSION_END <id> <reason>`): the reason words on the wire and in
//! the server's session log.
//!
//! Owns the words and their parsing; it must not decide when a session ends (the client
//! core and `server::commands` do).

/// Why a session ended, as recorded in the server's session log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// A participant closed it.
    Closed,
    /// The target declined.
    Declined,
    /// The target did not answer in time.
    Timeout,
    /// The connection between the peers broke (a peer vanished).
    PeerLost,
    /// The target refused the connection (bad ticket, too many sessions, an error).
    Refused,
    /// The requester could not reach the target.
    Unreachable,
    /// Both participants went offline (recorded by the server).
    Offline,
    /// The server restarted while the session was open (recorded by the server).
    ServerRestart,
}

impl EndReason {
    /// Every reason, for tests and docs.
    pub const ALL: &'static [EndReason] = &[
        EndReason::Closed,
        EndReason::Declined,
        EndReason::Timeout,
        EndReason::PeerLost,
        EndReason::Refused,
        EndReason::Unreachable,
        EndReason::Offline,
        EndReason::ServerRestart,
    ];

    /// The word on the wire and in the log.
    pub fn word(self) -> &'static str {
        match self {
            EndReason::Closed => "closed",
            EndReason::Declined => "declined",
            EndReason::Timeout => "timeout",
            EndReason::PeerLost => "peer_lost",
            EndReason::Refused => "refused",
            EndReason::Unreachable => "unreachable",
            EndReason::Offline => "offline",
            EndReason::ServerRestart => "server_restart",
        }
    }

    /// Parses a word (case-insensitive).
    pub fn from_word(word: &str) -> Option<EndReason> {
        EndReason::ALL
            .iter()
            .copied()
            .find(|r| r.word().eq_ignore_ascii_case(word))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_reasons_round_trip() {
        for &reason in EndReason::ALL {
            assert_eq!(EndReason::from_word(reason.word()), Some(reason));
        }
        assert_eq!(EndReason::from_word("nope"), None);
    }
}
