//! How many password checks a login may cause: per (username, source address) and per
//! username from anywhere, counted *before* bcrypt runs.
//!
//! Owns the in-memory table of login attempts. An attempt is reserved atomically before
//! its password is checked and settled afterwards (a success gives it back), so racing
//! connections can never check more passwords than the limits allow. The table's mutex
//! is a leaf lock, held only for map work: never across bcrypt, SQLite or socket I/O. It must not
//! touch the database itself; callers persist blocks (so they survive restarts) from
//! what [`Attempt::fail`] returns, and restore them with [`LoginLimits::restore`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::rate_limit::lock;
use crate::protocol::limits::{
    KNOWN_ADDRESSES, LOGIN_FAILURE_MEMORY, MAX_LOGIN_FAILURES, MAX_TRACKED_KEYS,
    NAME_ATTEMPT_BURST, NAME_ATTEMPT_WINDOW, NAME_DELAY_BASE, NAME_DELAY_MAX,
};

/// Attempts for one (username, address).
#[derive(Debug, Clone, Copy)]
struct Pair {
    /// Failed checks since the last success or block.
    failures: u32,
    /// Checks reserved and not yet settled.
    in_flight: u32,
    /// When the last failure happened, to forget old ones.
    last_failure: Instant,
    /// Blocked until then.
    blocked_until: Option<Instant>,
}

/// Attempts for one username from anywhere.
#[derive(Debug, Clone, Copy)]
struct Name {
    /// When the current window started.
    window_start: Instant,
    /// Checks reserved in this window (successes given back).
    used: u32,
    /// Past the burst, the next check may not start before then.
    next_allowed: Instant,
}

#[derive(Default)]
struct Tables {
    pairs: HashMap<(String, IpAddr), Pair>,
    names: HashMap<String, Name>,
    /// Addresses each username recently logged in from (newest last).
    known: HashMap<String, Vec<IpAddr>>,
}

/// Why an attempt may not be checked now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The (username, address) is blocked for this long still.
    Blocked(Duration),
    /// The (username, address) has as many checks under way as it has attempts left.
    Checking,
    /// The username was tried too often from everywhere: retry after this long.
    NameThrottled(Duration),
    /// The table is full of live entries; retry later.
    Full,
}

/// What a failed check changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failed {
    /// Failures now counted for the (username, address); 0 after it was blocked.
    pub failures: u32,
    /// Attempts the (username, address) has left now (checks under way count as used).
    pub left: u32,
    /// `Some(block)` if this failure blocked the pair, for that long.
    pub blocked: Option<Duration>,
}

/// The limits on password checks.
pub struct LoginLimits {
    tables: Mutex<Tables>,
}

/// A reserved check. Settle it with [`Attempt::succeed`] or [`Attempt::fail`]; dropped
/// unsettled (the check never ran), it is given back.
pub struct Attempt<'a> {
    limits: &'a LoginLimits,
    name: String,
    address: IpAddr,
    settled: bool,
}

impl Default for LoginLimits {
    fn default() -> Self {
        LoginLimits::new()
    }
}

impl LoginLimits {
    /// An empty table.
    pub fn new() -> LoginLimits {
        LoginLimits {
            tables: Mutex::new(Tables::default()),
        }
    }

    /// Reserves one password check of `name` (a username key) from `address` (a
    /// source key), or says why not.
    pub fn reserve(&self, name: &str, address: IpAddr) -> Result<Attempt<'_>, Refused> {
        self.reserve_at(name, address, Instant::now())
    }

    /// [`LoginLimits::reserve`] at a given time (for tests).
    pub fn reserve_at(
        &self,
        name: &str,
        address: IpAddr,
        now: Instant,
    ) -> Result<Attempt<'_>, Refused> {
        let mut t = lock(&self.tables);
        if t.pairs.len() >= MAX_TRACKED_KEYS || t.names.len() >= MAX_TRACKED_KEYS {
            sweep(&mut t, now);
            if t.pairs.len() >= MAX_TRACKED_KEYS || t.names.len() >= MAX_TRACKED_KEYS {
                return Err(Refused::Full);
            }
        }
        let pair_key = (name.to_string(), address);
        if let Some(pair) = t.pairs.get_mut(&pair_key) {
            refresh_pair(pair, now);
            if let Some(until) = pair.blocked_until {
                return Err(Refused::Blocked(until - now));
            }
            if pair.failures + pair.in_flight >= MAX_LOGIN_FAILURES {
                return Err(Refused::Checking);
            }
        }
        let known = t
            .known
            .get(name)
            .is_some_and(|addresses| addresses.contains(&address));
        let entry = t.names.entry(name.to_string()).or_insert(Name {
            window_start: now,
            used: 0,
            next_allowed: now,
        });
        if now.saturating_duration_since(entry.window_start) >= NAME_ATTEMPT_WINDOW {
            *entry = Name {
                window_start: now,
                used: 0,
                next_allowed: now,
            };
        }
        // An address the account logged in from recently is not slowed down by guessing
        // from elsewhere (it still has its own per-address limit).
        if !known && entry.used >= NAME_ATTEMPT_BURST {
            if now < entry.next_allowed {
                return Err(Refused::NameThrottled(entry.next_allowed - now));
            }
            let doublings = (entry.used - NAME_ATTEMPT_BURST).min(16);
            let delay = NAME_DELAY_BASE
                .saturating_mul(1u32 << doublings)
                .min(NAME_DELAY_MAX);
            entry.next_allowed = now + delay;
        }
        entry.used += 1;
        let pair = t.pairs.entry(pair_key).or_insert(Pair {
            failures: 0,
            in_flight: 0,
            last_failure: now,
            blocked_until: None,
        });
        pair.in_flight += 1;
        Ok(Attempt {
            limits: self,
            name: name.to_string(),
            address,
            settled: false,
        })
    }

    /// Notes that `name` logged in (or registered) from `address`: later logins from it
    /// skip the per-username delay.
    pub fn note_known(&self, name: &str, address: IpAddr) {
        let mut t = lock(&self.tables);
        if !t.known.contains_key(name) && t.known.len() >= MAX_TRACKED_KEYS {
            // Forget someone rather than grow: losing a known address only means that
            // user may be slowed down during an attack.
            if let Some(victim) = t.known.keys().next().cloned() {
                t.known.remove(&victim);
            }
        }
        let addresses = t.known.entry(name.to_string()).or_default();
        addresses.retain(|a| *a != address);
        addresses.push(address);
        if addresses.len() > KNOWN_ADDRESSES {
            addresses.remove(0);
        }
    }

    /// Puts back a (username, address) state read from the database at start-up.
    pub fn restore(&self, name: &str, address: IpAddr, failures: u32, blocked_for: Duration) {
        let now = Instant::now();
        let mut t = lock(&self.tables);
        if t.pairs.len() >= MAX_TRACKED_KEYS {
            return;
        }
        t.pairs.insert(
            (name.to_string(), address),
            Pair {
                failures: failures.min(MAX_LOGIN_FAILURES - 1),
                in_flight: 0,
                last_failure: now,
                blocked_until: (!blocked_for.is_zero()).then(|| now + blocked_for),
            },
        );
    }

    /// Merges a (username, address) state another server may have written into the
    /// shared database: the higher failure count and the later block win, so failures on
    /// any server count here and a block made anywhere holds here.
    pub fn merge_stored(&self, name: &str, address: IpAddr, failures: u32, blocked_for: Duration) {
        let now = Instant::now();
        let mut t = lock(&self.tables);
        let key = (name.to_string(), address);
        if !t.pairs.contains_key(&key) {
            if (failures == 0 && blocked_for.is_zero()) || t.pairs.len() >= MAX_TRACKED_KEYS {
                return;
            }
            t.pairs.insert(
                key.clone(),
                Pair {
                    failures: 0,
                    in_flight: 0,
                    last_failure: now,
                    blocked_until: None,
                },
            );
        }
        let Some(pair) = t.pairs.get_mut(&key) else {
            return;
        };
        refresh_pair(pair, now);
        if pair.blocked_until.is_none() {
            pair.failures = pair.failures.max(failures.min(MAX_LOGIN_FAILURES - 1));
        }
        if !blocked_for.is_zero() {
            let until = now + blocked_for;
            pair.blocked_until = Some(pair.blocked_until.map_or(until, |u| u.max(until)));
            pair.failures = 0;
        }
    }

    /// Pairs and names tracked now (for tests and logs).
    pub fn tracked(&self) -> (usize, usize) {
        let t = lock(&self.tables);
        (t.pairs.len(), t.names.len())
    }
}

/// Forgets failures that are too old and blocks that are over.
fn refresh_pair(pair: &mut Pair, now: Instant) {
    if pair.blocked_until.is_some_and(|until| until <= now) {
        pair.blocked_until = None;
        pair.failures = 0;
    }
    if pair.failures > 0 && now.saturating_duration_since(pair.last_failure) >= LOGIN_FAILURE_MEMORY
    {
        pair.failures = 0;
    }
}

/// Drops entries that no longer limit anything.
fn sweep(t: &mut Tables, now: Instant) {
    t.pairs.retain(|_, pair| {
        refresh_pair(pair, now);
        pair.in_flight > 0 || pair.failures > 0 || pair.blocked_until.is_some()
    });
    t.names.retain(|_, name| {
        now.saturating_duration_since(name.window_start) < NAME_ATTEMPT_WINDOW
            && (name.used > 0 || name.next_allowed > now)
    });
}

impl Attempt<'_> {
    /// The password was right: the attempt is given back, the (username, address)'s
    /// failures are forgotten and the address becomes known for the username.
    pub fn succeed(mut self) {
        self.settled = true;
        let mut t = lock(&self.limits.tables);
        give_back_name(&mut t, &self.name);
        // Failures are forgotten, but other checks of this pair still under way keep their
        // reservations: they are counted when they end, like any other.
        let key = (self.name.clone(), self.address);
        if let Some(pair) = t.pairs.get_mut(&key) {
            pair.failures = 0;
            pair.in_flight = pair.in_flight.saturating_sub(1);
            if pair.in_flight == 0 && pair.blocked_until.is_none() {
                t.pairs.remove(&key);
            }
        }
        drop(t);
        self.limits.note_known(&self.name, self.address);
    }

    /// The password was wrong: counts the failure, blocking the (username, address) for
    /// `block` when it reaches the limit.
    pub fn fail(mut self, block: Duration) -> Failed {
        self.settled = true;
        let now = Instant::now();
        let mut t = lock(&self.limits.tables);
        let key = (self.name.clone(), self.address);
        let Some(pair) = t.pairs.get_mut(&key) else {
            return Failed {
                failures: 0,
                left: 0,
                blocked: None,
            };
        };
        pair.in_flight = pair.in_flight.saturating_sub(1);
        refresh_pair(pair, now);
        pair.failures += 1;
        pair.last_failure = now;
        if pair.failures >= MAX_LOGIN_FAILURES {
            pair.failures = 0;
            pair.blocked_until = Some(now + block);
            return Failed {
                failures: 0,
                left: 0,
                blocked: Some(block),
            };
        }
        Failed {
            failures: pair.failures,
            left: MAX_LOGIN_FAILURES.saturating_sub(pair.failures + pair.in_flight),
            blocked: None,
        }
    }
}

fn give_back_name(t: &mut Tables, name: &str) {
    if let Some(entry) = t.names.get_mut(name) {
        entry.used = entry.used.saturating_sub(1);
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        // The check never ran (busy, timed out, database error): it does not count.
        let mut t = lock(&self.limits.tables);
        give_back_name(&mut t, &self.name);
        let key = (self.name.clone(), self.address);
        if let Some(pair) = t.pairs.get_mut(&key) {
            pair.in_flight = pair.in_flight.saturating_sub(1);
            if pair.in_flight == 0 && pair.failures == 0 && pair.blocked_until.is_none() {
                t.pairs.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    const BLOCK: Duration = Duration::from_secs(300);

    #[test]
    fn racing_attempts_are_reserved_before_they_are_checked() {
        let limits = LoginLimits::new();
        // Three reservations at once use up the pair; the fourth is refused before any
        // of them has been checked.
        let held: Vec<_> = (0..3)
            .map(|_| limits.reserve("alice", ip(1)).unwrap())
            .collect();
        assert_eq!(
            limits.reserve("alice", ip(1)).err(),
            Some(Refused::Checking)
        );
        // Another address and another name are not affected.
        drop(limits.reserve("alice", ip(2)).unwrap());
        drop(limits.reserve("bob", ip(1)).unwrap());
        let mut outcomes: Vec<Failed> = held.into_iter().map(|a| a.fail(BLOCK)).collect();
        let last = outcomes.pop().unwrap();
        assert_eq!(last.blocked, Some(BLOCK));
        assert!(matches!(
            limits.reserve("alice", ip(1)).err(),
            Some(Refused::Blocked(left)) if left <= BLOCK
        ));
    }

    #[test]
    fn attempts_left_count_checks_under_way() {
        let limits = LoginLimits::new();
        let first = limits.reserve("alice", ip(1)).unwrap();
        let second = limits.reserve("alice", ip(1)).unwrap();
        let failed = first.fail(BLOCK);
        assert_eq!((failed.failures, failed.left), (1, 1));
        drop(second);
        let failed = limits.reserve("alice", ip(1)).unwrap().fail(BLOCK);
        assert_eq!((failed.failures, failed.left), (2, 1));
    }

    #[test]
    fn a_success_or_an_unchecked_attempt_gives_the_attempt_back() {
        let limits = LoginLimits::new();
        for _ in 0..2 {
            limits.reserve("alice", ip(1)).unwrap().fail(BLOCK);
        }
        limits.reserve("alice", ip(1)).unwrap().succeed();
        for _ in 0..10 {
            drop(limits.reserve("alice", ip(1)).unwrap());
        }
        let failed = limits.reserve("alice", ip(1)).unwrap().fail(BLOCK);
        assert_eq!(failed.failures, 1, "the success cleared the count");
        assert_eq!(limits.tracked().0, 1);
    }

    #[test]
    fn one_name_from_many_addresses_slows_down_but_never_locks_out() {
        let limits = LoginLimits::new();
        let t0 = Instant::now();
        for i in 0..NAME_ATTEMPT_BURST {
            let a = limits.reserve_at("alice", ip(10 + i as u8), t0).unwrap();
            a.fail(BLOCK);
        }
        // The burst is spent: one more now, then a delay that doubles.
        limits.reserve_at("alice", ip(100), t0).unwrap().fail(BLOCK);
        assert_eq!(
            limits.reserve_at("alice", ip(101), t0).err(),
            Some(Refused::NameThrottled(NAME_DELAY_BASE))
        );
        let t1 = t0 + NAME_DELAY_BASE;
        limits.reserve_at("alice", ip(101), t1).unwrap().fail(BLOCK);
        assert_eq!(
            limits.reserve_at("alice", ip(102), t1).err(),
            Some(Refused::NameThrottled(NAME_DELAY_BASE * 2))
        );
        // The delay never exceeds its cap, and the window starts again.
        let mut t = t1;
        for k in 0..20u8 {
            t += NAME_DELAY_MAX;
            limits
                .reserve_at("alice", ip(110 + k), t)
                .unwrap()
                .fail(BLOCK);
        }
        let later = t0 + NAME_ATTEMPT_WINDOW;
        assert!(limits.reserve_at("alice", ip(200), later).is_ok());
        // Other names were never slowed.
        assert!(limits.reserve_at("bob", ip(101), t1).is_ok());
    }

    #[test]
    fn a_known_address_skips_the_name_delay_but_not_its_own_limit() {
        let limits = LoginLimits::new();
        limits.note_known("alice", ip(1));
        let t0 = Instant::now();
        for i in 0..=NAME_ATTEMPT_BURST {
            limits
                .reserve_at("alice", ip(10 + i as u8), t0)
                .unwrap()
                .fail(BLOCK);
        }
        assert!(limits.reserve_at("alice", ip(99), t0).is_err());
        let from_home = limits.reserve_at("alice", ip(1), t0).unwrap();
        from_home.succeed();
    }

    #[test]
    fn stored_failures_and_blocks_from_elsewhere_are_merged() {
        let limits = LoginLimits::new();
        limits.reserve("alice", ip(1)).unwrap().fail(BLOCK);
        // Another server counted two: the higher count wins, the next failure blocks.
        limits.merge_stored("alice", ip(1), 2, Duration::ZERO);
        limits.merge_stored("alice", ip(1), 0, Duration::ZERO);
        assert_eq!(
            limits.reserve("alice", ip(1)).unwrap().fail(BLOCK).blocked,
            Some(BLOCK)
        );
        // A block made elsewhere holds here.
        limits.merge_stored("bob", ip(1), 0, Duration::from_secs(60));
        assert!(matches!(
            limits.reserve("bob", ip(1)).err(),
            Some(Refused::Blocked(_))
        ));
        // Nothing stored adds nothing.
        limits.merge_stored("carol", ip(1), 0, Duration::ZERO);
        assert_eq!(limits.tracked().0, 2);
    }

    #[test]
    fn restored_blocks_hold() {
        let limits = LoginLimits::new();
        limits.restore("alice", ip(1), 0, Duration::from_secs(60));
        limits.restore("bob", ip(1), 2, Duration::ZERO);
        assert!(matches!(
            limits.reserve("alice", ip(1)).err(),
            Some(Refused::Blocked(_))
        ));
        let failed = limits.reserve("bob", ip(1)).unwrap().fail(BLOCK);
        assert_eq!(failed.blocked, Some(BLOCK));
    }
}
