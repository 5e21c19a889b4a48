//! The `cluster` group (issue 14): two servers with `--cluster` on one Redis and one
//! database against one server alone, on the same machine in the same run.
//!
//! Figures: logins per second (login + `QUIT`, bcrypt cost 4, the workers' logins spread
//! over the servers), and `LIST` p50/p99 with users online (half on each server in the
//! pair). Both sides run on this 2-core machine, so two servers share the cores one had:
//! the figure shows what the cluster costs, not what a second machine would add. Needs
//! `redis-server` (Debian's package); without it the group says so and skips.

use super::*;

/// A `redis-server` on a free loopback port with no persistence, killed on drop.
struct RedisProc {
    proc_: Proc,
    port: u16,
    _dir: tempfile::TempDir,
}

impl RedisProc {
    fn start() -> Option<RedisProc> {
        let installed = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            return None;
        }
        let dir = temp_dir();
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
            .arg("--dir")
            .arg(dir.path());
        let proc_ = Proc::spawn("redis", cmd, &dir.path().join("redis.log"));
        let deadline = Instant::now() + SHORT;
        while !redis_answers(port) {
            assert!(Instant::now() < deadline, "redis-server did not start");
            thread::sleep(Duration::from_millis(50));
        }
        Some(RedisProc {
            proc_,
            port,
            _dir: dir,
        })
    }

    fn url(&self) -> String {
        let _ = self.proc_.pid();
        format!("redis://127.0.0.1:{}", self.port)
    }
}

fn redis_answers(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut buf).is_ok()
        && &buf == b"+PONG\r\n"
}

/// Starts a server on `dir`'s database with its own log `<name>.log`.
fn start_named(bins: &Bins, dir: &Path, name: &str, extra: &[String]) -> (Proc, SocketAddr) {
    let mut cmd = Command::new(&bins.server);
    cmd.args(["--addr", "127.0.0.1:0", "--db"])
        .arg(dir.join("server.db"))
        .args(["--bcrypt-cost", "4", "--max-clients", "4096"])
        .args(extra);
    let server = Proc::spawn(name, cmd, &dir.join(format!("{name}.log")));
    let mut cursor = 0;
    let (_, line) = server.wait_for(&mut cursor, "listening on ", SHORT);
    let addr = line
        .trim_start_matches("listening on ")
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("server address in {line:?}: {e}"));
    (server, addr)
}

/// Login + `QUIT` for every script, `workers` at a time, worker `w` on `addrs[w % n]`.
fn spread_login_rate(addrs: &[SocketAddr], scripts: &[String], workers: usize) -> f64 {
    let next = AtomicUsize::new(0);
    let t = Instant::now();
    thread::scope(|scope| {
        for w in 0..workers {
            let addr = addrs[w % addrs.len()];
            let next = &next;
            scope.spawn(move || {
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

/// One `LIST` on a logged-in connection: its time and the total it reported.
fn list_once(stream: &mut BlockingTls, buf: &mut Vec<u8>) -> (Duration, usize) {
    let t = Instant::now();
    stream.write_all(b"LIST\n").expect("sending LIST");
    let mut total = None;
    let mut users_left = usize::MAX;
    let mut chunk = [0u8; 16 * 1024];
    loop {
        while let Some(nl) = buf.iter().position(|&c| c == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            let line = String::from_utf8_lossy(&line[..nl]).to_string();
            if let Some(rest) = line.strip_prefix("OK LIST ") {
                let mut words = rest.split(' ');
                users_left = words.next().and_then(|n| n.parse().ok()).expect("a count");
                total = words.next().and_then(|n| n.parse().ok());
            } else if line.starts_with("USER ") {
                users_left -= 1;
            }
            if users_left == 0 {
                return (t.elapsed(), total.expect("a total"));
            }
        }
        let n = stream.read(&mut chunk).expect("reading LIST");
        assert!(n > 0, "the server closed during LIST");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Logs `online` users in (user `i` on `addrs[i % n]`) and keeps them; returns the
/// sockets (dropping them logs the users out).
fn keep_online(addrs: &[SocketAddr], names: &[String]) -> Vec<BlockingTls> {
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            raw_login(addrs[i % addrs.len()], name, "")
                .unwrap_or_else(|e| panic!("keeping {name} online: {e}"))
                .0
        })
        .collect()
}

/// `LIST` p50/p99 on `addr` once `want` users show in its total.
fn list_latency(addr: SocketAddr, prober: &str, want: usize, probes: usize) -> (f64, f64) {
    let (mut stream, rest, _) = raw_login(addr, prober, "").expect("the prober's login");
    let mut buf = rest;
    let deadline = Instant::now() + SHORT;
    loop {
        let (_, total) = list_once(&mut stream, &mut buf);
        if total >= want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "LIST shows {total} online, want {want}"
        );
        thread::sleep(Duration::from_millis(100));
    }
    let mut samples: Vec<Duration> = (0..probes)
        .map(|_| list_once(&mut stream, &mut buf).0)
        .collect();
    p50_p99(&mut samples)
}

pub(super) fn group_cluster(s: &Settings, bins: &Bins, report: &mut Report) {
    let Some(redis) = RedisProc::start() else {
        report
            .note("cluster: skipped, redis-server is not installed (apt-get install redis-server)");
        return;
    };
    let easy = bcrypt::hash(PASSWORD, 4).expect("a cost-4 hash");
    let logins = s.easy_logins;
    let online = (s.burst / 2).max(50);
    let names: Vec<String> = (0..logins).map(|i| format!("easy{i:04}")).collect();
    let kept: Vec<String> = (0..online).map(|i| format!("kept{i:04}")).collect();
    let mut accounts: Vec<(String, &str)> =
        names.iter().map(|n| (n.clone(), easy.as_str())).collect();
    accounts.extend(kept.iter().map(|n| (n.clone(), easy.as_str())));
    accounts.extend(["probe1", "probe2"].map(|n| (n.to_string(), easy.as_str())));
    let scripts: Vec<String> = names
        .iter()
        .map(|n| format!("n\n{n}\n{PASSWORD}\n{RAW_PORT}\nQUIT\n"))
        .collect();

    // One server alone, and two sharing another database and the Redis.
    let one_tmp = temp_dir();
    make_accounts(one_tmp.path(), &accounts);
    let (one, one_addr) = start_named(bins, one_tmp.path(), "alone", &[]);
    let pair_tmp = temp_dir();
    make_accounts(pair_tmp.path(), &accounts);
    let cluster = ["--cluster".to_string(), redis.url()];
    let (a, a_addr) = start_named(bins, pair_tmp.path(), "server-a", &cluster);
    let (b, b_addr) = start_named(bins, pair_tmp.path(), "server-b", &cluster);
    let pair = [a_addr, b_addr];

    let (mut r1, mut r2) = (Vec::new(), Vec::new());
    for _ in 0..s.runs {
        r1.push(spread_login_rate(&[one_addr], &scripts, s.login_workers));
        r2.push(spread_login_rate(&pair, &scripts, s.login_workers));
    }
    let (r1, r2) = (median(&r1), median(&r2));
    report.add(
        "cluster",
        format!(
            "logins/s, {logins} logins + QUIT, cost 4, {} workers",
            s.login_workers
        ),
        format!("{r2:.0}/s (two servers)"),
        format!("{r1:.0}/s (one server)"),
        format!("{:.2}", r2 / r1),
        "no goal (same 2 cores)",
    );

    let one_kept = keep_online(&[one_addr], &kept);
    let (p50_1, p99_1) = list_latency(one_addr, "probe1", online + 1, s.probes);
    drop(one_kept);
    let pair_kept = keep_online(&pair, &kept);
    let (p50_2, p99_2) = list_latency(a_addr, "probe2", online + 1, s.probes);
    drop(pair_kept);
    report.add(
        "cluster",
        format!("LIST p50 / p99, {online} online (half on each of two servers)"),
        format!("{} / {}", secs(p50_2), secs(p99_2)),
        format!("{} / {} (one server)", secs(p50_1), secs(p99_1)),
        format!("{:.2}", p99_2 / p99_1),
        "< 10 ms p99",
    );
    drop((one, a, b));
}
