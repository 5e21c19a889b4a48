//! Group `gui`: the web front end (`peerchat-client --gui`).
//!
//! Measures the time from a peer's chat line being handed to its client (a terminal
//! client's stdin) to the event being served to a long poll already waiting on the GUI
//! client, p50 and p99 over 1,000 lines, and the page's total size. The baseline is the
//! same path ending at the terminal client instead: the line printed on the other
//! terminal client's stdout.

use super::*;

use peerchat::client::web::routes::page_size;

/// Lines per run.
const LINES: usize = 1000;

/// One HTTP GET with `Connection: close`, written now; the answer is read by `finish`.
fn start_get(addr: SocketAddr, host: &str, token: &str, path: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).expect("connect to the GUI");
    stream.set_nodelay(true).expect("nodelay");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nX-Peerchat-Token: {token}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).expect("send the request");
    stream
}

/// Reads the whole answer; returns its body.
fn finish(mut stream: TcpStream) -> String {
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read the answer");
    let text = String::from_utf8_lossy(&raw).into_owned();
    text.split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default()
}

fn get(addr: SocketAddr, host: &str, token: &str, path: &str) -> String {
    finish(start_get(addr, host, token, path))
}

fn post(addr: SocketAddr, host: &str, token: &str, path: &str, body: &str) {
    let mut stream = TcpStream::connect(addr).expect("connect to the GUI");
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nX-Peerchat-Token: {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).expect("send the request");
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
}

/// The id of the newest event in a JSON array of events (or `since` if empty).
fn last_id(body: &str, since: u64) -> u64 {
    body.rsplit("\"id\":")
        .next()
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .filter(|_| body.contains("\"id\":"))
        .unwrap_or(since)
}

pub(super) fn group_gui(s: &Settings, bins: &Bins, report: &mut Report) {
    let lines = if s.rtt_messages < 10_000 { 300 } else { LINES };
    let tmp = temp_dir();
    let dir = tmp.path().to_path_buf();
    let (_server, addr) = start_server(bins, &dir, Some(4), &[]);
    let ctx = Ctx {
        bins,
        dir: dir.clone(),
        addr,
        next: Cell::new(0),
    };
    let mut sender = ctx.client("guisender", None);
    let mut term = ctx.client("guiterm", None);

    // An empty share, so the page does not ask for one (a --share that is not a folder
    // stops the client at start).
    let empty_share = dir.join("gui-share");
    fs::create_dir_all(&empty_share).unwrap();
    let mut cmd = Command::new(&bins.client);
    cmd.args([
        "--server",
        &addr.to_string(),
        "--trust-first-use",
        "--gui",
        "--no-browser",
    ])
    .args(["--port", "0", "--listen-addr", "127.0.0.1", "--share"])
    .arg(&empty_share)
    .arg("--data-dir")
    .arg(dir.join("gui-data"));
    let gui = Proc::spawn("guipage", cmd, &dir.join("gui.log"));
    let mut gc = 0;
    let (_, line) = gui.wait_for(&mut gc, "GUI: http://", SHORT);
    let url = line.trim().trim_start_matches("GUI: http://").to_string();
    let (host, token) = url.split_once("/#token=").expect("a token");
    let gaddr: SocketAddr = host.parse().expect("the GUI address");
    // Log in through the API.
    let mut since = 0;
    let deadline = Instant::now() + SHORT;
    loop {
        assert!(Instant::now() < deadline, "the GUI did not log in");
        let body = get(
            gaddr,
            host,
            token,
            &format!("/api/events?since={since}&timeout=5"),
        );
        since = last_id(&body, since);
        if body.contains("\"type\":\"welcome\"") {
            break;
        }
        let answer = if body.contains("\"kind\":\"new\"") {
            Some("Y")
        } else if body.contains("\"kind\":\"username\"") {
            Some("guialice")
        } else if body.contains("\"kind\":\"password\"") {
            Some(PASSWORD)
        } else {
            None
        };
        if let Some(a) = answer {
            post(
                gaddr,
                host,
                token,
                "/api/login",
                &format!("{{\"answer\":\"{a}\"}}"),
            );
        }
    }
    // The sender opens a session with the GUI user, who accepts through the API; the
    // same sender also opens one with a terminal client for the baseline.
    let mut sc = sender.cursor();
    sender.send("\\connect guialice");
    let deadline = Instant::now() + SHORT;
    loop {
        assert!(Instant::now() < deadline, "no chat request reached the GUI");
        let body = get(
            gaddr,
            host,
            token,
            &format!("/api/events?since={since}&timeout=5"),
        );
        since = last_id(&body, since);
        if body.contains("\"kind\":\"request\"") {
            break;
        }
    }
    post(
        gaddr,
        host,
        token,
        "/api/command",
        "{\"type\":\"accept\",\"user\":\"guisender\"}",
    );
    sender.wait_for(&mut sc, "session with guialice open", SHORT);
    open_session(&mut sender, &mut term);
    let body = get(
        gaddr,
        host,
        token,
        &format!("/api/events?since={since}&timeout=1"),
    );
    since = last_id(&body, since);

    let mut to_gui = Vec::with_capacity(lines);
    let mut to_term = Vec::with_capacity(lines);
    let mut tc = term.cursor();
    for i in 0..lines {
        // A long poll already waiting, then the line handed to the peer's client.
        let poll = start_get(
            gaddr,
            host,
            token,
            &format!("/api/events?since={since}&timeout=20"),
        );
        thread::sleep(Duration::from_millis(1));
        let t0 = Instant::now();
        sender.send(&format!("@guialice gui line {i}"));
        let want = format!("gui line {i}\"");
        let mut body = finish(poll);
        // Another event (a presence change) may come first: wait on for the line.
        while !body.contains(&want) {
            assert!(t0.elapsed() < SHORT, "line {i} never reached a long poll");
            since = last_id(&body, since);
            body = get(
                gaddr,
                host,
                token,
                &format!("/api/events?since={since}&timeout=20"),
            );
        }
        let took = t0.elapsed();
        since = last_id(&body, since);
        to_gui.push(took);

        let t0 = Instant::now();
        sender.send(&format!("@guiterm term line {i}"));
        let (at, _) = term.wait_for(&mut tc, &format!("term line {i}"), SHORT);
        to_term.push(at.saturating_duration_since(t0));
    }
    let (g50, g99) = p50_p99(&mut to_gui);
    let (t50, t99) = p50_p99(&mut to_term);
    println!(
        "  line → waiting long poll: p50 {} p99 {} over {lines} lines; to a terminal client: p50 {} p99 {}",
        secs(g50),
        secs(g99),
        secs(t50),
        secs(t99)
    );
    report.add(
        "gui",
        format!("chat line → long poll p50 ({lines} lines)"),
        secs(g50),
        format!("terminal client {}", secs(t50)),
        format!("{:.2}", t50 / g50),
        "-",
    );
    report.add(
        "gui",
        format!("chat line → long poll p99 ({lines} lines)"),
        secs(g99),
        format!("terminal client {}", secs(t99)),
        format!("{:.2}", t99 / g99),
        format!("< 20 ms: {}", verdict(g99 < 0.020)),
    );
    let size = page_size();
    report.add(
        "gui",
        "page size (HTML + CSS + JS, no external requests)",
        format!("{:.1} KiB", size as f64 / 1024.0),
        "-",
        "-",
        format!("< 100 KiB: {}", verdict(size < 100 * 1024)),
    );
}
