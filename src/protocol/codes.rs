//! The reply codes of `ERR` lines: each number, its stable name and its meaning.
//!
//! Owns the table only; it must not format or parse whole lines (see `server_msg`).

use std::fmt;

macro_rules! codes {
    ($( $(#[$doc:meta])* $variant:ident = $num:literal, $name:literal; )*) => {
        /// A stable error code: the number and the name never change meaning.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $( $(#[$doc])* $variant, )*
        }

        impl ErrorCode {
            /// Every code, in table order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),*];

            /// The number written on the wire.
            pub fn number(self) -> u16 {
                match self { $(ErrorCode::$variant => $num,)* }
            }

            /// The name written on the wire after the number.
            pub fn name(self) -> &'static str {
                match self { $(ErrorCode::$variant => $name,)* }
            }

            /// The code with this number and name, if both match one entry.
            pub fn from_wire(number: u16, name: &str) -> Option<ErrorCode> {
                match (number, name) {
                    $(($num, $name) => Some(ErrorCode::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

codes! {
    /// Wrong number or shape of arguments, or an answer the question does not allow.
    BadRequest = 400, "BAD_REQUEST";
    /// Wrong username or password; never says which.
    AuthFailed = 401, "AUTH_FAILED";
    /// Too many failures: the name is blocked from this address for a while.
    Blocked = 403, "BLOCKED";
    /// No such user online.
    NotOnline = 404, "NOT_ONLINE";
    /// No such command.
    UnknownCommand = 405, "UNKNOWN_COMMAND";
    /// A command sent before login finished.
    LoginRequired = 406, "LOGIN_REQUIRED";
    /// Login not finished in time, or no line within the idle timeout.
    Timeout = 408, "TIMEOUT";
    /// The username is registered already.
    NameTaken = 409, "NAME_TAKEN";
    /// The account is logged in on another connection.
    AlreadyOnline = 410, "ALREADY_ONLINE";
    /// The username breaks the rules.
    BadUsername = 411, "BAD_USERNAME";
    /// The password breaks the rules.
    BadPassword = 412, "BAD_PASSWORD";
    /// A line longer than the limit.
    LineTooLong = 413, "LINE_TOO_LONG";
    /// A line that is not UTF-8.
    BadEncoding = 414, "BAD_ENCODING";
    /// The port is not a number from 1 to 65535.
    BadPort = 415, "BAD_PORT";
    /// `SHARE` lists more files than one user, one address or the whole index may share.
    TooManyFiles = 416, "TOO_MANY_FILES";
    /// A peer connection presented no valid ticket for this client.
    BadTicket = 421, "BAD_TICKET";
    /// A file chunk or the whole file did not match its hash.
    Corrupt = 422, "CORRUPT";
    /// A file transfer was refused: unknown offer, unsafe name, not shared, disk error.
    TransferRefused = 423, "TRANSFER_REFUSED";
    /// A sharer serves as many fetches (in all, or to this peer) as it allows.
    ServeBusy = 424, "SERVE_BUSY";
    /// A peer has as many file offers waiting as the receiver allows.
    TooManyOffers = 425, "TOO_MANY_OFFERS";
    /// The receiver has not enough free disk space for the file.
    NoSpace = 426, "NO_SPACE";
    /// A peer sent more lines than the flood limit allows.
    Flood = 429, "FLOOD";
    /// A client already has as many sessions as it allows.
    TooManySessions = 431, "TOO_MANY_SESSIONS";
    /// No such session, or not one of yours.
    NoSession = 432, "NO_SESSION";
    /// A peer message arrived at the wrong moment (chat before ACCEPT, say).
    OutOfOrder = 433, "OUT_OF_ORDER";
    /// Too many requests in a short time: `CONNECT`/`TRANSFER` per user, username checks
    /// per address, or password checks for one username; the message says when to retry.
    RateLimited = 434, "RATE_LIMITED";
    /// Too many connections from one address that have not logged in yet.
    TooManyConnections = 435, "TOO_MANY_CONNECTIONS";
    /// (peer) A chat request from this requester is already waiting for an answer.
    AlreadyAsked = 440, "ALREADY_ASKED";
    /// (peer) An `ACCEPT` without the right MAC: the answer did not come from the holder
    /// of the ticket (someone else answered at the target's address).
    BadProof = 441, "BAD_PROOF";
    /// No account has this name or id (`WHOIS`, `SEND`).
    NoSuchUser = 450, "NO_SUCH_USER";
    /// The recipient has as many messages waiting at the server as it allows.
    MailboxFull = 451, "MAILBOX_FULL";
    /// The server holds as many waiting messages (for everyone) as it allows.
    MailboxesFull = 452, "MAILBOXES_FULL";
    /// A sealed message larger than the limit.
    MessageTooLarge = 453, "MESSAGE_TOO_LARGE";
    /// Too many `SEND`s in a short time; the message says when to retry.
    TooManyMessages = 454, "TOO_MANY_MESSAGES";
    /// The recipient (or the server in all) has as many file offers waiting as allowed.
    OffersFull = 455, "OFFERS_FULL";
    /// `OFFER_ANSWER` or `TRANSFER <user> <offer>` naming no offer that waits for it
    /// (unknown, expired, already answered, or not between these two users).
    NoSuchOffer = 456, "NO_SUCH_OFFER";
    /// `SEND` or `OFFER` past one sender's share of what waits at the server: messages
    /// or file offers for this recipient, or messages for everyone together.
    TooManyWaiting = 465, "TOO_MANY_WAITING";
    /// A `RESUME` token that is unknown, expired, revoked or not the named user's.
    BadToken = 480, "BAD_TOKEN";
    /// (peer) Too many peer handshakes at once, from this address or in all.
    PeerBusy = 442, "PEER_BUSY";
    /// (peer) The other side's identity key differs from the one pinned for that user:
    /// refused until the person checks it and types `\trust <user>`.
    KeyChanged = 443, "KEY_CHANGED";
    /// (peer) The key proven in the Noise handshake is not the one the server named for
    /// that user.
    KeyMismatch = 444, "KEY_MISMATCH";
    /// (peer) The connection did not start with a Noise handshake, or the handshake
    /// failed (protocol.md §10).
    NotNoise = 445, "NOT_NOISE";
    /// The server failed; try again.
    Internal = 500, "INTERNAL";
    /// The server has as many connections as it allows.
    ServerFull = 503, "SERVER_FULL";
    /// Too many logins are waiting for password checks to finish in time; retry shortly.
    Busy = 504, "BUSY";
    /// (relay) The relay carries as many circuits as it allows (`--relay-max-circuits`).
    RelayFull = 520, "RELAY_FULL";
    /// (relay) This user has as many relayed circuits as allowed (`--relay-max-per-user`).
    RelayUserFull = 521, "RELAY_USER_FULL";
    /// (relay) The relay token is malformed, forged, expired, or spent already.
    RelayToken = 522, "RELAY_TOKEN";
    /// (relay) The other end of the circuit did not arrive before the token expired.
    RelayNoPartner = 523, "RELAY_NO_PARTNER";
    /// A `HINTS` list with too many addresses, or one that peers cannot dial
    /// (loopback, unspecified, multicast, broadcast).
    BadHints = 524, "BAD_HINTS";
    /// (peer) A `REVERSE` line naming no request of ours that waits to be dialled back
    /// (unknown, already answered, or given up).
    NoReverse = 525, "NO_REVERSE";
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.number(), self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_names_are_unique_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for &code in ErrorCode::ALL {
            assert!(
                seen.insert(code.number()),
                "duplicate number {}",
                code.number()
            );
            assert_eq!(ErrorCode::from_wire(code.number(), code.name()), Some(code));
        }
        assert_eq!(ErrorCode::from_wire(400, "NOT_ONLINE"), None);
        assert_eq!(ErrorCode::from_wire(999, "BAD_REQUEST"), None);
    }
}
