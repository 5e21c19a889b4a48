//! The client's table of file offers and transfers: push (`\send`), fetch (`\fetch`),
//! serving fetches from the shared folder, `\transfers` and `\cancel`.
//!
//! Owns each transfer's life from offer to outcome, numbering them for the person,
//! starting one thread per data connection, and telling the server how each ended. It
//! reports through [`XferNotice`]s, queued server [`Command`]s and queued peer messages;
//! it must not print, check tickets (`sessions` does) or touch bytes (`transfer` does).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

mod folders;
mod grants;
mod ladder;
mod refusals;
mod via_server;

use super::disk_space;
use super::peer_link::{Incoming, Purpose};
use super::peer_secure::PeerSecurity;
use super::transfer::{self, Cancel, Expect, Outcome, Share, TransferEvent, safe_file_name};
use super::transfer_index::{Slot, TableIndex};
use crate::protocol::identity_key::KeyField;
use crate::protocol::limits::OFFER_TIMEOUT;
use crate::protocol::peer_msg::PeerMsg;
use crate::protocol::server_msg::{Command, SharedFile, TransferResult, TransferRole};
use crate::sanitize::Untrusted;
use std::sync::Arc;

/// How long a `TRANSFER` request waits for the server's ticket.
const TICKET_WAIT: Duration = Duration::from_secs(30);

/// Finished transfers kept for `\transfers`.
const KEEP_FINISHED: usize = 50;

/// What we do in a transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// We offered a file (`\send`).
    Send,
    /// A peer offered us a file.
    Receive,
    /// We fetch from a peer's shared folder.
    Fetch,
    /// A peer fetches from our shared folder.
    Serve,
}

impl Role {
    /// The role named in `TRANSFER_END`, which tells the server's log push or fetch.
    pub fn wire(self) -> TransferRole {
        match self {
            Role::Send => TransferRole::Send,
            Role::Receive => TransferRole::Receive,
            Role::Fetch => TransferRole::Fetch,
            Role::Serve => TransferRole::Serve,
        }
    }
}

/// Where a transfer stands.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", content = "data", rename_all = "snake_case")]
pub enum Stage {
    /// Our offer waits for the peer's answer.
    Offered,
    /// A peer's offer waits for our `\accept` or `\decline`.
    Asked,
    /// Agreed; waiting for the ticket or the connection.
    Connecting,
    /// Bytes are moving.
    Active,
    /// Ended.
    Finished(Outcome),
    /// Declined, expired or cancelled before any bytes moved.
    Dropped(String),
}

/// One row of `\transfers`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Row {
    /// Its number, the same on both sides: the server's transfer id (for an offer,
    /// the number the sender got and offered it under).
    pub id: u64,
    /// What we do.
    pub role: Role,
    /// The other user.
    pub peer: String,
    /// The file's name.
    pub name: String,
    /// The file's size, when known.
    pub size: Option<u64>,
    /// Bytes through so far.
    pub done: u64,
    /// Where it stands.
    pub stage: Stage,
    /// Bytes per second over the last few seconds (0 before bytes move).
    pub rate: f64,
    /// No bytes for `STALLED_AFTER`: the rate and time left mean nothing now.
    pub stalled: bool,
    /// How the data connection reaches the peer: `direct` or `relay`.
    pub route: &'static str,
    /// The offer went through the server (no chat session): it may wait there for an
    /// offline user, and its answer comes back the same way.
    pub via_server: bool,
}

/// The window the current rate is measured over: recent enough to show a slowdown,
/// long enough not to jump with every chunk.
const RATE_WINDOW: Duration = Duration::from_secs(5);

/// Seconds without a byte after which a transfer is shown as stalled.
const STALLED_AFTER: Duration = Duration::from_secs(5);

/// Something about transfers the person should see.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "kind", content = "data", rename_all = "snake_case")]
pub enum XferNotice {
    /// We offered a file.
    Offered {
        id: u64,
        peer: String,
        name: String,
        size: u64,
        /// Through the server (no chat session), not over a chat link.
        via_server: bool,
    },
    /// A peer offers us a file.
    OfferIn {
        id: u64,
        from: String,
        name: String,
        size: u64,
        /// How long the offer waits for an answer.
        #[serde(serialize_with = "super::event::secs")]
        open_for: Duration,
        /// Bytes of it already here from an earlier try: accepting resumes there.
        resumes_at: u64,
        /// It came through the server (no chat session); the answer goes back that way.
        via_server: bool,
    },
    /// A peer offers us a folder: `files` files, `size` bytes in all, accepted once.
    FolderIn {
        id: u64,
        from: String,
        name: String,
        files: u64,
        size: u64,
        /// How long the offer waits for an answer.
        #[serde(serialize_with = "super::event::secs")]
        open_for: Duration,
    },
    /// A transfer started moving bytes.
    Started { row: Row },
    /// Progress of the active transfers (on a timer).
    Progress { rows: Vec<Row> },
    /// A transfer ended.
    Finished { row: Row },
    /// A transfer was declined, expired or cancelled before it started.
    Dropped { row: Row },
    /// `\transfers`.
    List { rows: Vec<Row> },
    /// We told the server about our shared files.
    Shared { count: usize, dir: PathBuf },
    /// Something asked for cannot be done.
    Error(String),
}

struct Entry {
    row: Row,
    /// The offer id on the chat link: ours for `Send`, the sender's for `Receive`.
    offer: Option<u64>,
    /// The server's transfer id, once known.
    transfer: Option<u64>,
    /// Where the peer listens (with its hints) and the ticket, from our `TRANSFER` grant,
    /// until the data connection is opened (`grants::launch`).
    grant: Option<ladder::Grant>,
    /// The peer's identity key from the server's grant (`OK TRANSFER`), once known:
    /// what the transfer link's handshake must see.
    peer_key: KeyField,
    /// The file to send (`Send`, `Serve`).
    path: Option<PathBuf>,
    /// Stops the transfer thread.
    cancel: Cancel,
    /// When an unanswered offer lapses.
    expires: Option<Instant>,
    /// For a file of a folder (either way): the folder's number; a folder we send is
    /// told when the file ends, and `\cancel <folder>` finds its files.
    folder: Option<u64>,
    /// For a folder offer (either way): how many files it holds.
    folder_files: Option<u64>,
    /// When bytes started moving, for the rate.
    started: Option<Instant>,
    /// (when, bytes done) at recent progress reports, oldest first, for the current
    /// rate; the last one says when bytes last moved.
    samples: std::collections::VecDeque<(Instant, u64)>,
    /// The per-peer slot it holds (a waiting offer, a serve), given back when it ends.
    slot: Slot,
    /// Our offer through the server was accepted and waits for its `TRANSFER <user>
    /// <offer>` grant (asked again whenever the peer comes online).
    await_grant: bool,
}

/// A fetch waiting for one page of the owner's `FILES` answer.
struct Listing {
    /// The owner.
    peer: String,
    /// The fetch's number.
    id: u64,
    /// When the page was asked for, to give up on a server that never answers.
    since: Instant,
    /// Which page: where the next unseen file starts, since the name may be further on.
    offset: usize,
}

/// All transfers of one logged-in client.
pub struct Transfers {
    /// Our username.
    me: String,
    /// Where received files go.
    downloads: PathBuf,
    /// Our shared folder, if any.
    share: Option<Share>,
    /// Where transfer threads report.
    events: Sender<TransferEvent>,
    /// Every transfer by number.
    entries: BTreeMap<u64, Entry>,
    /// Pushes, folders and fetches waiting for the server's `OK TRANSFER` (their
    /// number), oldest first.
    awaiting_ticket: Vec<grants::Asking>,
    /// Fetches waiting for the server's `FILES <peer> <offset>` answer (the size to
    /// expect), in the order the requests were sent: replies come back in that order.
    awaiting_listing: Vec<Listing>,
    /// O(1) lookups and the per-peer caps.
    index: TableIndex,
    /// For the front end.
    notices: Vec<XferNotice>,
    /// For the server.
    to_server: Vec<ServerOut>,
    /// Transfer threads waiting for a relay token, by server transfer id.
    relay_waiters: std::collections::HashMap<u64, crossbeam_channel::Sender<(SocketAddr, String)>>,
    /// For peers over their chat link: (peer, message).
    to_peers: Vec<(String, PeerMsg)>,
    /// Folders we offered, by their entry, with the files still to offer.
    folders_out: BTreeMap<u64, folders::FolderOut>,
    /// Folders we accepted, whose files are still coming.
    folders_in: Vec<folders::FolderIn>,
    /// Our key and the pins, for the data connections' handshakes.
    security: Arc<PeerSecurity>,
    /// Offers through the server waiting for its number (`OK OFFER`), oldest first.
    awaiting_number: Vec<via_server::Numbering>,
    /// Notes about offers through the server for the front end (`take_away_notes`).
    away_notes: Vec<String>,
}

/// What `transfers` asks to send to the server.
pub enum ServerOut {
    /// One command line.
    Command(Command),
    /// `SHARE <n>` and its lines, sent as one block.
    Share(Vec<SharedFile>),
}

fn same(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

impl Transfers {
    /// No transfers yet.
    pub fn new(
        me: &str,
        downloads: PathBuf,
        share: Option<Share>,
        events: Sender<TransferEvent>,
        security: Arc<PeerSecurity>,
    ) -> Transfers {
        Transfers {
            me: me.to_string(),
            downloads,
            share,
            events,
            entries: BTreeMap::new(),
            awaiting_ticket: Vec::new(),
            awaiting_listing: Vec::new(),
            index: TableIndex::default(),
            notices: Vec::new(),
            to_server: Vec::new(),
            relay_waiters: std::collections::HashMap::new(),
            to_peers: Vec::new(),
            folders_out: BTreeMap::new(),
            folders_in: Vec::new(),
            security,
            awaiting_number: Vec::new(),
            away_notes: Vec::new(),
        }
    }

    /// What the front end should show since the last call.
    pub fn take_notices(&mut self) -> Vec<XferNotice> {
        std::mem::take(&mut self.notices)
    }

    /// What the server should be sent since the last call.
    pub fn take_server_out(&mut self) -> Vec<ServerOut> {
        std::mem::take(&mut self.to_server)
    }

    /// What peers should be sent since the last call.
    pub fn take_peer_out(&mut self) -> Vec<(String, PeerMsg)> {
        std::mem::take(&mut self.to_peers)
    }

    /// The shared folder, if any.
    pub fn share_dir(&self) -> Option<&Path> {
        self.share.as_ref().map(Share::root)
    }

    fn error(&mut self, text: impl Into<String>) {
        self.notices.push(XferNotice::Error(text.into()));
    }

    /// A new entry numbered `id` (a server transfer id; callers check it is free).
    fn add(&mut self, id: u64, role: Role, peer: &str, name: &str, size: Option<u64>) {
        self.entries.insert(
            id,
            Entry {
                row: Row {
                    id,
                    role,
                    peer: peer.to_string(),
                    name: name.to_string(),
                    size,
                    done: 0,
                    stage: Stage::Connecting,
                    rate: 0.0,
                    stalled: false,
                    route: "direct",
                    via_server: false,
                },
                offer: None,
                transfer: None,
                grant: None,
                peer_key: None,
                path: None,
                cancel: Cancel::default(),
                expires: None,
                folder: None,
                folder_files: None,
                started: None,
                samples: std::collections::VecDeque::new(),
                slot: Slot::None,
                await_grant: false,
            },
        );
    }

    /// Bookkeeping when transfer `id` ends (finished or dropped): gives back its slot,
    /// frees its name for a new receive, and forgets the oldest ended transfers beyond
    /// `KEEP_FINISHED`. O(1) amortised: no scan of the table.
    fn ended(&mut self, id: u64) {
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        let slot = std::mem::take(&mut entry.slot);
        let folder = entry.folder.take();
        let (peer, name, role, offer) = (
            entry.row.peer.clone(),
            entry.row.name.clone(),
            entry.row.role,
            entry.offer,
        );
        self.index.release(&peer, slot);
        if matches!(role, Role::Receive | Role::Fetch) {
            self.index.stop_receiving(&peer, &name, id);
        }
        // The peer may reuse the number (after a restart, say).
        if let Some(offer) = offer {
            self.index.remove_offer(&peer, role, offer, id);
        }
        self.index.ended(id);
        while let Some(old) = self.index.oldest_beyond(KEEP_FINISHED) {
            self.entries.remove(&old);
        }
        if let Some(folder) = folder {
            self.folder_file_ended(folder);
        }
    }

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
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
        else {
            return self.error("the file name is not UTF-8");
        };
        if let Err(e) = safe_file_name(&name) {
            return self.error(e);
        }
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

    fn find_mut(&mut self, role: Role, peer: &str, offer: u64) -> Option<&mut Entry> {
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

    /// The server gave us a relay token for transfer `transfer_id`: hand it to the
    /// thread waiting for it.
    pub fn on_relay(&mut self, transfer_id: u64, relay: SocketAddr, token: String) {
        if let Some(waiter) = self.relay_waiters.remove(&transfer_id) {
            let _ = waiter.try_send((relay, token));
        }
    }

    /// A data connection whose ticket `sessions` checked.
    pub fn on_incoming(&mut self, incoming: Incoming) {
        let route = incoming.path;
        let from = incoming.hello.from.clone();
        let transfer_id = incoming.hello.session;
        match incoming.hello.purpose.clone() {
            Purpose::Push { offer } => {
                let found = self.index.offer(&from, Role::Receive, offer).filter(|id| {
                    self.entries
                        .get(id)
                        .is_some_and(|e| e.row.stage == Stage::Connecting)
                });
                let Some(id) = found else {
                    return refuse(incoming, "no accepted offer with that number");
                };
                let Ok(wire) = incoming.into_wire() else {
                    return;
                };
                let (downloads, events) = (self.downloads.clone(), self.events.clone());
                let Some(entry) = self.entries.get_mut(&id) else {
                    return;
                };
                entry.transfer = Some(transfer_id);
                entry.row.route = route;
                let (cancel, name, size) =
                    (entry.cancel.clone(), entry.row.name.clone(), entry.row.size);
                let spawned = spawn(id, &events, move |events| {
                    // A folder's file: its folder inside the downloads folder, its name.
                    let (into, name) = folders::split_folder_path(&name);
                    let expect = Expect { name, size, into };
                    transfer::receive(wire, &downloads, &from, &expect, id, events, &cancel)
                });
                self.started(id, spawned);
            }
            Purpose::Fetch { name } => {
                let slot = match self.index.take_serve_slot(&from) {
                    Ok(slot) => slot,
                    Err((why, first)) => return self.serve_busy(incoming, &from, why, first),
                };
                let resolved = match &self.share {
                    Some(share) => share.resolve(&name),
                    None => Err("nothing is shared here".to_string()),
                };
                let (path, size) = match resolved {
                    Ok(found) => found,
                    Err(why) => {
                        self.index.release(&from, slot);
                        log::warn!(
                            "refused to serve {} to {}: {}",
                            Untrusted(&name),
                            Untrusted(&from),
                            Untrusted(&why)
                        );
                        self.error(format!("{from} asked for {name}, refused: {why}"));
                        return refuse(incoming, &why);
                    }
                };
                // Numbered by the fetcher's transfer id, as the fetcher shows it.
                let id = transfer_id;
                if self.entries.contains_key(&id) {
                    self.index.release(&from, slot);
                    return refuse(incoming, "that transfer number is in use");
                }
                let Ok(wire) = incoming.into_wire() else {
                    self.index.release(&from, slot);
                    return;
                };
                self.add(id, Role::Serve, &from, &name, Some(size));
                let events = self.events.clone();
                let Some(entry) = self.entries.get_mut(&id) else {
                    return;
                };
                entry.slot = slot;
                entry.transfer = Some(transfer_id);
                entry.row.route = route;
                entry.path = Some(path.clone());
                let cancel = entry.cancel.clone();
                let spawned = spawn(id, &events, move |events| {
                    transfer::send(wire, &path, &name, id, events, &cancel)
                });
                self.started(id, spawned);
            }
            Purpose::Chat => refuse(incoming, "not a transfer"),
        }
    }

    fn started(&mut self, id: u64, spawned: std::io::Result<()>) {
        if let Err(e) = spawned {
            let why = format!("cannot start a thread: {e}");
            return self.drop_entry(id, why);
        }
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        // An accepted offer stops counting as waiting once its bytes move.
        if entry.slot == Slot::Offer {
            entry.slot = Slot::None;
            let peer = entry.row.peer.clone();
            self.index.release(&peer, Slot::Offer);
        }
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        entry.row.stage = Stage::Active;
        entry.expires = None;
        entry.started = Some(Instant::now());
        let row = entry.row.clone();
        if row.role != Role::Fetch {
            self.notices.push(XferNotice::Started { row });
        }
    }

    /// Progress and outcomes from transfer threads.
    pub fn on_event(&mut self, event: TransferEvent) {
        match event {
            TransferEvent::Progress { id, done, total } => {
                if let Some(entry) = self.entries.get_mut(&id) {
                    let now = Instant::now();
                    if entry.samples.back().is_none_or(|&(_, last)| last != done) {
                        entry.samples.push_back((now, done));
                    }
                    // Keep one sample older than the window, to measure across it.
                    while entry.samples.len() > 2
                        && entry
                            .samples
                            .get(1)
                            .is_some_and(|&(at, _)| now.duration_since(at) > RATE_WINDOW)
                    {
                        entry.samples.pop_front();
                    }
                    entry.row.done = done;
                    entry.row.size = Some(total);
                    entry.row.rate = current_rate(&entry.samples, now);
                }
            }
            TransferEvent::NeedReverse { id, transfer } => {
                if let Some(entry) = self.entries.get_mut(&id) {
                    entry.row.route = "reverse";
                }
                self.to_server.push(ServerOut::Command(Command::Reverse {
                    transfer: true,
                    id: transfer,
                }));
            }
            TransferEvent::NeedRelay { id, transfer } => {
                if let Some(entry) = self.entries.get_mut(&id) {
                    entry.row.route = "relay";
                }
                self.to_server.push(ServerOut::Command(Command::Relay {
                    transfer: true,
                    id: transfer,
                }));
            }
            TransferEvent::Finished { id, outcome } => {
                let Some(entry) = self.entries.get_mut(&id) else {
                    return;
                };
                if outcome.result == TransferResult::Ok {
                    entry.row.done = outcome.size;
                }
                entry.row.size = Some(outcome.size);
                let secs = outcome.elapsed.as_secs_f64().max(0.001);
                entry.row.rate = (outcome.size - outcome.resumed_from) as f64 / secs;
                entry.row.stage = Stage::Finished(outcome.clone());
                let row = entry.row.clone();
                if let Some(transfer) = entry.transfer {
                    self.to_server
                        .push(ServerOut::Command(Command::TransferEnd {
                            id: transfer,
                            result: outcome.result,
                            size: outcome.size,
                            ms: outcome.elapsed.as_millis() as u64,
                            hash: outcome.hash.map(|h| h.to_hex().to_string()),
                            role: Some(row.role.wire()),
                            // A whole file moved, or (stopped early) what the last
                            // progress report counted, past the resumed prefix.
                            moved: match outcome.result {
                                TransferResult::Ok => outcome.size,
                                _ => row.done,
                            }
                            .saturating_sub(outcome.resumed_from),
                            resumed_from: outcome.resumed_from,
                            // The server logs a file's own name (a folder's file too).
                            name: folders::split_folder_path(&row.name).1,
                        }));
                }
                self.ended(id);
                self.notices.push(XferNotice::Finished { row });
            }
        }
    }

    /// `\transfers`
    pub fn list(&mut self) {
        let rows = self.entries.values().map(|e| e.row.clone()).collect();
        self.notices.push(XferNotice::List { rows });
    }

    /// The active transfers, for the progress display.
    pub fn progress(&mut self) {
        // The rate is worked out now, not at the last report, so a stalled transfer
        // shows its rate falling instead of a frozen figure.
        let rows: Vec<Row> = self
            .entries
            .values()
            .filter(|e| e.row.stage == Stage::Active)
            .map(|e| {
                let mut row = e.row.clone();
                let now = Instant::now();
                row.rate = current_rate(&e.samples, now);
                let last_moved = e.samples.back().map(|&(at, _)| at).or(e.started);
                row.stalled = last_moved.is_some_and(|at| now.duration_since(at) >= STALLED_AFTER);
                row
            })
            .collect();
        self.notices.push(XferNotice::Progress { rows });
    }

    /// `\cancel <id>`: stops a transfer on both sides, or withdraws an offer.
    pub fn cancel(&mut self, id: u64) {
        if self.cancel_folder(id, None) {
            return;
        }
        let Some(entry) = self.entries.get(&id) else {
            return self.error(format!("no transfer {id}"));
        };
        if matches!(entry.row.stage, Stage::Finished(_) | Stage::Dropped(_)) {
            return self.error(format!("transfer {id} has ended already"));
        }
        if let (Some(offer), Role::Send | Role::Receive) = (entry.offer, entry.row.role) {
            let peer = entry.row.peer.clone();
            self.to_peers.push((peer, PeerMsg::Cancel { id: offer }));
        }
        self.stop(id, false);
    }

    /// Stops transfer `id`: the thread of an active one ends it (and reports), anything
    /// earlier is dropped here.
    fn stop(&mut self, id: u64, by_peer: bool) {
        let Some(entry) = self.entries.get(&id) else {
            return;
        };
        match (&entry.row.stage, by_peer) {
            (Stage::Finished(_) | Stage::Dropped(_), _) => {}
            (Stage::Active, false) => entry.cancel.cancel(),
            (Stage::Active, true) => entry.cancel.cancelled_by_peer(),
            (_, false) => self.drop_entry(id, "cancelled".into()),
            (Stage::Asked, true) => {
                let peer = Untrusted(&entry.row.peer).to_string();
                self.drop_entry(id, format!("{peer} withdrew the offer"))
            }
            (_, true) => {
                let peer = Untrusted(&entry.row.peer).to_string();
                self.drop_entry(id, format!("cancelled by {peer}"))
            }
        }
    }

    fn drop_entry(&mut self, id: u64, why: String) {
        self.awaiting_listing.retain(|l| l.id != id);
        if let Some(entry) = self.entries.get_mut(&id) {
            if matches!(entry.row.stage, Stage::Finished(_) | Stage::Dropped(_)) {
                return;
            }
            entry.row.stage = Stage::Dropped(why);
            entry.expires = None;
            let row = entry.row.clone();
            // Our grant was never used: the server's log hears that it ended unused.
            // So did a server-numbered offer of ours that never started.
            if entry.grant.take().is_some()
                || (entry.folder_files.is_some() && row.role == Role::Send)
                || (row.via_server && row.role == Role::Send && entry.started.is_none())
            {
                self.to_server
                    .push(ServerOut::Command(Command::TransferEnd {
                        id,
                        result: TransferResult::Refused,
                        size: 0,
                        ms: 0,
                        hash: None,
                        role: Some(row.role.wire()),
                        moved: 0,
                        resumed_from: 0,
                        name: folders::split_folder_path(row.name.trim_end_matches('/')).1,
                    }));
            }
            self.notices.push(XferNotice::Dropped { row });
            self.ended(id);
        }
    }

    /// Expires unanswered offers and ticket requests. Call about once a second.
    pub fn tick(&mut self) {
        let now = Instant::now();
        let lapsed: Vec<u64> = self
            .entries
            .values()
            .filter(|e| e.expires.is_some_and(|t| t <= now))
            .map(|e| e.row.id)
            .collect();
        for id in lapsed {
            // An offer we never answered: tell the offerer, who may be waiting for it
            // at the server (an offer through the server does not lapse there).
            if let Some(entry) = self.entries.get(&id)
                && entry.row.role == Role::Receive
                && entry.row.stage == Stage::Asked
                && entry.folder_files.is_none()
                && let Some(offer) = entry.offer
            {
                let peer = entry.row.peer.clone();
                self.to_peers.push((
                    peer,
                    PeerMsg::OfferNo {
                        id: offer,
                        reason: "not answered in time".into(),
                    },
                ));
            }
            self.drop_entry(id, "expired".into());
        }
        while let Some(at) = self
            .awaiting_ticket
            .iter()
            .position(|a| now.duration_since(a.since) > TICKET_WAIT)
        {
            let asking = self.awaiting_ticket.remove(at);
            if let grants::Pending::File {
                folder: Some(folder),
                ..
            } = asking.what
            {
                self.folder_file_ended(folder);
            }
            self.error(format!(
                "{} with {}: the server gave no transfer number (is the user online?)",
                asking.what.label(),
                Untrusted(&asking.peer)
            ));
        }
        self.expire_numbering(now);
        let unlisted: Vec<u64> = self
            .awaiting_listing
            .iter()
            .filter(|l| now.duration_since(l.since) > TICKET_WAIT)
            .map(|l| l.id)
            .collect();
        for id in unlisted {
            self.drop_entry(
                id,
                "the server gave no list of the user's files (is the user online?)".into(),
            );
        }
    }
}

/// Bytes per second from the oldest sample in the window to now; it falls while no
/// bytes arrive, rather than freezing at the last figure.
fn current_rate(samples: &std::collections::VecDeque<(Instant, u64)>, now: Instant) -> f64 {
    match (samples.front(), samples.back()) {
        (Some(&(first_at, first)), Some(&(_, last))) if last > first => {
            (last - first) as f64 / now.duration_since(first_at).as_secs_f64().max(0.001)
        }
        _ => 0.0,
    }
}

fn refuse(incoming: Incoming, why: &str) {
    if let Ok(wire) = incoming.into_wire() {
        wire.refuse(why);
    }
}

fn unreachable_outcome(peer: &str, e: &std::io::Error) -> Outcome {
    Outcome {
        result: TransferResult::Failed,
        detail: format!("cannot reach {peer}: {e}"),
        size: 0,
        hash: None,
        saved_as: None,
        resumed_from: 0,
        elapsed: Duration::ZERO,
    }
}

/// Runs one transfer on its own thread and reports its outcome.
fn spawn(
    id: u64,
    events: &Sender<TransferEvent>,
    work: impl FnOnce(&Sender<TransferEvent>) -> Outcome + Send + 'static,
) -> std::io::Result<()> {
    let events = events.clone();
    thread::Builder::new()
        .name(format!("transfer-{id}"))
        .spawn(move || {
            let outcome = work(&events);
            let _ = events.send(TransferEvent::Finished { id, outcome });
        })
        .map(|_| ())
}
