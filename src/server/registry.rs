//! Who is connected and who is online: the server's only shared in-memory state.
//!
//! Owns the table of connections and of logged-in users behind one mutex. Every method
//! locks, copies what it needs, and unlocks before returning; callers do all I/O (socket
//! writes, SQLite, bcrypt) with the lock released.
//!
//! Lock order: the registry lock is a leaf. Nothing else is locked while it is held, and
//! it is never held while calling the store or sending on a channel that could block
//! (`Outbox::send` never blocks, and it is still only called after unlocking).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};

use super::outbox::Outbox;

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
}

#[derive(Default)]
struct Inner {
    /// Every live connection, logged in or not, to reach it at shutdown.
    conns: HashMap<ConnId, Outbox>,
    /// Logged-in users by lower-case name.
    users: HashMap<String, User>,
}

/// The shared registry.
#[derive(Default)]
pub struct Registry {
    inner: Mutex<Inner>,
}

/// Why a login could not be claimed.
#[derive(Debug, PartialEq, Eq)]
pub struct AlreadyOnline;

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

    /// Records a new connection.
    pub fn add_connection(&self, id: ConnId, outbox: Outbox) {
        self.lock().conns.insert(id, outbox);
    }

    /// Forgets a connection and its login. If its user was online, returns the name and
    /// everyone else's outbox, to tell them.
    pub fn remove_connection(&self, id: ConnId) -> Option<(String, Vec<Outbox>)> {
        let mut inner = self.lock();
        inner.conns.remove(&id);
        let key = inner
            .users
            .iter()
            .find(|(_, user)| user.conn == id)
            .map(|(key, _)| key.clone())?;
        let user = inner.users.remove(&key)?;
        user.addr?;
        Some((user.name, others(&inner, id)))
    }

    /// Reserves `name` for connection `id` so that no second login can take it.
    pub fn claim(&self, key: &str, name: &str, id: ConnId) -> Result<(), AlreadyOnline> {
        let mut inner = self.lock();
        if inner.users.contains_key(key) {
            return Err(AlreadyOnline);
        }
        inner.users.insert(
            key.to_string(),
            User {
                name: name.to_string(),
                conn: id,
                addr: None,
            },
        );
        Ok(())
    }

    /// Marks the claimed user online at `addr`; returns everyone else's outbox to announce
    /// it to.
    pub fn set_online(&self, key: &str, addr: SocketAddr) -> Vec<Outbox> {
        let mut inner = self.lock();
        let Some(user) = inner.users.get_mut(key) else {
            return Vec::new();
        };
        user.addr = Some(addr);
        let id = user.conn;
        others(&inner, id)
    }

    /// The names of the users online, sorted case-insensitively.
    pub fn online_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .lock()
            .users
            .values()
            .filter(|u| u.addr.is_some())
            .map(|u| u.name.clone())
            .collect();
        names.sort_by_cached_key(|n| n.to_ascii_lowercase());
        names
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

    /// Every live connection's outbox.
    pub fn all_outboxes(&self) -> Vec<Outbox> {
        self.lock().conns.values().cloned().collect()
    }
}

/// The outboxes of the online users other than connection `id`.
fn others(inner: &Inner, id: ConnId) -> Vec<Outbox> {
    inner
        .users
        .values()
        .filter(|u| u.conn != id && u.addr.is_some())
        .filter_map(|u| inner.conns.get(&u.conn).cloned())
        .collect()
}
