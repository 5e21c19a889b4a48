//! Two real servers on one real PostgreSQL (issue 14, `--db postgres://...`): accounts,
//! blocks and the session and transfer logs live in the shared database, so a name
//! registered on one server is taken on the other, racing registrations over both
//! make one account, failures on one server block on the other, and each server's log
//! is visible from both.
//!
//! PostgreSQL comes from Debian's packages (`.ci/run` installs them); the harness starts
//! it in a temporary folder (`common::Postgres`). Without it each test prints a skip
//! message and passes.

mod common;

use std::process::Command;
use std::thread;

use common::*;

/// Two servers sharing one new database; the database lives as long as the result.
fn two_servers(test: &str) -> Option<(PgDatabase, Server, Server)> {
    let pg = postgres_or_skip(test)?;
    let db = PgDatabase::create(&pg);
    let url = db.url();
    let a = Server::builder().args(&["--db", &url]).start();
    let b = Server::builder().args(&["--db", &url]).start();
    Some((db, a, b))
}

#[test]
fn a_name_registered_on_one_server_is_taken_on_the_other() {
    let Some((db, a, b)) = two_servers("a_name_registered_on_one_server_is_taken_on_the_other")
    else {
        return;
    };
    let mut alice = Wire::registered(a.addr, "Alice", PW, 40001);
    // Any case: the names are unique regardless of case on PostgreSQL too.
    let mut w = Wire::connect(b.addr).named("second alice");
    w.hello();
    w.send("Y");
    w.expect("ASK USERNAME");
    w.send("aLICE");
    w.expect("ERR 409 NAME_TAKEN");
    w.expect("ASK USERNAME");
    alice.quit();
    // The account works on B: same name, same password.
    let mut there = Wire::logged_in(b.addr, "Alice", PW, 40002);
    there.quit();
    let users = pg_rows(&db.url(), "SELECT username FROM users");
    assert_eq!(users, vec![vec![Some("Alice".to_string())]]);
    // Both servers answer `peerchat-server sessions --db URL`, which reads the same log.
    let out = Command::new(env!("CARGO_BIN_EXE_peerchat-server"))
        .args(["sessions", "--db", &db.url()])
        .output()
        .expect("run peerchat-server sessions");
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn fifty_registrations_of_one_name_over_two_servers_make_one_account() {
    const N: usize = 50;
    let Some((db, a, b)) =
        two_servers("fifty_registrations_of_one_name_over_two_servers_make_one_account")
    else {
        return;
    };
    let asked = Gate::new(N);
    let named = Gate::new(N);
    let threads: Vec<_> = (0..N)
        .map(|i| {
            let addr = if i % 2 == 0 { a.addr } else { b.addr };
            let (asked, named) = (asked.clone(), named.clone());
            thread::spawn(move || {
                // One address each: one address may not check 50 names at once.
                let mut w = Wire::connect_from(addr, loopback(i)).named(&format!("racer {i}"));
                w.hello();
                w.send("Y");
                w.expect("ASK USERNAME");
                asked.wait();
                w.send("racer");
                let reply = w.expect_one_of(&["ASK PASSWORD", "ERR 409 NAME_TAKEN"]);
                named.wait();
                if reply.starts_with("ERR") {
                    return false;
                }
                w.send(&format!("password {i}"));
                // The unique index decides, whichever server wrote first.
                let reply = w.expect_one_of(&["OK REGISTERED racer", "ERR 409 NAME_TAKEN"]);
                if reply.starts_with("ERR") {
                    return false;
                }
                w.answer_port("racer", 40000 + i as u16);
                true
            })
        })
        .collect();
    let won = threads
        .into_iter()
        .map(|t| t.join().expect("racer thread"))
        .filter(|&won| won)
        .count();
    assert_eq!(
        won, 1,
        "exactly one of {N} racers on two servers gets the name"
    );
    let users = pg_rows(&db.url(), "SELECT username FROM users");
    assert_eq!(users.len(), 1, "{users:?}");
}

/// `wrong` passwords for alice on `server` from OTHER_IP on one connection; the last
/// reply is returned (the earlier ones must be plain failures).
fn fail_logins(server: &Server, wrong: usize) -> String {
    let mut w = Wire::connect_from(server.addr, OTHER_IP).named("attacker");
    w.start_login();
    for i in 1..wrong {
        w.answer_login("alice", &format!("wrong {i}"));
        w.expect("ERR 401 AUTH_FAILED");
        w.expect("ASK USERNAME");
    }
    w.answer_login("alice", "wrong last");
    w.next_reply()
}

/// The right password for alice on `server` from OTHER_IP: the reply.
fn right_login(server: &Server) -> String {
    let mut w = Wire::connect_from(server.addr, OTHER_IP).named("alice from OTHER_IP");
    w.start_login();
    w.answer_login("alice", PW);
    w.next_reply()
}

#[test]
fn failures_on_one_server_count_and_block_on_the_other() {
    let Some((_db, a, b)) = two_servers("failures_on_one_server_count_and_block_on_the_other")
    else {
        return;
    };
    Wire::registered(a.addr, "alice", PW, 40001).quit();
    // Three failures on A block alice from OTHER_IP on B, right password or not.
    let last = fail_logins(&a, 3);
    assert!(line_matches(&last, "ERR 403 BLOCKED"), "{last}");
    let on_b = right_login(&b);
    assert!(
        line_matches(&on_b, "ERR 403 BLOCKED"),
        "B let a blocked pair in: {on_b}"
    );
    // Another address is not blocked, on either server.
    Wire::logged_in(b.addr, "alice", PW, 40002).quit();
}

#[test]
fn failures_spread_over_two_servers_add_up() {
    let Some((_db, a, b)) = two_servers("failures_spread_over_two_servers_add_up") else {
        return;
    };
    Wire::registered(a.addr, "alice", PW, 40001).quit();
    // One failure on A, then two on B: the third overall blocks.
    let first = fail_logins(&a, 1);
    assert!(line_matches(&first, "ERR 401 AUTH_FAILED"), "{first}");
    let last = fail_logins(&b, 2);
    assert!(
        line_matches(&last, "ERR 403 BLOCKED"),
        "B did not count A's failure: {last}"
    );
    let on_a = right_login(&a);
    assert!(line_matches(&on_a, "ERR 403 BLOCKED"), "{on_a}");
}

#[test]
fn session_and_transfer_logs_are_visible_from_both_servers() {
    let Some((db, a, b)) = two_servers("session_and_transfer_logs_are_visible_from_both_servers")
    else {
        return;
    };
    let mut alice = Wire::registered(a.addr, "alice", PW, 40001);
    let _bob = Wire::registered(a.addr, "bob", PW, 40002);
    let mut carol = Wire::registered(b.addr, "carol", PW, 40003);
    let _dave = Wire::registered(b.addr, "dave", PW, 40004);
    alice.send("CONNECT bob");
    let on_a = alice.expect("OK SESSION");
    carol.send("TRANSFER dave");
    let on_b = carol.expect("OK TRANSFER");
    let id = |line: &str| line.split(' ').nth(2).unwrap().to_string();
    // Each server's grant is in the one log: `sessions --db URL` prints both.
    let out = Command::new(env!("CARGO_BIN_EXE_peerchat-server"))
        .args(["sessions", "--db", &db.url()])
        .output()
        .expect("run peerchat-server sessions");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("alice") && text.contains("bob"),
        "A's session is missing:\n{text}"
    );
    assert!(
        text.contains("carol") && text.contains("dave"),
        "B's transfer is missing:\n{text}"
    );
    let sessions = pg_rows(&db.url(), "SELECT id, requester FROM sessions");
    assert_eq!(sessions, vec![vec![Some(id(&on_a)), Some("alice".into())]]);
    let transfers = pg_rows(&db.url(), "SELECT id, requester FROM transfers");
    assert_eq!(transfers, vec![vec![Some(id(&on_b)), Some("carol".into())]]);
}
