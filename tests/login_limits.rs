//! Login and request limits (issue 9), attacked against the real server binary.
//!
//! Every test here performs the attack: parallel password guesses racing for the same
//! (name, address), one name guessed from many loopback addresses, idle sockets filling
//! the server, username probing during registration, a flood of logins longer than the
//! bcrypt queue can serve, and a client hammering CONNECT. Password checks are counted
//! from the server's debug log: one `bcrypt verify for <name>` line per check that ran.

mod common;

use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// The log line the server writes once per password it actually checks.
fn verify_line(name: &str) -> String {
    format!("bcrypt verify for {name}")
}

/// A server whose log has the per-check debug lines whatever RUST_LOG says outside.
fn counting_server(args: &[&str]) -> Server {
    Server::builder()
        .env("RUST_LOG", "debug")
        .args(args)
        .start()
}

/// `n` connections from `from(i)`, each at the returning user's `ASK USERNAME`; they all
/// send `name(i)` and `password(i)` at once, and each returns the reply to its password.
fn race_logins(
    server: &Server,
    n: usize,
    from: impl Fn(usize) -> IpAddr,
    name: impl Fn(usize) -> String,
    password: impl Fn(usize) -> String,
) -> Vec<String> {
    let gate = Gate::new(n);
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let (addr, gate, ip) = (server.addr, gate.clone(), from(i));
            let (name, pass) = (name(i), password(i));
            thread::spawn(move || {
                let mut w = Wire::connect_from(addr, ip).named(&format!("racer {i} from {ip}"));
                w.start_login();
                gate.wait();
                w.answer_login(&name, &pass);
                w.next_reply()
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().expect("racer thread"))
        .collect()
}

fn alice(_: usize) -> String {
    "alice".to_string()
}

fn count(replies: &[String], prefix: &str) -> usize {
    replies.iter().filter(|r| line_matches(r, prefix)).count()
}

const HOME: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const ATTACKER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 5));

// ---------------------------------------------------------------------------------------
// 1: attempts are reserved before bcrypt runs
// ---------------------------------------------------------------------------------------

#[test]
fn sixty_parallel_wrong_guesses_from_one_address_check_at_most_three_passwords() {
    let server = counting_server(&[]);
    Wire::registered(server.addr, "alice", PW, 40001).quit();

    let replies = race_logins(&server, 60, |_| ATTACKER, alice, |i| format!("guess {i}"));
    for r in &replies {
        assert!(
            line_matches(r, "ERR 401 AUTH_FAILED") || line_matches(r, "ERR 403 BLOCKED"),
            "unexpected reply {r:?}"
        );
    }
    let checked = server.log_count(&verify_line("alice"));
    assert!(
        (1..=3).contains(&checked),
        "60 racing guesses from one address made {checked} password checks (at most 3 allowed)"
    );
    assert!(count(&replies, "ERR 403 BLOCKED") >= 57, "{replies:#?}");
    println!("figure: 60 racing guesses from one address -> {checked} password checks");

    // The right password from that address is refused now, without a check.
    let mut w = Wire::connect_from(server.addr, ATTACKER).named("alice from the attacker");
    w.start_login();
    w.answer_login("alice", PW);
    w.expect("ERR 403 BLOCKED");
    w.expect_closed();
    assert_eq!(server.log_count(&verify_line("alice")), checked);
}

#[test]
fn the_right_password_racing_with_wrong_ones_never_gets_in_once_blocked() {
    let server = counting_server(&[]);
    Wire::registered(server.addr, "alice", PW, 40001).quit();

    // Two failures: one attempt is left for alice from the attacker's address.
    let mut w = Wire::connect_from(server.addr, ATTACKER).named("two failures");
    w.start_login();
    for _ in 0..2 {
        w.answer_login("alice", "wrong");
        w.expect("ERR 401 AUTH_FAILED");
        w.expect("ASK USERNAME");
    }
    drop(w);
    let before = server.log_count(&verify_line("alice"));
    assert_eq!(before, 2);
    let logins_before = server.log_count(": logged in alice");

    // The right password (racer 17) races 39 wrong ones for that last attempt.
    const RIGHT: usize = 17;
    let replies = race_logins(
        &server,
        40,
        |_| ATTACKER,
        alice,
        |i| {
            if i == RIGHT {
                PW.to_string()
            } else {
                format!("wrong {i}")
            }
        },
    );
    let checked = server.log_count(&verify_line("alice")) - before;
    // From the reply, or from the server's log when the reply was lost to a loaded
    // machine's timeouts (a success resets the count, so more checks follow).
    let got_in = line_matches(&replies[RIGHT], "OK LOGGED_IN alice")
        || server.log_count(": logged in alice") > logins_before;
    if got_in {
        // It won the last attempt: legitimate. Wrong guesses refused while it was being
        // checked were never checked; a success resets the count (protocol.md §3), so
        // guesses that arrived after it start a new budget of 3 from this address.
        assert!(
            (1..=4).contains(&checked),
            "one attempt was left and then a new budget of 3, but {checked} passwords were checked"
        );
        assert!(
            count(&replies, "ERR 401 AUTH_FAILED") <= 2,
            "more than a new budget's failures: {replies:#?}"
        );
    } else {
        assert_eq!(
            checked, 1,
            "one attempt was left, but {checked} passwords were checked; the right one got {:?}",
            replies[RIGHT]
        );
        assert!(
            line_matches(&replies[RIGHT], "ERR 403 BLOCKED"),
            "{replies:#?}"
        );
        // A wrong guess took the last attempt: the name is blocked from there, and
        // the right password stays out.
        let mut w = Wire::connect_from(server.addr, ATTACKER).named("alice after the race");
        w.start_login();
        w.answer_login("alice", PW);
        w.expect("ERR 403 BLOCKED");
        w.expect_closed();
    }
    assert_eq!(server.log_count(&verify_line("alice")) - before, 1);
}

/// protocol.md §3: "N attempts left" counts what the server will really allow, across
/// connections from the same address.
#[test]
fn attempts_left_count_failures_from_every_connection_of_the_address() {
    let server = Server::start();
    Wire::registered(server.addr, "alice", PW, 40001).quit();
    let mut a = Wire::connect_from(server.addr, ATTACKER).named("first connection");
    let mut b = Wire::connect_from(server.addr, ATTACKER).named("second connection");
    a.start_login();
    b.start_login();
    a.answer_login("alice", "wrong a");
    let first = a.expect("ERR 401 AUTH_FAILED");
    assert!(first.ends_with("(2 attempts left)"), "{first:?}");
    a.expect("ASK USERNAME");
    b.answer_login("alice", "wrong b");
    let second = b.expect("ERR 401 AUTH_FAILED");
    assert!(
        second.ends_with("(1 attempt left)"),
        "the second connection was told {second:?}; one attempt is left for alice here"
    );
    b.expect("ASK USERNAME");
    a.answer_login("alice", "wrong a again");
    a.expect("ERR 403 BLOCKED");
    a.expect_closed();
}

/// The in-memory table is rebuilt from the database at start-up: two failures before a
/// restart and one after block the name, and the block then holds across another restart.
#[test]
fn failure_counts_and_blocks_survive_restarts() {
    let mut server = Server::start();
    Wire::registered(server.addr, "alice", PW, 40001).quit();
    let mut w = Wire::connect_from(server.addr, ATTACKER).named("before the restart");
    w.start_login();
    for _ in 0..2 {
        w.answer_login("alice", "wrong");
        w.expect("ERR 401 AUTH_FAILED");
        w.expect("ASK USERNAME");
    }
    drop(w);
    assert!(server.stop().success());

    let mut server = server.restart();
    let mut w = Wire::connect_from(server.addr, ATTACKER).named("after the restart");
    w.start_login();
    w.answer_login("alice", "wrong");
    w.expect("ERR 403 BLOCKED");
    w.expect_closed();
    assert!(server.stop().success());

    let server = server.restart();
    let mut w = Wire::connect_from(server.addr, ATTACKER).named("after a second restart");
    w.start_login();
    w.answer_login("alice", PW);
    let blocked = w.expect("ERR 403 BLOCKED");
    assert!(blocked.contains("more s"), "{blocked:?}");
    // Other addresses were never affected.
    Wire::connect_from(server.addr, OTHER_IP)
        .named("alice elsewhere")
        .login("alice", PW, 40001);
}

// ---------------------------------------------------------------------------------------
// 2: one name guessed from many addresses
// ---------------------------------------------------------------------------------------

#[test]
fn one_name_guessed_from_thirty_addresses_is_slowed_down_per_name() {
    const ADDRESSES: usize = 30;
    /// protocol::limits::NAME_ATTEMPT_BURST
    const BURST: usize = 20;
    let server = counting_server(&[]);
    // Registered from 127.0.0.1, which becomes alice's known address.
    Wire::registered(server.addr, "alice", PW, 40001).quit();

    let replies = race_logins(&server, ADDRESSES, loopback, alice, |i| {
        format!("guess {i}")
    });
    let checked = server.log_count(&verify_line("alice"));
    let limited = count(&replies, "ERR 434 RATE_LIMITED");
    assert_eq!(
        count(&replies, "ERR 401 AUTH_FAILED") + limited,
        ADDRESSES,
        "{replies:#?}"
    );
    // The burst, then one check per doubling delay (1 s, 2 s, 4 s) at most.
    assert!(
        (BURST..=BURST + 4).contains(&checked),
        "{ADDRESSES} addresses with one guess each made {checked} checks of one name"
    );
    assert!(limited >= ADDRESSES - BURST - 4, "{replies:#?}");
    println!(
        "figure: {ADDRESSES} addresses guessing one name -> {checked} checks, {limited} refused"
    );
    let example = replies
        .iter()
        .find(|r| line_matches(r, "ERR 434 RATE_LIMITED"))
        .unwrap();
    assert!(example.contains("try again in"), "{example:?}");

    // Not a lockout: alice's own address is not slowed down by the guessing.
    let mut home = Wire::connect_from(server.addr, HOME).named("alice at home");
    home.login("alice", PW, 40001);
    // Another name was never slowed down.
    let mut w = Wire::connect_from(server.addr, loopback(0)).named("bob");
    w.register("bob", PW, 40002);
}

// ---------------------------------------------------------------------------------------
// 3: enumeration
// ---------------------------------------------------------------------------------------

#[test]
fn username_probing_during_registration_is_rate_limited_per_address() {
    /// protocol::limits::NAME_CHECK_BURST
    const BURST: usize = 20;
    let server = Server::start();
    Wire::registered(server.addr, "alice", PW, 40001).quit();

    let mut w = Wire::connect_from(server.addr, ATTACKER).named("prober");
    w.hello();
    w.send("Y");
    w.expect("ASK USERNAME");
    let mut answered = 0;
    let refusal = loop {
        w.send("alice");
        let reply = w.next_reply();
        if line_matches(&reply, "ERR 409 NAME_TAKEN") {
            answered += 1;
            w.expect("ASK USERNAME");
            assert!(answered <= 200, "200 probes answered without a limit");
            continue;
        }
        break reply;
    };
    assert!(
        line_matches(&refusal, "ERR 434 RATE_LIMITED"),
        "after {answered} probes: {refusal:?}"
    );
    assert!(
        (BURST..=BURST + 2).contains(&answered),
        "{answered} probes answered"
    );
    w.expect_closed();
    println!("figure: username probing from one address -> {answered} answered, then 434");

    // A new connection from the same address is refused too; another address is not.
    let mut again = Wire::connect_from(server.addr, ATTACKER).named("prober again");
    again.hello();
    again.send("Y");
    again.expect("ASK USERNAME");
    again.send("alice");
    again.expect("ERR 434 RATE_LIMITED");
    let mut other = Wire::connect_from(server.addr, loopback(40)).named("someone else");
    other.hello();
    other.send("Y");
    other.expect("ASK USERNAME");
    other.send("alice");
    other.expect("ERR 409 NAME_TAKEN");
    // Registering does not spend the budget: carol registers from a fresh address after
    // many others did.
    for i in 0..(BURST + 5) {
        Wire::connect_from(server.addr, loopback(41))
            .named(&format!("u{i:02}"))
            .register(&format!("user{i:02}"), PW, 40100 + i as u16);
    }
}

#[test]
fn stored_hashes_are_renewed_at_the_current_cost_on_login() {
    let mut server = Server::builder().bcrypt_cost(4).start();
    Wire::registered(server.addr, "alice", PW, 40001).quit();
    assert!(server.stop().success());
    let users = db_users(&server.db_path());
    assert!(users[0].1.starts_with("$2b$04$"), "{users:?}");

    let mut server = server.restart_with_cost(5);
    Wire::logged_in(server.addr, "alice", PW, 40001).quit();
    assert!(server.stop().success());
    let users = db_users(&server.db_path());
    assert!(
        users[0].1.starts_with("$2b$05$"),
        "alice's hash was not renewed at the server's cost 5: {users:?}"
    );
    assert_stored_hash(&users, "alice", PW);
}

// ---------------------------------------------------------------------------------------
// 4: per-address caps and the bcrypt queue
// ---------------------------------------------------------------------------------------

#[test]
fn a_thousand_idle_sockets_from_one_address_do_not_shut_out_another_address() {
    const IDLE: usize = 1024;
    let server = Server::start();
    let mut idle: Vec<TcpStream> = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        idle.push(TcpStream::connect(server.addr).expect("an idle connection"));
    }
    // The last of them was refused at once: with a coded error over TLS or, while 32
    // refusals already wait for handshakes (these idle sockets never start one), closed
    // without a word (protocol.md §0) so a flood of refusals costs no threads.
    let mut last = Wire::from_accepted(idle.pop().unwrap(), "idle socket 1024");
    match last.read_within(WAIT) {
        Got::Line(line) => {
            assert!(
                line_matches(&line, "ERR 435 TOO_MANY_CONNECTIONS"),
                "{line:?}"
            );
            last.expect_closed();
        }
        Got::Closed => {}
        Got::TimedOut => last.fail("the 1024th socket was neither refused nor closed"),
    }

    // Someone else logs in meanwhile (`--max-clients` is the default 1024).
    let mut bob = Wire::connect_from(server.addr, OTHER_IP).named("bob from 127.0.0.2");
    bob.register("bob", PW, 40002);
    bob.ping();

    // Once the idle sockets are gone, their address is served again.
    drop(idle);
    let deadline = Instant::now() + POLL;
    let _alice = loop {
        let mut w = Wire::connect(server.addr).named("alice from 127.0.0.1");
        let first = match w.read_within(WAIT) {
            Got::Line(line) => line,
            // Closed without a word while refusals were still being answered: retry.
            Got::Closed if Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(100));
                continue;
            }
            _ => w.fail("no greeting and no refusal"),
        };
        if first.starts_with("HELLO") {
            w.unread(first);
            w.register("alice", PW, 40001);
            break w;
        }
        assert!(
            line_matches(&first, "ERR 435 TOO_MANY_CONNECTIONS") && Instant::now() < deadline,
            "{first:?}"
        );
        thread::sleep(Duration::from_millis(100));
    };
    bob.wait_for_list(&["alice", "bob"]);
}

/// With one hash taking a noticeable time (cost 12) and a 10 s login deadline, 100
/// logins at once are more than the queue can serve in time: the surplus is told `504
/// BUSY` at once rather than waiting to be cut off by the login timeout. (With 5 s and 30
/// logins, a machine so loaded that one nice-19 hash took 2.5 s had every login refused.)
#[test]
fn logins_beyond_what_the_bcrypt_queue_can_serve_in_time_get_busy_at_once() {
    const LOGINS: usize = 100;
    const DEADLINE: Duration = Duration::from_secs(10);
    let server = Server::builder()
        .bcrypt_cost(12)
        .args(&["--login-timeout", &DEADLINE.as_secs().to_string()])
        .start();
    let started = Instant::now();
    let replies = race_logins(
        &server,
        LOGINS,
        loopback,
        |i| format!("nobody{i:02}"),
        |i| format!("guess {i}"),
    );
    let busy = count(&replies, "ERR 504 BUSY");
    let answered = count(&replies, "ERR 401 AUTH_FAILED") + count(&replies, "ERR 434 RATE_LIMITED");
    assert!(
        busy >= 1,
        "no login was told the server is busy: {replies:#?}"
    );
    assert!(answered >= 1, "no login was served at all: {replies:#?}");
    for r in &replies {
        assert!(
            line_matches(r, "ERR 504 BUSY")
                || line_matches(r, "ERR 401 AUTH_FAILED")
                || line_matches(r, "ERR 434 RATE_LIMITED")
                || line_matches(r, "ERR 408 TIMEOUT"),
            "unexpected reply {r:?}"
        );
    }
    let example = replies
        .iter()
        .find(|r| line_matches(r, "ERR 504 BUSY"))
        .unwrap();
    assert!(example.contains("busy, retry"), "{example:?}");
    assert!(
        started.elapsed() < DEADLINE + WAIT,
        "the logins took {:?}",
        started.elapsed()
    );
    println!(
        "figure: {LOGINS} logins at cost 12, 10 s deadline -> {answered} checked, {busy} busy, in {:?}",
        started.elapsed()
    );
}

#[test]
fn one_address_may_not_fill_the_bcrypt_queue() {
    const LOGINS: usize = 14;
    let server = Server::builder().bcrypt_cost(13).start();
    let names: Vec<String> = (0..LOGINS).map(|i| format!("nobody{i:02}")).collect();
    let gate = Gate::new(LOGINS);
    let threads: Vec<_> = names
        .iter()
        .map(|name| {
            let (addr, gate, name) = (server.addr, gate.clone(), name.clone());
            thread::spawn(move || {
                let mut w = Wire::connect_from(addr, ATTACKER).named(&name);
                w.start_login();
                gate.wait();
                w.answer_login(&name, "guess");
                // Up to 8 hashes at cost 13 queue behind two cores: on a loaded machine the
                // last answer can take longer than a Wire's usual 15 s.
                loop {
                    match w.read_within(Duration::from_secs(120)) {
                        Got::Line(line) if line.starts_with("EVENT ") => continue,
                        Got::Line(line) => break line,
                        Got::Closed => w.fail("closed without answering the login"),
                        Got::TimedOut => w.fail("no answer to the login within 120 s"),
                    }
                }
            })
        })
        .collect();
    let replies: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let busy: Vec<&String> = replies
        .iter()
        .filter(|r| line_matches(r, "ERR 504 BUSY"))
        .collect();
    // protocol::limits::MAX_HASHING_PER_IP is 8: with 14 at once, several are refused
    // (a few fewer if the first hashes finish before the last logins arrive).
    assert!(
        busy.len() >= 3,
        "{} of {LOGINS} logins from one address were refused: {replies:#?}",
        busy.len()
    );
    assert!(
        busy.iter().any(|r| r.contains("from your address")),
        "{busy:#?}"
    );
    println!(
        "figure: {LOGINS} logins from one address at cost 13 -> {} busy",
        busy.len()
    );
    // Another address is served meanwhile.
    let mut w = Wire::connect_from(server.addr, OTHER_IP).named("bob");
    w.register("bob", PW, 40002);
}

// ---------------------------------------------------------------------------------------
// 5: CONNECT and TRANSFER per user
// ---------------------------------------------------------------------------------------

#[test]
fn hammering_connect_is_rate_limited_and_other_users_are_still_served() {
    const REQUESTS: usize = 200;
    /// protocol::limits::DEFAULT_REQUEST_BURST and DEFAULT_REQUEST_RATE
    const BURST: usize = 32;
    const RATE: f64 = 4.0;
    let server = Server::start();
    let mut bob = Wire::registered(server.addr, "bob", PW, free_port());
    let mut carol = Wire::registered(server.addr, "carol", PW, free_port());
    let mut mallory = Wire::registered(server.addr, "mallory", PW, free_port());

    let started = Instant::now();
    for _ in 0..REQUESTS {
        mallory.send("CONNECT bob");
    }
    let mut granted = 0;
    let mut limited = Vec::new();
    for _ in 0..REQUESTS {
        let reply = mallory.next_reply();
        if line_matches(&reply, "OK SESSION") {
            granted += 1;
        } else if line_matches(&reply, "ERR 434 RATE_LIMITED") {
            limited.push(reply);
        } else {
            mallory.fail(&format!("unexpected reply {reply:?}"));
        }
    }
    let allowed = BURST + (started.elapsed().as_secs_f64() * RATE).ceil() as usize + 1;
    assert!(
        (BURST..=allowed).contains(&granted),
        "{granted} of {REQUESTS} CONNECTs were granted (allowed at most {allowed})"
    );
    assert!(limited[0].contains("try again in"), "{:?}", limited[0]);
    println!(
        "figure: {REQUESTS} pipelined CONNECTs -> {granted} granted, {} refused",
        limited.len()
    );
    // TRANSFER shares the budget.
    mallory.send("TRANSFER bob");
    mallory.expect("ERR 434 RATE_LIMITED");
    mallory.ping();

    // Everyone else is served, including a CONNECT to the same target.
    carol.send("CONNECT bob");
    carol.expect("OK SESSION");
    carol.ping();
    bob.ping();
    bob.wait_for_list(&["bob", "carol", "mallory"]);
}

/// The real client says plainly what the limit did.
#[test]
fn the_client_shows_a_rate_limited_connect_plainly() {
    let server = Server::builder()
        .args(&["--request-burst", "1", "--request-rate", "1"])
        .start();
    let lab = Lab::new(&server);
    let _carol = Wire::registered(server.addr, "carol", PW, free_port());
    let mut alice = lab.register("alice", &[]);
    alice.send("\\connect nobody");
    alice.expect("error: nobody is not online");
    alice.send("\\connect carol");
    alice.expect("error: too many CONNECT and TRANSFER requests; try again in ");
    alice.send("\\list");
    alice.expect("carol");
}
