//! Faults: silent hosts, login and idle timeouts, bad input (overlong lines, broken UTF-8,
//! garbage, unknown commands), the connection cap, Ctrl+C shutdown, and slow bcrypt not
//! holding up others (protocol.md §1, §3, §6–§8). In every bad-input case another client
//! that is already logged in must still get answers.

mod common;

use std::io::Write;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn silent_logged_in_client_times_out_but_a_pinging_one_stays() {
    let server = Server::builder().args(&["--idle-timeout", "2"]).start();
    // bob logs in first, so he has been connected longer than alice when she times out.
    let mut bob = Wire::registered(server.addr, "bob", PW, 40002);
    let alice = Wire::registered(server.addr, "alice", PW, 40001);
    let silent = thread::spawn(move || {
        let mut alice = alice;
        alice.expect("ERR 408 TIMEOUT");
        alice.expect_closed();
    });

    let start = Instant::now();
    while !silent.is_finished() {
        assert!(
            start.elapsed() < WAIT + POLL,
            "alice's thread never finished"
        );
        bob.ping();
        thread::sleep(Duration::from_millis(500));
    }
    silent
        .join()
        .expect("alice (silent) should get ERR 408 TIMEOUT and be closed");

    bob.wait_for_list(&["bob"]);
    bob.expect_event("EVENT OFFLINE alice");
    // Keep pinging for longer than another idle timeout: bob stays.
    for _ in 0..6 {
        thread::sleep(Duration::from_millis(500));
        bob.ping();
    }
    bob.wait_for_list(&["bob"]);
}

#[test]
fn login_must_finish_within_the_login_timeout() {
    let server = Server::builder().args(&["--login-timeout", "2"]).start();
    // alice logs in in time; the login timeout no longer applies to her afterwards.
    let mut alice = Wire::registered(server.addr, "alice", PW, 40001);

    // Never answers the Y/N question.
    let mut silent = Wire::connect(server.addr).named("silent");
    silent.hello();
    silent.expect("ERR 408 TIMEOUT");
    silent.expect_closed();

    // Keeps answering, wrongly: the whole login is timed, not each answer.
    let mut slow = Wire::connect(server.addr).named("slow");
    slow.hello();
    slow.send("Y");
    slow.expect("ASK USERNAME");
    let start = Instant::now();
    loop {
        assert!(
            start.elapsed() < WAIT,
            "no ERR 408 while answering badly for {WAIT:?}"
        );
        let _ = slow.try_send("ab");
        let reply = slow.expect_one_of(&["ERR 411 BAD_USERNAME", "ERR 408 TIMEOUT"]);
        if reply.starts_with("ERR 408") {
            break;
        }
        slow.expect("ASK USERNAME");
        thread::sleep(Duration::from_millis(500));
    }
    slow.expect_closed();

    // More than 2 s have passed since alice logged in.
    alice.ping();
    alice.wait_for_list(&["alice"]);
}

/// Writes `bytes` from another thread, ignoring errors: the server may close the
/// connection (and reset it) long before a big write is done.
fn write_in_background(w: &Wire, bytes: Vec<u8>) -> thread::JoinHandle<()> {
    let mut stream = w.clone_stream();
    thread::spawn(move || {
        let _ = stream.write_all(&bytes);
    })
}

#[test]
fn overlong_lines_are_refused_and_close_the_connection() {
    let server = Server::start();
    let mut bob = Wire::registered(server.addr, "bob", PW, 40002);

    // Logged in: 5000 bytes.
    let mut alice = Wire::registered(server.addr, "alice", PW, 40001);
    let mut line = vec![b'x'; 5000];
    line.push(b'\n');
    let writer = write_in_background(&alice, line);
    alice.expect("ERR 413 LINE_TOO_LONG");
    alice.expect_closed();
    writer.join().unwrap();
    bob.wait_for_list(&["bob"]);

    // Before login: 1 MiB.
    let mut big = Wire::connect(server.addr).named("1 MiB");
    big.hello();
    let mut line = vec![b'y'; 1 << 20];
    line.push(b'\n');
    let writer = write_in_background(&big, line);
    big.expect("ERR 413 LINE_TOO_LONG");
    big.expect_closed();
    writer.join().unwrap();
    bob.wait_for_list(&["bob"]);

    // The limit is exact: 4097 bytes is too long ...
    let mut over = Wire::connect(server.addr).named("4097 bytes");
    over.hello();
    let mut line = vec![b'z'; 4097];
    line.push(b'\n');
    let writer = write_in_background(&over, line);
    over.expect("ERR 413 LINE_TOO_LONG");
    over.expect_closed();
    writer.join().unwrap();

    // ... and 4096 bytes is a line like any other (here an unknown command).
    let mut carol = Wire::registered(server.addr, "carol", PW, 40003);
    carol.send(&"Q".repeat(4096));
    carol.expect("ERR 405 UNKNOWN_COMMAND");
    carol.ping();
    bob.wait_for_list(&["bob", "carol"]);
}

#[test]
fn invalid_utf8_is_refused_and_the_connection_stays_usable() {
    let server = Server::start();
    let mut bob = Wire::registered(server.addr, "bob", PW, 40002);

    let mut alice = Wire::registered(server.addr, "alice", PW, 40001);
    for bad in [
        &b"\xff\xfe\xfd\n"[..],
        b"LIST \xc3\x28\n",
        b"INFO b\xe2\x82ob\n",
    ] {
        alice.send_bytes(bad).unwrap();
        alice.expect("ERR 414 BAD_ENCODING");
    }
    alice.ping();
    alice.wait_for_list(&["alice", "bob"]);

    // Before login: the question is asked again and the login goes on.
    let mut carol = Wire::connect(server.addr).named("carol");
    carol.hello();
    carol.send_bytes(b"Y\xff\n").unwrap();
    carol.expect("ERR 414 BAD_ENCODING");
    carol.expect("ASK NEW");
    carol.send("Y");
    carol.expect("ASK USERNAME");
    carol.send("carol");
    carol.expect("ASK PASSWORD");
    carol.send(PW);
    carol.expect_exact("OK REGISTERED carol");
    carol.answer_port("carol", 40003);

    bob.wait_for_list(&["alice", "bob", "carol"]);
}

/// Deterministic pseudo-random bytes with no ASCII letters (so no line can be a real
/// command or answer) and some newlines.
fn garbage(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let b = (seed >> 24) as u8;
            if b.is_ascii_alphabetic() {
                0xff
            } else if b.is_multiple_of(37) {
                b'\n'
            } else {
                b
            }
        })
        .collect()
}

#[test]
fn random_garbage_gets_errors() {
    let server = Server::start();
    let mut bob = Wire::registered(server.addr, "bob", PW, 40002);

    // Logged in: errors, then the connection still answers.
    let mut alice = Wire::registered(server.addr, "alice", PW, 40001);
    alice
        .send_bytes(&garbage(2000, 0x9e37_79b9_7f4a_7c15))
        .unwrap();
    alice.send_bytes(b"\nPING\n").unwrap();
    let mut errors = 0;
    loop {
        let line = alice.next_reply();
        if line == "OK PONG" {
            break;
        }
        if !line.starts_with("ERR ") {
            alice.fail(&format!("garbage should only get ERR lines, got {line:?}"));
        }
        errors += 1;
    }
    assert!(errors > 0, "the garbage got no ERR at all");
    bob.wait_for_list(&["alice", "bob"]);

    // Before login: errors and the question again, then a normal answer works.
    let mut carol = Wire::connect(server.addr).named("carol");
    carol.hello();
    carol
        .send_bytes(&garbage(2000, 0x2545_f491_4f6c_dd1d))
        .unwrap();
    carol.send_bytes(b"\nY\n").unwrap();
    let mut errors = 0;
    loop {
        let line = carol.next_reply();
        if line.starts_with("ASK USERNAME") {
            break;
        }
        if line.starts_with("ERR ") {
            errors += 1;
        } else if !line.starts_with("ASK NEW") {
            carol.fail(&format!(
                "unexpected line while answering garbage: {line:?}"
            ));
        }
    }
    assert!(errors > 0, "the garbage got no ERR at all");
    bob.wait_for_list(&["alice", "bob"]);
}

#[test]
fn unknown_commands_and_wrong_arguments_get_errors() {
    let server = Server::start();
    let mut bob = Wire::registered(server.addr, "bob", PW, 40002);
    let mut alice = Wire::registered(server.addr, "alice", PW, 40001);

    for (line, reply) in [
        ("FROB", "ERR 405 UNKNOWN_COMMAND"),
        ("frob now", "ERR 405 UNKNOWN_COMMAND"),
        ("INFO", "ERR 400 BAD_REQUEST"),
        ("INFO bob carol", "ERR 400 BAD_REQUEST"),
        ("LIST everyone", "ERR 400 BAD_REQUEST"),
        ("PING pong", "ERR 400 BAD_REQUEST"),
    ] {
        alice.send(line);
        alice.expect(reply);
    }
    // Words may be separated by several spaces.
    alice.send("INFO   bob");
    alice.expect_exact("OK INFO bob 127.0.0.1:40002 -");
    // None of that closed alice's connection or bothered bob.
    alice.ping();
    bob.wait_for_list(&["alice", "bob"]);
}

#[test]
fn commands_before_login_are_refused() {
    let server = Server::start();
    let mut bob = Wire::registered(server.addr, "bob", PW, 40002);

    let mut w = Wire::connect(server.addr).named("early");
    w.hello();
    for line in ["LIST", "INFO bob"] {
        w.send(line);
        w.expect("ERR 406 LOGIN_REQUIRED");
        w.expect_exact("ASK NEW Are you a new client? (Y/N)");
    }
    w.send("maybe");
    w.expect("ERR 400 BAD_REQUEST");
    w.expect("ASK NEW");
    bob.wait_for_list(&["bob"]);

    // The login still works afterwards; "yes" in any case is a valid answer.
    w.send("yEs");
    w.expect("ASK USERNAME");
    w.send("alice");
    w.expect("ASK PASSWORD");
    w.send(PW);
    w.expect_exact("OK REGISTERED alice");
    w.answer_port("alice", 40001);
    bob.wait_for_list(&["alice", "bob"]);
}

#[test]
fn bad_port_answers_are_refused_with_415() {
    let server = Server::start();
    let mut w = Wire::connect(server.addr).named("alice");
    w.hello();
    w.send("Y");
    w.expect("ASK USERNAME");
    w.send("alice");
    w.expect("ASK PASSWORD");
    w.send(PW);
    w.expect_exact("OK REGISTERED alice");
    w.expect("ASK PORT");
    for bad in ["0", "65536", "-1", "http"] {
        w.send(bad);
        w.expect("ERR 415 BAD_PORT");
        w.expect("ASK PORT");
    }
    w.send("65535");
    w.expect_exact("OK WELCOME alice 127.0.0.1:65535");
}

#[test]
fn max_clients_refuses_extra_connections_until_one_leaves() {
    let server = Server::builder().args(&["--max-clients", "3"]).start();
    let mut alice = Wire::registered(server.addr, "alice", PW, 40001);
    let _bob = Wire::registered(server.addr, "bob", PW, 40002);
    let mut third = Wire::connect(server.addr).named("third");
    third.hello();

    for i in 0..2 {
        let mut extra = Wire::connect(server.addr).named(&format!("extra {i}"));
        extra.expect("ERR 503 SERVER_FULL");
        extra.expect_closed();
    }
    alice.wait_for_list(&["alice", "bob"]);

    drop(third);
    // Once the server has noticed, a new connection is accepted.
    let start = Instant::now();
    let mut next = loop {
        let mut w = Wire::connect(server.addr).named("next");
        let first = w.next_line();
        if first.starts_with("HELLO") {
            w.unread(first);
            break w;
        }
        if !line_matches(&first, "ERR 503 SERVER_FULL") || start.elapsed() > POLL {
            w.fail(&format!(
                "expected HELLO once a slot was free, got {first:?}"
            ));
        }
        thread::sleep(Duration::from_millis(100));
    };
    next.register("carol", PW, 40003);
    alice.wait_for_list(&["alice", "bob", "carol"]);
}

#[test]
fn sigint_announces_shutdown_and_leaves_a_clean_database() {
    let mut server = Server::start();
    let mut alice = Wire::registered(server.addr, "alice", "alice password", 40001);
    let mut bob = Wire::registered(server.addr, "bob", "bob password", 40002);
    let mut carol = Wire::connect(server.addr).named("carol, not logged in");
    carol.hello();
    alice.wait_for_list(&["alice", "bob"]);

    server.interrupt();
    for w in [&mut alice, &mut bob, &mut carol] {
        w.expect_event("EVENT SHUTDOWN");
        w.expect_closed();
    }
    let status = server.wait_exit();
    assert_eq!(status.code(), Some(0), "exit status after SIGINT: {status}");

    assert_eq!(integrity_check(&server.db_path()), "ok");
    let users = db_users(&server.db_path());
    assert_eq!(
        users.iter().map(|(u, _)| u.as_str()).collect::<Vec<_>>(),
        ["alice", "bob"]
    );
    assert_stored_hash(&users, "alice", "alice password");
    assert_stored_hash(&users, "bob", "bob password");
}

#[test]
fn slow_bcrypt_does_not_hold_up_other_clients() {
    let server = Server::builder().bcrypt_cost(14).start();
    // Registering bob costs one slow hash too; it happens before the measured part.
    let mut bob = Wire::registered(server.addr, "bob", PW, 40002);
    let mut alice = Wire::connect(server.addr).named("alice");
    alice.hello();
    alice.send("Y");
    alice.expect("ASK USERNAME");
    alice.send("alice");
    alice.expect("ASK PASSWORD");

    // alice's password starts a slow hash; bob asks for the list right after.
    alice.send(PW);
    bob.send("LIST");

    let (tx, rx) = mpsc::channel();
    let tx_a = tx.clone();
    let alice_reader = thread::spawn(move || {
        alice.expect_exact("OK REGISTERED alice");
        tx_a.send("alice: OK REGISTERED").unwrap();
    });
    let bob_reader = thread::spawn(move || {
        bob.expect("OK LIST");
        tx.send("bob: OK LIST").unwrap();
    });
    let order: Vec<&str> = (0..2)
        .filter_map(|_| rx.recv_timeout(WAIT * 2).ok())
        .collect();
    alice_reader.join().expect("alice's reader");
    bob_reader.join().expect("bob's reader");
    assert_eq!(
        order,
        ["bob: OK LIST", "alice: OK REGISTERED"],
        "bob's LIST must not wait for alice's bcrypt hash"
    );
}
