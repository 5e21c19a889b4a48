//! Running transfers: handing relay tokens and incoming data connections to their
//! transfer, starting one thread per data connection, taking the threads' events, and
//! the table's upkeep (`\transfers`, progress, `\cancel`, timeouts in `tick`).
//!
//! Another `impl Transfers` block beside `client::transfers`. It must not print, check
//! tickets (`sessions` does) or touch bytes (`transfer` does).

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::{
    RATE_WINDOW, Role, Row, STALLED_AFTER, ServerOut, Stage, TICKET_WAIT, Transfers, XferNotice,
    folders, grants,
};
use crate::client::core::peer_link::{Incoming, Purpose};
use crate::client::core::transfer::{self, Expect, Outcome, TransferEvent};
use crate::client::core::transfer_index::Slot;
use crate::protocol::peer_msg::PeerMsg;
use crate::protocol::server_msg::{Command, TransferResult};
use crate::sanitize::Untrusted;

impl Transfers {
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

    pub(super) fn started(&mut self, id: u64, spawned: std::io::Result<()>) {
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
    pub(super) fn stop(&mut self, id: u64, by_peer: bool) {
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

    pub(super) fn drop_entry(&mut self, id: u64, why: String) {
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
pub(super) fn current_rate(
    samples: &std::collections::VecDeque<(Instant, u64)>,
    now: Instant,
) -> f64 {
    match (samples.front(), samples.back()) {
        (Some(&(first_at, first)), Some(&(_, last))) if last > first => {
            (last - first) as f64 / now.duration_since(first_at).as_secs_f64().max(0.001)
        }
        _ => 0.0,
    }
}

pub(super) fn refuse(incoming: Incoming, why: &str) {
    if let Ok(wire) = incoming.into_wire() {
        wire.refuse(why);
    }
}

pub(super) fn unreachable_outcome(peer: &str, e: &std::io::Error) -> Outcome {
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
pub(super) fn spawn(
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
