//! File offers through the server (protocol.md §4d, Queued file offers): which offer
//! messages go to the server instead of a chat link, and what the server's offer events
//! mean to the transfer table.
//!
//! The transfer table speaks peer messages (`OFFER`, `OFFER_OK`, `OFFER_NO`) and does
//! not care how they travel. With a chat session they go over it; without one, an
//! `OFFER` becomes the server's `OFFER` (held for an offline user), and an answer to an
//! offer that came through the server becomes `OFFER_ANSWER`. The push itself is the
//! same either way. It must not own a socket or the transfer table.

use std::collections::HashSet;

use crate::protocol::mail_msg::UserRef;
use crate::protocol::peer_msg::PeerMsg;
use crate::protocol::server_msg::Command;

/// Offers that came to us through the server, by (offerer in lower case, offer number),
/// so our answers go back the same way.
#[derive(Default)]
pub struct OfferRoute {
    received: HashSet<(String, u64)>,
    /// How many of the next server events waited for our login (`EVENT HELD <n>`).
    held: usize,
}

impl OfferRoute {
    /// `EVENT HELD <n>`: the next `n` offer events waited while we were away.
    pub fn on_held(&mut self, count: usize) {
        self.held = count;
    }

    /// Whether the offer event being handled is one that waited for our login.
    pub fn waited(&mut self) -> bool {
        let waited = self.held > 0;
        self.held = self.held.saturating_sub(1);
        waited
    }

    /// Whether `msg` answers an offer that came through the server: such an answer goes
    /// back through the server even when a chat session has opened since (the server
    /// settles the offer only when it hears the answer).
    pub fn answers_through_server(&self, peer: &str, msg: &PeerMsg) -> bool {
        match msg {
            PeerMsg::OfferOk { id } | PeerMsg::OfferNo { id, .. } => {
                self.received.contains(&(peer.to_ascii_lowercase(), *id))
            }
            _ => false,
        }
    }

    /// `EVENT OFFER`: the peer message the transfer table should see.
    pub fn on_offer(&mut self, from: &str, offer: u64, size: u64, name: String) -> PeerMsg {
        self.received.insert((from.to_ascii_lowercase(), offer));
        PeerMsg::Offer {
            id: offer,
            size,
            name,
        }
    }

    /// `EVENT OFFER_ANSWER`: the peer message the transfer table should see.
    pub fn on_answer(offer: u64, accept: bool) -> PeerMsg {
        match accept {
            true => PeerMsg::OfferOk { id: offer },
            false => PeerMsg::OfferNo {
                id: offer,
                reason: "declined".into(),
            },
        }
    }

    /// A peer message for `peer` that found no chat session: the server command that
    /// carries it instead, or `None` if it needs a session (folders, cancels, and answers
    /// to offers that came over a chat link).
    pub fn instead(&mut self, peer: &str, msg: &PeerMsg) -> Option<Command> {
        let key = |id: u64| (peer.to_ascii_lowercase(), id);
        match msg {
            PeerMsg::Offer { id, size, name } => Some(Command::Offer {
                to: UserRef::Name(peer.to_string()),
                offer: Some(*id),
                size: *size,
                name: name.clone(),
            }),
            PeerMsg::OfferOk { id } if self.received.remove(&key(*id)) => {
                Some(Command::OfferAnswer {
                    to: peer.to_string(),
                    offer: *id,
                    accept: true,
                })
            }
            PeerMsg::OfferNo { id, .. } if self.received.remove(&key(*id)) => {
                Some(Command::OfferAnswer {
                    to: peer.to_string(),
                    offer: *id,
                    accept: false,
                })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_go_back_the_way_the_offer_came() {
        let mut route = OfferRoute::default();
        let msg = route.on_offer("Alice", 4, 10, "a.txt".into());
        assert_eq!(
            msg,
            PeerMsg::Offer {
                id: 4,
                size: 10,
                name: "a.txt".into()
            }
        );
        // An answer to a chat-link offer (never seen here) needs its session.
        assert_eq!(route.instead("alice", &PeerMsg::OfferOk { id: 5 }), None);
        assert_eq!(
            route.instead("alice", &PeerMsg::OfferOk { id: 4 }),
            Some(Command::OfferAnswer {
                to: "alice".into(),
                offer: 4,
                accept: true
            })
        );
        // Once.
        assert_eq!(route.instead("alice", &PeerMsg::OfferOk { id: 4 }), None);
        assert!(matches!(
            route.instead(
                "bob",
                &PeerMsg::Offer {
                    id: 1,
                    size: 1,
                    name: "b".into()
                }
            ),
            Some(Command::Offer { offer: Some(1), .. })
        ));
        assert_eq!(route.instead("bob", &PeerMsg::Cancel { id: 1 }), None);
    }
}
