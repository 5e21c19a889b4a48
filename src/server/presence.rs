//! Presence announcements (protocol.md §5): every interval, one `EVENT ONLINE` line
//! naming who came and one `EVENT OFFLINE` line naming who went, to every online user.
//!
//! Owns turning the registry's batch of changes into event lines and queueing them. A
//! login or logout only notes a change in the registry (O(1)); the O(online users) cost
//! of telling everyone is paid once per interval, however many logins it holds. When
//! more users came or went in one interval than a line can name, everyone gets
//! `EVENT PRESENCE <came> <went>` instead. The recipients are taken and told
//! [`CHUNK`] at a time with a short pause between chunks, so an announcement to 10,000
//! users never makes thousands of writer threads runnable at once (a command arriving
//! meanwhile would wait for all of them) nor holds the registry lock for long. In a
//! cluster the batch also names the users
//! of other servers who came and went (the registry mirrors them), and the changes of
//! this server's own users are published to the others once per interval. It must not hold the registry lock while
//! queueing (it works on the copy `take_presence` returns).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::Shared;
use super::cluster::message::PresenceNote;
use super::registry::{PresenceBatch, Registry};
use crate::protocol::limits::{MAX_PRESENCE_NAMES, PRESENCE_FANOUT, PRESENCE_INTERVAL};
use crate::protocol::server_msg::{Event, ServerMsg};

/// Stack for the announcer thread: it only formats lines.
const STACK: usize = 128 * 1024;

/// How often the waiting announcer looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(100);

/// Recipients told at once: each wakes one writer thread.
const CHUNK: usize = 250;

/// The pause between two chunks: 10,000 recipients take 40 chunks, 0.4 s, well within
/// the interval (5 s at 10,000 online), and at most 250 writers wake at once.
const PACE: Duration = Duration::from_millis(10);

/// Starts the thread that announces presence changes every [`interval`] until `stop` is
/// set.
pub fn spawn(shared: Arc<Shared>, stop: Arc<AtomicBool>) -> std::io::Result<JoinHandle<()>> {
    thread::Builder::new()
        .name("presence".into())
        .stack_size(STACK)
        .spawn(move || {
            let mut last = Instant::now();
            while !stop.load(Ordering::SeqCst) {
                thread::sleep(STOP_POLL);
                if last.elapsed() < interval(shared.registry.online_count()) {
                    continue;
                }
                last = Instant::now();
                let batch = shared.registry.take_presence();
                if let Some(cluster) = &shared.cluster {
                    cluster.publish_presence(notes(&batch));
                }
                announce(&shared.registry, &batch);
            }
        })
}

/// The time between announcements with `online` users: [`PRESENCE_INTERVAL`], or longer
/// so that no more than [`PRESENCE_FANOUT`] lines a second are queued.
pub fn interval(online: usize) -> Duration {
    let spread = Duration::from_millis((online as u64 * 1000) / PRESENCE_FANOUT as u64);
    spread.max(PRESENCE_INTERVAL)
}

/// The changes of this server's own users, for the other servers of a cluster.
fn notes(batch: &PresenceBatch) -> Vec<PresenceNote> {
    batch
        .local
        .iter()
        .map(|(key, name, addr, uid)| PresenceNote {
            key: key.clone(),
            name: name.clone(),
            addr: *addr,
            uid: *uid,
        })
        .collect()
}

/// The lines for one batch, leaving out `skip` (a user is not told about themselves).
fn lines(batch: &PresenceBatch, skip: Option<&str>) -> String {
    let names = |list: &[(String, String)]| -> Vec<String> {
        list.iter()
            .filter(|(key, _)| Some(key.as_str()) != skip)
            .map(|(_, name)| name.clone())
            .collect()
    };
    let (came, went) = (names(&batch.came), names(&batch.went));
    let mut out = String::new();
    if came.len() > MAX_PRESENCE_NAMES || went.len() > MAX_PRESENCE_NAMES {
        let counts = Event::Presence {
            came: came.len(),
            went: went.len(),
        };
        return ServerMsg::Event(counts).to_wire();
    }
    if !came.is_empty() {
        out.push_str(&ServerMsg::Event(Event::Online { users: came }).to_wire());
    }
    if !went.is_empty() {
        out.push_str(&ServerMsg::Event(Event::Offline { users: went }).to_wire());
    }
    out
}

/// Queues one batch's lines for every online user of this server, [`CHUNK`] at a time.
/// The common text is formatted once; only users named in the batch get their own copy
/// without their name. A user who logs in during the announcement may get it too, which
/// only repeats what their `LIST` shows.
fn announce(registry: &Registry, batch: &PresenceBatch) {
    if batch.came.is_empty() && batch.went.is_empty() {
        return;
    }
    let common = lines(batch, None);
    let named: HashSet<&str> = batch
        .came
        .iter()
        .chain(&batch.went)
        .map(|(key, _)| key.as_str())
        .collect();
    let mut after: Option<String> = None;
    loop {
        let (chunk, next) = registry.recipients_after(after.as_deref(), CHUNK);
        for (key, outbox) in &chunk {
            if named.contains(key.as_str()) {
                let own = lines(batch, Some(key));
                if !own.is_empty() {
                    outbox.send_wire(own);
                }
            } else {
                outbox.send_wire(common.clone());
            }
        }
        match next {
            Some(key) => after = Some(key),
            None => return,
        }
        thread::sleep(PACE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(came: &[&str], went: &[&str]) -> PresenceBatch {
        let pairs = |names: &[&str]| {
            names
                .iter()
                .map(|n| (n.to_ascii_lowercase(), n.to_string()))
                .collect()
        };
        PresenceBatch {
            came: pairs(came),
            went: pairs(went),
            local: Vec::new(),
        }
    }

    #[test]
    fn one_line_names_who_came_and_one_who_went() {
        let b = batch(&["Bob", "carol"], &["dave"]);
        assert_eq!(
            lines(&b, None),
            "EVENT ONLINE Bob carol\nEVENT OFFLINE dave\n"
        );
        // Bob is not told about himself.
        assert_eq!(
            lines(&b, Some("bob")),
            "EVENT ONLINE carol\nEVENT OFFLINE dave\n"
        );
        assert_eq!(lines(&batch(&["bob"], &[]), Some("bob")), "");
    }

    #[test]
    fn the_interval_grows_past_a_thousand_online() {
        assert_eq!(interval(10), PRESENCE_INTERVAL);
        assert_eq!(interval(1000), Duration::from_millis(500));
        assert_eq!(interval(10_000), Duration::from_secs(5));
    }

    #[test]
    fn too_many_names_become_counts() {
        let many: Vec<String> = (0..=MAX_PRESENCE_NAMES)
            .map(|i| format!("u{i:04}"))
            .collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(
            lines(&batch(&refs, &["dave"]), None),
            format!("EVENT PRESENCE {} 1\n", MAX_PRESENCE_NAMES + 1)
        );
        // The longest named line still fits a line.
        let most = &refs[..MAX_PRESENCE_NAMES];
        let long: Vec<String> = most.iter().map(|_| "x".repeat(32)).collect();
        let long_refs: Vec<&str> = long.iter().map(String::as_str).collect();
        let text = lines(&batch(&long_refs, &[]), None);
        assert!(
            text.len() <= crate::protocol::limits::MAX_LINE,
            "{}",
            text.len()
        );
    }
}
