//! Transfer numbers both sides share: every push, folder and fetch first asks the
//! server for a transfer (`TRANSFER <user>`), and the server's transfer id becomes its
//! number here, in the offer the peer sees (`OFFER <id>`) and so on the peer's screen.
//!
//! A fourth `impl Transfers` block beside `client::transfers`. It owns what waits for
//! the server's grant (`Asking`), turning a grant into a table entry (an offer sent, a
//! folder offered, a fetch's listing asked), and starting the data connection once the
//! peer agreed (`launch`). It must not touch bytes (`transfer` does) or check tickets
//! (`sessions` does).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;

use super::folders::{self, FolderFile, FolderOut};
use super::ladder::{Grant, Rungs};
use super::{
    Entry, Expect, Role, Stage, Transfers, XferNotice, same, spawn, transfer, unreachable_outcome,
};
use crate::client::core::ladder::Reversals;
use crate::protocol::identity_key::KeyField;
use crate::protocol::limits::OFFER_TIMEOUT;
use crate::protocol::peer_msg::{PEER_VERSION, PeerMsg};
use crate::protocol::server_msg::Command;
use crate::protocol::ticket::Ticket;

/// What waits for the server's transfer number before it can be offered or fetched.
pub(super) enum Pending {
    /// A file to push; `folder` is the number of the folder it belongs to.
    File {
        path: PathBuf,
        name: String,
        size: u64,
        folder: Option<u64>,
    },
    /// A folder to offer as one: its name, its files, their total size.
    Folder {
        name: String,
        files: Vec<FolderFile>,
        size: u64,
    },
    /// A file to fetch from the peer's shared folder.
    Fetch { name: String },
}

/// One `TRANSFER <user>` sent and not answered yet.
pub(super) struct Asking {
    /// The user asked for.
    pub(super) peer: String,
    /// What the number is for.
    pub(super) what: Pending,
    /// When it was asked, to give up on a server that never answers.
    pub(super) since: Instant,
}

impl Pending {
    /// How the person calls it, in a message that it could not start.
    pub(super) fn label(&self) -> String {
        match self {
            Pending::File { name, .. } | Pending::Fetch { name } => name.clone(),
            Pending::Folder { name, .. } => format!("{name}/"),
        }
    }
}

impl Transfers {
    /// Asks the server for a transfer with `peer`; `what` starts once it is granted.
    pub(super) fn ask_number(&mut self, peer: &str, what: Pending) {
        self.to_server
            .push(super::ServerOut::Command(Command::Transfer {
                user: peer.to_string(),
            }));
        self.awaiting_ticket.push(Asking {
            peer: peer.to_string(),
            what,
            since: Instant::now(),
        });
    }

    /// The server granted a `TRANSFER`: the oldest request waiting for `user` gets
    /// `transfer_id` as its number (on both sides) and goes ahead; `key` is the
    /// identity key the server gave for `user`.
    pub fn on_granted(
        &mut self,
        transfer_id: u64,
        user: &str,
        (addr, hints, reversals): (SocketAddr, &[SocketAddr], Reversals),
        ticket: Ticket,
        key: KeyField,
    ) {
        let grant = Grant {
            addr,
            hints: hints.to_vec(),
            reversals,
            ticket,
        };
        // An accepted offer through the server keeps its number.
        let Err(grant) = self.take_offer_grant(transfer_id, user, grant, &key) else {
            return;
        };
        let Some(at) = self
            .awaiting_ticket
            .iter()
            .position(|a| same(&a.peer, user))
        else {
            log::warn!("a transfer ticket nobody waits for");
            return;
        };
        let asking = self.awaiting_ticket.remove(at);
        if self.entries.contains_key(&transfer_id) {
            // Only a peer that offered under a number it was never given can hold it.
            if let Pending::File {
                folder: Some(folder),
                ..
            } = asking.what
            {
                self.folder_file_ended(folder);
            }
            return self.error(format!(
                "cannot start {}: its number {transfer_id} is taken by a peer's offer",
                asking.what.label()
            ));
        }
        let user = user.to_string();
        let grant = Some(grant);
        match asking.what {
            Pending::File {
                path,
                name,
                size,
                folder,
            } => {
                let shown = match folder {
                    Some(f) => match self.folders_out.get(&f) {
                        Some(out) => format!("{}/{name}", out.name()),
                        // Cancelled while its number was asked for.
                        None => return,
                    },
                    None => name.clone(),
                };
                let id = transfer_id;
                self.add(id, Role::Send, &user, &shown, Some(size));
                if let Some(entry) = self.entries.get_mut(&id) {
                    entry.offer = Some(id);
                    entry.transfer = Some(id);
                    entry.grant = grant;
                    entry.peer_key = key;
                    entry.path = Some(path);
                    entry.row.stage = Stage::Offered;
                    entry.expires = Some(Instant::now() + OFFER_TIMEOUT);
                    entry.folder = folder;
                }
                self.index.add_offer(&user, Role::Send, id, id);
                let msg = match folder {
                    Some(folder) => PeerMsg::OfferIn {
                        folder,
                        id,
                        size,
                        path: name.clone(),
                    },
                    None => PeerMsg::Offer {
                        id,
                        size,
                        name: name.clone(),
                    },
                };
                self.to_peers.push((user.clone(), msg));
                if folder.is_none() {
                    self.notices.push(XferNotice::Offered {
                        id,
                        peer: user,
                        name,
                        size,
                        via_server: false,
                    });
                }
            }
            Pending::Folder { name, files, size } => {
                let id = transfer_id;
                let count = files.len() as u64;
                self.add(id, Role::Send, &user, &format!("{name}/"), Some(size));
                if let Some(entry) = self.entries.get_mut(&id) {
                    entry.offer = Some(id);
                    entry.transfer = Some(id);
                    entry.peer_key = key;
                    entry.row.stage = Stage::Offered;
                    entry.expires = Some(Instant::now() + OFFER_TIMEOUT);
                    entry.folder_files = Some(count);
                }
                self.index.add_offer(&user, Role::Send, id, id);
                self.folders_out
                    .insert(id, FolderOut::new(&user, &name, id, files));
                self.to_peers.push((
                    user.clone(),
                    PeerMsg::OfferFolder {
                        id,
                        files: count,
                        size,
                        name: name.clone(),
                    },
                ));
                self.notices.push(XferNotice::Offered {
                    id,
                    peer: user,
                    name: format!("{name}/ ({count} files)"),
                    size,
                    via_server: false,
                });
            }
            Pending::Fetch { name } => {
                if self.index.is_receiving(&user, &name) {
                    return self.error(format!("{name} from {user} is already on its way"));
                }
                let id = transfer_id;
                self.add(id, Role::Fetch, &user, &name, None);
                if let Some(entry) = self.entries.get_mut(&id) {
                    entry.transfer = Some(id);
                    entry.grant = grant;
                    entry.peer_key = key;
                }
                self.index.start_receiving(&user, &name, id);
                self.ask_listing(&user, id, 0);
                if let Some(entry) = self.entries.get(&id) {
                    let row = entry.row.clone();
                    self.notices.push(XferNotice::Started { row });
                }
            }
        }
    }

    /// Opens the data connection of transfer `id` with the grant it holds: a push the
    /// peer accepted, or a fetch whose size the server's listing gave.
    pub(super) fn launch(&mut self, id: u64) {
        let me = self.me.clone();
        let downloads = self.downloads.clone();
        let events = self.events.clone();
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        let (Some(grant), Some(transfer_id)) = (entry.grant.take(), entry.transfer) else {
            return;
        };
        entry.row.stage = Stage::Connecting;
        entry.expires = None;
        let cancel = entry.cancel.clone();
        let name = entry.row.name.clone();
        let listed = entry.row.size;
        let peer = entry.row.peer.clone();
        let (relay_tx, relay_rx) = crossbeam_channel::bounded(1);
        self.relay_waiters.insert(transfer_id, relay_tx);
        let ticket = grant.ticket;
        let rungs = Rungs {
            addr: grant.addr,
            hints: grant.hints,
            reversals: grant.reversals,
            relay: relay_rx,
            peer_key: entry.peer_key,
            security: std::sync::Arc::clone(&self.security),
        };
        let spawned = match launch_kind(entry) {
            Some(Launch::Push(path, offer)) => {
                let first = PeerMsg::Push {
                    version: PEER_VERSION,
                    from: me,
                    transfer: transfer_id,
                    ticket,
                    offer,
                };
                spawn(id, &events, move |events| {
                    match rungs.open(&first, &peer, (id, transfer_id), events) {
                        Ok(wire) => {
                            // A folder's file goes by its own name; its folder was agreed.
                            let (_, name) = folders::split_folder_path(&name);
                            transfer::send(wire, &path, &name, id, events, &cancel)
                        }
                        Err(e) => unreachable_outcome(&peer, &e),
                    }
                })
            }
            Some(Launch::Fetch) => {
                let first = PeerMsg::Fetch {
                    version: PEER_VERSION,
                    from: me,
                    transfer: transfer_id,
                    ticket,
                    name: name.clone(),
                };
                spawn(id, &events, move |events| {
                    match rungs.open(&first, &peer, (id, transfer_id), events) {
                        Ok(wire) => {
                            let expect = Expect {
                                name,
                                size: listed,
                                into: None,
                            };
                            transfer::receive(wire, &downloads, &peer, &expect, id, events, &cancel)
                        }
                        Err(e) => unreachable_outcome(&peer, &e),
                    }
                })
            }
            None => return,
        };
        self.started(id, spawned);
    }
}

/// Which data connection an entry opens.
enum Launch {
    /// Push this file under this offer number.
    Push(PathBuf, u64),
    /// Fetch the entry's name.
    Fetch,
}

fn launch_kind(entry: &Entry) -> Option<Launch> {
    match entry.row.role {
        Role::Send => Some(Launch::Push(
            entry.path.clone()?,
            entry.offer.unwrap_or(entry.row.id),
        )),
        Role::Fetch => Some(Launch::Fetch),
        Role::Receive | Role::Serve => None,
    }
}
