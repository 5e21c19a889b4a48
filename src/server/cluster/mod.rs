//! Presence and delivery across the servers of one cluster (`--cluster redis://…`), on
//! Redis: `online:<user>` keys that expire unless the holding server's heartbeat renews
//! them, one pub/sub channel per server for what must reach its users, and one channel
//! for presence changes. See docs/cluster.md.
//!
//! Owns the Redis connections and every Redis command the server sends. It uses the
//! `redis` crate's synchronous API: no async runtime anywhere. Connections come from a
//! small pool whose lock is held only to pop or push one, never across Redis I/O; each
//! command has a short timeout. When Redis is unreachable the server keeps serving its
//! own users: every operation here fails soft (logged once per outage), and after a
//! failure the pool waits [`RETRY_AFTER`] before trying again, so logins do not each pay
//! a connection timeout. It must not hold the registry lock (it calls its methods) nor
//! touch the database.

pub mod message;
pub mod search;
mod sync;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redis::{Client, Connection, RedisResult};

use super::Shared;
use super::registry::ConnId;
use crate::error::{Error, Result};
use crate::protocol::server_msg::{FileEntry, SharedFile};
use message::{
    Holder, Message, PresenceNote, files_key, online_key, presence_channel, server_channel,
};

/// How often a server renews the keys of its users and rescans the others'.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// How long an `online:<user>` key lives without renewal: a server that stops renewing
/// (killed, cut off) has its users taken offline everywhere within this, plus one
/// [`HEARTBEAT`] for the others' scan and one presence interval to announce it.
pub const KEY_TTL: Duration = Duration::from_secs(3);

/// Longest wait for a connection to Redis.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Longest wait for one Redis reply.
const IO_TIMEOUT: Duration = Duration::from_secs(1);

/// After Redis failed, how long operations skip it instead of each waiting for it.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Idle Redis connections kept for command handlers.
const MAX_IDLE: usize = 8;

/// What a claim on a login found in the cluster.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// Nobody else holds it (or Redis could not tell: local rules apply).
    Free,
    /// Another server holds it.
    Elsewhere,
}

/// This server's membership of a cluster.
pub struct Cluster {
    /// This server's id: random per run, so a restarted server never mistakes the keys of
    /// its previous run for its own.
    pub id: String,
    /// The Redis client (only an address: connections are made from it).
    client: Client,
    /// Connections not in use.
    idle: Mutex<Vec<Connection>>,
    /// Milliseconds since `started` until which Redis is skipped after a failure (0: try).
    down_until_ms: AtomicU64,
    /// Whether the last outage was logged (so an outage logs once, and recovery once).
    down: AtomicBool,
    /// The clock `down_until_ms` counts from.
    started: Instant,
    /// When each user's mirror entry was last changed by a presence message; the scan
    /// leaves such users alone for a moment (it may have read Redis before the change).
    touched: Mutex<std::collections::HashMap<String, Instant>>,
}

impl Cluster {
    /// Checks the URL and that Redis answers; the server refuses to start otherwise
    /// (a cluster flag that silently did nothing would split the service).
    pub fn connect(url: &str) -> Result<Cluster> {
        let client =
            Client::open(url).map_err(|e| Error::Config(format!("--cluster {url}: {e}")))?;
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).map_err(|e| Error::Config(format!("no randomness: {e}")))?;
        let id: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let cluster = Cluster {
            id,
            client,
            idle: Mutex::new(Vec::new()),
            down_until_ms: AtomicU64::new(0),
            down: AtomicBool::new(false),
            started: Instant::now(),
            touched: Mutex::new(std::collections::HashMap::new()),
        };
        cluster
            .with_conn(|c| redis::cmd("PING").query::<String>(c))
            .map_err(|e| Error::Config(format!("--cluster {url}: Redis does not answer: {e}")))?;
        Ok(cluster)
    }

    /// Starts the subscriber and heartbeat threads; they stop when `stop` is set.
    pub fn spawn(shared: &Arc<Shared>, stop: &Arc<AtomicBool>) -> Result<Vec<JoinHandle<()>>> {
        sync::spawn(shared, stop).map_err(Error::Io)
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Runs `f` on a pooled connection (the pool lock is not held while it runs). A
    /// connection that failed is dropped, and Redis is skipped for [`RETRY_AFTER`].
    fn with_conn<T>(&self, f: impl FnOnce(&mut Connection) -> RedisResult<T>) -> RedisResult<T> {
        if self.now_ms() < self.down_until_ms.load(Ordering::SeqCst) {
            return Err(redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "Redis failed a moment ago; not retried yet",
            )));
        }
        let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut conn = match pooled {
            Some(conn) => conn,
            None => match self.open() {
                Ok(conn) => conn,
                Err(e) => return Err(self.failed(e)),
            },
        };
        match f(&mut conn) {
            Ok(value) => {
                let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
                if idle.len() < MAX_IDLE {
                    idle.push(conn);
                }
                drop(idle);
                if self.down.swap(false, Ordering::SeqCst) {
                    log::info!("cluster: Redis answers again");
                }
                Ok(value)
            }
            Err(e) => Err(self.failed(e)),
        }
    }

    /// A new connection with this module's timeouts.
    fn open(&self) -> RedisResult<Connection> {
        let conn = self.client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
        conn.set_read_timeout(Some(IO_TIMEOUT))?;
        conn.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(conn)
    }

    fn failed(&self, e: redis::RedisError) -> redis::RedisError {
        self.down_until_ms.store(
            self.now_ms() + RETRY_AFTER.as_millis() as u64,
            Ordering::SeqCst,
        );
        if !self.down.swap(true, Ordering::SeqCst) {
            log::error!("cluster: Redis failed ({e}); serving local users only until it answers");
        }
        e
    }

    /// Claims the login of `key` for connection `conn` here, unless another server
    /// holds it. A claim left by this server's own earlier connection is taken over.
    pub fn claim(&self, key: &str, name: &str, conn: ConnId) -> Claim {
        let holder = Holder {
            server: self.id.clone(),
            conn,
            name: name.to_string(),
            addr: None,
            uid: 0,
        };
        let redis_key = online_key(key);
        let claimed = self.with_conn(|c| {
            let set: Option<String> = redis::cmd("SET")
                .arg(&redis_key)
                .arg(holder.to_value())
                .arg("NX")
                .arg("PX")
                .arg(KEY_TTL.as_millis() as u64)
                .query(c)?;
            if set.is_some() {
                return Ok(None);
            }
            redis::cmd("GET").arg(&redis_key).query::<Option<String>>(c)
        });
        match claimed {
            Ok(None) => Claim::Free,
            Ok(Some(value)) => match Holder::parse(&value) {
                Some(other) if other.server != self.id => Claim::Elsewhere,
                // Ours (a connection of this server that is gone or going): take it.
                _ => {
                    self.hold(key, &holder);
                    Claim::Free
                }
            },
            Err(_) => Claim::Free,
        }
    }

    /// Takes the login of `key` for connection `conn` whoever holds it (a resumed
    /// login); the server that held it elsewhere is told to cut its connection.
    pub fn take_over(&self, key: &str, name: &str, conn: ConnId) {
        let holder = Holder {
            server: self.id.clone(),
            conn,
            name: name.to_string(),
            addr: None,
            uid: 0,
        };
        let redis_key = online_key(key);
        let old = self.with_conn(|c| {
            redis::cmd("SET")
                .arg(&redis_key)
                .arg(holder.to_value())
                .arg("PX")
                .arg(KEY_TTL.as_millis() as u64)
                .arg("GET")
                .query::<Option<String>>(c)
        });
        if let Ok(Some(old)) = old
            && let Some(old) = Holder::parse(&old)
            && old.server != self.id
        {
            log::info!(
                "cluster: {name} resumed here; server {} cuts its login",
                old.server
            );
            let kick = Message::Kick {
                key: key.to_string(),
            };
            self.publish(&server_channel(&old.server), &kick);
        }
    }

    /// Writes that `key` (account `uid`), held by `conn` here, is online at `addr` (the
    /// heartbeat renews it).
    pub fn online(&self, key: &str, name: &str, conn: ConnId, addr: SocketAddr, uid: u64) {
        let holder = Holder {
            server: self.id.clone(),
            conn,
            name: name.to_string(),
            addr: Some(addr),
            uid,
        };
        self.hold(key, &holder);
    }

    fn hold(&self, key: &str, holder: &Holder) {
        let _ = self.with_conn(|c| {
            redis::cmd("SET")
                .arg(online_key(key))
                .arg(holder.to_value())
                .arg("PX")
                .arg(KEY_TTL.as_millis() as u64)
                .exec(c)
        });
    }

    /// Deletes the key of `key` if connection `conn` here still holds it (after a
    /// take-over, another server's key must stay).
    pub fn release(&self, key: &str, conn: ConnId) {
        let redis_key = online_key(key);
        let _ = self.with_conn(|c| {
            let value: Option<String> = redis::cmd("GET").arg(&redis_key).query(c)?;
            let ours = value
                .as_deref()
                .and_then(Holder::parse)
                .is_some_and(|h| h.server == self.id && h.conn == conn);
            if ours {
                redis::cmd("DEL")
                    .arg(&redis_key)
                    .arg(files_key(key))
                    .exec(c)?;
            }
            Ok(())
        });
    }

    /// Stores the files local user `key` shares, for `FILES` on the other servers; the
    /// list lives as long as the user's login key (the heartbeat renews both).
    pub fn share_files(&self, key: &str, files: &[FileEntry]) {
        let text: String = files
            .iter()
            .map(|f| format!("{} {}\n", f.size, f.name))
            .collect();
        let _ = self.with_conn(|c| {
            redis::cmd("SET")
                .arg(files_key(key))
                .arg(text)
                .arg("PX")
                .arg(KEY_TTL.as_millis() as u64)
                .exec(c)
        });
    }

    /// The files user `key` (named `name`) shares on another server; empty when they
    /// share none or Redis cannot tell.
    pub fn remote_files(&self, key: &str, name: &str) -> Vec<FileEntry> {
        let text = self.with_conn(|c| {
            redis::cmd("GET")
                .arg(files_key(key))
                .query::<Option<String>>(c)
        });
        let Ok(Some(text)) = text else {
            return Vec::new();
        };
        text.lines()
            .filter_map(|line| SharedFile::parse(line).ok())
            .map(|f| FileEntry {
                user: name.to_string(),
                size: f.size,
                name: f.name,
            })
            .collect()
    }

    /// Sends `lines` (complete wire lines) to user `key` on server `server`. False when
    /// that server did not hear it (gone, or Redis down): the user is not reachable.
    pub fn deliver(&self, server: &str, key: &str, lines: String) -> bool {
        let message = Message::Deliver {
            key: key.to_string(),
            lines,
        };
        self.publish(&server_channel(server), &message)
    }

    /// Sends the `EVENT MESSAGE` line of message `id` (kept in the database) to user `key`
    /// on server `server`, which delivers it if it takes the row out (see
    /// [`Message::Mail`]). False when that server did not hear it: the row stays for the
    /// recipient's next login.
    pub fn deliver_mail(&self, server: &str, key: &str, id: u64, lines: String) -> bool {
        let message = Message::Mail {
            key: key.to_string(),
            id,
            lines,
        };
        self.publish(&server_channel(server), &message)
    }

    /// Tells the other servers who came and went here.
    pub fn publish_presence(&self, notes: Vec<PresenceNote>) {
        if notes.is_empty() {
            return;
        }
        let message = Message::Presence {
            from: self.id.clone(),
            notes,
        };
        self.publish(&presence_channel(), &message);
    }

    /// Publishes `message` on `channel`; true if at least one server heard it.
    fn publish(&self, channel: &str, message: &Message) -> bool {
        let text = message.to_text();
        match self.with_conn(|c| {
            redis::cmd("PUBLISH")
                .arg(channel)
                .arg(&text)
                .query::<u64>(c)
        }) {
            Ok(heard) => heard > 0,
            Err(_) => false,
        }
    }

    /// Notes that a presence message just changed `key`'s mirror entry.
    fn touch(&self, key: &str) {
        let mut touched = self.touched.lock().unwrap_or_else(|p| p.into_inner());
        touched.insert(key.to_string(), Instant::now());
    }

    /// True if a presence message changed `key` within `window` (the scan then leaves
    /// it alone). Old entries are forgotten as they are met.
    fn recently_touched(&self, key: &str, window: Duration) -> bool {
        let mut touched = self.touched.lock().unwrap_or_else(|p| p.into_inner());
        match touched.get(key) {
            Some(at) if at.elapsed() < window => true,
            Some(_) => {
                touched.remove(key);
                false
            }
            None => false,
        }
    }
}
