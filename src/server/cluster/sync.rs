//! The two cluster threads: the subscriber (messages from the other servers, applied to
//! the registry and to local users' outboxes) and the heartbeat (renews this server's
//! `online:<user>` keys, and rescans everyone's to mirror the other servers' users,
//! which is how users of a server that died go offline here).
//!
//! Owns the timing of the cluster. Each thread has its own Redis connection (the
//! subscriber's is in pub/sub mode; the heartbeat borrows from the pool). Neither holds
//! a lock across Redis I/O, and both survive Redis outages by reconnecting at most once
//! per [`RETRY`]. It must not format client lines (messages carry them ready-made).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use redis::RedisResult;

use super::message::{Holder, Message, online_pattern, presence_channel, server_channel};
use super::{Cluster, HEARTBEAT, KEY_TTL};
use crate::server::Shared;

/// Stack for the cluster threads: short keys and messages, but the Redis client's reply
/// parser takes deep frames (see `server::CLUSTER_CONN_STACK`).
const STACK: usize = 1024 * 1024;

/// How often a blocked subscriber looks at the stop flag.
const POLL: Duration = Duration::from_millis(200);

/// Wait before reconnecting the subscriber after Redis failed.
const RETRY: Duration = Duration::from_secs(1);

/// Keys asked for in one `SCAN` step and one `MGET`, and commands in one pipeline.
pub(super) const BATCH: usize = 1000;

/// How long the scan leaves alone a user whose entry a presence message just changed:
/// the scan may have read Redis before the change was made there.
const GUARD: Duration = Duration::from_secs(2);

/// Starts both threads.
pub fn spawn(shared: &Arc<Shared>, stop: &Arc<AtomicBool>) -> std::io::Result<Vec<JoinHandle<()>>> {
    let (sub_shared, sub_stop) = (Arc::clone(shared), Arc::clone(stop));
    let subscriber = thread::Builder::new()
        .name("cluster-sub".into())
        .stack_size(STACK)
        .spawn(move || subscribe_loop(&sub_shared, &sub_stop))?;
    let (beat_shared, beat_stop) = (Arc::clone(shared), Arc::clone(stop));
    let heartbeat = thread::Builder::new()
        .name("cluster-beat".into())
        .stack_size(STACK)
        .spawn(move || heartbeat_loop(&beat_shared, &beat_stop))?;
    Ok(vec![subscriber, heartbeat])
}

fn subscribe_loop(shared: &Shared, stop: &AtomicBool) {
    let Some(cluster) = shared.cluster.as_ref() else {
        return;
    };
    let mut failing = false;
    while !stop.load(Ordering::SeqCst) {
        match subscribe(shared, cluster, stop, &mut failing) {
            Ok(()) => return,
            Err(e) => {
                if !failing {
                    log::error!("cluster: subscription lost ({e}); retrying every {RETRY:?}");
                    failing = true;
                }
                thread::sleep(RETRY);
            }
        }
    }
}

/// Subscribes and applies messages until `stop` (Ok) or a Redis failure (Err).
fn subscribe(
    shared: &Shared,
    cluster: &Cluster,
    stop: &AtomicBool,
    failing: &mut bool,
) -> RedisResult<()> {
    let mut conn = cluster
        .client
        .get_connection_with_timeout(super::CONNECT_TIMEOUT)?;
    conn.set_write_timeout(Some(super::IO_TIMEOUT))?;
    let mut pubsub = conn.as_pubsub();
    pubsub.subscribe(&[server_channel(&cluster.id), presence_channel()])?;
    pubsub.set_read_timeout(Some(POLL))?;
    if std::mem::take(failing) {
        log::info!("cluster: subscribed again");
    } else {
        log::info!("cluster: server {} subscribed", cluster.id);
    }
    while !stop.load(Ordering::SeqCst) {
        match pubsub.get_message() {
            Ok(msg) => match std::str::from_utf8(msg.get_payload_bytes())
                .ok()
                .and_then(Message::parse)
            {
                Some(message) => apply(shared, cluster, message),
                None => log::warn!(
                    "cluster: dropped a message on {} that is not ours",
                    msg.get_channel_name()
                ),
            },
            Err(e) if e.is_timeout() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Applies one message from another server.
fn apply(shared: &Shared, cluster: &Cluster, message: Message) {
    match message {
        Message::Deliver { key, lines } => match shared.registry.local_outbox(&key) {
            Some(outbox) => {
                outbox.send_wire(lines);
            }
            None => log::debug!("cluster: {key} left before a delivery"),
        },
        Message::Mail { key, id, lines } => {
            super::super::mailbox::deliver_from_cluster(shared, &key, id, lines)
        }
        Message::Kick { key } => {
            if let Some(outbox) = shared.registry.local_outbox(&key) {
                log::info!("cluster: {key} resumed on another server; closing it here");
                outbox.kill();
            }
        }
        Message::Presence { from, notes } => {
            if from == cluster.id {
                return;
            }
            for note in notes {
                cluster.touch(&note.key);
                match note.addr {
                    Some(addr) => shared
                        .registry
                        .set_remote(&note.key, &note.name, addr, &from, note.uid),
                    None => shared.registry.drop_remote(&note.key, Some(&from)),
                }
            }
        }
    }
}

fn heartbeat_loop(shared: &Shared, stop: &AtomicBool) {
    let Some(cluster) = shared.cluster.as_ref() else {
        return;
    };
    let mut last = Instant::now() - HEARTBEAT;
    while !stop.load(Ordering::SeqCst) {
        thread::sleep(POLL.min(HEARTBEAT));
        if last.elapsed() < HEARTBEAT {
            continue;
        }
        last = Instant::now();
        renew(shared, cluster);
        if let Ok(seen) = scan(cluster) {
            mirror(shared, cluster, &seen);
        }
    }
}

/// Renews a login key unless another server holds it (then returns that holder and
/// leaves it): KEYS[1] the key, ARGV[1] `"<this server id> "`, ARGV[2] the value,
/// ARGV[3] its life in ms. One script, so no other server's write lands between the
/// check and the renewal.
const RENEW: &str = "local v = redis.call('GET', KEYS[1]) \
    if v and string.sub(v, 1, string.len(ARGV[1])) ~= ARGV[1] then return v end \
    redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) return false";

/// Renews the key of every local login. A key found held by another server means a
/// newer login (a resume there) took the account and its message to us was lost: the
/// connection here is cut, as the message would have done, and the key is left alone.
fn renew(shared: &Shared, cluster: &Cluster) {
    let users = shared.registry.local_users();
    for chunk in users.chunks(BATCH) {
        let olds = cluster.with_conn(|c| {
            let mut pipe = redis::pipe();
            for (key, name, conn, addr, uid) in chunk {
                let holder = Holder {
                    server: cluster.id.clone(),
                    conn: *conn,
                    name: name.clone(),
                    addr: *addr,
                    uid: *uid,
                };
                pipe.cmd("EVAL")
                    .arg(RENEW)
                    .arg(1)
                    .arg(super::message::online_key(key))
                    .arg(format!("{} ", cluster.id))
                    .arg(holder.to_value())
                    .arg(KEY_TTL.as_millis() as u64);
            }
            // The users' file lists live as long as their logins.
            for (key, ..) in chunk {
                pipe.cmd("PEXPIRE")
                    .arg(super::message::files_key(key))
                    .arg(KEY_TTL.as_millis() as u64)
                    .ignore();
            }
            pipe.query::<Vec<Option<String>>>(c)
        });
        let Ok(olds) = olds else {
            return;
        };
        for ((key, _, conn, addr, _), other) in chunk.iter().zip(olds) {
            let lost = other
                .as_deref()
                .and_then(Holder::parse)
                .is_some_and(|h| h.server != cluster.id);
            // A login still giving its port may be one being refused right now (its
            // claim found the key elsewhere): the login decides, not the heartbeat.
            if lost
                && addr.is_some()
                && let Some(outbox) = shared.registry.holder_outbox(key, *conn)
            {
                log::info!("cluster: {key} is held by another server now; closing it here");
                outbox.kill();
            }
        }
    }
}

/// Every online user of the other servers, by key, as Redis has them now.
fn scan(cluster: &Cluster) -> RedisResult<HashMap<String, Holder>> {
    let pattern = online_pattern();
    let prefix_len = pattern.len() - 1;
    let mut keys = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, found): (u64, Vec<String>) = cluster.with_conn(|c| {
            redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(BATCH)
                .query(c)
        })?;
        keys.extend(found);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    keys.sort();
    keys.dedup();
    let mut seen = HashMap::new();
    for chunk in keys.chunks(BATCH) {
        let values: Vec<Option<String>> =
            cluster.with_conn(|c| redis::cmd("MGET").arg(chunk).query(c))?;
        for (key, value) in chunk.iter().zip(values) {
            let Some(holder) = value.as_deref().and_then(Holder::parse) else {
                continue;
            };
            if holder.server != cluster.id && holder.addr.is_some() {
                seen.insert(key[prefix_len..].to_string(), holder);
            }
        }
    }
    Ok(seen)
}

/// Brings the mirror of the other servers' users in line with a scan, leaving alone the
/// users a presence message changed a moment ago.
fn mirror(shared: &Shared, cluster: &Cluster, seen: &HashMap<String, Holder>) {
    for (key, holder) in seen {
        if let Some(addr) = holder.addr
            && !cluster.recently_touched(key, GUARD)
        {
            shared
                .registry
                .set_remote(key, &holder.name, addr, &holder.server, holder.uid);
        }
    }
    for (key, _server) in shared.registry.remote_users() {
        if !seen.contains_key(&key) && !cluster.recently_touched(&key, GUARD) {
            log::info!("cluster: {key}'s key expired or went; offline here too");
            shared.registry.drop_remote(&key, None);
        }
    }
}
