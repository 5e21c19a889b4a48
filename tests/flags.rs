//! Every duration and count flag of `peerchat-server` and `peerchat-client` has a range
//! (issue 9): a value outside it makes the binary exit non-zero at once with a message
//! naming the flag, before it binds, opens a database or connects anywhere; the extremes
//! inside the range work. (`--login-timeout 18446744073709551615` used to start a server
//! whose every connection thread panicked.)

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// What a binary printed before it exited.
struct Exit {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `bin` with `args` and no input; fails the test if it is still running after
/// `WAIT` (a refused flag must stop it at once).
fn run(bin: &str, args: &[&str]) -> Exit {
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{bin} {args:?} was still running after {WAIT:?}: it accepted the flags");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    Exit {
        code: status.code(),
        stdout,
        stderr,
    }
}

const SERVER: &str = env!("CARGO_BIN_EXE_peerchat-server");
const CLIENT: &str = env!("CARGO_BIN_EXE_peerchat-client");

/// Out-of-range (or not numeric) values of every server flag that takes a number.
const BAD_SERVER_VALUES: &[(&str, &[&str])] = &[
    (
        "--login-timeout",
        &["0", "3601", "18446744073709551615", "-1", "abc"],
    ),
    ("--idle-timeout", &["0", "86401", "18446744073709551615"]),
    ("--block-secs", &["0", "86401", "18446744073709551615"]),
    ("--max-clients", &["0", "65537", "18446744073709551615"]),
    ("--max-prelogin-per-ip", &["0", "65537"]),
    ("--request-burst", &["0", "10001", "4294967296"]),
    ("--request-rate", &["0", "10001"]),
    ("--bcrypt-cost", &["3", "32"]),
];

fn assert_refused(exit: &Exit, flag: &str, value: &str, what: &str) {
    assert!(
        exit.code.is_some_and(|c| c != 0),
        "{what} {flag} {value}: exit {:?}\nstdout: {}\nstderr: {}",
        exit.code,
        exit.stdout,
        exit.stderr
    );
    assert!(
        exit.stderr.contains(flag) && exit.stderr.contains("invalid value"),
        "{what} {flag} {value}: the message does not name the flag: {}",
        exit.stderr
    );
    assert!(
        !exit.stdout.contains("listening on"),
        "{what} {flag} {value} started serving: {}",
        exit.stdout
    );
}

#[test]
fn out_of_range_server_flags_stop_the_server_before_it_serves() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("server.db");
    for (flag, values) in BAD_SERVER_VALUES {
        for value in *values {
            let exit = run(
                SERVER,
                &[
                    "--addr",
                    "127.0.0.1:0",
                    "--db",
                    db.to_str().unwrap(),
                    flag,
                    value,
                ],
            );
            assert_refused(&exit, flag, value, "peerchat-server");
            assert!(!db.exists(), "{flag} {value}: a database was created");
        }
    }
    // The log printer's count, too.
    for value in ["0", "1000001", "18446744073709551616"] {
        let exit = run(
            SERVER,
            &["sessions", "--db", db.to_str().unwrap(), "--limit", value],
        );
        assert_refused(&exit, "--limit", value, "peerchat-server sessions");
    }
}

#[test]
fn the_largest_server_values_work() {
    let server = Server::builder()
        .args(&[
            "--login-timeout",
            "3600",
            "--idle-timeout",
            "86400",
            "--block-secs",
            "86400",
            "--max-clients",
            "65536",
            "--max-prelogin-per-ip",
            "65536",
            "--request-burst",
            "10000",
            "--request-rate",
            "10000",
        ])
        .start();
    let mut alice = Wire::registered(server.addr, "alice", PW, free_port());
    let _bob = Wire::registered(server.addr, "bob", PW, free_port());
    alice.send("CONNECT bob");
    alice.expect("OK SESSION");
    alice.ping();
    // A block of a day is reported as such.
    let mut w = Wire::connect_from(server.addr, OTHER_IP).named("guesser");
    w.start_login();
    for _ in 0..2 {
        w.answer_login("bob", "wrong");
        w.expect("ERR 401 AUTH_FAILED");
        w.expect("ASK USERNAME");
    }
    w.answer_login("bob", "wrong");
    let blocked = w.expect("ERR 403 BLOCKED");
    assert!(blocked.contains("for 86400 s"), "{blocked:?}");
}

#[test]
fn the_smallest_server_values_work() {
    // --login-timeout 1: a silent connection is cut after a second.
    let server = Server::builder().args(&["--login-timeout", "1"]).start();
    let mut silent = Wire::connect(server.addr).named("silent");
    silent.hello();
    silent.expect("ERR 408 TIMEOUT");
    silent.expect_closed();

    let server = Server::builder()
        .args(&[
            "--idle-timeout",
            "1",
            "--block-secs",
            "1",
            "--max-clients",
            "2",
            "--max-prelogin-per-ip",
            "1",
            "--request-burst",
            "1",
            "--request-rate",
            "1",
        ])
        .start();
    // One connection not logged in per address, two connections in all.
    let mut alice = Wire::connect(server.addr).named("alice");
    alice.hello();
    let mut second = Wire::connect(server.addr).named("second from 127.0.0.1");
    second.expect("ERR 435 TOO_MANY_CONNECTIONS");
    second.expect_closed();
    let mut other = Wire::connect_from(server.addr, OTHER_IP).named("from 127.0.0.2");
    other.hello();
    let mut third = Wire::connect_from(server.addr, loopback(5)).named("third");
    third.expect("ERR 503 SERVER_FULL");
    drop(other);
    // One request at once, then one a second.
    alice.register("alice", PW, free_port());
    alice.send("CONNECT nobody");
    alice.expect("ERR 404 NOT_ONLINE");
    alice.send("CONNECT nobody");
    alice.expect("ERR 434 RATE_LIMITED");
    // --idle-timeout 1: silence is cut after a second.
    alice.expect("ERR 408 TIMEOUT");
    alice.expect_closed();
}

#[test]
fn out_of_range_client_flags_stop_the_client_before_it_connects() {
    let server = Server::start();
    let addr = server.addr.to_string();
    let bad: &[(&str, &[&str])] = &[
        (
            "--accept-timeout",
            &["0", "31", "18446744073709551615", "-5"],
        ),
        ("--port", &["65536", "-1", "http"]),
    ];
    for (flag, values) in bad {
        for value in *values {
            let exit = run(CLIENT, &["--server", &addr, flag, value]);
            assert_refused(&exit, flag, value, "peerchat-client");
        }
    }
    // None of them reached the server.
    let log = server.log_text();
    assert!(
        !log.contains("connected (id"),
        "a client with a refused flag connected:\n{log}"
    );
}

#[test]
fn the_client_accepts_its_extreme_values() {
    let server = Server::start();
    let lab = Lab::new(&server);
    let mut alice = lab.register("alice", &["--accept-timeout", "30"]);
    let mut bob = lab.register("bob", &["--accept-timeout", "1"]);
    open_session(&mut alice, "alice", &mut bob, "bob");
    // bob has a second to answer a request: carol's is declined for him.
    let mut carol = lab.register("carol", &[]);
    carol.send("\\connect bob");
    bob.expect("* carol wants to chat");
    carol.expect("* bob did not answer");
}
