//! Folder offers: `\send <folder>` offers the folder once (`OFFER_FOLDER`); once the
//! receiver accepts, its files follow one by one (`OFFER_IN`) with their paths inside the
//! folder, and the receiver takes them without asking again.
//!
//! A third `impl Transfers` block beside `client::transfers`. It owns walking the folder
//! on the sending side (regular files only, no symlinks, names checked, bounded count
//! and depth), pacing the files (a few in flight at once), and on the receiving side
//! checking every name of every path and remembering which folders were accepted. It
//! must not touch bytes or sockets: each file then travels as an ordinary push.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::grants::Pending;
use super::{Role, Stage, Transfers, same};
use crate::client::core::disk_space;
use crate::client::core::transfer::safe_file_name;
use crate::protocol::limits::{
    FOLDER_FILES_IN_FLIGHT, MAX_FOLDER_DEPTH, MAX_FOLDER_FILES, OFFER_TIMEOUT,
};
use crate::protocol::peer_msg::PeerMsg;
use crate::sanitize::Untrusted;

/// One file of a folder to send: where it is, its path inside the folder, its size.
pub(super) type FolderFile = (PathBuf, String, u64);

/// A folder we offered: the files still to offer once it is accepted.
pub(super) struct FolderOut {
    /// Who it is for.
    peer: String,
    /// The folder's name as offered.
    name: String,
    /// The folder offer's number (ours, on the chat link).
    offer: u64,
    /// Files not offered yet: (where it is, its path inside the folder, its size).
    queue: VecDeque<FolderFile>,
    /// Files offered and not ended yet.
    in_flight: usize,
    /// The receiver said yes.
    accepted: bool,
}

impl FolderOut {
    /// Folder `offer` named `name`, offered to `peer`, with these files to send.
    pub(super) fn new(peer: &str, name: &str, offer: u64, files: Vec<FolderFile>) -> FolderOut {
        FolderOut {
            peer: peer.to_string(),
            name: name.to_string(),
            offer,
            queue: files.into(),
            in_flight: 0,
            accepted: false,
        }
    }

    /// The folder's name as offered.
    pub(super) fn name(&self) -> &str {
        &self.name
    }
}

/// A folder we accepted: where its files go and how many may still come.
pub(super) struct FolderIn {
    /// The sender.
    peer: String,
    /// The sender's number for the folder offer.
    offer: u64,
    /// The folder's name inside the downloads folder.
    name: String,
    /// Files the sender announced and has not offered yet.
    remaining: u64,
}

/// The files of `dir` to send: (where, path inside the folder with `/`, size), in a
/// stable order, plus how many were left out (symlinks, unsafe names, too deep).
fn walk(dir: &Path) -> Result<(Vec<FolderFile>, usize), String> {
    let mut files = Vec::new();
    let mut skipped = 0;
    let mut stack = vec![(dir.to_path_buf(), String::new(), 1usize)];
    while let Some((folder, prefix, depth)) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&folder)
            .map_err(|e| format!("cannot read {}: {e}", folder.display()))?
            .filter_map(Result::ok)
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                skipped += 1;
                continue;
            };
            let Ok(meta) = std::fs::symlink_metadata(entry.path()) else {
                skipped += 1;
                continue;
            };
            if safe_file_name(&name).is_err() || depth > MAX_FOLDER_DEPTH {
                skipped += 1;
                continue;
            }
            let inside = format!("{prefix}{name}");
            if meta.is_dir() {
                stack.push((entry.path(), format!("{inside}/"), depth + 1));
            } else if meta.is_file() {
                files.push((entry.path(), inside, meta.len()));
                if files.len() as u64 > MAX_FOLDER_FILES {
                    return Err(format!(
                        "{} holds more than {MAX_FOLDER_FILES} files; send a smaller folder",
                        dir.display()
                    ));
                }
            } else {
                // Symlinks, sockets, devices: never followed or sent.
                skipped += 1;
            }
        }
    }
    files.sort_by(|a, b| a.1.cmp(&b.1));
    Ok((files, skipped))
}

/// Checks a path inside an offered folder: `/` between names that are each safe, at
/// most `MAX_FOLDER_DEPTH` of them.
fn safe_folder_path(path: &str) -> Result<(), String> {
    let names: Vec<&str> = path.split('/').collect();
    if names.len() > MAX_FOLDER_DEPTH {
        return Err(format!(
            "a path deeper than {MAX_FOLDER_DEPTH} names inside a folder"
        ));
    }
    names.iter().try_for_each(|n| safe_file_name(n).map(|_| ()))
}

impl Transfers {
    /// `\send <folder>`: offers the folder as one; its files follow once accepted.
    pub(super) fn offer_folder(&mut self, peer: &str, dir: &Path) {
        let Some(name) = dir
            .canonicalize()
            .ok()
            .and_then(|d| d.file_name().and_then(|n| n.to_str()).map(str::to_string))
        else {
            return self.error(format!("{} has no usable folder name", dir.display()));
        };
        if let Err(e) = safe_file_name(&name) {
            return self.error(e);
        }
        let (files, skipped) = match walk(dir) {
            Ok(found) => found,
            Err(e) => return self.error(e),
        };
        if files.is_empty() {
            return self.error(format!("{} holds no files to send", dir.display()));
        }
        if skipped > 0 {
            self.error(format!(
                "{skipped} item(s) in {} are not sent (symlinks, special files, unsafe names \
                 or deeper than {MAX_FOLDER_DEPTH})",
                dir.display()
            ));
        }
        let size = files.iter().map(|f| f.2).sum();
        // The folder, like each of its files, is numbered by the server (`grants`).
        self.ask_number(peer, Pending::Folder { name, files, size });
    }

    /// `OFFER_OK` for folder offer `id`: its files go out, a few at a time.
    pub(super) fn folder_accepted(&mut self, id: u64) {
        let Some(folder) = self.folders_out.get_mut(&id) else {
            return;
        };
        folder.accepted = true;
        let count = folder.queue.len();
        self.drop_entry(id, format!("accepted; its {count} files follow"));
        self.pump_folder(id);
    }

    /// Offers the next files of folder `id` while fewer than `FOLDER_FILES_IN_FLIGHT`
    /// of them are under way; forgets the folder once all are offered and ended.
    pub(super) fn pump_folder(&mut self, id: u64) {
        loop {
            let Some(folder) = self.folders_out.get_mut(&id) else {
                return;
            };
            if !folder.accepted || folder.in_flight >= FOLDER_FILES_IN_FLIGHT {
                return;
            }
            let Some((path, inside, size)) = folder.queue.pop_front() else {
                if folder.in_flight == 0 {
                    self.folders_out.remove(&id);
                }
                return;
            };
            folder.in_flight += 1;
            let (peer, offer) = (folder.peer.clone(), folder.offer);
            // Each file gets its own number; `OFFER_IN` follows the grant (`grants`).
            let what = Pending::File {
                path,
                name: inside,
                size,
                folder: Some(offer),
            };
            self.ask_number(&peer, what);
        }
    }

    /// A file of folder `id` ended (either side): the next one may go.
    pub(super) fn folder_file_ended(&mut self, id: u64) {
        if let Some(folder) = self.folders_out.get_mut(&id) {
            folder.in_flight = folder.in_flight.saturating_sub(1);
        }
        self.pump_folder(id);
    }

    /// `OFFER_FOLDER` from `peer`: asked once, like a file.
    pub(super) fn on_folder_offer(
        &mut self,
        peer: &str,
        offer: u64,
        files: u64,
        size: u64,
        name: &str,
    ) {
        let refuse = |this: &mut Transfers, reason: String| {
            this.to_peers
                .push((peer.to_string(), PeerMsg::OfferNo { id: offer, reason }));
        };
        if let Err(e) = safe_file_name(name) {
            refuse(self, e.clone());
            return self.error(format!("{peer} offered a folder with an {e}; refused"));
        }
        if files == 0 || files > MAX_FOLDER_FILES {
            return refuse(
                self,
                format!("a folder may hold 1 to {MAX_FOLDER_FILES} files"),
            );
        }
        if self.index.offer(peer, Role::Receive, offer).is_some()
            || self.entries.contains_key(&offer)
        {
            return refuse(self, "that offer number is in use".into());
        }
        let slot = match self.index.take_offer_slot(peer) {
            Ok(slot) => slot,
            Err(first) => return self.too_many_offers(peer, offer, first),
        };
        let id = offer;
        self.add(id, Role::Receive, peer, &format!("{name}/"), Some(size));
        if let Some(entry) = self.entries.get_mut(&id) {
            entry.offer = Some(offer);
            entry.row.stage = Stage::Asked;
            entry.expires = Some(Instant::now() + OFFER_TIMEOUT);
            entry.slot = slot;
            entry.folder_files = Some(files);
        }
        self.index.add_offer(peer, Role::Receive, offer, id);
        self.notices.push(super::XferNotice::FolderIn {
            id,
            from: peer.to_string(),
            name: name.to_string(),
            files,
            size,
            open_for: OFFER_TIMEOUT,
        });
    }

    /// `\accept <id>` of a folder offer: room is checked for the whole folder, the
    /// sender is told yes, and its files will be taken as they come.
    pub(super) fn accept_folder(&mut self, id: u64) {
        let Some(entry) = self.entries.get(&id) else {
            return;
        };
        let (peer, offer, files) = (
            entry.row.peer.clone(),
            entry.offer.unwrap_or(0),
            entry.folder_files.unwrap_or(0),
        );
        let name = entry.row.name.trim_end_matches('/').to_string();
        if let Err(why) = disk_space::check_room(&self.downloads, entry.row.size.unwrap_or(0)) {
            return self.refuse_for_space(id, why);
        }
        self.to_peers
            .push((peer.clone(), PeerMsg::OfferOk { id: offer }));
        self.folders_in.push(FolderIn {
            peer,
            offer,
            name,
            remaining: files,
        });
        self.drop_entry(id, format!("accepted; its {files} files follow"));
    }

    /// `OFFER_IN` from `peer`: a file of a folder we accepted, taken without asking;
    /// anything else is refused.
    pub(super) fn on_folder_file(
        &mut self,
        peer: &str,
        folder: u64,
        offer: u64,
        size: u64,
        path: &str,
    ) {
        let no = |this: &mut Transfers, reason: String| {
            this.to_peers
                .push((peer.to_string(), PeerMsg::OfferNo { id: offer, reason }));
        };
        let Some(at) = self
            .folders_in
            .iter()
            .position(|f| f.offer == folder && same(&f.peer, peer) && f.remaining > 0)
        else {
            return no(self, "no accepted folder with that number".into());
        };
        if let Err(e) = safe_folder_path(path) {
            return no(self, e);
        }
        let name = format!("{}/{path}", self.folders_in[at].name);
        if self.index.is_receiving(peer, &name) {
            return no(self, "that file is already on its way".into());
        }
        if self.index.offer(peer, Role::Receive, offer).is_some()
            || self.entries.contains_key(&offer)
        {
            return no(self, "that offer number is in use".into());
        }
        let slot = match self.index.take_offer_slot(peer) {
            Ok(slot) => slot,
            Err(first) => return self.too_many_offers(peer, offer, first),
        };
        self.folders_in[at].remaining -= 1;
        if self.folders_in[at].remaining == 0 {
            self.folders_in.remove(at);
        }
        let id = offer;
        self.add(id, Role::Receive, peer, &name, Some(size));
        if let Some(entry) = self.entries.get_mut(&id) {
            entry.offer = Some(offer);
            entry.row.stage = Stage::Connecting;
            entry.expires = Some(Instant::now() + OFFER_TIMEOUT);
            entry.slot = slot;
            // So `\cancel <folder>` here finds it.
            entry.folder = Some(folder);
        }
        self.index.add_offer(peer, Role::Receive, offer, id);
        self.index.start_receiving(peer, &name, id);
        self.to_peers
            .push((peer.to_string(), PeerMsg::OfferOk { id: offer }));
    }

    /// `\cancel <id>` of a folder, either way (`by_peer`: the peer's `CANCEL <id>`):
    /// a folder we send stops offering its files, one we receive takes no more, and the
    /// files under way stop on both sides; the peer is told. False if `id` is no folder
    /// of ours (or, from a peer, not of that peer).
    pub(super) fn cancel_folder(&mut self, id: u64, by_peer: Option<&str>) -> bool {
        let out = self
            .folders_out
            .get(&id)
            .is_some_and(|f| by_peer.is_none_or(|p| same(&f.peer, p)));
        let (peer, name, left) = if out {
            let Some(folder) = self.folders_out.remove(&id) else {
                return false;
            };
            (folder.peer, folder.name, folder.queue.len() as u64)
        } else if let Some(at) = self
            .folders_in
            .iter()
            .position(|f| f.offer == id && by_peer.is_none_or(|p| same(&f.peer, p)))
        {
            let folder = self.folders_in.remove(at);
            (folder.peer, folder.name, folder.remaining)
        } else {
            // A folder whose files were all offered: those still under way.
            match self.entries.values().find(|e| {
                e.folder == Some(id)
                    && e.row.role == Role::Receive
                    && !matches!(e.row.stage, Stage::Finished(_) | Stage::Dropped(_))
                    && by_peer.is_none_or(|p| same(&e.row.peer, p))
            }) {
                Some(e) => {
                    let (folder, _) = split_folder_path(&e.row.name);
                    let name = folder.map(|f| f.display().to_string()).unwrap_or_default();
                    (e.row.peer.clone(), name, 0)
                }
                None => return false,
            }
        };
        let mut files: Vec<u64> = self
            .entries
            .values()
            .filter(|e| e.folder == Some(id) && same(&e.row.peer, &peer))
            .filter(|e| !matches!(e.row.stage, Stage::Finished(_) | Stage::Dropped(_)))
            .map(|e| e.row.id)
            .collect();
        // The folder offer itself, not answered yet.
        if self
            .entries
            .get(&id)
            .is_some_and(|e| !matches!(e.row.stage, Stage::Finished(_) | Stage::Dropped(_)))
        {
            files.push(id);
        }
        // The folder first: a sender told of a file's end first would offer the next.
        if by_peer.is_none() {
            self.to_peers.push((peer, PeerMsg::Cancel { id }));
        }
        for file in files {
            match by_peer {
                // The peer stops its side of each file itself.
                Some(_) => self.stop(file, true),
                None => self.cancel(file),
            }
        }
        let whose = match by_peer {
            Some(p) => format!("{} cancelled {name}/", Untrusted(p)),
            None => format!("{name}/ cancelled"),
        };
        self.error(match (out, left) {
            (_, 0) => whose,
            (true, left) => format!("{whose}: its last {left} file(s) were not sent"),
            (false, left) => format!("{whose}: its last {left} file(s) will not come"),
        });
        true
    }

    /// The chat link with `peer` is gone: its folders stop.
    pub(super) fn forget_folders(&mut self, peer: &str) {
        self.folders_in.retain(|f| !same(&f.peer, peer));
        self.folders_out.retain(|_, f| !same(&f.peer, peer));
    }
}

/// For a received file's name (`photos/2024/a.jpg` for a folder's file): the folder it
/// goes into and its own name.
pub fn split_folder_path(name: &str) -> (Option<PathBuf>, String) {
    match name.rsplit_once('/') {
        Some((dir, base)) => (Some(PathBuf::from(dir)), base.to_string()),
        None => (None, name.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_paths_are_checked_name_by_name() {
        assert!(safe_folder_path("a.txt").is_ok());
        assert!(safe_folder_path("2024/june/a b.jpg").is_ok());
        for bad in [
            "../x",
            "a/../b",
            "/etc/passwd",
            "a//b",
            "a/./b",
            "a\\b/c",
            "x/",
        ] {
            assert!(safe_folder_path(bad).is_err(), "{bad:?}");
        }
        let deep = vec!["d"; MAX_FOLDER_DEPTH + 1].join("/");
        assert!(safe_folder_path(&deep).is_err());
        assert_eq!(
            split_folder_path("photos/2024/a.jpg"),
            (Some(PathBuf::from("photos/2024")), "a.jpg".into())
        );
        assert_eq!(split_folder_path("a.jpg"), (None, "a.jpg".into()));
    }

    #[test]
    fn a_walk_keeps_layout_and_skips_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
        std::fs::write(root.join("a.txt"), b"a").unwrap();
        std::fs::write(root.join("sub/b.txt"), b"bb").unwrap();
        std::fs::write(root.join("sub/deeper/c.txt"), b"ccc").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("link")).unwrap();
        let (files, skipped) = walk(root).unwrap();
        let inside: Vec<&str> = files.iter().map(|f| f.1.as_str()).collect();
        assert_eq!(inside, ["a.txt", "sub/b.txt", "sub/deeper/c.txt"]);
        assert_eq!(skipped, 1);
    }
}
