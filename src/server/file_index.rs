//! The index of shared files: what each online user shares, for `FILES` and `SEARCH`.
//!
//! Owns the per-user file lists. Each user's list is an immutable `Arc` swapped whole on
//! `SHARE`, so a listing or search holds the lock only to clone the `Arc`s (one per
//! user) and scans with no lock held: a search over 100,000 files never stalls another
//! command. It must not talk to sockets or the store, and it is a leaf lock like the
//! registry (never held while taking another).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::protocol::server_msg::{FileEntry, SharedFile};

/// One user's shared files, with lower-case names precomputed for search.
struct UserFiles {
    /// The user's name as registered.
    user: String,
    /// (file, lower-case name), sorted by name.
    files: Vec<(SharedFile, String)>,
}

/// The index: user key → that user's files.
#[derive(Default)]
pub struct FileIndex {
    by_user: Mutex<HashMap<String, Arc<UserFiles>>>,
}

impl FileIndex {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<UserFiles>>> {
        self.by_user.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces `user`'s shared files.
    pub fn set(&self, key: &str, user: &str, files: Vec<SharedFile>) {
        let mut files: Vec<(SharedFile, String)> = files
            .into_iter()
            .map(|f| {
                let lower = f.name.to_lowercase();
                (f, lower)
            })
            .collect();
        files.sort_by(|a, b| a.1.cmp(&b.1));
        let entry = Arc::new(UserFiles {
            user: user.to_string(),
            files,
        });
        self.lock().insert(key.to_string(), entry);
    }

    /// Forgets `user`'s files (they went offline).
    pub fn remove(&self, key: &str) {
        self.lock().remove(key);
    }

    fn snapshot(&self, only: Option<&str>) -> Vec<Arc<UserFiles>> {
        let index = self.lock();
        let mut lists: Vec<Arc<UserFiles>> = match only {
            Some(key) => index.get(key).cloned().into_iter().collect(),
            None => index.values().cloned().collect(),
        };
        drop(index);
        lists.sort_by_cached_key(|l| l.user.to_ascii_lowercase());
        lists
    }

    /// Every file, or one user's (`only` is a user key), sorted by user then name.
    pub fn list(&self, only: Option<&str>) -> Vec<FileEntry> {
        self.snapshot(only)
            .iter()
            .flat_map(|l| l.files.iter().map(|(f, _)| entry(&l.user, f)))
            .collect()
    }

    /// The first `limit` files whose name contains `text` (any case), and how many match.
    pub fn search(&self, text: &str, limit: usize) -> (Vec<FileEntry>, usize) {
        let needle = text.to_lowercase();
        let mut found = Vec::new();
        let mut total = 0;
        for list in self.snapshot(None) {
            for (file, lower) in &list.files {
                if lower.contains(&needle) {
                    total += 1;
                    if found.len() < limit {
                        found.push(entry(&list.user, file));
                    }
                }
            }
        }
        (found, total)
    }
}

fn entry(user: &str, file: &SharedFile) -> FileEntry {
    FileEntry {
        user: user.to_string(),
        size: file.size,
        name: file.name.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(names: &[&str]) -> Vec<SharedFile> {
        names
            .iter()
            .map(|n| SharedFile {
                size: n.len() as u64,
                name: n.to_string(),
            })
            .collect()
    }

    #[test]
    fn list_search_and_removal() {
        let index = FileIndex::default();
        index.set("bob", "Bob", files(&["Zeta.TXT", "alpha.pdf"]));
        index.set("alice", "alice", files(&["report.txt"]));
        let all: Vec<String> = index
            .list(None)
            .iter()
            .map(|e| format!("{} {}", e.user, e.name))
            .collect();
        assert_eq!(all, ["alice report.txt", "Bob alpha.pdf", "Bob Zeta.TXT"]);
        assert_eq!(index.list(Some("bob")).len(), 2);
        let (found, total) = index.search("TXT", 1);
        assert_eq!((found.len(), total), (1, 2));
        index.set("bob", "Bob", files(&["only.bin"]));
        assert_eq!(index.search("txt", 10).1, 1);
        index.remove("alice");
        assert_eq!(index.search("txt", 10).1, 0);
        assert!(index.list(Some("alice")).is_empty());
    }

    #[test]
    fn a_hundred_thousand_files_search_fine() {
        let index = FileIndex::default();
        for user in 0..10 {
            let names: Vec<String> = (0..10_000)
                .map(|i| format!("file-{user}-{i}.dat"))
                .collect();
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            index.set(&format!("u{user}"), &format!("u{user}"), files(&refs));
        }
        let (found, total) = index.search("-7-12", 100);
        assert_eq!(total, 111, "file-7-12, file-7-120..129, file-7-1200..1299");
        assert_eq!(found.len(), 100);
    }
}
