//! Group `burst` (figure 5): a burst of connections at once and connections one at a
//! time: how many land, how long each waits for its welcome.
//!
//! Owns the burst runs; the raw conversations are in `raw`.

use super::*;

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

pub(super) fn group_burst(s: &Settings, bins: &Bins, report: &mut Report) {
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
