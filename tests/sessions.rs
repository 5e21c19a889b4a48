//! Direct chat sessions (protocol.md §4a and §10): the real server, real clients over
//! pipes, and raw sockets where a test plays a hostile peer. Each test has its own
//! server and its own temporary directory with one `--data-dir` per client.

mod common;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;

/// Upper bound for "the ticket was refused after the 3 s grace": generous, only there
/// to catch a refusal that never comes or waits for something else (e.g. 10 s).
const GRACE_BOUND: Duration = Duration::from_secs(9);

/// Upper bound for "refused at once" (no 3 s grace): anything above it means the client
/// parked the ticket as unknown instead of recognising it.
const AT_ONCE: Duration = Duration::from_millis(2500);

/// Finds the one row for `requester` → `target` in the session log (waits for it).
fn session_id(db: &Path, requester: &str, target: &str) -> i64 {
    let deadline = Instant::now() + POLL;
    loop {
        let rows = db_sessions(db);
        let mine: Vec<&SessionRow> = rows
            .iter()
            .filter(|r| r.requester == requester && r.target == target)
            .collect();
        if mine.len() == 1 {
            return mine[0].id;
        }
        assert!(
            mine.len() < 2,
            "more than one session {requester} -> {target}: {rows:#?}"
        );
        assert!(
            Instant::now() < deadline,
            "no session {requester} -> {target} recorded: {rows:#?}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// 128 random bits as 32 hex digits (not from any server).
fn random_ticket() -> String {
    let mut out = String::new();
    for i in 0..2u64 {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(i);
        h.write_u128(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos(),
        );
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

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
    let ticket = words[5].to_string();
    assert!(
        ticket.len() == 32 && ticket.bytes().all(|b| b.is_ascii_hexdigit()),
        "ticket is not 32 hex digits: {line:?}"
    );
    (
        words[2].parse().expect("session id"),
        words[4].parse().expect("peer address"),
        ticket,
    )
}

/// `INFO <user>` on a raw server connection; returns the peer address.
fn info(w: &mut Wire, user: &str) -> SocketAddr {
    w.send(&format!("INFO {user}"));
    let line = w.expect(&format!("OK INFO {user}"));
    line.split(' ').nth(3).unwrap().parse().expect("address")
}

/// A raw TCP connection to a client's peer listener (a `Wire` reads any line protocol):
/// no Noise handshake, so the listener refuses it at once (`ERR 445 NOT_NOISE`).
fn raw_peer(addr: SocketAddr, label: &str) -> Wire {
    Wire::connect(addr).named(label)
}

/// A raw peer that ran the Noise handshake with `ticket` (protocol.md §10); peer lines
/// then travel inside it.
fn noise_peer(addr: SocketAddr, ticket: &str, label: &str) -> Wire {
    Wire::peer(addr, ticket).named(label)
}

/// The handshake with `ticket` must be refused in clear with `code`; returns how long it
/// took from `since`.
fn expect_clear_refusal(addr: SocketAddr, ticket: &str, code: &str, since: Instant) -> Duration {
    let line = Wire::refused_peer(addr, ticket);
    let took = since.elapsed();
    assert!(
        line.starts_with(&format!("ERR {code} ")),
        "expected ERR {code}, got {line:?}"
    );
    took
}

/// Waits for the ERR line with `code` and then the close; returns how long it took
/// from `since`.
fn expect_refusal(raw: &mut Wire, code: &str, since: Instant) -> Duration {
    let line = raw.expect(&format!("ERR {code}"));
    let took = since.elapsed();
    assert!(
        line.split(' ').count() >= 3,
        "ERR line without a name: {line:?}"
    );
    raw.expect_closed();
    took
}

/// `text` must not appear in `client`'s stdout (after collecting for `wait`).
fn assert_never(client: &mut Client, text: &str, wait: Duration) {
    client.output_for(wait);
    if client.output().contains(text) {
        client.fail(&format!("{text:?} should never have been printed"));
    }
}

/// Waits (bounded) until `text` appears anywhere in `client`'s stdout, whatever was
/// matched before.
fn wait_for_anywhere(client: &mut Client, text: &str) {
    let deadline = Instant::now() + WAIT;
    while !client.output().contains(text) {
        if Instant::now() >= deadline {
            client.fail(&format!("expected {text:?} somewhere on stdout"));
        }
        client.output_for(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------------------
// 1-3: accept, decline, no answer
// ---------------------------------------------------------------------------------------

#[test]
fn connect_and_accept_opens_a_session_both_ways() {
    let server = Server::start();
    let lab = Lab::new(&server);
    let mut alice = lab.register("alice", &[]);
    let mut bob = lab.register("bob", &[]);

    alice.send("\\connect bob");
    alice.expect("* asking bob to chat...\n");
    bob.expect("* alice wants to chat: \\accept alice or \\decline alice (within 30 s)\n");

    // Recorded as soon as it is asked, not yet accepted.
    let id = session_id(&server.db_path(), "alice", "bob");
    let row = db_sessions(&server.db_path())
        .into_iter()
        .find(|r| r.id == id)
        .unwrap();
    assert!(row.started_at_ms > 0, "{row:?}");
    assert_eq!(
        (
            row.accepted_at_ms,
            row.ended_at_ms,
            row.end_reason.as_deref()
        ),
        (None, None, None),
        "an unanswered session is neither accepted nor ended: {row:?}"
    );

    bob.send("\\accept alice");
    bob.expect("* session with alice open; what you type goes to alice\n");
    alice.expect("* session with bob open; what you type goes to bob\n");

    alice.send("hello bob, it is alice");
    bob.expect_chat(None, "alice", "hello bob, it is alice");
    bob.send("hi alice, bob here");
    alice.expect_chat(None, "bob", "hi alice, bob here");
    alice.send("second line: ünïcödé ok");
    bob.expect_chat(None, "alice", "second line: ünïcödé ok");

    // Own lines are not echoed.
    alice.output_for(Duration::from_millis(300));
    bob.output_for(Duration::from_millis(300));
    assert!(
        !alice.output().contains("alice: hello bob"),
        "alice's own line was echoed:\n{}",
        alice.output()
    );
    assert!(
        !bob.output().contains("bob: hi alice"),
        "bob's own line was echoed:\n{}",
        bob.output()
    );

    let row = wait_session_row(&server.db_path(), id, "accepted and still open", |r| {
        r.accepted_at_ms.is_some()
    });
    assert_eq!(
        (row.requester.as_str(), row.target.as_str()),
        ("alice", "bob")
    );
    assert!(row.accepted_at_ms.unwrap() >= row.started_at_ms, "{row:?}");
    assert_eq!(row.ended_at_ms, None, "{row:?}");
    assert_eq!(row.end_reason, None, "{row:?}");

    // Both sides list it; each is the other's active session.
    alice.send("\\sessions");
    alice.expect("Sessions (1):\n  bob (active, direct)\n");
    bob.send("\\sessions");
    bob.expect("Sessions (1):\n  alice (active, direct)\n");
}

#[test]
fn decline_tells_the_requester_and_is_recorded() {
    let server = Server::start();
    let lab = Lab::new(&server);
    let mut alice = lab.register("alice", &[]);
    let mut bob = lab.register("bob", &[]);

    alice.send("\\c bob");
    alice.expect("* asking bob to chat...");
    bob.expect("* alice wants to chat: \\accept alice or \\decline alice");
    bob.send("\\sessions");
    bob.expect("Sessions (1):\n  alice (wants to chat: \\accept or \\decline)\n");
    bob.send("\\decline alice");
    bob.expect("* declined alice\n");
    alice.expect("* bob declined\n");

    let id = session_id(&server.db_path(), "alice", "bob");
    let row = wait_session_row(&server.db_path(), id, "ended as declined", |r| {
        r.end_reason.is_some()
    });
    assert_eq!(row.end_reason.as_deref(), Some("declined"), "{row:?}");
    assert!(row.ended_at_ms.is_some(), "{row:?}");
    assert_eq!(
        row.accepted_at_ms, None,
        "a declined session was accepted: {row:?}"
    );

    // Nothing is open on either side, and a plain line has nowhere to go.
    for c in [&mut alice, &mut bob] {
        c.send("\\sessions");
        c.expect("No sessions. \\connect <user> to start one.\n");
        c.send("anyone there?");
        c.expect("error: no chat session is open");
    }
    assert_never(&mut bob, "anyone there?", Duration::ZERO);
}

#[test]
fn a_request_nobody_answers_times_out() {
    let server = Server::start();
    let lab = Lab::new(&server);
    let mut alice = lab.register("alice", &[]);
    let mut bob = lab.register("bob", &["--accept-timeout", "2"]);

    alice.send("\\connect bob");
    alice.expect("* asking bob to chat...");
    bob.expect("* alice wants to chat: \\accept alice or \\decline alice (within 2 s)\n");
    // After the request and before it expires, alice waits for an answer.
    alice.send("\\sessions");
    alice.expect("Sessions (1):\n  bob (waiting for an answer)\n");

    bob.expect("* chat request from alice expired\n");
    alice.expect("* bob did not answer\n");

    let id = session_id(&server.db_path(), "alice", "bob");
    let row = wait_session_row(&server.db_path(), id, "ended as timeout", |r| {
        r.end_reason.is_some()
    });
    assert_eq!(row.end_reason.as_deref(), Some("timeout"), "{row:?}");
    assert!(row.ended_at_ms.is_some(), "{row:?}");
    assert_eq!(row.accepted_at_ms, None, "{row:?}");

    // Too late to accept now.
    bob.send("\\accept alice");
    bob.expect("error: alice has not asked to chat");
    assert_never(
        &mut alice,
        "* session with bob open",
        Duration::from_millis(300),
    );
}

// ---------------------------------------------------------------------------------------
// 4: both sides at once
// ---------------------------------------------------------------------------------------

#[test]
fn two_hundred_lines_each_way_at_once_arrive_once_and_in_order() {
    const N: usize = 200;
    let server = Server::start();
    let lab = Lab::new(&server);
    let mut alice = lab.register("alice", &[]);
    let mut bob = lab.register("bob", &[]);
    open_session(&mut alice, "alice", &mut bob, "bob");

    let from_alice: Vec<String> = (0..N)
        .map(|i| format!("alice line {i:03} of {N}"))
        .collect();
    let from_bob: Vec<String> = (0..N).map(|i| format!("bob line {i:03} of {N}")).collect();
    let gate = Gate::new(2);
    thread::scope(|s| {
        let (a, b) = (&mut alice, &mut bob);
        let (ga, gb) = (gate.clone(), gate.clone());
        let (la, lb) = (&from_alice, &from_bob);
        s.spawn(move || {
            ga.wait();
            a.send_all(la);
        });
        s.spawn(move || {
            gb.wait();
            b.send_all(lb);
        });
    });

    // In order: each expect searches after the previous match.
    for line in &from_alice {
        bob.expect_chat(None, "alice", line);
    }
    for line in &from_bob {
        alice.expect_chat(None, "bob", line);
    }
    // Exactly once each, and nothing else arrived as chat.
    alice.output_for(Duration::from_millis(500));
    bob.output_for(Duration::from_millis(500));
    for (who, client, sender, lines) in [
        ("bob", &bob, "alice", &from_alice),
        ("alice", &alice, "bob", &from_bob),
    ] {
        let out = client.output();
        let chat: Vec<&str> = out
            .lines()
            .filter(|l| l.starts_with('[') || l.starts_with('('))
            .collect();
        assert_eq!(
            chat.len(),
            N,
            "{who} should show exactly {N} chat lines, shows {}:\n{out}",
            chat.len()
        );
        for (got, want) in chat.iter().zip(lines.iter()) {
            assert!(
                is_chat_line(got, None, sender, want),
                "{who}: expected {want:?} from {sender}, got {got:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// 5: several sessions at once
// ---------------------------------------------------------------------------------------

#[test]
fn three_sessions_at_once_with_switch_and_at_addressing() {
    let server = Server::start();
    let lab = Lab::new(&server);
    let mut alice = lab.register("alice", &[]);
    let mut bob = lab.register("bob", &[]);
    let mut carol = lab.register("carol", &[]);
    let mut dave = lab.register("dave", &[]);

    open_session(&mut alice, "alice", &mut bob, "bob");
    open_session(&mut alice, "alice", &mut carol, "carol");

    // dave asked but has not answered yet: both sides list it as pending.
    alice.send("\\connect dave");
    dave.expect("* alice wants to chat: \\accept alice or \\decline alice");
    alice.send("\\sessions");
    alice.expect("Sessions (3):\n  bob (open, direct)\n  carol (active, direct)\n  dave (waiting for an answer)\n");
    dave.send("\\sessions");
    dave.expect("Sessions (1):\n  alice (wants to chat: \\accept or \\decline)\n");
    dave.send("\\accept");
    dave.expect("* session with alice open");
    alice.expect("* session with dave open; what you type goes to dave\n");

    alice.send("\\switch bob");
    alice.expect("* now talking to bob\n");
    alice.send("\\sessions");
    alice.expect(
        "Sessions (3):\n  bob (active, direct)\n  carol (open, direct)\n  dave (open, direct)\n",
    );

    // @carol goes to carol without switching; a plain line goes to bob.
    alice.send("@carol psst carol, only for you");
    carol.expect_chat(None, "alice", "psst carol, only for you");
    alice.send("plain line for bob");
    bob.expect_chat(None, "alice", "plain line for bob");
    alice.send("\\sessions");
    alice.expect(
        "Sessions (3):\n  bob (active, direct)\n  carol (open, direct)\n  dave (open, direct)\n",
    );

    // Lines from the non-active sessions carry the peer's name; the active one's do not.
    carol.send("carol writes while bob is active");
    alice.expect_chat(Some("carol"), "carol", "carol writes while bob is active");
    dave.send("dave too");
    alice.expect_chat(Some("dave"), "dave", "dave too");
    bob.send("bob is the active one");
    alice.expect_chat(None, "bob", "bob is the active one");

    // Switch to carol: now bob's lines carry the prefix and carol's do not.
    alice.send("\\s carol");
    alice.expect("* now talking to carol\n");
    alice.send("plain line for carol");
    carol.expect_chat(None, "alice", "plain line for carol");
    bob.send("bob after the switch");
    alice.expect_chat(Some("bob"), "bob", "bob after the switch");
    carol.send("carol after the switch");
    alice.expect_chat(None, "carol", "carol after the switch");

    // @ to a user without a session, and \switch to one, are errors.
    alice.send("@erin hello?");
    alice.expect("error: no session with erin");
    alice.send("\\switch erin");
    alice.expect("error: no session with erin");

    // Nothing crossed over.
    bob.output_for(Duration::from_millis(300));
    carol.output_for(Duration::from_millis(300));
    dave.output_for(Duration::from_millis(300));
    for (who, c, leaked) in [
        ("bob", &bob, "psst"),
        ("bob", &bob, "plain line for carol"),
        ("carol", &carol, "plain line for bob"),
        ("dave", &dave, "plain line for"),
        ("dave", &dave, "psst"),
    ] {
        assert!(
            !c.output().contains(leaked),
            "{who} got a line meant for someone else ({leaked:?}):\n{}",
            c.output()
        );
    }

    // Three accepted sessions in the server's log, all still open.
    let rows = db_sessions(&server.db_path());
    assert_eq!(rows.len(), 3, "{rows:#?}");
    for row in &rows {
        assert_eq!(row.requester, "alice", "{row:?}");
        assert!(row.accepted_at_ms.is_some(), "{row:?}");
        assert_eq!(row.ended_at_ms, None, "{row:?}");
    }
}

// ---------------------------------------------------------------------------------------
// 6-7: ending a session
// ---------------------------------------------------------------------------------------

#[test]
fn close_tells_both_sides_and_is_recorded() {
    let server = Server::start();
    let lab = Lab::new(&server);
    let mut alice = lab.register("alice", &[]);
    let mut bob = lab.register("bob", &[]);
    open_session(&mut alice, "alice", &mut bob, "bob");
    let id = session_id(&server.db_path(), "alice", "bob");
    alice.send("before closing");
    bob.expect_chat(None, "alice", "before closing");
    // bob's SESSION_OPEN travels on his own connection and may still be queued there
    // (slower with PostgreSQL): the server records what arrives in the order it arrives.
    wait_session_row(&server.db_path(), id, "accepted", |r| {
        r.accepted_at_ms.is_some()
    });

    alice.send("\\close");
    alice.expect("* session with bob closed\n");
    bob.expect("* alice closed the session\n");

    let row = wait_session_row(&server.db_path(), id, "ended", |r| r.ended_at_ms.is_some());
    assert_eq!(row.end_reason.as_deref(), Some("closed"), "{row:?}");
    assert!(row.accepted_at_ms.is_some(), "{row:?}");
    assert!(
        row.ended_at_ms.unwrap() >= row.accepted_at_ms.unwrap(),
        "{row:?}"
    );

    for c in [&mut alice, &mut bob] {
        c.send("\\sessions");
        c.expect("No sessions. \\connect <user> to start one.\n");
    }
    bob.send("after closing");
    bob.expect("error: no chat session is open");
    assert_never(&mut alice, "after closing", Duration::from_millis(300));

    // The `sessions` subcommand prints the same record.
    let out = Command::new(env!("CARGO_BIN_EXE_peerchat-server"))
        .arg("sessions")
        .arg("--db")
        .arg(db_arg(&server.db_path()))
        .output()
        .expect("run peerchat-server sessions");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "sessions failed: {text}");
    let row_line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(&id.to_string()))
        .unwrap_or_else(|| panic!("session {id} missing from:\n{text}"));
    let words: Vec<&str> = row_line.split_whitespace().collect();
    assert_eq!(words[1..3], ["alice", "bob"], "{row_line}");
    assert_eq!(words.last(), Some(&"closed"), "{row_line}");

    // A new session between the same two can be opened again, from the other side, and
    // closed by name with \CLOSE_SESSION.
    open_session(&mut bob, "bob", &mut alice, "alice");
    let id2 = session_id(&server.db_path(), "bob", "alice");
    bob.send("again");
    alice.expect_chat(None, "bob", "again");
    alice.send("\\CLOSE_SESSION bob");
    alice.expect("* session with bob closed\n");
    bob.expect("* alice closed the session\n");
    let row = wait_session_row(&server.db_path(), id2, "ended", |r| r.ended_at_ms.is_some());
    assert_eq!(row.end_reason.as_deref(), Some("closed"), "{row:?}");
}

#[test]
fn killing_a_peer_process_is_noticed_and_recorded() {
    let server = Server::start();
    let lab = Lab::new(&server);
    let mut alice = lab.register("alice", &[]);
    let mut bob = lab.register("bob", &[]);
    open_session(&mut alice, "alice", &mut bob, "bob");
    let id = session_id(&server.db_path(), "alice", "bob");
    bob.send("last words");
    alice.expect_chat(None, "bob", "last words");

    bob.kill_hard();
    alice.expect("* lost the connection to bob: ");
    alice.send("\\sessions");
    alice.expect("No sessions. \\connect <user> to start one.\n");

    let row = wait_session_row(&server.db_path(), id, "ended", |r| r.ended_at_ms.is_some());
    assert!(
        matches!(
            row.end_reason.as_deref(),
            Some("peer_lost") | Some("offline")
        ),
        "{row:?}"
    );
    assert!(alice.is_running(), "alice exited:\n{}", alice.output());
}

// ---------------------------------------------------------------------------------------
// 8: the server goes away
// ---------------------------------------------------------------------------------------

#[test]
fn sessions_outlive_the_server_and_reconnect_works() {
    let mut server = Server::start();
    let lab = Lab::new(&server);
    let mut alice = lab.register("alice", &[]);
    let mut bob = lab.register("bob", &[]);
    open_session(&mut alice, "alice", &mut bob, "bob");
    let id = session_id(&server.db_path(), "alice", "bob");
    wait_session_row(&server.db_path(), id, "accepted", |r| {
        r.accepted_at_ms.is_some()
    });

    server.kill();
    let lost = "* lost the connection to the server; open sessions go on. Type \\reconnect to log in again.\n";
    alice.expect(lost);
    bob.expect(lost);

    // The peers still talk.
    alice.send("server is gone, are you there?");
    bob.expect_chat(None, "alice", "server is gone, are you there?");
    bob.send("still here");
    alice.expect_chat(None, "bob", "still here");
    // Things that need the server say so.
    alice.send("\\connect carol");
    alice.expect("error: not connected to the server; \\reconnect first");
    alice.send("\\list");
    alice.expect("error: not connected to the server; \\reconnect first");

    // A new server run on the same database and address: they log in again.
    let server2 = server.restart_same_addr();
    alice.send("\\reconnect");
    alice.expect("* reconnected to the server\n");
    bob.send("\\reconnect");
    bob.expect("* reconnected to the server\n");
    alice.send("\\list");
    alice.expect("Online users (2):\n  #1 alice (you)\n  #2 bob\n");
    alice.send("\\reconnect");
    alice.expect("error: already connected to the server");

    // The session went on through all of it.
    alice.send("after the reconnect");
    bob.expect_chat(None, "alice", "after the reconnect");
    bob.send("me too");
    alice.expect_chat(None, "bob", "me too");

    // The new run could not know the session went on: it is not recorded as ended
    // (tests/session_log.rs checks the "unknown since restart" mark and the real end).
    let row = db_sessions(&server2.db_path())
        .into_iter()
        .find(|r| r.id == id)
        .expect("the session row");
    assert_eq!(row.ended_at_ms, None, "{row:?}");
}

// ---------------------------------------------------------------------------------------
// 9: tickets, with mallory as the attacker on raw sockets
// ---------------------------------------------------------------------------------------

#[test]
fn a_forged_ticket_is_refused_after_the_grace_time() {
    let server = Server::start();
    let lab = Lab::new(&server);
    let mut bob = lab.register("bob", &[]);
    let mut mallory = Wire::registered(server.addr, "mallory", PW, free_port());
    let bob_addr = info(&mut mallory, "bob");

    let start = Instant::now();
    let took = expect_clear_refusal(bob_addr, &random_ticket(), "421 BAD_TICKET", start);
    assert!(
        took < GRACE_BOUND,
        "the forged ticket was refused only after {took:?}"
    );

    // Also with an id of a session that exists but is not bob's... none exists: the
    // log stays empty, since only CONNECT creates sessions.
    assert!(db_sessions(&server.db_path()).is_empty());
    assert_never(&mut bob, "wants to chat", Duration::from_millis(300));
    bob.send("\\sessions");
    bob.expect("No sessions.");
}

#[test]
fn a_ticket_works_once_only() {
    let server = Server::start();
    let lab = Lab::new(&server);
    let mut bob = lab.register("bob", &[]);
    let mut mallory = Wire::registered(server.addr, "mallory", PW, free_port());
    let (id, bob_addr, ticket) = grant(&mut mallory, "bob");
    assert_eq!(bob_addr, info(&mut mallory, "bob"));
    let hello = format!("HELLO peerchat 1 mallory {id} {ticket}");

    // First use: valid, bob is asked.
    let mut first = noise_peer(bob_addr, &ticket, "mallory -> bob (first)");
    first.send(&hello);
    bob.expect("* mallory wants to chat: \\accept mallory or \\decline mallory");

    // Second use: refused at once, while the first is still waiting.
    let start = Instant::now();
    let took = expect_clear_refusal(bob_addr, &ticket, "421 BAD_TICKET", start);
    assert!(
        took < AT_ONCE,
        "a replayed ticket should be refused at once, took {took:?}"
    );

    // Only one request shows; the first connection is still answered normally.
    bob.send("\\sessions");
    bob.expect("Sessions (1):\n  mallory (wants to chat: \\accept or \\decline)\n");
    bob.send("\\decline mallory");
    bob.expect("* declined mallory");
    first.expect("DECLINE declined");
    first.expect_closed();
    let out = bob.output();
    assert_eq!(
        out.matches("mallory wants to chat").count(),
        1,
        "bob was asked more than once:\n{out}"
    );

    // And a third use after the first one ended: refused too.
    let start = Instant::now();
    let took = expect_clear_refusal(bob_addr, &ticket, "421 BAD_TICKET", start);
    assert!(
        took < AT_ONCE,
        "a used ticket should be refused at once, took {took:?}"
    );
    bob.output_for(Duration::from_millis(300));
    assert_eq!(
        bob.output().matches("mallory wants to chat").count(),
        1,
        "a used ticket asked bob again:\n{}",
        bob.output()
    );
}

#[test]
fn a_ticket_for_another_user_is_refused() {
    let server = Server::start();
    let lab = Lab::new(&server);
    let mut bob = lab.register("bob", &[]);
    let mut carol = lab.register("carol", &[]);
    let mut mallory = Wire::registered(server.addr, "mallory", PW, free_port());
    let bob_addr = info(&mut mallory, "bob");
    let (id, carol_addr, ticket) = grant(&mut mallory, "carol");
    assert_ne!(carol_addr, bob_addr);

    // carol's ticket presented to bob.
    let _ = id;
    let start = Instant::now();
    let took = expect_clear_refusal(bob_addr, &ticket, "421 BAD_TICKET", start);
    assert!(took < GRACE_BOUND, "refused only after {took:?}");
    assert_never(&mut bob, "wants to chat", Duration::from_millis(200));
    assert_never(&mut carol, "wants to chat", Duration::ZERO);
}

#[test]
fn a_ticket_presented_under_another_name_or_session_is_refused_at_once() {
    let server = Server::start();
    let lab = Lab::new(&server);
    let mut bob = lab.register("bob", &[]);
    let mut mallory = Wire::registered(server.addr, "mallory", PW, free_port());

    // The right ticket, presented as alice.
    let (id, bob_addr, ticket) = grant(&mut mallory, "bob");
    let mut raw = noise_peer(bob_addr, &ticket, "mallory as alice -> bob");
    let start = Instant::now();
    raw.send(&format!("HELLO peerchat 1 alice {id} {ticket}"));
    let took = expect_refusal(&mut raw, "421 BAD_TICKET", start);
    assert!(took < AT_ONCE, "refused only after {took:?}");

    // The right ticket and name, for another session id.
    let (id2, _, ticket2) = grant(&mut mallory, "bob");
    let mut raw = noise_peer(bob_addr, &ticket2, "mallory, wrong session -> bob");
    let start = Instant::now();
    raw.send(&format!(
        "HELLO peerchat 1 mallory {} {ticket2}",
        id2 + 1000
    ));
    let took = expect_refusal(&mut raw, "421 BAD_TICKET", start);
    assert!(took < AT_ONCE, "refused only after {took:?}");

    assert_never(&mut bob, "wants to chat", Duration::from_millis(300));
    bob.send("\\sessions");
    bob.expect("No sessions.");
}

/// protocol.md §4a lists `refused` for "the target refused the connection: bad ticket".
/// When bob refuses a ticket for a session he knows (here: presented under another
/// name), that session can never open; it must not stay open in the log.
#[test]
fn a_refused_ticket_ends_the_session_as_refused() {
    let server = Server::start();
    let lab = Lab::new(&server);
    let _bob = lab.register("bob", &[]);
    let mut mallory = Wire::registered(server.addr, "mallory", PW, free_port());
    let (id, bob_addr, ticket) = grant(&mut mallory, "bob");
    let mut raw = noise_peer(bob_addr, &ticket, "mallory as alice -> bob");
    raw.send(&format!("HELLO peerchat 1 alice {id} {ticket}"));
    expect_refusal(&mut raw, "421 BAD_TICKET", Instant::now());
    let row = wait_session_row(&server.db_path(), id as i64, "ended", |r| {
        r.ended_at_ms.is_some()
    });
    assert_eq!(row.end_reason.as_deref(), Some("refused"), "{row:?}");
}

#[test]
fn out_of_order_and_garbage_first_lines_are_refused_and_bob_keeps_working() {
    let server = Server::start();
    let lab = Lab::new(&server);
    let mut bob = lab.register("bob", &[]);
    let mut carol = lab.register("carol", &[]);
    let mut mallory = Wire::registered(server.addr, "mallory", PW, free_port());
    let bob_addr = info(&mut mallory, "bob");

    // Without the Noise handshake, any first bytes are refused at once, in clear.
    let mut raw = raw_peer(bob_addr, "MSG first (plain)");
    raw.send("MSG 1763841043000 hi bob");
    expect_refusal(&mut raw, "445 NOT_NOISE", Instant::now());

    let mut raw = raw_peer(bob_addr, "plain HELLO");
    raw.send(&format!("HELLO peerchat 1 mallory 1 {}", random_ticket()));
    expect_refusal(&mut raw, "445 NOT_NOISE", Instant::now());

    let mut raw = raw_peer(bob_addr, "not UTF-8");
    raw.send_bytes(b"\xff\xfe\x00\x80garbage\x01\x02\n")
        .unwrap();
    raw.expect("ERR 445");
    raw.expect_closed();

    let mut raw = raw_peer(bob_addr, "overlong");
    let _ = raw.send_bytes(&vec![b'A'; 10_000]);
    let _ = raw.send_bytes(b"\n");
    raw.expect("ERR 445");
    raw.expect_closed();

    // Bytes and then a close, no newline: nothing happens.
    let mut raw = raw_peer(bob_addr, "half a line");
    raw.send_bytes(b"HELLO peerch").unwrap();
    drop(raw);

    // Inside Noise (a real ticket), the first line is checked as before.
    let (_, _, ticket) = grant(&mut mallory, "bob");
    let mut raw = noise_peer(bob_addr, &ticket, "MSG first");
    raw.send("MSG 1763841043000 hi bob");
    expect_refusal(&mut raw, "433 OUT_OF_ORDER", Instant::now());

    let (_, _, ticket) = grant(&mut mallory, "bob");
    let mut raw = noise_peer(bob_addr, &ticket, "broken HELLO");
    raw.send("HELLO peerchat 1 mallory notanumber zz");
    raw.expect("ERR");
    raw.expect_closed();

    let (_, _, ticket) = grant(&mut mallory, "bob");
    let mut raw = noise_peer(bob_addr, &ticket, "overlong inside");
    let _ = raw.send_bytes(&vec![b'A'; 10_000]);
    let _ = raw.send_bytes(b"\n");
    raw.expect("ERR 413");
    raw.expect_closed();

    assert_never(&mut bob, "wants to chat", Duration::from_millis(300));

    // bob still works: a real session with carol.
    open_session(&mut carol, "carol", &mut bob, "bob");
    carol.send("are you ok after all that?");
    bob.expect_chat(None, "carol", "are you ok after all that?");
    bob.send("fine");
    carol.expect_chat(None, "bob", "fine");
}

// ---------------------------------------------------------------------------------------
// 10: history
// ---------------------------------------------------------------------------------------

#[test]
fn history_is_shown_when_the_session_opens_again_after_a_restart() {
    let server = Server::start();
    let lab = Lab::new(&server);
    let mut alice = lab.register("alice", &[]);
    let mut bob = lab.register("bob", &[]);
    open_session(&mut alice, "alice", &mut bob, "bob");

    // Eight lines, taking turns so the order is known.
    let said: Vec<(&str, String)> = (1..=8)
        .map(|i| {
            let who = if i % 2 == 1 { "alice" } else { "bob" };
            (who, format!("line {i} from {who}"))
        })
        .collect();
    for (who, text) in &said {
        if *who == "alice" {
            alice.send(text);
            bob.expect_chat(None, "alice", text);
        } else {
            bob.send(text);
            alice.expect_chat(None, "bob", text);
        }
    }
    for c in [&mut alice, &mut bob] {
        c.send("\\quit");
        c.expect("Bye.");
        assert!(c.wait_exit().success());
    }
    assert!(
        lab.data_dir("alice")
            .join("alice")
            .join("history.db")
            .is_file()
    );
    assert!(lab.data_dir("bob").join("bob").join("history.db").is_file());

    let mut alice = lab.login("alice", &[]);
    let mut bob = lab.login("bob", &[]);
    alice.send("\\connect bob");
    bob.expect("* alice wants to chat");
    bob.send("\\accept alice");
    for (c, peer) in [(&mut bob, "alice"), (&mut alice, "bob")] {
        c.expect(&format!("--- last 8 lines with {peer} ---\n"));
        for (who, text) in &said {
            let line = c.expect_line(&format!("history line {text:?}"), |_| true);
            assert!(
                is_chat_line(&line, None, who, text),
                "history line should be {who}: {text}, got {line:?}"
            );
        }
        let end = c.expect_line("end of history", |_| true);
        assert_eq!(end, "---");
        let open = c.expect_line("session open", |_| true);
        assert_eq!(
            open,
            format!("* session with {peer} open; what you type goes to {peer}")
        );
    }

    // \history shows at most n, the most recent ones, oldest first.
    alice.send("\\history bob 5");
    alice.expect("--- 5 lines with bob ---\n");
    for (who, text) in &said[3..] {
        let line = alice.expect_line(&format!("\\history line {text:?}"), |_| true);
        assert!(
            is_chat_line(&line, None, who, text),
            "got {line:?}, want {who}: {text}"
        );
    }
    // Lines of the new session are added.
    alice.send("line 9 from alice");
    bob.expect_chat(None, "alice", "line 9 from alice");
    bob.send("\\history alice 2");
    bob.expect("--- 2 lines with alice ---\n");
    let l1 = bob.expect_line("history", |_| true);
    let l2 = bob.expect_line("history", |_| true);
    assert!(is_chat_line(&l1, None, "bob", "line 8 from bob"), "{l1:?}");
    assert!(
        is_chat_line(&l2, None, "alice", "line 9 from alice"),
        "{l2:?}"
    );
    // Nobody else's lines.
    alice.send("\\history carol");
    alice.expect("--- 0 lines with carol ---\n");
}

// ---------------------------------------------------------------------------------------
// 11: a flooding peer
// ---------------------------------------------------------------------------------------

/// mallory (raw) gets a session with bob; returns her open peer connection.
fn raw_session_with_bob(mallory: &mut Wire, bob: &mut Client) -> Wire {
    let (id, bob_addr, ticket) = grant(mallory, "bob");
    let mut raw = noise_peer(bob_addr, &ticket, "mallory <-> bob");
    raw.send(&format!("HELLO peerchat 1 mallory {id} {ticket}"));
    bob.expect("* mallory wants to chat");
    bob.send("\\accept mallory");
    bob.expect("* session with mallory open");
    raw.expect("ACCEPT");
    raw
}

#[test]
fn a_flooding_peer_is_cut_off_and_other_sessions_go_on() {
    const FLOOD: usize = 50_000;
    let server = Server::start();
    let lab = Lab::new(&server);
    let mut bob = lab.register("bob", &[]);
    let mut carol = lab.register("carol", &[]);
    let mut mallory = Wire::registered(server.addr, "mallory", PW, free_port());
    let mut raw = raw_session_with_bob(&mut mallory, &mut bob);
    raw.send(&format!("MSG {} one honest line first", now_ms()));
    bob.expect_chat(None, "mallory", "one honest line first");
    open_session(&mut carol, "carol", &mut bob, "bob");

    // mallory writes as fast as the socket takes it, on a thread of her own.
    let mut out = raw.clone_stream();
    let flooder = thread::spawn(move || {
        let mut sent = 0usize;
        let mut batch = String::new();
        for i in 0..FLOOD {
            batch.push_str(&format!("MSG {} flood {i}\n", now_ms()));
            if batch.len() > 64 * 1024 || i + 1 == FLOOD {
                if out.write_all(batch.as_bytes()).is_err() {
                    return sent;
                }
                sent = i + 1;
                batch.clear();
            }
        }
        sent
    });

    // Meanwhile carol and bob talk.
    for i in 0..5 {
        carol.send(&format!("carol during the flood {i}"));
        bob.send(&format!("bob during the flood {i}"));
    }
    for i in 0..5 {
        bob.expect_chat(None, "carol", &format!("carol during the flood {i}"));
        carol.expect_chat(None, "bob", &format!("bob during the flood {i}"));
    }

    // mallory is told and cut off.
    let deadline = Instant::now() + WAIT;
    let got_flood = loop {
        match raw.read_within(deadline.saturating_duration_since(Instant::now())) {
            Got::Line(line) if line.starts_with("ERR 429 FLOOD") => break true,
            Got::Line(line) if line == "PING" || line == "PONG" => {}
            Got::Line(line) => raw.fail(&format!("unexpected line from bob: {line:?}")),
            Got::Closed | Got::TimedOut => break false,
        }
    };
    assert!(got_flood, "mallory never got ERR 429 FLOOD");
    raw.expect_closed();
    // The kernel may have buffered the whole flood before bob gave up, so the flooder may
    // have written everything; what matters is that bob closed the socket: from now on
    // writes fail (reset) instead of being taken or blocking.
    let _sent = flooder.join().unwrap();
    let mut out = raw.clone_stream();
    out.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    let deadline = Instant::now() + WAIT;
    let chunk = format!("MSG {} more\n", now_ms()).repeat(2000);
    let write_error = loop {
        match out.write_all(chunk.as_bytes()) {
            Err(e) => break e,
            Ok(()) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            Ok(()) => panic!("bob still takes mallory's lines after ERR 429"),
        }
    };
    assert!(
        matches!(
            write_error.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
        ),
        "writing after ERR 429 should fail with a reset, got {write_error:?} \
         (a timeout means bob neither reads nor closed the socket)"
    );
    // Anywhere in bob's output: it may come before or after carol's lines.
    wait_for_anywhere(&mut bob, "* lost the connection to mallory: ");

    // bob showed at most the burst of mallory's lines, and carol's session is untouched.
    let shown = bob.output().matches("mallory: flood ").count();
    // The burst, plus what the refill rate allows while the flood was being read.
    let burst = peerchat::protocol::limits::FLOOD_BURST as usize;
    let rate = peerchat::protocol::limits::FLOOD_RATE as usize;
    assert!(
        (burst - 100..=burst + 3 * rate).contains(&shown),
        "bob showed {shown} flood lines; the burst is {burst}, the rate {rate}/s"
    );
    bob.send("\\sessions");
    bob.expect("Sessions (1):\n  carol (active, direct)\n");
    carol.send("after the flood");
    bob.expect_chat(None, "carol", "after the flood");
    bob.send("yes, after");
    carol.expect_chat(None, "bob", "yes, after");
}

/// §10: inside an open session, a line that does not parse gets an ERR and the session
/// goes on; so does a line that is not UTF-8; terminal escapes are not printed raw.
#[test]
fn a_misbehaving_peer_inside_a_session_gets_errors_and_the_session_goes_on() {
    let server = Server::start();
    let lab = Lab::new(&server);
    let mut bob = lab.register("bob", &[]);
    let mut mallory = Wire::registered(server.addr, "mallory", PW, free_port());
    let mut raw = raw_session_with_bob(&mut mallory, &mut bob);

    raw.send("FROB the session");
    raw.expect_one_of(&["ERR 400", "ERR 405"]);
    raw.send("MSG notatime hello");
    raw.expect_one_of(&["ERR 400", "ERR 405"]);
    raw.send_bytes(b"MSG 1 \xff\xfe\n").unwrap();
    raw.expect("ERR 414 BAD_ENCODING");
    raw.send("PING");
    raw.expect_exact("PONG");

    raw.send(&format!(
        "MSG {} still here \x1b[2J\x1b]0;owned\x07 after",
        now_ms()
    ));
    let line = bob.expect_line("mallory's line with escapes", |l| {
        l.contains("mallory: still here") && l.ends_with(" after")
    });
    assert!(
        !line.contains('\x1b') && !line.contains('\x07'),
        "control characters reached bob's terminal: {line:?}"
    );
    bob.send("got it");
    let reply = raw.expect("MSG");
    assert!(reply.ends_with(" got it"), "{reply:?}");

    raw.send("CLOSE closed");
    bob.expect("* mallory closed the session");
    raw.expect_closed();
}

// ---------------------------------------------------------------------------------------
// 12: who you cannot connect to
// ---------------------------------------------------------------------------------------

#[test]
fn connect_to_an_offline_user_or_to_yourself_is_an_error() {
    let server = Server::start();
    let lab = Lab::new(&server);
    let mut alice = lab.register("alice", &[]);
    Wire::registered(server.addr, "dave", PW, free_port()).quit();

    alice.send("\\connect dave");
    alice.expect("error: dave is not online");
    alice.send("\\connect nobody");
    alice.expect("error: nobody is not online");
    alice.send("\\connect alice");
    alice.expect("error: you cannot chat with yourself");
    alice.send("\\connect ALICE");
    alice.expect("error: you cannot chat with yourself");
    alice.send("\\connect");
    alice.expect("error: usage: \\connect <user>");

    alice.send("\\sessions");
    alice.expect("No sessions. \\connect <user> to start one.\n");
    assert!(
        db_sessions(&server.db_path()).is_empty(),
        "failed connects were recorded: {:#?}",
        db_sessions(&server.db_path())
    );
    assert_never(&mut alice, "session with", Duration::from_millis(200));

    // The server says the same to a raw client.
    let mut w = Wire::registered(server.addr, "erin", PW, free_port());
    w.send("CONNECT dave");
    w.expect("ERR 404 NOT_ONLINE");
    w.send("CONNECT Erin");
    w.expect("ERR 400 BAD_REQUEST");
    w.send("SESSION_OPEN 12345");
    w.expect("ERR 432 NO_SESSION");
}
