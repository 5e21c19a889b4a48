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

use crossbeam_channel::Sender;

use super::history::{History, Line};
use super::ladder::{self, Reversals, Route};
use super::peer_dial::{self, Ask};
use super::peer_limits::Refusals;
use super::peer_link::{Incoming, LinkId, PeerEvent, PeerLink, Purpose};
use super::peer_secure::{Awaited, PeerSecurity};
use crate::protocol::codes::ErrorCode;
use crate::protocol::identity_key::KeyField;
use crate::protocol::limits::{
    MAX_CHAT_TEXT, MAX_SESSIONS, TICKET_GRACE, TICKET_TTL, TRANSFER_TICKET_TTL,
};
use crate::protocol::peer_msg::PeerMsg;
use crate::protocol::server_msg::{Command, EndReason, TransferResult};
use crate::protocol::ticket::Ticket;
use crate::sanitize::one_line;
use std::sync::Arc;

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
    events: Sender<PeerEvent>,
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
        events: Sender<PeerEvent>,
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
    pub fn connect(&mut self, user: &str) {
        if same(user, &self.me) {
            return self.error("you cannot chat with yourself");
        }
        if self.open.iter().any(|o| same(&o.peer, user)) {
            return self.switch(user);
        }
        if self.requests.iter().any(|r| same(&r.from, user)) {
            return self.accept(Some(user));
        }
        if self.outgoing.iter().any(|(p, _)| same(p, user)) {
            return self.error(format!("already waiting for {user} to answer"));
        }
        if self.count() >= MAX_SESSIONS {
            return self.error(format!(
                "you have {MAX_SESSIONS} sessions already; \\close one first"
            ));
        }
        self.to_server.push(Command::Connect {
            user: user.to_string(),
        });
        self.notices.push(Notice::Asking {
            peer: user.to_string(),
        });
    }

    /// The server granted our `CONNECT`: go and present the ticket. `key` is the peer's
    /// identity key as the server gave it.
    pub fn on_granted(
        &mut self,
        session: u64,
        peer: &str,
        (addr, hints): (SocketAddr, &[SocketAddr]),
        ticket: Ticket,
        key: KeyField,
    ) {
        if self.open.iter().any(|o| same(&o.peer, peer)) || self.count() >= MAX_SESSIONS {
            self.report_end(session, EndReason::Refused);
            return;
        }
        self.fallback
            .insert(session, (peer.to_string(), addr, ticket.clone(), key));
        let ask = Ask {
            me: self.me.clone(),
            peer: peer.to_string(),
            session,
            addr,
            ticket,
            peer_key: key,
            wait: self.answer_wait,
            route: Route::Direct(ladder::candidates(addr, hints)),
            security: Arc::clone(&self.security),
        };
        match peer_dial::request(ask, self.events.clone()) {
            Ok(()) => self.outgoing.push((peer.to_string(), session)),
            Err(e) => {
                self.report_end(session, EndReason::Unreachable);
                self.notices.push(Notice::NotOpened {
                    peer: peer.to_string(),
                    reason: EndReason::Unreachable,
                    detail: e.to_string(),
                });
            }
        }
    }

    /// The server gave us a relay token for `session`, which we could not open directly:
    /// ask the peer again through the relay (same ticket).
    pub fn on_relay(&mut self, session: u64, relay: SocketAddr, token: String) {
        self.relay_deadline.remove(&session);
        let Some((peer, addr, ticket, peer_key)) = self.relaying.remove(&session) else {
            return;
        };
        self.paths.insert(session, "relay");
        let ask = Ask {
            me: self.me.clone(),
            peer: peer.clone(),
            session,
            addr,
            ticket,
            peer_key,
            wait: self.answer_wait,
            route: Route::Relay(relay, token),
            security: Arc::clone(&self.security),
        };
        match peer_dial::request(ask, self.events.clone()) {
            Ok(()) => self.outgoing.push((peer, session)),
            Err(e) => {
                self.report_end(session, EndReason::Unreachable);
                self.notices.push(Notice::NotOpened {
                    peer,
                    reason: EndReason::Unreachable,
                    detail: e.to_string(),
                });
            }
        }
    }

    /// The server refused a `RELAY` (`ERR 520`): the oldest request waiting for the relay
    /// ends as unreachable. False if none waits.
    pub fn on_relay_refused(&mut self, detail: &str) -> bool {
        let Some(session) = self
            .relay_deadline
            .iter()
            .min_by_key(|(_, until)| **until)
            .map(|(s, _)| *s)
        else {
            return false;
        };
        self.give_up_relay(session, detail);
        true
    }

    /// Ends our request `session`, which found no way to the peer.
    fn give_up_relay(&mut self, session: u64, detail: &str) {
        self.relay_deadline.remove(&session);
        self.outgoing.retain(|(_, s)| *s != session);
        if let Some((peer, _, _, _)) = self.relaying.remove(&session) {
            self.report_end(session, EndReason::Unreachable);
            self.notices.push(Notice::NotOpened {
                peer,
                reason: EndReason::Unreachable,
                detail: format!("not directly, and not through the relay: {detail}"),
            });
        }
    }

    /// The server asks us to dial a requester back (`EVENT DIAL`), for a session or a
    /// transfer: its first line then arrives as on our listener.
    /// `failed` runs (on the dialling thread) when the requester cannot be reached.
    pub fn on_dial(
        &mut self,
        transfer: bool,
        id: u64,
        hints: Vec<SocketAddr>,
        failed: impl FnOnce() + Send + 'static,
    ) {
        super::peer_link::answer_reverse(
            hints,
            (transfer, id),
            self.events.clone(),
            self.refusals.clone(),
            Arc::clone(&self.security),
            failed,
        );
    }

    /// Our requests waiting to be dialled back, for the transfers' own ladder.
    pub fn reversals(&self) -> Reversals {
        self.reversals.clone()
    }

    /// The server asks us to meet a requester at the relay (`EVENT RELAY`).
    pub fn on_relay_invite(&mut self, relay: SocketAddr, token: String) {
        super::peer_link::answer_relayed(
            relay,
            token,
            self.events.clone(),
            Refusals::new(),
            Arc::clone(&self.security),
        );
    }

    /// The server says `from` (identity key `key`) will connect with `ticket` for
    /// `session`.
    pub fn on_ticket(&mut self, session: u64, from: &str, ticket: Ticket, key: KeyField) {
        self.add_ticket(session, from, ticket, false, key);
    }

    /// The server says `from` (identity key `key`) will connect with `ticket` for file
    /// transfer `id`.
    pub fn on_transfer_ticket(&mut self, id: u64, from: &str, ticket: Ticket, key: KeyField) {
        self.add_ticket(id, from, ticket, true, key);
    }

    fn add_ticket(
        &mut self,
        session: u64,
        from: &str,
        ticket: Ticket,
        transfer: bool,
        key: Option<[u8; 32]>,
    ) {
        // The listener's handshake finds the ticket by its id (the Noise PSK).
        let life = if transfer {
            TRANSFER_TICKET_TTL
        } else {
            TICKET_TTL
        };
        self.security.expect(
            Awaited {
                ticket: ticket.clone(),
                from: from.to_string(),
                key,
            },
            life,
        );
        self.tickets.insert(
            ticket.clone(),
            Expected {
                session,
                from: from.to_string(),
                // A push's ticket is issued before its offer, so it lasts longer.
                expires: Instant::now()
                    + if transfer {
                        TRANSFER_TICKET_TTL
                    } else {
                        TICKET_TTL
                    },
                transfer,
                key,
            },
        );
        if let Some(at) = self
            .parked
            .iter()
            .position(|(inc, _)| inc.hello.ticket == ticket)
        {
            let (incoming, _) = self.parked.remove(at);
            self.check_incoming(incoming);
        }
    }

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
    fn check_incoming(&mut self, mut incoming: Incoming) {
        let ticket = incoming.hello.ticket.clone();
        if self.used.contains_key(&ticket) {
            return incoming.refuse(ErrorCode::BadTicket, "this ticket was used already");
        }
        let Some(expected) = self.tickets.remove(&ticket) else {
            self.parked.push((incoming, Instant::now() + TICKET_GRACE));
            return;
        };
        self.used.insert(ticket, Instant::now());
        let hello = &incoming.hello;
        let why = if !same(&expected.from, &hello.from) || expected.session != hello.session {
            Some("this ticket is not for this user and session")
        } else if expected.transfer != (hello.purpose != Purpose::Chat) {
            Some("this ticket is for something else")
        } else {
            None
        };
        if let Some(why) = why {
            // The ticket is spent, so what it was issued for can never happen: say so.
            self.to_server.push(match expected.transfer {
                false => Command::SessionEnd {
                    id: expected.session,
                    reason: EndReason::Refused,
                },
                true => Command::TransferEnd {
                    id: expected.session,
                    result: TransferResult::Refused,
                    size: 0,
                    ms: 0,
                    hash: None,
                    role: None,
                    moved: 0,
                    resumed_from: 0,
                    name: "-".into(),
                },
            });
            return incoming.refuse(ErrorCode::BadTicket, why);
        }
        // The ticket checked out: this connection no longer counts against its
        // address's handshake cap (several real peers may share one address).
        incoming.release_slot();
        incoming.peer_key = expected.key;
        if expected.transfer {
            if let Err(e) = incoming.prove(&self.me) {
                log::info!("a data connection from {} broke: {e}", incoming.remote);
            }
            self.transfer_conns.push(incoming);
            return;
        }
        if self.requests.iter().any(|r| same(&r.from, &expected.from)) {
            // One pending request per requester: one account cannot fill every slot.
            self.report_end(expected.session, EndReason::Refused);
            return incoming.refuse(
                ErrorCode::AlreadyAsked,
                "your earlier chat request is still waiting for an answer",
            );
        }
        if self.count() >= MAX_SESSIONS || self.open.iter().any(|o| same(&o.peer, &expected.from)) {
            self.report_end(expected.session, EndReason::Refused);
            return incoming.refuse(
                ErrorCode::TooManySessions,
                "cannot take another session with you now",
            );
        }
        self.notices.push(Notice::Request {
            from: expected.from.clone(),
            within: self.accept_timeout,
        });
        self.requests.push(Request {
            session: expected.session,
            from: expected.from,
            incoming,
            deadline: Instant::now() + self.accept_timeout,
        });
    }

    fn pick_request(&mut self, user: Option<&str>, verb: &str) -> Option<Request> {
        let at = match user {
            Some(user) => self.requests.iter().position(|r| same(&r.from, user)),
            None if self.requests.len() == 1 => Some(0),
            None if self.requests.is_empty() => None,
            None => {
                self.error(format!("several people are waiting; \\{verb} <user>"));
                return None;
            }
        };
        match at {
            Some(at) => Some(self.requests.remove(at)),
            None => {
                self.error(match user {
                    Some(user) => format!("{user} has not asked to chat"),
                    None => "nobody has asked to chat".to_string(),
                });
                None
            }
        }
    }

    /// How many chat requests wait for our answer.
    pub fn waiting_requests(&self) -> usize {
        self.requests.len()
    }

    /// `\accept [user]`
    pub fn accept(&mut self, user: Option<&str>) {
        let Some(request) = self.pick_request(user, "accept") else {
            return;
        };
        self.paths.insert(request.session, request.incoming.path);
        match request.incoming.accept(&self.me, &self.events) {
            Ok(link) => {
                self.to_server.push(Command::SessionOpen {
                    id: request.session,
                });
                self.opened(request.session, request.from, link);
            }
            Err(e) => {
                self.report_end(request.session, EndReason::PeerLost);
                self.notices.push(Notice::NotOpened {
                    peer: request.from,
                    reason: EndReason::PeerLost,
                    detail: e.to_string(),
                });
            }
        }
    }

    /// `\decline [user]`
    pub fn decline(&mut self, user: Option<&str>) {
        let Some(request) = self.pick_request(user, "decline") else {
            return;
        };
        request.incoming.decline(EndReason::Declined);
        self.report_end(request.session, EndReason::Declined);
        self.notices.push(Notice::Declined { from: request.from });
    }

    fn opened(&mut self, session: u64, peer: String, link: PeerLink) {
        let history = self.last_lines(&peer, HISTORY_ON_OPEN);
        self.active = Some(peer.clone());
        let path = self.paths.remove(&session).unwrap_or("direct");
        self.open.push(Open {
            session,
            peer: peer.clone(),
            link,
            path,
        });
        self.notices.push(Notice::Opened {
            peer,
            history,
            path: path.to_string(),
        });
    }

    fn on_answer(
        &mut self,
        session: u64,
        peer: &str,
        result: Result<PeerLink, (EndReason, String)>,
    ) {
        self.outgoing.retain(|(_, s)| *s != session);
        let direct = self.fallback.remove(&session);
        let reversed = self.reversing.remove(&session);
        match result {
            Err((EndReason::Unreachable, _)) if direct.is_some() => {
                // The ladder's second rung: the peer dials us back.
                if let Some(entry) = direct {
                    self.reverse(session, entry);
                }
            }
            Err((EndReason::Unreachable, _)) if reversed.is_some() => {
                // The ladder's last rung: both ends dial out to the relay.
                if let Some(entry) = reversed {
                    self.relaying.insert(session, entry);
                    self.relay_deadline
                        .insert(session, Instant::now() + RELAY_ANSWER_WAIT);
                }
                self.outgoing.push((peer.to_string(), session));
                self.to_server.push(Command::Relay {
                    transfer: false,
                    id: session,
                });
                self.notices.push(Notice::Relaying {
                    peer: peer.to_string(),
                });
            }
            Ok(link) if self.open.iter().any(|o| same(&o.peer, peer)) => {
                // Both asked at once and both sessions opened: keep the first.
                link.close("duplicate session");
                self.report_end(session, EndReason::Closed);
            }
            Ok(link) => self.opened(session, peer.to_string(), link),
            Err((reason, detail)) => {
                self.report_end(session, reason);
                self.notices.push(Notice::NotOpened {
                    peer: peer.to_string(),
                    reason,
                    detail,
                });
            }
        }
    }

    /// Asks the server to have `peer` dial us back for `session` and waits for it on a
    /// thread of its own (the answer arrives as for a direct request).
    fn reverse(&mut self, session: u64, entry: (String, SocketAddr, Ticket, KeyField)) {
        let (peer, addr, ticket, peer_key) = entry;
        // Waiting before asking: the peer may dial back before the server answers us.
        let wait = self.reversals.expect(false, session);
        self.paths.insert(session, "reverse");
        self.reversing
            .insert(session, (peer.clone(), addr, ticket.clone(), peer_key));
        self.to_server.push(Command::Reverse {
            transfer: false,
            id: session,
        });
        self.notices.push(Notice::Reversing { peer: peer.clone() });
        let ask = Ask {
            me: self.me.clone(),
            peer: peer.clone(),
            session,
            addr,
            ticket,
            peer_key,
            wait: self.answer_wait,
            route: Route::Reverse(wait),
            security: Arc::clone(&self.security),
        };
        match peer_dial::request(ask, self.events.clone()) {
            Ok(()) => self.outgoing.push((peer, session)),
            Err(e) => {
                self.reversing.remove(&session);
                self.report_end(session, EndReason::Unreachable);
                self.notices.push(Notice::NotOpened {
                    peer,
                    reason: EndReason::Unreachable,
                    detail: e.to_string(),
                });
            }
        }
    }

    fn take_open_by_link(&mut self, link: LinkId) -> Option<Open> {
        let at = self.open.iter().position(|o| o.link.id == link)?;
        let open = self.open.remove(at);
        if self.active.as_deref().is_some_and(|a| same(a, &open.peer)) {
            self.active = self.open.first().map(|o| o.peer.clone());
        }
        Some(open)
    }

    fn on_message(&mut self, link: LinkId, msg: PeerMsg) {
        match msg {
            PeerMsg::Msg { at_ms, text } => {
                let Some(open) = self.open.iter().find(|o| o.link.id == link) else {
                    return;
                };
                let peer = open.peer.clone();
                self.remember(&peer, &peer, at_ms, &text);
                let active = self.active.as_deref().is_some_and(|a| same(a, &peer));
                self.notices.push(Notice::Chat {
                    peer: peer.clone(),
                    line: Line {
                        sender: peer,
                        at_ms,
                        text,
                    },
                    active,
                });
            }
            PeerMsg::Close { reason } => self.closed_by_peer(link, EndReason::Closed, reason),
            PeerMsg::Err { code, message } => self.closed_by_peer(
                link,
                EndReason::PeerLost,
                format!("{message} ({})", code.name()),
            ),
            msg @ (PeerMsg::Offer { .. }
            | PeerMsg::OfferFolder { .. }
            | PeerMsg::OfferIn { .. }
            | PeerMsg::OfferOk { .. }
            | PeerMsg::OfferNo { .. }
            | PeerMsg::Cancel { .. }) => {
                if let Some(open) = self.open.iter().find(|o| o.link.id == link) {
                    self.offer_msgs.push((open.peer.clone(), msg));
                }
            }
            other => log::debug!("ignored a peer message out of place: {other:?}"),
        }
    }

    fn closed_by_peer(&mut self, link: LinkId, reason: EndReason, why: String) {
        if let Some(open) = self.take_open_by_link(link) {
            open.link.kill();
            self.report_end(open.session, reason);
            self.notices.push(Notice::Closed {
                peer: open.peer,
                by: Closer::Peer,
                why,
            });
        }
    }

    /// A plain line: to the active session.
    pub fn say(&mut self, text: &str) {
        match self.active.clone() {
            Some(peer) => self.say_to(&peer, text),
            None => self.error("no chat session is open; \\connect <user> to start one"),
        }
    }

    /// `@user text`: to that session, without switching.
    pub fn say_to(&mut self, peer: &str, text: &str) {
        // Measured as it will be written: a control character (a tab, say) goes out as
        // U+FFFD, three bytes, and the peer refuses a line over the limit.
        if one_line(text).len() > MAX_CHAT_TEXT {
            return self.error(format!("a message may hold at most {MAX_CHAT_TEXT} bytes"));
        }
        let Some(open) = self.open.iter().find(|o| same(&o.peer, peer)) else {
            return self.error(format!("no session with {peer}"));
        };
        let at_ms = now_ms();
        let sent = open.link.send(&PeerMsg::Msg {
            at_ms,
            text: text.to_string(),
        });
        let name = open.peer.clone();
        if sent {
            let me = self.me.clone();
            self.remember(&name, &me, at_ms, text);
            let active = self.active.as_deref().is_some_and(|a| same(a, &name));
            self.notices.push(Notice::Said {
                peer: name,
                line: Line {
                    sender: me,
                    at_ms,
                    text: text.to_string(),
                },
                active,
            });
        } else {
            self.error(format!("could not send to {name}: the link is down"));
        }
    }

    /// Records a line about a finished file transfer in the history with `peer`.
    pub fn note_transfer(&mut self, peer: &str, text: &str) {
        self.remember(peer, "*", now_ms(), text);
    }

    /// Keeps a message through the server (`\msg`) in the history with `peer`.
    pub fn note_via_server(&mut self, peer: &str, line: &super::history::Line) {
        let text = format!("(via server) {}", line.text);
        self.remember(peer, &line.sender, line.at_ms, &text);
    }

    /// `\switch <user>`
    pub fn switch(&mut self, user: &str) {
        match self.open.iter().find(|o| same(&o.peer, user)) {
            Some(open) => {
                let peer = open.peer.clone();
                self.active = Some(peer.clone());
                self.notices.push(Notice::Switched { peer });
            }
            None => self.error(format!("no session with {user}")),
        }
    }

    /// `\sessions`
    pub fn list(&mut self) {
        let mut list: Vec<(String, State)> = self
            .open
            .iter()
            .map(|o| {
                let active = self.active.as_deref().is_some_and(|a| same(a, &o.peer));
                (
                    o.peer.clone(),
                    if active { State::Active } else { State::Open },
                )
            })
            .collect();
        let mut paths: Vec<String> = self.open.iter().map(|o| o.path.to_string()).collect();
        list.extend(
            self.outgoing
                .iter()
                .map(|(p, _)| (p.clone(), State::Asking)),
        );
        list.extend(self.requests.iter().map(|r| (r.from.clone(), State::Asked)));
        paths.resize(list.len(), String::new());
        self.notices.push(Notice::Sessions { list, paths });
    }

    /// `\close [user]`: the named or the active session.
    pub fn close(&mut self, user: Option<&str>) {
        let Some(peer) = user.map(str::to_string).or_else(|| self.active.clone()) else {
            return self.error("no chat session is open");
        };
        let Some(open) = self.open.iter().find(|o| same(&o.peer, &peer)) else {
            return self.error(format!("no session with {peer}"));
        };
        let link = open.link.id;
        if let Some(open) = self.take_open_by_link(link) {
            open.link.close("closed");
            self.report_end(open.session, EndReason::Closed);
            self.notices.push(Notice::Closed {
                peer: open.peer,
                by: Closer::Me,
                why: "closed".into(),
            });
        }
    }

    /// Closes every session and declines every request (before quitting).
    pub fn close_all(&mut self) {
        for open in std::mem::take(&mut self.open) {
            open.link.close("quit");
            self.report_end(open.session, EndReason::Closed);
        }
        for request in std::mem::take(&mut self.requests) {
            request.incoming.decline(EndReason::Declined);
            self.report_end(request.session, EndReason::Declined);
        }
        self.active = None;
    }

    /// `\history <user> [n]`
    pub fn history(&mut self, user: &str, n: usize) {
        let lines = self.last_lines(user, n);
        self.notices.push(Notice::History {
            peer: user.to_string(),
            lines,
        });
    }

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
