//! What the page needs to draw itself from scratch: a snapshot folded from the core's
//! events, served as `GET /api/state`.
//!
//! Owns the fold (users online, sessions and their recent lines, chat requests, the last
//! file listing, the login question; the transfers panel's rows are `state::transfers`).
//! It must not talk to the core or know HTTP; it only reads events.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

mod transfers;
pub use transfers::TransferView;

use crate::client::core::Event;
use crate::client::core::event::MailNotice;
use crate::client::core::event::State as SessionState;
use crate::client::core::event::{FileRow, Line, Notice};
use crate::protocol::limits::{GUI_LINES_PER_SESSION, MAX_LIST_PAGE};

/// Where the client stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Logging in: the page answers `question`.
    #[default]
    Login,
    /// Logged in.
    Ready,
    /// The core has stopped.
    Ended,
}

/// A login question the page must answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Question {
    /// `new` (Y/N), `username`, `password`, `port`, `share` or `retry`.
    pub kind: String,
    /// The words to show.
    pub prompt: String,
}

/// One chat session as the page shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SessionView {
    /// The peer's name.
    pub peer: String,
    /// `open`, `asking`, `closed`, or `messages` (no session was asked for: only
    /// messages through the server, or history, are shown).
    pub state: &'static str,
    /// Why it ended, when it did.
    pub ended: Option<String>,
    /// How an open session reaches the peer: `direct`, `reverse` or `relay` (empty
    /// before it opens).
    pub path: String,
    /// The last lines said, oldest first.
    pub lines: VecDeque<Line>,
}

/// The snapshot.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Snapshot {
    /// Where the client stands.
    pub phase: Phase,
    /// The pending login question.
    pub question: Option<Question>,
    /// What the login said (errors, blocks), newest last.
    pub login_messages: VecDeque<String>,
    /// Our name once logged in.
    pub me: Option<String>,
    /// Where peers reach us.
    pub addr: Option<String>,
    /// Whether the server link is up.
    pub connected: bool,
    /// Users online: the page of `LIST` the page last asked for (kept current by
    /// presence events).
    pub users: BTreeSet<String>,
    /// How many are online in all, so the page can say when it shows only some.
    pub users_total: usize,
    /// Where that page starts (the `offset` of the last `list` command), so the page
    /// can step through more than 1000 users and a presence refresh keeps its place.
    pub users_offset: usize,
    /// The session plain chat goes to.
    pub active: Option<String>,
    /// Sessions by peer name (lower case).
    pub sessions: BTreeMap<String, SessionView>,
    /// Chat requests waiting for an answer: who, and until when (Unix ms).
    pub requests: BTreeMap<String, u64>,
    /// Transfers by id.
    pub transfers: BTreeMap<u64, TransferView>,
    /// The last listing or search result.
    pub files: Vec<FileRow>,
    /// How many files matched in all (may exceed `files`).
    pub files_total: usize,
    /// The id of the last event folded in.
    pub last_id: u64,
    /// Our messages through the server waiting for the server's answer (who, as typed,
    /// and the text), so a sent one joins that conversation as our own line.
    #[serde(skip)]
    pub mail_out: VecDeque<(String, String)>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn key(name: &str) -> String {
    name.to_ascii_lowercase()
}

impl Snapshot {
    /// Notes a login message, keeping the last few.
    pub fn login_message(&mut self, text: &str) {
        self.login_messages.push_back(text.to_string());
        while self.login_messages.len() > 20 {
            self.login_messages.pop_front();
        }
    }

    fn session(&mut self, peer: &str) -> &mut SessionView {
        self.entry(peer, "asking")
    }

    /// The conversation with `peer`, made in `state` when there is none yet.
    fn entry(&mut self, peer: &str, state: &'static str) -> &mut SessionView {
        self.sessions
            .entry(key(peer))
            .or_insert_with(|| SessionView {
                peer: peer.to_string(),
                state,
                ended: None,
                path: String::new(),
                lines: VecDeque::new(),
            })
    }

    /// Notes a message the page sent through the server (`Command::Msg`).
    pub fn mail_sending(&mut self, to: &str, text: &str) {
        // Without the server the core answers "not connected", not per message.
        if !self.connected {
            return;
        }
        self.mail_out.push_back((to.to_string(), text.to_string()));
        // The core answers every message (sent or not sent); a bound all the same.
        while self.mail_out.len() > 64 {
            self.mail_out.pop_front();
        }
    }

    /// Takes the pending message to `to` (as typed or as registered), else the oldest.
    fn mail_answered(&mut self, to: &str) -> Option<String> {
        let at = self
            .mail_out
            .iter()
            .position(|(t, _)| t.eq_ignore_ascii_case(to))
            .unwrap_or(0);
        self.mail_out.remove(at).map(|(_, text)| text)
    }

    /// Lines pushed for a peer with no session (messages through the server) make a
    /// `messages` conversation, not a session waiting for an answer.
    fn push_line(&mut self, peer: &str, line: &Line) {
        let session = self.entry(peer, "messages");
        session.lines.push_back(line.clone());
        while session.lines.len() > GUI_LINES_PER_SESSION {
            session.lines.pop_front();
        }
    }

    /// Folds one core event in.
    pub fn apply(&mut self, event: &Event) {
        match event {
            Event::Welcome { name, addr } => {
                self.phase = Phase::Ready;
                self.question = None;
                self.me = Some(name.clone());
                self.addr = Some(addr.clone());
                self.connected = true;
            }
            Event::Session(notice) => self.apply_notice(notice),
            Event::Transfer(notice) => self.apply_xfer(notice),
            Event::Active { peer } => self.active = peer.clone(),
            // A message through the server joins the chat with its sender, marked.
            Event::Mail(MailNotice::Received { line, .. }) => {
                let mut line = line.clone();
                line.text = format!("(via server) {}", line.text);
                let from = line.sender.clone();
                self.push_line(&from, &line);
            }
            // Ours, once the server took it: our own line in that conversation.
            Event::Mail(MailNotice::Sent { to, .. }) => {
                if let (Some(text), Some(me)) = (self.mail_answered(to), self.me.clone()) {
                    let line = Line {
                        sender: me,
                        at_ms: now_ms(),
                        text: format!("(via server) {text}"),
                    };
                    self.push_line(to, &line);
                }
            }
            Event::Mail(MailNotice::NotSent { to, .. }) => {
                self.mail_answered(to);
            }
            Event::Mail(_) => {}
            // One page (1000 names) is kept: the page shows who is online to chat with,
            // the count says when there are more, and `users_offset` which page it is.
            Event::Users { users, total, .. } => {
                self.users = users.iter().cloned().collect();
                self.users_total = *total;
            }
            Event::Online { users } => {
                for user in users {
                    if self.users.contains(user) {
                        continue;
                    }
                    self.users_total += 1;
                    // Past a full page the newcomer is on another page: only counted.
                    if self.users.len() < MAX_LIST_PAGE {
                        self.users.insert(user.clone());
                    }
                }
            }
            Event::Offline { users } => {
                for user in users {
                    // Someone on another page went too: the count still moves.
                    if self.users.remove(user) || self.users_total > self.users.len() {
                        self.users_total = self.users_total.saturating_sub(1);
                    }
                }
            }
            // The pump asks for a fresh list; until it comes only the count moves.
            Event::Presence { came, went } => {
                self.users_total = (self.users_total + came).saturating_sub(*went);
            }
            Event::Files { files, total } | Event::Search { files, total } => {
                self.files = files.clone();
                self.files_total = *total;
            }
            Event::ServerLost => {
                self.connected = false;
                self.users.clear();
            }
            Event::Reconnected => self.connected = true,
            Event::Bye => {
                self.phase = Phase::Ended;
                self.connected = false;
            }
            Event::UserInfo { .. }
            | Event::ServerHelp { .. }
            | Event::ServerNotice { .. }
            | Event::ServerError { .. }
            | Event::NotConnected
            | Event::Note { .. }
            | Event::Error { .. } => {}
        }
    }

    fn apply_notice(&mut self, notice: &Notice) {
        match notice {
            Notice::Chat { peer, line, .. } | Notice::Said { peer, line, .. } => {
                self.push_line(peer, line)
            }
            Notice::Request { from, within } => {
                let until = now_ms() + within.as_millis() as u64;
                self.requests.insert(from.clone(), until);
            }
            Notice::RequestExpired { from }
            | Notice::RequestWithdrawn { from }
            | Notice::Declined { from } => {
                self.requests.remove(from);
            }
            Notice::Asking { peer } => {
                let session = self.session(peer);
                if session.state != "open" {
                    session.state = "asking";
                    session.ended = None;
                }
            }
            Notice::Opened {
                peer,
                history,
                path,
            } => {
                self.requests.remove(peer);
                let session = self.session(peer);
                session.state = "open";
                session.ended = None;
                session.path = path.clone();
                session.lines = history.iter().cloned().collect();
            }
            Notice::NotOpened { peer, detail, .. } => {
                let session = self.session(peer);
                session.state = "closed";
                session.ended = Some(detail.clone());
            }
            Notice::Closed { peer, why, .. } => {
                let session = self.session(peer);
                session.state = "closed";
                session.ended = Some(why.clone());
            }
            Notice::Sessions { list, paths } => {
                for (i, (peer, state)) in list.iter().enumerate() {
                    match state {
                        SessionState::Active | SessionState::Open => {
                            let session = self.session(peer);
                            session.state = "open";
                            if let Some(path) = paths.get(i).filter(|p| !p.is_empty()) {
                                session.path = path.clone();
                            }
                        }
                        SessionState::Asking => self.session(peer).state = "asking",
                        SessionState::Asked => {}
                    }
                }
            }
            // Asked for with "Earlier lines": the conversation shows them instead.
            Notice::History { peer, lines } => {
                let session = self.entry(peer, "messages");
                let skip = lines.len().saturating_sub(GUI_LINES_PER_SESSION);
                session.lines = lines.iter().skip(skip).cloned().collect();
            }
            Notice::Switched { .. }
            | Notice::Relaying { .. }
            | Notice::Reversing { .. }
            | Notice::Refused { .. }
            | Notice::Error(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::core::event::{Outcome, Stage, XferNotice};
    use crate::protocol::server_msg::TransferResult;
    use std::time::Duration;

    fn line(sender: &str, text: &str) -> Line {
        Line {
            sender: sender.into(),
            at_ms: 1,
            text: text.into(),
        }
    }

    #[test]
    fn sessions_requests_and_presence_fold_in() {
        let mut s = Snapshot::default();
        s.apply(&Event::Welcome {
            name: "alice".into(),
            addr: "127.0.0.1:1".into(),
        });
        assert_eq!(s.phase, Phase::Ready);
        s.apply(&Event::Users {
            users: vec!["alice".into(), "Bob".into()],
            ids: vec![1, 2],
            total: 2,
        });
        s.apply(&Event::Session(Notice::Request {
            from: "Bob".into(),
            within: Duration::from_secs(30),
        }));
        assert!(s.requests.contains_key("Bob"));
        s.apply(&Event::Session(Notice::Opened {
            peer: "Bob".into(),
            history: vec![line("Bob", "old")],
            path: "reverse".into(),
        }));
        assert!(s.requests.is_empty());
        assert_eq!(s.sessions["bob"].path, "reverse");
        s.apply(&Event::Session(Notice::Said {
            peer: "Bob".into(),
            line: line("alice", "hi"),
            active: true,
        }));
        s.apply(&Event::Session(Notice::Chat {
            peer: "Bob".into(),
            line: line("Bob", "hello"),
            active: true,
        }));
        let bob = &s.sessions["bob"];
        assert_eq!(bob.state, "open");
        let texts: Vec<_> = bob.lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["old", "hi", "hello"]);
        s.apply(&Event::Online {
            users: vec!["carol".into()],
        });
        assert_eq!(s.users_total, 3);
        s.apply(&Event::Offline {
            users: vec!["Bob".into()],
        });
        assert!(!s.users.contains("Bob"));
        assert_eq!(s.users_total, 2);
        s.apply(&Event::ServerLost);
        assert!(!s.connected);
    }

    #[test]
    fn messages_through_the_server_make_a_conversation_not_a_waiting_session() {
        let mut s = Snapshot::default();
        s.apply(&Event::Welcome {
            name: "alice".into(),
            addr: "127.0.0.1:1".into(),
        });
        s.apply(&Event::Mail(MailNotice::Received {
            id: 1,
            line: line("Bob", "are you there?"),
        }));
        assert_eq!(s.sessions["bob"].state, "messages");
        assert_eq!(
            s.sessions["bob"].lines[0].text,
            "(via server) are you there?"
        );
        s.mail_sending("dora", "see you");
        s.mail_sending("bob", "yes");
        s.apply(&Event::Mail(MailNotice::Sent {
            to: "Bob".into(),
            id: 2,
            delivered: true,
            expiry_secs: 0,
        }));
        let last = s.sessions["bob"].lines.back().cloned();
        assert_eq!(
            last.map(|l| (l.sender, l.text)),
            Some(("alice".into(), "(via server) yes".into()))
        );
        s.apply(&Event::Mail(MailNotice::Sent {
            to: "Dora".into(),
            id: 3,
            delivered: false,
            expiry_secs: 60,
        }));
        assert_eq!(s.sessions["dora"].state, "messages");
        assert!(s.mail_out.is_empty());
        s.apply(&Event::Session(Notice::Asking { peer: "bob".into() }));
        assert_eq!(s.sessions["bob"].state, "asking");
    }

    #[test]
    fn presence_past_a_full_page_moves_only_the_count() {
        let mut s = Snapshot::default();
        let users: Vec<String> = (0..MAX_LIST_PAGE).map(|i| format!("u{i:04}")).collect();
        s.apply(&Event::Users {
            ids: (0..users.len() as u64).collect(),
            users,
            total: MAX_LIST_PAGE + 5,
        });
        s.apply(&Event::Online {
            users: vec!["newcomer".into()],
        });
        assert_eq!(s.users.len(), MAX_LIST_PAGE);
        assert_eq!(s.users_total, MAX_LIST_PAGE + 6);
        s.apply(&Event::Offline {
            users: vec!["someone-on-page-2".into()],
        });
        assert_eq!(s.users_total, MAX_LIST_PAGE + 5);
        s.apply(&Event::Offline {
            users: vec!["u0000".into()],
        });
        assert_eq!(
            (s.users.len(), s.users_total),
            (MAX_LIST_PAGE - 1, MAX_LIST_PAGE + 4)
        );
    }

    #[test]
    fn a_received_file_is_saved_only_when_verified() {
        let mut s = Snapshot::default();
        s.apply(&Event::Transfer(XferNotice::OfferIn {
            id: 3,
            from: "bob".into(),
            name: "a.txt".into(),
            size: 5,
            open_for: Duration::from_secs(120),
            resumes_at: 0,
            via_server: false,
        }));
        assert_eq!(s.transfers[&3].row.stage, Stage::Asked);
        let mut row = s.transfers[&3].row.clone();
        row.done = 5;
        row.stage = Stage::Finished(Outcome {
            result: TransferResult::Ok,
            detail: "saved".into(),
            size: 5,
            hash: None,
            saved_as: Some("/tmp/a.txt".into()),
            resumed_from: 0,
            elapsed: Duration::from_millis(3),
        });
        s.apply(&Event::Transfer(XferNotice::Finished { row: row.clone() }));
        assert!(s.transfers[&3].saved);
        row.id = 4;
        if let Stage::Finished(outcome) = &mut row.stage {
            outcome.result = TransferResult::Corrupt;
        }
        s.apply(&Event::Transfer(XferNotice::Finished { row }));
        assert!(!s.transfers[&4].saved);
        assert!(s.transfers[&4].saved_as.is_none());
    }
}
