//! Test harness shared by every integration test file.
//!
//! It starts the real `peerchat-server` and `peerchat-client` binaries (no mocks), each
//! server on `127.0.0.1:0` with its own temporary directory and database, talks to the
//! server over real TCP sockets (`Wire`) and drives the client through stdin/stdout pipes
//! (`Client`). Every wait here is bounded, and every child process is killed on Drop so a
//! failing test never leaves processes behind. Tests never assert durations, only order.
//!
//! This file holds the shared waits and small helpers and re-exports every submodule, so a
//! test names `common::X` whatever file X lives in: `server` (the server process), `db`
//! (reading its database), `wire` (raw protocol connections), `tls` (their TLS halves,
//! fake TLS servers), `peer` (raw peer links), `client` (the client process), `lab`
//! (clients in one folder), `proxy` (a recording TCP proxy), `redis` and `postgres`.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tempfile::TempDir;

/// How long any single wait may take before the test fails (reading a line, a process
/// exiting, a server starting). Generous on purpose: it only matters when something hangs.
pub const WAIT: Duration = Duration::from_secs(15);

/// How long to poll for a state change that the server makes "promptly" (leaving the list).
pub const POLL: Duration = Duration::from_secs(10);

/// A password that satisfies the rules, for tests that do not care which one.
pub const PW: &str = "correct horse";

/// A second loopback address, so a connection can come from another source IP.
pub const OTHER_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

mod client;
mod db;
mod lab;
mod peer;
mod postgres;
mod proxy;
mod redis;
mod server;
mod tls;
mod wire;

// Each test binary uses only some of these.
#[allow(unused_imports)]
pub use self::{
    client::*, db::*, lab::*, peer::*, postgres::*, proxy::*, redis::*, server::*, tls::*, wire::*,
};

/// A TCP port that was free a moment ago (bound, then released).
///
/// Picked below the kernel's ephemeral range (32768 and up here), so no outgoing
/// connection of another test can take the port between this check and its use (the
/// race that made tests flaky under load); each test process walks its own sequence,
/// starting from a place derived from its pid.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7919) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// True if `line` is `prefix` or starts with `prefix` followed by a space (so that
/// `OK REGISTERED alice` does not match `OK REGISTERED alice2`).
pub fn line_matches(line: &str, prefix: &str) -> bool {
    line == prefix
        || (line.starts_with(prefix)
            && (prefix.ends_with(' ') || line[prefix.len()..].starts_with(' ')))
}

/// Shortens a line for error messages.
fn short(s: &str) -> String {
    if s.len() <= 200 {
        s.to_string()
    } else {
        let mut end = 200;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}... ({} bytes)", &s[..end], s.len())
    }
}

/// A one-shot barrier with a bounded wait: if not all `n` threads arrive within `WAIT`,
/// the waiting threads panic instead of hanging forever.
pub struct Gate {
    n: usize,
    arrived: Mutex<usize>,
    cv: Condvar,
}

impl Gate {
    /// A gate for `n` threads.
    pub fn new(n: usize) -> Arc<Gate> {
        Arc::new(Gate {
            n,
            arrived: Mutex::new(0),
            cv: Condvar::new(),
        })
    }

    /// Blocks until all `n` threads have called `wait`.
    pub fn wait(&self) {
        let deadline = Instant::now() + WAIT;
        let mut arrived = self.arrived.lock().unwrap();
        *arrived += 1;
        self.cv.notify_all();
        while *arrived < self.n {
            let now = Instant::now();
            if now >= deadline {
                panic!("only {} of {} threads reached the gate", *arrived, self.n);
            }
            arrived = self.cv.wait_timeout(arrived, deadline - now).unwrap().0;
        }
    }
}

/// A loopback source address per index: 127.0.0.2, 127.0.0.3, ... (then 127.0.1.x), so
/// a test can act from many addresses at once.
pub fn loopback(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, (i / 250) as u8, (2 + i % 250) as u8))
}
