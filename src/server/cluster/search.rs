//! `SEARCH` across the servers of a cluster: the files of this server's users (its file
//! index) and of the users online on the others (their `files:<user>` lists in Redis),
//! as one result, in the order and within the limits a single server gives.
//!
//! Owns only the merge and the Redis reads it needs. It must not hold the registry lock
//! across Redis I/O (it copies the remote users first) nor touch the database. When
//! Redis cannot answer, the local results are returned alone, as for every other
//! cluster read.

use super::message::files_key;
use super::{Cluster, sync::BATCH};
use crate::protocol::server_msg::{FileEntry, SharedFile};
use crate::server::Shared;
use crate::server::file_index::fold;

/// SEARCH over the whole cluster: at most `limit` files whose name contains `text`
/// (case-insensitive), sorted by user (case-insensitive) as on one server, and how many
/// matched in all.
pub fn search(
    shared: &Shared,
    cluster: &Cluster,
    text: &str,
    limit: usize,
) -> (Vec<FileEntry>, usize) {
    let (local, local_total) = shared.files.search(text, limit);
    let mut users: Vec<String> = shared
        .registry
        .remote_users()
        .into_iter()
        .map(|(key, _)| key)
        .collect();
    if users.is_empty() {
        return (local, local_total);
    }
    users.sort();
    let (remote, remote_total) = cluster.search_remote(shared, &users, &fold(text), limit);
    (merge(local, remote, limit), local_total + remote_total)
}

/// The first `limit` of two lists each sorted by user (case-insensitive), still sorted;
/// local files come first among equal keys (a user is never on both).
fn merge(local: Vec<FileEntry>, remote: Vec<FileEntry>, limit: usize) -> Vec<FileEntry> {
    let mut out = Vec::with_capacity(limit.min(local.len() + remote.len()));
    let (mut local, mut remote) = (local.into_iter().peekable(), remote.into_iter().peekable());
    while out.len() < limit {
        let take_local = match (local.peek(), remote.peek()) {
            (Some(l), Some(r)) => l.user.to_ascii_lowercase() <= r.user.to_ascii_lowercase(),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        let next = if take_local {
            local.next()
        } else {
            remote.next()
        };
        out.extend(next);
    }
    out
}

impl Cluster {
    /// The files shared by `users` (keys of users of other servers, sorted) whose name
    /// contains `needle` (folded: `file_index::fold`): the first `limit` in user order, and how many in
    /// all. Memory stays bounded by `limit` whatever the number of matches.
    fn search_remote(
        &self,
        shared: &Shared,
        users: &[String],
        needle: &str,
        limit: usize,
    ) -> (Vec<FileEntry>, usize) {
        let mut found = Vec::new();
        let mut total = 0;
        for chunk in users.chunks(BATCH) {
            let keys: Vec<String> = chunk.iter().map(|key| files_key(key)).collect();
            let Ok(lists) = self.with_conn(|c| {
                redis::cmd("MGET")
                    .arg(&keys)
                    .query::<Vec<Option<String>>>(c)
            }) else {
                break;
            };
            for (key, list) in chunk.iter().zip(lists) {
                let Some(list) = list else { continue };
                // The name as registered, as the local index shows it; a user who left
                // since the copy above is skipped.
                let mut name = None;
                for file in list.lines().filter_map(|line| SharedFile::parse(line).ok()) {
                    if !fold(&file.name).contains(needle) {
                        continue;
                    }
                    if name.is_none() {
                        match shared.registry.lookup(key) {
                            Some((registered, _)) => name = Some(registered),
                            None => break,
                        }
                    }
                    total += 1;
                    if found.len() < limit {
                        found.push(FileEntry {
                            user: name.clone().unwrap_or_default(),
                            size: file.size,
                            name: file.name,
                        });
                    }
                }
            }
        }
        (found, total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(user: &str, name: &str) -> FileEntry {
        FileEntry {
            user: user.into(),
            size: 1,
            name: name.into(),
        }
    }

    #[test]
    fn merge_keeps_user_order_and_the_limit() {
        let local = vec![
            entry("alice", "a1"),
            entry("Carol", "c1"),
            entry("carol", "c2"),
        ];
        let remote = vec![entry("Bob", "b1"), entry("dave", "d1")];
        let users = |v: &[FileEntry]| v.iter().map(|e| e.name.clone()).collect::<Vec<_>>();
        assert_eq!(
            users(&merge(local.clone(), remote.clone(), 10)),
            ["a1", "b1", "c1", "c2", "d1"]
        );
        assert_eq!(
            users(&merge(local.clone(), remote.clone(), 2)),
            ["a1", "b1"]
        );
        assert_eq!(users(&merge(Vec::new(), remote, 1)), ["b1"]);
        assert_eq!(users(&merge(local, Vec::new(), 0)), Vec::<String>::new());
    }
}
