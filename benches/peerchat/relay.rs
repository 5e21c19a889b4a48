//! Group `relay`: the ladder's last rung (`peerchat-server --relay-only`, release build).
//!
//! Measures, in the same run: bytes moved one way through a relayed circuit next to the
//! same bytes over one direct loopback TCP connection (goal: relayed ≥ 0.5 of direct),
//! the relay process's CPU per GiB relayed (user + system from `/proc/PID/stat`), and
//! how many idle circuits one relay process holds: it opens circuits up to a bound and
//! reports the process's memory (VmRSS), threads and descriptors per circuit, and that
//! the next circuit past `--relay-max-circuits` is refused with `520 RELAY_FULL`.

use super::*;

use peerchat::server::relay_token::RelaySecret;

/// The relay secret of the bench (any 32 bytes of text).
const SECRET: &str = "peerchat bench relay secret 0123";

/// A relay process and where it listens.
struct Relay {
    proc: Proc,
    addr: SocketAddr,
}

fn start_relay(bins: &Bins, dir: &Path, extra: &[&str]) -> Relay {
    let key = dir.join("relay.key");
    fs::write(&key, SECRET).expect("the relay secret");
    let mut cmd = Command::new(&bins.server);
    cmd.args([
        "--relay-only",
        "--addr",
        "127.0.0.1:0",
        "--relay-secret-file",
    ])
    .arg(&key)
    .args(extra);
    let proc = Proc::spawn("relay", cmd, &dir.join("relay.log"));
    let mut cursor = 0;
    let (_, line) = proc.wait_for(&mut cursor, "relay listening on ", SHORT);
    let addr = line
        .trim_start_matches("relay listening on ")
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("relay address in {line:?}: {e}"));
    Relay { proc, addr }
}

/// One line, byte by byte (nothing after it is taken).
fn read_line_raw(s: &TcpStream) -> String {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    while let Ok(1) = (&*s).read(&mut b) {
        if b[0] == b'\n' {
            break;
        }
        out.push(b[0]);
    }
    String::from_utf8_lossy(&out).trim_end().to_string()
}

/// Both ends of one circuit for users `a` and `b`, paired (or the refusal line).
fn circuit(
    addr: SocketAddr,
    secret: &RelaySecret,
    a: &str,
    b: &str,
) -> Result<(TcpStream, TcpStream), String> {
    let (ta, tb) = secret
        .issue_pair(a, b, Duration::from_secs(600))
        .expect("relay tokens");
    let open = |token: &str| {
        let s = TcpStream::connect(addr).expect("connect to the relay");
        s.set_read_timeout(Some(SHORT)).expect("timeout");
        (&s).write_all(format!("RELAY {token}\n").as_bytes())
            .expect("send the token");
        s
    };
    let x = open(&ta);
    let y = open(&tb);
    for s in [&x, &y] {
        let got = read_line_raw(s);
        if got != "OK RELAYED" {
            return Err(got);
        }
    }
    Ok((x, y))
}

/// Seconds to move `total` bytes from `x` to `y`.
fn pump(x: TcpStream, y: &TcpStream, total: u64) -> f64 {
    let started = Instant::now();
    let writer = thread::spawn(move || {
        let chunk = vec![0x5au8; 256 * 1024];
        let mut left = total;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            (&x).write_all(&chunk[..n]).expect("write");
            left -= n as u64;
        }
    });
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0u64;
    while got < total {
        let n = (&*y).read(&mut buf).expect("read");
        assert!(n > 0, "the stream ended early");
        got += n as u64;
    }
    writer.join().expect("the writer");
    started.elapsed().as_secs_f64()
}

/// Open descriptors of process `pid`.
fn fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

pub(super) fn group_relay(s: &Settings, bins: &Bins, report: &mut Report) {
    let tmp = temp_dir();
    let dir = tmp.path();
    let secret = RelaySecret::from_text(SECRET).expect("the secret");
    let total: u64 = if s.transfer_runs > 3 {
        1024 * MIB
    } else {
        128 * MIB
    };

    // Throughput: direct loopback TCP and a relayed circuit, alternating, same run.
    let relay = start_relay(bins, dir, &["--relay-rate", "10000000000"]);
    let (mut direct, mut relayed, mut cpu) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..s.runs {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a listener");
        let x = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (y, _) = listener.accept().expect("accept");
        let d = pump(x, &y, total);
        let (x, y) = circuit(relay.addr, &secret, "alice", "bob").expect("a circuit");
        let before = cpu_secs(relay.proc.pid());
        let r = pump(x, &y, total);
        let used = cpu_secs(relay.proc.pid()) - before;
        println!(
            "  run {}: direct {}, relayed {}, relay CPU {:.2} s",
            run + 1,
            rate(total, d),
            rate(total, r),
            used
        );
        direct.push(d);
        relayed.push(r);
        cpu.push(used * (1024 * MIB) as f64 / total as f64);
    }
    let (d, r) = (median(&direct), median(&relayed));
    report.add(
        "relay",
        format!("{} one way through a relayed circuit", size_label(total)),
        rate(total, r),
        format!("{} direct TCP", rate(total, d)),
        format!("{:.2}", d / r),
        "≥ 0.5 of direct",
    );
    report.add(
        "relay",
        "relay process CPU (user + system) per GiB relayed",
        format!("{:.2} s", median(&cpu)),
        "-",
        "-",
        "-",
    );
    drop(relay);

    // Circuits held: idle circuits up to the bound, the relay's cost per circuit.
    let bound: usize = if s.transfer_runs > 3 { 1000 } else { 100 };
    let cap = bound.to_string();
    let relay = start_relay(
        bins,
        dir,
        &["--relay-max-circuits", &cap, "--relay-max-per-user", &cap],
    );
    let pid = relay.proc.pid();
    thread::sleep(Duration::from_millis(200));
    let (rss0, threads0, fds0) = (
        relay.proc.status("VmRSS"),
        relay.proc.status("Threads"),
        fds(pid),
    );
    let started = Instant::now();
    let mut held = Vec::with_capacity(bound);
    for i in 0..bound {
        match circuit(relay.addr, &secret, "alice", "bob") {
            Ok(pair) => held.push(pair),
            Err(line) => panic!("circuit {} of {bound} refused: {line}", i + 1),
        }
    }
    let opened = started.elapsed().as_secs_f64();
    thread::sleep(Duration::from_millis(300));
    let (rss1, threads1, fds1) = (
        relay.proc.status("VmRSS"),
        relay.proc.status("Threads"),
        fds(pid),
    );
    let refused = circuit(relay.addr, &secret, "carol", "dave").err();
    let n = held.len() as f64;
    println!(
        "  {bound} idle circuits in {opened:.2} s: RSS {} -> {}, threads {threads0} -> {threads1}, descriptors {fds0} -> {fds1}; the next: {refused:?}",
        mib(rss0),
        mib(rss1)
    );
    assert!(
        refused
            .as_deref()
            .is_some_and(|l| l.starts_with("ERR 520 RELAY_FULL")),
        "the circuit past the bound was not refused with 520: {refused:?}"
    );
    report.add(
        "relay",
        format!("idle circuits one relay process holds (bound {bound}, all opened)"),
        format!(
            "{:.0} KiB RSS, {:.1} threads, {:.1} descriptors per circuit",
            rss1.saturating_sub(rss0) as f64 / n,
            threads1.saturating_sub(threads0) as f64 / n,
            fds1.saturating_sub(fds0) as f64 / n
        ),
        format!("{} RSS at rest", mib(rss0)),
        "-",
        "next circuit: 520",
    );
    drop(held);
}
