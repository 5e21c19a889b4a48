//! Several servers as one service (issue 14): two real `peerchat-server` processes with
//! `--cluster` on one real Redis (`redis-server`, started per test on a free port) and
//! one real PostgreSQL database (started by the harness), and real clients on each. Alice on server A and bob on server B
//! see each other (with their account ids), chat directly, push and fetch files, get each
//! other's messages and file offers through the servers at once, and find each other's
//! shared files; one name registered from both sides makes one account; a duplicate login is refused across servers; killing a
//! server takes its users offline on the other within the heartbeat timeout.
//!
//! Every test prints a skip line and passes when `redis-server` is not installed
//! (`.ci/run` installs it).

mod common;

use std::fs;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// Two servers of one cluster on one database, and the Redis between them.
struct Pair {
    a: Server,
    b: Server,
    _redis: Redis,
    // Dropped after the servers (fields drop in order).
    _database: Option<PgDatabase>,
}

/// Starts Redis and two servers with `--cluster` beside each other on one real
/// PostgreSQL database (one shared SQLite file where PostgreSQL is not installed), or
/// `None` (skip: no Redis).
fn pair(args: &[&str]) -> Option<Pair> {
    pair_each(args, &[], &[])
}

/// Like [`pair`], with flags for server A only and for server B only.
fn pair_each(args: &[&str], a_only: &[&str], b_only: &[&str]) -> Option<Pair> {
    let redis = Redis::start()?;
    let url = redis.url();
    let database = postgres_or_skip("cluster tests on PostgreSQL (a shared SQLite file instead)")
        .map(|pg| PgDatabase::create(&pg));
    let db_url = database.as_ref().map(PgDatabase::url);
    let mut all = vec!["--cluster", url.as_str()];
    if let Some(db_url) = &db_url {
        all.extend(["--db", db_url.as_str()]);
    }
    all.extend_from_slice(args);
    let a = Server::builder().args(&all).args(a_only).start();
    let b = Server::builder().args(&all).args(b_only).start_beside(&a);
    // A server prints its address before it joins (it hashes its dummy password and
    // reads its blocks first): wait until both are subscribed.
    for server in [&a, &b] {
        let deadline = Instant::now() + WAIT;
        while !server.log_text().contains("subscribed") {
            assert!(Instant::now() < deadline, "{}", server.log_text());
            thread::sleep(Duration::from_millis(20));
        }
    }
    Some(Pair {
        a,
        b,
        _redis: redis,
        _database: database,
    })
}

/// Polls `LIST` on `wire` until it equals `want` (names as shown), for up to `within`.
fn wait_list(wire: &mut Wire, want: &[&str], within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let got = wire.list();
        if got == want {
            return;
        }
        if Instant::now() >= deadline {
            wire.fail(&format!("LIST is still {got:?}; want {want:?}"));
        }
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn alice_on_a_and_bob_on_b_see_each_other_chat_push_and_fetch() {
    let Some(pair) = pair(&[]) else { return };
    let dir = tempfile::TempDir::new().unwrap();
    let home = |name: &str| {
        let path = dir.path().join(name);
        for sub in ["data", "downloads", "share", "outbox"] {
            fs::create_dir_all(path.join(sub)).unwrap();
        }
        path
    };
    let (alice_home, bob_home) = (home("alice"), home("bob"));
    let shared_text = "bob's notes, shared from server B\n".repeat(100);
    fs::write(bob_home.join("share/notes.txt"), &shared_text).unwrap();
    let args = |home: &std::path::Path, share: bool| {
        let mut args = vec![
            "--data-dir".to_string(),
            home.join("data").display().to_string(),
            "--downloads".to_string(),
            home.join("downloads").display().to_string(),
        ];
        if share {
            args.push("--share".into());
            args.push(home.join("share").display().to_string());
        }
        args
    };
    let alice_args = args(&alice_home, false);
    let bob_args = args(&bob_home, true);
    let refs = |v: &Vec<String>| v.iter().map(String::to_string).collect::<Vec<_>>();
    let (alice_args, bob_args) = (refs(&alice_args), refs(&bob_args));
    let alice_refs: Vec<&str> = alice_args.iter().map(String::as_str).collect();
    let bob_refs: Vec<&str> = bob_args.iter().map(String::as_str).collect();

    let mut alice = Client::start_with(pair.a.addr, "alice", PW, true, &alice_refs);
    let mut bob = Client::start_with(pair.b.addr, "bob", PW, true, &bob_refs);
    bob.expect_line("the sharing line", |l| l.starts_with("* sharing "));

    // Presence crosses servers: each is told the other came, and both lists hold both.
    // bob came second: alice is told; bob may have found her in the list already.
    alice.expect("* bob is online");
    // (Lines are `#<id> <name>`; the ids are checked in `ids_messages_offers_and_search_…`.)
    alice.send("\\list");
    alice.expect("Online users (2):\n");
    alice.expect_line("alice's own line", |l| l.ends_with(" alice (you)"));
    alice.expect_line("bob's line", |l| l.ends_with(" bob"));
    bob.send("\\list");
    bob.expect("Online users (2):\n");
    bob.expect_line("alice's line", |l| l.ends_with(" alice"));
    bob.expect_line("bob's own line", |l| l.ends_with(" bob (you)"));
    alice.send("\\info bob");
    alice.expect("bob is online at 127.0.0.1:");

    // A session asked on A reaches bob on B (the request travels by pub/sub); the
    // clients then talk directly.
    open_session(&mut alice, "alice", &mut bob, "bob");
    alice.send("hello bob on the other server");
    bob.expect_chat(None, "alice", "hello bob on the other server");
    bob.send("hi alice, B here");
    alice.expect_chat(None, "bob", "hi alice, B here");

    // Push: alice sends a file; bob accepts; both sides verify it.
    let pushed = alice_home.join("outbox/report.txt");
    let pushed_text = "alice's report from server A\n".repeat(200);
    fs::write(&pushed, &pushed_text).unwrap();
    alice.send(&format!("\\send {}", pushed.display()));
    let offer = bob.expect_line("the offer", |l| {
        l.starts_with("* [") && l.contains("] alice offers report.txt")
    });
    let id: String = offer[3..offer.find(']').unwrap()].to_string();
    bob.send(&format!("\\accept {id}"));
    bob.expect_line("the received file verified", |l| {
        l.contains("receive report.txt from alice: done, verified")
    });
    alice.expect_line("the sent file verified", |l| {
        l.contains("send report.txt to bob: done, verified")
    });
    assert_eq!(
        fs::read_to_string(bob_home.join("downloads/report.txt")).unwrap(),
        pushed_text
    );

    // Fetch: alice on A lists bob's shared files (kept in the cluster) and fetches one.
    alice.send("\\files bob");
    alice.expect("notes.txt");
    alice.send("\\fetch bob notes.txt");
    alice.expect_line("the fetched file verified", |l| {
        l.contains("fetch notes.txt from bob: done, verified")
    });
    bob.expect_line("the served file verified", |l| {
        l.contains("serve notes.txt to alice: done, verified")
    });
    assert_eq!(
        fs::read_to_string(alice_home.join("downloads/notes.txt")).unwrap(),
        shared_text
    );

    // Leaving on A is seen on B.
    alice.send("\\quit");
    alice.expect("Bye.");
    bob.expect("* alice went offline");
    bob.send("\\list");
    bob.expect("Online users (1):\n");
    bob.expect_line("bob's own line", |l| l.ends_with(" bob (you)"));
    // The subscribers idled through read timeouts all along without losing Redis.
    for server in [&pair.a, &pair.b] {
        let log = server.log_text();
        assert!(log.contains("subscribed"), "{log}");
        assert!(!log.contains("subscription lost"), "{log}");
        assert!(!log.contains("Redis failed"), "{log}");
    }
}

#[test]
fn fifty_registrations_of_one_name_over_both_servers_make_one_account() {
    let Some(pair) = pair(&[]) else { return };
    const N: usize = 50;
    let start = Arc::new(Barrier::new(N));
    let threads: Vec<_> = (0..N)
        .map(|i| {
            let addr = if i % 2 == 0 { pair.a.addr } else { pair.b.addr };
            let start = Arc::clone(&start);
            thread::spawn(move || {
                // Each from its own loopback address, so no per-address limit decides.
                let ip = format!("127.0.{}.{}", 1 + i / 200, 2 + i % 200);
                let mut w = Wire::connect_from(addr, ip.parse().unwrap());
                w.hello();
                w.send("Y");
                w.expect("ASK USERNAME");
                start.wait();
                w.send("samename");
                match w.expect_one_of(&["ASK PASSWORD", "ERR "]).as_str() {
                    line if line.starts_with("ERR ") => false,
                    _ => {
                        w.send(&format!("password {i}"));
                        w.expect_one_of(&["OK REGISTERED", "ERR "])
                            .starts_with("OK REGISTERED")
                    }
                }
            })
        })
        .collect();
    let won: usize = threads
        .into_iter()
        .map(|t| usize::from(t.join().expect("registration thread")))
        .sum();
    assert_eq!(won, 1, "exactly one registration succeeds");
    let users = db_users(&pair.a.db_path());
    let named: Vec<_> = users
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("samename"))
        .collect();
    assert_eq!(named.len(), 1, "{users:?}");
}

#[test]
fn a_login_on_b_is_refused_while_the_account_is_online_on_a() {
    let Some(pair) = pair(&[]) else { return };
    let _alice = Wire::registered(pair.a.addr, "alice", PW, free_port());
    let mut again = Wire::connect(pair.b.addr);
    again.start_login();
    again.answer_login("alice", PW);
    again.expect("ERR 410");
    // The account is still reachable, on A, from B.
    let mut bob = Wire::registered(pair.b.addr, "bob", PW, free_port());
    wait_list(&mut bob, &["alice", "bob"], WAIT);
}

#[test]
fn killing_server_a_takes_alice_offline_on_b_within_the_heartbeat_timeout() {
    let Some(mut pair) = pair(&[]) else { return };
    let _alice = Wire::registered(pair.a.addr, "alice", PW, free_port());
    let mut bob = Wire::registered(pair.b.addr, "bob", PW, free_port());
    wait_list(&mut bob, &["alice", "bob"], WAIT);
    // While A lives, its heartbeat keeps her key past its 3-second life.
    thread::sleep(Duration::from_secs(4));
    assert_eq!(bob.list(), vec!["alice", "bob"]);
    let events = bob.pending_events();
    assert!(!events.iter().any(|e| e.contains("OFFLINE")), "{events:?}");
    pair.a.kill();
    let killed = Instant::now();
    bob.expect_event("EVENT OFFLINE alice");
    // Three-second keys, one-second scans, half-second announcements: well within 10 s.
    assert!(
        killed.elapsed() < Duration::from_secs(10),
        "alice went offline only after {:?}",
        killed.elapsed()
    );
    assert_eq!(bob.list(), vec!["bob"]);
    // Once her key is gone she may log in on B.
    let mut again = Wire::connect(pair.b.addr);
    again.start_login();
    again.answer_login("alice", PW);
    again.expect("OK LOGGED_IN");
}

#[test]
fn three_failures_on_a_block_the_name_from_that_address_on_b() {
    let Some(pair) = pair(&["--block-secs", "60"]) else {
        return;
    };
    let _ = Wire::registered(pair.a.addr, "carol", PW, free_port());
    let mut w = Wire::connect(pair.a.addr);
    w.start_login();
    for i in 0..3 {
        w.answer_login("carol", "wrong password");
        w.expect(if i < 2 { "ERR 401" } else { "ERR 403" });
        if i < 2 {
            w.expect("ASK USERNAME");
        }
    }
    // The right password, on the other server, from the same address: blocked.
    let mut b = Wire::connect(pair.b.addr);
    b.start_login();
    b.answer_login("carol", PW);
    b.expect("ERR 403");
}

#[test]
fn requests_tickets_and_relay_tokens_reach_a_user_on_the_other_server() {
    let Some(pair) = pair(&[]) else { return };
    let bob_port = free_port();
    let mut alice = Wire::registered(pair.a.addr, "alice", PW, free_port());
    let mut bob = Wire::registered(pair.b.addr, "bob", PW, bob_port);
    wait_list(&mut alice, &["alice", "bob"], WAIT);

    // INFO on A answers for a user of B (the fields after the address are others').
    alice.send("INFO bob");
    let info = alice.expect("OK INFO bob ");
    assert_eq!(
        info.split(' ').nth(3),
        Some(format!("127.0.0.1:{bob_port}").as_str()),
        "{info:?}"
    );

    // alice's identity key, registered on A, travels with her request to B.
    let key = "ab".repeat(32);
    alice.send(&format!("KEY {key}"));
    alice.expect_exact("OK KEY");

    // CONNECT on A: bob hears the request with the same ticket, through B.
    alice.send("CONNECT bob");
    let granted = alice.expect("OK SESSION ");
    let words: Vec<&str> = granted.split(' ').collect();
    let (id, ticket) = (words[2], words[5]);
    assert_eq!(words[4], format!("127.0.0.1:{bob_port}"), "{granted:?}");
    let asked = bob.expect_event("EVENT SESSION_REQUEST ");
    let asked: Vec<&str> = asked.split(' ').collect();
    assert_eq!(
        (asked[2], asked[3], asked[4], asked[5]),
        (id, "alice", ticket, key.as_str())
    );

    // The target, on B, opens the session recorded by A (one database).
    bob.send(&format!("SESSION_OPEN {id}"));
    bob.expect_exact(&format!("OK SESSION_OPEN {id}"));

    // The requester asks for a relay on A: bob's token arrives on B.
    alice.send(&format!("RELAY SESSION {id}"));
    alice.expect(&format!("OK RELAY SESSION {id} "));
    bob.expect_event(&format!("EVENT RELAY {id} "));

    // TRANSFER on A reaches bob too; each side ends what it takes part in.
    alice.send("TRANSFER bob");
    let granted = alice.expect("OK TRANSFER ");
    let transfer = granted.split(' ').nth(2).unwrap().to_string();
    let asked = bob.expect_event("EVENT TRANSFER_REQUEST ");
    assert_eq!(asked.split(' ').nth(2), Some(transfer.as_str()));
    bob.send(&format!("SESSION_END {id} closed"));
    bob.expect_exact(&format!("OK SESSION_END {id}"));
}

#[test]
fn with_redis_gone_each_server_keeps_serving_its_own_users() {
    let Some(mut pair) = pair(&[]) else { return };
    let mut alice = Wire::registered(pair.a.addr, "alice", PW, free_port());
    pair._redis.kill();

    // New logins and commands on A still work, among A's own users.
    let mut carol = Wire::registered(pair.a.addr, "carol", PW, free_port());
    wait_list(&mut carol, &["alice", "carol"], WAIT);
    carol.send("CONNECT alice");
    carol.expect("OK SESSION ");
    alice.expect_event("EVENT SESSION_REQUEST ");
    // B too, and it says why it cannot reach the others.
    let mut dave = Wire::registered(pair.b.addr, "dave", PW, free_port());
    dave.ping();
    let deadline = Instant::now() + WAIT;
    while !pair.a.log_text().contains("cluster: Redis failed") {
        assert!(Instant::now() < deadline, "A never logged the outage");
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_resume_on_b_takes_the_login_over_from_a() {
    let Some(pair) = pair(&[]) else { return };
    let mut on_a = Wire::registered(pair.a.addr, "alice", PW, free_port());
    on_a.send("TOKEN");
    let token = on_a.expect("OK TOKEN ");
    let token = token.split(' ').nth(2).unwrap().to_string();
    let mut on_b = Wire::connect(pair.b.addr).named("alice on B");
    on_b.hello();
    on_b.send(&format!("RESUME alice {token}"));
    on_b.expect_exact("OK LOGGED_IN alice");
    let port = free_port();
    on_b.answer_port("alice", port);
    // A cuts its connection (told through Redis), and both servers list her once, on B.
    on_a.expect_closed();
    let mut carol = Wire::registered(pair.a.addr, "carol", PW, free_port());
    wait_list(&mut carol, &["alice", "carol"], WAIT);
    carol.send("INFO alice");
    let info = carol.expect("OK INFO alice ");
    assert_eq!(
        info.split(' ').nth(3),
        Some(format!("127.0.0.1:{port}").as_str())
    );
}

/// `#N name` in a `\list` row, as (N, name).
fn list_row(line: &str) -> (u64, String) {
    let rest = line.trim_start().trim_start_matches('#');
    let (id, name) = rest.split_once(' ').expect("a `#N name` row");
    (id.parse().expect("a numeric id"), name.to_string())
}

#[test]
fn ids_messages_offers_and_search_reach_users_of_the_other_server_at_once() {
    let Some(pair) = pair(&[]) else { return };
    let (lab_a, lab_b) = (Lab::new(&pair.a), Lab::new(&pair.b));
    fs::write(
        lab_b.share_dir("bob").join("holiday-photo.jpg"),
        b"bob's holiday\n",
    )
    .unwrap();
    let mut alice = lab_a.register("alice", &[]);
    let mut bob = lab_b.register_sharing("bob");
    alice.expect("* bob is online");

    // bob's account id (one database) shows on A as on B, not `#0`.
    bob.send("\\list");
    bob.expect("Online users (2):\n");
    let _ = bob.expect_line("alice's row", |l| l.ends_with(" alice"));
    let (bob_id, _) = list_row(&bob.expect_line("bob's row", |l| l.ends_with(" bob (you)")));
    assert_ne!(bob_id, 0);
    alice.send("\\list");
    alice.expect("Online users (2):\n");
    let _ = alice.expect_line("alice's row", |l| l.ends_with(" alice (you)"));
    let row = alice.expect_line("bob's row", |l| l.ends_with(" bob"));
    assert_eq!(list_row(&row), (bob_id, "bob".to_string()), "{row:?}");

    // `\msg <id>` on A reaches bob on B at once, not at his next login.
    alice.send(&format!("\\msg {bob_id} hello bob, from server A"));
    alice.expect("* message to bob delivered");
    bob.expect_line("alice's message through the servers", |l| {
        l.contains("] (via server) alice: hello bob, from server A")
    });
    // And back by name, B to A.
    bob.send("\\msg alice hi alice, B answers");
    bob.expect("* message to alice delivered");
    alice.expect_line("bob's message", |l| {
        l.contains("] (via server) bob: hi alice, B answers")
    });
    // Delivered, so nothing waits in the database for a later login.
    assert!(
        pair.b
            .log_text()
            .contains("delivered to bob from another server")
    );

    // A file offer through the server reaches bob at once, and his answer reaches
    // alice at once (both by pub/sub): the push then starts.
    let path = lab_a.share_dir("alice").join("plans.txt");
    fs::write(&path, b"alice's plans\n").unwrap();
    alice.send(&format!("\\offer bob {}", path.display()));
    alice.expect("* plans.txt offered to bob through the server; it goes once they accept");
    let line = bob.expect_line("the offer", |l| l.contains("] alice offers plans.txt ("));
    let start = line.find('[').unwrap() + 1;
    let offer: u64 = line[start..line.find(']').unwrap()].parse().unwrap();
    bob.send(&format!("\\accept {offer}"));
    let received = lab_b.downloads("bob").join("plans.txt");
    let deadline = Instant::now() + WAIT;
    while fs::read(&received).ok().as_deref() != Some(&b"alice's plans\n"[..]) {
        assert!(
            Instant::now() < deadline,
            "the accepted offer never arrived"
        );
        thread::sleep(Duration::from_millis(100));
    }

    // SEARCH on A finds what bob shares on B, in the usual format.
    alice.send("\\search HOLIDAY");
    alice.expect("Search: 1 match(es):\n");
    let row = alice.expect_line("the search row", |l| l.contains("holiday-photo.jpg"));
    assert!(row.trim_start().starts_with("bob "), "{row:?}");
    // A local file and a remote one together, sorted by user.
    let mut carol = lab_a.register_sharing("carol");
    carol.send("\\search holiday");
    carol.expect("Search: 1 match(es):\n");
    let _ = carol.expect_line("bob's row", |l| l.trim_start().starts_with("bob "));
    let carol_share = lab_a.share_dir("carol");
    fs::write(carol_share.join("holiday-notes.txt"), b"notes\n").unwrap();
    carol.send("\\rescan");
    let deadline = Instant::now() + WAIT;
    loop {
        carol.send("\\search holiday");
        let head = carol.expect_line("the search head", |l| l.starts_with("Search: "));
        let rows: Vec<String> = (0..head
            .trim_start_matches("Search: ")
            .split(' ')
            .next()
            .unwrap()
            .parse::<usize>()
            // "Search: no matches." has no number: none yet.
            .unwrap_or(0))
            .map(|_| carol.expect_line("a row", |_| true))
            .collect();
        let users: Vec<&str> = rows
            .iter()
            .map(|r| r.split_whitespace().next().unwrap())
            .collect();
        if users == ["bob", "carol"] {
            break;
        }
        assert!(Instant::now() < deadline, "search still shows {rows:?}");
        thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_target_on_the_other_server_asked_to_dial_back_does() {
    let Some(pair) = pair(&[]) else { return };
    let lab_b = Lab::new(&pair.b);
    let mut bob = lab_b.register("bob", &[]);
    // alice (raw protocol, on A) listens for real, so bob can dial her back.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut alice = Wire::registered(pair.a.addr, "alice", PW, port).named("alice");
    wait_list(&mut alice, &["alice", "bob"], WAIT);
    alice.send("CONNECT bob");
    let reply = alice.expect("OK SESSION");
    let words: Vec<&str> = reply.split(' ').collect();
    let (id, ticket) = (words[2].to_string(), words[5].to_string());
    // REVERSE on A: EVENT DIAL reaches bob on B (it was refused as not online before).
    alice.send(&format!("REVERSE SESSION {id}"));
    alice.expect_exact(&format!("OK REVERSE SESSION {id}"));
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + WAIT;
    let mut stream = loop {
        match listener.accept() {
            Ok((stream, _)) => break stream,
            Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("bob never dialled back: {e}"),
        }
    };
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while std::io::Read::read_exact(&mut stream, &mut byte).is_ok() && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    stream.set_read_timeout(None).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&line),
        format!("REVERSE SESSION {id}")
    );
    let mut link = Wire::peer_on(stream, &ticket, "bob's dial-back");
    link.send(&format!("HELLO peerchat 1 alice {id} {ticket}"));
    bob.expect("* alice wants to chat");
    bob.send("\\accept alice");
    link.expect("ACCEPT");
    link.send(&format!(
        "MSG {} over a reverse connection across servers",
        1
    ));
    bob.expect_chat(None, "alice", "over a reverse connection across servers");
    bob.send("\\sessions");
    bob.expect("alice (active, reverse)");
}

#[test]
fn a_requester_and_a_target_on_two_servers_meet_at_the_requesters_relay() {
    // Each server runs its own relay, at an address known here.
    let (relay_a, relay_b) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let Some(pair) = pair_each(
        &[],
        &["--relay-listen", &relay_a],
        &["--relay-listen", &relay_b],
    ) else {
        return;
    };
    let lab_a = Lab::new(&pair.a);
    let mut alice = lab_a.register("alice", &[]);
    // bob (raw protocol, on B) announces a port where nothing listens and ignores
    // EVENT DIAL: the requester's client climbs to the relay rung.
    let mut bob = Wire::registered(pair.b.addr, "bob", PW, free_port()).named("bob");
    alice.expect("* bob is online");
    alice.send("\\connect bob");
    let event = bob.expect_event("EVENT SESSION_REQUEST");
    let words: Vec<&str> = event.split(' ').collect();
    let id: u64 = words[2].parse().unwrap();
    let ticket = peerchat::protocol::ticket::Ticket::parse(words[4]).unwrap();
    alice.expect("cannot reach bob directly");
    let dial = bob.expect_event("EVENT DIAL SESSION");
    assert_eq!(
        dial.split(' ').nth(3),
        Some(id.to_string().as_str()),
        "{dial}"
    );
    let invite = bob.expect_event("EVENT RELAY");
    let words: Vec<&str> = invite.split(' ').collect();
    assert_eq!(words[2], id.to_string(), "{invite}");
    // Both ends meet at the relay of the requester's server (A): its tokens are MACed
    // with A's relay secret, which B's relay does not hold.
    assert_eq!(words[3], relay_a, "{invite}");
    assert_ne!(words[3], relay_b);
    let stream = relay_meet(words[3].parse().unwrap(), words[4]);
    let mut link = Wire::accepted_peer(stream, &ticket.to_string(), "bob at A's relay");
    link.expect(&format!("HELLO peerchat 1 alice {id}"));
    link.send(&format!(
        "ACCEPT {}",
        ticket.accept_mac(id, "alice", "bob").to_hex()
    ));
    alice.expect("* session with bob open");
    link.send("MSG 1 hello through the relay from server B");
    alice.expect_chat(None, "bob", "hello through the relay from server B");
    alice.send("and back through it");
    let got = link.expect("MSG");
    assert!(got.ends_with("and back through it"), "{got}");
    alice.send("\\sessions");
    alice.expect("bob (active, relay)");
}
