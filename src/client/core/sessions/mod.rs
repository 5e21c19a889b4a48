//! The client's chat sessions: tickets from the server, requests waiting for an answer,
//! open sessions and which one is active.
//!
//! Owns who may connect to us (a valid, unused ticket for a session addressed to us,
//! from the user the server named), the life of each session, what is said in it (to
//! history), and what the server must be told. It reports to the front end through
//! typed [`Notice`]s and to the server through queued [`Command`]s; it must not print,
//! read the terminal or own sockets (`peer_link` does).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::history::{History, Line};
use super::ladder::Reversals;
use super::peer_limits::Refusals;
use super::peer_link::{Incoming, PeerEvent, PeerEvents, PeerLink};
use super::peer_secure::PeerSecurity;
use crate::protocol::codes::ErrorCode;
use crate::protocol::identity_key::KeyField;
use crate::protocol::peer_msg::PeerMsg;
use crate::protocol::server_msg::{Command, EndReason};
use crate::protocol::ticket::Ticket;
use std::sync::Arc;

mod chat;
mod connect;

/// Lines of history shown when a session opens.
pub const HISTORY_ON_OPEN: usize = 20;

/// How long a used ticket is remembered, to refuse a replay at once.
const USED_MEMORY: Duration = Duration::from_secs(600);

/// Who ended a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Closer {
    /// We did (`\close`, quitting).
    Me,
    /// The peer sent `CLOSE` or `ERR`.
    Peer,
    /// The connection broke.
    Lost,
}

/// The state of one entry in `\sessions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Open and receiving what we type.
    Active,
    /// Open.
    Open,
    /// We asked; no answer yet.
    Asking,
    /// They asked; waiting for us to accept or decline.
    Asked,
}

/// Something the person should see.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", content = "data", rename_all = "snake_case")]
pub enum Notice {
    /// A chat line from a peer.
    Chat {
        peer: String,
        line: Line,
        active: bool,
    },
    /// A chat line we sent to `peer` (a terminal shows it like a peer's; pipes, which
    /// never echoed what was typed, need not).
    Said {
        peer: String,
        line: Line,
        active: bool,
    },
    /// `from` wants to chat and must be answered within `within`.
    Request {
        from: String,
        #[serde(serialize_with = "super::event::secs")]
        within: Duration,
    },
    /// A request from `from` was declined because nobody answered.
    RequestExpired { from: String },
    /// `from` gave up waiting (or its client ended) before we answered.
    RequestWithdrawn { from: String },
    /// We declined `from`.
    Declined { from: String },
    /// We asked the server to connect us to `peer`.
    Asking { peer: String },
    /// A session with `peer` is open (and active), with the last lines said.
    /// `path` is how the link reaches the peer: `direct`, `reverse` or `relay`.
    Opened {
        peer: String,
        history: Vec<Line>,
        path: String,
    },
    /// Our request to `peer` came to nothing.
    NotOpened {
        peer: String,
        #[serde(serialize_with = "super::event::end_reason")]
        reason: EndReason,
        detail: String,
    },
    /// A session ended.
    Closed {
        peer: String,
        by: Closer,
        why: String,
    },
    /// The answer to `\sessions`; `paths` says, for each entry of `list`, how an open
    /// session reaches its peer (`direct`, `reverse` or `relay`; empty if not open).
    Sessions {
        list: Vec<(String, State)>,
        paths: Vec<String>,
    },
    /// `peer` could not be reached directly: the server asks it to dial us back.
    Reversing { peer: String },
    /// `peer` could not be reached directly: both ends now meet at the server's relay.
    Relaying { peer: String },
    /// The active session changed.
    Switched { peer: String },
    /// The answer to `\history`.
    History { peer: String, lines: Vec<Line> },
    /// `count` peer connections from `from` were refused for `why` in the last `secs`
    /// seconds (one notice per burst, not one per connection).
    Refused {
        count: u64,
        from: String,
        why: String,
        secs: u64,
    },
    /// Something the person asked for cannot be done.
    Error(String),
}

struct Expected {
    session: u64,
    from: String,
    expires: Instant,
    /// A file transfer ticket (else a chat session ticket): each opens only its kind.
    transfer: bool,
    /// The requester's identity key as the server gave it (`None`: it registered none):
    /// what the peer link's handshake must see.
    key: KeyField,
}

struct Request {
    session: u64,
    from: String,
    incoming: Incoming,
    deadline: Instant,
}

struct Open {
    session: u64,
    peer: String,
    link: PeerLink,
    /// How the link reaches the peer: `direct`, `reverse` or `relay`.
    path: &'static str,
}

/// How long a request waits for the server's `OK RELAY` before it ends as unreachable.
const RELAY_ANSWER_WAIT: Duration = Duration::from_secs(15);

/// All sessions of one logged-in client.
pub struct Sessions {
    /// Our username.
    me: String,
    /// Where new links report; cloned into each one.
    events: PeerEvents,
    /// Local history; `None` if it could not be opened (chat still works).
    history: Option<History>,
    /// Tickets the server told us about, not presented yet.
    tickets: HashMap<Ticket, Expected>,
    /// Tickets presented already, to refuse replays at once.
    used: HashMap<Ticket, Instant>,
    /// Connections whose ticket we have not heard of yet, until the grace time ends.
    parked: Vec<(Incoming, Instant)>,
    /// Requests waiting for the person's answer.
    requests: Vec<Request>,
    /// Our requests waiting for the peer's answer: peer name → session id.
    outgoing: Vec<(String, u64)>,
    /// Our requests still able to fall back to the reverse rung: session → (peer, addr,
    /// ticket, key). An entry is taken when the direct attempt fails (then `reversing`
    /// holds it, then `relaying`).
    fallback: HashMap<u64, (String, SocketAddr, Ticket, KeyField)>,
    /// Our requests waiting for the peer to dial us back, still able to use the relay.
    reversing: HashMap<u64, (String, SocketAddr, Ticket, KeyField)>,
    /// Our requests waiting to be dialled back, shared with the peer listener.
    reversals: Reversals,
    /// Sessions being retried through the relay, waiting for `OK RELAY`.
    relaying: HashMap<u64, (String, SocketAddr, Ticket, KeyField)>,
    /// When each `relaying` entry stops waiting for `OK RELAY` (the server refused or
    /// never answered: the request then ends as unreachable).
    relay_deadline: HashMap<u64, Instant>,
    /// How sessions not open yet will reach their peer when not directly (`reverse`,
    /// `relay`).
    paths: HashMap<u64, &'static str>,
    /// Open sessions.
    open: Vec<Open>,
    /// The peer whose session receives plain lines.
    active: Option<String>,
    /// How long the person has to answer a chat request.
    accept_timeout: Duration,
    /// How long our requests wait for the peer's answer.
    answer_wait: Duration,
    /// Refused peer connections, summed for the person once per burst.
    refusals: Refusals,
    /// Our key, the pins and the ticket index the listener's handshakes read.
    security: Arc<PeerSecurity>,
    /// For the front end.
    notices: Vec<Notice>,
    /// For the server.
    to_server: Vec<Command>,
    /// Transfer connections whose ticket checked out, for `transfers`.
    transfer_conns: Vec<Incoming>,
    /// File offer messages from open sessions, for `transfers`: (peer, message).
    offer_msgs: Vec<(String, PeerMsg)>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn same(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

impl Sessions {
    /// No sessions yet. `accept_timeout` is how long the person has to answer a request,
    /// `answer_wait` how long our requests wait for an answer; `refusals` is the tally the
    /// peer listener counts into, `reversals` the requests it hands dialled-back
    /// connections to; `security` our key and pins for every peer handshake.
    pub fn new(
        me: &str,
        events: PeerEvents,
        history: Option<History>,
        accept_timeout: Duration,
        answer_wait: Duration,
        (refusals, reversals): (Refusals, Reversals),
        security: Arc<PeerSecurity>,
    ) -> Sessions {
        Sessions {
            me: me.to_string(),
            events,
            history,
            tickets: HashMap::new(),
            used: HashMap::new(),
            parked: Vec::new(),
            requests: Vec::new(),
            outgoing: Vec::new(),
            fallback: HashMap::new(),
            reversing: HashMap::new(),
            reversals,
            relaying: HashMap::new(),
            relay_deadline: HashMap::new(),
            paths: HashMap::new(),
            open: Vec::new(),
            active: None,
            accept_timeout,
            answer_wait,
            refusals,
            security,
            notices: Vec::new(),
            to_server: Vec::new(),
            transfer_conns: Vec::new(),
            offer_msgs: Vec::new(),
        }
    }

    /// What the front end should show since the last call.
    pub fn take_notices(&mut self) -> Vec<Notice> {
        std::mem::take(&mut self.notices)
    }

    /// What the server should be told since the last call.
    pub fn take_server_commands(&mut self) -> Vec<Command> {
        std::mem::take(&mut self.to_server)
    }

    /// Transfer connections and offer messages since the last call, for `transfers`.
    pub fn take_transfer_work(&mut self) -> (Vec<Incoming>, Vec<(String, PeerMsg)>) {
        (
            std::mem::take(&mut self.transfer_conns),
            std::mem::take(&mut self.offer_msgs),
        )
    }

    /// Sends `msg` on the open session with `peer`; false if there is none or the link
    /// is down.
    pub fn send_to_peer(&self, peer: &str, msg: &PeerMsg) -> bool {
        self.open
            .iter()
            .find(|o| same(&o.peer, peer))
            .is_some_and(|o| o.link.send(msg))
    }

    /// Whether a chat session with `peer` is open.
    pub fn is_open(&self, peer: &str) -> bool {
        self.open.iter().any(|o| same(&o.peer, peer))
    }

    /// The active session's peer.
    pub fn active_peer(&self) -> Option<&str> {
        self.active.as_deref()
    }

    fn count(&self) -> usize {
        self.open.len() + self.requests.len() + self.outgoing.len()
    }

    fn report_end(&mut self, session: u64, reason: EndReason) {
        self.paths.remove(&session);
        self.to_server.push(Command::SessionEnd {
            id: session,
            reason,
        });
    }

    fn error(&mut self, text: impl Into<String>) {
        self.notices.push(Notice::Error(text.into()));
    }

    fn last_lines(&self, peer: &str, n: usize) -> Vec<Line> {
        match &self.history {
            Some(history) => history.last(peer, n).unwrap_or_else(|e| {
                log::warn!("reading history: {e}");
                Vec::new()
            }),
            None => Vec::new(),
        }
    }

    fn remember(&mut self, peer: &str, sender: &str, at_ms: u64, text: &str) {
        if let Some(Err(e)) = self
            .history
            .as_mut()
            .map(|h| h.record(peer, sender, at_ms, text))
        {
            log::warn!("writing history: {e}");
        }
    }

    /// `\connect <user>`: switch to an open session, accept a waiting request from that
    /// user, or ask the server for a new session.
    /// Handles whatever a peer thread reported.
    pub fn on_peer_event(&mut self, event: PeerEvent) {
        match event {
            PeerEvent::Incoming(incoming) => self.check_incoming(*incoming),
            PeerEvent::Answered {
                session,
                peer,
                result,
            } => self.on_answer(session, &peer, result),
            PeerEvent::Msg { link, msg } => self.on_message(link, msg),
            PeerEvent::Closed { link, why } => {
                if let Some(open) = self.take_open_by_link(link) {
                    self.report_end(open.session, EndReason::PeerLost);
                    self.notices.push(Notice::Closed {
                        peer: open.peer,
                        by: Closer::Lost,
                        why,
                    });
                }
            }
        }
    }

    /// The ticket check: valid, unused, for a session addressed to us, from the user the
    /// server named. Anything else is refused.
    /// Expires what waited too long. Call about once a second.
    pub fn tick(&mut self) {
        let now = Instant::now();
        let late: Vec<u64> = self
            .relay_deadline
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(s, _)| *s)
            .collect();
        for session in late {
            self.give_up_relay(session, "the server gave no relay");
        }
        let (late, parked): (Vec<_>, Vec<_>) = std::mem::take(&mut self.parked)
            .into_iter()
            .partition(|(_, until)| *until <= now);
        self.parked = parked;
        for (incoming, _) in late {
            incoming.refuse(ErrorCode::BadTicket, "no such ticket");
        }
        // A requester that gave up frees its one pending request at once, so it may ask
        // again (and a dead connection is not offered to the person).
        let (gone, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.requests)
            .into_iter()
            .partition(|r| r.incoming.peer_gone());
        self.requests = waiting;
        for request in gone {
            self.report_end(request.session, EndReason::PeerLost);
            self.notices
                .push(Notice::RequestWithdrawn { from: request.from });
        }
        let (late, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.requests)
            .into_iter()
            .partition(|r| r.deadline <= now);
        self.requests = waiting;
        for request in late {
            request.incoming.decline(EndReason::Timeout);
            self.report_end(request.session, EndReason::Timeout);
            self.notices
                .push(Notice::RequestExpired { from: request.from });
        }
        if let Some((lines, secs)) = self.refusals.take_summary(now) {
            self.notices
                .extend(lines.into_iter().map(|line| Notice::Refused {
                    count: line.count,
                    from: line.from,
                    why: line.why.to_string(),
                    secs,
                }));
        }
        self.tickets.retain(|_, e| e.expires > now);
        self.security.purge();
        self.used
            .retain(|_, at| now.duration_since(*at) < USED_MEMORY);
    }
}
