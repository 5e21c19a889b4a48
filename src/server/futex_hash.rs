//! The size of the kernel's futex hash for this process (Linux 6.16 and later).
//!
//! Owns one start-up call and nothing else. Since Linux 6.16 a multi-threaded process
//! gets a private futex hash table sized from `min(threads, online CPUs)`: on this
//! 2-core machine 16 buckets, whatever the number of threads. Every thread that waits
//! (a writer thread parked on its empty queue, a condvar, a contended mutex) hangs in
//! one bucket's list, and every wake-up walks its bucket's list. With one writer thread
//! per connection, 10,000 clients put about 600 waiters in each of the 16 lists, so
//! every wake-up in the server (a reply handed to a writer, a presence line, a bcrypt
//! result) cost O(online users) of kernel time: issue 14's "CPU per login grows with
//! the number online" (perf at 3,000 online: `futex_wake` itself 27% of the server's
//! CPU). Asking for a bucket per thread (`PR_FUTEX_HASH_SET_SLOTS`) makes the lists
//! short again. Older kernels have one global table and refuse the call: nothing to do.
//! It must not be called per connection: resizing moves every waiter.

/// `prctl` option and sub-commands of the private futex hash (linux/prctl.h, 6.16).
#[cfg(target_os = "linux")]
const PR_FUTEX_HASH: libc::c_int = 78;
#[cfg(target_os = "linux")]
const PR_FUTEX_HASH_SET_SLOTS: libc::c_ulong = 1;
#[cfg(target_os = "linux")]
const PR_FUTEX_HASH_GET_SLOTS: libc::c_ulong = 2;

/// Most buckets asked for: 64 bytes each in the kernel, so 4 MiB.
pub const MAX_SLOTS: usize = 1 << 16;

/// The buckets for a server of `max_clients` connections: about one per thread (a
/// connection has a reader and a writer thread), a power of two, at least 256.
pub fn slots_for(max_clients: usize) -> usize {
    // Capped before rounding up: a power of two above `MAX_SLOTS` may not exist.
    max_clients
        .saturating_mul(2)
        .min(MAX_SLOTS)
        .next_power_of_two()
        .max(256)
}

/// The buckets of this process's private futex hash now; `None` when the kernel has no
/// private hash (before 6.16) or it uses the global one.
pub fn slots() -> Option<usize> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl with integer arguments only; GET_SLOTS reads nothing from us.
        let n = unsafe { libc::prctl(PR_FUTEX_HASH, PR_FUTEX_HASH_GET_SLOTS, 0, 0, 0) };
        (n > 0).then_some(n as usize)
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// Gives this process a private futex hash of `wanted` buckets (a power of two), unless
/// it has at least that many already. Returns the buckets it has afterwards (`None`:
/// the kernel has no private hash, and its global table is used).
pub fn ensure(wanted: usize) -> Option<usize> {
    let now = slots();
    if now.is_some_and(|n| n >= wanted) {
        return now;
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl with integer arguments only.
        let rc = unsafe {
            libc::prctl(
                PR_FUTEX_HASH,
                PR_FUTEX_HASH_SET_SLOTS,
                wanted as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            )
        };
        if rc != 0 {
            log::debug!(
                "futex hash left as it is ({now:?} buckets): {}",
                std::io::Error::last_os_error()
            );
        }
    }
    slots()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn about_one_bucket_per_thread_within_bounds() {
        assert_eq!(slots_for(1), 256);
        assert_eq!(slots_for(1024), 2048);
        assert_eq!(slots_for(10_100), 32_768);
        assert_eq!(slots_for(65_536), MAX_SLOTS);
        assert_eq!(slots_for(usize::MAX), MAX_SLOTS);
    }

    #[test]
    fn the_hash_grows_where_the_kernel_has_a_private_one() {
        // Test threads exist, so on 6.16+ the process has a private hash already.
        let before = slots();
        let after = ensure(4096);
        if before.is_some() {
            assert!(after.is_some_and(|n| n >= 4096), "{before:?} -> {after:?}");
        }
        // (Before 6.16 there is one global table: the call changes nothing.)
        // Never shrinks.
        assert_eq!(ensure(256), after);
    }
}
