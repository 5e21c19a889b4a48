//! Offers and fetches as the person and the peer make them: announcing the shared
//! folder, `\send`, the peer's offer/accept/decline/cancel messages, `\accept`,
//! `\decline`, `\fetch`, and what happens to waiting offers when a peer goes.
//!
//! Another `impl Transfers` block beside `client::transfers`. It must not print, check
//! tickets (`sessions` does) or touch bytes (`transfer` does).

use std::path::Path;
use std::time::Instant;

use super::{Entry, Role, ServerOut, Stage, Transfers, XferNotice, grants, offered_name, same};
use crate::client::core::disk_space;
use crate::client::core::transfer::{self, safe_file_name};
use crate::protocol::limits::OFFER_TIMEOUT;
use crate::protocol::peer_msg::PeerMsg;
use crate::sanitize::Untrusted;

impl Transfers {
    /// Announces our shared files to the server (after login, on `\rescan`).
    pub fn announce_share(&mut self) {
        let Some(share) = &self.share else {
            return self.error("no shared folder (start the client with --share DIR)");
        };
        match share.scan() {
            Ok(files) => {
                self.notices.push(XferNotice::Shared {
                    count: files.len(),
                    dir: share.root().to_path_buf(),
                });
                self.to_server.push(ServerOut::Share(files));
            }
            Err(e) => self.error(format!("cannot read the shared folder: {e}")),
        }
    }

    /// `\send <path>` to `peer` (the active session): offers the file over the chat link.
    pub fn offer(&mut self, peer: Option<&str>, path: &Path) {
        let Some(peer) = peer else {
            return self.error("no chat session is open: \\connect <user> first, then \\send");
        };
        let meta = match std::fs::metadata(path) {
            Ok(meta) if meta.is_file() => meta,
            Ok(meta) if meta.is_dir() => return self.offer_folder(peer, path),
            Ok(_) => return self.error(format!("{} is not a regular file", path.display())),
            Err(e) => return self.error(format!("cannot read {}: {e}", path.display())),
        };
        let name = match offered_name(path) {
            Ok(name) => name,
            Err(e) => return self.error(e),
        };
        // The offer goes out under the server's transfer number (`grants`).
        let what = grants::Pending::File {
            path: path.to_path_buf(),
            name,
            size: meta.len(),
            folder: None,
        };
        self.ask_number(peer, what);
    }

    /// An offer message from an open session with `peer`.
    pub fn on_peer_msg(&mut self, peer: &str, msg: PeerMsg) {
        match msg {
            PeerMsg::Offer {
                id: offer,
                size,
                name,
            } => {
                if let Err(e) = safe_file_name(&name) {
                    self.to_peers.push((
                        peer.to_string(),
                        PeerMsg::OfferNo {
                            id: offer,
                            reason: e.clone(),
                        },
                    ));
                    return self.error(format!("{peer} offered a file with an {e}; refused"));
                }
                let busy = if self.index.is_receiving(peer, &name) {
                    Some("that file is already on its way")
                } else if self.index.offer(peer, Role::Receive, offer).is_some()
                    || self.entries.contains_key(&offer)
                {
                    Some("that offer number is in use")
                } else {
                    None
                };
                if let Some(reason) = busy {
                    self.to_peers.push((
                        peer.to_string(),
                        PeerMsg::OfferNo {
                            id: offer,
                            reason: reason.into(),
                        },
                    ));
                    return;
                }
                let slot = match self.index.take_offer_slot(peer) {
                    Ok(slot) => slot,
                    Err(first) => return self.too_many_offers(peer, offer, first),
                };
                // The sender's number is the server's transfer id: shown as is.
                let id = offer;
                self.add(id, Role::Receive, peer, &name, Some(size));
                if let Some(entry) = self.entries.get_mut(&id) {
                    entry.offer = Some(offer);
                    entry.row.stage = Stage::Asked;
                    entry.expires = Some(Instant::now() + OFFER_TIMEOUT);
                    entry.slot = slot;
                }
                self.index.add_offer(peer, Role::Receive, offer, id);
                self.index.start_receiving(peer, &name, id);
                let resumes_at = transfer::kept_bytes(&self.downloads, peer, &name, size);
                self.notices.push(XferNotice::OfferIn {
                    id,
                    from: peer.to_string(),
                    name,
                    size,
                    open_for: OFFER_TIMEOUT,
                    resumes_at,
                    via_server: false,
                });
            }
            PeerMsg::OfferOk { id } => {
                let Some(entry) = self.find_mut(Role::Send, peer, id) else {
                    return;
                };
                if entry.row.stage != Stage::Offered {
                    return;
                }
                if entry.folder_files.is_some() {
                    let local = entry.row.id;
                    return self.folder_accepted(local);
                }
                let local = entry.row.id;
                if entry.row.via_server && entry.grant.is_none() {
                    return self.accepted_through_server(local);
                }
                self.launch(local);
            }
            PeerMsg::OfferFolder {
                id,
                files,
                size,
                name,
            } => self.on_folder_offer(peer, id, files, size, &name),
            PeerMsg::OfferIn {
                folder,
                id,
                size,
                path,
            } => self.on_folder_file(peer, folder, id, size, &path),
            PeerMsg::OfferNo { id, reason } => {
                if let Some(entry) = self.find_mut(Role::Send, peer, id)
                    && entry.row.stage == Stage::Offered
                {
                    let local = entry.row.id;
                    // Plain words: "bob declined", not "declined: declined".
                    let why = if reason.trim().eq_ignore_ascii_case("declined") {
                        format!("declined by {}", Untrusted(peer))
                    } else {
                        format!("{} refused it: {}", Untrusted(peer), Untrusted(&reason))
                    };
                    self.drop_entry(local, why);
                }
            }
            PeerMsg::Cancel { id } => {
                if self.cancel_folder(id, Some(peer)) {
                    return;
                }
                let local = self
                    .index
                    .offer(peer, Role::Send, id)
                    .or_else(|| self.index.offer(peer, Role::Receive, id));
                if let Some(local) = local {
                    self.stop(local, true);
                }
            }
            _ => {}
        }
    }

    pub(super) fn find_mut(&mut self, role: Role, peer: &str, offer: u64) -> Option<&mut Entry> {
        let id = self.index.offer(peer, role, offer)?;
        self.entries.get_mut(&id)
    }

    /// `\accept <id>`: accept a peer's offer, if the downloads folder has room for it.
    pub fn accept(&mut self, id: u64) {
        if let Some(entry) = self.entries.get(&id)
            && entry.folder_files.is_some()
            && entry.row.role == Role::Receive
            && entry.row.stage == Stage::Asked
        {
            return self.accept_folder(id);
        }
        let room = match self.entries.get(&id) {
            Some(entry) if entry.row.role == Role::Receive && entry.row.stage == Stage::Asked => {
                disk_space::check_room(&self.downloads, entry.row.size.unwrap_or(0))
            }
            _ => Ok(()),
        };
        if let Err(why) = room {
            return self.refuse_for_space(id, why);
        }
        match self.entries.get_mut(&id) {
            Some(entry) if entry.row.role == Role::Receive && entry.row.stage == Stage::Asked => {
                entry.row.stage = Stage::Connecting;
                entry.expires = Some(Instant::now() + Self::accepted_wait(entry.row.via_server));
                if let Some(offer) = entry.offer {
                    let peer = entry.row.peer.clone();
                    self.to_peers.push((peer, PeerMsg::OfferOk { id: offer }));
                }
            }
            _ => self.error(format!("no file offer {id} is waiting for you")),
        }
    }

    /// The server took our offer `local` (made without a chat session): it waits for the
    /// answer as long as the server keeps it, not `OFFER_TIMEOUT`. The sentence to show.
    pub fn wait_at_server(&mut self, local: u64, delivered: bool) -> Option<String> {
        let entry = self.entries.get_mut(&local)?;
        if entry.row.role != Role::Send || entry.row.stage != Stage::Offered {
            return None;
        }
        entry.expires = None;
        let (peer, name) = (Untrusted(&entry.row.peer), Untrusted(&entry.row.name));
        Some(match delivered {
            true => {
                format!("* {name} offered to {peer} through the server; it goes once they accept")
            }
            false => format!(
                "* {peer} is offline: the offer of {name} waits at the server (up to {} days); it goes once they accept while you are online",
                crate::protocol::limits::MAILBOX_EXPIRY.as_secs() / 86_400
            ),
        })
    }

    /// The numbers of the peers' offers waiting for our `\accept` or `\decline`.
    pub fn waiting_offers(&self) -> Vec<u64> {
        self.entries
            .values()
            .filter(|e| e.row.role == Role::Receive && e.row.stage == Stage::Asked)
            .map(|e| e.row.id)
            .collect()
    }

    /// The chat link with `peer` is gone: offers either way that no data connection
    /// carries yet can no longer be answered, so they end now, said plainly, instead of
    /// waiting out their time.
    pub fn peer_gone(&mut self, peer: &str) {
        let waiting: Vec<(u64, Role)> = self
            .entries
            .values()
            .filter(|e| same(&e.row.peer, peer) && matches!(e.row.role, Role::Send | Role::Receive))
            // Offers through the server never needed the chat link.
            .filter(|e| !e.row.via_server)
            .filter(|e| {
                matches!(e.row.stage, Stage::Offered | Stage::Asked)
                    || (e.row.stage == Stage::Connecting && e.transfer.is_none())
            })
            .map(|e| (e.row.id, e.row.role))
            .collect();
        self.forget_folders(peer);
        let peer = Untrusted(peer).to_string();
        for (id, role) in waiting {
            let why = match role {
                Role::Receive => format!("{peer} went away; the offer is withdrawn"),
                _ => format!("{peer} went away before answering"),
            };
            self.drop_entry(id, why);
        }
    }

    /// `\decline <id>`: decline a peer's offer.
    pub fn decline(&mut self, id: u64) {
        match self.entries.get(&id) {
            Some(entry) if entry.row.role == Role::Receive && entry.row.stage == Stage::Asked => {
                if let Some(offer) = entry.offer {
                    let peer = entry.row.peer.clone();
                    self.to_peers.push((
                        peer,
                        PeerMsg::OfferNo {
                            id: offer,
                            reason: "declined".into(),
                        },
                    ));
                }
                self.drop_entry(id, "declined".into());
            }
            _ => self.error(format!("no file offer {id} is waiting for you")),
        }
    }

    /// `\fetch <user> <name>`: download a file from that user's shared folder. The
    /// size to expect is the one the server's index lists (`FILES <user>` is asked
    /// first); an owner announcing another size at transfer time is refused.
    pub fn fetch(&mut self, user: &str, name: &str) {
        if same(user, &self.me) {
            return self.error("that is your own shared folder");
        }
        if let Err(e) = safe_file_name(name) {
            return self.error(e);
        }
        if self.index.is_receiving(user, name) {
            return self.error(format!("{name} from {user} is already on its way"));
        }
        // Numbered by the server first (`grants`), then its listing gives the size.
        let what = grants::Pending::Fetch {
            name: name.to_string(),
        };
        self.ask_number(user, what);
    }
}
