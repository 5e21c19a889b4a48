//! What bounds the peer listener: handshake slots per source address and in all, and
//! the tally of refused peer connections that the person sees once per burst; and what
//! bounds one open link: its flood limit.
//!
//! Owns two small shared tables, each behind one mutex held only to update memory (never
//! across socket I/O or a channel send), and the flood limit's token bucket, owned by the
//! link's reader thread alone. It must not touch sockets, parse lines or
//! print: `peer_link` takes slots and records refusals, `sessions` turns the tally into
//! notices.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::protocol::codes::ErrorCode;
use crate::protocol::limits::{
    FLOOD_BURST, FLOOD_RATE, MAX_HANDSHAKES, MAX_HANDSHAKES_PER_IP, REFUSAL_SUMMARY_LINES,
    REFUSAL_SUMMARY_PERIOD,
};

/// Locks `m`, taking the data even if a thread panicked while holding it: the tables
/// hold plain counts, always consistent between statements.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Default)]
struct SlotTable {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Handshake slots: at most `MAX_HANDSHAKES` in all and `MAX_HANDSHAKES_PER_IP` per
/// source address. Cloning shares the table.
#[derive(Clone, Default)]
pub struct Slots(Arc<Mutex<SlotTable>>);

/// One taken handshake slot; dropping it gives the slot back.
pub struct Slot {
    ip: IpAddr,
    table: Arc<Mutex<SlotTable>>,
}

impl Slots {
    /// An empty table.
    pub fn new() -> Slots {
        Slots::default()
    }

    /// A slot for a connection from `ip`, or `None` if that address or everyone together
    /// has as many handshakes as allowed.
    pub fn try_take(&self, ip: IpAddr) -> Option<Slot> {
        let mut table = lock(&self.0);
        let mine = table.per_ip.get(&ip).copied().unwrap_or(0);
        if table.total >= MAX_HANDSHAKES || mine >= MAX_HANDSHAKES_PER_IP {
            return None;
        }
        table.total += 1;
        table.per_ip.insert(ip, mine + 1);
        Some(Slot {
            ip,
            table: Arc::clone(&self.0),
        })
    }

    /// Slots taken now (for tests).
    pub fn in_use(&self) -> usize {
        lock(&self.0).total
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut table = lock(&self.table);
        table.total = table.total.saturating_sub(1);
        if let Some(n) = table.per_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                table.per_ip.remove(&self.ip);
            }
        }
    }
}

/// Why a peer connection was refused, as the person reads it.
pub fn refusal_reason(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::BadTicket => "bad ticket",
        ErrorCode::Timeout => "no HELLO in time",
        ErrorCode::PeerBusy => "too many connections at once",
        ErrorCode::AlreadyAsked => "a request from them is already waiting",
        ErrorCode::TooManySessions => "too many sessions",
        ErrorCode::LineTooLong | ErrorCode::BadEncoding => "unreadable first line",
        ErrorCode::NotNoise => "no encrypted handshake",
        ErrorCode::KeyChanged => "changed identity key",
        ErrorCode::KeyMismatch => "not the key the server named",
        _ => "bad first line",
    }
}

/// One line of a refusal summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusalLine {
    /// How many connections were refused.
    pub count: u64,
    /// From where (an address, or "N other addresses").
    pub from: String,
    /// Why, from `refusal_reason`.
    pub why: &'static str,
}

struct Tally {
    since: Instant,
    counts: HashMap<(IpAddr, ErrorCode), u64>,
    /// Refusals under keys past the table's cap, only counted.
    overflow: u64,
}

/// Refused peer connections since the last summary, per (source address, reason).
/// Cloning shares the tally.
#[derive(Clone)]
pub struct Refusals(Arc<Mutex<Tally>>);

impl Default for Refusals {
    fn default() -> Self {
        Refusals::new()
    }
}

/// Keys the tally keeps apart; past this every new key is only counted.
const MAX_TALLY_KEYS: usize = 256;

impl Refusals {
    /// Nothing refused yet.
    pub fn new() -> Refusals {
        Refusals(Arc::new(Mutex::new(Tally {
            since: Instant::now(),
            counts: HashMap::new(),
            overflow: 0,
        })))
    }

    /// Counts one refused connection from `ip` for `code`.
    pub fn add(&self, ip: IpAddr, code: ErrorCode) {
        let mut tally = lock(&self.0);
        let len = tally.counts.len();
        match tally.counts.get_mut(&(ip, code)) {
            Some(n) => *n += 1,
            None if len < MAX_TALLY_KEYS => {
                tally.counts.insert((ip, code), 1);
            }
            None => tally.overflow += 1,
        }
    }

    /// Once per `REFUSAL_SUMMARY_PERIOD`: the refusals since the last summary (at most
    /// `REFUSAL_SUMMARY_LINES` lines, largest first, the rest summed in one) and the
    /// seconds they span. `None` if the period is not over or nothing was refused.
    pub fn take_summary(&self, now: Instant) -> Option<(Vec<RefusalLine>, u64)> {
        let (counts, overflow, span) = {
            let mut tally = lock(&self.0);
            let span = now.saturating_duration_since(tally.since);
            if span < REFUSAL_SUMMARY_PERIOD {
                return None;
            }
            tally.since = now;
            (
                std::mem::take(&mut tally.counts),
                std::mem::take(&mut tally.overflow),
                span,
            )
        };
        if counts.is_empty() && overflow == 0 {
            return None;
        }
        let mut rows: Vec<((IpAddr, ErrorCode), u64)> = counts.into_iter().collect();
        rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.0.cmp(&b.0.0)));
        let rest = rows.split_off(rows.len().min(REFUSAL_SUMMARY_LINES));
        let mut lines: Vec<RefusalLine> = rows
            .into_iter()
            .map(|((ip, code), count)| RefusalLine {
                count,
                from: ip.to_string(),
                why: refusal_reason(code),
            })
            .collect();
        let count = rest.iter().map(|r| r.1).sum::<u64>() + overflow;
        if count > 0 {
            lines.push(RefusalLine {
                count,
                from: "other addresses".to_string(),
                why: "various reasons",
            });
        }
        Some((lines, round_secs(span)))
    }
}

fn round_secs(span: Duration) -> u64 {
    span.as_secs_f64().round().max(1.0) as u64
}

/// A token bucket: `FLOOD_BURST` lines at once, then `FLOOD_RATE` per second, counted
/// as the link's reader takes lines off the socket.
pub struct FloodLimit {
    tokens: f64,
    last: Instant,
}

impl Default for FloodLimit {
    fn default() -> FloodLimit {
        FloodLimit::new()
    }
}

impl FloodLimit {
    /// A full bucket.
    pub fn new() -> FloodLimit {
        FloodLimit {
            tokens: f64::from(FLOOD_BURST),
            last: Instant::now(),
        }
    }

    /// Takes one line's token: false past the limit.
    pub fn allow(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * f64::from(FLOOD_RATE);
        // A stall's credit (below) is not cut back to the burst; refills never pass it.
        let cap = self.tokens.max(f64::from(FLOOD_BURST));
        self.tokens = (self.tokens + refill).min(cap);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// The reader did not read for `waited` because our own side was slow (the core's
    /// queue was full). What the peer sent meanwhile waited in the socket, and arrives
    /// all at once when we read again: counted by arrival it would look like a burst, so
    /// the peer is credited with the lines the rate allows in that time, beyond the burst
    /// (the time is not refilled again). A peer within the rate is never cut for our
    /// slowness, and none gets more than the rate over time.
    pub fn stalled(&mut self, waited: Duration) {
        self.tokens += waited.as_secs_f64() * f64::from(FLOOD_RATE);
        self.last += waited;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate_and_a_stall_of_ours_is_not_counted_against_the_peer() {
        let mut flood = FloodLimit::new();
        let burst = (0..FLOOD_BURST * 2).take_while(|_| flood.allow()).count() as u32;
        // The burst (and the few the clock refilled meanwhile), then no more.
        assert!((FLOOD_BURST..FLOOD_BURST + 100).contains(&burst), "{burst}");
        assert!(!flood.allow());
        // Our reader stood still for 3 s (a full queue): the lines the rate allowed in
        // that time are let through at once, beyond the burst.
        flood.stalled(Duration::from_secs(3));
        let after = (0..FLOOD_RATE * 10).take_while(|_| flood.allow()).count() as u32;
        assert!(
            (3 * FLOOD_RATE..3 * FLOOD_RATE + 100).contains(&after),
            "{after}"
        );
        assert!(!flood.allow());
    }

    #[test]
    fn slots_are_capped_per_address_and_in_all_and_come_back() {
        let slots = Slots::new();
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let mut held: Vec<Slot> = (0..MAX_HANDSHAKES_PER_IP)
            .map(|_| slots.try_take(a).unwrap())
            .collect();
        assert!(slots.try_take(a).is_none());
        held.pop();
        assert!(slots.try_take(a).is_some());
        let mut n = 1u8;
        while held.len() < MAX_HANDSHAKES {
            let ip = IpAddr::from([10, 0, 0, n]);
            match slots.try_take(ip) {
                Some(s) => held.push(s),
                None => n += 1,
            }
        }
        assert!(slots.try_take(IpAddr::from([10, 9, 9, 9])).is_none());
        drop(held);
        assert_eq!(slots.in_use(), 0);
    }

    #[test]
    fn refusals_are_summed_once_per_period() {
        let r = Refusals::new();
        let a: IpAddr = "127.0.0.9".parse().unwrap();
        for _ in 0..57 {
            r.add(a, ErrorCode::BadTicket);
        }
        r.add(a, ErrorCode::Timeout);
        assert!(r.take_summary(Instant::now()).is_none());
        let later = Instant::now() + REFUSAL_SUMMARY_PERIOD;
        let (lines, secs) = r.take_summary(later).unwrap();
        assert_eq!(secs, REFUSAL_SUMMARY_PERIOD.as_secs());
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].count, 57);
        assert_eq!(lines[0].why, "bad ticket");
        assert!(r.take_summary(later + REFUSAL_SUMMARY_PERIOD).is_none());
        for i in 0..300u16 {
            r.add(
                IpAddr::from([10, 0, (i >> 8) as u8, i as u8]),
                ErrorCode::BadTicket,
            );
        }
        let (lines, _) = r.take_summary(later + 3 * REFUSAL_SUMMARY_PERIOD).unwrap();
        assert_eq!(lines.len(), REFUSAL_SUMMARY_LINES + 1);
        assert_eq!(lines.iter().map(|l| l.count).sum::<u64>(), 300);
    }
}
