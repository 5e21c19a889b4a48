//! Accounts: registration, login, username and password rules, failed-login blocking,
//! one live login per account, and racing registrations. Raw sockets against the real
//! server binary (see protocol.md §3).

mod common;

use std::thread;
use std::time::Duration;

use common::*;

#[test]
fn register_follows_the_protocol_example() {
    let mut server = Server::start();
    let mut w = Wire::connect(server.addr).named("alice");
    w.expect_exact("HELLO peerchat 1");
    w.expect_exact("ASK NEW Are you a new client? (Y/N)");
    w.send("y");
    w.expect_exact("ASK USERNAME Choose a username");
    w.send("alice");
    w.expect_exact("ASK PASSWORD Choose a password");
    w.send("correct horse");
    w.expect_exact("OK REGISTERED alice");
    w.expect_exact("ASK PORT Listening port for peer connections");
    w.send("40001");
    w.expect_exact("OK WELCOME alice 127.0.0.1:40001");
    w.wait_for_list(&["alice"]);
    w.quit();

    assert!(server.stop().success());
    let users = db_users(&server.db_path());
    assert_eq!(users.len(), 1, "{users:?}");
    assert_stored_hash(&users, "alice", "correct horse");
}

#[test]
fn taken_name_is_refused_and_another_name_works_on_the_same_connection() {
    let server = Server::start();
    let mut alice = Wire::registered(server.addr, "alice", PW, 40001);

    let mut w = Wire::connect(server.addr).named("newcomer");
    w.hello();
    w.send("Y");
    w.expect("ASK USERNAME");
    // Taken, in any case: usernames are unique regardless of case.
    for name in ["alice", "Alice", "ALICE"] {
        w.send(name);
        w.expect("ERR 409 NAME_TAKEN");
        w.expect_exact("ASK USERNAME Choose a username");
    }
    w.send("alice2");
    w.expect("ASK PASSWORD");
    w.send(PW);
    w.expect_exact("OK REGISTERED alice2");
    w.answer_port("alice2", 40002);

    alice.wait_for_list(&["alice", "alice2"]);
}

#[test]
fn names_match_in_any_case_and_keep_their_spelling() {
    let server = Server::start();
    Wire::registered(server.addr, "Bob", PW, 40001).quit();

    // Log in as "bob": the account is found, and shown as it was registered.
    let mut w = Wire::connect(server.addr).named("bob");
    w.start_login();
    w.answer_login("bob", PW);
    w.expect_exact("OK LOGGED_IN Bob");
    w.expect("ASK PORT");
    w.send("40001");
    w.expect_exact("OK WELCOME Bob 127.0.0.1:40001");
    w.wait_for_list(&["Bob"]);
}

#[test]
fn returning_user_logs_in_after_quitting() {
    let server = Server::start();
    let mut alice = Wire::registered(server.addr, "alice", PW, 40001);
    alice.quit();

    let mut w = Wire::connect(server.addr).named("alice again");
    w.hello();
    w.send("N");
    w.expect_exact("ASK USERNAME Username");
    w.send("alice");
    w.expect_exact("ASK PASSWORD Password");
    w.send(PW);
    w.expect_exact("OK LOGGED_IN alice");
    w.expect_exact("ASK PORT Listening port for peer connections");
    w.send("40002");
    // The new port is what others see now.
    w.expect_exact("OK WELCOME alice 127.0.0.1:40002");
    w.send("INFO alice");
    w.expect_exact("OK INFO alice 127.0.0.1:40002 -");
}

#[test]
fn bad_usernames_are_refused_with_411() {
    let server = Server::start();
    let mut w = Wire::connect(server.addr).named("newcomer");
    w.hello();
    w.send("Y");
    w.expect("ASK USERNAME");
    let too_long = format!("a{}", "b".repeat(32)); // 33 characters
    for bad in [
        "ab",
        "1abc",
        "a b",
        "_abc",
        "-abc",
        "al!ce",
        "älice",
        too_long.as_str(),
    ] {
        w.send(bad);
        w.expect("ERR 411 BAD_USERNAME");
        w.expect("ASK USERNAME");
    }
    // The limits themselves are allowed: 32 characters, with digits, `_` and `-`.
    let longest = format!("a{}", "b_-9".repeat(7) + "bcd"); // 1 + 28 + 3 = 32
    assert_eq!(longest.len(), 32);
    w.send(&longest);
    w.expect("ASK PASSWORD");
    w.send(PW);
    w.expect_exact(&format!("OK REGISTERED {longest}"));

    let mut w = Wire::connect(server.addr).named("shortest");
    w.register("abc", PW, 40002);
}

#[test]
fn bad_passwords_are_refused_with_412() {
    let server = Server::start();
    let mut w = Wire::connect(server.addr).named("alice");
    w.hello();
    w.send("Y");
    w.expect("ASK USERNAME");
    w.send("alice");
    w.expect("ASK PASSWORD");
    let too_long = "p".repeat(73);
    for bad in ["abc", "a", too_long.as_str()] {
        w.send(bad);
        w.expect("ERR 412 BAD_PASSWORD");
        w.expect("ASK PASSWORD");
    }
    // 4 bytes is the shortest allowed password.
    w.send("abcd");
    w.expect_exact("OK REGISTERED alice");
    w.answer_port("alice", 40001);
    w.quit();
    Wire::logged_in(server.addr, "alice", "abcd", 40001);

    // 72 bytes is the longest allowed, and every byte counts.
    let longest = "q".repeat(72);
    Wire::registered(server.addr, "bob", &longest, 40002).quit();
    let mut w = Wire::connect(server.addr).named("bob");
    w.start_login();
    w.answer_login("bob", &"q".repeat(71));
    w.expect("ERR 401 AUTH_FAILED");
    w.expect("ASK USERNAME");
    w.answer_login("bob", &longest);
    w.expect_exact("OK LOGGED_IN bob");
}

#[test]
fn wrong_password_reply_is_the_same_for_unknown_users() {
    let server = Server::start();
    Wire::registered(server.addr, "alice", PW, 40001).quit();

    let mut known = Wire::connect(server.addr).named("known name");
    known.start_login();
    known.answer_login("alice", "wrong password");
    let known_reply = known.expect("ERR 401 AUTH_FAILED");
    known.expect("ASK USERNAME");

    let mut unknown = Wire::connect(server.addr).named("unknown name");
    unknown.start_login();
    unknown.answer_login("nobody", "wrong password");
    let unknown_reply = unknown.expect("ERR 401 AUTH_FAILED");
    unknown.expect("ASK USERNAME");

    assert_eq!(
        known_reply, unknown_reply,
        "the reply must not tell whether the name exists"
    );
}

/// Three wrong passwords for alice from 127.0.0.1.
fn block_alice(server: &Server) {
    let mut w = Wire::connect(server.addr).named("attacker");
    w.start_login();
    for wrong in ["wrong1", "wrong2"] {
        w.answer_login("alice", wrong);
        w.expect("ERR 401 AUTH_FAILED");
        w.expect("ASK USERNAME");
    }
    w.answer_login("alice", "wrong3");
    w.expect("ERR 403 BLOCKED");
    w.expect_closed();
}

/// A login of alice with the right password from 127.0.0.1 gets `403 BLOCKED`.
fn assert_alice_blocked(server: &Server) {
    let mut w = Wire::connect(server.addr).named("alice, blocked");
    w.start_login();
    w.answer_login("alice", PW);
    w.expect("ERR 403 BLOCKED");
    w.expect_closed();
}

#[test]
fn three_wrong_passwords_block_the_name_from_that_address() {
    let mut server = Server::start();
    Wire::registered(server.addr, "alice", PW, 40001).quit();
    block_alice(&server);

    // The right password right after, from the same address: still blocked.
    assert_alice_blocked(&server);

    // From another address alice can log in.
    let mut other = Wire::connect_from(server.addr, OTHER_IP).named("alice from 127.0.0.2");
    assert_eq!(
        other.login("alice", PW, 40002),
        "OK WELCOME alice 127.0.0.2:40002"
    );
    other.quit();

    // The block survives a restart on the same database.
    assert!(server.stop().success());
    let server = server.restart();
    assert_alice_blocked(&server);
    let mut other = Wire::connect_from(server.addr, OTHER_IP).named("alice from 127.0.0.2");
    other.login("alice", PW, 40002);
}

#[test]
fn block_expires_after_block_secs() {
    let server = Server::builder().args(&["--block-secs", "2"]).start();
    Wire::registered(server.addr, "alice", PW, 40001).quit();
    block_alice(&server);
    thread::sleep(Duration::from_secs(3));
    Wire::logged_in(server.addr, "alice", PW, 40001);
}

#[test]
fn three_failures_on_one_connection_close_it() {
    let server = Server::start();
    Wire::registered(server.addr, "alice", PW, 40001).quit();

    let mut w = Wire::connect(server.addr).named("guesser");
    w.start_login();
    for name in ["alice", "bob"] {
        w.answer_login(name, "wrong");
        w.expect("ERR 401 AUTH_FAILED");
        w.expect("ASK USERNAME");
    }
    w.answer_login("carol", "wrong");
    w.expect("ERR 401 AUTH_FAILED");
    w.expect_closed();

    // One failure for alice from this address does not block her.
    Wire::logged_in(server.addr, "alice", PW, 40001);
}

#[test]
fn a_successful_login_resets_the_failure_count() {
    let server = Server::start();
    Wire::registered(server.addr, "alice", PW, 40001).quit();
    // Two failures and a success, twice: without the reset the second round would block.
    for round in 0..2 {
        let mut w = Wire::connect(server.addr).named(&format!("alice round {round}"));
        w.start_login();
        for _ in 0..2 {
            w.answer_login("alice", "wrong");
            w.expect("ERR 401 AUTH_FAILED");
            w.expect("ASK USERNAME");
        }
        w.answer_login("alice", PW);
        w.expect_exact("OK LOGGED_IN alice");
        w.answer_port("alice", 40001);
        w.quit();
    }
}

#[test]
fn second_login_of_an_online_account_is_refused() {
    let server = Server::start();
    let mut observer = Wire::registered(server.addr, "observer", PW, 40000);
    let mut alice = Wire::registered(server.addr, "alice", PW, 40001);

    let mut second = Wire::connect(server.addr).named("second alice");
    second.start_login();
    // Three times, in any case: not counted as failures, so the connection stays open.
    for name in ["alice", "ALICE", "alice"] {
        second.answer_login(name, PW);
        second.expect("ERR 410 ALREADY_ONLINE");
        second.expect("ASK USERNAME");
    }
    // The first session is untouched.
    alice.wait_for_list(&["alice", "observer"]);

    alice.quit();
    observer.wait_for_list(&["observer"]);
    // Now the same connection can log in.
    second.answer_login("alice", PW);
    second.expect_exact("OK LOGGED_IN alice");
    second.answer_port("alice", 40002);
    observer.wait_for_list(&["alice", "observer"]);
}

#[test]
fn fifty_clients_racing_for_one_name_yield_one_account() {
    const N: usize = 50;
    let mut server = Server::start();
    let asked = Gate::new(N);
    let named = Gate::new(N);
    let threads: Vec<_> = (0..N)
        .map(|i| {
            let (addr, asked, named) = (server.addr, asked.clone(), named.clone());
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
                    w.expect("ASK USERNAME");
                    return false;
                }
                w.send(&format!("password {i}"));
                let reply = w.expect_one_of(&["OK REGISTERED racer", "ERR 409 NAME_TAKEN"]);
                if reply.starts_with("ERR") {
                    // The second check, when the account is written.
                    w.expect("ASK USERNAME");
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
    assert_eq!(won, 1, "exactly one of {N} racers must get the name");

    assert!(server.stop().success());
    let users = db_users(&server.db_path());
    assert_eq!(users.len(), 1, "{users:?}");
    assert_eq!(users[0].0, "racer");
}

#[test]
fn fifty_clients_register_different_names_at_once() {
    const N: usize = 50;
    let mut server = Server::start();
    let asked = Gate::new(N);
    let threads: Vec<_> = (0..N)
        .map(|i| {
            let (addr, asked) = (server.addr, asked.clone());
            thread::spawn(move || {
                let name = format!("user{i:02}");
                // One address each: one address may not register 50 names at once.
                let mut w = Wire::connect_from(addr, loopback(i)).named(&name);
                w.hello();
                w.send("Y");
                w.expect("ASK USERNAME");
                asked.wait();
                w.send(&name);
                w.expect("ASK PASSWORD");
                w.send(&format!("password {i}"));
                w.expect_exact(&format!("OK REGISTERED {name}"));
                w.answer_port(&name, 40000 + i as u16);
                w
            })
        })
        .collect();
    let mut wires: Vec<Wire> = threads
        .into_iter()
        .map(|t| t.join().expect("registering thread"))
        .collect();
    let want: Vec<String> = (0..N).map(|i| format!("user{i:02}")).collect();
    assert_eq!(wires[0].list(), want);

    assert!(server.stop().success());
    assert_eq!(integrity_check(&server.db_path()), "ok");
    let stored: Vec<String> = db_users(&server.db_path())
        .into_iter()
        .map(|(u, _)| u)
        .collect();
    assert_eq!(stored, want);
}

#[test]
fn passwords_never_appear_in_the_server_log() {
    let mut server = Server::builder().env("RUST_LOG", "trace").start();
    let registered_pw = "Zebra-Quartz-7731";
    let wrong_pw = "Mango-Violet-4482";
    Wire::registered(server.addr, "alice", registered_pw, 40001).quit();
    let mut w = Wire::connect(server.addr).named("alice");
    w.start_login();
    w.answer_login("alice", wrong_pw);
    w.expect("ERR 401 AUTH_FAILED");
    w.expect("ASK USERNAME");
    w.answer_login("alice", registered_pw);
    w.expect_exact("OK LOGGED_IN alice");
    w.answer_port("alice", 40001);
    w.quit();
    assert!(server.stop().success());

    let log = server.log_text();
    assert!(
        !log.contains(registered_pw),
        "the password is in the server log:\n{log}"
    );
    assert!(
        !log.contains(wrong_pw),
        "a wrong password is in the server log:\n{log}"
    );
}

#[test]
fn crlf_line_endings_are_accepted() {
    let server = Server::start();
    let mut w = Wire::connect(server.addr).named("nc -C");
    w.hello();
    for (line, reply) in [
        ("y", "ASK USERNAME"),
        ("alice", "ASK PASSWORD"),
        (PW, "OK REGISTERED alice"),
    ] {
        w.send_bytes(format!("{line}\r\n").as_bytes()).unwrap();
        if reply.starts_with("OK") {
            w.expect_exact(reply); // not `alice\r`
        } else {
            w.expect(reply);
        }
    }
    w.expect("ASK PORT");
    w.send_bytes(b"40001\r\n").unwrap();
    w.expect_exact("OK WELCOME alice 127.0.0.1:40001");
    w.send_bytes(b"LIST\r\n").unwrap();
    w.expect_exact("OK LIST 1 1");
    w.expect_exact("USER alice 1");
    w.send_bytes(b"QUIT\r\n").unwrap();
    w.expect_exact("OK BYE");
    w.expect_closed();
    // Neither the name nor the password kept the `\r`: a plain LF login works.
    Wire::logged_in(server.addr, "alice", PW, 40001);
}
