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
            "transfer" => group_transfer(&settings, &bins, &mut report),
            "chat" => group_chat(&settings, &bins, &mut report),
            "scale" => scale::group_scale(&settings, &bins, &mut report, nofile),
            "login" => group_login(&settings, &bins, &mut report),
            "burst" => group_burst(&settings, &bins, &mut report),
            "cipher" => group_cipher(&settings, &mut report),
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

/// Kills every child still running before the default hook prints the panic.
fn install_panic_hook() {
    let default = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        if let Ok(children) = CHILDREN.try_lock() {
            for &pid in children.iter() {
                // SAFETY: plain system call; the pids are our own unreaped children.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGKILL);
                }
            }
        }
        default(info);
    }));
}

/// Open files the bench wants: the server and the bench each hold one descriptor per
/// client (the server inherits the bench's limit), 10,000 and a few hundred each.
const WANTED_NOFILE: u64 = 65_536;

/// Raises the open-file limit: the hard limit too, up to [`WANTED_NOFILE`] (and never past
/// the kernel's `fs.nr_open`), which only root may do; otherwise the soft limit to the
/// hard one. Returns the limit now in force.
fn raise_nofile_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    let nr_open = fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok())
        .unwrap_or(WANTED_NOFILE);
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        let wanted = WANTED_NOFILE.min(nr_open);
        if limit.rlim_max < wanted {
            let raised = libc::rlimit {
                rlim_cur: wanted,
                rlim_max: wanted,
            };
            // Fails (EPERM) unless root (CAP_SYS_RESOURCE): then the soft limit below.
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return wanted;
            }
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    limit.rlim_cur
}

fn print_machine(nofile: u64, quick: bool) {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown".into());
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "peerchat bench {}: {} cores ({model}), {:.1} GiB RAM, Linux {}, open-file limit {nofile}{}",
        chrono::Local::now().format("%Y-%m-%d %H:%M"),
        cores(),
        mem_kib as f64 / (1024.0 * 1024.0),
        kernel.trim(),
        if quick { ", QUICK sizes" } else { "" }
    );
}

fn cores() -> usize {
    thread::available_parallelism().map_or(1, |n| n.get())
}

/// The binaries under test and this program.
struct Bins {
    server: PathBuf,
    client: PathBuf,
    me: PathBuf,
}

impl Bins {
    fn find() -> Bins {
        let target = env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
        let release = target.join("release");
        let bins = Bins {
            server: release.join("peerchat-server"),
            client: release.join("peerchat-client"),
            me: env::current_exe().expect("the bench's own path"),
        };
        for bin in [&bins.server, &bins.client] {
            assert!(
                bin.is_file(),
                "{} is missing: run `cargo build --release --bins` (make bench does)",
                bin.display()
            );
        }
        bins
    }
}

// ---------------------------------------------------------------------------------------
// Helper roles (this program re-executed)

fn run_role(role: &str) -> i32 {
    let result = match role {
        "copy-send" => role_copy_send(),
        "copy-recv" => role_copy_recv(),
        "echo" => role_echo(),
        other => Err(io::Error::other(format!("unknown role {other}"))),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("peerchat bench role {role}: {e}");
            1
        }
    }
}

fn env_path(name: &str) -> io::Result<PathBuf> {
    env::var_os(name)
        .map(PathBuf::from)
        .ok_or_else(|| io::Error::other(format!("{name} is not set")))
}

/// Accepts one connection and copies it into a file with `std::io::copy` (which moves
/// 8 KiB per system call from a socket to a file), or, when `PEERCHAT_BENCH_BUF` is set,
/// with a plain read/write loop on a buffer of that many bytes.
fn role_copy_recv() -> io::Result<()> {
    let path = env_path(FILE_ENV)?;
    let buffer: Option<usize> = env::var(BUF_ENV).ok().and_then(|b| b.parse().ok());
    let listener = TcpListener::bind("127.0.0.1:0")?;
    println!("port {}", listener.local_addr()?.port());
    let (mut stream, _) = listener.accept()?;
    let mut file = File::create(path)?;
    let copied = match buffer {
        None => io::copy(&mut stream, &mut file)?,
        Some(size) => {
            let mut buf = vec![0u8; size];
            let mut copied = 0;
            loop {
                let n = match stream.read(&mut buf) {
                    Ok(0) => break copied,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                file.write_all(&buf[..n])?;
                copied += n as u64;
            }
        }
    };
    println!("done {copied} {:.3}", own_cpu_secs());
    Ok(())
}

/// Waits for `go` on stdin, then connects and copies a file into the socket with
/// `std::io::copy`.
fn role_copy_send() -> io::Result<()> {
    let path = env_path(FILE_ENV)?;
    let addr = env::var(ADDR_ENV).map_err(|_| io::Error::other("no address"))?;
    let mut file = File::open(path)?;
    println!("ready");
    let mut go = String::new();
    io::stdin().read_line(&mut go)?;
    let mut stream = TcpStream::connect(addr)?;
    io::copy(&mut file, &mut stream)?;
    stream.shutdown(Shutdown::Write)?;
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    println!("sent cpu {:.3}", own_cpu_secs());
    Ok(())
}

/// User plus system CPU seconds this process has used.
fn own_cpu_secs() -> f64 {
    cpu_secs(std::process::id())
}

/// Echoes lines on one connection.
fn role_echo() -> io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    println!("port {}", listener.local_addr()?.port());
    let (stream, _) = listener.accept()?;
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        writer.write_all(line.as_bytes())?;
    }
}

// ---------------------------------------------------------------------------------------
// Child processes

#[derive(Default)]
struct OutState {
    /// Every stdout line with the moment it was read.
    lines: Vec<(Instant, String)>,
    eof: bool,
}

#[derive(Default)]
struct Output {
    state: Mutex<OutState>,
    cond: Condvar,
}

fn read_output(stdout: ChildStdout, out: &Output) {
    let mut reader = BufReader::with_capacity(1 << 16, stdout);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let at = Instant::now();
                let text = String::from_utf8_lossy(&buf).trim_end().to_string();
                let mut state = out.state.lock().unwrap_or_else(PoisonError::into_inner);
                state.lines.push((at, text));
                out.cond.notify_all();
            }
        }
    }
    out.state.lock().unwrap_or_else(PoisonError::into_inner).eof = true;
    out.cond.notify_all();
}

/// A running child with piped stdin and stdout (read into lines on a thread) and stderr
/// in a log file. Dropping it kills the child.
struct Proc {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    out: Arc<Output>,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &str, mut cmd: Command, log: &Path) -> Proc {
        let err = File::create(log).unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(err);
        // SAFETY: prctl is async-signal-safe and touches no memory of ours. Children are
        // only spawned from the main thread, which lives until the bench ends.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        CHILDREN
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(child.id());
        let stdout = child.stdout.take().expect("piped stdout");
        let out = Arc::new(Output::default());
        let sink = Arc::clone(&out);
        thread::Builder::new()
            .name(format!("out-{name}"))
            .spawn(move || read_output(stdout, &sink))
            .expect("an output thread");
        Proc {
            name: name.to_string(),
            stdin: child.stdin.take(),
            child,
            out,
            log: log.to_path_buf(),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Writes one line to the child's stdin.
    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        if let Err(e) = stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| stdin.flush())
        {
            panic!("{}: writing {line:?}: {e}{}", self.name, self.stderr_tail());
        }
    }

    /// The number of lines read so far: a cursor that sees only what comes next.
    fn cursor(&self) -> usize {
        self.out
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .lines
            .len()
    }

    /// Waits for the next line (from `cursor` on) that `pred` accepts; returns when it
    /// was read and its text, and moves the cursor past it.
    fn wait_line(
        &self,
        cursor: &mut usize,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> (Instant, String) {
        let deadline = Instant::now() + timeout;
        let mut state = self
            .out
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        loop {
            while *cursor < state.lines.len() {
                let (at, line) = &state.lines[*cursor];
                *cursor += 1;
                if pred(line) {
                    return (*at, line.clone());
                }
            }
            let now = Instant::now();
            if state.eof || now >= deadline {
                let why = if state.eof {
                    "exited".to_string()
                } else {
                    format!("timed out after {timeout:?}")
                };
                let from = state.lines.len().saturating_sub(12);
                let tail: Vec<&str> = state.lines[from..]
                    .iter()
                    .map(|(_, l)| l.as_str())
                    .collect();
                let tail = tail.join("\n  ");
                drop(state);
                panic!(
                    "{}: {why} waiting for {what:?}\n  last stdout lines:\n  {tail}{}",
                    self.name,
                    self.stderr_tail()
                );
            }
            state = self
                .out
                .cond
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    fn wait_for(&self, cursor: &mut usize, needle: &str, timeout: Duration) -> (Instant, String) {
        self.wait_line(cursor, needle, timeout, |l| l.contains(needle))
    }

    fn stderr_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(8);
        format!(
            "\n  stderr ({}):\n  {}",
            self.log.display(),
            lines[from..].join("\n  ")
        )
    }

    /// A `/proc/PID/status` field in KiB (`VmHWM`, `VmRSS`) or count (`Threads`).
    fn status(&self, field: &str) -> u64 {
        proc_status(self.pid(), field)
    }

    /// Closes stdin (a client then logs out and exits) and waits up to `grace`; the
    /// drop kills what is still running.
    fn finish(mut self, grace: Duration) {
        drop(self.stdin.take());
        let until = Instant::now() + grace;
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        drop(self.stdin.take());
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let pid = self.child.id();
        CHILDREN
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|&p| p != pid);
        let _ = self.child.wait();
    }
}

fn proc_status(pid: u32, field: &str) -> u64 {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .strip_prefix(':')?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// User plus system CPU seconds a process has used.
fn cpu_secs(pid: u32) -> f64 {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some(end) = text.rfind(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = text[end + 1..].split_whitespace().collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (tick(11) + tick(12)) as f64 / hz
}

fn role_cmd(bins: &Bins, role: &str) -> Command {
    let mut cmd = Command::new(&bins.me);
    cmd.env(ROLE_ENV, role);
    cmd
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("peerchat-bench-")
        .tempdir()
        .expect("a temporary folder")
}

/// Starts a server on a free loopback port with its database in `dir`.
fn start_server(
    bins: &Bins,
    dir: &Path,
    cost: Option<u32>,
    extra: &[String],
) -> (Proc, SocketAddr) {
    let mut cmd = Command::new(&bins.server);
    cmd.args(["--addr", "127.0.0.1:0", "--db"])
        .arg(dir.join("server.db"));
    if let Some(cost) = cost {
        cmd.args(["--bcrypt-cost", &cost.to_string()]);
    }
    cmd.args(extra);
    let server = Proc::spawn("server", cmd, &dir.join("server.log"));
    let mut cursor = 0;
    let (_, line) = server.wait_for(&mut cursor, "listening on ", SHORT);
    let addr = line
        .trim_start_matches("listening on ")
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("server address in {line:?}: {e}"));
    (server, addr)
}

/// What the client-driving figures share: the server, a folder, fresh user names.
struct Ctx<'a> {
    bins: &'a Bins,
    dir: PathBuf,
    addr: SocketAddr,
    next: Cell<usize>,
}

impl Ctx<'_> {
    fn fresh(&self, prefix: &str) -> String {
        self.next.set(self.next.get() + 1);
        format!("{prefix}{}", self.next.get())
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Starts a client, registers `name` and waits for its welcome.
    fn client(&self, name: &str, share: Option<&Path>) -> Proc {
        let mut cmd = Command::new(&self.bins.client);
        cmd.args(["--server", &self.addr.to_string(), "--trust-first-use"])
            .args(["--port", "0", "--listen-addr", "127.0.0.1", "--data-dir"])
            .arg(self.data_dir());
        if let Some(share) = share {
            cmd.arg("--share").arg(share);
        }
        let mut client = Proc::spawn(name, cmd, &self.dir.join(format!("{name}.log")));
        client.send("y");
        client.send(name);
        client.send(PASSWORD);
        let mut cursor = 0;
        client.wait_for(&mut cursor, &format!("Welcome, {name}."), SHORT);
        if share.is_some() {
            client.wait_for(&mut cursor, "* sharing", SHORT);
        }
        client
    }
}

/// `a` asks `b` for a chat session; `b` accepts; both see it open.
fn open_session(a: &mut Proc, b: &mut Proc) {
    let (mut ca, mut cb) = (a.cursor(), b.cursor());
    let (a_name, b_name) = (a.name.clone(), b.name.clone());
    a.send(&format!("\\connect {b_name}"));
    b.wait_for(&mut cb, &format!("{a_name} wants to chat"), SHORT);
    b.send("\\accept");
    b.wait_for(&mut cb, &format!("session with {a_name} open"), SHORT);
    a.wait_for(&mut ca, &format!("session with {b_name} open"), SHORT);
}

// ---------------------------------------------------------------------------------------
// Statistics and the report

fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// The `p` quantile (0..=1) of sorted samples, nearest rank.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn p50_p99(samples: &mut [Duration]) -> (f64, f64) {
    samples.sort();
    (
        percentile(samples, 0.50).as_secs_f64(),
        percentile(samples, 0.99).as_secs_f64(),
    )
}

fn secs(s: f64) -> String {
    if s.is_nan() {
        "-".into()
    } else if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 1e-3 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{:.0} µs", s * 1e6)
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn rate(bytes: u64, s: f64) -> String {
    format!("{:.0} MiB/s", bytes as f64 / MIB as f64 / s)
}

fn size_label(bytes: u64) -> String {
    if bytes >= 1024 * MIB && bytes.is_multiple_of(1024 * MIB) {
        format!("{} GiB", bytes / (1024 * MIB))
    } else {
        format!("{} MiB", bytes / MIB)
    }
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

struct Row {
    figure: String,
    measure: String,
    value: String,
    baseline: String,
    ratio: String,
    goal: String,
}

#[derive(Default)]
struct Report {
    rows: Vec<Row>,
    notes: Vec<String>,
}

impl Report {
    fn add(
        &mut self,
        figure: &str,
        measure: impl Into<String>,
        value: impl Into<String>,
        baseline: impl Into<String>,
        ratio: impl Into<String>,
        goal: impl Into<String>,
    ) {
        let row = Row {
            figure: figure.into(),
            measure: measure.into(),
            value: value.into(),
            baseline: baseline.into(),
            ratio: ratio.into(),
            goal: goal.into(),
        };
        println!(
            "  -> {} | {} | {} | {} | {}",
            row.measure, row.value, row.baseline, row.ratio, row.goal
        );
        self.rows.push(row);
    }

    fn note(&mut self, text: impl Into<String>) {
        let text = text.into();
        println!("  note: {text}");
        self.notes.push(text);
    }

    fn print(&self) {
        println!("\n## Results (medians)\n");
        println!("| figure | measure | peerchat | baseline | ratio | goal |");
        println!("|---|---|---|---|---|---|");
        for r in &self.rows {
            println!(
                "| {} | {} | {} | {} | {} | {} |",
                r.figure, r.measure, r.value, r.baseline, r.ratio, r.goal
            );
        }
        if !self.notes.is_empty() {
            println!("\nNotes:");
            for n in &self.notes {
                println!("- {n}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// 1. File transfer

/// Writes `size` pseudo-random bytes (incompressible; xorshift) and returns their BLAKE3.
fn write_random_file(path: &Path, size: u64, seed: u64) -> blake3::Hash {
    let mut file = File::create(path).expect("creating the test file");
    let mut buf = vec![0u8; MIB as usize];
    let mut x = seed | 1;
    let mut hasher = blake3::Hasher::new();
    let mut left = size;
    while left > 0 {
        for word in buf.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            word.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(MIB) as usize;
        file.write_all(&buf[..n]).expect("writing the test file");
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    hasher.finalize()
}

fn hash_file(path: &Path) -> blake3::Hash {
    let mut file = File::open(path).expect("opening a received file");
    let mut buf = vec![0u8; MIB as usize];
    let mut hasher = blake3::Hasher::new();
    loop {
        let n = file.read(&mut buf).expect("reading a received file");
        if n == 0 {
            return hasher.finalize();
        }
        hasher.update(&buf[..n]);
    }
}

/// `(saved as PATH[, resumed at X])` in a client's done line.
fn saved_path(line: &str) -> PathBuf {
    let start = line.find("(saved as ").expect("a saved-as path") + "(saved as ".len();
    let end = line.rfind(')').expect("a closing parenthesis");
    let inner = &line[start..end];
    let path = inner.split(", resumed at ").next().unwrap_or(inner);
    PathBuf::from(path)
}

/// Touches and frees `bytes` of memory right before a timed transfer. On this kind of
/// VM the guest hands free pages back to the host (virtio free page reporting), and
/// faulting them in again made writing 1 GiB cost anywhere from 0.3 to 2 s of system
/// time at random; the receiver of the next transfer (baseline or peerchat alike) now
/// gets pages the host already backs.
fn warm_pages(bytes: u64) {
    let ballast = vec![1u8; bytes as usize];
    std::hint::black_box(&ballast);
}

/// Checks a received file (size always, content when `hash` is given) and deletes it.
fn check_and_remove(path: &Path, size: u64, hash: Option<blake3::Hash>) {
    let len = fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .len();
    assert_eq!(len, size, "{} has the wrong size", path.display());
    if let Some(hash) = hash {
        assert_eq!(
            hash_file(path),
            hash,
            "{} differs from the source",
            path.display()
        );
    }
    fs::remove_file(path).expect("removing a received file");
}

/// The end line of transfer `head` (e.g. `fetch x.bin from alice`), not its start.
fn is_end_of(line: &str, head: &str) -> bool {
    line.contains(&format!("{head}: ")) && !line.ends_with(": started")
}

fn transfer_timeout(size: u64) -> Duration {
    Duration::from_secs(60 + size / (20 * MIB))
}

/// One plain TCP copy of `src` between two processes, `std::io::copy` on both ends (or a
/// `buffer`-sized read loop on the receiving end).
fn tcp_copy(bins: &Bins, dir: &Path, src: &Path, size: u64, buffer: Option<usize>) -> Moved {
    let dst = dir.join("copy.out");
    let mut cmd = role_cmd(bins, "copy-recv");
    cmd.env(FILE_ENV, &dst);
    if let Some(buffer) = buffer {
        cmd.env(BUF_ENV, buffer.to_string());
    }
    let recv = Proc::spawn("copy-recv", cmd, &dir.join("copy-recv.log"));
    let mut rc = 0;
    let (_, line) = recv.wait_for(&mut rc, "port ", SHORT);
    let port = line["port ".len()..].trim().to_string();
    let mut cmd = role_cmd(bins, "copy-send");
    cmd.env(FILE_ENV, src)
        .env(ADDR_ENV, format!("127.0.0.1:{port}"));
    let mut send = Proc::spawn("copy-send", cmd, &dir.join("copy-send.log"));
    let mut sc = 0;
    send.wait_for(&mut sc, "ready", SHORT);
    warm_pages(size + 512 * MIB);
    let t0 = Instant::now();
    send.send("go");
    let (t1, line) = recv.wait_for(&mut rc, "done ", transfer_timeout(size));
    let mut words = line.split_whitespace().skip(1);
    let copied: u64 = words
        .next()
        .and_then(|w| w.parse().ok())
        .expect("a byte count");
    let cpu_recv: f64 = words
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or(f64::NAN);
    assert_eq!(copied, size, "the baseline copy moved the wrong amount");
    let (_, line) = send.wait_for(&mut sc, "sent cpu ", SHORT);
    let cpu_send: f64 = line["sent cpu ".len()..].trim().parse().unwrap_or(f64::NAN);
    check_and_remove(&dst, size, None);
    send.finish(SHORT);
    recv.finish(SHORT);
    Moved {
        secs: (t1 - t0).as_secs_f64(),
        rss_send: 0,
        rss_recv: 0,
        cpu_send,
        cpu_recv,
    }
}

/// One transfer's time, and the peak RSS (KiB) and CPU seconds of the sending and
/// receiving processes.
struct Moved {
    secs: f64,
    rss_send: u64,
    rss_recv: u64,
    cpu_send: f64,
    cpu_recv: f64,
}

/// Fetches `name` from a fresh owner into a fresh fetcher: time from `\fetch` to the
/// fetcher's `done, verified`.
fn fetch_once(
    ctx: &Ctx,
    share: &Path,
    name: &str,
    size: u64,
    check: Option<blake3::Hash>,
) -> Moved {
    let (a, b) = (ctx.fresh("fa"), ctx.fresh("fb"));
    let owner = ctx.client(&a, Some(share));
    let mut fetcher = ctx.client(&b, None);
    let (mut co, mut cf) = (owner.cursor(), fetcher.cursor());
    warm_pages(size + 512 * MIB);
    let cpu0 = (cpu_secs(owner.pid()), cpu_secs(fetcher.pid()));
    let t0 = Instant::now();
    fetcher.send(&format!("\\fetch {a} {name}"));
    let head = format!("fetch {name} from {a}");
    let (t1, line) = fetcher.wait_line(&mut cf, &head, transfer_timeout(size), |l| {
        is_end_of(l, &head)
    });
    assert!(line.contains("done, verified"), "fetch failed: {line}");
    let serve = format!("serve {name} to {b}");
    let (_, line) = owner.wait_line(&mut co, &serve, SHORT, |l| is_end_of(l, &serve));
    assert!(line.contains("done, verified"), "serving failed: {line}");
    let moved = Moved {
        secs: (t1 - t0).as_secs_f64(),
        rss_send: owner.status("VmHWM"),
        rss_recv: fetcher.status("VmHWM"),
        cpu_send: cpu_secs(owner.pid()) - cpu0.0,
        cpu_recv: cpu_secs(fetcher.pid()) - cpu0.1,
    };
    check_and_remove(&saved_path_of(&fetcher, &head), size, check);
    owner.finish(SHORT);
    fetcher.finish(SHORT);
    moved
}

/// The saved path from the last end line of transfer `head`.
fn saved_path_of(client: &Proc, head: &str) -> PathBuf {
    let state = client
        .out
        .state
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let line = state
        .lines
        .iter()
        .rev()
        .map(|(_, l)| l)
        .find(|l| is_end_of(l, head) && l.contains("saved as"))
        .expect("a done line with a path");
    saved_path(line)
}

/// Pushes `path` in a chat session: time from the receiver's `\accept N` to its
/// `done, verified`.
fn push_once(ctx: &Ctx, path: &Path, name: &str, size: u64, check: Option<blake3::Hash>) -> Moved {
    let (a, b) = (ctx.fresh("pa"), ctx.fresh("pb"));
    let mut sender = ctx.client(&a, None);
    let mut receiver = ctx.client(&b, None);
    open_session(&mut sender, &mut receiver);
    let (mut cs, mut cr) = (sender.cursor(), receiver.cursor());
    sender.send(&format!("\\send {}", path.display()));
    let (_, offer) = receiver.wait_for(&mut cr, &format!("{a} offers {name} ("), SHORT);
    let id: u64 = offer
        .split("\\accept ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no offer id in {offer:?}"));
    warm_pages(size + 512 * MIB);
    let cpu0 = (cpu_secs(sender.pid()), cpu_secs(receiver.pid()));
    let t0 = Instant::now();
    receiver.send(&format!("\\accept {id}"));
    let head = format!("receive {name} from {a}");
    let (t1, line) = receiver.wait_line(&mut cr, &head, transfer_timeout(size), |l| {
        is_end_of(l, &head)
    });
    assert!(line.contains("done, verified"), "push failed: {line}");
    let send_head = format!("send {name} to {b}");
    let (_, line) = sender.wait_line(&mut cs, &send_head, SHORT, |l| is_end_of(l, &send_head));
    assert!(line.contains("done, verified"), "sending failed: {line}");
    let moved = Moved {
        secs: (t1 - t0).as_secs_f64(),
        rss_send: sender.status("VmHWM"),
        rss_recv: receiver.status("VmHWM"),
        cpu_send: cpu_secs(sender.pid()) - cpu0.0,
        cpu_recv: cpu_secs(receiver.pid()) - cpu0.1,
    };
    check_and_remove(&saved_path(&line_of(&receiver, &head)), size, check);
    sender.finish(SHORT);
    receiver.finish(SHORT);
    moved
}

fn line_of(client: &Proc, head: &str) -> String {
    let state = client
        .out
        .state
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    state
        .lines
        .iter()
        .rev()
        .map(|(_, l)| l.clone())
        .find(|l| is_end_of(l, head))
        .expect("an end line")
}

/// Seconds to read and BLAKE3-hash the first `bytes` of `path` in 1 MiB chunks, as a
/// sender checks a resume point.
fn time_prefix_hash(path: &Path, bytes: u64) -> f64 {
    let t = Instant::now();
    let mut file = File::open(path).expect("the shared file");
    let mut buf = vec![0u8; MIB as usize];
    let mut hashes = Vec::new();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(MIB) as usize;
        file.read_exact(&mut buf[..n])
            .expect("reading the shared file");
        hashes.push(blake3::hash(&buf[..n]));
        left -= n as u64;
    }
    assert!(hashes.len() as u64 * MIB >= bytes);
    t.elapsed().as_secs_f64()
}

/// Verified bytes a partial download holds: chunk hashes in its state file.
fn partial_verified(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "state"))
        .map(|e| {
            let text = fs::read_to_string(e.path()).unwrap_or_default();
            text.lines().count().saturating_sub(1) as u64 * MIB
        })
        .max()
        .unwrap_or(0)
}

fn partial_on_disk(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "part"))
        .filter_map(|e| e.metadata().ok().map(|m| m.len()))
        .max()
        .unwrap_or(0)
}

/// Starts a fetch, cancels it at about half (watching the partial file grow), fetches
/// again and times the second fetch. Returns (seconds, bytes resumed from).
fn resume_once(ctx: &Ctx, share: &Path, name: &str, size: u64) -> (f64, u64) {
    let (a, b) = (ctx.fresh("ra"), ctx.fresh("rb"));
    let owner = ctx.client(&a, Some(share));
    let mut fetcher = ctx.client(&b, None);
    let partial_dir = ctx
        .data_dir()
        .join(&b)
        .join("downloads")
        .join(".peerchat-partial");
    let mut cf = fetcher.cursor();
    let head = format!("fetch {name} from {a}");
    fetcher.send(&format!("\\fetch {a} {name}"));
    let (_, started) = fetcher.wait_for(&mut cf, &format!("{head}: started"), SHORT);
    let id = started
        .split('[')
        .nth(1)
        .and_then(|r| r.split(']').next())
        .unwrap_or_else(|| panic!("no transfer id in {started:?}"))
        .to_string();
    let deadline = Instant::now() + transfer_timeout(size);
    while partial_on_disk(&partial_dir) < size / 2 {
        assert!(
            Instant::now() < deadline,
            "the first fetch never reached half"
        );
        thread::sleep(Duration::from_millis(2));
    }
    fetcher.send(&format!("\\cancel {id}"));
    let (_, line) = fetcher.wait_line(&mut cf, &head, SHORT, |l| is_end_of(l, &head));
    assert!(
        line.contains("cancelled"),
        "expected a cancelled fetch: {line}"
    );
    let resumed = partial_verified(&partial_dir);
    warm_pages(size + 512 * MIB);
    let t0 = Instant::now();
    fetcher.send(&format!("\\fetch {a} {name}"));
    let (t1, line) = fetcher.wait_line(&mut cf, &head, transfer_timeout(size), |l| {
        is_end_of(l, &head)
    });
    assert!(
        line.contains("done, verified"),
        "resumed fetch failed: {line}"
    );
    assert!(
        line.contains("resumed at"),
        "the second fetch did not resume: {line}"
    );
    check_and_remove(&saved_path(&line), size, None);
    owner.finish(SHORT);
    fetcher.finish(SHORT);
    ((t1 - t0).as_secs_f64(), resumed)
}

/// Free bytes on the file system holding `path`.
fn free_bytes(path: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return 0;
    };
    // SAFETY: statvfs writes only into the zeroed struct we pass.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return 0;
        }
        st.f_bavail as u64 * st.f_frsize as u64
    }
}

/// The transfer figures' folder: in memory (`/dev/shm`) when it has room, so that disk
/// write-back of gigabytes of received data does not add its noise to both sides of
/// the ratio; on disk otherwise.
fn transfer_dir(largest: u64, report: &mut Report) -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && free_bytes(shm) > 4 * largest
        && let Ok(dir) = tempfile::Builder::new()
            .prefix("peerchat-bench-")
            .tempdir_in(shm)
    {
        return dir;
    }
    report.note(
        "transfer: files were written to disk (no room in /dev/shm); expect noise from write-back",
    );
    temp_dir()
}

fn group_transfer(s: &Settings, bins: &Bins, report: &mut Report) {
    let tmp = transfer_dir(*s.sizes.iter().max().expect("a size"), report);
    println!("  files in {}", tmp.path().display());
    let dir = tmp.path().to_path_buf();
    let share = dir.join("share");
    fs::create_dir_all(&share).expect("a share folder");
    let (_server, addr) = start_server(bins, &dir, Some(4), &[]);
    let ctx = Ctx {
        bins,
        dir: dir.clone(),
        addr,
        next: Cell::new(0),
    };
    let mut fetch_medians = HashMap::new();
    for (i, &size) in s.sizes.iter().enumerate() {
        let label = size_label(size);
        let name = format!("bench-{}.bin", label.replace(' ', ""));
        let path = share.join(&name);
        let t = Instant::now();
        let hash = write_random_file(&path, size, 0x9e37_79b9_7f4a_7c15 + i as u64);
        println!(
            "  made {label} of random data in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        let (mut base, mut base_big) = (Vec::new(), Vec::new());
        let (mut fetch, mut push) = (Vec::new(), Vec::new());
        let (mut cpu_base, mut cpu_fetch, mut cpu_push) = (Vec::new(), Vec::new(), Vec::new());
        let (mut rss_fetch, mut rss_push) = ((0, 0), (0, 0));
        for run in 0..s.transfer_runs {
            // The first run of each kind also compares the received bytes with the source.
            let check = (run == 0).then_some(hash);
            let b = tcp_copy(bins, &dir, &path, size, None);
            let f = fetch_once(&ctx, &share, &name, size, check);
            let big = tcp_copy(bins, &dir, &path, size, Some(MIB as usize));
            let p = push_once(&ctx, &path, &name, size, check);
            println!("  {label} run {}:", run + 1);
            for (what, m) in [
                ("io::copy", &b),
                ("fetch", &f),
                ("1 MiB-read copy", &big),
                ("push", &p),
            ] {
                println!(
                    "    {what:>16}: {} ({}); CPU sender {:.2} s, receiver {:.2} s{}",
                    secs(m.secs),
                    rate(size, m.secs),
                    m.cpu_send,
                    m.cpu_recv,
                    if m.rss_send > 0 {
                        format!(
                            "; peak RSS sender {} receiver {}",
                            mib(m.rss_send),
                            mib(m.rss_recv)
                        )
                    } else {
                        String::new()
                    }
                );
            }
            base.push(b.secs);
            base_big.push(big.secs);
            fetch.push(f.secs);
            push.push(p.secs);
            for (cpu, m) in [
                (&mut cpu_base, &b),
                (&mut cpu_fetch, &f),
                (&mut cpu_push, &p),
            ] {
                cpu.push((m.cpu_send + m.cpu_recv) * (1024 * MIB) as f64 / size as f64);
            }
            rss_fetch = (rss_fetch.0.max(f.rss_send), rss_fetch.1.max(f.rss_recv));
            rss_push = (rss_push.0.max(p.rss_send), rss_push.1.max(p.rss_recv));
        }
        let b = median(&base);
        let big = median(&base_big);
        let baseline = format!(
            "io::copy {} ({}); 1 MiB reads {} ({})",
            secs(b),
            rate(size, b),
            secs(big),
            rate(size, big)
        );
        for (what, times) in [("fetch", &fetch), ("push", &push)] {
            let m = median(times);
            let ratio = b / m;
            report.add(
                "1 transfer",
                format!("{what} {label}"),
                format!("{} ({})", secs(m), rate(size, m)),
                baseline.clone(),
                format!("{ratio:.2} ({:.2} vs 1 MiB reads)", big / m),
                format!("≥ 0.85: {}", verdict(ratio >= 0.85)),
            );
        }
        report.add(
            "1 transfer",
            format!("CPU s per GiB, sender + receiver, {label}"),
            format!(
                "fetch {:.2} s, push {:.2} s",
                median(&cpu_fetch),
                median(&cpu_push)
            ),
            format!("io::copy {:.2} s", median(&cpu_base)),
            "-",
            "-",
        );
        fetch_medians.insert(size, median(&fetch));
        for (what, (send, recv)) in [
            ("fetch (owner / fetcher)", rss_fetch),
            ("push (sender / receiver)", rss_push),
        ] {
            report.add(
                "1 transfer",
                format!("peak RSS, {what}, {label}"),
                format!("{} / {}", mib(send), mib(recv)),
                "-",
                "-",
                format!("≤ 32 MiB each: {}", verdict(send.max(recv) <= 32 * 1024)),
            );
        }
        if i + 1 < s.sizes.len() {
            fs::remove_file(&path).expect("removing the test file");
        }
    }
    // Resume, with the largest file.
    let size = *s.sizes.last().expect("a size");
    let label = size_label(size);
    let name = format!("bench-{}.bin", label.replace(' ', ""));
    let mut times = Vec::new();
    let mut fractions = Vec::new();
    for run in 0..s.transfer_runs {
        let (t, from) = resume_once(&ctx, &share, &name, size);
        let fraction = from as f64 / size as f64;
        println!(
            "  resume {label} run {}: cancelled with {} verified ({:.0}%), second fetch {} ({} of the rest)",
            run + 1,
            size_label(from),
            fraction * 100.0,
            secs(t),
            rate(size - from, t)
        );
        times.push(t);
        fractions.push(fraction);
    }
    let full = fetch_medians[&size];
    let t = median(&times);
    let fraction = median(&fractions);
    let ratio = t / full;
    // What the owner does before it sends a byte of a resumed file: read and hash the
    // prefix the fetcher already has, chunk by chunk, on one thread (protocol.md §11).
    let prefix = (fraction * size as f64) as u64 / MIB * MIB;
    let rehash = median(
        &(0..s.runs)
            .map(|_| time_prefix_hash(&share.join(&name), prefix))
            .collect::<Vec<_>>(),
    );
    println!(
        "  the owner's re-hash of a {} prefix, alone: {}",
        size_label(prefix),
        secs(rehash)
    );
    report.add(
        "1 transfer",
        format!(
            "resumed fetch {label}: second fetch after a cancel at {:.0}%",
            fraction * 100.0
        ),
        secs(t),
        format!(
            "full fetch {}; re-hashing the prefix alone {}",
            secs(full),
            secs(rehash)
        ),
        format!("{ratio:.2} of a full fetch"),
        format!(
            "≈ {:.2} (the part left): {}",
            1.0 - fraction,
            verdict(ratio <= (1.0 - fraction) * 1.25 + 0.05)
        ),
    );
}

// ---------------------------------------------------------------------------------------
// 2. Chat

/// Round trips before the measured ones, not counted.
const WARM_UP: usize = 100;

/// A plain TCP connection to an echo process: the round-trip baseline.
type Echo = (BufReader<TcpStream>, TcpStream);

/// One round trip of a short line through the echo process.
fn echo_once(echo: &mut Echo, line: &mut String) -> Duration {
    let t0 = Instant::now();
    echo.1.write_all(b"ping\n").expect("echo write");
    line.clear();
    echo.0.read_line(line).expect("echo read");
    t0.elapsed()
}

/// Round trips through two clients' peer link: a line into A's stdin until B prints it,
/// then a reply into B's stdin until A prints it; paced to the receivers' flood limit.
/// Each is followed by one baseline round trip through `echo`, so both see the machine
/// in the same state. Returns (peerchat samples, echo samples).
fn chat_rtt(
    a: &mut Proc,
    b: &mut Proc,
    echo: &mut Echo,
    n: usize,
    run: usize,
) -> (Vec<Duration>, Vec<Duration>) {
    let (a_name, b_name) = (a.name.clone(), b.name.clone());
    let (mut ca, mut cb) = (a.cursor(), b.cursor());
    let burst = FLOOD_BURST as usize * 4 / 5;
    let pace = f64::from(FLOOD_RATE) * 0.95;
    let mut line = String::new();
    let start = Instant::now();
    let mut samples = Vec::with_capacity(n);
    let mut baseline = Vec::with_capacity(n);
    for i in 0..n + WARM_UP {
        if i > burst {
            let due = start + Duration::from_secs_f64((i - burst) as f64 / pace);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                thread::sleep(wait);
            }
        }
        let t0 = Instant::now();
        let ping = format!("p{run}-{i:06}");
        a.send(&ping);
        b.wait_for(&mut cb, &format!("{a_name}: {ping}"), SHORT);
        let pong = format!("r{run}-{i:06}");
        b.send(&pong);
        let (t1, _) = a.wait_for(&mut ca, &format!("{b_name}: {pong}"), SHORT);
        let echoed = echo_once(echo, &mut line);
        if i >= WARM_UP {
            samples.push(t1 - t0);
            baseline.push(echoed);
        }
    }
    (samples, baseline)
}

/// Writes `count` lines of `bytes` text into A's stdin at once and times until the last
/// one is printed by B. Returns seconds.
fn chat_flood(a: &mut Proc, b: &mut Proc, count: usize, bytes: usize, run: usize) -> f64 {
    let a_name = a.name.clone();
    let mut payload = String::with_capacity(count * (bytes + 1));
    for i in 0..count {
        let head = format!("t{run}-{i:06} ");
        payload.push_str(&head);
        payload.push_str(&"x".repeat(bytes - head.len()));
        payload.push('\n');
    }
    let mut cb = b.cursor();
    let mut stdin = a.stdin.take().expect("stdin is open");
    let t0 = Instant::now();
    let writer = thread::spawn(move || {
        stdin
            .write_all(payload.as_bytes())
            .expect("writing the flood");
        stdin
    });
    let last = format!("{a_name}: t{run}-{:06} ", count - 1);
    let (t1, _) = b.wait_for(&mut cb, &last, Duration::from_secs(120));
    a.stdin = Some(writer.join().expect("the flood writer"));
    let state = b.out.state.lock().unwrap_or_else(PoisonError::into_inner);
    let prefix = format!("{a_name}: t{run}-");
    let arrived = state.lines[..cb]
        .iter()
        .filter(|(_, l)| l.contains(&prefix))
        .count();
    drop(state);
    assert!(
        arrived >= count,
        "only {arrived} of {count} flood lines arrived"
    );
    (t1 - t0).as_secs_f64()
}

fn group_chat(s: &Settings, bins: &Bins, report: &mut Report) {
    let tmp = temp_dir();
    let dir = tmp.path().to_path_buf();
    let (_server, addr) = start_server(bins, &dir, Some(4), &[]);
    let ctx = Ctx {
        bins,
        dir: dir.clone(),
        addr,
        next: Cell::new(0),
    };
    let mut a = ctx.client("chata", None);
    let mut b = ctx.client("chatb", None);
    open_session(&mut a, &mut b);

    let echo = Proc::spawn("echo", role_cmd(bins, "echo"), &dir.join("echo.log"));
    let mut ec = 0;
    let (_, line) = echo.wait_for(&mut ec, "port ", SHORT);
    let stream =
        TcpStream::connect(format!("127.0.0.1:{}", line["port ".len()..].trim())).expect("echo");
    stream.set_nodelay(true).expect("nodelay");
    let mut conn: Echo = (BufReader::new(stream.try_clone().expect("clone")), stream);

    let refill = Duration::from_secs_f64(f64::from(FLOOD_BURST) / f64::from(FLOOD_RATE) + 0.2);
    let (mut p50, mut p99, mut e50, mut e99) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut cpu = Vec::new();
    for run in 0..s.runs {
        let t = Instant::now();
        let cpu0 = cpu_secs(a.pid()) + cpu_secs(b.pid());
        let (mut chat, mut base) = chat_rtt(&mut a, &mut b, &mut conn, s.rtt_messages, run);
        let took = t.elapsed();
        let (c50, c99) = p50_p99(&mut chat);
        let per =
            (cpu_secs(a.pid()) + cpu_secs(b.pid()) - cpu0) / (s.rtt_messages + WARM_UP) as f64;
        cpu.push(per);
        let (b50, b99) = p50_p99(&mut base);
        println!(
            "  RTT run {}: peerchat p50 {} p99 {} ({} round trips in {:.1} s, client CPU {} per round trip), TCP echo p50 {} p99 {}",
            run + 1,
            secs(c50),
            secs(c99),
            s.rtt_messages,
            took.as_secs_f64(),
            secs(per),
            secs(b50),
            secs(b99)
        );
        p50.push(c50);
        p99.push(c99);
        e50.push(b50);
        e99.push(b99);
        // Let the receivers' flood buckets fill up again.
        thread::sleep(refill);
    }
    for (what, chat, echo) in [("p50", &p50, &e50), ("p99", &p99, &e99)] {
        let (c, e) = (median(chat), median(echo));
        report.add(
            "2 chat",
            format!("round trip {what} ({} messages)", s.rtt_messages),
            secs(c),
            format!("TCP echo {}", secs(e)),
            format!("{:.3}", e / c),
            "-",
        );
    }
    report.add(
        "2 chat",
        "CPU per round trip, both clients (4 lines handled)",
        secs(median(&cpu)),
        "-",
        "-",
        "-",
    );
    drop(conn);
    echo.finish(SHORT);

    let mut rates = Vec::new();
    for run in 0..s.runs {
        let t = chat_flood(&mut a, &mut b, s.flood_lines, s.flood_line_bytes, run);
        let per_sec = s.flood_lines as f64 / t;
        println!(
            "  flood run {}: {} lines of {} B in {} = {per_sec:.0} lines/s",
            run + 1,
            s.flood_lines,
            s.flood_line_bytes,
            secs(t)
        );
        rates.push(per_sec);
        thread::sleep(refill);
    }
    let r = median(&rates);
    report.add(
        "2 chat",
        format!(
            "{} lines of {} B at once, one session",
            s.flood_lines, s.flood_line_bytes
        ),
        format!(
            "{r:.0} lines/s ({:.1} MiB/s)",
            r * s.flood_line_bytes as f64 / MIB as f64
        ),
        "-",
        "-",
        "-",
    );
    a.finish(SHORT);
    b.finish(SHORT);
}

// ---------------------------------------------------------------------------------------
// Raw server connections (figures 3-5)

/// Creates the server's schema in `dir/server.db` (through the server's own store) and
/// inserts accounts directly, so no login has to register or hash at start.
fn make_accounts(dir: &Path, accounts: &[(String, &str)]) {
    let db = dir.join("server.db");
    let store = peerchat::server::store::Store::open(&db).expect("creating the database");
    store.close().expect("closing the database");
    let mut conn = rusqlite::Connection::open(&db).expect("opening the database");
    let tx = conn.transaction().expect("a transaction");
    {
        let mut insert = tx
            .prepare("INSERT INTO users (username, pw_hash, created_at) VALUES (?1, ?2, ?3)")
            .expect("an insert");
        for (name, hash) in accounts {
            insert
                .execute(rusqlite::params![name, hash, 1_700_000_000i64])
                .expect("inserting an account");
        }
    }
    tx.commit().expect("committing the accounts");
}

/// Connects to the server over TLS. The bench trusts the server it started itself (the
/// fingerprint check is the client's job and has its own tests).
fn tls_connect(addr: SocketAddr, read_timeout: Duration) -> Result<BlockingTls, String> {
    let stream = TcpStream::connect_timeout(&addr, SHORT).map_err(|e| format!("connect: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(read_timeout))
        .map_err(|e| e.to_string())?;
    blocking_client(stream, Trust::FirstUse).map_err(|e| format!("tls: {e}"))
}

/// Reads from `stream` (after the bytes in `buf`, read before) until a line satisfies
/// `done`; fails on a line starting with `ERR`. Returns the bytes read after that line.
fn read_until(
    stream: &mut impl Read,
    mut buf: Vec<u8>,
    done: impl Fn(&str) -> bool,
) -> Result<Vec<u8>, String> {
    let mut scanned = 0;
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(nl) = buf[scanned..].iter().position(|&c| c == b'\n') {
            let line = String::from_utf8_lossy(&buf[scanned..scanned + nl]).to_string();
            scanned += nl + 1;
            if line.starts_with("ERR") {
                return Err(line);
            }
            if done(&line) {
                return Ok(buf[scanned..].to_vec());
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Err("the server closed the connection".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

/// Logs `user` in over a raw socket with every answer written at once (then `extra`,
/// e.g. a `SHARE`). Returns the socket, the bytes read past `OK WELCOME`, and the time
/// from connecting to `OK WELCOME`.
fn raw_login(
    addr: SocketAddr,
    user: &str,
    extra: &str,
) -> Result<(BlockingTls, Vec<u8>, Duration), String> {
    raw_login_from(addr, None, user, extra)
}

/// Like [`raw_login`] from the source address `from` (a loopback address other than
/// 127.0.0.1: the server queues at most 8 logins per address for bcrypt).
fn raw_login_from(
    addr: SocketAddr,
    from: Option<std::net::IpAddr>,
    user: &str,
    extra: &str,
) -> Result<(BlockingTls, Vec<u8>, Duration), String> {
    let t0 = Instant::now();
    let mut stream = match from {
        None => tls_connect(addr, Duration::from_secs(120))?,
        // The cost-12 logins: the last of 50 waits for 49 hashes on one low-priority
        // core, which on a machine shared with builds took more than 120 s.
        Some(ip) => {
            use socket2::{Domain, Protocol, Socket, Type};
            let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))
                .map_err(|e| format!("socket: {e}"))?;
            socket
                .bind(&SocketAddr::new(ip, 0).into())
                .map_err(|e| format!("bind {ip}: {e}"))?;
            socket
                .connect_timeout(&addr.into(), SHORT)
                .map_err(|e| format!("connect: {e}"))?;
            let stream: TcpStream = socket.into();
            stream.set_nodelay(true).map_err(|e| e.to_string())?;
            stream
                .set_read_timeout(Some(Duration::from_secs(1200)))
                .map_err(|e| e.to_string())?;
            blocking_client(stream, Trust::FirstUse).map_err(|e| format!("tls: {e}"))?
        }
    };
    stream
        .write_all(format!("n\n{user}\n{PASSWORD}\n{RAW_PORT}\n{extra}").as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let rest = read_until(&mut stream, Vec::new(), |l| l.starts_with("OK WELCOME"))
        .map_err(|e| format!("{user}: {e}"))?;
    Ok((stream, rest, t0.elapsed()))
}

/// A whole conversation on a fresh connection: `script` written at once, then read
/// until `OK WELCOME` and `OK BYE` have both come (an `ERR` fails it).
fn raw_login_and_quit(addr: SocketAddr, script: &str) -> Result<(), String> {
    let mut stream = tls_connect(addr, Duration::from_secs(120))?;
    stream
        .write_all(script.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let rest = read_until(&mut stream, Vec::new(), |l| l.starts_with("OK WELCOME"))?;
    read_until(&mut stream, rest, |l| l.starts_with("OK BYE"))?;
    Ok(())
}

/// A small deterministic generator for picking users.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

// ---------------------------------------------------------------------------------------
// 4. Login rate

/// Runs `scripts` (whole login conversations ending in QUIT) on `workers` threads;
/// returns logins per second.
fn login_rate(addr: SocketAddr, scripts: &[String], workers: usize) -> f64 {
    let next = AtomicUsize::new(0);
    let t = Instant::now();
    thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(script) = scripts.get(i) else {
                        return;
                    };
                    raw_login_and_quit(addr, script).unwrap_or_else(|e| panic!("login {i}: {e}"));
                }
            });
        }
    });
    scripts.len() as f64 / t.elapsed().as_secs_f64()
}

/// bcrypt verifications per second on one core, in this process.
fn verify_rate(hash: &str, n: usize) -> f64 {
    let t = Instant::now();
    for _ in 0..n {
        assert!(bcrypt::verify(PASSWORD, hash).expect("verify"));
    }
    n as f64 / t.elapsed().as_secs_f64()
}

/// Many logins in parallel: shows whether a rate is bound by CPU or by waiting.
const WIDE: usize = 32;

fn group_login(s: &Settings, bins: &Bins, report: &mut Report) {
    let tmp = temp_dir();
    let dir = tmp.path().to_path_buf();
    let hard = bcrypt::hash(PASSWORD, 12).expect("a cost-12 hash");
    let easy = bcrypt::hash(PASSWORD, 4).expect("a cost-4 hash");
    let mut accounts: Vec<(String, &str)> = (0..s.hard_logins)
        .map(|i| (format!("hard{i:02}"), hard.as_str()))
        .collect();
    accounts.extend((0..s.easy_logins).map(|i| (format!("easy{i:04}"), easy.as_str())));
    make_accounts(&dir, &accounts);
    // Default bcrypt cost; the accounts' own hashes decide what a login costs.
    let (server, addr) = start_server(bins, &dir, None, &[]);
    let reg_dir = dir.join("registrations");
    fs::create_dir_all(&reg_dir).expect("a folder");
    let (reg_server, reg_addr) = start_server(bins, &reg_dir, Some(4), &[]);
    let n = cores() as f64;
    let script = |name: &str, new: bool| {
        format!(
            "{}\n{name}\n{PASSWORD}\n{RAW_PORT}\nQUIT\n",
            if new { "y" } else { "n" }
        )
    };
    let hard_scripts: Vec<String> = (0..s.hard_logins)
        .map(|i| script(&format!("hard{i:02}"), false))
        .collect();
    let easy_scripts: Vec<String> = (0..s.easy_logins)
        .map(|i| script(&format!("easy{i:04}"), false))
        .collect();
    let (mut r12, mut r4, mut reg, mut b12, mut b4) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut cpu12, mut cpu4, mut r4_wide) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..s.runs {
        b12.push(verify_rate(&hard, 4) * n);
        b4.push(verify_rate(&easy, 200) * n);
        let c = cpu_secs(server.pid());
        r12.push(login_rate(addr, &hard_scripts, s.login_workers));
        cpu12.push((cpu_secs(server.pid()) - c) * 1e3 / s.hard_logins as f64);
        let c = cpu_secs(server.pid());
        r4.push(login_rate(addr, &easy_scripts, s.login_workers));
        cpu4.push((cpu_secs(server.pid()) - c) * 1e3 / s.easy_logins as f64);
        r4_wide.push(login_rate(addr, &easy_scripts, WIDE));
        let reg_scripts: Vec<String> = (0..s.registrations)
            .map(|i| script(&format!("new{run}x{i:04}"), true))
            .collect();
        reg.push(login_rate(reg_addr, &reg_scripts, s.login_workers));
        println!(
            "  run {}: cost 12 {:.1} logins/s (bound {:.1}), cost 4 {:.0} logins/s (bound {:.0}; {:.0}/s with {WIDE} in parallel), cost-4 registrations {:.0}/s; server CPU per login {:.1} ms / {:.2} ms",
            run + 1,
            r12[run],
            b12[run],
            r4[run],
            b4[run],
            r4_wide[run],
            reg[run],
            cpu12[run],
            cpu4[run]
        );
    }
    let workers = s.login_workers;
    for (what, rates, bound, cpu) in [("cost 12", &r12, &b12, &cpu12), ("cost 4", &r4, &b4, &cpu4)]
    {
        let (r, b) = (median(rates), median(bound));
        report.add(
            "4 login",
            format!("logins/s at {what}, {workers} in parallel (login + QUIT)"),
            format!("{r:.1}/s (server CPU {:.2} ms each)", median(cpu)),
            format!("bcrypt verify in-process × {n} cores: {b:.1}/s"),
            format!("{:.2}", r / b),
            "-",
        );
    }
    let (r, b) = (median(&r4_wide), median(&b4));
    report.add(
        "4 login",
        format!("logins/s at cost 4, {WIDE} in parallel (login + QUIT)"),
        format!("{r:.1}/s"),
        format!("bcrypt verify in-process × {n} cores: {b:.1}/s"),
        format!("{:.2}", r / b),
        "-",
    );
    report.add(
        "4 login",
        format!("registrations/s at cost 4, {workers} in parallel"),
        format!("{:.0}/s", median(&reg)),
        "-",
        "-",
        "-",
    );
    drop(server);
    drop(reg_server);
}

// ---------------------------------------------------------------------------------------
// 5. Connection burst

struct Landed {
    start: Instant,
    connected: Instant,
    hello: Instant,
}

/// `n` threads connect at the same instant; each reads the greeting. Connections stay
/// open until everyone is through.
fn burst_once(addr: SocketAddr, n: usize) -> Vec<Result<Landed, String>> {
    let gate = Arc::new(Barrier::new(n + 1));
    let hold = Arc::new(Barrier::new(n + 1));
    let mut handles = Vec::with_capacity(n);
    for _ in 0..n {
        let (gate, hold) = (Arc::clone(&gate), Arc::clone(&hold));
        let handle = thread::Builder::new()
            .stack_size(128 * 1024)
            .spawn(move || {
                gate.wait();
                let start = Instant::now();
                let result = TcpStream::connect_timeout(&addr, SHORT)
                    .map_err(|e| format!("connect: {e}"))
                    .and_then(|stream| {
                        let connected = Instant::now();
                        stream
                            .set_read_timeout(Some(SHORT))
                            .map_err(|e| e.to_string())?;
                        // The greeting comes after the TLS handshake, as a client sees it.
                        let mut stream = blocking_client(stream, Trust::FirstUse)
                            .map_err(|e| format!("tls: {e}"))?;
                        let mut line = String::new();
                        BufReader::new(&mut stream)
                            .read_line(&mut line)
                            .map_err(|e| format!("read: {e}"))?;
                        if !line.starts_with("HELLO") {
                            return Err(format!("got {line:?}"));
                        }
                        Ok((
                            stream,
                            Landed {
                                start,
                                connected,
                                hello: Instant::now(),
                            },
                        ))
                    });
                hold.wait();
                result.map(|(_stream, landed)| landed)
            })
            .expect("a burst thread");
        handles.push(handle);
    }
    gate.wait();
    hold.wait();
    handles
        .into_iter()
        .map(|h| h.join().expect("a burst thread"))
        .collect()
}

fn group_burst(s: &Settings, bins: &Bins, report: &mut Report) {
    let tmp = temp_dir();
    let dir = tmp.path().to_path_buf();
    let max = (s.burst + 100).to_string();
    // Every connection of the burst comes from 127.0.0.1 and none logs in: lift the
    // per-address cap on connections not logged in yet along with the total.
    let (server, addr) = start_server(
        bins,
        &dir,
        Some(4),
        &[
            "--max-clients".into(),
            max.clone(),
            "--max-prelogin-per-ip".into(),
            max,
        ],
    );
    thread::sleep(Duration::from_millis(500));
    let (mut all, mut slowest, mut c99, mut h50, mut stalls) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 0..s.runs {
        let results = burst_once(addr, s.burst);
        let failed: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
        assert!(
            failed.is_empty(),
            "{} of {} connections failed, first: {}",
            failed.len(),
            s.burst,
            failed[0]
        );
        let landed: Vec<&Landed> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        let first = landed.iter().map(|l| l.start).min().expect("a connection");
        let everyone = landed.iter().map(|l| l.hello).max().expect("a connection") - first;
        let mut connects: Vec<Duration> = landed.iter().map(|l| l.connected - l.start).collect();
        let mut hellos: Vec<Duration> = landed.iter().map(|l| l.hello - l.start).collect();
        connects.sort();
        hellos.sort();
        let slow = connects
            .iter()
            .filter(|d| **d >= Duration::from_millis(900))
            .count();
        println!(
            "  run {}: all {} got HELLO after {}; connect p50 {} p99 {} max {}; HELLO p50 {} p99 {} max {}; {slow} connects took ≥ 0.9 s",
            run + 1,
            s.burst,
            secs(everyone.as_secs_f64()),
            secs(percentile(&connects, 0.5).as_secs_f64()),
            secs(percentile(&connects, 0.99).as_secs_f64()),
            secs(connects.last().expect("a connect").as_secs_f64()),
            secs(percentile(&hellos, 0.5).as_secs_f64()),
            secs(percentile(&hellos, 0.99).as_secs_f64()),
            secs(hellos.last().expect("a hello").as_secs_f64()),
        );
        all.push(everyone.as_secs_f64());
        slowest.push(connects.last().expect("a connect").as_secs_f64());
        c99.push(percentile(&connects, 0.99).as_secs_f64());
        h50.push(percentile(&hellos, 0.5).as_secs_f64());
        stalls.push(slow as f64);
        thread::sleep(Duration::from_secs(2));
    }
    // One at a time: what a lone client waits for its greeting on an idle server.
    let mut lone = Vec::new();
    let mut lcg = Lcg(7);
    for _ in 0..s.sequential {
        // Random gaps, so the connects land at every phase of the server's accept loop.
        thread::sleep(Duration::from_micros(1000 + lcg.below(25_000) as u64));
        let t = Instant::now();
        let stream = TcpStream::connect_timeout(&addr, SHORT).expect("connect");
        stream.set_read_timeout(Some(SHORT)).expect("timeout");
        let mut stream = blocking_client(stream, Trust::FirstUse).expect("tls");
        let mut line = String::new();
        BufReader::new(&mut stream)
            .read_line(&mut line)
            .expect("a greeting");
        assert!(line.starts_with("HELLO"), "got {line:?}");
        lone.push(t.elapsed());
    }
    let (l50, l99) = p50_p99(&mut lone);
    println!(
        "  {} connects one at a time: HELLO after p50 {} p99 {} max {}",
        s.sequential,
        secs(l50),
        secs(l99),
        secs(lone.last().expect("a connect").as_secs_f64())
    );
    let n = s.burst;
    report.add(
        "5 burst",
        format!("one connect at a time ({}): HELLO p50 / p99", s.sequential),
        format!("{} / {}", secs(l50), secs(l99)),
        "-",
        "-",
        "-",
    );
    report.add(
        "5 burst",
        format!("{n} connects at once: until all got HELLO"),
        secs(median(&all)),
        "-",
        "-",
        "-",
    );
    report.add(
        "5 burst",
        "slowest connect (connect p99)",
        format!("{} ({})", secs(median(&slowest)), secs(median(&c99))),
        "-",
        "-",
        format!(
            "no 1 s SYN retries: {}",
            verdict(stalls.iter().all(|&s| s == 0.0))
        ),
    );
    report.add(
        "5 burst",
        "HELLO p50 after connect",
        secs(median(&h50)),
        "-",
        "-",
        "-",
    );
    drop(server);
}

// ---- W2: the peer links' cipher (issue 12) ----

/// The Noise transport over loopback, AES-GCM against ChaCha20-Poly1305, each against a
/// plain `io::copy` of the same bytes over loopback in the same run: what the framing
/// (64 KiB records, one buffer each way, no other copy) and the cipher cost a stream.
fn group_cipher(s: &Settings, report: &mut Report) {
    use peerchat::crypto::noise::{PATTERN, PATTERN_CHACHA};
    let size: u64 = s.sizes.iter().copied().max().unwrap_or(64 << 20);
    let mut plain = Vec::new();
    let mut aes = Vec::new();
    let mut chacha = Vec::new();
    for _ in 0..s.transfer_runs.max(1) {
        plain.push(loopback_stream(size, None));
        aes.push(loopback_stream(size, Some(PATTERN)));
        chacha.push(loopback_stream(size, Some(PATTERN_CHACHA)));
    }
    let mbs = |secs: &[f64]| size as f64 / 1e6 / median(secs);
    let base = mbs(&plain);
    for (name, runs) in [("AES-GCM", &aes), ("ChaCha20-Poly1305", &chacha)] {
        let got = mbs(runs);
        println!("noise {name}: {got:.0} MB/s, plain loopback {base:.0} MB/s");
        report.add(
            &format!("noise stream {name}, {} MiB", size >> 20),
            "MB/s",
            format!("{got:.0}"),
            format!("{base:.0} (io::copy)"),
            format!("{:.2}", got / base),
            "choose the faster",
        );
    }
}

/// Seconds to move `size` bytes over a loopback connection, plain or through Noise with
/// `pattern`.
fn loopback_stream(size: u64, pattern: Option<&'static str>) -> f64 {
    use peerchat::crypto::noise;
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let deadline = Instant::now() + SHORT;
    let receiver = thread::spawn(move || -> u64 {
        let (sock, _) = listener.accept().expect("accept");
        let mut input: Box<dyn Read> = match pattern {
            None => Box::new(sock),
            Some(p) => {
                let (key, _) = noise::generate_keypair().expect("key");
                let (h, _) =
                    noise::respond_with(p, &sock, &key, deadline, |_| Some("bench ticket".into()))
                        .expect("respond");
                Box::new(h.reader)
            }
        };
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = 0u64;
        loop {
            match input.read(&mut buf) {
                Ok(0) => return got,
                Ok(n) => got += n as u64,
                Err(e) => panic!("read: {e}"),
            }
        }
    });
    let sock = TcpStream::connect(addr).expect("connect");
    let t0 = Instant::now();
    let mut output: Box<dyn Write> = match pattern {
        None => Box::new(sock.try_clone().expect("clone")),
        Some(p) => {
            let (key, _) = noise::generate_keypair().expect("key");
            let h = noise::initiate_with(p, &sock, &key, "bench ticket", None, deadline)
                .expect("initiate");
            Box::new(h.writer)
        }
    };
    let block = vec![0x5au8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        output.write_all(&block[..n]).expect("write");
        left -= n as u64;
    }
    drop(output);
    let _ = sock.shutdown(Shutdown::Write);
    let got = receiver.join().expect("receiver");
    assert_eq!(got, size, "every byte arrived");
    t0.elapsed().as_secs_f64()
}
