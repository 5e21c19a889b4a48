//! Server scale (issue 14): presence announced in batches instead of one event per login
//! per online user, paged `LIST`, and resumable logins that skip bcrypt. Against the real
//! server binary (and the real client for `\reconnect`); the 10,000-client figures are
//! in the bench (`make bench ARGS=scale`), not here.

mod common;

use std::thread;

use common::*;

/// The log line the server writes once per password it actually checks.
fn verify_line(name: &str) -> String {
    format!("bcrypt verify for {name}")
}

/// A server whose log has the per-check debug lines whatever RUST_LOG says outside.
fn counting_server() -> Server {
    Server::builder().env("RUST_LOG", "debug").start()
}

/// Logs in and asks for a token; returns the connection and the token.
fn with_token(server: &Server, name: &str, port: u16) -> (Wire, String) {
    let mut w = Wire::registered(server.addr, name, PW, port);
    w.send("TOKEN");
    let reply = w.expect("OK TOKEN");
    let words: Vec<&str> = reply.split(' ').collect();
    assert_eq!(words.len(), 4, "{reply:?}");
    assert_eq!(words[3], "604800", "{reply:?}");
    assert_eq!(words[2].len(), 64, "{reply:?}");
    (w, words[2].to_string())
}

/// `RESUME` on a fresh connection; returns it after the reply to the answer.
fn resume(server: &Server, name: &str, token: &str) -> (Wire, String) {
    let mut w = Wire::connect(server.addr).named(&format!("{name} resuming"));
    w.hello();
    w.send(&format!("RESUME {name} {token}"));
    let reply = w.next_reply();
    (w, reply)
}

#[test]
fn a_burst_of_logins_reaches_others_in_a_few_lines_naming_everyone_once() {
    let server = Server::start();
    let mut alice = Wire::registered(server.addr, "alice", PW, 40001);
    alice.ping();
    // 20 users log in at once, each from its own loopback address.
    let threads: Vec<_> = (0..20)
        .map(|i| {
            let addr = server.addr;
            thread::spawn(move || {
                let name = format!("user{i:02}");
                let mut w = Wire::connect_from(addr, loopback(i)).named(&name);
                w.register(&name, PW, 41000 + i as u16);
                w
            })
        })
        .collect();
    let _users: Vec<Wire> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let mut named = Vec::new();
    let mut lines = 0;
    while named.len() < 20 {
        let line = alice.expect_event("EVENT ONLINE");
        lines += 1;
        named.extend(line.split(' ').skip(2).map(str::to_string));
    }
    let mut want: Vec<String> = (0..20).map(|i| format!("user{i:02}")).collect();
    want.sort();
    named.sort();
    assert_eq!(named, want, "every user named exactly once");
    // One line per 0.5 s interval, not one per login: 20 logins that take a fraction of
    // a second arrive in far fewer than 20 lines.
    assert!(lines < 10, "{lines} EVENT ONLINE lines for 20 logins");
    // Each line is sorted by name.
    assert_eq!(alice.list().len(), 21);
}

#[test]
fn resume_logs_in_without_bcrypt_and_takes_over_a_stale_connection() {
    let server = counting_server();
    let (mut old, token) = with_token(&server, "alice", 40001);
    let mut bob = Wire::registered(server.addr, "bob", PW, 40002);
    bob.ping();
    let checks = server.log_count(&verify_line("alice"));

    // Another account's name with alice's token, and a malformed token: refused, and the
    // server asks NEW again.
    let (mut w, reply) = resume(&server, "bob", &token);
    assert!(reply.starts_with("ERR 480 BAD_TOKEN"), "{reply:?}");
    w.expect("ASK NEW");
    w.send("RESUME alice nothex");
    w.expect("ERR 480 BAD_TOKEN");
    w.expect("ASK NEW");
    drop(w);

    // The real token: logged in, no password checked; the old connection (still open,
    // as a half-open one would be) is closed and the new one holds the login.
    let (mut new, reply) = resume(&server, "alice", &token);
    assert_eq!(reply, "OK LOGGED_IN alice");
    new.answer_port("alice", 40011);
    old.expect_closed();
    assert_eq!(server.log_count(&verify_line("alice")), checks);
    new.send("INFO alice");
    new.expect_exact("OK INFO alice 127.0.0.1:40011 -");
    bob.wait_for_list(&["alice", "bob"]);
    // bob heard of alice's new login, not of a departure left standing.
    bob.expect_event("EVENT ONLINE alice");
    // The token is a bearer secret: it never reaches the log.
    assert_eq!(server.log_count(&token), 0);
}

#[test]
fn tokens_survive_a_restart_and_quit_revokes_them() {
    let mut server = Server::start();
    let (first, token) = with_token(&server, "alice", 40001);
    drop(first);
    server.kill();
    let server = server.restart();
    let (mut w, reply) = resume(&server, "alice", &token);
    assert_eq!(reply, "OK LOGGED_IN alice");
    w.answer_port("alice", 40001);
    // A second token on this connection; QUIT revokes both.
    w.send("TOKEN");
    let second = w.expect("OK TOKEN").split(' ').nth(2).unwrap().to_string();
    w.quit();
    for t in [&token, &second] {
        let (_, reply) = resume(&server, "alice", t);
        assert!(reply.starts_with("ERR 480 BAD_TOKEN"), "{reply:?}");
    }
}

#[test]
fn wrong_tokens_count_as_failures_and_a_block_holds_against_a_valid_one() {
    let server = Server::start();
    let (first, token) = with_token(&server, "alice", 40001);
    drop(first);
    let fake = "ab".repeat(32);
    let mut w = Wire::connect(server.addr).named("guesser");
    w.hello();
    for _ in 0..2 {
        w.send(&format!("RESUME alice {fake}"));
        w.expect("ERR 480 BAD_TOKEN");
        w.expect("ASK NEW");
    }
    w.send(&format!("RESUME alice {fake}"));
    w.expect("ERR 403 BLOCKED");
    w.expect_closed();
    // Blocked from this address: even the real token is refused now.
    let (mut w, reply) = resume(&server, "alice", &token);
    assert!(reply.starts_with("ERR 403 BLOCKED"), "{reply:?}");
    w.expect_closed();
}

#[test]
fn the_client_reconnects_after_a_restart_with_its_token() {
    let mut server = counting_server();
    let lab = Lab::new(&server);
    let mut alice = lab.register("alice", &[]);
    alice.send("\\list");
    alice.expect("Online users (1):\n  #1 alice (you)\n");
    server.kill();
    alice.expect("* lost the connection to the server");
    let server2 = server.restart_same_addr();
    alice.send("\\reconnect");
    alice.expect("* reconnected to the server\n");
    alice.send("\\list");
    alice.expect("Online users (1):\n  #1 alice (you)\n");
    // The new server run checked no password: the token did it.
    assert_eq!(server2.log_count(&verify_line("alice")), 0);
    assert_eq!(server2.log_count("logged in alice with a token"), 1);
}

#[test]
fn with_auto_reconnect_the_client_comes_back_by_itself_after_a_restart() {
    let mut server = counting_server();
    let lab = Lab::new(&server);
    let mut alice = lab.register("alice", &["--auto-reconnect"]);
    let mut bob = lab.register("bob", &[]);
    alice.send("\\list");
    alice.expect("Online users (2):\n  #1 alice (you)\n  #2 bob\n");
    server.kill();
    alice.expect("* lost the connection to the server");
    alice.expect("* reconnecting by itself in a moment");
    bob.expect("* lost the connection to the server");
    let server2 = server.restart_same_addr();
    // Nobody types anything: alice is back, bob (without the flag) is not.
    alice.expect("* reconnected to the server\n");
    alice.send("\\list");
    alice.expect("Online users (1):\n  #1 alice (you)\n");
    assert_eq!(server2.log_count("logged in alice with a token"), 1);
    assert_eq!(server2.log_count(&verify_line("alice")), 0);
}
