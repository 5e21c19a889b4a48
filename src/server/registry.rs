//! Who is connected and who is online: the server's only shared in-memory state.
//!
//! Owns the table of connections and of logged-in users behind one mutex, the sorted set
//! of online users that `LIST` pages through, and the presence changes not yet announced
//! (`server::presence` takes them every interval). Every method locks, copies what it
//! needs, and unlocks before returning; callers do all I/O (socket writes, SQLite,
//! bcrypt) with the lock released. No method costs O(online users): `LIST` copies one
//! page, and the recipients of a presence announcement are copied a chunk at a time.
//!
//! With `--cluster`, it also mirrors the users online on the other servers (`remote`):
//! they count in `LIST`, `INFO` and presence like local ones, but have no connection
//! here; `server::cluster` keeps the mirror up to date.
//!
//! Lock order: the registry lock is a leaf. Nothing else is locked while it is held, and
//! it is never held while calling the store or sending on a channel that could block
//! (`Outbox::send` never blocks, and it is still only called after unlocking).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard};

use super::outbox::Outbox;
use crate::protocol::server_msg::ListedUser;

/// Identifies one accepted connection for its whole life.
pub type ConnId = u64;

/// A logged-in user.
struct User {
    /// The name as registered.
    name: String,
    /// The connection that owns this login.
    conn: ConnId,
    /// Where peers reach this user; `None` until the port is declared, and only users
    /// with an address count as online.
    addr: Option<SocketAddr>,
    /// Local interface addresses the client reported (`HINTS`), dialled at its port.
    hints: Vec<IpAddr>,
    /// The account's id, shown in `LIST` (set with the address).
    uid: u64,
}

/// A user online on another server of the cluster.
struct Remote {
    /// The name as registered.
    name: String,
    /// Where peers reach them.
    addr: SocketAddr,
    /// The id of the server holding their login, to deliver to them.
    server: String,
    /// The account's id, shown in `LIST` (one database, so the same on every server).
    uid: u64,
}

/// A user whose presence changed since the last announcement. Only the state at the end
/// of the interval is announced, but a change is never dropped: someone may have seen
/// the state in between (in `LIST`), so a user who came and went is announced as gone.
struct Change {
    /// The name as registered.
    name: String,
    /// Online now.
    online: bool,
    /// Where a local user is reached when online; `None` for a user of another server
    /// (whose own server publishes the change, so it is not published again from here)
    /// and for a local user who left.
    local_addr: Option<SocketAddr>,
    /// The change is one of a local user (published to the other servers).
    local: bool,
}

#[derive(Default)]
struct Inner {
    /// Every live connection, logged in or not, to reach it at shutdown.
    conns: HashMap<ConnId, Outbox>,
    /// The user key each logged-in connection owns, so leaving is O(1).
    owners: HashMap<ConnId, String>,
    /// Logged-in users by lower-case name.
    users: HashMap<String, User>,
    /// Online users, lower-case name → name as registered: sorted for `LIST` pages.
    online: BTreeMap<String, String>,
    /// Presence changes since the last announcement, by lower-case name.
    changes: HashMap<String, Change>,
    /// Users online on other servers (cluster only), by lower-case name; a user logged
    /// in here is never in it.
    remote: HashMap<String, Remote>,
}

impl Inner {
    /// Notes that `key` came online or went offline (`local`: a user of this server,
    /// online at `addr`).
    fn note(&mut self, key: &str, name: &str, online: bool, local: bool, addr: Option<SocketAddr>) {
        if online {
            self.online.insert(key.to_string(), name.to_string());
        } else {
            self.online.remove(key);
        }
        self.changes.insert(
            key.to_string(),
            Change {
                name: name.to_string(),
                online,
                local_addr: addr.filter(|_| local && online),
                local,
            },
        );
    }
}

/// The shared registry.
#[derive(Default)]
pub struct Registry {
    inner: Mutex<Inner>,
}

/// Why a login could not be claimed.
#[derive(Debug, PartialEq, Eq)]
pub struct AlreadyOnline;

/// The presence changes of one interval (whom to tell: [`Registry::recipients_after`]).
#[derive(Default)]
pub struct PresenceBatch {
    /// Users who came online (names as registered, sorted by lower-case name).
    pub came: Vec<(String, String)>,
    /// Users who went offline.
    pub went: Vec<(String, String)>,
    /// The changes of local users, for the other servers of a cluster: (key, name,
    /// address when they came online, account id when online).
    pub local: Vec<(String, String, Option<SocketAddr>, u64)>,
}

/// How to reach an online user with an event.
pub enum Reach {
    /// Connected here.
    Local(Outbox),
    /// Connected to the server with this id (cluster only).
    Remote(String),
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere must not take every later login down with it: the data is
        // plain maps that stay consistent between statements.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Number of live connections.
    pub fn connection_count(&self) -> usize {
        self.lock().conns.len()
    }

    /// Number of users online.
    pub fn online_count(&self) -> usize {
        self.lock().online.len()
    }

    /// Records a new connection.
    pub fn add_connection(&self, id: ConnId, outbox: Outbox) {
        self.lock().conns.insert(id, outbox);
    }

    /// Forgets a connection and its login. If its user was online, returns the name (the
    /// others learn it from the next presence announcement).
    pub fn remove_connection(&self, id: ConnId) -> Option<String> {
        let mut inner = self.lock();
        inner.conns.remove(&id);
        let key = inner.owners.remove(&id)?;
        // Only the owner removes the user: a login taken over by a resumed one belongs
        // to the new connection.
        if inner.users.get(&key).is_none_or(|u| u.conn != id) {
            return None;
        }
        let user = inner.users.remove(&key)?;
        user.addr?;
        inner.note(&key, &user.name, false, true, None);
        Some(user.name)
    }

    /// The user key connection `id` has claimed, if any (logged in or giving its port).
    pub fn claimed_by(&self, id: ConnId) -> Option<String> {
        self.lock().owners.get(&id).cloned()
    }

    /// Reserves `name` for connection `id` so that no second login can take it.
    pub fn claim(&self, key: &str, name: &str, id: ConnId) -> Result<(), AlreadyOnline> {
        let mut inner = self.lock();
        if inner.users.contains_key(key) {
            return Err(AlreadyOnline);
        }
        inner.owners.insert(id, key.to_string());
        inner.users.insert(
            key.to_string(),
            User {
                name: name.to_string(),
                conn: id,
                addr: None,
                hints: Vec::new(),
                uid: 0,
            },
        );
        Ok(())
    }

    /// Like [`Registry::claim`], but a login held by another connection is taken over
    /// (a resumed login proves it is the same client, whose old connection may be half
    /// open after a network change). Returns the old connection's outbox, to cut it off.
    pub fn take_over(&self, key: &str, name: &str, id: ConnId) -> Option<Outbox> {
        let mut inner = self.lock();
        let old = inner.users.remove(key);
        let mut old_outbox = None;
        if let Some(old) = old {
            inner.owners.remove(&old.conn);
            old_outbox = inner.conns.get(&old.conn).cloned();
            if old.addr.is_some() {
                inner.note(key, &old.name, false, true, None);
            }
        }
        inner.owners.insert(id, key.to_string());
        inner.users.insert(
            key.to_string(),
            User {
                name: name.to_string(),
                conn: id,
                addr: None,
                hints: Vec::new(),
                uid: 0,
            },
        );
        old_outbox
    }

    /// Marks the user claimed by connection `id` (account id `uid`) online at `addr`;
    /// the next presence announcement tells the others. Nothing happens if a resumed
    /// login took the name over from `id` meanwhile.
    ///
    /// `welcome` (the `OK WELCOME` line) is queued to the user's connection in the same
    /// step, without waiting (`Outbox::send_wire`): nothing addressed to the user can be
    /// queued before it, and anyone the user tells at once finds it online. False (and
    /// nothing queued) if the connection is no longer this user's.
    pub fn set_online(
        &self,
        key: &str,
        id: ConnId,
        addr: SocketAddr,
        uid: u64,
        welcome: String,
    ) -> bool {
        let mut inner = self.lock();
        let Some(user) = inner.users.get_mut(key).filter(|u| u.conn == id) else {
            return false;
        };
        user.addr = Some(addr);
        user.uid = uid;
        let name = user.name.clone();
        if let Some(outbox) = inner.conns.get(&id) {
            outbox.send_wire(welcome);
        }
        // The user moved here from another server.
        inner.remote.remove(key);
        inner.note(key, &name, true, true, Some(addr));
        true
    }

    /// Up to `max` online users (names and account ids) from position `offset`, sorted
    /// case-insensitively, and how many are online in all.
    pub fn online_page(&self, offset: usize, max: usize) -> (Vec<ListedUser>, usize) {
        let inner = self.lock();
        let page = inner
            .online
            .iter()
            .skip(offset)
            .take(max)
            .map(|(key, name)| ListedUser {
                name: name.clone(),
                id: match inner.users.get(key) {
                    Some(user) => user.uid,
                    None => inner.remote.get(key).map_or(0, |r| r.uid),
                },
            })
            .collect();
        (page, inner.online.len())
    }

    /// Takes the presence changes since the last call (each user as online or offline
    /// at the end of the interval). Empty when nothing changed.
    pub fn take_presence(&self) -> PresenceBatch {
        let mut inner = self.lock();
        if inner.changes.is_empty() {
            return PresenceBatch::default();
        }
        let changes = std::mem::take(&mut inner.changes);
        // The account ids of local users who came (for other servers' PRESENCE), read
        // while the lock is held; the batch is built after it is released.
        let uids: HashMap<String, u64> = changes
            .iter()
            .filter(|(_, c)| c.local && c.local_addr.is_some())
            .filter_map(|(key, _)| inner.users.get(key).map(|u| (key.clone(), u.uid)))
            .collect();
        drop(inner);
        let mut batch = PresenceBatch::default();
        for (key, change) in changes {
            if change.local {
                let uid = uids.get(&key).copied().unwrap_or(0);
                batch
                    .local
                    .push((key.clone(), change.name.clone(), change.local_addr, uid));
            }
            match change.online {
                true => batch.came.push((key, change.name)),
                false => batch.went.push((key, change.name)),
            }
        }
        batch.came.sort();
        batch.went.sort();
        batch
    }

    /// The online users of this server (key and outbox) among the next `max` online
    /// users after the key `after` (from the first when `None`), in key order, and the
    /// key to go on after, `None` at the end. Presence is announced a chunk at a time so
    /// the lock is never held for O(online users).
    pub fn recipients_after(
        &self,
        after: Option<&str>,
        max: usize,
    ) -> (Vec<(String, Outbox)>, Option<String>) {
        let inner = self.lock();
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut chunk = Vec::with_capacity(max.min(inner.online.len()));
        let mut last = None;
        for (key, _) in inner
            .online
            .range::<str, _>((start, Bound::Unbounded))
            .take(max.max(1))
        {
            last = Some(key);
            // Users of other servers are told by their own server.
            let Some(user) = inner.users.get(key) else {
                continue;
            };
            if let Some(outbox) = inner.conns.get(&user.conn) {
                chunk.push((key.clone(), outbox.clone()));
            }
        }
        let next = last
            .filter(|key| {
                inner
                    .online
                    .range::<str, _>((Bound::Excluded(key.as_str()), Bound::Unbounded))
                    .next()
                    .is_some()
            })
            .cloned();
        (chunk, next)
    }

    /// The registered name and peer address of an online user, here or on another
    /// server of the cluster.
    pub fn lookup(&self, key: &str) -> Option<(String, SocketAddr)> {
        let inner = self.lock();
        if let Some(remote) = inner.remote.get(key) {
            return Some((remote.name.clone(), remote.addr));
        }
        let user = inner.users.get(key)?;
        Some((user.name.clone(), user.addr?))
    }

    /// The registered name, peer address and outbox of a user online on this server
    /// (a user of another server of a cluster is not found: see `lookup_reach`).
    pub fn lookup_with_outbox(&self, key: &str) -> Option<(String, SocketAddr, Outbox)> {
        let inner = self.lock();
        let user = inner.users.get(key)?;
        let outbox = inner.conns.get(&user.conn)?.clone();
        Some((user.name.clone(), user.addr?, outbox))
    }

    /// Replaces the local addresses the user `key` reported (`HINTS`); false if the user
    /// is not logged in.
    pub fn set_hints(&self, key: &str, ips: Vec<IpAddr>) -> bool {
        let mut inner = self.lock();
        match inner.users.get_mut(key) {
            Some(user) => {
                user.hints = ips;
                true
            }
            None => false,
        }
    }

    /// An online user's address hints: each reported local address at the port it
    /// announced, without the address the server sees (which grant lines carry already).
    pub fn hints(&self, key: &str) -> Vec<SocketAddr> {
        let inner = self.lock();
        let Some(user) = inner.users.get(key) else {
            return Vec::new();
        };
        let Some(addr) = user.addr else {
            return Vec::new();
        };
        user.hints
            .iter()
            .map(|ip| SocketAddr::new(*ip, addr.port()))
            .filter(|hint| *hint != addr)
            .collect()
    }

    /// Like [`Registry::lookup`], with how to push an event to them.
    pub fn lookup_reach(&self, key: &str) -> Option<(String, SocketAddr, Reach)> {
        let inner = self.lock();
        if let Some(remote) = inner.remote.get(key) {
            let reach = Reach::Remote(remote.server.clone());
            return Some((remote.name.clone(), remote.addr, reach));
        }
        let user = inner.users.get(key)?;
        let outbox = inner.conns.get(&user.conn)?.clone();
        Some((user.name.clone(), user.addr?, Reach::Local(outbox)))
    }

    /// The outbox of the local connection logged in as `key`, if any (online or still
    /// giving its port).
    pub fn local_outbox(&self, key: &str) -> Option<Outbox> {
        let inner = self.lock();
        let user = inner.users.get(key)?;
        inner.conns.get(&user.conn).cloned()
    }

    /// The outbox of connection `id` if it still holds the login of `key`.
    pub fn holder_outbox(&self, key: &str, id: ConnId) -> Option<Outbox> {
        let inner = self.lock();
        let user = inner.users.get(key).filter(|u| u.conn == id)?;
        inner.conns.get(&user.conn).cloned()
    }

    /// Forgets the claim of connection `id` on `key` without announcing anything (the
    /// login was refused after the claim: another server holds it).
    pub fn unclaim(&self, key: &str, id: ConnId) {
        let mut inner = self.lock();
        if inner
            .users
            .get(key)
            .is_some_and(|u| u.conn == id && u.addr.is_none())
        {
            inner.users.remove(key);
            inner.owners.remove(&id);
        }
    }

    /// Every local login: (key, name, connection, address once online, account id),
    /// for the cluster's heartbeat.
    pub fn local_users(&self) -> Vec<(String, String, ConnId, Option<SocketAddr>, u64)> {
        let inner = self.lock();
        inner
            .users
            .iter()
            .map(|(key, u)| (key.clone(), u.name.clone(), u.conn, u.addr, u.uid))
            .collect()
    }

    /// Records that `key` (account `uid`) is online at `addr` on server `server` (cluster
    /// only). A user logged in here is left alone: this server knows better.
    pub fn set_remote(&self, key: &str, name: &str, addr: SocketAddr, server: &str, uid: u64) {
        let mut inner = self.lock();
        if inner.users.contains_key(key) {
            return;
        }
        let remote = Remote {
            name: name.to_string(),
            addr,
            server: server.to_string(),
            uid,
        };
        let known = inner.remote.insert(key.to_string(), remote).is_some();
        if !known {
            inner.note(key, name, true, false, None);
        }
    }

    /// Forgets that `key` is online on another server; only its entry from `server`
    /// when one is named (a stale "gone" from a server the user left must not hide
    /// them on the server they moved to).
    pub fn drop_remote(&self, key: &str, server: Option<&str>) {
        let mut inner = self.lock();
        let Some(remote) = inner.remote.get(key) else {
            return;
        };
        if server.is_some_and(|s| s != remote.server) {
            return;
        }
        if let Some(remote) = inner.remote.remove(key) {
            inner.note(key, &remote.name, false, false, None);
        }
    }

    /// The keys of the users mirrored from other servers, with their server.
    pub fn remote_users(&self) -> Vec<(String, String)> {
        let inner = self.lock();
        inner
            .remote
            .iter()
            .map(|(key, r)| (key.clone(), r.server.clone()))
            .collect()
    }

    /// Every live connection's outbox.
    pub fn all_outboxes(&self) -> Vec<Outbox> {
        self.lock().conns.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn users_of_other_servers_are_listed_looked_up_and_announced_but_not_republished() {
        let registry = Registry::default();
        registry.set_remote("bob", "Bob", addr(4000), "s1", 7);
        registry.set_remote("alice", "alice", addr(4001), "s2", 8);
        // Seen again by the scan: no second announcement.
        registry.set_remote("bob", "Bob", addr(4000), "s1", 7);
        let (page, total) = registry.online_page(0, 10);
        let names: Vec<&str> = page.iter().map(|u| u.name.as_str()).collect();
        assert_eq!((names, total), (vec!["alice", "Bob"], 2));
        // Their account ids (one database) are listed, not 0.
        let ids: Vec<u64> = page.iter().map(|u| u.id).collect();
        assert_eq!(ids, vec![8, 7]);
        assert_eq!(registry.lookup("bob"), Some(("Bob".into(), addr(4000))));
        assert!(matches!(
            registry.lookup_reach("bob"),
            Some((_, _, Reach::Remote(server))) if server == "s1"
        ));
        let batch = registry.take_presence();
        assert_eq!(batch.came.len(), 2);
        assert!(
            batch.local.is_empty(),
            "other servers publish their own users"
        );
        assert!(
            registry.recipients_after(None, 10).0.is_empty(),
            "their own servers tell them"
        );

        // A stale "gone" from a server bob left does not hide him.
        registry.drop_remote("bob", Some("s9"));
        assert!(registry.lookup("bob").is_some());
        registry.drop_remote("bob", Some("s1"));
        registry.drop_remote("alice", None);
        assert_eq!(registry.online_page(0, 10).1, 0);
        let batch = registry.take_presence();
        assert_eq!(batch.went.len(), 2);
        assert!(registry.remote_users().is_empty());
    }
}
