//! Replay protection for messages through the server (`\msg`, protocol.md §4d): what a
//! sealed message carries besides its text (a random message id and the sender's send
//! time, both inside the sealed and authenticated payload), and the recipient's record
//! of the ids it has seen, kept in its data folder so a re-delivery after a restart is
//! caught too.
//!
//! A server (or anyone who can write into its mailbox) cannot forge a message, but it
//! could hand the same sealed bytes over twice, or an old one much later; these checks
//! refuse both. Only the last [`SEEN_KEPT`] ids are remembered, so for each sender the
//! record also keeps the newest send time among that sender's ids it forgot (a floor):
//! a message of theirs dated at or before it is refused too, however many other
//! messages pushed its id out. It must not seal, open or render anything (`mail` does), and reads and
//! writes only its own file, `<data-dir>/<user>/seen-messages`.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::protocol::limits::MAILBOX_EXPIRY;

/// The first word of a payload that carries an id and a send time.
const TAG: &str = "peerchat-msg-2";

/// Ids remembered at most (the oldest are forgotten first). The server keeps at most
/// 100 messages per recipient for 7 days, so this spans far more than one expiry.
pub const SEEN_KEPT: usize = 10_000;

/// Clock difference between two clients that is still believed: a message may be dated
/// this far in the future, or this far past the mailbox expiry.
pub const CLOCK_SLACK: Duration = Duration::from_secs(3600);

/// Lines the file may hold before it is rewritten with only the ids remembered: appends
/// between rewrites keep the cost of one message small (rewriting `SEEN_KEPT` lines for
/// every message, once the record is full, let anyone who can send messages make the
/// recipient write about 600 KB per message), and the file stays bounded at this.
pub const SEEN_FILE_MAX_LINES: usize = 2 * SEEN_KEPT;

/// The file of seen ids inside the user's data folder.
pub const SEEN_FILE: &str = "seen-messages";

/// What stands for the id on a floor's line of the file: `<sender> * <sent-ms>`.
const FLOOR_MARK: &str = "*";

/// A new random message id, as 32 hex digits.
pub fn new_id() -> std::io::Result<String> {
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).map_err(|e| std::io::Error::other(format!("{e}")))?;
    Ok(id.iter().map(|b| format!("{b:02x}")).collect())
}

/// The payload to seal: `peerchat-msg-2 <id> <sent-ms>\n<text>`.
pub fn wrap(id: &str, sent_ms: u64, text: &str) -> Vec<u8> {
    format!("{TAG} {id} {sent_ms}\n{text}").into_bytes()
}

/// An opened payload: (id, send time in Unix ms, text), or why it is refused.
pub fn unwrap(payload: &[u8]) -> Result<(String, u64, Vec<u8>), String> {
    let no_id = || {
        "it carries no message id and send time (an older client, or a replay of one)".to_string()
    };
    let end = payload.iter().position(|&b| b == b'\n').ok_or_else(no_id)?;
    let head = std::str::from_utf8(&payload[..end]).map_err(|_| no_id())?;
    let mut words = head.split(' ');
    let (Some(TAG), Some(id), Some(sent), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return Err(no_id());
    };
    let hex = id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit());
    let sent: u64 = sent.parse().map_err(|_| no_id())?;
    if !hex {
        return Err(no_id());
    }
    Ok((id.to_ascii_lowercase(), sent, payload[end + 1..].to_vec()))
}

/// The ids of messages already shown, by (sender in lower case, id), with their send
/// times; loaded from and appended to `SEEN_FILE`.
pub struct Seen {
    /// The file (`None`: kept in memory only, when the folder cannot be written).
    path: Option<PathBuf>,
    /// Send time by (sender, id).
    ids: HashMap<(String, String), u64>,
    /// The same keys, oldest recorded first, to forget beyond `SEEN_KEPT`.
    order: VecDeque<(String, String)>,
    /// Per sender, the newest send time among their ids forgotten: nothing of theirs
    /// dated at or before it is shown. One entry per sender ever forgotten, dropped when
    /// it falls out of the expiry window (the age check covers it then).
    floors: HashMap<String, u64>,
    /// Lines in the file now (ids forgotten since the last rewrite included).
    file_lines: usize,
}

impl Seen {
    /// The record kept in `dir`; entries past the expiry window are dropped and the
    /// file rewritten without them (it stays bounded across restarts).
    pub fn open(dir: &Path, now_ms: u64) -> Seen {
        let path = dir.join(SEEN_FILE);
        let mut seen = Seen {
            path: Some(path.clone()),
            ids: HashMap::new(),
            order: VecDeque::new(),
            floors: HashMap::new(),
            file_lines: 0,
        };
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for line in text.lines() {
            let mut w = line.split(' ');
            if let (Some(from), Some(id), Some(sent)) = (w.next(), w.next(), w.next())
                && let Ok(sent) = sent.parse::<u64>()
                && !too_old(sent, now_ms)
            {
                if id == FLOOR_MARK {
                    seen.raise_floor(from, sent);
                } else {
                    seen.remember(from.to_string(), id.to_string(), sent);
                }
            }
        }
        seen.rewrite();
        seen
    }

    fn remember(&mut self, from: String, id: String, sent: u64) {
        let key = (from, id);
        if self.ids.insert(key.clone(), sent).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > SEEN_KEPT {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(sent) = self.ids.remove(&old) {
                self.raise_floor(&old.0, sent);
            }
        }
    }

    fn raise_floor(&mut self, from: &str, sent: u64) {
        let floor = self.floors.entry(from.to_string()).or_insert(sent);
        *floor = (*floor).max(sent);
        // Bounded like the ids: past that, the lowest floor goes (the one nearest to
        // falling out of the window, where the age check takes over). Each entry needs
        // a message really sealed by another account, so this is rare.
        if self.floors.len() > SEEN_KEPT
            && let Some(lowest) = self
                .floors
                .iter()
                .min_by_key(|(_, sent)| **sent)
                .map(|(from, _)| from.clone())
        {
            self.floors.remove(&lowest);
        }
    }

    fn rewrite(&mut self) {
        let Some(path) = &self.path else { return };
        let mut text = String::new();
        for (from, sent) in &self.floors {
            text.push_str(&format!("{from} {FLOOR_MARK} {sent}\n"));
        }
        for key in &self.order {
            if let Some(sent) = self.ids.get(key) {
                text.push_str(&format!("{} {} {sent}\n", key.0, key.1));
            }
        }
        let tmp = path.with_extension("tmp");
        let done = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path));
        self.file_lines = self.floors.len() + self.order.len();
        if let Err(e) = done {
            log::warn!(
                "cannot write {}: {e}; seen message ids are kept in memory only",
                path.display()
            );
            self.path = None;
        }
    }

    /// Checks message `id` from `from` sent at `sent_ms` and records it: `Err(why)` for
    /// one seen already, older than the mailbox keeps messages, or dated in the future.
    pub fn check(&mut self, from: &str, id: &str, sent_ms: u64, now_ms: u64) -> Result<(), String> {
        let key = (from.to_ascii_lowercase(), id.to_string());
        if self.ids.contains_key(&key) {
            return Err(format!(
                "it is a copy of a message already shown (message id {}…): delivered twice, a replay",
                &id[..8]
            ));
        }
        if self
            .floors
            .get(&key.0)
            .is_some_and(|&floor| sent_ms <= floor)
        {
            return Err(format!(
                "it is dated before a message from the same sender whose id was already forgotten (message id {}…): an old message replayed",
                &id[..8]
            ));
        }
        if too_old(sent_ms, now_ms) {
            return Err(format!(
                "it was sent more than {} days ago, longer than the server keeps messages: an old message replayed",
                MAILBOX_EXPIRY.as_secs() / 86_400
            ));
        }
        if sent_ms > now_ms + CLOCK_SLACK.as_millis() as u64 {
            return Err("it is dated in the future (its sender's clock, or a forgery)".into());
        }
        self.remember(key.0.clone(), key.1.clone(), sent_ms);
        if let Some(path) = &self.path {
            let line = format!("{} {} {sent_ms}\n", key.0, key.1);
            let written = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut f| f.write_all(line.as_bytes()));
            match written {
                Ok(()) => self.file_lines += 1,
                Err(e) => {
                    log::warn!("cannot record a seen message id in {}: {e}", path.display())
                }
            }
        }
        if self.file_lines >= SEEN_FILE_MAX_LINES + self.floors.len() {
            // Appends only grow the file: compact it to the ids still remembered. Floors
            // out of the expiry window are dropped then (the age check covers them).
            self.floors.retain(|_, sent| !too_old(*sent, now_ms));
            self.rewrite();
        }
        Ok(())
    }
}

/// Older than the mailbox keeps messages (with the clock slack).
fn too_old(sent_ms: u64, now_ms: u64) -> bool {
    let window = (MAILBOX_EXPIRY + CLOCK_SLACK).as_millis() as u64;
    sent_ms.saturating_add(window) < now_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_bad_ones_are_refused() {
        let id = new_id().unwrap();
        let p = wrap(&id, 1234, "hi\nthere");
        assert_eq!(unwrap(&p).unwrap(), (id, 1234, b"hi\nthere".to_vec()));
        assert!(unwrap(b"plain old text").is_err());
        assert!(unwrap(b"peerchat-msg-2 zz 1\nx").is_err());
        assert!(unwrap(b"peerchat-msg-2 00112233445566778899aabbccddeeff x\nx").is_err());
    }

    #[test]
    fn the_file_stays_bounded_old_ids_age_out_and_recent_ones_are_still_refused() {
        let dir = tempfile::tempdir().unwrap();
        let now = 10 * 24 * 3600 * 1000u64;
        let mut seen = Seen::open(dir.path(), now);
        let ids: Vec<String> = (0..SEEN_FILE_MAX_LINES + SEEN_KEPT / 2)
            .map(|i| format!("{i:032x}"))
            .collect();
        let lines = || {
            std::fs::read_to_string(dir.path().join(SEEN_FILE))
                .unwrap()
                .lines()
                .count()
        };
        // Each a millisecond after the one before, as one sender's messages are.
        let sent = |i: usize| now - 1_000_000 + i as u64;
        let mut most = 0;
        for (i, id) in ids.iter().enumerate() {
            seen.check("mallory", id, sent(i), now).unwrap();
            most = most.max(seen.file_lines);
            if i % 1000 == 999 {
                assert_eq!(lines(), seen.file_lines);
            }
        }
        // The ids, and the one floor of the one sender.
        assert!(
            most <= SEEN_FILE_MAX_LINES + 1,
            "the file grew to {most} lines"
        );
        assert_eq!(seen.ids.len(), SEEN_KEPT);
        assert_eq!(seen.floors.len(), 1);
        // The newest are refused as replays, and the oldest, forgotten, are refused by
        // the sender's floor.
        let first_kept = ids.len() - SEEN_KEPT;
        for (i, id) in ids.iter().enumerate().skip(first_kept) {
            assert!(seen.check("mallory", id, sent(i), now).is_err(), "{id}");
        }
        assert!(!seen.ids.contains_key(&("mallory".into(), ids[0].clone())));
        let why = seen.check("mallory", &ids[0], sent(0), now).unwrap_err();
        assert!(why.contains("forgotten"), "{why}");
        // After a restart the file holds exactly the ids remembered and the floor.
        let again = Seen::open(dir.path(), now);
        assert_eq!(lines(), SEEN_KEPT + 1);
        assert_eq!(again.floors, seen.floors);
        assert_eq!(again.ids, seen.ids);
    }

    #[test]
    fn duplicates_old_and_future_messages_are_refused_and_remembered_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let now = 10 * 24 * 3600 * 1000u64;
        let mut seen = Seen::open(dir.path(), now);
        let id = new_id().unwrap();
        assert!(seen.check("Alice", &id, now - 1000, now).is_ok());
        assert!(seen.check("alice", &id, now - 1000, now).is_err(), "twice");
        let old = now - MAILBOX_EXPIRY.as_millis() as u64 - 2 * 3600 * 1000;
        assert!(seen.check("alice", &new_id().unwrap(), old, now).is_err());
        let future = now + 2 * 3600 * 1000;
        assert!(
            seen.check("alice", &new_id().unwrap(), future, now)
                .is_err()
        );
        // After a restart the id is still known.
        let mut again = Seen::open(dir.path(), now + 1000);
        assert!(again.check("alice", &id, now - 1000, now + 1000).is_err());
        // Once past the expiry window it is forgotten, and refused as too old instead.
        let later = now + MAILBOX_EXPIRY.as_millis() as u64 + 2 * 3600 * 1000;
        let mut later_seen = Seen::open(dir.path(), later);
        assert!(later_seen.ids.is_empty());
        assert!(later_seen.check("alice", &id, now - 1000, later).is_err());
    }

    #[test]
    fn a_flood_from_someone_else_does_not_make_an_old_message_replayable() {
        let dir = tempfile::tempdir().unwrap();
        let now = 10 * 24 * 3600 * 1000u64;
        let mut seen = Seen::open(dir.path(), now);
        let old = new_id().unwrap();
        seen.check("alice", &old, now - 5000, now).unwrap();
        // Mallory pushes alice's id out of the record.
        for i in 0..SEEN_KEPT {
            seen.check("mallory", &format!("{i:032x}"), now - 1000, now)
                .unwrap();
        }
        assert!(!seen.ids.contains_key(&("alice".into(), old.clone())));
        let why = seen.check("alice", &old, now - 5000, now).unwrap_err();
        assert!(why.contains("forgotten"), "{why}");
        // Alice's new messages still pass; her floor is per sender, not everyone's.
        seen.check("alice", &new_id().unwrap(), now - 10, now)
            .unwrap();
        seen.check("bob", &new_id().unwrap(), now - 9000, now)
            .unwrap();
        // The floor survives a restart, before and after the file is compacted.
        let mut again = Seen::open(dir.path(), now);
        assert!(again.check("alice", &old, now - 5000, now).is_err());
        let text = std::fs::read_to_string(dir.path().join(SEEN_FILE)).unwrap();
        assert!(
            text.contains("alice * "),
            "the floor is in the compacted file"
        );
        let mut third = Seen::open(dir.path(), now);
        assert!(third.check("ALICE", &old, now - 5000, now).is_err());
    }
}
