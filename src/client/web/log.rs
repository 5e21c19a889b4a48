//! The web front end's event log: every event with an id that rises by one, kept for
//! long polls.
//!
//! Owns the ids, the bounded log and waking waiting long polls (a `Mutex` + `Condvar`
//! held only to push or copy out). It must not know HTTP or the core's types: events
//! arrive as JSON values. Like Syncthing's event API, a page that sees a gap in the ids
//! knows it missed events and reloads the state.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::protocol::limits::{GUI_EVENT_LOG, GUI_EVENTS_PER_POLL, GUI_MAX_LONG_POLLS};

/// The log of events, shared by the pump that fills it and the long polls that read it.
pub struct EventLog {
    /// The kept events and the id of the last one.
    inner: Mutex<Inner>,
    /// Wakes long polls when an event arrives.
    arrived: Condvar,
    /// Long polls waiting now, capped at `GUI_MAX_LONG_POLLS`.
    polls: AtomicUsize,
}

#[derive(Default)]
struct Inner {
    /// The last id given out (0 before any event).
    last: u64,
    /// The newest `GUI_EVENT_LOG` events, oldest first.
    events: VecDeque<Value>,
}

/// A long poll slot; dropping it frees the slot.
pub struct PollSlot<'a>(&'a AtomicUsize);

impl Drop for PollSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Default for EventLog {
    fn default() -> Self {
        EventLog::new()
    }
}

impl EventLog {
    /// An empty log.
    pub fn new() -> EventLog {
        EventLog {
            inner: Mutex::new(Inner::default()),
            arrived: Condvar::new(),
            polls: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock leaves plain data behind: keep going.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends `{id, time, type, data}` and wakes the long polls; returns the id.
    pub fn push(&self, kind: &str, data: Value) -> u64 {
        let mut inner = self.lock();
        inner.last += 1;
        let id = inner.last;
        let time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        inner
            .events
            .push_back(json!({"id": id, "time": time, "type": kind, "data": data}));
        while inner.events.len() > GUI_EVENT_LOG {
            inner.events.pop_front();
        }
        drop(inner);
        self.arrived.notify_all();
        id
    }

    /// The id of the newest event (0 if none).
    pub fn last_id(&self) -> u64 {
        self.lock().last
    }

    /// Takes a long poll slot, or `None` when `GUI_MAX_LONG_POLLS` are waiting.
    pub fn slot(&self) -> Option<PollSlot<'_>> {
        let before = self.polls.fetch_add(1, Ordering::SeqCst);
        let slot = PollSlot(&self.polls);
        (before < GUI_MAX_LONG_POLLS).then_some(slot)
    }

    /// Events with an id above `since` (at most `GUI_EVENTS_PER_POLL`), waiting up to
    /// `wait` for the first one; empty on timeout.
    pub fn since(&self, since: u64, wait: Duration) -> Vec<Value> {
        let deadline = Instant::now() + wait;
        let mut inner = self.lock();
        loop {
            if inner.last > since {
                return inner
                    .events
                    .iter()
                    .filter(|e| e["id"].as_u64().is_some_and(|id| id > since))
                    .take(GUI_EVENTS_PER_POLL)
                    .cloned()
                    .collect();
            }
            let now = Instant::now();
            if now >= deadline {
                return Vec::new();
            }
            inner = match self.arrived.wait_timeout(inner, deadline - now) {
                Ok((guard, _)) => guard,
                Err(e) => e.into_inner().0,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_rise_by_one_and_polls_see_only_newer_events() {
        let log = EventLog::new();
        assert_eq!(log.push("a", json!(1)), 1);
        assert_eq!(log.push("b", json!(2)), 2);
        let got = log.since(1, Duration::from_millis(10));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0]["id"], 2);
        assert_eq!(got[0]["type"], "b");
        assert!(log.since(2, Duration::from_millis(10)).is_empty());
    }

    #[test]
    fn long_polls_are_capped() {
        let log = EventLog::new();
        let slots: Vec<_> = (0..GUI_MAX_LONG_POLLS).map(|_| log.slot()).collect();
        assert!(slots.iter().all(Option::is_some));
        assert!(log.slot().is_none());
        drop(slots);
        assert!(log.slot().is_some());
    }
}
