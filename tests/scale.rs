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

/// The threads of process `pid` named `name`, each as (nice value, CPU ticks used), from
/// `/proc/<pid>/task/*/stat` (Linux).
fn threads_named(pid: u32, name: &str) -> Vec<(i64, u64)> {
    let mut found = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return found;
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // `tid (comm) state ...`: the name is in parentheses, the fields follow it.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if &stat[open + 1..close] != name {
            continue;
        }
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        // After the name: state is field 3 of stat(5), utime 14, stime 15, nice 19.
        let field = |n: usize| fields[n - 3].parse::<i64>().unwrap();
        found.push((field(19), (field(14) + field(15)) as u64));
    }
    found
}

#[test]
fn commands_are_answered_while_logins_hash_on_a_thread_of_the_lowest_priority() {
    // Cost 10: each check takes tens of milliseconds even with bcrypt optimised.
    let server = Server::builder().bcrypt_cost(10).start();
    let users = 4;
    // Registering hashes too: one at a time, each from its own address.
    for i in 0..users {
        let mut w = Wire::connect_from(server.addr, loopback(i)).named(&format!("hasher{i}"));
        w.register(&format!("hasher{i}"), PW, 42000 + i as u16);
        w.quit();
    }
    let mut alice = Wire::registered(server.addr, "alice", PW, 40001);
    let hashing = threads_named(server.pid(), "bcrypt");
    assert!(!hashing.is_empty(), "the server has hashing threads");
    assert!(
        hashing.iter().all(|&(nice, _)| nice == 19),
        "hashing threads run at the lowest priority: {hashing:?}"
    );
    let cpu_before: u64 = hashing.iter().map(|&(_, cpu)| cpu).sum();
    // The rest of the server keeps the normal priority.
    let main = std::fs::read_to_string(format!("/proc/{}/stat", server.pid())).unwrap();
    let after_name = &main[main.rfind(')').unwrap() + 2..];
    assert_eq!(after_name.split(' ').nth(19 - 3), Some("0"), "{main}");

    // The logins all at once, each from its own address (the queue takes 8 per address).
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let logins: Vec<_> = (0..users)
        .map(|i| {
            let (addr, done) = (server.addr, done.clone());
            thread::spawn(move || {
                let name = format!("hasher{i}");
                let mut w = Wire::connect_from(addr, loopback(i)).named(&name);
                w.login(&name, PW, 42000 + i as u16);
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                w
            })
        })
        .collect();
    // While they hash (one at a time on a 2-core machine), LIST and INFO keep answering.
    let mut slowest = std::time::Duration::ZERO;
    let mut answered = 0;
    while done.load(std::sync::atomic::Ordering::SeqCst) < users {
        let t = std::time::Instant::now();
        if answered % 2 == 0 {
            assert!(alice.list().contains(&"alice".to_string()));
        } else {
            alice.send("INFO alice");
            alice.expect("OK INFO alice ");
        }
        slowest = slowest.max(t.elapsed());
        answered += 1;
        // Leave the hashes some CPU: commands back to back would starve them (by design
        // a command goes first), and the test would wait for its logins a long time.
        thread::sleep(std::time::Duration::from_millis(10));
    }
    let _online: Vec<Wire> = logins.into_iter().map(|t| t.join().unwrap()).collect();
    let cpu_after: u64 = threads_named(server.pid(), "bcrypt")
        .iter()
        .map(|&(_, cpu)| cpu)
        .sum();
    assert!(
        cpu_after > cpu_before,
        "the logins' hashes ran on the hashing threads ({cpu_before} → {cpu_after} ticks)"
    );
    assert!(
        answered >= 4,
        "only {answered} commands answered while {users} logins hashed"
    );
    // A generous bound (the machine is shared): a command waits for no hash.
    assert!(
        slowest < std::time::Duration::from_secs(1),
        "the slowest of {answered} commands took {slowest:?} while logins hashed"
    );
}

/// Open descriptors of process `pid` (Linux).
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[test]
fn a_logged_in_client_costs_the_server_one_descriptor() {
    let server = Server::start();
    let mut first = Wire::registered(server.addr, "first", PW, 40001);
    first.ping();
    let before = open_fds(server.pid());
    let n = 20;
    let mut wires: Vec<Wire> = (0..n)
        .map(|i| Wire::registered(server.addr, &format!("fd{i:02}"), PW, 41000 + i as u16))
        .collect();
    for w in &mut wires {
        w.ping();
    }
    let after = open_fds(server.pid());
    // The TLS reader reads the socket the writer writes (no clone): 10,000 clients need
    // 10,000 descriptors, not 20,000 (README "Running 10,000 clients").
    assert!(
        after - before <= n + 2,
        "{n} clients took {} descriptors ({before} → {after})",
        after - before
    );
    assert!(after - before >= n, "{before} → {after}");
    // Closing them gives the descriptors back.
    for w in &mut wires {
        w.quit();
    }
    drop(wires);
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while open_fds(server.pid()) > before + 2 {
        assert!(
            std::time::Instant::now() < until,
            "descriptors were not given back: {} (from {before})",
            open_fds(server.pid())
        );
        thread::sleep(std::time::Duration::from_millis(100));
    }
    first.ping();
}
