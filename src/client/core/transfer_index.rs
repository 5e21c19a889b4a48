//! Constant-time lookups and per-peer counters beside the transfer table
//! (`client::transfers`): offers by (peer, role, offer id), unfinished receives by
//! (peer, name), pending offers and active serves per peer, and the order in which
//! transfers ended (to forget the oldest).
//!
//! Owns only these indexes and the caps they enforce (`MAX_PENDING_OFFERS_PER_PEER`,
//! `MAX_SERVES`, `MAX_SERVES_PER_PEER`). Every operation is O(1) (amortised), so a
//! peer's flood of `OFFER` lines costs the same per line however many came before
//! (the table used to scan every entry on each offer). It must not hold the entries
//! themselves, send anything or decide what the person is told.

use std::collections::{HashMap, HashSet, VecDeque};

use super::transfers::Role;
use crate::protocol::limits::{MAX_PENDING_OFFERS_PER_PEER, MAX_SERVES, MAX_SERVES_PER_PEER};

/// The key every index uses for a user: names are case-insensitive.
pub fn peer_key(peer: &str) -> String {
    peer.to_ascii_lowercase()
}

/// Which counted slot an entry holds, so ending it gives the slot back exactly once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Slot {
    /// Nothing counted.
    #[default]
    None,
    /// A peer's offer waiting for `\accept` or for its push.
    Offer,
    /// A fetch we serve.
    Serve,
}

/// Why a new serve cannot start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServeRefusal {
    /// This peer has `MAX_SERVES_PER_PEER` fetches being served.
    PerPeer,
    /// `MAX_SERVES` fetches are being served in all.
    Total,
}

/// The indexes; see the module doc.
#[derive(Default)]
pub struct TableIndex {
    /// (peer key, role, offer id) → our transfer number, for `Send` and `Receive`.
    offers: HashMap<(String, Role, u64), u64>,
    /// (peer key, file name) → our number of an unfinished `Receive` or `Fetch`: two
    /// such transfers would share one partial file.
    receiving: HashMap<(String, String), u64>,
    /// Peer key → offers from that peer holding a `Slot::Offer`.
    pending_offers: HashMap<String, usize>,
    /// Peer key → fetches we serve to that peer.
    serves: HashMap<String, usize>,
    /// Fetches we serve in all.
    serves_total: usize,
    /// Ended transfers, oldest first.
    ended: VecDeque<u64>,
    /// Peers told about (once per burst) since they last fell under the offer cap.
    warned_offers: HashSet<String>,
    /// Peers told about (once per burst) since they last fell under a serve cap.
    warned_serves: HashSet<String>,
}

impl TableIndex {
    /// Remembers offer `offer` of `peer` as our transfer `id`.
    pub fn add_offer(&mut self, peer: &str, role: Role, offer: u64, id: u64) {
        self.offers.insert((peer_key(peer), role, offer), id);
    }

    /// Our number for `peer`'s offer `offer` in `role`, if we know it.
    pub fn offer(&self, peer: &str, role: Role, offer: u64) -> Option<u64> {
        self.offers.get(&(peer_key(peer), role, offer)).copied()
    }

    /// Forgets offer `offer` of `peer` if it is still our transfer `id` (when that
    /// transfer ends: the peer may reuse the number, e.g. after a restart).
    pub fn remove_offer(&mut self, peer: &str, role: Role, offer: u64, id: u64) {
        let key = (peer_key(peer), role, offer);
        if self.offers.get(&key) == Some(&id) {
            self.offers.remove(&key);
        }
    }

    /// True if `name` from `peer` is already on its way to us.
    pub fn is_receiving(&self, peer: &str, name: &str) -> bool {
        self.receiving
            .contains_key(&(peer_key(peer), name.to_string()))
    }

    /// Notes that `name` from `peer` is on its way as our transfer `id`.
    pub fn start_receiving(&mut self, peer: &str, name: &str, id: u64) {
        self.receiving
            .insert((peer_key(peer), name.to_string()), id);
    }

    /// `name` from `peer` is no longer on its way (transfer `id` ended).
    pub fn stop_receiving(&mut self, peer: &str, name: &str, id: u64) {
        let key = (peer_key(peer), name.to_string());
        if self.receiving.get(&key) == Some(&id) {
            self.receiving.remove(&key);
        }
    }

    /// Takes an offer slot for `peer`, or `None` if the peer has as many offers waiting
    /// as allowed. The `bool` is true the first time in a burst (tell the person once).
    pub fn take_offer_slot(&mut self, peer: &str) -> Result<Slot, bool> {
        let key = peer_key(peer);
        let count = self.pending_offers.entry(key.clone()).or_insert(0);
        if *count >= MAX_PENDING_OFFERS_PER_PEER {
            return Err(self.warned_offers.insert(key));
        }
        *count += 1;
        Ok(Slot::Offer)
    }

    /// Takes a serving slot for `peer`, or says which cap is full and whether this is
    /// the first refusal of the burst for that peer.
    pub fn take_serve_slot(&mut self, peer: &str) -> Result<Slot, (ServeRefusal, bool)> {
        let key = peer_key(peer);
        let mine = self.serves.get(&key).copied().unwrap_or(0);
        let refusal = if mine >= MAX_SERVES_PER_PEER {
            ServeRefusal::PerPeer
        } else if self.serves_total >= MAX_SERVES {
            ServeRefusal::Total
        } else {
            *self.serves.entry(key).or_insert(0) += 1;
            self.serves_total += 1;
            return Ok(Slot::Serve);
        };
        Err((refusal, self.warned_serves.insert(key)))
    }

    /// Gives back the slot an entry of `peer` held.
    pub fn release(&mut self, peer: &str, slot: Slot) {
        let key = peer_key(peer);
        match slot {
            Slot::None => {}
            Slot::Offer => {
                if let Some(count) = self.pending_offers.get_mut(&key) {
                    *count = count.saturating_sub(1);
                    if *count == 0 {
                        self.pending_offers.remove(&key);
                    }
                }
                self.warned_offers.remove(&key);
            }
            Slot::Serve => {
                if let Some(count) = self.serves.get_mut(&key) {
                    *count = count.saturating_sub(1);
                    if *count == 0 {
                        self.serves.remove(&key);
                    }
                }
                self.serves_total = self.serves_total.saturating_sub(1);
                self.warned_serves.remove(&key);
            }
        }
    }

    /// Notes that transfer `id` ended.
    pub fn ended(&mut self, id: u64) {
        self.ended.push_back(id);
    }

    /// The oldest ended transfer beyond the `keep` most recent, to forget.
    pub fn oldest_beyond(&mut self, keep: usize) -> Option<u64> {
        if self.ended.len() > keep {
            self.ended.pop_front()
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offer_slots_are_capped_per_peer_and_warn_once_per_burst() {
        let mut index = TableIndex::default();
        for _ in 0..MAX_PENDING_OFFERS_PER_PEER {
            assert_eq!(index.take_offer_slot("Mallory"), Ok(Slot::Offer));
        }
        assert_eq!(index.take_offer_slot("mallory"), Err(true));
        assert_eq!(index.take_offer_slot("MALLORY"), Err(false));
        // Someone else is not affected.
        assert_eq!(index.take_offer_slot("alice"), Ok(Slot::Offer));
        index.release("mallory", Slot::Offer);
        assert_eq!(index.take_offer_slot("mallory"), Ok(Slot::Offer));
        assert_eq!(index.take_offer_slot("mallory"), Err(true));
    }

    #[test]
    fn serve_slots_are_capped_per_peer_and_in_all() {
        let mut index = TableIndex::default();
        for _ in 0..MAX_SERVES_PER_PEER {
            assert_eq!(index.take_serve_slot("mallory"), Ok(Slot::Serve));
        }
        assert_eq!(
            index.take_serve_slot("mallory"),
            Err((ServeRefusal::PerPeer, true))
        );
        let mut n = MAX_SERVES_PER_PEER;
        let mut peer = 0;
        while n < MAX_SERVES {
            assert_eq!(index.take_serve_slot(&format!("u{peer}")), Ok(Slot::Serve));
            n += 1;
            peer = (peer + 1) % 100;
        }
        assert_eq!(
            index.take_serve_slot("carol"),
            Err((ServeRefusal::Total, true))
        );
        index.release("mallory", Slot::Serve);
        assert_eq!(index.take_serve_slot("carol"), Ok(Slot::Serve));
    }

    #[test]
    fn receiving_and_offers_are_found_in_any_case() {
        let mut index = TableIndex::default();
        index.start_receiving("Bob", "a.txt", 7);
        assert!(index.is_receiving("bob", "a.txt"));
        assert!(!index.is_receiving("bob", "A.txt"));
        index.stop_receiving("BOB", "a.txt", 8);
        assert!(index.is_receiving("bob", "a.txt"), "another transfer's end");
        index.stop_receiving("BOB", "a.txt", 7);
        assert!(!index.is_receiving("bob", "a.txt"));
        index.add_offer("Bob", Role::Receive, 3, 9);
        assert_eq!(index.offer("bob", Role::Receive, 3), Some(9));
        assert_eq!(index.offer("bob", Role::Send, 3), None);
        index.remove_offer("bob", Role::Receive, 3, 8);
        assert_eq!(
            index.offer("bob", Role::Receive, 3),
            Some(9),
            "not that one"
        );
        index.remove_offer("bob", Role::Receive, 3, 9);
        assert_eq!(index.offer("bob", Role::Receive, 3), None);
    }
}
