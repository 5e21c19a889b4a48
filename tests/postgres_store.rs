//! Two real servers on one real PostgreSQL (issue 14, `--db postgres://...`): accounts,
//! blocks and the session and transfer logs live in the shared database, so a name
//! registered on one server is taken on the other, racing registrations over both
//! make one account, failures on one server block on the other, and each server's log
//! is visible from both. And the store itself answers every call the same on SQLite and
//! on PostgreSQL (the same statements run on both).
//!
//! PostgreSQL comes from Debian's packages (`.ci/run` installs them); the harness starts
//! it in a temporary folder (`common::Postgres`). Without it each test prints a skip
//! message and passes.

mod common;

use std::process::Command;
use std::thread;
use std::time::Duration;

use common::*;
use peerchat::protocol::limits::MAX_TOKENS_PER_USER;
use peerchat::server::store::{DbLocation, Store, TransferRecord};

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

/// Every store call the server makes, on `store`, with what each answered (no times).
fn exercise(store: &Store) -> Vec<String> {
    let mut out = Vec::new();
    let mut note = |what: &str, value: String| out.push(format!("{what}: {value}"));
    // Accounts, unique in any case.
    note(
        "create",
        format!("{:?}", store.create_user("Alice", "h1").unwrap()),
    );
    note(
        "again",
        format!("{:?}", store.create_user("ALICE", "h2").unwrap()),
    );
    note(
        "exists",
        format!("{:?}", store.user_exists("alice").unwrap()),
    );
    store.set_password_hash("aLiCe", "h3").unwrap();
    let account = store.account("alice").unwrap().unwrap();
    note(
        "account",
        format!("{} {}", account.username, account.pw_hash),
    );
    note(
        "none",
        format!("{}", store.account("bob").unwrap().is_none()),
    );
    // Failures and blocks; a block never shrinks.
    let minute = Duration::from_secs(60);
    store.save_login_failures("al", "1.2.3.4", 2, None).unwrap();
    store
        .save_login_failures("al", "5.6.7.8", 0, Some(minute))
        .unwrap();
    store.save_login_failures("al", "5.6.7.8", 1, None).unwrap();
    let (failures, left) = store.login_failure("al", "5.6.7.8").unwrap().unwrap();
    note("pair", format!("{failures} {}", left > minute / 2));
    store.save_login_failures("bo", "1.2.3.4", 1, None).unwrap();
    store.clear_failures("bo", "1.2.3.4").unwrap();
    let mut all: Vec<_> = store
        .login_failures()
        .unwrap()
        .into_iter()
        .map(|(n, ip, f, left)| format!("{n} {ip} {f} {}", left > Duration::ZERO))
        .collect();
    all.sort();
    note("failures", all.join(", "));
    // Tokens: owner, expiry, revocation, the cap keeping the newest.
    let hour = Duration::from_secs(3600);
    store.create_user("bob", "h").unwrap();
    store.add_token("alice", "d1", hour).unwrap();
    note(
        "token",
        format!("{:?}", store.use_token("alice", "d1", hour).unwrap()),
    );
    note(
        "other",
        format!("{:?}", store.use_token("bob", "d1", hour).unwrap()),
    );
    store.add_token("bob", "old", Duration::ZERO).unwrap();
    note(
        "expired",
        format!("{:?}", store.use_token("bob", "old", hour).unwrap()),
    );
    store.revoke_tokens(&["d1".to_string()]).unwrap();
    note(
        "revoked",
        format!("{:?}", store.use_token("alice", "d1", hour).unwrap()),
    );
    for i in 0..=MAX_TOKENS_PER_USER {
        store.add_token("alice", &format!("n{i}"), hour).unwrap();
    }
    note(
        "oldest",
        format!("{:?}", store.use_token("alice", "n0", hour).unwrap()),
    );
    note(
        "newer",
        format!("{:?}", store.use_token("alice", "n1", hour).unwrap()),
    );
    // Identity keys.
    note(
        "no key",
        format!("{:?}", store.identity_key("alice").unwrap()),
    );
    note(
        "set",
        format!("{}", store.set_identity_key("ALICE", &[7; 32]).unwrap()),
    );
    note("key", format!("{:?}", store.identity_key("alice").unwrap()));
    note(
        "nobody",
        format!("{}", store.set_identity_key("zed", &[1; 32]).unwrap()),
    );
    // The session log.
    let s1 = store.create_session("alice", "bob").unwrap();
    let s2 = store.create_session("carol", "dave").unwrap();
    note(
        "open",
        format!("{:?}", store.open_sessions_of("BOB").unwrap()),
    );
    store.mark_accepted(s1).unwrap();
    note(
        "end",
        format!("{}", store.end_session(s1, "closed").unwrap()),
    );
    note(
        "end again",
        format!("{}", store.end_session(s1, "timeout").unwrap()),
    );
    store.set_session_path(s2, "relay").unwrap();
    note(
        "paths",
        format!(
            "{} {}",
            store.session_path(s1).unwrap(),
            store.session_path(s2).unwrap()
        ),
    );
    note(
        "unknown",
        format!("{}", store.mark_open_sessions_unknown().unwrap()),
    );
    for r in store.session_log(10).unwrap() {
        note(
            "session",
            format!(
                "{} {} {} {} {:?} {} {:?} {}",
                r.id,
                r.requester,
                r.target,
                r.accepted_at_ms.is_some(),
                r.end_reason,
                r.unknown_since_ms.is_some(),
                r.path,
                r.has_participant("Alice")
            ),
        );
    }
    // The transfer log: each side once, the receiver's report wins.
    let t = store.create_transfer("alice", "bob").unwrap();
    let report = |result: &str, role: &str| TransferRecord {
        result: result.into(),
        name: "f\u{1b}[2J.bin".into(),
        size: 100,
        hash: None,
        duration_ms: 5,
        role: Some(role.into()),
        moved: 100,
        resumed_from: 0,
    };
    let push = Some("push");
    note(
        "sent",
        format!(
            "{}",
            store
                .report_transfer(t, true, false, push, &report("ok", "send"))
                .unwrap()
        ),
    );
    note(
        "twice",
        format!(
            "{}",
            store
                .report_transfer(t, true, false, push, &report("failed", "send"))
                .unwrap()
        ),
    );
    note(
        "received",
        format!(
            "{}",
            store
                .report_transfer(t, false, true, push, &report("corrupt", "receive"))
                .unwrap()
        ),
    );
    store.set_transfer_path(t, "relay").unwrap();
    note(
        "participants",
        format!("{:?}", store.transfer_participants(t).unwrap()),
    );
    for row in store.transfer_log(10).unwrap() {
        note(
            "transfer",
            format!("{row:?}").replace(&row.started_at_ms.to_string(), "T"),
        );
    }
    out
}

#[test]
fn the_store_answers_the_same_on_sqlite_and_postgresql() {
    let Some(pg) = postgres_or_skip("the_store_answers_the_same_on_sqlite_and_postgresql") else {
        return;
    };
    let db = PgDatabase::create(&pg);
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Store::open(&dir.path().join("server.db")).unwrap();
    let postgres = Store::open_at(&DbLocation::Postgres(db.url())).unwrap();
    let on_sqlite = exercise(&sqlite);
    let on_postgres = exercise(&postgres);
    for (a, b) in on_sqlite.iter().zip(&on_postgres) {
        assert_eq!(a, b, "SQLite and PostgreSQL differ");
    }
    assert_eq!(on_sqlite.len(), on_postgres.len());
    // What the answers are, so that two equally wrong backends fail too.
    let text = on_postgres.join("\n");
    for want in [
        "again: Taken",
        "account: Alice h3",
        "pair: 1 true",
        "failures: al 1.2.3.4 2 false, al 5.6.7.8 1 true",
        "token: Some(\"Alice\")",
        "other: None",
        "oldest: None",
        "newer: Some(\"Alice\")",
        "nobody: false",
        "end again: false",
        "paths: direct relay",
        "unknown: 1",
        "twice: false",
        "from_receiver: true",
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }
    postgres.close().unwrap();
    sqlite.close().unwrap();
}
