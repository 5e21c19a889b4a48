//! Group `wormhole`: peerchat's push next to magic-wormhole on the same file in the same
//! run (issue 12: "so the comparison is measured, not quoted").
//!
//! Runs only when magic-wormhole and its two servers are installed: `make wormhole-venv`
//! puts them in `target/wormhole-venv` (or `PEERCHAT_WORMHOLE_BIN` names a folder
//! holding `wormhole` and `twist`, or both are on `PATH`); otherwise it prints a skip
//! line and the bench goes on. It starts a local mailbox server
//! (`twist wormhole-mailbox`) and transit relay (`twist transitrelay`) on free loopback
//! ports, then each run sends the file with `wormhole send --code ...` and receives it
//! with `wormhole receive --accept-file -o ...`, and pushes the same file between two
//! peerchat clients. Both are timed from the moment the data path opens (wormhole's
//! `Receiving (->...)` line; peerchat's `\accept`) to the receiver's end (wormhole's
//! exit after its hash check; peerchat's `done, verified`), so neither side's start-up
//! or key exchange is counted; the whole wormhole receive, Python start included, is
//! printed too.

use super::transfer::{
    check_and_remove, push_once, transfer_dir, transfer_timeout, warm_pages, write_random_file,
};
use super::*;

/// Where `wormhole` and `twist` are, if they and the two server plugins work.
fn find_tools() -> Result<PathBuf, String> {
    let mut dirs = Vec::new();
    if let Some(dir) = env::var_os("PEERCHAT_WORMHOLE_BIN") {
        dirs.push(PathBuf::from(dir));
    }
    let target = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    dirs.push(target.join("wormhole-venv").join("bin"));
    if let Some(path) = env::var_os("PATH") {
        dirs.extend(env::split_paths(&path));
    }
    let works = |cmd: &Path, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    dirs.into_iter()
        .find(|dir| {
            dir.join("wormhole").is_file()
                && works(&dir.join("wormhole"), &["--version"])
                && works(&dir.join("twist"), &["wormhole-mailbox", "--help"])
                && works(&dir.join("twist"), &["transitrelay", "--help"])
        })
        .ok_or_else(|| {
            "magic-wormhole with magic-wormhole-mailbox-server and \
             magic-wormhole-transit-relay is not installed (`make wormhole-venv` puts them \
             in target/wormhole-venv)"
                .to_string()
        })
}

/// A free loopback port (bound and let go: nothing else on this machine races for it
/// in the moment between).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Waits until something accepts connections on `port`.
fn wait_listening(port: u16, what: &str) {
    let until = Instant::now() + SHORT;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "{what} never listened on {port}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (bounded) for `proc` to exit; returns when it did and whether it succeeded.
fn wait_exit(proc: &mut Proc, timeout: Duration) -> (Instant, bool) {
    let until = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = proc.child.try_wait() {
            return (Instant::now(), status.success());
        }
        assert!(
            Instant::now() < until,
            "{}: did not exit in {timeout:?}{}",
            proc.name,
            proc.stderr_tail()
        );
        thread::sleep(Duration::from_millis(5));
    }
}

/// One wormhole transfer of `path`; returns (data seconds, whole receive seconds).
fn wormhole_once(
    tools: &Path,
    dir: &Path,
    servers: (u16, u16),
    path: &Path,
    size: u64,
    run: usize,
) -> (f64, f64) {
    let code = format!("{}-peerchat-bench", 7 + run);
    let relay = format!("ws://127.0.0.1:{}/v1", servers.0);
    let transit = format!("tcp:127.0.0.1:{}", servers.1);
    let mut send = Command::new(tools.join("wormhole"));
    send.args(["--relay-url", &relay, "--transit-helper", &transit, "send"])
        .args(["--code", &code, "--no-qr", "--hide-progress"])
        .arg(path);
    let send_log = dir.join("wormhole-send.log");
    let mut sender = Proc::spawn("wormhole-send", send, &send_log);
    // wormhole prints its code on stderr once the mailbox has it.
    let until = Instant::now() + SHORT;
    while !fs::read_to_string(&send_log).is_ok_and(|t| t.contains("Wormhole code is")) {
        assert!(
            Instant::now() < until,
            "wormhole send never showed its code{}",
            sender.stderr_tail()
        );
        thread::sleep(Duration::from_millis(20));
    }
    let out = dir.join(format!("received-{run}.bin"));
    let mut receive = Command::new(tools.join("wormhole"));
    receive
        .args([
            "--relay-url",
            &relay,
            "--transit-helper",
            &transit,
            "receive",
        ])
        .args(["--accept-file", "--hide-progress", "-o"])
        .arg(&out)
        .arg(&code);
    warm_pages(size + 512 * MIB);
    let t0 = Instant::now();
    let recv_log = dir.join("wormhole-recv.log");
    let mut receiver = Proc::spawn("wormhole-receive", receive, &recv_log);
    // The data path is open when wormhole says `Receiving (->...)` (on stderr).
    let until = Instant::now() + SHORT;
    let opened = loop {
        if fs::read_to_string(&recv_log).is_ok_and(|t| t.contains("Receiving (->")) {
            break Instant::now();
        }
        assert!(
            Instant::now() < until && matches!(receiver.child.try_wait(), Ok(None)),
            "wormhole receive never opened its data path{}",
            receiver.stderr_tail()
        );
        thread::sleep(Duration::from_millis(2));
    };
    let (done, ok) = wait_exit(&mut receiver, transfer_timeout(size));
    assert!(ok, "wormhole receive failed{}", receiver.stderr_tail());
    wait_exit(&mut sender, SHORT);
    check_and_remove(&out, size, None);
    ((done - opened).as_secs_f64(), (done - t0).as_secs_f64())
}

/// The `wormhole` group.
pub fn group_wormhole(s: &Settings, bins: &Bins, report: &mut Report) {
    let tools = match find_tools() {
        Ok(tools) => tools,
        Err(why) => {
            println!("  wormhole: skipped: {why}");
            report.note(format!("wormhole: skipped: {why}"));
            return;
        }
    };
    let version = Command::new(tools.join("wormhole"))
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    println!("  using {} ({version})", tools.display());
    let size = s.wormhole_size;
    let tmp = transfer_dir(size, report);
    let dir = tmp.path().to_path_buf();
    let (mailbox, transit) = (free_port(), free_port());
    let mut cmd = Command::new(tools.join("twist"));
    cmd.args([
        "wormhole-mailbox",
        &format!("--port=tcp:{mailbox}:interface=127.0.0.1"),
    ])
    .arg(format!(
        "--channel-db={}",
        dir.join("mailbox.sqlite").display()
    ));
    let _mailbox = Proc::spawn("mailbox", cmd, &dir.join("mailbox.log"));
    let mut cmd = Command::new(tools.join("twist"));
    cmd.args([
        "transitrelay",
        &format!("--port=tcp:{transit}:interface=127.0.0.1"),
    ]);
    let _transit = Proc::spawn("transit", cmd, &dir.join("transit.log"));
    wait_listening(mailbox, "the mailbox server");
    wait_listening(transit, "the transit relay");

    let label = size_label(size);
    let name = format!("wormhole-{}.bin", label.replace(' ', ""));
    let path = dir.join(&name);
    let hash = write_random_file(&path, size, 0x005e_ed0f_4011);
    let (_server, addr) = start_server(bins, &dir, Some(4), &[]);
    let ctx = Ctx {
        bins,
        dir: dir.clone(),
        addr,
        next: Cell::new(0),
    };
    let (mut ours, mut theirs, mut theirs_whole) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..s.runs {
        let check = (run == 0).then_some(hash);
        let p = push_once(&ctx, &path, &name, size, check);
        let (w, whole) = wormhole_once(&tools, &dir, (mailbox, transit), &path, size, run);
        println!(
            "  {label} run {}: peerchat push {} ({}, {}); wormhole {} ({}, {}), whole receive {}",
            run + 1,
            secs(p.secs),
            rate(size, p.secs),
            mb_s(size, p.secs),
            secs(w),
            rate(size, w),
            mb_s(size, w),
            secs(whole)
        );
        ours.push(p.secs);
        theirs.push(w);
        theirs_whole.push(whole);
    }
    let (p, w, whole) = (median(&ours), median(&theirs), median(&theirs_whole));
    println!(
        "  medians: peerchat push {} ({}), magic-wormhole {} ({}); peerchat is {:.1}x faster",
        rate(size, p),
        mb_s(size, p),
        rate(size, w),
        mb_s(size, w),
        w / p
    );
    report.add(
        "wormhole",
        format!("{label} push vs {version} (local mailbox + transit relay)"),
        format!("{} ({})", rate(size, p), mb_s(size, p)),
        format!(
            "wormhole {} ({}; whole receive {})",
            rate(size, w),
            mb_s(size, w),
            rate(size, whole)
        ),
        format!("{:.1}x", w / p),
        "measured, not quoted",
    );
}

/// Decimal megabytes per second, the unit magic-wormhole prints.
fn mb_s(bytes: u64, s: f64) -> String {
    format!("{:.0} MB/s", bytes as f64 / 1e6 / s)
}
