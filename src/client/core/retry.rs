//! When to try logging in again by itself after the server went away (`--auto-reconnect`).
//!
//! Owns the schedule only: a delay that doubles from 1 s to 30 s, with up to a second of
//! random jitter so that thousands of clients of a restarted server do not all come back
//! in the same instant. It must not touch the network or the terminal (the UI loop does).

use std::time::{Duration, Instant};

/// The first delay after the link is lost.
const FIRST: Duration = Duration::from_secs(1);
/// The longest delay between two attempts.
const MOST: Duration = Duration::from_secs(30);
/// Up to this much random delay is added to each attempt.
const JITTER_MS: u64 = 1000;

/// The reconnect schedule; idle until [`Backoff::start`].
#[derive(Debug, Default)]
pub struct Backoff {
    /// When the next attempt is due; `None` while connected or given up.
    next: Option<Instant>,
    /// The delay before the attempt after the next.
    delay: Duration,
}

impl Backoff {
    /// The link was lost: the first attempt is due soon.
    pub fn start(&mut self) {
        self.delay = FIRST;
        self.schedule();
    }

    /// An attempt failed in a way worth retrying: the next one waits twice as long.
    pub fn failed(&mut self) {
        self.delay = (self.delay * 2).min(MOST);
        self.schedule();
    }

    /// Connected again, or giving up: no more attempts.
    pub fn stop(&mut self) {
        self.next = None;
    }

    /// True once if an attempt is due now (the caller then reports how it went).
    pub fn due(&mut self, now: Instant) -> bool {
        match self.next {
            Some(at) if now >= at => {
                self.next = None;
                true
            }
            _ => false,
        }
    }

    /// How long until the next attempt, for telling the person.
    pub fn wait(&self) -> Option<Duration> {
        self.next
            .map(|at| at.saturating_duration_since(Instant::now()))
    }

    fn schedule(&mut self) {
        let mut bytes = [0u8; 8];
        let jitter = match getrandom::fill(&mut bytes) {
            Ok(()) => u64::from_le_bytes(bytes) % JITTER_MS,
            Err(_) => 0,
        };
        self.next = Some(Instant::now() + self.delay + Duration::from_millis(jitter));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_fire_once() {
        let mut b = Backoff::default();
        assert!(!b.due(Instant::now() + MOST * 2));
        b.start();
        let first = b.wait().unwrap();
        assert!(
            first >= FIRST - Duration::from_millis(50)
                && first <= FIRST + Duration::from_millis(JITTER_MS)
        );
        assert!(!b.due(Instant::now()));
        assert!(b.due(Instant::now() + FIRST * 3));
        assert!(!b.due(Instant::now() + FIRST * 3), "fires once");
        for _ in 0..10 {
            b.failed();
        }
        assert!(b.wait().unwrap() <= MOST + Duration::from_millis(JITTER_MS));
        assert!(b.wait().unwrap() >= MOST - Duration::from_millis(50));
        b.stop();
        assert!(b.wait().is_none());
    }
}
