//! Faults and hostile input: a server killed with SIGKILL in the middle of work, peers
//! that stop reading, slow-drip connections, garbage on a client's peer port, and what
//! a third user can learn about tickets. Real server and client processes on loopback,
//! raw sockets where a test plays the attacker; every wait is bounded.

mod common;

use std::fs;
use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use socket2::{Domain, Protocol, Socket, Type};

/// The client's handshake timeout (protocol.md §10: 10 s to say `HELLO`).
const HANDSHAKE: Duration = Duration::from_secs(10);

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

/// `CONNECT <user>` on a raw server connection; returns (id, peer address, ticket).
fn grant(w: &mut Wire, user: &str) -> (u64, SocketAddr, String) {
    w.send(&format!("CONNECT {user}"));
    let line = w.expect("OK SESSION");
    let words: Vec<&str> = line.split(' ').collect();
    assert_eq!(words.len(), 8, "bad OK SESSION line {line:?}");
    assert_eq!(words[3], user, "OK SESSION names another user: {line:?}");
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

/// The texts of the chat lines from `sender` in `client`'s stdout, in order (active or
/// not: a `(sender) ` prefix is dropped).
fn chat_texts(client: &Client, sender: &str) -> Vec<String> {
    let prefix = format!("({sender}) ");
    let who = format!("{sender}: ");
    client
        .output()
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(&prefix).unwrap_or(line);
            let b = rest.as_bytes();
            if b.len() < 11 || b[0] != b'[' || b[9] != b']' || b[10] != b' ' {
                return None;
            }
            rest[11..].strip_prefix(&who).map(str::to_string)
        })
        .collect()
}

/// The complete stdout lines after `client`'s last match.
fn pending_lines(client: &Client) -> Vec<String> {
    let out = client.output();
    let bytes = &out.as_bytes()[client.mark().min(out.len())..];
    let text = String::from_utf8_lossy(bytes);
    match text.rfind('\n') {
        Some(end) => text[..end].lines().map(str::to_string).collect(),
        None => Vec::new(),
    }
}

/// Like `Client::expect_line` with a bound of `bound`.
fn wait_line(
    client: &mut Client,
    what: &str,
    bound: Duration,
    ok: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + bound;
    loop {
        if pending_lines(client).iter().any(|l| ok(l)) {
            return client.expect_line(what, ok);
        }
        if Instant::now() >= deadline {
            client.fail(&format!("expected a line within {bound:?}: {what}"));
        }
        client.output_for(Duration::from_millis(200));
    }
}

/// Waits for the line that ends the fetch of `name` from `owner` and requires
/// `done, verified`.
fn expect_fetch_done(client: &mut Client, name: &str, owner: &str, bound: Duration) {
    let mid = format!("] fetch {name} from {owner}: ");
    let line = wait_line(
        client,
        &format!("the end of the fetch of {name} from {owner}"),
        bound,
        |l| {
            l.starts_with("* [")
                && l.split_once(&mid).is_some_and(|(_, state)| {
                    state != "started" && state != "connecting" && !state.starts_with('[')
                })
        },
    );
    let state = line.split_once(&mid).unwrap().1;
    if !state.starts_with("done, verified") {
        client.fail(&format!("the fetch of {name} ended with {state:?}"));
    }
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
                    "nobody connected to {:?} within {bound:?}",
                    listener.local_addr()
                );
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("accept failed: {e}"),
        }
    }
}

/// Plays the owner's side of a fetch (protocol.md §11) for `data` on a data connection
/// whose `FETCH` line was read already.
fn serve_file(w: &mut Wire, name: &str, data: &[u8]) {
    w.send(&format!("FILE {} {name}", data.len()));
    w.expect_exact("RESUME 0 -");
    w.send("START 0");
    let mut hashes = Vec::new();
    for chunk in data.chunks(1 << 20) {
        let hash = blake3::hash(chunk);
        w.send(&format!("CHUNK {} {}", chunk.len(), hash.to_hex()));
        w.send_bytes(chunk).expect("send chunk bytes");
        hashes.extend_from_slice(hash.as_bytes());
    }
    let file_hash = blake3::hash(&hashes).to_hex().to_string();
    w.send(&format!("END {file_hash}"));
    w.expect_exact(&format!("DONE {file_hash}"));
}

/// Reads what a hostile connection gets back: only `ERR` lines, then the close, all
/// within `bound`. Returns the `ERR` lines.
fn expect_err_or_close(raw: &mut Wire, bound: Duration) -> Vec<String> {
    let deadline = Instant::now() + bound;
    let mut errs = Vec::new();
    loop {
        match raw.read_within(deadline.saturating_duration_since(Instant::now())) {
            Got::Line(line) if line.starts_with("ERR ") => errs.push(line),
            Got::Line(line) => raw.fail(&format!("expected only ERR lines, got {line:?}")),
            Got::Closed => return errs,
            Got::TimedOut => raw.fail(&format!(
                "the connection is still open after {bound:?} (ERR lines so far: {errs:?})"
            )),
        }
    }
}

/// A small deterministic PRNG (SplitMix64), so hostile bytes are reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Sets a flag when dropped, so helper threads stop even when the test panics.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Writes `bytes` one at a time, `every` apart, until done, `stop` is set or a write
/// fails. Returns how many bytes went out.
fn drip(mut out: WireStream, bytes: Vec<u8>, every: Duration, stop: Arc<AtomicBool>) -> usize {
    out.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    for (i, b) in bytes.iter().enumerate() {
        if stop.load(Ordering::SeqCst) || out.write_all(&[*b]).is_err() {
            return i;
        }
        // Sleep in small steps so a stop is noticed quickly.
        let until = Instant::now() + every;
        while Instant::now() < until && !stop.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(20));
        }
    }
    bytes.len()
}

// ---------------------------------------------------------------------------------------
// 1: SIGKILL during registrations and chats
// ---------------------------------------------------------------------------------------

/// The next line on a registration connection that is not an event; `None` when the
/// server closed the connection (it was killed).
fn next_or_gone(w: &mut Wire) -> Option<String> {
    loop {
        match w.read_within(WAIT) {
            Got::Line(line) if line.starts_with("EVENT ") => {}
            Got::Line(line) => return Some(line),
            Got::Closed => return None,
            Got::TimedOut => w.fail("the server neither answered nor closed within WAIT"),
        }
    }
}

/// Expects the next line to start with `prefix`; `false` if the server went away first.
fn step(w: &mut Wire, prefix: &str) -> bool {
    match next_or_gone(w) {
        Some(line) if line_matches(&line, prefix) => true,
        Some(line) => w.fail(&format!("expected `{prefix}...`, got {line:?}")),
        None => false,
    }
}

/// Registers users `k<t>n<i>` one after the other until the server goes away (or
/// `stop`); each name that got `OK REGISTERED` goes into `confirmed`.
fn register_until_gone(
    addr: SocketAddr,
    t: usize,
    confirmed: &Mutex<Vec<String>>,
    count: &AtomicUsize,
    stop: &AtomicBool,
) {
    for i in 0.. {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        // One address per thread: one address may not have 20 registrations hashing at
        // once (protocol.md §8).
        let Ok(w) = Wire::try_connect_from(addr, loopback(t)) else {
            return;
        };
        let name = format!("k{t:02}n{i:04}");
        let mut w = w.named(&name);
        let registered = step(&mut w, "HELLO peerchat 1")
            && step(&mut w, "ASK NEW")
            && w.try_send("Y").is_ok()
            && step(&mut w, "ASK USERNAME")
            && w.try_send(&name).is_ok()
            && step(&mut w, "ASK PASSWORD")
            && w.try_send(PW).is_ok()
            && match next_or_gone(&mut w) {
                Some(line) if line == format!("OK REGISTERED {name}") => true,
                Some(line) => w.fail(&format!("expected OK REGISTERED {name}, got {line:?}")),
                None => false,
            };
        if !registered {
            return;
        }
        confirmed.lock().unwrap().push(name);
        count.fetch_add(1, Ordering::SeqCst);
        // Finish the login and leave; the server may die at any point of it.
        let _ = step(&mut w, "ASK PORT")
            && w.try_send(&(40000 + t).to_string()).is_ok()
            && step(&mut w, "OK WELCOME")
            && w.try_send("QUIT").is_ok()
            && step(&mut w, "OK BYE");
    }
}

#[test]
fn sigkill_during_registrations_and_chats_keeps_every_confirmed_account() {
    const THREADS: usize = 20;
    /// Registrations confirmed before the kill (the threads keep going meanwhile).
    const KILL_AFTER: usize = 60;
    let mut server = Server::start();
    let addr = server.addr;
    let lab = Lab::new(&server);
    let mut alice = lab.register("alice", &[]);
    let mut bob = lab.register("bob", &[]);
    open_session(&mut alice, "alice", &mut bob, "bob");

    let mut from_alice: Vec<String> = Vec::new();
    let mut from_bob: Vec<String> = Vec::new();
    let mut chat = |alice: &mut Client, bob: &mut Client, phase: &str| {
        let n = from_alice.len();
        let a = format!("alice {n:03} {phase}");
        alice.send(&a);
        bob.expect_chat(None, "alice", &a);
        from_alice.push(a);
        let b = format!("bob {n:03} {phase}");
        bob.send(&b);
        alice.expect_chat(None, "bob", &b);
        from_bob.push(b);
    };

    let confirmed = Mutex::new(Vec::<String>::new());
    let count = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        for t in 0..THREADS {
            let (confirmed, count, stop) = (&confirmed, &count, &stop);
            s.spawn(move || register_until_gone(addr, t, confirmed, count, stop));
        }
        // Chat while the accounts pile up, then kill the server in the middle of it.
        let deadline = Instant::now() + Duration::from_secs(60);
        while count.load(Ordering::SeqCst) < KILL_AFTER {
            assert!(
                Instant::now() < deadline,
                "only {} registrations within 60 s",
                count.load(Ordering::SeqCst)
            );
            chat(&mut alice, &mut bob, "before the kill");
        }
        server.kill();
        // The peer link does not need the server.
        for _ in 0..5 {
            chat(&mut alice, &mut bob, "right after the kill");
        }
        // The registration threads end on their own: their connections are gone.
    });
    let confirmed = confirmed.into_inner().unwrap();
    assert!(confirmed.len() >= KILL_AFTER, "{confirmed:?}");

    let lost = "* lost the connection to the server; open sessions go on.";
    wait_for_anywhere(&mut alice, lost, WAIT);
    wait_for_anywhere(&mut bob, lost, WAIT);

    // The database survived the SIGKILL ...
    assert_eq!(integrity_check(&server.db_path()), "ok");

    // ... and holds every account that was confirmed.
    let server2 = server.restart_same_addr();
    let stored: Vec<String> = db_users(&server2.db_path())
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    let missing: Vec<&String> = confirmed.iter().filter(|n| !stored.contains(n)).collect();
    assert!(
        missing.is_empty(),
        "accounts confirmed with OK REGISTERED are missing after the kill: {missing:?}"
    );
    for name in &confirmed {
        let mut w = Wire::logged_in(server2.addr, name, PW, 40999);
        w.quit();
    }

    // The session went on through the kill and the restart, and alice can log in again.
    chat(&mut alice, &mut bob, "after the restart");
    alice.send("\\reconnect");
    alice.expect("* reconnected to the server\n");
    chat(&mut alice, &mut bob, "after the reconnect");

    // Every line arrived exactly once, in order.
    alice.output_for(Duration::from_millis(300));
    bob.output_for(Duration::from_millis(300));
    assert_eq!(chat_texts(&bob, "alice"), from_alice, "bob's view of alice");
    assert_eq!(chat_texts(&alice, "bob"), from_bob, "alice's view of bob");
    assert_eq!(integrity_check(&server2.db_path()), "ok");
}

// ---------------------------------------------------------------------------------------
// 2: a peer that stops reading
// ---------------------------------------------------------------------------------------

#[test]
fn a_peer_that_stops_reading_is_cut_off_and_the_sender_stays_responsive() {
    /// More than bob's 1024-line queue and every kernel buffer on the way together
    /// (mallory's receive buffer is made small; bob's send buffer tops out at 4 MiB).
    const LINES: usize = 5000;
    const LEN: usize = 4000;
    /// The write timeout is 30 s; a full queue cuts the link at once.
    const LOST_BOUND: Duration = Duration::from_secs(75);
    let server = Server::start();
    let lab = Lab::new(&server);
    let mut bob = lab.register("bob", &[]);
    let mut carol = lab.register("carol", &[]);
    let mut mallory = Wire::registered(server.addr, "mallory", PW, free_port());

    // mallory's peer socket, with a small receive buffer set before connecting.
    let (id, bob_addr, ticket) = grant(&mut mallory, "bob");
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect_timeout(&bob_addr.into(), WAIT).unwrap();
    let mut raw = Wire::peer_on(socket.into(), &ticket, "mallory <-> bob (stops reading)");
    raw.send(&format!("HELLO peerchat 1 mallory {id} {ticket}"));
    bob.expect("* mallory wants to chat");
    bob.send("\\accept mallory");
    bob.expect("* session with mallory open");
    raw.expect("ACCEPT");
    // From here on mallory reads nothing until the end of the test.

    open_session(&mut carol, "carol", &mut bob, "bob");
    carol.send("carol before the flood");
    bob.expect_chat(None, "carol", "carol before the flood");

    let lines: Vec<String> = (0..LINES)
        .map(|i| format!("@mallory {i:05} {}", "m".repeat(LEN - 6)))
        .collect();
    let pid = bob.pid();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    thread::scope(|s| {
        let b = &mut bob;
        let lines = &lines;
        s.spawn(move || {
            b.send_all(lines);
            let _ = done_tx.send(());
        });
        // carol talks to bob while he writes to mallory.
        for i in 0..5 {
            carol.send(&format!("carol during the flood {i}"));
        }
        if done_rx.recv_timeout(Duration::from_secs(120)).is_err() {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
            panic!("bob did not read his {LINES} typed lines within 120 s: blocked on mallory?");
        }
    });
    for i in 0..5 {
        bob.expect_chat(None, "carol", &format!("carol during the flood {i}"));
    }

    // bob gives up on mallory instead of hanging ...
    wait_for_anywhere(&mut bob, "* lost the connection to mallory: ", LOST_BOUND);
    // ... and answers at once.
    bob.send("\\sessions");
    bob.expect("Sessions (1):\n  carol (active, direct)\n");
    bob.send("still here, carol");
    carol.expect_chat(None, "bob", "still here, carol");
    carol.send("good");
    bob.expect_chat(None, "carol", "good");
    assert!(bob.is_running(), "bob exited:\n{}", bob.output());
    let row = wait_session_row(&server.db_path(), id as i64, "ended", |r| {
        r.ended_at_ms.is_some()
    });
    assert_eq!(row.end_reason.as_deref(), Some("peer_lost"), "{row:?}");

    // What mallory was sent before the cut: bob's lines in order, none twice, then the
    // end of the connection (bob closed it; it is not merely forgotten).
    // The cut may fall inside a line: a last partial line (no newline) must be followed
    // by the close.
    let mut next = 0usize;
    let mut partial = false;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = raw.read_within(deadline.saturating_duration_since(Instant::now()));
        if partial && !matches!(got, Got::Closed) {
            raw.fail(&format!(
                "a partial line {next} was not the last thing mallory got"
            ));
        }
        match got {
            Got::Line(line) if line == "PING" || line == "PONG" => {}
            Got::Line(line) if line.starts_with("MSG ") => {
                let text = line.splitn(3, ' ').nth(2).unwrap_or("");
                let want = format!("{next:05} ");
                assert!(
                    text.starts_with(&want) || want.starts_with(text),
                    "mallory's line {next} is {:?}...",
                    &text[..text.len().min(40)]
                );
                partial = text.len() != LEN;
                next += 1;
                raw.clear_transcript();
            }
            Got::Line(line) if line.starts_with("CLOSE ") || line.starts_with("ERR ") => {}
            // A cut inside the first word of a line.
            Got::Line(line) if "MSG ".starts_with(line.as_str()) => partial = true,
            Got::Line(line) => raw.fail(&format!(
                "unexpected line {:?}",
                &line[..line.len().min(80)]
            )),
            Got::Closed => break,
            Got::TimedOut => raw.fail("bob's link to mallory is still open after the cut"),
        }
    }
    assert!(
        next < LINES,
        "mallory got all {LINES} lines; she was never cut off"
    );
}

// ---------------------------------------------------------------------------------------
// 3: slow-drip connections
// ---------------------------------------------------------------------------------------

/// protocol.md §3: the whole login must finish within the login timeout. A client that
/// sends its answers one byte per second never completes a line in time.
#[test]
fn a_login_dripped_one_byte_per_second_times_out_and_others_are_served() {
    const LOGIN_TIMEOUT: Duration = Duration::from_secs(3);
    let server = Server::builder()
        .args(&["--login-timeout", &LOGIN_TIMEOUT.as_secs().to_string()])
        .start();
    let mut dripper = Wire::connect(server.addr).named("dripper");
    dripper.hello();
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        let out = dripper.clone_stream();
        let bytes = b"y\nslow-dripping-username-goes-on\nsome dripped password\n".to_vec();
        thread::spawn(move || drip(out, bytes, Duration::from_secs(1), stop));
    }
    let _stopper = StopOnDrop(&stop);

    // Others are served meanwhile.
    let mut alice = Wire::registered(server.addr, "alice", PW, 40001);
    let mut bob = Wire::registered(server.addr, "bob", PW, 40002);
    alice.ping();
    bob.wait_for_list(&["alice", "bob"]);

    let deadline = start + LOGIN_TIMEOUT + SLACK;
    let mut seen = Vec::new();
    loop {
        match dripper.read_within(deadline.saturating_duration_since(Instant::now())) {
            Got::Line(line) if line.starts_with("ERR 408 TIMEOUT") => break,
            Got::Line(line) if line.starts_with("ASK ") || line.starts_with("ERR 411") => {
                seen.push(line)
            }
            Got::Line(line) => dripper.fail(&format!("unexpected line {line:?}")),
            Got::Closed => dripper.fail("closed without ERR 408 TIMEOUT"),
            Got::TimedOut => dripper.fail(&format!(
                "no ERR 408 TIMEOUT within {:?} of starting to log in (login timeout {:?}), \
                 while the login is dripped one byte per second; lines so far: {seen:?}",
                deadline - start,
                LOGIN_TIMEOUT
            )),
        }
    }
    dripper.expect_closed();
    stop.store(true, Ordering::SeqCst);

    alice.ping();
    alice.wait_for_list(&["alice", "bob"]);
}

/// protocol.md §10: a peer has 10 s to say `HELLO`. One that drips it a byte every
/// half second is closed within that (plus slack), and the client goes on meanwhile.
#[test]
fn a_hello_dripped_to_a_peer_listener_is_cut_off_within_the_handshake_timeout() {
    let server = Server::start();
    let lab = Lab::new(&server);
    let mut bob = lab.register("bob", &[]);
    let mut carol = lab.register("carol", &[]);
    let mut mallory = Wire::registered(server.addr, "mallory", PW, free_port());
    let bob_addr = info(&mut mallory, "bob");

    // The start of a Noise message 1 (its 64-byte length, then bytes), one every 500 ms.
    let mut raw = Wire::connect(bob_addr).named("mallory -> bob (dripping handshake)");
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let _stopper = StopOnDrop(&stop);
    {
        let stop = stop.clone();
        let out = raw.clone_stream();
        let mut bytes = vec![0u8, 64];
        bytes.extend_from_slice(&[7u8; 64]);
        thread::spawn(move || drip(out, bytes, Duration::from_millis(500), stop));
    }

    // bob takes a real session meanwhile.
    open_session(&mut carol, "carol", &mut bob, "bob");
    carol.send("hello while someone drips");
    bob.expect_chat(None, "carol", "hello while someone drips");
    bob.send("hi carol");
    carol.expect_chat(None, "bob", "hi carol");

    let bound = (start + HANDSHAKE + SLACK).saturating_duration_since(Instant::now());
    let errs = expect_err_or_close(&mut raw, bound);
    stop.store(true, Ordering::SeqCst);
    assert!(
        errs.iter().all(|e| e.starts_with("ERR 408")),
        "a slow handshake should get ERR 408 TIMEOUT (or only a close): {errs:?}"
    );
    let took = start.elapsed();
    assert!(
        took < HANDSHAKE + SLACK,
        "closed only after {took:?}; the handshake timeout is {HANDSHAKE:?}"
    );
    bob.output_for(Duration::from_millis(200));
    assert!(
        !bob.output().contains("mallory wants to chat"),
        "the dripped HELLO got through:\n{}",
        bob.output()
    );
    carol.send("still fine");
    bob.expect_chat(None, "carol", "still fine");
}

// ---------------------------------------------------------------------------------------
// 4: a huge line and random bytes on a peer listener
// ---------------------------------------------------------------------------------------

#[test]
fn a_huge_line_and_random_bytes_on_a_peer_port_are_refused_and_the_client_goes_on() {
    /// Enough to get past the 10 s handshake timeout if something waits for more bytes.
    const BOUND: Duration = Duration::from_secs(20);
    let server = Server::start();
    let lab = Lab::new(&server);
    let mut bob = lab.register("bob", &[]);
    let mut carol = lab.register("carol", &[]);
    let mut mallory = Wire::registered(server.addr, "mallory", PW, free_port());
    let bob_addr = info(&mut mallory, "bob");

    // A 1 MiB line: written from a thread, since bob stops reading after 4 KiB.
    let mut raw = Wire::connect(bob_addr).named("1 MiB line");
    let mut big = vec![b'A'; 1 << 20];
    big.push(b'\n');
    let mut out = raw.clone_stream();
    let writer = thread::spawn(move || {
        let _ = out.write_all(&big);
    });
    let errs = expect_err_or_close(&mut raw, BOUND);
    assert!(
        errs.iter().all(|e| e.starts_with("ERR 445")),
        "a 1 MiB line (not a Noise handshake) should get ERR 445 NOT_NOISE (or only a close): {errs:?}"
    );
    writer.join().unwrap();
    assert!(bob.is_running(), "bob died on a 1 MiB line");

    // 256 KiB of random bytes in one write, then random lines of random lengths, each
    // on its own connection.
    let mut rng = Rng(0x5eed_1234_abcd_0042);
    let mut payloads = vec![rng.bytes(256 * 1024)];
    for _ in 0..30 {
        let len = 1 + (rng.next() % 6000) as usize;
        let mut bytes = rng.bytes(len);
        bytes.push(b'\n');
        payloads.push(bytes);
    }
    for (i, bytes) in payloads.into_iter().enumerate() {
        let mut raw = Wire::connect(bob_addr).named(&format!("random bytes #{i}"));
        let mut out = raw.clone_stream();
        let writer = thread::spawn(move || {
            let _ = out.write_all(&bytes);
        });
        expect_err_or_close(&mut raw, BOUND);
        writer.join().unwrap();
        assert!(bob.is_running(), "bob died on random bytes #{i}");
    }

    // Nothing got through as a request, and bob still takes a real session.
    bob.output_for(Duration::from_millis(200));
    assert!(
        !bob.output().contains("wants to chat"),
        "garbage was taken as a chat request:\n{}",
        bob.output()
    );
    open_session(&mut carol, "carol", &mut bob, "bob");
    carol.send("are you ok after all that?");
    bob.expect_chat(None, "carol", "are you ok after all that?");
    bob.send("fine");
    carol.expect_chat(None, "bob", "fine");
}

// ---------------------------------------------------------------------------------------
// 5: a third user cannot learn a ticket
// ---------------------------------------------------------------------------------------

/// True if `text` holds a word of exactly 32 hex digits (the shape of a ticket).
fn has_ticket_shaped_word(text: &str) -> bool {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .any(|w| w.len() == 32 && w.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Every line `w` receives until it has been quiet for `quiet`.
fn drain(w: &mut Wire, quiet: Duration) -> Vec<String> {
    let mut lines = w.take_events();
    while let Got::Line(line) = w.read_within(quiet) {
        lines.push(line);
    }
    lines
}

#[test]
fn a_third_user_never_sees_a_ticket_and_the_server_never_logs_one() {
    let server = Server::builder().env("RUST_LOG", "trace").start();
    let lab = Lab::new(&server);
    let mut eve = Wire::registered(server.addr, "eve", PW, free_port());
    let mut bob = lab.register("bob", &[]);
    fs::write(lab.share_dir("carol").join("notes.txt"), b"carol's notes\n").unwrap();
    let mut carol = lab.register_sharing("carol");
    // alice is raw, so the test knows her tickets.
    let alice_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let alice_port = alice_listener.local_addr().unwrap().port();
    let mut alice = Wire::registered(server.addr, "alice", PW, alice_port);

    // A chat session alice -> bob.
    let (chat_id, bob_addr, chat_ticket) = grant(&mut alice, "bob");
    let mut link = Wire::peer(bob_addr, &chat_ticket).named("alice <-> bob");
    link.send(&format!("HELLO peerchat 1 alice {chat_id} {chat_ticket}"));
    bob.expect("* alice wants to chat");
    bob.send("\\accept alice");
    bob.expect("* session with alice open");
    link.expect("ACCEPT");
    link.send(&format!("MSG {} hi bob", now_ms()));
    bob.expect_chat(None, "alice", "hi bob");

    // bob fetches from alice: alice gets the transfer ticket from the server and serves.
    const SECRET: &[u8] = b"the plans, which nobody else may fetch\n";
    // A fetch expects the size the index lists, so alice lists the file first.
    alice.send("SHARE 1");
    alice.send(&format!("{} plans.txt", SECRET.len()));
    alice.expect("OK SHARE 1");
    bob.send("\\fetch alice plans.txt");
    let event = alice.expect_event("EVENT TRANSFER_REQUEST");
    let words: Vec<&str> = event.split(' ').collect();
    assert_eq!(words.len(), 6, "{event:?}");
    assert_eq!(words[3], "bob", "{event:?}");
    let (xfer_id, xfer_ticket) = (words[2].to_string(), words[4].to_string());
    let mut data = Wire::accepted_peer(
        accept_within(&alice_listener, WAIT),
        &xfer_ticket,
        "bob -> alice (fetch)",
    );
    data.expect_exact(&format!(
        "FETCH peerchat 1 bob {xfer_id} {xfer_ticket} plans.txt"
    ));
    // alice proves she holds the ticket before serving (protocol.md §11).
    let proof = peerchat::protocol::ticket::Ticket::parse(&xfer_ticket)
        .unwrap()
        .accept_mac(xfer_id.parse().unwrap(), "bob", "alice");
    data.send(&format!("ACCEPT {}", proof.to_hex()));
    serve_file(&mut data, "plans.txt", SECRET);
    expect_fetch_done(&mut bob, "plans.txt", "alice", WAIT);
    assert_eq!(
        fs::read(lab.downloads("bob").join("plans.txt")).unwrap(),
        SECRET
    );

    // Real clients on both sides too: bob chats with and fetches from carol.
    open_session(&mut bob, "bob", &mut carol, "carol");
    bob.send("hello carol");
    carol.expect_chat(None, "bob", "hello carol");
    bob.send("\\fetch carol notes.txt");
    expect_fetch_done(&mut bob, "notes.txt", "carol", WAIT);

    // eve pokes at the sessions she is not part of: nothing to see, nothing changes.
    let mut eve_lines = Vec::new();
    for (command, want) in [
        (format!("SESSION_OPEN {chat_id}"), "ERR 432"),
        (format!("SESSION_END {chat_id} closed"), "ERR 432"),
        (
            format!("TRANSFER_END {xfer_id} ok 1 1 - - 1 0 x"),
            "ERR 432",
        ),
        ("INFO alice".to_string(), "OK INFO alice"),
        ("INFO bob".to_string(), "OK INFO bob"),
        ("FILES".to_string(), "OK FILES"),
        ("SEARCH notes".to_string(), "OK SEARCH"),
    ] {
        eve.send(&command);
        let reply = eve.expect(want);
        // A list reply: `OK FILES n` / `OK SEARCH n total`, then n lines.
        let rows: usize = match reply.split(' ').nth(2) {
            Some(n) if reply.starts_with("OK FILES") || reply.starts_with("OK SEARCH") => {
                n.parse().unwrap()
            }
            _ => 0,
        };
        eve_lines.push(reply);
        for _ in 0..rows {
            eve_lines.push(eve.next_line());
        }
    }
    eve_lines.extend(eve.list().into_iter().map(|u| format!("USER {u}")));
    eve.ping();
    eve_lines.extend(drain(&mut eve, Duration::from_millis(500)));
    let row = db_sessions(&server.db_path())
        .into_iter()
        .find(|r| r.id == chat_id as i64)
        .expect("the chat session is logged");
    assert_eq!(row.end_reason, None, "eve ended alice's session: {row:?}");

    for line in &eve_lines {
        assert!(
            !line.contains(&chat_ticket) && !line.contains(&xfer_ticket),
            "eve received a ticket: {line:?}"
        );
        assert!(
            !has_ticket_shaped_word(line),
            "eve received something shaped like a ticket: {line:?}"
        );
    }

    let log = server.log_text();
    assert!(
        log.contains(&format!("session {chat_id}: alice asked for bob")),
        "the server log does not look like the log of this run:\n{log}"
    );
    for (what, ticket) in [("chat", &chat_ticket), ("transfer", &xfer_ticket)] {
        assert!(
            !log.contains(ticket.as_str()),
            "the server log holds the {what} ticket {ticket}"
        );
    }
    let shaped: Vec<&str> = log.lines().filter(|l| has_ticket_shaped_word(l)).collect();
    assert!(
        shaped.is_empty(),
        "the server log holds ticket-shaped words: {shaped:#?}"
    );
}

// ---------------------------------------------------------------------------------------
// 6: tickets are 128 random bits
// ---------------------------------------------------------------------------------------

#[test]
fn two_hundred_tickets_are_distinct_well_formed_and_balanced() {
    const N: usize = 200;
    // CONNECT is rate-limited per user (protocol.md §8); this test needs 200 at once.
    let server = Server::builder().args(&["--request-burst", "200"]).start();
    let mut asker = Wire::registered(server.addr, "asker", PW, free_port());
    let mut target = Wire::registered(server.addr, "target", PW, free_port());

    let mut tickets = Vec::with_capacity(N);
    for _ in 0..N {
        let (id, _, ticket) = grant(&mut asker, "target");
        // The target gets the same ticket for the same session.
        let event = target.expect_event(&format!("EVENT SESSION_REQUEST {id} asker"));
        assert_eq!(
            event,
            format!("EVENT SESSION_REQUEST {id} asker {ticket} -"),
            "the target's ticket differs from the requester's"
        );
        tickets.push(ticket);
    }

    for t in &tickets {
        assert!(
            t.len() == 32
                && t.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "not 32 lower-case hex digits: {t:?}"
        );
    }
    let mut sorted = tickets.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), N, "repeated tickets among {N}");

    let bits: Vec<u128> = tickets
        .iter()
        .map(|t| u128::from_str_radix(t, 16).unwrap())
        .collect();
    let ones: u32 = bits.iter().map(|b| b.count_ones()).sum();
    let total = (N * 128) as f64;
    let share = f64::from(ones) / total;
    assert!(
        (0.45..=0.55).contains(&share),
        "{ones} of {total} bits are ones ({:.1}%)",
        share * 100.0
    );
    // No bit position is stuck (a counter or a clock would leave high bits constant):
    // each is set in roughly half the tickets (mean 100, sd about 7).
    for pos in 0..128 {
        let set = bits.iter().filter(|b| (*b >> pos) & 1 == 1).count();
        assert!(
            (40..=160).contains(&set),
            "bit {pos} is set in {set} of {N} tickets"
        );
    }
    // Consecutive tickets are unrelated: about half their bits differ.
    for pair in bits.windows(2) {
        let differ = (pair[0] ^ pair[1]).count_ones();
        assert!(
            (24..=104).contains(&differ),
            "consecutive tickets differ in only {differ} bits: {:032x} {:032x}",
            pair[0],
            pair[1]
        );
    }
}
