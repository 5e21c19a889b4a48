//! Rate limits and per-address caps that live in memory: token buckets keyed by user or
//! address, and counted slots per source address.
//!
//! Owns the arithmetic of "how many, how fast" and nothing else. Every method locks its
//! mutex (a leaf lock: nothing else is locked while it is held) only for map work and
//! returns; it must not do socket I/O, SQLite or bcrypt, and
//! it knows nothing of the protocol (callers turn a refusal into an `ERR`).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::protocol::limits::MAX_TRACKED_KEYS;

/// The key per-address limits count under: an IPv4 address as it is (IPv4-mapped IPv6
/// too), an IPv6 address by its /64, since one host usually holds a whole /64.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Whole seconds to tell a person to wait: never "0 s".
pub fn secs(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

/// Locks, ignoring poisoning: the maps stay consistent between statements.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One key's bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Tokens left (fractions accumulate between refills).
    tokens: f64,
    /// When `tokens` was last brought up to date.
    at: Instant,
}

/// Token buckets by key: each key may take `burst` tokens at once, and gets one more
/// every `refill`. Refusals say how long until the next token.
pub struct TokenBuckets<K> {
    /// Most tokens a bucket holds.
    burst: f64,
    /// Tokens added per second.
    per_sec: f64,
    /// The buckets; a key with a full bucket is the same as a key never seen, so full
    /// buckets are swept out when the table grows.
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Hash + Eq + Clone> TokenBuckets<K> {
    /// Buckets of `burst` tokens, one more every `refill`.
    pub fn new(burst: u32, refill: Duration) -> TokenBuckets<K> {
        TokenBuckets {
            burst: f64::from(burst.max(1)),
            per_sec: 1.0 / refill.as_secs_f64().max(1e-6),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Buckets of `burst` tokens refilled at `per_sec` tokens a second.
    pub fn per_second(burst: u32, per_sec: u32) -> TokenBuckets<K> {
        TokenBuckets::new(
            burst,
            Duration::from_secs_f64(1.0 / f64::from(per_sec.max(1))),
        )
    }

    fn refill(&self, bucket: &mut Bucket, now: Instant) {
        let gained = now.saturating_duration_since(bucket.at).as_secs_f64() * self.per_sec;
        bucket.tokens = (bucket.tokens + gained).min(self.burst);
        bucket.at = now;
    }

    /// Takes one token for `key`; `Err` holds how long until one is free.
    pub fn take(&self, key: &K) -> Result<(), Duration> {
        self.take_at(key, Instant::now())
    }

    /// [`TokenBuckets::take`] at a given time (for tests).
    pub fn take_at(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let mut buckets = lock(&self.buckets);
        if !buckets.contains_key(key) && buckets.len() >= MAX_TRACKED_KEYS {
            let (burst, per_sec) = (self.burst, self.per_sec);
            buckets.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * per_sec < burst
            });
            if buckets.len() >= MAX_TRACKED_KEYS {
                // Every tracked key is active: a new one waits for a full refill.
                return Err(Duration::from_secs_f64(1.0 / self.per_sec));
            }
        }
        let burst = self.burst;
        let bucket = buckets.entry(key.clone()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        self.refill(bucket, now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - bucket.tokens) / self.per_sec,
            ))
        }
    }

    /// Gives back a token taken for `key` (the request turned out not to count).
    pub fn refund(&self, key: &K) {
        if let Some(bucket) = lock(&self.buckets).get_mut(key) {
            bucket.tokens = (bucket.tokens + 1.0).min(self.burst);
        }
    }
}

/// Who holds slots, by address.
#[derive(Default)]
struct Slots {
    /// Slots held per address key.
    per_address: HashMap<IpAddr, usize>,
    /// The address each holder counts under.
    holders: HashMap<u64, IpAddr>,
}

/// At most `max` slots per source address, each held by one id (a connection) until
/// released. Releasing twice, or an id that holds nothing, is harmless.
pub struct AddressSlots {
    /// Slots per address.
    max: usize,
    /// The counts.
    slots: Mutex<Slots>,
}

impl AddressSlots {
    /// A table allowing `max` slots per address.
    pub fn new(max: usize) -> AddressSlots {
        AddressSlots {
            max: max.max(1),
            slots: Mutex::new(Slots::default()),
        }
    }

    /// The most slots one address may hold.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Takes a slot for `holder` under `address` (already a [`source_key`]); false if
    /// that address holds `max` already.
    pub fn acquire(&self, holder: u64, address: IpAddr) -> bool {
        let mut slots = lock(&self.slots);
        let held = slots.per_address.get(&address).copied().unwrap_or(0);
        if held >= self.max {
            return false;
        }
        slots.per_address.insert(address, held + 1);
        slots.holders.insert(holder, address);
        true
    }

    /// Frees `holder`'s slot, if it has one.
    pub fn release(&self, holder: u64) {
        let mut slots = lock(&self.slots);
        let Some(address) = slots.holders.remove(&holder) else {
            return;
        };
        if let Some(held) = slots.per_address.get_mut(&address) {
            *held -= 1;
            if *held == 0 {
                slots.per_address.remove(&address);
            }
        }
    }

    /// Slots held under `address`.
    pub fn held(&self, address: IpAddr) -> usize {
        lock(&self.slots)
            .per_address
            .get(&address)
            .copied()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let buckets = TokenBuckets::per_second(3, 2);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(buckets.take_at(&"alice", t0).is_ok());
        }
        let wait = buckets.take_at(&"alice", t0).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(500));
        // Other keys are untouched.
        assert!(buckets.take_at(&"bob", t0).is_ok());
        // Half a second later exactly one more token has come.
        let t1 = t0 + Duration::from_millis(500);
        assert!(buckets.take_at(&"alice", t1).is_ok());
        assert!(buckets.take_at(&"alice", t1).is_err());
        // A refund gives the token back, never above the burst.
        buckets.refund(&"alice");
        assert!(buckets.take_at(&"alice", t1).is_ok());
        let later = t1 + Duration::from_secs(3600);
        for _ in 0..3 {
            buckets.refund(&"alice");
        }
        for _ in 0..3 {
            assert!(buckets.take_at(&"alice", later).is_ok());
        }
        assert!(buckets.take_at(&"alice", later).is_err());
    }

    #[test]
    fn address_slots_count_per_address_and_release_once() {
        let slots = AddressSlots::new(2);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        assert!(slots.acquire(1, a) && slots.acquire(2, a));
        assert!(!slots.acquire(3, a));
        assert!(slots.acquire(4, b));
        slots.release(1);
        slots.release(1);
        slots.release(99);
        assert_eq!(slots.held(a), 1);
        assert!(slots.acquire(5, a));
        assert!(!slots.acquire(6, a));
    }

    #[test]
    fn ipv6_counts_by_slash_64_and_mapped_ipv4_as_ipv4() {
        let one: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let two: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(source_key(one), source_key(two));
        assert_ne!(source_key(one), source_key(other));
        let mapped: IpAddr = "::ffff:10.0.0.7".parse().unwrap();
        assert_eq!(source_key(mapped), "10.0.0.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn waits_are_rounded_up_to_whole_seconds() {
        assert_eq!(secs(Duration::from_millis(1)), 1);
        assert_eq!(secs(Duration::from_secs(2)), 2);
        assert_eq!(secs(Duration::from_millis(2001)), 3);
    }
}
