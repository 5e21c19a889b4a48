//! The bcrypt queue: how many password hashes run at once, who may wait for one, and for
//! how long.
//!
//! Owns the permits and the waiting line. At most `permits` hashes run at once; a caller
//! waits for a permit only until its deadline, and is refused at once when the line ahead
//! of it could not be served by then, or when its address already has
//! [`MAX_HASHING_PER_IP`] logins waiting or hashing. The lock is a leaf held only to
//! count, never while hashing. It must not know about logins or the protocol.
//!
//! The hashes themselves run on the gate's own worker threads (one per permit), which
//! lower their own scheduling priority to the lowest (nice 19) when they start: a
//! command that needs microseconds of CPU then preempts a hash at once instead of waiting
//! for a time slice, so `LIST`, `INFO` and `SEARCH` stay fast while logins hash. A
//! thread cannot raise its priority back without privileges, hence dedicated threads
//! instead of lowering the caller's for the length of one hash.

use std::collections::HashMap;
use std::net::IpAddr;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded, unbounded};

use super::rate_limit::lock;
use crate::protocol::limits::MAX_HASHING_PER_IP;

/// Why a hash did not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateRefusal {
    /// The line is longer than the deadline allows: refused at once.
    Busy,
    /// This address has too many hashes waiting or running already.
    AddressBusy,
    /// The deadline passed while waiting.
    TimedOut,
}

struct State {
    /// Hashes that may still start.
    free: usize,
    /// Callers waiting for a permit.
    waiting: usize,
    /// Waiting or running hashes per address.
    per_address: HashMap<IpAddr, usize>,
    /// Recent hash duration (moving average), to predict waits.
    typical: Duration,
}

/// A counting semaphore around bcrypt with deadlines and per-address caps.
pub struct HashGate {
    /// Hashes that may run at once.
    permits: usize,
    /// Per-address cap on waiting + running hashes.
    per_address_max: usize,
    state: Mutex<State>,
    /// Signalled when a permit comes back.
    freed: Condvar,
    /// Jobs for the hashing threads. A caller sends only while it holds a permit, and
    /// there is one thread per permit, so a job never waits here for a thread.
    jobs: Sender<Job>,
}

/// One hash for a worker thread: it runs the closure and sends back the result.
type Job = Box<dyn FnOnce() + Send>;

/// Stack of a hashing thread: bcrypt's state is a few KiB.
const WORKER_STACK: usize = 256 * 1024;

/// The nice value of the hashing threads: the lowest priority.
pub const HASHING_NICE: i32 = 19;

/// The name of the hashing threads (seen in `/proc/<pid>/task/*/comm`).
pub const HASHING_THREAD: &str = "bcrypt";

impl HashGate {
    /// One permit per core but one (at least one), leaving a core for everything else;
    /// `typical` is what one hash costs (measured at start-up).
    pub fn for_this_machine(typical: Duration) -> HashGate {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        HashGate::new(cores.saturating_sub(1).max(1), MAX_HASHING_PER_IP, typical)
    }

    /// A gate that lets `permits` hashes run at once, `per_address_max` per address.
    pub fn new(permits: usize, per_address_max: usize, typical: Duration) -> HashGate {
        let permits = permits.max(1);
        let (jobs, queue) = unbounded::<Job>();
        for _ in 0..permits {
            let queue = queue.clone();
            // Without its threads the gate would hang every login: failing to start one
            // at start-up is fatal, like failing to bind.
            thread::Builder::new()
                .name(HASHING_THREAD.into())
                .stack_size(WORKER_STACK)
                .spawn(move || worker(&queue))
                .expect("starting a hashing thread");
        }
        HashGate {
            jobs,
            permits,
            per_address_max: per_address_max.max(1),
            state: Mutex::new(State {
                free: permits,
                waiting: 0,
                per_address: HashMap::new(),
                typical,
            }),
            freed: Condvar::new(),
        }
    }

    /// Runs `hash` for `address` on a low-priority hashing thread once a permit is free,
    /// if that happens by `deadline`, and waits for it. A panic in `hash` is raised again
    /// here, in the caller.
    pub fn run<T: Send + 'static>(
        &self,
        address: IpAddr,
        deadline: Instant,
        hash: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, GateRefusal> {
        {
            let mut s = lock(&self.state);
            let mine = s.per_address.get(&address).copied().unwrap_or(0);
            if mine >= self.per_address_max {
                return Err(GateRefusal::AddressBusy);
            }
            if s.free == 0 || s.waiting > 0 {
                // Served in rounds of `permits`: this caller starts after round
                // ⌈(waiting+1)/p⌉ and needs one more for its own hash (a margin for hashes
                // slower than the average, too).
                let rounds = (s.waiting / self.permits + 2) as u32;
                let expected = s.typical.saturating_mul(rounds);
                if Instant::now() + expected > deadline {
                    return Err(GateRefusal::Busy);
                }
            }
            *s.per_address.entry(address).or_insert(0) += 1;
            s.waiting += 1;
            while s.free == 0 {
                let now = Instant::now();
                if now >= deadline {
                    s.waiting -= 1;
                    leave(&mut s, address);
                    return Err(GateRefusal::TimedOut);
                }
                s = self
                    .freed
                    .wait_timeout(s, deadline - now)
                    .map(|(guard, _)| guard)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
            s.waiting -= 1;
            s.free -= 1;
        }
        // Released on drop, so even a panic inside `hash` gives the permit back.
        let permit = Permit {
            gate: self,
            address,
            started: Instant::now(),
        };
        let (done, result) = bounded(1);
        let job: Job = Box::new(move || {
            let out = panic::catch_unwind(AssertUnwindSafe(hash));
            let _ = done.send(out);
        });
        self.jobs
            .send(job)
            .expect("the hashing threads live as long as the gate");
        let out = result
            .recv()
            .expect("a hashing thread answers every job it takes");
        drop(permit);
        match out {
            Ok(out) => Ok(out),
            Err(payload) => panic::resume_unwind(payload),
        }
    }

    /// Runs `hash` once on a hashing thread, at the priority logins get, and takes its
    /// duration as what one hash costs (instead of the moving average so far). For the
    /// server's start, when the gate is idle (a busy one refuses, as `run` does).
    pub fn calibrate<T: Send + 'static>(
        &self,
        hash: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, GateRefusal> {
        let far = Instant::now() + Duration::from_secs(24 * 3600);
        let timed = move || {
            let started = Instant::now();
            let out = hash();
            (out, started.elapsed())
        };
        let (out, took) = self.run(IpAddr::from([0, 0, 0, 0]), far, timed)?;
        lock(&self.state).typical = took;
        Ok(out)
    }

    /// Hashes waiting for a permit now.
    pub fn waiting(&self) -> usize {
        lock(&self.state).waiting
    }
}

/// A hashing thread: lowers its own priority, then runs jobs until the gate is dropped.
fn worker(queue: &Receiver<Job>) {
    lower_own_priority();
    while let Ok(job) = queue.recv() {
        job();
    }
}

/// Sets this thread's nice value to [`HASHING_NICE`]. On Linux `setpriority` with a
/// thread id changes only that thread. Lowering one's own priority needs no privilege;
/// if it fails anyway the thread hashes at normal priority, as before.
fn lower_own_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid and setpriority take no pointers and change only this thread.
        let rc = unsafe {
            let tid = libc::gettid();
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, HASHING_NICE)
        };
        if rc != 0 {
            log::warn!(
                "hashing at normal priority: setpriority: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

fn leave(s: &mut State, address: IpAddr) {
    if let Some(n) = s.per_address.get_mut(&address) {
        *n -= 1;
        if *n == 0 {
            s.per_address.remove(&address);
        }
    }
}

struct Permit<'a> {
    gate: &'a HashGate,
    address: IpAddr,
    started: Instant,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let took = self.started.elapsed();
        let mut s = lock(&self.gate.state);
        s.free += 1;
        leave(&mut s, self.address);
        // A moving average over about eight hashes follows a changing load.
        s.typical = (s.typical.saturating_mul(7) + took) / 8;
        drop(s);
        // Every waiter looks: one whose deadline passed leaves, the next one runs.
        self.gate.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    #[test]
    fn calibrating_takes_what_one_hash_on_a_hashing_thread_cost() {
        let gate = HashGate::new(1, 100, Duration::from_millis(1));
        let on = gate
            .calibrate(|| {
                thread::sleep(Duration::from_millis(60));
                thread::current().name().map(str::to_string)
            })
            .unwrap();
        assert_eq!(on.as_deref(), Some(HASHING_THREAD));
        assert!(lock(&gate.state).typical >= Duration::from_millis(60));
    }

    #[test]
    fn the_gate_never_lets_more_than_its_permits_run() {
        let gate = Arc::new(HashGate::new(2, 100, Duration::from_millis(1)));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let (gate, running, most) = (gate.clone(), running.clone(), most.clone());
                std::thread::spawn(move || {
                    gate.run(ip(i), far(), move || {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(20));
                        running.fetch_sub(1, Ordering::SeqCst);
                    })
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap().unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 2);
        assert_eq!(
            gate.run(ip(1), far(), || 7),
            Ok(7),
            "every permit came back"
        );
    }

    #[test]
    fn a_line_longer_than_the_deadline_is_refused_at_once_and_waiters_are_cut() {
        let gate = Arc::new(HashGate::new(1, 100, Duration::from_millis(200)));
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let holder = {
            let gate = gate.clone();
            std::thread::spawn(move || {
                gate.run(ip(1), far(), move || {
                    started_tx.send(()).unwrap();
                    release_rx.recv().unwrap();
                })
            })
        };
        started_rx.recv().unwrap();
        // One hash (200 ms) ahead, one to run, and 300 ms to go: refused without waiting.
        let soon = Instant::now() + Duration::from_millis(300);
        assert_eq!(gate.run(ip(2), soon, || ()), Err(GateRefusal::Busy));
        // Time enough by the estimate, but the holder never finishes: cut at the deadline.
        let by = Instant::now() + Duration::from_millis(600);
        assert_eq!(gate.run(ip(2), by, || ()), Err(GateRefusal::TimedOut));
        assert!(Instant::now() >= by);
        assert_eq!(gate.waiting(), 0);
        release_tx.send(()).unwrap();
        holder.join().unwrap().unwrap();
    }

    #[test]
    fn one_address_may_not_queue_more_than_its_share() {
        let gate = Arc::new(HashGate::new(1, 1, Duration::from_millis(1)));
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let holder = {
            let gate = gate.clone();
            std::thread::spawn(move || {
                gate.run(ip(1), far(), move || {
                    started_tx.send(()).unwrap();
                    release_rx.recv().unwrap();
                })
            })
        };
        started_rx.recv().unwrap();
        assert_eq!(gate.run(ip(1), far(), || ()), Err(GateRefusal::AddressBusy));
        release_tx.send(()).unwrap();
        holder.join().unwrap().unwrap();
        assert_eq!(gate.run(ip(1), far(), || 1), Ok(1));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn hashes_run_on_a_thread_of_the_lowest_priority_and_panics_reach_the_caller() {
        let gate = HashGate::new(1, 100, Duration::from_millis(1));
        let mine = unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) };
        // SAFETY (in the closure as here): getpriority and gettid take no pointers.
        let (nice, name) = gate
            .run(ip(1), far(), || {
                let nice =
                    unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) };
                (nice, std::thread::current().name().map(str::to_string))
            })
            .unwrap();
        assert_eq!(nice, HASHING_NICE);
        assert_eq!(name.as_deref(), Some(HASHING_THREAD));
        assert_eq!(
            unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) },
            mine,
            "the caller's priority is untouched"
        );
        let caught = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let _ = gate.run(ip(1), far(), || panic!("in the hash"));
        }));
        assert!(caught.is_err(), "the panic reached the caller");
        assert_eq!(gate.run(ip(1), far(), || 3), Ok(3), "the permit came back");
    }
}
