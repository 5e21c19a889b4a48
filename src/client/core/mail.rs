//! Messages through the server (`\msg`, protocol.md §4d): sealing what we send to the
//! recipient's identity key, and opening and checking what arrives.
//!
//! Owns the two queues of our messages in flight (waiting for `OK WHOIS`, then for
//! `OK SENT`; the server answers in order, so the oldest entry is always the one
//! answered) and the checks on a received message: it must open with our key, the key
//! that sealed it must be the one the server has for its sender (and not differ from the
//! sender's pin), and it must not be a replay (`replay`: a message id seen before, or a
//! send time older than the mailbox keeps messages). It must not own a socket or render text: it returns the commands
//! to send and the notices to show.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;

use crate::crypto::identity::{Identity, PEER_PINS, Pins};
use crate::crypto::sealed;
use crate::protocol::codes::ErrorCode;
use crate::protocol::identity_key::KeyField;
use crate::protocol::limits::{MAILBOX_EXPIRY, MAX_MESSAGE_TEXT};
use crate::protocol::mail_msg::UserRef;
use crate::protocol::server_msg::Command;

use super::history::Line;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Something about messages through the server that the person should see.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", content = "data", rename_all = "snake_case")]
pub enum MailNotice {
    /// A message arrived, opened and checked.
    Received {
        /// The server's message id.
        id: u64,
        /// Sender, time (the server's, when it took the message) and text.
        line: Line,
    },
    /// The next `count` messages waited at the server while we were away.
    Away { count: usize },
    /// The server took our message: handed to the recipient now, or queued.
    Sent {
        /// The recipient as registered.
        to: String,
        /// The server's message id.
        id: u64,
        /// Handed over now (else queued until the recipient logs in).
        delivered: bool,
        /// How long a queued message waits at most, in seconds.
        expiry_secs: u64,
    },
    /// Our message could not be sent.
    NotSent { to: String, why: String },
    /// A message was refused: it did not open, or another key sealed it.
    Rejected { from: String, why: String },
}

/// A number for each request whose `ERR` both `Mail` and the offers through the server
/// could claim (`ERR 450` answers a `WHOIS` and an `OFFER`, `ERR 454` a `SEND` and an
/// `OFFER`): replies come in the order requests were sent, so such an `ERR` answers the
/// one with the smaller number. Without it an `OFFER` to an unknown user took the error
/// of a `WHOIS` typed after it, and the next `OK WHOIS` sealed another message to the
/// wrong person.
pub fn request_stamp() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A message of ours waiting for the server's answer.
struct Pending {
    /// What the person typed to name the recipient.
    to: String,
    /// The text (kept until it is sealed).
    text: String,
    /// `request_stamp` when its `WHOIS` was sent.
    seq: u64,
}

/// Our side of messages through the server.
pub struct Mail {
    /// Our name as registered.
    me: String,
    /// Our long-term key: seals what we send and opens what we get.
    identity: Arc<Identity>,
    /// Where the pins of peers' keys live (`<data-dir>/<me>/`).
    pin_dir: PathBuf,
    /// Sent `WHOIS`, waiting for its answer (oldest first).
    whois: VecDeque<Pending>,
    /// Sent `SEND`, waiting for `OK SENT` (recipient names and texts, oldest first, with
    /// the `request_stamp` of each).
    sent: VecDeque<(String, String, u64)>,
    /// For the front end.
    notices: Vec<MailNotice>,
    /// Lines for the local history: (peer, line), sent and received.
    history: Vec<(String, Line)>,
    /// The ids of messages already shown (persisted in `pin_dir`), against replays.
    seen: super::replay::Seen,
}

impl Mail {
    /// Messages for `me`, sealed and opened with `identity`; pins are read in `pin_dir`.
    pub fn new(me: &str, identity: Arc<Identity>, pin_dir: PathBuf) -> Mail {
        Mail {
            me: me.to_string(),
            identity,
            pin_dir: pin_dir.clone(),
            whois: VecDeque::new(),
            sent: VecDeque::new(),
            notices: Vec::new(),
            history: Vec::new(),
            seen: super::replay::Seen::open(&pin_dir, now_ms()),
        }
    }

    /// Lines to keep in the local history since the last call: (peer, line).
    pub fn take_history(&mut self) -> Vec<(String, Line)> {
        std::mem::take(&mut self.history)
    }

    /// The notices since the last call.
    pub fn take_notices(&mut self) -> Vec<MailNotice> {
        std::mem::take(&mut self.notices)
    }

    fn not_sent(&mut self, to: &str, why: impl Into<String>) {
        self.notices.push(MailNotice::NotSent {
            to: to.to_string(),
            why: why.into(),
        });
    }

    /// `\msg <to> <text>`: the `WHOIS` to send first (the recipient's key), or `None`
    /// when the message is refused here (a notice says why).
    pub fn request(&mut self, to: &str, text: &str) -> Option<Command> {
        let text = text.trim();
        if text.is_empty() {
            self.not_sent(to, "there is no text to send");
            return None;
        }
        if text.len() > MAX_MESSAGE_TEXT {
            self.not_sent(
                to,
                format!(
                    "a message through the server holds at most {MAX_MESSAGE_TEXT} bytes ({} given)",
                    text.len()
                ),
            );
            return None;
        }
        if to.eq_ignore_ascii_case(&self.me) {
            self.not_sent(to, "that is you");
            return None;
        }
        self.whois.push_back(Pending {
            to: to.to_string(),
            text: text.to_string(),
            seq: request_stamp(),
        });
        Some(Command::Whois {
            user: UserRef::parse(to),
        })
    }

    /// `OK WHOIS`: seal the oldest waiting message to that key; the `SEND` to make.
    pub fn on_whois(&mut self, id: u64, user: &str, key: KeyField) -> Option<Command> {
        let pending = self.whois.pop_front()?;
        if user.eq_ignore_ascii_case(&self.me) {
            self.not_sent(&pending.to, "that is you");
            return None;
        }
        let Some(key) = key else {
            self.not_sent(
                user,
                format!("{user} has no identity key yet (they have not logged in with a client that makes one), so nothing can be sealed to them"),
            );
            return None;
        };
        if let Some(why) = self.pin_conflict(user, &key) {
            self.not_sent(user, why);
            return None;
        }
        // A fresh id and our send time go inside the sealed payload: the recipient
        // refuses a copy or an old message the server hands over again.
        let id_text = match super::replay::new_id() {
            Ok(id_text) => id_text,
            Err(e) => {
                self.not_sent(user, format!("could not make a message id: {e}"));
                return None;
            }
        };
        let payload = super::replay::wrap(&id_text, now_ms(), &pending.text);
        match sealed::seal(self.identity.private(), &self.me, user, &key, &payload) {
            Ok(sealed) => {
                self.sent
                    .push_back((user.to_string(), pending.text, request_stamp()));
                Some(Command::Send {
                    to: UserRef::Id(id),
                    sealed,
                })
            }
            Err(e) => {
                self.not_sent(user, format!("could not seal it: {e}"));
                None
            }
        }
    }

    /// `OK SENT`: our oldest `SEND` was taken.
    pub fn on_sent(&mut self, id: u64, delivered: bool) {
        if let Some((to, text, _)) = self.sent.pop_front() {
            let line = Line {
                sender: self.me.clone(),
                at_ms: now_ms(),
                text,
            };
            self.history.push((to.clone(), line));
            self.notices.push(MailNotice::Sent {
                to,
                id,
                delivered,
                expiry_secs: MAILBOX_EXPIRY.as_secs(),
            });
        }
    }

    /// The stamp of the oldest of our requests that an `ERR` with `code` would answer.
    pub fn oldest_stamp(&self, code: ErrorCode) -> Option<u64> {
        match code {
            ErrorCode::NoSuchUser => self.whois.front().map(|p| p.seq),
            ErrorCode::MailboxFull
            | ErrorCode::MailboxesFull
            | ErrorCode::MessageTooLarge
            | ErrorCode::TooManyMessages
            | ErrorCode::TooManyWaiting => self.sent.front().map(|s| s.2),
            _ => None,
        }
    }

    /// An `ERR` from the server: true if it answered one of our messages (and a notice
    /// says so), false if it is someone else's.
    pub fn on_error(&mut self, code: ErrorCode, message: &str) -> bool {
        match code {
            // Only WHOIS and SEND say NO_SUCH_USER, and a SEND follows a WHOIS that
            // found the user, so it answers the oldest WHOIS.
            ErrorCode::NoSuchUser => match self.whois.pop_front() {
                Some(p) => {
                    self.not_sent(&p.to, message);
                    true
                }
                None => false,
            },
            ErrorCode::MailboxFull
            | ErrorCode::MailboxesFull
            | ErrorCode::MessageTooLarge
            | ErrorCode::TooManyMessages
            | ErrorCode::TooManyWaiting => match self.sent.pop_front() {
                Some((to, _, _)) => {
                    self.not_sent(&to, message);
                    true
                }
                None => false,
            },
            _ => false,
        }
    }

    /// The server connection is gone: nothing in flight will be answered.
    pub fn on_link_lost(&mut self) {
        let lost: Vec<String> = self
            .whois
            .drain(..)
            .map(|p| p.to)
            .chain(self.sent.drain(..).map(|(to, _, _)| to))
            .collect();
        for to in lost {
            self.not_sent(
                &to,
                "the connection to the server was lost before it answered",
            );
        }
    }

    /// `EVENT MAILBOX <n>`: the next `n` messages waited while we were away.
    pub fn on_mailbox(&mut self, count: usize) {
        self.notices.push(MailNotice::Away { count });
    }

    /// `EVENT MESSAGE`: open it with our key and check who sealed it.
    pub fn on_message(&mut self, id: u64, from: &str, at_ms: u64, key: KeyField, msg: &[u8]) {
        let reject = |why: String| MailNotice::Rejected {
            from: from.to_string(),
            why,
        };
        let opened = match sealed::open(self.identity.private(), from, &self.me, msg) {
            Ok(opened) => opened,
            Err(_) => {
                self.notices.push(reject(
                    "it does not open with your key: it was not sealed to you by them, or was changed on the way".into(),
                ));
                return;
            }
        };
        // The server vouches for which key is the sender's; the message proves which
        // key sealed it. They must agree, or someone is not who they claim.
        if key != Some(opened.sender_key) {
            self.notices.push(reject(format!(
                "it was sealed with a key that is not {from}'s identity key (someone else made it)"
            )));
            return;
        }
        if let Some(why) = self.pin_conflict(from, &opened.sender_key) {
            self.notices.push(reject(why));
            return;
        }
        let (msg_id, sent_ms, text) = match super::replay::unwrap(&opened.text) {
            Ok(parts) => parts,
            Err(why) => {
                self.notices.push(reject(why));
                return;
            }
        };
        if let Err(why) = self.seen.check(from, &msg_id, sent_ms, now_ms()) {
            log::warn!("a message through the server from {from} refused: {why}");
            self.notices.push(reject(why));
            return;
        }
        let text = match String::from_utf8(text) {
            Ok(text) => text,
            Err(_) => {
                self.notices.push(reject("its text is not UTF-8".into()));
                return;
            }
        };
        let line = Line {
            sender: from.to_string(),
            at_ms,
            text,
        };
        self.history.push((from.to_string(), line.clone()));
        self.notices.push(MailNotice::Received { id, line });
    }

    /// The pin hook: `Some(why)` when `user`'s key differs from the key pinned for them
    /// (the peer-key pins of `crypto::identity`, `<data-dir>/<me>/peer-keys`). Read only:
    /// pinning on first use and `\trust` belong to the peer links' checks, so a message
    /// through the server never pins a key the server alone vouched for.
    fn pin_conflict(&self, user: &str, key: &[u8; 32]) -> Option<String> {
        let pins = Pins::open(&self.pin_dir, PEER_PINS).ok()?;
        let pinned = pins.get(user)?;
        let pinned = crate::protocol::identity_key::parse_key_hex(pinned)?;
        (pinned != *key).then(|| {
            format!(
                "{user}'s key is not the one you pinned (was {}, now {}); check it with them (\\verify {user})",
                crate::crypto::identity::key_fingerprint(&pinned),
                crate::crypto::identity::key_fingerprint(key)
            )
        })
    }
}
