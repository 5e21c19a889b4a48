//! Who is connected and who is online: the server's only shared in-memory state.
//!
//! Owns the table of connections and of logged-in users behind one mutex, the sorted set
//! of online users that `LIST` pages through, and the presence changes not yet announced
//! (`server::presence` takes them every interval). Every method locks, copies what it
//! needs, and unlocks before returning; callers do all I/O (socket writes, SQLite,
//! bcrypt) with the lock released. No method costs O(online users) except the ones
//! that copy a page or the recipients of one presence announcement.
//!
//! Lock order: the registry lock is a leaf. Nothing else is locked while it is held, and
//! it is never held while calling the store or sending on a channel that could block
//! (`Outbox::send` never blocks, and it is still only called after unlocking).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
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

/// A user whose presence changed since the last announcement. Only the state at the end
/// of the interval is announced, but a change is never dropped: someone may have seen
/// the state in between (in `LIST`), so a user who came and went is announced as gone.
struct Change {
    /// The name as registered.
    name: String,
    /// Online now.
    online: bool,
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
}

impl Inner {
    /// Notes that `key` came online or went offline.
    fn note(&mut self, key: &str, name: &str, online: bool) {
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

/// The presence changes of one interval and whom to tell.
#[derive(Default)]
pub struct PresenceBatch {
    /// Users who came online (names as registered, sorted by lower-case name).
    pub came: Vec<(String, String)>,
    /// Users who went offline.
    pub went: Vec<(String, String)>,
    /// Every online user's key and outbox.
    pub recipients: Vec<(String, Outbox)>,
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
        inner.note(&key, &user.name, false);
        Some(user.name)
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
                inner.note(key, &old.name, false);
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
    pub fn set_online(&self, key: &str, id: ConnId, addr: SocketAddr, uid: u64) {
        let mut inner = self.lock();
        let Some(user) = inner.users.get_mut(key).filter(|u| u.conn == id) else {
            return;
        };
        user.addr = Some(addr);
        user.uid = uid;
        let name = user.name.clone();
        inner.note(key, &name, true);
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
                id: inner.users.get(key).map_or(0, |u| u.uid),
            })
            .collect();
        (page, inner.online.len())
    }

    /// Takes the presence changes since the last call (each user as online or offline
    /// at the end of the interval), with the online users to tell. Empty when nothing
    /// changed (and then no recipients are copied).
    pub fn take_presence(&self) -> PresenceBatch {
        let mut inner = self.lock();
        if inner.changes.is_empty() {
            return PresenceBatch::default();
        }
        let mut batch = PresenceBatch::default();
        for (key, change) in std::mem::take(&mut inner.changes) {
            match change.online {
                true => batch.came.push((key, change.name)),
                false => batch.went.push((key, change.name)),
            }
        }
        batch.came.sort();
        batch.went.sort();
        batch.recipients = inner
            .online
            .keys()
            .filter_map(|key| {
                let user = inner.users.get(key)?;
                Some((key.clone(), inner.conns.get(&user.conn)?.clone()))
            })
            .collect();
        batch
    }

    /// The registered name and peer address of an online user.
    pub fn lookup(&self, key: &str) -> Option<(String, SocketAddr)> {
        let inner = self.lock();
        let user = inner.users.get(key)?;
        Some((user.name.clone(), user.addr?))
    }

    /// Like [`Registry::lookup`], with the user's outbox to push an event to them.
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

    /// Every live connection's outbox.
    pub fn all_outboxes(&self) -> Vec<Outbox> {
        self.lock().conns.values().cloned().collect()
    }
}
