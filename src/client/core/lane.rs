//! A queue into the core loop whose sending thread may handle an item itself.
//!
//! Every hand-off from one thread to another that is asleep costs a wake-up, and on a
//! virtual machine a wake-up of an idle CPU is the dearest thing a chat line does
//! (`perf`: more than the encryption, the socket and the terminal together). A chat line
//! used to cross two of them inside each client: the typing thread woke the core, and
//! on the other side the peer's reader woke the core. A [`Lane`] lets the sending thread
//! run the item through the core itself (the core's *shortcut*) when the core is idle
//! (its lock is free) and everything sent earlier through the same lane has been
//! handled; otherwise the item is queued as before and the core's thread handles it.
//! So the order within a lane is exactly the channel's, and the core still handles one
//! thing at a time.
//!
//! Owns the hand-off rule and the counts it needs. It must not know what the items mean:
//! the core's shortcut decides which kinds it takes (chat lines; everything else is
//! queued), and the core's loop calls [`LaneEnd::handled`] after each queued item.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crossbeam_channel::{Receiver, SendError, SendTimeoutError, Sender, bounded};

/// Handles an item on the sending thread, or gives it back to be queued. Called with
/// the lane's counts so it can check, under the core's lock, that the lane is drained.
pub type Shortcut<T> = Box<dyn Fn(T, &Counts) -> Result<(), T> + Send + Sync>;

/// How many items went into a lane's channel and how many the core has handled.
#[derive(Debug, Default)]
pub struct Counts {
    /// Counted before each item enters the channel.
    sent: AtomicU64,
    /// Counted by the core after handling each queued item, with its lock held.
    handled: AtomicU64,
}

impl Counts {
    /// True when everything queued so far has been handled. Only meaningful with the
    /// core's lock held: then no handled item can be counted meanwhile, and an item
    /// counted as sent but not yet handled keeps this false.
    pub fn drained(&self) -> bool {
        self.sent.load(Ordering::SeqCst) == self.handled.load(Ordering::SeqCst)
    }
}

/// The sending side; cheap to clone, one per thread that sends.
pub struct Lane<T> {
    tx: Sender<T>,
    counts: Arc<Counts>,
    shortcut: Arc<OnceLock<Shortcut<T>>>,
}

impl<T> Clone for Lane<T> {
    fn clone(&self) -> Lane<T> {
        Lane {
            tx: self.tx.clone(),
            counts: Arc::clone(&self.counts),
            shortcut: Arc::clone(&self.shortcut),
        }
    }
}

/// The core loop's side.
pub struct LaneEnd<T> {
    /// Queued items, in order.
    pub rx: Receiver<T>,
    counts: Arc<Counts>,
}

/// A lane holding at most `cap` queued items (a sender waits beyond that).
pub fn bounded_lane<T>(cap: usize) -> (Lane<T>, LaneEnd<T>) {
    let (tx, rx) = bounded(cap);
    let counts = Arc::new(Counts::default());
    (
        Lane {
            tx,
            counts: Arc::clone(&counts),
            shortcut: Arc::new(OnceLock::new()),
        },
        LaneEnd { rx, counts },
    )
}

impl<T> Lane<T> {
    /// Sets the core's shortcut (once; later calls are ignored). Before it is set every
    /// item is queued.
    pub fn set_shortcut(&self, shortcut: Shortcut<T>) {
        let _ = self.shortcut.set(shortcut);
    }

    /// Hands `item` to the core: handled on this thread when the shortcut takes it,
    /// else queued (waiting while the queue is full). Fails when the core has stopped.
    pub fn send(&self, item: T) -> Result<(), SendError<T>> {
        let item = match self.try_shortcut(item) {
            Ok(()) => return Ok(()),
            Err(item) => item,
        };
        self.counts.sent.fetch_add(1, Ordering::SeqCst);
        self.tx.send(item).inspect_err(|_| self.uncount())
    }

    /// [`Lane::send`] waiting at most `wait` for room in the queue.
    pub fn send_timeout(&self, item: T, wait: Duration) -> Result<(), SendTimeoutError<T>> {
        let item = match self.try_shortcut(item) {
            Ok(()) => return Ok(()),
            Err(item) => item,
        };
        self.counts.sent.fetch_add(1, Ordering::SeqCst);
        self.tx
            .send_timeout(item, wait)
            .inspect_err(|_| self.uncount())
    }

    fn try_shortcut(&self, item: T) -> Result<(), T> {
        match self.shortcut.get() {
            Some(shortcut) => shortcut(item, &self.counts),
            None => Err(item),
        }
    }

    /// An item counted but not queued (the core is gone, or the wait ran out).
    fn uncount(&self) {
        self.counts.sent.fetch_sub(1, Ordering::SeqCst);
    }
}

impl<T> LaneEnd<T> {
    /// Records that one queued item has been handled. Call with the core's lock held,
    /// after handling it, so a shortcut never overtakes an item taken off the queue.
    pub fn handled(&self) {
        self.counts.handled.fetch_add(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::thread;

    /// A core that records what it handled and where; the shortcut takes even numbers.
    struct Core {
        seen: Vec<(u32, bool)>,
    }

    fn lane_with_core() -> (Lane<u32>, LaneEnd<u32>, Arc<Mutex<Core>>) {
        let (lane, end) = bounded_lane(16);
        let core = Arc::new(Mutex::new(Core { seen: Vec::new() }));
        let weak = Arc::downgrade(&core);
        lane.set_shortcut(Box::new(move |item: u32, counts: &Counts| {
            if item % 2 == 1 {
                return Err(item);
            }
            let Some(core) = weak.upgrade() else {
                return Err(item);
            };
            let Ok(mut core) = core.try_lock() else {
                return Err(item);
            };
            if !counts.drained() {
                return Err(item);
            }
            core.seen.push((item, true));
            Ok(())
        }));
        (lane, end, core)
    }

    #[test]
    fn an_idle_core_takes_the_item_on_the_sending_thread() {
        let (lane, end, core) = lane_with_core();
        lane.send(2).unwrap();
        assert_eq!(core.lock().unwrap().seen, vec![(2, true)]);
        assert!(end.rx.is_empty(), "nothing was queued");
    }

    #[test]
    fn an_item_never_overtakes_one_queued_before_it() {
        let (lane, end, core) = lane_with_core();
        lane.send(1).unwrap(); // odd: queued
        lane.send(4).unwrap(); // the queue holds 1, so 4 waits behind it
        assert!(core.lock().unwrap().seen.is_empty());
        assert_eq!(end.rx.len(), 2);
        // The core takes 1 off the queue; until it has counted it handled, 6 must queue.
        let one = end.rx.recv().unwrap();
        lane.send(6).unwrap();
        let mut guard = core.lock().unwrap();
        guard.seen.push((one, false));
        end.handled();
        for item in [end.rx.recv().unwrap(), end.rx.recv().unwrap()] {
            guard.seen.push((item, false));
            end.handled();
        }
        drop(guard);
        lane.send(8).unwrap();
        assert_eq!(
            core.lock().unwrap().seen,
            vec![(1, false), (4, false), (6, false), (8, true)]
        );
    }

    #[test]
    fn a_busy_core_gets_the_item_queued() {
        let (lane, end, core) = lane_with_core();
        let guard = core.lock().unwrap();
        let sender = {
            let lane = lane.clone();
            thread::spawn(move || lane.send(10).unwrap())
        };
        sender.join().unwrap();
        drop(guard);
        assert_eq!(end.rx.try_recv().unwrap(), 10);
        assert!(core.lock().unwrap().seen.is_empty());
    }

    #[test]
    fn a_stopped_core_fails_the_send_and_keeps_the_counts_true() {
        let (lane, end, core) = lane_with_core();
        drop(core);
        drop(end);
        assert!(lane.send(2).is_err());
        assert!(lane.counts.drained());
        assert!(lane.send_timeout(3, Duration::from_millis(1)).is_err());
        assert!(lane.counts.drained());
    }
}
