//! Group `login` (figure 4): logins per second at bcrypt cost 4 and 12, registrations,
//! and the bare bcrypt verify rate they compare with.
//!
//! Owns the login-rate runs; the raw conversations are in `raw`.

use super::*;

/// Runs `scripts` (whole login conversations ending in QUIT) on `workers` threads;
/// returns logins per second.
pub(crate) fn login_rate(addr: SocketAddr, scripts: &[String], workers: usize) -> f64 {
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

/// Logins per second over `window`: the scripts are taken in order by `workers` threads
/// until the window has passed (or the scripts run out), and the rate is of the logins
/// done. A window longer than the server's presence interval pays its share of the
/// announcements the logins cause, as a sustained rate does. Also returns how many were
/// done.
pub(crate) fn login_rate_within(
    addr: SocketAddr,
    scripts: &[String],
    workers: usize,
    window: std::time::Duration,
) -> (f64, usize) {
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let t = Instant::now();
    thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                while t.elapsed() < window {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(script) = scripts.get(i) else {
                        return;
                    };
                    raw_login_and_quit(addr, script).unwrap_or_else(|e| panic!("login {i}: {e}"));
                    done.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    let done = done.into_inner();
    (done as f64 / t.elapsed().as_secs_f64(), done)
}

/// bcrypt verifications per second on one core, in this process.
pub(crate) fn verify_rate(hash: &str, n: usize) -> f64 {
    let t = Instant::now();
    for _ in 0..n {
        assert!(bcrypt::verify(PASSWORD, hash).expect("verify"));
    }
    n as f64 / t.elapsed().as_secs_f64()
}

/// Many logins in parallel: shows whether a rate is bound by CPU or by waiting.
const WIDE: usize = 32;

pub(super) fn group_login(s: &Settings, bins: &Bins, report: &mut Report) {
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
