//! Group `chat` (figure 2): chat round trips through two clients (p50, p99) against a
//! TCP line echo, and chat throughput (a flood of lines).
//!
//! Owns the chat runs; it must not start processes other than through `harness`.

use super::*;

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
/// B's reply is written by the thread that reads B's output, the moment it reads the
/// line (as a person's terminal would answer), so the bench's main thread is not a hop
/// of the measured path; the TCP echo's is not either. Each round trip is followed by
/// one baseline round trip through `echo`, so both see the machine in the same state.
/// Returns (peerchat samples, echo samples).
fn chat_rtt(
    a: &mut Proc,
    b: &mut Proc,
    echo: &mut Echo,
    n: usize,
    run: usize,
) -> (Vec<Duration>, Vec<Duration>) {
    let (a_name, b_name) = (a.name.clone(), b.name.clone());
    let mut ca = a.cursor();
    let burst = FLOOD_BURST as usize * 4 / 5;
    let pace = f64::from(FLOOD_RATE) * 0.95;
    let mut line = String::new();
    let start = Instant::now();
    let mut samples = Vec::with_capacity(n);
    let mut baseline = Vec::with_capacity(n);
    let b_stdin = Arc::new(Mutex::new(b.stdin.take().expect("stdin is open")));
    let heard = format!("{a_name}: p{run}-");
    let writer = Arc::clone(&b_stdin);
    *b.out.respond.lock().unwrap_or_else(PoisonError::into_inner) =
        Some(Box::new(move |printed: &str| {
            if let Some(at) = printed.find(&heard) {
                let id = &printed[at + heard.len()..];
                let mut stdin = writer.lock().unwrap_or_else(PoisonError::into_inner);
                let _ = stdin
                    .write_all(format!("r{run}-{id}\n").as_bytes())
                    .and_then(|()| stdin.flush());
            }
        }));
    for i in 0..n + WARM_UP {
        if i > burst {
            let due = start + Duration::from_secs_f64((i - burst) as f64 / pace);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                thread::sleep(wait);
            }
        }
        let t0 = Instant::now();
        a.send(&format!("p{run}-{i:06}"));
        let (t1, _) = a.wait_for(&mut ca, &format!("{b_name}: r{run}-{i:06}"), SHORT);
        let echoed = echo_once(echo, &mut line);
        if i >= WARM_UP {
            samples.push(t1 - t0);
            baseline.push(echoed);
        }
    }
    *b.out.respond.lock().unwrap_or_else(PoisonError::into_inner) = None;
    b.stdin = Some(
        Arc::try_unwrap(b_stdin)
            .expect("the responder is gone")
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner),
    );
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

pub(super) fn group_chat(s: &Settings, bins: &Bins, report: &mut Report) {
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
        // The shape of the tail (p99 alone hides whether a few slow hand-offs or a
        // shifted distribution make it).
        let tail: Vec<String> = [0.90, 0.95, 0.98, 0.995, 0.999]
            .iter()
            .map(|&q| {
                format!(
                    "p{} {}",
                    q * 100.0,
                    secs(percentile(&chat, q).as_secs_f64())
                )
            })
            .collect();
        let over = chat.iter().filter(|d| d.as_micros() >= 1000).count();
        println!(
            "  RTT run {} tail: {} ({over} of {} at 1 ms or more)",
            run + 1,
            tail.join(", "),
            chat.len()
        );
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
