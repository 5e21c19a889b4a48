//! File offers through the server without a chat session (protocol.md §4d, Queued file
//! offers): the recipient may be offline, so the offer is numbered by the server
//! (`OFFER <user> - <size> <name>`, answered `OK OFFER <n> delivered|queued`), waits
//! there, and its answer comes back at once or at our next login. Once accepted, the
//! push asks `TRANSFER <user> <n>` (the number stays the same on both sides) when both
//! are online, again whenever the peer comes online until it is granted.
//!
//! Another `impl Transfers` block beside `client::transfers`. It owns the offers waiting
//! for the server's number and the accepted ones waiting for their grant. It must not
//! touch bytes (`transfer`), send anything itself (it queues server commands), or know
//! how a server event was parsed (`offer_route`).

use std::path::Path;
use std::time::{Duration, Instant};

use super::{Role, ServerOut, Stage, Transfers, XferNotice, offered_name, same};
use crate::protocol::codes::ErrorCode;
use crate::protocol::limits::{MAILBOX_EXPIRY, OFFER_TIMEOUT};
use crate::protocol::mail_msg::UserRef;
use crate::protocol::peer_msg::PeerMsg;
use crate::protocol::server_msg::Command;
use crate::sanitize::Untrusted;

/// How long an `OFFER` waits for the server's `OK OFFER` before it is given up.
const NUMBER_WAIT: Duration = Duration::from_secs(30);

/// One `OFFER <user> - ...` sent and not answered yet.
pub(super) struct Numbering {
    /// To whom.
    peer: String,
    /// The file.
    path: std::path::PathBuf,
    /// Its name, as offered.
    name: String,
    /// Its size, as offered.
    size: u64,
    /// When it was sent, to give up on a refused one (the server's `ERR` is shown as is).
    since: Instant,
    /// Its place among the requests whose errors `Mail` may also claim
    /// (`mail::request_stamp`): an `ERR 450`/`454` answers the older of the two.
    seq: u64,
}

impl Transfers {
    /// `\offer <user> <path>` (or `\send` with no session with `peer`): offers a file
    /// through the server, which numbers it and holds it if `peer` is offline. A folder
    /// needs its peer online and goes the usual way (`offer`).
    pub fn offer_through_server(&mut self, peer: &str, path: &Path) {
        if path.is_dir() {
            return self.offer(Some(peer), path);
        }
        let meta = match std::fs::metadata(path) {
            Ok(meta) if meta.is_file() => meta,
            Ok(_) => return self.error(format!("{} is not a regular file", path.display())),
            Err(e) => return self.error(format!("cannot read {}: {e}", path.display())),
        };
        let name = match offered_name(path) {
            Ok(name) => name,
            Err(e) => return self.error(e),
        };
        if same(peer, &self.me) {
            return self.error("that is you");
        }
        self.to_server.push(ServerOut::Command(Command::Offer {
            to: UserRef::Name(peer.to_string()),
            offer: None,
            size: meta.len(),
            name: name.clone(),
        }));
        self.awaiting_number.push(Numbering {
            peer: peer.to_string(),
            path: path.to_path_buf(),
            name,
            size: meta.len(),
            since: Instant::now(),
            seq: crate::client::core::mail::request_stamp(),
        });
    }

    /// `OK OFFER <offer> delivered|queued`: the server took an offer. One it numbered
    /// becomes an entry under that number; one we numbered (over a grant we already hold)
    /// now waits as long as the server keeps it. The sentence to show.
    pub fn on_offered(&mut self, offer: u64, delivered: bool) -> Option<String> {
        let ours = self
            .entries
            .get(&offer)
            .is_some_and(|e| e.row.role == Role::Send && e.row.stage == Stage::Offered);
        if !ours && !self.awaiting_number.is_empty() {
            // Replies come in the order the offers were sent.
            let numbering = self.awaiting_number.remove(0);
            if self.entries.contains_key(&offer) {
                self.error(format!(
                    "cannot offer {}: its number {offer} is taken by a peer's offer",
                    numbering.name
                ));
                return None;
            }
            let Numbering {
                peer,
                path,
                name,
                size,
                ..
            } = numbering;
            self.add(offer, Role::Send, &peer, &name, Some(size));
            if let Some(entry) = self.entries.get_mut(&offer) {
                entry.offer = Some(offer);
                entry.transfer = Some(offer);
                entry.path = Some(path);
                entry.row.stage = Stage::Offered;
                entry.row.via_server = true;
            }
            self.index.add_offer(&peer, Role::Send, offer, offer);
            self.notices.push(XferNotice::Offered {
                id: offer,
                peer,
                name,
                size,
                via_server: true,
            });
        }
        self.wait_at_server(offer, delivered)
    }

    /// `EVENT OFFER`: a peer's offer through the server (`away`: it waited for our
    /// login). Answered like any offer; once accepted it waits for the offerer as long as
    /// the server keeps offers, since the offerer may be offline by then.
    pub fn on_server_offer(&mut self, peer: &str, msg: PeerMsg, away: bool) {
        let PeerMsg::Offer { id, .. } = &msg else {
            return self.on_peer_msg(peer, msg);
        };
        let id = *id;
        self.on_peer_msg(peer, msg);
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        if entry.row.role != Role::Receive || !same(&entry.row.peer, peer) {
            return;
        }
        entry.row.via_server = true;
        for notice in self.notices.iter_mut().rev() {
            if let XferNotice::OfferIn {
                id: shown,
                via_server,
                ..
            } = notice
                && *shown == id
            {
                *via_server = true;
                break;
            }
        }
        if away {
            let text = format!(
                "* while you were away, {} offered you {} [{id}]",
                Untrusted(peer),
                Untrusted(&entry.row.name)
            );
            self.away_notes.push(text);
        }
    }

    /// The peer accepted our offer `id` through the server: ask for its transfer (again
    /// whenever the peer comes online, until granted).
    pub(super) fn accepted_through_server(&mut self, id: u64) {
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        entry.row.stage = Stage::Connecting;
        entry.expires = None;
        entry.await_grant = true;
        let peer = entry.row.peer.clone();
        let name = entry.row.name.clone();
        self.away_notes.push(format!(
            "* {} accepted {}; it starts as soon as you are both online",
            Untrusted(&peer),
            Untrusted(&name)
        ));
        self.to_server
            .push(ServerOut::Command(Command::TransferOffer {
                user: peer,
                offer: id,
            }));
    }

    /// A grant (`OK TRANSFER`) for one of our accepted offers through the server, if
    /// `transfer_id` is one: it goes ahead. The grant back if it is not ours to take.
    pub(super) fn take_offer_grant(
        &mut self,
        transfer_id: u64,
        user: &str,
        grant: super::ladder::Grant,
        key: &crate::protocol::identity_key::KeyField,
    ) -> Result<(), super::ladder::Grant> {
        let Some(entry) = self.entries.get_mut(&transfer_id) else {
            return Err(grant);
        };
        if !(entry.await_grant && entry.row.role == Role::Send && same(&entry.row.peer, user)) {
            return Err(grant);
        }
        entry.await_grant = false;
        entry.grant = Some(grant);
        entry.peer_key = *key;
        self.launch(transfer_id);
        Ok(())
    }

    /// These users came online: ask again for the transfers of our accepted offers to
    /// them (the peer was offline when its answer reached us, or went away since).
    pub fn peers_online(&mut self, users: &[String]) {
        let again: Vec<(u64, String)> = self
            .entries
            .values()
            .filter(|e| e.await_grant && users.iter().any(|u| same(u, &e.row.peer)))
            .map(|e| (e.row.id, e.row.peer.clone()))
            .collect();
        for (offer, user) in again {
            self.to_server
                .push(ServerOut::Command(Command::TransferOffer { user, offer }));
        }
    }

    /// After we logged in again: ask for every accepted offer still waiting.
    pub fn ask_waiting_grants(&mut self) {
        let peers: Vec<String> = self
            .entries
            .values()
            .filter(|e| e.await_grant)
            .map(|e| e.row.peer.clone())
            .collect();
        self.peers_online(&peers);
    }

    /// How long an offer that came through the server waits for the offerer's push
    /// once accepted: the offerer may be offline, and the server keeps the offer this long.
    pub(super) fn accepted_wait(via_server: bool) -> Duration {
        if via_server {
            MAILBOX_EXPIRY
        } else {
            OFFER_TIMEOUT
        }
    }

    /// Notes about offers through the server (waited while away, accepted and waiting)
    /// since the last call.
    pub fn take_away_notes(&mut self) -> Vec<String> {
        std::mem::take(&mut self.away_notes)
    }

    /// The stamp of the oldest `OFFER` still waiting for its number, if any.
    pub fn oldest_offer_stamp(&self) -> Option<u64> {
        self.awaiting_number.first().map(|n| n.seq)
    }

    /// An `ERR` that refuses our oldest offer waiting for its number (`NO_SUCH_USER`,
    /// `OFFERS_FULL`, `TOO_MANY_MESSAGES`, `TOO_MANY_WAITING`): said with the offer's
    /// name. False if no offer waits (the error is someone else's).
    pub fn on_offer_refused(&mut self, code: ErrorCode, message: &str) -> bool {
        let ours = matches!(
            code,
            ErrorCode::NoSuchUser
                | ErrorCode::OffersFull
                | ErrorCode::TooManyMessages
                | ErrorCode::TooManyWaiting
        );
        if !ours || self.awaiting_number.is_empty() {
            return false;
        }
        let n = self.awaiting_number.remove(0);
        self.error(format!(
            "could not offer {} to {}: {}",
            Untrusted(&n.name),
            Untrusted(&n.peer),
            Untrusted(message)
        ));
        true
    }

    /// Gives up on offers the server never numbered (it refused them; its `ERR` was shown).
    pub(super) fn expire_numbering(&mut self, now: Instant) {
        let (late, waiting): (Vec<Numbering>, Vec<Numbering>) =
            std::mem::take(&mut self.awaiting_number)
                .into_iter()
                .partition(|n| now.duration_since(n.since) > NUMBER_WAIT);
        self.awaiting_number = waiting;
        for n in late {
            self.error(format!(
                "the server did not take the offer of {} to {}",
                Untrusted(&n.name),
                Untrusted(&n.peer)
            ));
        }
    }
}
