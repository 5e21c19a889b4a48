//! How a chat session gets set up: our requests (server grants, relays, dials), the
//! tickets the server hands us, the check of every incoming peer against them, the
//! requests waiting for the person's answer, and the answers to ours (with reversal
//! when the peer cannot be reached). It must not print or own sockets; what is said in
//! an open session is `chat`'s.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use super::super::ladder::{self, Reversals, Route};
use super::super::peer_dial::{self, Ask};
use super::super::peer_limits::Refusals;
use super::super::peer_link::{Incoming, PeerLink, Purpose};
use super::super::peer_secure::Awaited;
use super::{Expected, HISTORY_ON_OPEN, Notice, Open, RELAY_ANSWER_WAIT, Request, Sessions, same};
use crate::protocol::codes::ErrorCode;
use crate::protocol::identity_key::KeyField;
use crate::protocol::limits::{MAX_SESSIONS, TICKET_GRACE, TICKET_TTL, TRANSFER_TICKET_TTL};
use crate::protocol::server_msg::{Command, EndReason, TransferResult};
use crate::protocol::ticket::Ticket;

impl Sessions {
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
        // "asking bob to chat..." waits for the server's grant: for a user who is not
        // online the only line is the server's error.
        self.to_server.push(Command::Connect {
            user: user.to_string(),
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
        self.notices.push(Notice::Asking {
            peer: peer.to_string(),
        });
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
    pub(super) fn give_up_relay(&mut self, session: u64, detail: &str) {
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
        crate::client::core::peer_link::answer_reverse(
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
        crate::client::core::peer_link::answer_relayed(
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

    pub(super) fn add_ticket(
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

    pub(super) fn check_incoming(&mut self, mut incoming: Incoming) {
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

    pub(super) fn pick_request(&mut self, user: Option<&str>, verb: &str) -> Option<Request> {
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

    pub(super) fn opened(&mut self, session: u64, peer: String, link: PeerLink) {
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

    pub(super) fn on_answer(
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
    pub(super) fn reverse(&mut self, session: u64, entry: (String, SocketAddr, Ticket, KeyField)) {
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
}
