//! The peerchat benchmark suite (issue 5).
//!
//! `make bench` builds the release binaries, raises the open-file limit and runs this
//! program with `cargo bench --bench peerchat`; `cargo bench --bench peerchat -- GROUP`
//! runs one group (`transfer`, `chat`, `scale`, `login`, `burst`, `cipher`, `gui`,
//! `wormhole`, `cluster`), and `--quick` runs
//! every group with small sizes (a smoke test of the bench itself, not a measurement).
//!
//! The program drives the real `peerchat-server` and `peerchat-client` from
//! `target/release` over loopback, in temporary folders, with bounded waits. Every
//! figure comes with a baseline measured in the same run (the machine is shared, so
//! absolute times are noisy and ratios are what to read), and every figure is the median
//! of several runs. Baseline processes are this program again, re-executed with
//! `PEERCHAT_BENCH_ROLE` set (`copy-send`, `copy-recv`, `echo`).
//!
//! This file holds the settings, the entry point and the shared constants; each group
//! is a file under `benches/peerchat/` (`transfer`, `chat`, `login`, `burst`, `cipher`,
//! `gui`, `wormhole`, `relay`, `cluster`), beside the shared harness (`harness`: child
//! processes, the server, two clients in a session), `roles` (the baselines' helper
//! processes), `raw` (raw server connections) and `report` (statistics, the table).
//!
//! Every child gets `PR_SET_PDEATHSIG`, so nothing outlives the bench, and is killed when
//! its handle drops (also while a panic unwinds). Under `cargo test --all-targets` the
//! program runs without `--bench` and only prints "skipped".

use std::cell::Cell;
use std::collections::HashMap;
use std::env;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Condvar, Mutex, PoisonError, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use peerchat::crypto::tls::{BlockingTls, Trust, blocking_client};
use peerchat::protocol::limits::{FLOOD_BURST, FLOOD_RATE};

/// The `gui` group (the web front end).
#[path = "peerchat/gui.rs"]
mod gui;
/// The `relay` group (the ladder's relay rung).
#[path = "peerchat/relay.rs"]
mod relay;

/// The `wormhole` group (peerchat's push next to magic-wormhole, when installed).
#[path = "peerchat/wormhole.rs"]
mod wormhole;

/// The `cluster` group (two servers on Redis against one).
#[path = "peerchat/cluster.rs"]
mod cluster;

/// The `scale` group (thousands online on one server).
#[path = "peerchat/scale.rs"]
mod scale;

// The harness, the helper roles, raw connections and the report.
#[path = "peerchat/harness.rs"]
mod harness;
#[path = "peerchat/raw.rs"]
mod raw;
#[path = "peerchat/report.rs"]
mod report;
#[path = "peerchat/roles.rs"]
mod roles;

// Groups 1, 2, 4, 5 and W2.
#[path = "peerchat/burst.rs"]
mod burst;
#[path = "peerchat/chat.rs"]
mod chat;
#[path = "peerchat/cipher.rs"]
mod cipher;
#[path = "peerchat/login.rs"]
mod login;
#[path = "peerchat/transfer.rs"]
mod transfer;

use harness::*;
use login::{login_rate_within, verify_rate};
use raw::*;
use report::*;
use roles::*;

/// Selects a helper role when this program re-executes itself.
const ROLE_ENV: &str = "PEERCHAT_BENCH_ROLE";
/// The file a copy role reads or writes.
const FILE_ENV: &str = "PEERCHAT_BENCH_FILE";
/// Where `copy-send` connects.
const ADDR_ENV: &str = "PEERCHAT_BENCH_ADDR";
/// A read buffer size for `copy-recv` instead of `std::io::copy`.
const BUF_ENV: &str = "PEERCHAT_BENCH_BUF";

/// Every account's password.
const PASSWORD: &str = "bench-password";
/// The peer port raw-socket users declare (nobody listens there; only `INFO` shows it).
const RAW_PORT: u16 = 40000;
const MIB: u64 = 1 << 20;
/// Waits for things that take well under a second when all is well.
const SHORT: Duration = Duration::from_secs(30);

const GROUPS: [&str; 10] = [
    "transfer", "chat", "scale", "login", "burst", "cipher", "gui", "wormhole", "relay", "cluster",
];

/// Children alive now, killed by the panic hook (their handles also kill them on drop).
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

// ---------------------------------------------------------------------------------------
// Settings and entry point

/// Sizes and counts of one bench run.
struct Settings {
    /// Runs per figure; the median is reported.
    runs: usize,
    /// Runs of each transfer (cheap, and the noisiest figure).
    transfer_runs: usize,
    /// File sizes to transfer; the last one is also used for the resume figure.
    sizes: Vec<u64>,
    /// Round trips per chat RTT run.
    rtt_messages: usize,
    /// Lines sent at once for the chat throughput figure.
    flood_lines: usize,
    /// Bytes of chat text per throughput line.
    flood_line_bytes: usize,
    /// Online users at which the server is measured; the last is the scale target.
    scale_levels: Vec<usize>,
    /// Logins at bcrypt cost 12 during the loaded measurement and per login-rate run.
    hard_logins: usize,
    /// Logins at cost 4 per login-rate run.
    easy_logins: usize,
    /// Registrations at cost 4 per run.
    registrations: usize,
    /// Parallel workers for login rates.
    login_workers: usize,
    /// Clients in the connection burst.
    burst: usize,
    /// Connections made one at a time.
    sequential: usize,
    /// Requests per command per level in the scale figure.
    probes: usize,
    /// The file sent by peerchat and by magic-wormhole in the `wormhole` group.
    wormhole_size: u64,
}

impl Settings {
    fn full() -> Settings {
        Settings {
            runs: 3,
            transfer_runs: 7,
            sizes: vec![100 * MIB, 1024 * MIB],
            rtt_messages: 10_000,
            flood_lines: 4000,
            flood_line_bytes: 1024,
            scale_levels: vec![100, 1000, 10_000],
            hard_logins: 50,
            easy_logins: 1000,
            registrations: 300,
            login_workers: 4,
            burst: 1000,
            sequential: 300,
            probes: 200,
            wormhole_size: 512 * MIB,
        }
    }

    fn quick() -> Settings {
        Settings {
            runs: 3,
            transfer_runs: 3,
            sizes: vec![8 * MIB, 64 * MIB],
            rtt_messages: 1000,
            flood_lines: 4000,
            flood_line_bytes: 1024,
            scale_levels: vec![100, 500],
            hard_logins: 6,
            easy_logins: 200,
            registrations: 60,
            login_workers: 4,
            burst: 200,
            sequential: 50,
            probes: 50,
            wormhole_size: 64 * MIB,
        }
    }
}

fn main() {
    if let Ok(role) = env::var(ROLE_ENV) {
        std::process::exit(run_role(&role));
    }
    let args: Vec<String> = env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        println!(
            "peerchat bench: skipped (run it with `make bench` or `cargo bench --bench peerchat`)"
        );
        return;
    }
    let quick =
        args.iter().any(|a| a == "--quick") || env::var_os("PEERCHAT_BENCH_QUICK").is_some();
    let filters: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with('-'))
        .map(String::as_str)
        .collect();
    let selected: Vec<&str> = GROUPS
        .iter()
        .copied()
        .filter(|g| filters.is_empty() || filters.iter().any(|f| g.contains(f)))
        .collect();
    if selected.is_empty() {
        eprintln!(
            "peerchat bench: no group matches {filters:?}; groups: {}",
            GROUPS.join(", ")
        );
        std::process::exit(2);
    }
    install_panic_hook();
    let nofile = raise_nofile_limit();
    let bins = Bins::find();
    let settings = if quick {
        Settings::quick()
    } else {
        Settings::full()
    };
    print_machine(nofile, quick);

    let mut report = Report::default();
    let mut failed = Vec::new();
    let all = Instant::now();
    for group in selected {
        println!("\n== {group} ==");
        let started = Instant::now();
        let result = panic::catch_unwind(AssertUnwindSafe(|| match group {
            "transfer" => transfer::group_transfer(&settings, &bins, &mut report),
            "chat" => chat::group_chat(&settings, &bins, &mut report),
            "scale" => scale::group_scale(&settings, &bins, &mut report, nofile),
            "login" => login::group_login(&settings, &bins, &mut report),
            "burst" => burst::group_burst(&settings, &bins, &mut report),
            "cipher" => cipher::group_cipher(&settings, &mut report),
            "gui" => gui::group_gui(&settings, &bins, &mut report),
            "wormhole" => wormhole::group_wormhole(&settings, &bins, &mut report),
            "relay" => relay::group_relay(&settings, &bins, &mut report),
            "cluster" => cluster::group_cluster(&settings, &bins, &mut report),
            _ => unreachable!("unknown group"),
        }));
        match result {
            Ok(()) => println!(
                "== {group}: done in {:.0} s",
                started.elapsed().as_secs_f64()
            ),
            Err(payload) => {
                let why = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panic".into());
                let first = why.lines().next().unwrap_or("").to_string();
                println!("== {group}: FAILED: {first}");
                report.note(format!("{group}: FAILED: {first}"));
                failed.push(group);
            }
        }
    }
    report.print();
    println!(
        "\nTotal time: {:.0} s{}",
        all.elapsed().as_secs_f64(),
        if quick {
            " (--quick: sizes are not the issue's)"
        } else {
            ""
        }
    );
    if !failed.is_empty() {
        std::process::exit(1);
    }
}
