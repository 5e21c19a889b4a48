//! File offers through the server (issue 13, protocol.md §4d "File offers through the
//! server"): `\offer <user> <path>` without a session; an offer to an offline user waits
//! at the server and the push starts once they log in and accept; answers go back the
//! same way; bounds answer with their codes; a made-up answer from someone else opens
//! nothing. Real binaries.

mod common;

use std::fs;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// Waits (bounded) until `path` holds exactly `want`.
fn wait_for_file(path: &Path, want: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if fs::read(path).ok().as_deref() == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} never held the offered file",
            path.display()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// The number in `* [N] ...`.
fn bracket_id(line: &str) -> u64 {
    let start = line.find('[').expect("[") + 1;
    let end = line[start..].find(']').expect("]") + start;
    line[start..end].parse().unwrap()
}

/// A file of `len` bytes that is not one repeated byte, and its BLAKE3 hash.
fn some_file(path: &Path, len: usize) -> String {
    let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
    fs::write(path, &data).unwrap();
    blake3::hash(&data).to_hex().to_string()
}

/// Waits (bounded) until `path` holds `len` bytes hashing to `want`.
fn wait_for_hash(path: &Path, len: u64, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if fs::metadata(path).is_ok_and(|m| m.len() == len) {
            let got = blake3::hash(&fs::read(path).unwrap()).to_hex().to_string();
            if got == want {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} never held the offered file",
            path.display()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_real_client_offers_a_file_to_an_offline_user_and_it_arrives_after_they_log_in_and_accept() {
    let server = Server::start();
    let lab = Lab::new(&server);
    let mut bob = lab.register("bob", &[]);
    bob.send("\\quit");
    bob.expect("Bye.");
    assert!(bob.wait_exit().success());

    let mut alice = lab.register("alice", &[]);
    let path = lab.share_dir("alice").join("plans.bin");
    let hash = some_file(&path, 3 * 1024 * 1024 + 17);
    alice.send(&format!("\\offer bob {}", path.display()));
    alice.expect("bob is offline: the offer of plans.bin waits at the server");
    alice.send("\\transfers");
    alice.expect("offered through the server, waiting for bob's answer");

    // bob's login shows it as having waited, and he accepts it.
    let mut bob = lab.login("bob", &[]);
    bob.expect("while you were away, alice offered you plans.bin");
    let line = bob.expect_line("the offer", |l| {
        l.starts_with("* [") && l.contains("] alice offers plans.bin (")
    });
    bob.send(&format!("\\accept {}", bracket_id(&line)));
    alice.expect("bob accepted plans.bin; it starts as soon as you are both online");
    wait_for_hash(
        &lab.downloads("bob").join("plans.bin"),
        3 * 1024 * 1024 + 17,
        &hash,
    );
    let id = bracket_id(&line);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        alice.send("\\transfers");
        let shown = alice.expect_line("the push in the list", |l| {
            l.contains(&format!("[{id}]")) && l.contains("plans.bin")
        });
        if shown.contains("done, verified") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "alice's push never ended: {shown}"
        );
        thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn a_refusal_of_a_waiting_offer_reaches_the_real_offerer() {
    let server = Server::start();
    let lab = Lab::new(&server);
    let mut bob = lab.register("bob", &[]);
    bob.send("\\quit");
    bob.expect("Bye.");
    assert!(bob.wait_exit().success());

    let mut alice = lab.register("alice", &[]);
    let path = lab.share_dir("alice").join("draft.txt");
    fs::write(&path, b"draft\n").unwrap();
    alice.send(&format!("\\offer bob {}", path.display()));
    alice.expect("bob is offline: the offer of draft.txt waits at the server");

    let mut bob = lab.login("bob", &[]);
    let line = bob.expect_line("the offer", |l| l.contains("] alice offers draft.txt ("));
    bob.send(&format!("\\decline {}", bracket_id(&line)));
    alice.expect("declined by bob");
    // Answered once: a second answer to it is refused by the server.
    bob.send(&format!("\\accept {}", bracket_id(&line)));
    bob.expect("no file offer");
    assert!(!lab.downloads("bob").join("draft.txt").exists());
}

#[test]
fn an_offer_numbered_by_the_server_waits_and_its_answer_waits_for_the_offerer() {
    // It counts rows in the SQLite file itself.
    if sqlite_only("an_offer_numbered_by_the_server_waits_and_its_answer_waits_for_the_offerer") {
        return;
    }
    let server = Server::start();
    let lab = Lab::new(&server);
    let mut bob = lab.register("bob", &[]);
    bob.send("\\quit");
    bob.expect("Bye.");
    assert!(bob.wait_exit().success());

    let port = free_port();
    let mut alice = Wire::registered(server.addr, "alice", PW, port).named("alice");
    alice.send("OFFER bob - 31 plans.txt");
    let reply = alice.expect("OK OFFER ");
    assert!(reply.ends_with(" queued"), "{reply}");
    let offer: u64 = reply.split(' ').nth(2).unwrap().parse().unwrap();
    let held = || {
        rusqlite::Connection::open(server.db_path())
            .unwrap()
            .query_row("SELECT COUNT(*) FROM held_events", [], |r| {
                r.get::<_, i64>(0)
            })
            .unwrap()
    };
    assert_eq!(held(), 1);
    // Not accepted yet: no transfer for it.
    alice.send(&format!("TRANSFER bob {offer}"));
    alice.expect("ERR 456 NO_SUCH_OFFER");
    alice.quit();

    // bob's login delivers it; he accepts while alice is away.
    let mut bob = lab.login("bob", &[]);
    let line = bob.expect_line("the offer", |l| {
        l.starts_with("* [") && l.contains("] alice offers plans.txt (")
    });
    assert_eq!(bracket_id(&line), offer, "one number on both sides");
    assert_eq!(held(), 0, "a delivered offer stays held");
    bob.send(&format!("\\accept {offer}"));
    thread::sleep(Duration::from_millis(500));

    // alice's next login brings the answer, after EVENT HELD.
    let mut alice = Wire::logged_in(server.addr, "alice", PW, port).named("alice");
    alice.expect_event("EVENT HELD 1");
    alice.expect_event(&format!("EVENT OFFER_ANSWER bob {offer} ok"));
    // The transfer keeps the offer's number, once.
    alice.send(&format!("TRANSFER bob {offer}"));
    alice.expect(&format!("OK TRANSFER {offer} bob "));
    alice.send(&format!("TRANSFER bob {offer}"));
    alice.expect("ERR 456 NO_SUCH_OFFER");

    // An offer past its expiry cannot be answered: bob is told with the code.
    alice.send("OFFER bob - 5 old.txt");
    let reply = alice.expect("OK OFFER ");
    assert!(reply.ends_with(" delivered"), "{reply}");
    let old: u64 = reply.split(' ').nth(2).unwrap().parse().unwrap();
    let line = bob.expect_line("the offer", |l| l.contains("] alice offers old.txt ("));
    assert_eq!(bracket_id(&line), old);
    rusqlite::Connection::open(server.db_path())
        .unwrap()
        .execute("UPDATE open_offers SET expires_at_ms = 0", [])
        .unwrap();
    bob.send(&format!("\\accept {old}"));
    bob.expect(&format!(
        "error: no offer {old} from alice waits for your answer"
    ));
}

#[test]
fn an_offer_to_an_online_user_without_a_session_is_answered_through_the_server() {
    let server = Server::start();
    let lab = Lab::new(&server);
    let mut bob = lab.register("bob", &[]);
    let mut alice = lab.register("alice", &[]);
    let path = lab.share_dir("alice").join("notes.txt");
    fs::write(&path, b"notes\n").unwrap();

    alice.send(&format!("\\offer bob {}", path.display()));
    alice.expect("* notes.txt offered to bob through the server; it goes once they accept");
    let line = bob.expect_line("the offer", |l| l.contains("] alice offers notes.txt ("));
    bob.send(&format!("\\decline {}", bracket_id(&line)));
    alice.expect("declined by bob");
    assert!(!lab.downloads("bob").join("notes.txt").exists());

    // Offered again and accepted: it arrives.
    alice.send(&format!("\\offer bob {}", path.display()));
    let line = bob.expect_line("the offer", |l| l.contains("] alice offers notes.txt ("));
    bob.send(&format!("\\accept {}", bracket_id(&line)));
    wait_for_file(&lab.downloads("bob").join("notes.txt"), b"notes\n");
}

#[test]
fn offer_lines_are_checked_bounded_and_a_made_up_answer_opens_nothing() {
    let server = Server::start();
    let lab = Lab::new(&server);
    let mut mallory = Wire::registered(server.addr, "mallory", PW, free_port()).named("mallory");
    Wire::registered(server.addr, "bob", PW, free_port()).quit();
    let mut carol = Wire::registered(server.addr, "carol", PW, free_port()).named("carol");
    let mut alice = lab.register("alice", &[]);

    mallory.send("OFFER bob 1 10 ../../etc/passwd");
    mallory.expect("ERR 400 BAD_REQUEST unsafe file name");
    mallory.send("OFFER nobody 1 10 a.txt");
    mallory.expect("ERR 450 NO_SUCH_USER");
    mallory.send("OFFER mallory 1 10 a.txt");
    mallory.expect("ERR 400 BAD_REQUEST that is you");
    mallory.send("OFFER_ANSWER bob 1 maybe");
    mallory.expect("ERR 400 BAD_REQUEST");

    // One account may have 8 offers open to bob (465), and 32 may wait for bob in all:
    // four accounts fill them, and the 33rd is refused with 455.
    for i in 0..8 {
        mallory.send(&format!("OFFER bob {i} 10 file{i}.txt"));
        mallory.expect(&format!("OK OFFER {i} queued"));
    }
    mallory.send("OFFER bob 8 10 file8.txt");
    mallory.expect_exact(
        "ERR 465 TOO_MANY_WAITING you have 8 offers to bob waiting for answers already; try later",
    );
    for helper in ["mal2", "mal3", "mal4"] {
        let mut w = Wire::registered(server.addr, helper, PW, free_port()).named(helper);
        for i in 0..8 {
            w.send(&format!("OFFER bob {i} 10 file{i}.txt"));
            w.expect(&format!("OK OFFER {i} queued"));
        }
    }
    let mut mal5 = Wire::registered(server.addr, "mal5", PW, free_port()).named("mal5");
    mal5.send("OFFER bob 99 10 one-more.txt");
    mal5.expect_exact("ERR 455 OFFERS_FULL bob has 32 file offers waiting already; try later");

    // alice offers carol (no session) a file; mallory answers "ok" to every recent offer
    // number: alice's client acts only on answers from the user it offered to, so nothing
    // is pushed to mallory.
    let path = lab.share_dir("alice").join("secret.txt");
    fs::write(&path, b"secret\n").unwrap();
    alice.send(&format!("\\offer carol {}", path.display()));
    alice.expect("offered to carol through the server");
    let offer = carol.expect_event("EVENT OFFER alice");
    let number: u64 = offer.split(' ').nth(3).unwrap().parse().unwrap();
    for offer in number.saturating_sub(2)..number + 2 {
        mallory.send(&format!("OFFER_ANSWER alice {offer} ok"));
        mallory.expect("ERR 456 NO_SUCH_OFFER");
        mallory.send(&format!("TRANSFER alice {offer}"));
        mallory.expect("ERR 456 NO_SUCH_OFFER");
    }
    mallory.send("OFFER_ANSWER alice 999999 no");
    mallory.expect_exact(
        "ERR 456 NO_SUCH_OFFER no offer 999999 from alice waits for your answer (unknown, expired or answered)",
    );
    // carol's answer to it is taken once; an expired offer is refused like an unknown one.
    carol.send(&format!("OFFER_ANSWER alice {number} no"));
    carol.expect(&format!("OK OFFER_ANSWER {number}"));
    carol.send(&format!("OFFER_ANSWER alice {number} ok"));
    carol.expect("ERR 456 NO_SUCH_OFFER");
    alice.expect("declined by carol");
    mallory.ping();
    thread::sleep(Duration::from_millis(500));
    mallory.ping();
    let events = mallory.take_events();
    assert!(
        !events
            .iter()
            .any(|e| e.starts_with("EVENT TRANSFER_REQUEST")),
        "alice asked to push to mallory: {events:?}"
    );
    alice.send("\\transfers");
    alice.expect("secret.txt");
    assert!(!alice.output().contains("push secret.txt to mallory"));
}
