//! The `scale` group (issue 14): one server with thousands of logged-in raw clients.
//!
//! Figures: server RSS per client; `LIST`/`INFO`/`SEARCH` p50/p99 at each level online
//! (idle, then while 50 cost-12 logins hash); logins per second (password and token) at
//! each level against the first; and the time for everyone to come back with tokens
//! after a server restart. The crowd is held by one epoll thread (the [`Drainer`]), so
//! the bench itself needs no thread per connection. Shared connection helpers
//! (`raw_login`, `tls_connect`, `make_accounts`) stay in `peerchat.rs`: other groups
//! use them too.
//!
//! `PEERCHAT_BENCH_SCALE_LEVELS=100,1000,3000,10000` measures at other numbers online;
//! `PEERCHAT_BENCH_SCALE_HOLD=<s>` pauses at each level with the server's pid printed,
//! for `perf record -a -g` or `strace` from another shell.

use super::*;

/// Gives each account in `names` a resumable-login token, written straight into the
/// server's `login_tokens` table as the server stores it (the digest), valid for a day.
/// Returns the tokens, in the order of `names`.
fn make_tokens(dir: &Path, names: &[String]) -> Vec<String> {
    use peerchat::protocol::session_token::SessionToken;
    let mut conn = rusqlite::Connection::open(dir.join("server.db")).expect("opening the database");
    let tx = conn.transaction().expect("a transaction");
    let mut tokens = Vec::with_capacity(names.len());
    {
        let mut insert = tx
            .prepare(
                "INSERT INTO login_tokens (digest, username_key, expires_at_ms, created_at_ms)
                 VALUES (?1, ?2, ?3, ?4)",
            )
            .expect("an insert");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("a clock")
            .as_millis() as i64;
        for name in names {
            let token = SessionToken::generate().expect("randomness");
            insert
                .execute(rusqlite::params![
                    token.digest(),
                    name.to_ascii_lowercase(),
                    now + 86_400_000,
                    now
                ])
                .expect("inserting a token");
            tokens.push(token.to_string());
        }
    }
    tx.commit().expect("committing the tokens");
    tokens
}

/// Logs `user` in with its token (`RESUME`) over a raw socket, answers written at once;
/// returns the socket once `OK WELCOME` came.
fn raw_resume(addr: SocketAddr, user: &str, token: &str) -> Result<TcpStream, String> {
    let mut stream = tls_connect(addr, Duration::from_secs(120))?;
    stream
        .write_all(format!("RESUME {user} {token}\n{RAW_PORT}\n").as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    read_until(&mut stream, Vec::new(), |l| l.starts_with("OK WELCOME"))
        .map_err(|e| format!("{user}: {e}"))?;
    // The drainer only reads and throws bytes away: the raw socket is enough.
    Ok(stream.sock)
}

#[derive(Default)]
struct DrainStats {
    held: AtomicUsize,
    closed: AtomicUsize,
    bytes: AtomicU64,
}

/// Holds many logged-in connections: one thread with epoll reads and discards whatever
/// the server sends (presence events above all) and sends `PING` every 30 s, like
/// `peerchat-client`, so the server neither drops them for a full queue nor for silence.
struct Drainer {
    tx: Option<mpsc::Sender<TcpStream>>,
    stop: Arc<AtomicBool>,
    stats: Arc<DrainStats>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Drainer {
    fn start() -> Drainer {
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(DrainStats::default());
        let (s, st) = (Arc::clone(&stop), Arc::clone(&stats));
        let thread = thread::Builder::new()
            .name("drainer".into())
            .spawn(move || drain_loop(&rx, &s, &st))
            .expect("the drainer thread");
        Drainer {
            tx: Some(tx),
            stop,
            stats,
            thread: Some(thread),
        }
    }

    fn add(&self, stream: TcpStream) {
        self.tx
            .as_ref()
            .expect("drainer running")
            .send(stream)
            .expect("the drainer is gone");
    }

    fn held(&self) -> usize {
        self.stats.held.load(Ordering::SeqCst)
    }

    fn closed(&self) -> usize {
        self.stats.closed.load(Ordering::SeqCst)
    }

    fn bytes(&self) -> u64 {
        self.stats.bytes.load(Ordering::SeqCst)
    }

    /// Waits until `n` connections are registered with epoll.
    fn wait_held(&self, n: usize) {
        let until = Instant::now() + SHORT;
        while self.held() + self.closed() < n {
            assert!(
                Instant::now() < until,
                "the drainer did not take the connections"
            );
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Drainer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn drain_loop(rx: &mpsc::Receiver<TcpStream>, stop: &AtomicBool, stats: &DrainStats) {
    // SAFETY: epoll calls on descriptors this thread owns; the event buffer outlives
    // every call that writes into it.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    assert!(ep >= 0, "epoll_create1: {}", io::Error::last_os_error());
    let mut conns: HashMap<i32, (TcpStream, Instant)> = HashMap::new();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut scratch = vec![0u8; 64 * 1024];
    while !stop.load(Ordering::SeqCst) {
        while let Ok(stream) = rx.try_recv() {
            stream.set_nonblocking(true).expect("non-blocking");
            let fd = stream.as_raw_fd();
            let mut ev = libc::epoll_event {
                events: (libc::EPOLLIN | libc::EPOLLRDHUP) as u32,
                u64: fd as u64,
            };
            // SAFETY: see above.
            let rc = unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) };
            assert_eq!(rc, 0, "epoll_ctl: {}", io::Error::last_os_error());
            conns.insert(fd, (stream, Instant::now()));
            stats.held.fetch_add(1, Ordering::SeqCst);
        }
        // SAFETY: see above.
        let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, 20) };
        if n < 0 {
            let e = io::Error::last_os_error();
            assert_eq!(e.kind(), io::ErrorKind::Interrupted, "epoll_wait: {e}");
            continue;
        }
        for ev in &events[..n as usize] {
            let fd = ev.u64 as i32;
            let gone = match conns.get(&fd) {
                Some((stream, _)) => drain(stream, &mut scratch, stats),
                None => false,
            };
            if gone {
                // SAFETY: see above.
                unsafe {
                    libc::epoll_ctl(ep, libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut());
                }
                conns.remove(&fd);
                stats.held.fetch_sub(1, Ordering::SeqCst);
                stats.closed.fetch_add(1, Ordering::SeqCst);
            }
        }
        // No PING: the connections are TLS and the drainer holds only their sockets (a
        // plain `PING` would break the record stream); the scale group starts its
        // servers with a long --idle-timeout instead.
        if n > 0 {
            // Let lines gather, so one read takes many.
            thread::sleep(Duration::from_millis(5));
        }
    }
    // SAFETY: see above.
    unsafe {
        libc::close(ep);
    }
}

/// Reads everything waiting on a non-blocking socket; true if the server closed it.
fn drain(stream: &TcpStream, scratch: &mut [u8], stats: &DrainStats) -> bool {
    let mut reader = stream;
    loop {
        match reader.read(scratch) {
            Ok(0) => return true,
            Ok(n) => {
                stats.bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
}

/// One logged-in connection that sends commands and times the replies.
struct Probe {
    /// Replies (after what the login read past `OK WELCOME`) and, through the chain's
    /// second half, the TLS stream to write commands on.
    reader: BufReader<io::Chain<io::Cursor<Vec<u8>>, BlockingTls>>,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Kind {
    List,
    Info,
    Search,
}

impl Kind {
    fn word(self) -> &'static str {
        match self {
            Kind::List => "LIST",
            Kind::Info => "INFO",
            Kind::Search => "SEARCH",
        }
    }
}

impl Probe {
    fn login(addr: SocketAddr, user: &str) -> Probe {
        let (stream, rest, _) = raw_login(addr, user, "").unwrap_or_else(|e| panic!("probe: {e}"));
        Probe {
            reader: BufReader::new(io::Cursor::new(rest).chain(stream)),
        }
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).expect("probe read");
        assert!(n > 0, "the server closed the probe");
        line.trim_end().to_string()
    }

    /// Sends `command`, reads its reply (skipping events), returns the time taken, the
    /// number of lines in the reply's list and the total it announces (LIST and SEARCH
    /// are paged or capped).
    fn request(&mut self, kind: Kind, command: &str) -> (Duration, usize, usize) {
        let t0 = Instant::now();
        self.reader
            .get_mut()
            .get_mut()
            .1
            .write_all(format!("{command}\n").as_bytes())
            .expect("probe write");
        let word = match kind {
            Kind::List => "OK LIST ",
            Kind::Info => "OK INFO ",
            Kind::Search => "OK SEARCH ",
        };
        loop {
            let line = self.line();
            if line.starts_with("EVENT ") || line == "OK PONG" {
                continue;
            }
            assert!(
                line.starts_with(word),
                "{command}: unexpected reply {line:?}"
            );
            let number = |i: usize| -> usize {
                line.split_whitespace()
                    .nth(i)
                    .and_then(|n| n.parse().ok())
                    .expect("a count")
            };
            let (count, total) = match kind {
                Kind::Info => (0, 0),
                Kind::List | Kind::Search => (number(2), number(3)),
            };
            for _ in 0..count {
                self.line();
            }
            return (t0.elapsed(), count, total);
        }
    }

    fn quit(mut self) {
        let tls = &mut self.reader.get_mut().get_mut().1;
        let _ = tls.write_all(b"QUIT\n");
        let _ = tls.sock.shutdown(Shutdown::Write);
        let mut rest = Vec::new();
        let _ = self.reader.read_to_end(&mut rest);
    }
}

fn user_name(i: usize) -> String {
    format!("u{i:05}")
}

/// Ten shared files per user, half of them matching `photo`.
fn share_body(i: usize) -> String {
    let mut body = String::from("SHARE 10\n");
    for j in 0..10 {
        let kind = if j % 2 == 0 { "photo" } else { "notes" };
        body.push_str(&format!("{} u{i:05}-{kind}-{j}.dat\n", 1000 + i * 10 + j));
    }
    body
}

/// Logs users `from..to` in with `workers` threads and hands them to the drainer.
fn login_range(addr: SocketAddr, from: usize, to: usize, workers: usize, drainer: &Drainer) {
    let next = AtomicUsize::new(from);
    thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= to {
                        return;
                    }
                    let (stream, _, _) = raw_login(addr, &user_name(i), &share_body(i))
                        .unwrap_or_else(|e| panic!("login {i}: {e}"));
                    // Draining only throws bytes away: the ciphertext will do.
                    drainer.add(stream.sock);
                }
            });
        }
    });
    drainer.wait_held(to);
}

/// Samples of each command at one level.
type Samples = HashMap<Kind, Vec<Duration>>;

fn probe_round(
    probe: &mut Probe,
    kind: Kind,
    users: usize,
    lcg: &mut Lcg,
    samples: &mut Samples,
) -> usize {
    let command = match kind {
        Kind::List => "LIST".to_string(),
        Kind::Info => format!("INFO {}", user_name(lcg.below(users))),
        Kind::Search => "SEARCH photo".to_string(),
    };
    let (took, _, total) = probe.request(kind, &command);
    samples.entry(kind).or_default().push(took);
    total
}

/// How long each login rate is measured: longer than the presence interval at 10,000
/// online (5 s), so the rate pays for the announcement its logins cause. With 200
/// logins (0.2-0.4 s) whether the announcement of the phase before fell inside swung
/// the token rate at 10,000 between x0.86 and x0.40 of the rate at 100.
const CHURN_WINDOW: Duration = Duration::from_secs(8);

/// Logins per second at the current number online: password logins (cost 4) that quit
/// at once for [`CHURN_WINDOW`], then token logins (`RESUME`) that quit at once for as
/// long, each on 4 threads. Fresh accounts per level (`xp<level>_<i>`, `xt<level>_<i>`):
/// QUIT revokes a token. Also returns the server's CPU seconds per login of each kind
/// (`pid`: the server).
fn churn_rates(
    addr: SocketAddr,
    pid: u32,
    level: usize,
    (n_password, n_token): (usize, usize),
    tokens: &[String],
) -> Churn {
    let password: Vec<String> = (0..n_password)
        .map(|i| format!("n\nxp{level}_{i}\n{PASSWORD}\n{RAW_PORT}\nQUIT\n"))
        .collect();
    let resumed: Vec<String> = (0..n_token)
        .map(|i| format!("RESUME xt{level}_{i} {}\n{RAW_PORT}\nQUIT\n", tokens[i]))
        .collect();
    let cpu0 = cpu_secs(pid);
    let (password_rate, password_done) = login_rate_within(addr, &password, 4, CHURN_WINDOW);
    let cpu1 = cpu_secs(pid);
    let (token_rate, token_done) = login_rate_within(addr, &resumed, 4, CHURN_WINDOW);
    let cpu2 = cpu_secs(pid);
    Churn {
        password_rate,
        token_rate,
        password_done,
        token_done,
        password_cpu: (cpu1 - cpu0) / password_done.max(1) as f64,
        token_cpu: (cpu2 - cpu1) / token_done.max(1) as f64,
    }
}

/// Login rates at one level, and the server CPU each login cost.
struct Churn {
    password_rate: f64,
    token_rate: f64,
    /// Logins done in the window, of each kind.
    password_done: usize,
    token_done: usize,
    /// Server CPU seconds per password login (cost 4) + `QUIT`.
    password_cpu: f64,
    /// Server CPU seconds per token login + `QUIT`.
    token_cpu: f64,
}

/// `PEERCHAT_BENCH_SCALE_LEVELS=100,1000,3000,10000` measures at these numbers online
/// instead of the settings' levels (the first is the baseline of the ratios).
const LEVELS_ENV: &str = "PEERCHAT_BENCH_SCALE_LEVELS";

/// `PEERCHAT_BENCH_SCALE_HOLD=<seconds>`: after each level's figures, hold the crowd
/// online this long and print the server's pid and address, so that the server can be
/// profiled from outside (`perf record -p`, `strace -f -c -p`) at that level.
const HOLD_ENV: &str = "PEERCHAT_BENCH_SCALE_HOLD";

/// The server's CPU use (in cores) over `span` with nothing asked of it.
fn idle_cpu(pid: u32, span: Duration) -> f64 {
    let cpu0 = cpu_secs(pid);
    thread::sleep(span);
    (cpu_secs(pid) - cpu0) / span.as_secs_f64()
}

pub(super) fn group_scale(s: &Settings, bins: &Bins, report: &mut Report, nofile: u64) {
    // The server holds one descriptor per connection (its TLS reader and writer share
    // the socket); it inherits this process's limit.
    let fit = (nofile.saturating_sub(300) as usize)
        .saturating_sub(s.hard_logins + 10)
        .max(20);
    let wanted: Vec<usize> = match env::var(LEVELS_ENV) {
        Ok(list) => list
            .split(',')
            .map(|l| {
                l.trim()
                    .parse()
                    .expect("PEERCHAT_BENCH_SCALE_LEVELS: numbers")
            })
            .collect(),
        Err(_) => s.scale_levels.clone(),
    };
    let hold = env::var(HOLD_ENV)
        .ok()
        .map(|h| Duration::from_secs(h.parse().expect("PEERCHAT_BENCH_SCALE_HOLD: seconds")));
    let mut levels: Vec<usize> = wanted.iter().copied().filter(|&l| l <= fit).collect();
    if levels.len() < wanted.len() {
        levels.push(fit);
        report.note(format!(
            "scale: the open-file limit ({nofile}) allows only {fit} clients; raise it (as root the bench raises its own hard limit; else `ulimit -Hn`)"
        ));
    }
    // Each server thread costs 4 memory mappings (stack, guard, signal stack, guard) and
    // each client two threads: past vm.max_map_count thread starts fail.
    let maps = fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|t| t.trim().parse::<usize>().ok())
        .unwrap_or(65_530);
    let map_fit = maps.saturating_sub(2000) / 8;
    if levels.iter().any(|&l| l + s.hard_logins + 10 > map_fit) {
        levels.retain(|&l| l + s.hard_logins + 10 <= map_fit);
        levels.push(map_fit - s.hard_logins - 10);
        report.note(format!(
            "scale: vm.max_map_count ({maps}) allows only about {map_fit} clients; raise it (README: sysctl -w vm.max_map_count=262144)"
        ));
    }
    let top = *levels.last().expect("a level");
    // Enough fresh accounts for each window at twice the rates seen here (about 500
    // password and 1,100 token logins a second), more if the settings ask for more.
    let churn = (
        (s.easy_logins * 8).max(8_000),
        (s.easy_logins * 16).max(16_000),
    );
    let tmp = temp_dir();
    let dir = tmp.path().to_path_buf();
    let t = Instant::now();
    let easy = bcrypt::hash(PASSWORD, 4).expect("a cost-4 hash");
    let hard = bcrypt::hash(PASSWORD, 12).expect("a cost-12 hash");
    let mut accounts: Vec<(String, &str)> =
        (0..top).map(|i| (user_name(i), easy.as_str())).collect();
    accounts.extend((0..=levels.len()).map(|i| (format!("probe{i}"), easy.as_str())));
    // One set of cost-12 accounts per wave: a login renews a hash to the server's cost.
    for wave in 0..s.runs {
        accounts.extend((0..s.hard_logins).map(|i| (format!("hard{wave}_{i:02}"), hard.as_str())));
    }
    let mut churn_tokens: Vec<Vec<String>> = Vec::new();
    for &level in &levels {
        accounts.extend((0..churn.0).map(|i| (format!("xp{level}_{i}"), easy.as_str())));
        accounts.extend((0..churn.1).map(|i| (format!("xt{level}_{i}"), easy.as_str())));
    }
    make_accounts(&dir, &accounts);
    for &level in &levels {
        let names: Vec<String> = (0..churn.1).map(|i| format!("xt{level}_{i}")).collect();
        churn_tokens.push(make_tokens(&dir, &names));
    }
    let user_names: Vec<String> = (0..top).map(user_name).collect();
    let user_tokens = make_tokens(&dir, &user_names);
    println!(
        "  {} accounts and {} tokens inserted in {:.1} s",
        accounts.len(),
        user_tokens.len() + churn.1 * levels.len(),
        t.elapsed().as_secs_f64()
    );
    let max = (top + s.hard_logins + 50).to_string();
    // Cost 4 for the crowd, so the figures show the server's own cost per login (the
    // cost-12 accounts still cost 12 to check: a stored hash's cost is what counts).
    // The drainer cannot send PING over TLS: a long idle timeout keeps the crowd online.
    let idle = ["--idle-timeout".to_string(), "86400".to_string()];
    // The 50 cost-12 logins queue for one bcrypt permit at the lowest priority: on a
    // machine shared with other work the last can wait past the default 60 s, and a
    // timed-out login would end the run. The figure is the other commands' latency.
    let login_wait = ["--login-timeout".to_string(), "1800".to_string()];
    let (server, addr) = start_server(
        bins,
        &dir,
        Some(4),
        &[
            "--max-clients".into(),
            max.clone(),
            idle[0].clone(),
            idle[1].clone(),
            login_wait[0].clone(),
            login_wait[1].clone(),
        ],
    );
    thread::sleep(Duration::from_secs(1));
    let rss_idle = server.status("VmRSS");
    println!("  server idle: RSS {}", mib(rss_idle));
    let drainer = Drainer::start();
    let mut lcg = Lcg(42);
    let mut online = 0;
    let mut at_top: Samples = HashMap::new();
    let mut rates: Vec<(usize, f64, f64)> = Vec::new();
    for (li, &level) in levels.iter().enumerate() {
        let t = Instant::now();
        let cpu0 = cpu_secs(server.pid());
        login_range(addr, online, level - 1, s.login_workers, &drainer);
        let ramp = t.elapsed().as_secs_f64();
        let ramp_cpu = cpu_secs(server.pid()) - cpu0;
        let logged = level - 1 - online;
        online = level - 1;
        thread::sleep(Duration::from_secs(1));
        let rss = server.status("VmRSS");
        let threads = server.status("Threads");
        println!(
            "  {logged} logins to {online} drained users in {ramp:.1} s ({:.0}/s; server CPU {ramp_cpu:.1} s, {:.2} ms per login); server RSS {}, {threads} threads",
            logged as f64 / ramp,
            ramp_cpu * 1e3 / logged as f64,
            mib(rss)
        );
        let mut probe = Probe::login(addr, &format!("probe{li}"));
        let mut samples: Samples = HashMap::new();
        let mut listed = 0;
        let mut found = 0;
        for _ in 0..s.probes {
            listed = probe_round(&mut probe, Kind::List, online, &mut lcg, &mut samples);
        }
        for _ in 0..s.probes * 2 {
            probe_round(&mut probe, Kind::Info, online, &mut lcg, &mut samples);
        }
        for _ in 0..s.probes {
            found = probe_round(&mut probe, Kind::Search, online, &mut lcg, &mut samples);
        }
        assert_eq!(listed, level, "LIST's total should count everyone online");
        println!(
            "  at {level} online: LIST counts {listed}, SEARCH photo counts {found} of {} files",
            level.saturating_sub(1) * 5
        );
        // What the crowd costs with nobody logging in (the last presence announcement
        // of the ramp is long done: the probes took longer than an interval).
        let idle = idle_cpu(server.pid(), Duration::from_secs(5));
        let c = churn_rates(addr, server.pid(), level, churn, &churn_tokens[li]);
        let (password_rate, token_rate) = (c.password_rate, c.token_rate);
        println!(
            "  at {level} online: server CPU idle {:.1}% of a core; {} cost-4 password logins + QUIT in {} s at {password_rate:.0}/s (server CPU {:.2} ms per login), {} token logins + QUIT at {token_rate:.0}/s ({:.2} ms per login)",
            idle * 100.0,
            c.password_done,
            CHURN_WINDOW.as_secs(),
            c.password_cpu * 1e3,
            c.token_done,
            c.token_cpu * 1e3,
        );
        rates.push((level, password_rate, token_rate));
        if let Some(hold) = hold {
            println!(
                "  holding {} s with {online} online: server pid {}, address {addr}",
                hold.as_secs(),
                server.pid()
            );
            thread::sleep(hold);
        }
        let mut cells = Vec::new();
        for kind in [Kind::List, Kind::Info, Kind::Search] {
            let (p50, p99) = p50_p99(samples.get_mut(&kind).expect("samples"));
            cells.push((kind, p50, p99));
        }
        for (kind, p50, p99) in &cells {
            report.add(
                "3 scale",
                format!("{} p50 / p99, {level} online", kind.word()),
                format!("{} / {}", secs(*p50), secs(*p99)),
                "-",
                "-",
                "-",
            );
        }
        if level == top {
            let rss_per_client = rss.saturating_sub(rss_idle) as f64 / online as f64;
            at_top = samples;
            report.add(
                "3 scale",
                format!("server RSS per connected client, {online} clients"),
                format!("{rss_per_client:.1} KiB"),
                format!("idle server {}", mib(rss_idle)),
                "-",
                format!("{threads} server threads"),
            );
        }
        probe.quit();
    }
    let base = rates.first().map_or(f64::NAN, |r| r.1);
    let base_token = rates.first().map_or(f64::NAN, |r| r.2);
    for (level, password_rate, token_rate) in &rates {
        report.add(
            "3 scale",
            format!("logins/s at {level} online (cost-4 password / token), each + QUIT"),
            format!("{password_rate:.0} / {token_rate:.0}"),
            format!("at {}: {base:.0} / {base_token:.0}", levels[0]),
            format!(
                "×{:.2} / ×{:.2}",
                password_rate / base,
                token_rate / base_token
            ),
            if *level == top {
                // The goal is of logins, both kinds.
                verdict(password_rate / base >= 0.7 && token_rate / base_token >= 0.7)
            } else {
                "-"
            },
        );
    }

    // Under load: the hard logins all at once, while the probe keeps asking; in waves
    // (the hard users leave between waves), samples pooled.
    let mut probe = Probe::login(addr, &format!("probe{}", levels.len()));
    let users = online;
    let mut loaded: Samples = HashMap::new();
    let mut wave_rates = Vec::new();
    for wave in 0..s.runs {
        let gate = Barrier::new(s.hard_logins + 1);
        let done = AtomicUsize::new(0);
        let held = Mutex::new(Vec::new());
        let cpu0 = cpu_secs(server.pid());
        let mut took = Duration::ZERO;
        thread::scope(|scope| {
            for i in 0..s.hard_logins {
                let (gate, done, held) = (&gate, &done, &held);
                scope.spawn(move || {
                    gate.wait();
                    // Each from its own loopback address, as 50 people would come.
                    let from = std::net::Ipv4Addr::new(127, 0, 1, 2 + i as u8);
                    let (stream, _, _) =
                        raw_login_from(addr, Some(from.into()), &format!("hard{wave}_{i:02}"), "")
                            .unwrap_or_else(|e| panic!("hard login {i}: {e}"));
                    held.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(stream.sock);
                    done.fetch_add(1, Ordering::SeqCst);
                });
            }
            gate.wait();
            let t = Instant::now();
            let kinds = [Kind::List, Kind::Info, Kind::Search];
            let mut k = 0;
            while done.load(Ordering::SeqCst) < s.hard_logins {
                probe_round(&mut probe, kinds[k % 3], users, &mut lcg, &mut loaded);
                k += 1;
            }
            took = t.elapsed();
        });
        let cpu = cpu_secs(server.pid()) - cpu0;
        let per_sec = s.hard_logins as f64 / took.as_secs_f64();
        println!(
            "  wave {}: {} cost-12 logins at once with {top} online: {:.1} s ({per_sec:.1} logins/s), server CPU {cpu:.1} s",
            wave + 1,
            s.hard_logins,
            took.as_secs_f64()
        );
        wave_rates.push(per_sec);
        // The hard users leave; wait until the server has them offline.
        drop(held);
        let until = Instant::now() + SHORT;
        while probe.request(Kind::List, "LIST").2 > users + 1 {
            assert!(Instant::now() < until, "the hard users did not go offline");
            thread::sleep(Duration::from_millis(200));
        }
    }
    probe.quit();
    for kind in [Kind::List, Kind::Info, Kind::Search] {
        let idle = at_top
            .get_mut(&kind)
            .map(|v| p50_p99(v))
            .unwrap_or((f64::NAN, f64::NAN));
        let samples = loaded.entry(kind).or_default();
        let n = samples.len();
        let (p50, p99) = p50_p99(samples);
        report.add(
            "3 scale",
            format!(
                "{} p50 / p99, {top} online, {} cost-12 logins hashing ({n} samples, {} waves)",
                kind.word(),
                s.hard_logins,
                s.runs
            ),
            format!("{} / {}", secs(p50), secs(p99)),
            format!("idle {} / {}", secs(idle.0), secs(idle.1)),
            format!("p50 ×{:.0}", p50 / idle.0),
            verdict(p99 < 0.010),
        );
    }
    report.add(
        "3 scale",
        format!("{} cost-12 logins at once, {top} online", s.hard_logins),
        format!("{:.1} logins/s", median(&wave_rates)),
        "-",
        "-",
        "-",
    );
    drainer.wait_held(online);
    let dropped = drainer.closed();
    println!(
        "  drained {:.1} MiB of server lines; {dropped} connections dropped by the server",
        drainer.bytes() as f64 / MIB as f64
    );
    if dropped > 0 {
        report.note(format!(
            "scale: the server dropped {dropped} idle connections"
        ));
    }

    // The restart storm: the server dies with everyone online and a new run (default
    // bcrypt cost) on the same database takes them all back, each with its token.
    drop(server);
    drop(drainer);
    let (server, addr) = start_server(
        bins,
        &dir,
        None,
        &[
            "--max-clients".into(),
            max,
            idle[0].clone(),
            idle[1].clone(),
        ],
    );
    let drainer = Drainer::start();
    let next = AtomicUsize::new(0);
    let t = Instant::now();
    let cpu0 = cpu_secs(server.pid());
    let workers = 16;
    thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= online {
                        return;
                    }
                    let stream = raw_resume(addr, &user_names[i], &user_tokens[i])
                        .unwrap_or_else(|e| panic!("reconnect {i}: {e}"));
                    drainer.add(stream);
                }
            });
        }
    });
    drainer.wait_held(online);
    let storm = t.elapsed().as_secs_f64();
    let storm_cpu = cpu_secs(server.pid()) - cpu0;
    let check = verify_rate(&hard, 3);
    let with_passwords = online as f64 / (check * (cores().saturating_sub(1).max(1)) as f64);
    println!(
        "  restart: {online} clients back with tokens in {storm:.1} s ({:.0}/s, server CPU {storm_cpu:.1} s); with passwords at cost 12 it would take about {with_passwords:.0} s",
        online as f64 / storm
    );
    report.add(
        "3 scale",
        format!("{online} clients reconnect after a restart with tokens ({workers} threads)"),
        secs(storm),
        format!("passwords at cost 12: ~{with_passwords:.0} s"),
        format!("{:.0} logins/s", online as f64 / storm),
        verdict(storm < 30.0),
    );
    drop(server);
    drop(drainer);
}
