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
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

mod folders;
mod grants;
mod ladder;
mod offers;
mod refusals;
mod running;
mod via_server;

use super::peer_secure::PeerSecurity;
use super::transfer::{self, Cancel, Expect, Outcome, Share, TransferEvent, safe_file_name};
use super::transfer_index::{Slot, TableIndex};
use crate::protocol::identity_key::KeyField;
use crate::protocol::peer_msg::PeerMsg;
use crate::protocol::server_msg::{Command, SharedFile, TransferRole};
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

/// The name a file at `path` is offered under (`\send`, `\offer`): its last component,
/// which must be UTF-8 and a safe file name; else what to tell the person.
fn offered_name(path: &Path) -> Result<String, String> {
    let Some(name) = path
        .file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
    else {
        return Err("the file name is not UTF-8".into());
    };
    safe_file_name(&name)?;
    Ok(name)
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
}

use running::{spawn, unreachable_outcome};
