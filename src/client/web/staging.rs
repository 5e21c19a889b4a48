//! The staging folder for files the page uploads to offer them.
//!
//! Owns naming each upload's folder (`<data-dir>/<user>/staging/<n>/`), matching the
//! core's `Offered` notice to the upload it came from, and deleting the staged copy once
//! that offer ends (sent, declined, cancelled, failed), or when too many uploads never
//! became offers. It must not read request bodies (routes stream them) nor talk to the
//! core. Its locks are leaves, held for memory work only; files are removed after the
//! lock is dropped.

use std::collections::{HashMap, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::client::core::Event;
use crate::client::core::event::{Role, XferNotice};

/// Uploads waiting for their offer to appear; older ones are deleted past this.
const PENDING: usize = 64;

/// One upload not yet matched to an offer.
struct Pending {
    /// The file's name (the offer carries it).
    name: String,
    /// Its folder.
    dir: PathBuf,
}

/// The uploads and the offers they became.
#[derive(Default)]
pub struct Staging {
    /// Numbers the folders.
    next: AtomicU64,
    /// Uploads handed to the core, oldest first.
    pending: Mutex<VecDeque<Pending>>,
    /// Offer id → the folder of its staged file.
    offered: Mutex<HashMap<u64, PathBuf>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn remove(dir: &Path) {
    if let Err(e) = fs::remove_dir_all(dir) {
        log::debug!("staged upload {} not removed: {e}", dir.display());
    }
}

impl Staging {
    /// A fresh folder name under `base` for the next upload.
    pub fn next_dir(&self, base: &Path) -> PathBuf {
        base.join(self.next.fetch_add(1, Ordering::SeqCst).to_string())
    }

    /// Notes an upload handed to the core as an offer of `name`.
    pub fn uploaded(&self, name: &str, dir: PathBuf) {
        let dropped = {
            let mut pending = lock(&self.pending);
            pending.push_back(Pending {
                name: name.to_string(),
                dir,
            });
            (pending.len() > PENDING)
                .then(|| pending.pop_front())
                .flatten()
        };
        if let Some(old) = dropped {
            remove(&old.dir);
        }
    }

    /// Follows the core's transfer notices: an offer claims its upload, and an ended
    /// send frees it.
    pub fn on_event(&self, event: &Event) {
        let Event::Transfer(notice) = event else {
            return;
        };
        match notice {
            XferNotice::Offered { id, name, .. } => {
                let found = {
                    let mut pending = lock(&self.pending);
                    let at = pending.iter().position(|p| &p.name == name);
                    at.and_then(|i| pending.remove(i))
                };
                if let Some(p) = found {
                    lock(&self.offered).insert(*id, p.dir);
                }
            }
            XferNotice::Finished { row } | XferNotice::Dropped { row }
                if row.role == Role::Send =>
            {
                let dir = lock(&self.offered).remove(&row.id);
                if let Some(dir) = dir {
                    remove(&dir);
                }
            }
            _ => {}
        }
    }
}
