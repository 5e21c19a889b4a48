//! Peer links under attack (issue 9): idle sockets and forged `HELLO` floods against a
//! client's peer listener, one account asking the same user again and again, a target
//! that keeps the requester waiting, an impostor answering at the target's address, a
//! peer filling the history, and a malicious server naming the user `../../evil`. Real
//! server and client processes on loopback; the test plays the attacker with raw
//! sockets. Every wait and every load loop is bounded.

mod common;

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use peerchat::protocol::limits::{
    HANDSHAKE_TIMEOUT, HISTORY_LINES_PER_PEER, MAX_HANDSHAKES, MAX_HANDSHAKES_PER_IP,
    REFUSAL_SUMMARY_PERIOD,
};
use peerchat::protocol::ticket::Ticket;
use socket2::{Domain, Protocol, Socket, Type};

/// Slack on top of a timeout before a test calls it missed: generous, the machine is
/// busy; it only has to tell "a little late" from "never".
const SLACK: Duration = Duration::from_secs(8);

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

fn loopback(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// `CONNECT <user>` on a raw server connection; returns (id, peer address, ticket).
fn grant(w: &mut Wire, user: &str) -> (u64, SocketAddr, String) {
    w.send(&format!("CONNECT {user}"));
    let line = w.expect("OK SESSION");
    let words: Vec<&str> = line.split(' ').collect();
    assert_eq!(words.len(), 8, "bad OK SESSION line {line:?}");
    (
        words[2].parse().expect("session id"),
        words[4].parse().expect("peer address"),
        words[5].to_string(),
    )
}

/// `INFO <user>` on a raw server connection; returns the peer address.
fn info(w: &mut Wire, user: &str) -> SocketAddr {
    w.send(&format!("INFO {user}"));
    let line = w.expect(&format!("OK INFO {user}"));
    line.split(' ').nth(3).unwrap().parse().expect("address")
}

/// A TCP connection to `addr` from source address `ip`.
fn connect_from(addr: SocketAddr, ip: IpAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.bind(&SocketAddr::new(ip, 0).into())?;
    socket.connect_timeout(&addr.into(), timeout)?;
    Ok(socket.into())
}

/// Accepts one connection on `listener` within `bound`.
fn accept_within(listener: &TcpListener, bound: Duration) -> TcpStream {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + bound;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).unwrap();
                return stream;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                assert!(
                    Instant::now() < deadline,
                    "nobody connected within {bound:?}"
                );
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("accept failed: {e}"),
        }
    }
}

/// Waits (up to `bound`) until `text` appears anywhere in `client`'s stdout.
fn wait_for_anywhere(client: &mut Client, text: &str, bound: Duration) {
    let deadline = Instant::now() + bound;
    while !client.output().contains(text) {
        if Instant::now() >= deadline {
            client.fail(&format!(
                "expected {text:?} somewhere on stdout within {bound:?}"
            ));
        }
        client.output_for(Duration::from_millis(200));
    }
}

/// The refusal summary lines in `client`'s stdout.
fn refusal_lines(client: &Client) -> Vec<String> {
    client
        .output()
        .lines()
        .filter(|l| l.starts_with("* refused ") && l.contains(" peer connection"))
        .map(str::to_string)
        .collect()
}

/// Open descriptors of process `pid`.
fn fd_count(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Threads of process `pid`.
fn thread_count(pid: u32) -> usize {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:").map(|n| n.trim().parse().ok()))
        })
        .flatten()
        .unwrap_or(0)
}

/// Samples `pid`'s descriptors and threads every 20 ms until `stop`; returns the maxima.
fn sample_peaks(pid: u32, stop: Arc<AtomicBool>) -> thread::JoinHandle<(usize, usize)> {
    thread::spawn(move || {
        let (mut fds, mut threads) = (0, 0);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
            fds = fds.max(fd_count(pid));
            threads = threads.max(thread_count(pid));
            thread::sleep(Duration::from_millis(20));
        }
        (fds, threads)
    })
}

/// Sets a flag when dropped, so helper threads stop even when the test panics.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// The ticket (fifth word) of the next event starting with `prefix` on `w`.
fn event_ticket(w: &mut Wire, prefix: &str) -> String {
    let event = w.expect_event(prefix);
    event.split(' ').nth(4).unwrap().to_string()
}

/// A raw "bob": registered on the server with the port of a listener the test holds,
/// so whatever answers at bob's advertised address is the test.
fn fake_target(server: &Server, name: &str) -> (Wire, TcpListener) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let w = Wire::registered(server.addr, name, PW, port);
    (w, listener)
}

// ---------------------------------------------------------------------------------------
// 1: idle sockets from one address
// ---------------------------------------------------------------------------------------

#[test]
fn forty_idle_sockets_from_one_address_do_not_shut_out_a_real_peer() {
    /// More than the old total cap of 32 handshakes.
    const IDLE: usize = 40;
    let server = Server::start();
    let lab = Lab::new(&server);
    let mut bob = lab.register("bob", &[]);
    let mut carol = lab.register("carol", &[]);
    let mut mallory = Wire::registered(server.addr, "mallory", PW, free_port());
    let bob_addr = info(&mut mallory, "bob");

    let stranger = loopback(2);
    let mut idle: Vec<TcpStream> = (0..IDLE)
        .map(|i| {
            connect_from(bob_addr, stranger, WAIT)
                .unwrap_or_else(|e| panic!("idle socket #{i}: {e}"))
        })
        .collect();
    let start = Instant::now();

    // The real peer (another address) still gets its session, while the idle sockets
    // are still within the handshake timeout.
    open_session(&mut carol, "carol", &mut bob, "bob");
    carol.send("hello through the crowd");
    bob.expect_chat(None, "carol", "hello through the crowd");

    // Past the per-address cap, the idle sockets were refused at once with ERR 442.
    // Polled without blocking: the ones holding a slot stay silent for 5 s.
    let mut busy = 0;
    let mut answered = [false; IDLE];
    let deadline = Instant::now() + Duration::from_secs(3);
    while busy < IDLE - MAX_HANDSHAKES_PER_IP && Instant::now() < deadline {
        for (s, done) in idle.iter_mut().zip(answered.iter_mut()) {
            if *done {
                continue;
            }
            s.set_nonblocking(true).unwrap();
            let mut buf = [0u8; 256];
            match s.read(&mut buf) {
                Ok(n) => {
                    *done = true;
                    if String::from_utf8_lossy(&buf[..n]).starts_with("ERR 442 PEER_BUSY") {
                        busy += 1;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => *done = true,
            }
        }
        thread::sleep(Duration::from_millis(20));
    }
    assert!(
        busy >= IDLE - MAX_HANDSHAKES_PER_IP,
        "only {busy} of {IDLE} idle sockets were refused at once (per-address cap {MAX_HANDSHAKES_PER_IP})"
    );

    // The person sees one summary line per burst, not one line per connection.
    let bound = HANDSHAKE_TIMEOUT + REFUSAL_SUMMARY_PERIOD + SLACK;
    wait_for_anywhere(&mut bob, "from 127.0.0.2 in the last ", bound);
    wait_for_anywhere(&mut bob, "(no HELLO in time)", bound);
    let lines = refusal_lines(&bob);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("(too many connections at once)")),
        "{lines:?}"
    );
    assert!(
        lines.len() <= 6,
        "{} refusal lines for one burst: {lines:?}",
        lines.len()
    );
    assert!(
        start.elapsed() < HANDSHAKE_TIMEOUT + bound,
        "the idle sockets were cut late"
    );
    drop(idle);
    carol.send("still here");
    bob.expect_chat(None, "carol", "still here");
}

// ---------------------------------------------------------------------------------------
// 2: a flood of forged HELLOs
// ---------------------------------------------------------------------------------------

#[test]
fn a_forged_hello_flood_keeps_descriptors_threads_and_refusal_lines_bounded() {
    /// How long the flood lasts, and at most how many connections each attacker makes.
    const FLOOD: Duration = Duration::from_secs(4);
    const PER_ATTACKER: usize = 1500;
    let server = Server::start();
    let lab = Lab::new(&server);
    let mut bob = lab.register("bob", &[]);
    let mut carol = lab.register("carol", &[]);
    let mut mallory = Wire::registered(server.addr, "mallory", PW, free_port());
    let bob_addr = info(&mut mallory, "bob");
    let pid = bob.pid();
    thread::sleep(Duration::from_millis(300));
    let (fds_before, threads_before) = (fd_count(pid), thread_count(pid));

    let stop = Arc::new(AtomicBool::new(false));
    let _stopper = StopOnDrop(stop.clone());
    let sampler = sample_peaks(pid, stop.clone());
    let made = Arc::new(AtomicUsize::new(0));
    let attackers: Vec<_> = (2..=5u8)
        .map(|last| {
            let made = made.clone();
            let stop = stop.clone();
            thread::spawn(move || {
                // Forged Noise messages 1, made before the clock starts (key generation
                // is slow in a debug build): an ephemeral key and the id of a ticket
                // nobody issued (the listener waits for it, then refuses).
                let forged: Vec<Vec<u8>> = (0..8u8)
                    .map(|k| forged_message_1(&[last.wrapping_mul(16).wrapping_add(k); 16]))
                    .collect();
                let start = Instant::now();
                for i in 0..PER_ATTACKER {
                    if start.elapsed() >= FLOOD || stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let connect = connect_from(bob_addr, loopback(last), Duration::from_secs(1));
                    let Ok(mut s) = connect else {
                        thread::sleep(Duration::from_millis(5));
                        continue;
                    };
                    let _ = s.write_all(&forged[i % forged.len()]);
                    made.fetch_add(1, Ordering::SeqCst);
                    // Closing at once: the victim keeps its end until it refuses.
                }
            })
        })
        .collect();
    for a in attackers {
        a.join().unwrap();
    }
    // Parked HELLOs wait up to 3 s for their ticket: sample past that.
    thread::sleep(Duration::from_secs(4));
    stop.store(true, Ordering::SeqCst);
    let (fds_peak, threads_peak) = sampler.join().unwrap();
    let made = made.load(Ordering::SeqCst);
    assert!(made >= 200, "the flood made only {made} connections");
    eprintln!(
        "forged HELLO flood: {made} connections; bob's descriptors {fds_before} -> peak {fds_peak}, threads {threads_before} -> peak {threads_peak}"
    );

    // Each handshake slot holds at most two descriptors and one thread.
    let fd_bound = fds_before + 2 * MAX_HANDSHAKES + 32;
    let thread_bound = threads_before + MAX_HANDSHAKES + 8;
    assert!(
        fds_peak <= fd_bound,
        "bob's descriptors peaked at {fds_peak} (before {fds_before}, bound {fd_bound}) under {made} forged HELLOs"
    );
    assert!(
        threads_peak <= thread_bound,
        "bob's threads peaked at {threads_peak} (before {threads_before}, bound {thread_bound})"
    );
    assert!(bob.is_running(), "bob died under the flood");

    // A real session still works.
    open_session(&mut carol, "carol", &mut bob, "bob");
    carol.send("after the flood");
    bob.expect_chat(None, "carol", "after the flood");

    // The terminal shows a summary per burst and address, not a line per connection.
    wait_for_anywhere(&mut bob, "(bad ticket)", REFUSAL_SUMMARY_PERIOD + SLACK);
    bob.output_for(REFUSAL_SUMMARY_PERIOD + Duration::from_secs(1));
    let lines = refusal_lines(&bob);
    let shown: u64 = lines
        .iter()
        .filter_map(|l| l.split(' ').nth(2)?.parse::<u64>().ok())
        .sum();
    eprintln!("refusal lines: {lines:#?}");
    assert!(
        !lines.is_empty() && lines.len() <= 40,
        "{} refusal lines for {made} refused connections: {lines:?}",
        lines.len()
    );
    assert!(
        shown as usize >= made / 2,
        "the summaries count {shown} refusals of {made}: {lines:?}"
    );
    assert!(
        !bob.output().contains("mallory wants to chat"),
        "a forged HELLO got through"
    );
}

// ---------------------------------------------------------------------------------------
// 3: one pending request per requester
// ---------------------------------------------------------------------------------------

#[test]
fn a_second_pending_request_from_one_account_is_refused_with_440() {
    let server = Server::start();
    let lab = Lab::new(&server);
    let mut bob = lab.register("bob", &[]);
    let mut carol = lab.register("carol", &[]);
    let mut mallory = Wire::registered(server.addr, "mallory", PW, free_port());

    let (id, bob_addr, ticket) = grant(&mut mallory, "bob");
    let mut first = Wire::peer(bob_addr, &ticket).named("mallory's first request");
    first.send(&format!("HELLO peerchat 1 mallory {id} {ticket}"));
    bob.expect("* mallory wants to chat");

    // More requests from the same account, each with its own valid ticket.
    for k in 0..5 {
        let (id, _, ticket) = grant(&mut mallory, "bob");
        let mut more = Wire::peer(bob_addr, &ticket).named(&format!("mallory's request #{k}"));
        more.send(&format!("HELLO peerchat 1 mallory {id} {ticket}"));
        more.expect("ERR 440 ALREADY_ASKED");
        more.expect_closed();
    }
    bob.send("\\sessions");
    bob.expect("Sessions (1):");
    bob.expect("  mallory (wants to chat");

    // Others still get through, and declining frees mallory's one slot.
    open_session(&mut carol, "carol", &mut bob, "bob");
    bob.send("\\decline mallory");
    bob.expect("* declined mallory");
    first.expect("DECLINE declined");
    let (id, _, ticket) = grant(&mut mallory, "bob");
    let mut again = Wire::peer(bob_addr, &ticket).named("mallory asks again");
    again.send(&format!("HELLO peerchat 1 mallory {id} {ticket}"));
    bob.expect("* mallory wants to chat");
}

#[test]
fn a_requester_whose_request_still_waits_is_told_so_plainly() {
    let server = Server::start();
    let lab = Lab::new(&server);
    let (mut bob, listener) = fake_target(&server, "bob");
    let mut alice = lab.register("alice", &[]);
    alice.send("\\connect bob");
    alice.expect("* asking bob to chat...");
    let ticket = event_ticket(&mut bob, "EVENT SESSION_REQUEST");
    let mut target = Wire::accepted_peer(accept_within(&listener, WAIT), &ticket, "bob (refusing)");
    target.expect("HELLO peerchat 1 alice");
    target.send("ERR 440 ALREADY_ASKED your earlier chat request is still waiting for an answer");
    alice.expect_line("a plain refusal", |l| {
        l.contains("bob already has a chat request from you waiting for an answer")
            && l.contains("440 ALREADY_ASKED")
    });
    alice.send("\\sessions");
    alice.expect("No sessions.");
}

#[test]
fn a_requester_that_gave_up_frees_its_request_and_can_ask_again() {
    let server = Server::start();
    let lab = Lab::new(&server);
    let mut bob = lab.register("bob", &[]);
    let mut alice = lab.register("alice", &["--answer-wait", "2"]);

    alice.send("\\connect bob");
    alice.expect("* asking bob to chat...");
    bob.expect("* alice wants to chat");
    alice.expect_line("gave up", |l| l == "* bob did not answer");
    bob.expect_line("withdrawn", |l| l == "* alice withdrew the chat request");

    // Her one pending request is free again: a new one reaches bob and opens.
    open_session(&mut alice, "alice", &mut bob, "bob");
    alice.send("second time lucky");
    bob.expect_chat(None, "alice", "second time lucky");

    // The same when the requester's client dies: bob drops the dead request.
    let mut carol = lab.register("carol", &[]);
    carol.send("\\connect bob");
    bob.expect("* carol wants to chat");
    carol.kill_hard();
    bob.expect_line("withdrawn", |l| l == "* carol withdrew the chat request");
    bob.send("\\sessions");
    bob.expect("Sessions (1):");
}

// ---------------------------------------------------------------------------------------
// 4: the requester's wait has a deadline
// ---------------------------------------------------------------------------------------

#[test]
fn a_target_that_keeps_pinging_or_dripping_cannot_extend_the_requesters_wait() {
    const ANSWER_WAIT: Duration = Duration::from_secs(3);
    let server = Server::start();
    let lab = Lab::new(&server);
    let (mut bob, listener) = fake_target(&server, "bob");
    let mut alice = lab.register("alice", &["--answer-wait", "3"]);

    for round in ["PING every 300 ms", "a line dripped byte by byte"] {
        alice.send("\\connect bob");
        alice.expect("* asking bob to chat...");
        let ticket = event_ticket(&mut bob, "EVENT SESSION_REQUEST");
        let stream = accept_within(&listener, WAIT);
        let mut raw = Wire::accepted_peer(stream, &ticket, &format!("fake bob ({round})"));
        raw.expect("HELLO peerchat 1 alice");
        let start = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let _stopper = StopOnDrop(stop.clone());
        let mut out = raw.clone_stream();
        let pinging = round.starts_with("PING");
        let sent = Arc::new(Mutex::new(0usize));
        let sent2 = sent.clone();
        let stop2 = stop.clone();
        let writer = thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) && start.elapsed() < Duration::from_secs(20) {
                let bytes: &[u8] = if pinging { b"PING\n" } else { b"P" };
                if out.write_all(bytes).is_err() {
                    break;
                }
                *sent2.lock().unwrap() += 1;
                thread::sleep(Duration::from_millis(if pinging { 300 } else { 100 }));
            }
        });
        alice.expect_line("bob did not answer", |l| l == "* bob did not answer");
        let took = start.elapsed();
        stop.store(true, Ordering::SeqCst);
        writer.join().unwrap();
        assert!(
            took < ANSWER_WAIT + SLACK,
            "{round}: alice waited {took:?} with --answer-wait {ANSWER_WAIT:?}"
        );
        let sent = *sent.lock().unwrap();
        assert!(sent >= 5, "{round}: the fake target sent only {sent} times");
    }
}

// ---------------------------------------------------------------------------------------
// 5: the target proves it holds the ticket
// ---------------------------------------------------------------------------------------

#[test]
fn an_impostor_at_the_targets_address_is_refused_without_the_ticket_mac() {
    let server = Server::start();
    let lab = Lab::new(&server);
    let (mut bob, listener) = fake_target(&server, "bob");
    let mut alice = lab.register("alice", &[]);

    for (round, answer) in [
        ("bare ACCEPT", "ACCEPT".to_string()),
        ("wrong MAC", format!("ACCEPT {}", "0".repeat(64))),
        ("MAC of another session", String::new()),
    ] {
        alice.send("\\connect bob");
        alice.expect("* asking bob to chat...");
        let event = bob.expect_event("EVENT SESSION_REQUEST");
        let words: Vec<&str> = event.split(' ').collect();
        let id: u64 = words[2].parse().unwrap();
        let ticket = Ticket::parse(words[4]).unwrap();
        let answer = if answer.is_empty() {
            format!(
                "ACCEPT {}",
                ticket.accept_mac(id + 1, "alice", "bob").to_hex()
            )
        } else {
            answer
        };
        // It holds the ticket (the server told "bob"), so the handshake completes; the
        // MAC is what is tested here.
        let mut impostor = Wire::accepted_peer(
            accept_within(&listener, WAIT),
            &ticket.to_string(),
            &format!("impostor ({round})"),
        );
        impostor.expect(&format!("HELLO peerchat 1 alice {id}"));
        impostor.send(&answer);
        impostor.expect("ERR 441 BAD_PROOF");
        impostor.expect_closed();
        alice.expect_line("could not verify", |l| {
            l.contains("could not verify that the answer came from bob")
        });
        alice.send("\\sessions");
        alice.expect("No sessions.");
        wait_session_row(&server.db_path(), id as i64, "ended refused", |r| {
            r.end_reason.as_deref() == Some("refused")
        });
    }

    // The holder of the ticket (the real target) proves it and the session opens.
    alice.send("\\connect bob");
    let event = bob.expect_event("EVENT SESSION_REQUEST");
    let words: Vec<&str> = event.split(' ').collect();
    let id: u64 = words[2].parse().unwrap();
    let ticket = Ticket::parse(words[4]).unwrap();
    let mut real = Wire::accepted_peer(
        accept_within(&listener, WAIT),
        &ticket.to_string(),
        "the real bob",
    );
    real.expect(&format!("HELLO peerchat 1 alice {id}"));
    real.send(&format!(
        "ACCEPT {}",
        ticket.accept_mac(id, "alice", "bob").to_hex()
    ));
    alice.expect("* session with bob open");
    real.send(&format!("MSG {} proven", now_ms()));
    alice.expect_chat(None, "bob", "proven");
}

// ---------------------------------------------------------------------------------------
// 6: the history has a cap per peer
// ---------------------------------------------------------------------------------------

#[test]
fn a_peer_cannot_grow_the_history_past_its_cap() {
    let server = Server::start();
    let lab = Lab::new(&server);
    let mut bob = lab.register("bob", &[]);
    let mut mallory = Wire::registered(server.addr, "mallory", PW, free_port());
    let (id, bob_addr, ticket) = grant(&mut mallory, "bob");
    let mut raw = Wire::peer(bob_addr, &ticket).named("mallory <-> bob");
    raw.send(&format!("HELLO peerchat 1 mallory {id} {ticket}"));
    bob.expect("* mallory wants to chat");
    bob.send("\\accept mallory");
    bob.expect("* session with mallory open");
    raw.expect("ACCEPT");

    // Within the flood limit (5000 at once, then 2000 a second): 4000, then 1800 a
    // second, past the cap.
    let total = HISTORY_LINES_PER_PEER + 1200;
    let stamp = now_ms();
    let mut sent = 0;
    let mut batch = 4000;
    while sent < total {
        let n = batch.min(total - sent);
        let text: String = (sent..sent + n)
            .map(|i| format!("MSG {stamp} spam {i}\n"))
            .collect();
        raw.send_bytes(text.as_bytes()).unwrap();
        sent += n;
        batch = 1800;
        if sent < total {
            thread::sleep(Duration::from_secs(1));
        }
    }
    raw.send(&format!("MSG {stamp} the end"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !bob.output().contains("mallory: the end") {
        assert!(Instant::now() < deadline, "bob never showed the last line");
        bob.output_for(Duration::from_millis(200));
    }
    // History is written by a writer thread: poll (bounded) until the last line is in.
    let db = lab.data_dir("bob").join("bob").join("history.db");
    let conn =
        rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    conn.busy_timeout(WAIT).unwrap();
    let deadline = Instant::now() + POLL;
    let (rows, last) = loop {
        let (rows, last): (i64, Option<String>) = conn
            .query_row(
                "SELECT COUNT(*), (SELECT text FROM messages WHERE peer = 'mallory' ORDER BY id DESC LIMIT 1)
                 FROM messages WHERE peer = 'mallory'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        if last.as_deref() == Some("the end") || Instant::now() >= deadline {
            break (rows, last);
        }
        thread::sleep(Duration::from_millis(100));
    };
    assert!(
        rows as usize <= HISTORY_LINES_PER_PEER,
        "{rows} lines from mallory kept; the cap is {HISTORY_LINES_PER_PEER}"
    );
    assert!(
        rows as usize >= HISTORY_LINES_PER_PEER / 2,
        "only {rows} lines kept"
    );
    assert_eq!(
        last.as_deref(),
        Some("the end"),
        "the newest line must be kept"
    );
}

// ---------------------------------------------------------------------------------------
// 7: a malicious server names the user `../../evil`
// ---------------------------------------------------------------------------------------

/// A fake server: answers the client's login with `welcome` as the `OK WELCOME` name;
/// returns the client's exit and stdout.
fn login_against_fake_server(data_dir: &Path, welcome: &str) -> Client {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // The fake server speaks TLS: the client talks to no server in clear.
    let (tls, fingerprint, _key_dir) = fake_server_tls();
    let mut client = Client::spawn(
        addr,
        &[
            "--port",
            "0",
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--server-fingerprint",
            &fingerprint,
        ],
    )
    .named("alice (against a fake server)");
    let mut fake = Wire::accepted_tls(accept_within(&listener, WAIT), "fake server", tls);
    fake.send("HELLO peerchat 1");
    fake.send("ASK NEW Are you a new client? (Y/N)");
    client.expect("Are you a new client? (Y/N): ");
    client.send("n");
    fake.expect_exact("n");
    fake.send("ASK USERNAME Username");
    client.expect("Username: ");
    client.send("alice");
    fake.expect_exact("alice");
    fake.send("ASK PASSWORD Password");
    client.expect("Password: ");
    client.send(PW);
    fake.expect_exact(PW);
    fake.send("OK LOGGED_IN alice");
    fake.send("ASK PORT Listening port for peer connections");
    // `<port> <key>`: the client gives its identity key with the port.
    let answer = fake.next_line();
    let port = answer.split(' ').next().unwrap();
    fake.send(&format!("OK WELCOME {welcome} 127.0.0.1:{port}"));
    let status = client.wait_exit();
    assert!(
        !status.success(),
        "the client accepted the name {welcome:?}:\n{}",
        client.output()
    );
    client
}

/// Every path under `dir`, relative to it.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            out.push(path.strip_prefix(dir).unwrap().display().to_string());
            if path.is_dir() {
                stack.push(path);
            }
        }
    }
    out.sort();
    out
}

/// All a client writes before the server's welcome: the identity key of the user it
/// logged in as (the name typed, confirmed by `OK LOGGED_IN`), given with the port.
const OWN_KEY_ONLY: [&str; 5] = [
    "a",
    "a/b",
    "a/b/data",
    "a/b/data/alice",
    "a/b/data/alice/identity.key",
];

#[test]
fn a_malicious_server_cannot_make_the_client_write_outside_its_data_dir() {
    let root = tempfile::TempDir::new().unwrap();
    let data = root.path().join("a").join("b").join("data");
    fs::create_dir_all(&data).unwrap();

    let client = login_against_fake_server(&data, "../../evil");
    assert!(
        client.output().contains("invalid username"),
        "{}",
        client.output()
    );
    assert!(
        !root.path().join("a").join("evil").exists(),
        "the client wrote outside its data dir: {:?}",
        tree(root.path())
    );
    assert_eq!(tree(root.path()), OWN_KEY_ONLY);

    // A valid name that is not the one we logged in with is refused too.
    let client = login_against_fake_server(&data, "mallory");
    assert!(
        client.output().contains("not as alice"),
        "{}",
        client.output()
    );
    assert_eq!(tree(root.path()), OWN_KEY_ONLY);
}

// ---------------------------------------------------------------------------------------
// 8: data connections: the listener proves the ticket before any file line
// ---------------------------------------------------------------------------------------

/// Reads lines from `raw` until it closes (bounded); returns them.
fn lines_until_closed(raw: &mut Wire) -> Vec<String> {
    let mut lines = Vec::new();
    loop {
        match raw.read_within(WAIT) {
            Got::Line(line) => lines.push(line),
            Got::Closed => return lines,
            Got::TimedOut => raw.fail(&format!("still open; lines so far {lines:?}")),
        }
    }
}

#[test]
fn an_impostor_on_a_data_connection_neither_serves_a_fetch_nor_receives_a_push() {
    let server = Server::start();
    let lab = Lab::new(&server);
    let (mut bob, listener) = fake_target(&server, "bob");
    // A fetch takes the size the owner listed, so "bob" lists the file.
    bob.send("SHARE 1");
    bob.send("5 plans.txt");
    bob.expect("OK SHARE 1");
    let mut alice = lab.register("alice", &[]);

    // alice fetches from "bob": whoever answers at bob's address sends a file at once.
    alice.send("\\fetch bob plans.txt");
    let ticket = event_ticket(&mut bob, "EVENT TRANSFER_REQUEST");
    let mut impostor =
        Wire::accepted_peer(accept_within(&listener, WAIT), &ticket, "impostor (fetch)");
    impostor.expect("FETCH peerchat 1 alice");
    impostor.send("FILE 5 plans.txt");
    let lines = lines_until_closed(&mut impostor);
    assert_eq!(lines.len(), 1, "alice answered the impostor: {lines:?}");
    assert!(lines[0].starts_with("ERR 441 BAD_PROOF"), "{lines:?}");
    alice.expect_line("the fetch refused", |l| {
        l.contains("fetch plans.txt from bob") && l.contains("could not verify")
    });
    assert!(
        !lab.downloads("alice").join("plans.txt").exists(),
        "a file from the impostor was saved"
    );

    // alice pushes to "bob" (a real chat session with the ticket's holder), but the data
    // connection is answered by an impostor with `RESUME`: not one byte of the file goes.
    alice.send("\\connect bob");
    let event = bob.expect_event("EVENT SESSION_REQUEST");
    let words: Vec<&str> = event.split(' ').collect();
    let (id, ticket): (u64, _) = (words[2].parse().unwrap(), Ticket::parse(words[4]).unwrap());
    let mut chat = Wire::accepted_peer(
        accept_within(&listener, WAIT),
        &ticket.to_string(),
        "bob (chat)",
    );
    chat.expect(&format!("HELLO peerchat 1 alice {id}"));
    chat.send(&format!(
        "ACCEPT {}",
        ticket.accept_mac(id, "alice", "bob").to_hex()
    ));
    alice.expect("* session with bob open");
    let secret = lab.share_dir("alice").join("secret.txt");
    fs::write(&secret, "not for impostors\n").unwrap();
    alice.send(&format!("\\send {}", secret.display()));
    let offer = chat.expect("OFFER ");
    let offer_id = offer.split(' ').nth(1).unwrap().to_string();
    chat.send(&format!("OFFER_OK {offer_id}"));
    let ticket = event_ticket(&mut bob, "EVENT TRANSFER_REQUEST");
    let mut impostor =
        Wire::accepted_peer(accept_within(&listener, WAIT), &ticket, "impostor (push)");
    impostor.expect("PUSH peerchat 1 alice");
    impostor.send("RESUME 0 -");
    let lines = lines_until_closed(&mut impostor);
    assert_eq!(lines.len(), 1, "alice sent the impostor: {lines:?}");
    assert!(lines[0].starts_with("ERR 441 BAD_PROOF"), "{lines:?}");
    alice.expect_line("the push refused", |l| {
        l.contains("send secret.txt to bob") && l.contains("could not verify")
    });
}
