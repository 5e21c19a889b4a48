//! The transfer table's refusals that a limit or a lookup decides: too many offers from
//! one peer, no room on disk, a serving cap reached, and the `FILES` answer that gives
//! a fetch the size to expect.
//!
//! A second `impl Transfers` block beside `client::transfers`, kept apart so the table
//! itself stays small; it owns the wording and coded reasons of these refusals and
//! must not touch bytes, sockets (beyond refusing an `Incoming`) or the screen.

use std::time::Instant;

use super::{Listing, ServerOut, Stage, Transfers, same};
use crate::client::core::peer_link::Incoming;
use crate::client::core::transfer_index::ServeRefusal;
use crate::protocol::codes::ErrorCode;
use crate::protocol::limits::{MAX_PENDING_OFFERS_PER_PEER, MAX_SERVES, MAX_SERVES_PER_PEER};
use crate::protocol::peer_msg::PeerMsg;
use crate::protocol::server_msg::{Command, FileEntry};

impl Transfers {
    /// Refuses `peer`'s offer `offer` because the peer has as many offers waiting as
    /// allowed; the person hears of it once per burst (`first`), not once per offer.
    pub(super) fn too_many_offers(&mut self, peer: &str, offer: u64, first: bool) {
        let code = ErrorCode::TooManyOffers;
        self.to_peers.push((
            peer.to_string(),
            PeerMsg::OfferNo {
                id: offer,
                reason: format!(
                    "{code} at most {MAX_PENDING_OFFERS_PER_PEER} offers from you may wait for an answer"
                ),
            },
        ));
        if first {
            self.error(format!(
                "{peer} has {MAX_PENDING_OFFERS_PER_PEER} file offers waiting for you; \
                 refusing more until you answer some ({code})"
            ));
        }
    }

    /// Declines offer `id` because the downloads folder lacks room (`why` says how much).
    pub(super) fn refuse_for_space(&mut self, id: u64, why: String) {
        if let Some(entry) = self.entries.get(&id)
            && let Some(offer) = entry.offer
        {
            let peer = entry.row.peer.clone();
            let code = ErrorCode::NoSpace;
            self.to_peers.push((
                peer,
                PeerMsg::OfferNo {
                    id: offer,
                    reason: format!("{code} the receiver has not enough free disk space"),
                },
            ));
        }
        self.drop_entry(id, format!("refused: {why}"));
    }

    /// A `FILES` reply from the server. If it lists only the files of the user our
    /// oldest waiting fetch is for (or nothing), it answers our `FILES <user>`: each
    /// fetch from that user takes its size from it (or is refused if the file is not
    /// listed), and the reply is not shown (returns true). Otherwise the person asked.
    pub fn on_files_reply(&mut self, files: &[FileEntry], total: usize) -> bool {
        let Some(first) = self.awaiting_listing.first() else {
            return false;
        };
        if !files.iter().all(|f| same(&f.user, &first.peer)) {
            return false;
        }
        // Replies come back in the order the requests went out: this one answers the
        // oldest request.
        let listing = self.awaiting_listing.remove(0);
        let Some(entry) = self.entries.get_mut(&listing.id) else {
            return true;
        };
        if entry.row.stage != Stage::Connecting {
            return true;
        }
        let name = entry.row.name.clone();
        match files.iter().find(|f| f.name == name) {
            Some(listed) => {
                entry.row.size = Some(listed.size);
                self.launch(listing.id);
            }
            // `FILES` is paged: look on the next page while there is one.
            None if !files.is_empty() && listing.offset + files.len() < total => {
                self.ask_listing(&listing.peer, listing.id, listing.offset + files.len());
            }
            None => self.drop_entry(
                listing.id,
                format!(
                    "refused: {} does not list {name} among its shared files",
                    listing.peer
                ),
            ),
        }
        true
    }

    /// Asks the server for one page of `peer`'s shared files, for fetch `id`.
    pub(super) fn ask_listing(&mut self, peer: &str, id: u64, offset: usize) {
        self.to_server.push(ServerOut::Command(Command::Files {
            user: Some(peer.to_string()),
            offset,
        }));
        self.awaiting_listing.push(Listing {
            peer: peer.to_string(),
            id,
            since: Instant::now(),
            offset,
        });
    }

    /// Refuses a fetch over a serving cap with `ERR 424 SERVE_BUSY`; the person hears
    /// of it once per burst from that peer, not once per connection.
    pub(super) fn serve_busy(
        &mut self,
        incoming: Incoming,
        from: &str,
        why: ServeRefusal,
        first: bool,
    ) {
        let text = match why {
            ServeRefusal::PerPeer => format!(
                "at most {MAX_SERVES_PER_PEER} fetches per peer are served at once; try again later"
            ),
            ServeRefusal::Total => {
                format!("at most {MAX_SERVES} fetches are served at once; try again later")
            }
        };
        if first {
            self.error(format!(
                "{from} asked for more fetches than are served at once; refusing the extra ones ({}): {text}",
                ErrorCode::ServeBusy
            ));
        }
        incoming.refuse(ErrorCode::ServeBusy, &text);
    }
}
