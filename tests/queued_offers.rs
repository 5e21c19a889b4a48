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

#[test]
fn an_offer_to_an_offline_user_waits_at_the_server_and_is_shown_and_answered_at_login() {
    // It counts rows in the SQLite file itself.
    if sqlite_only(
        "an_offer_to_an_offline_user_waits_at_the_server_and_is_shown_and_answered_at_login",
    ) {
        return;
    }
    let server = Server::start();
    let lab = Lab::new(&server);
    let mut bob = lab.register("bob", &[]);
    bob.send("\\quit");
    bob.expect("Bye.");
    assert!(bob.wait_exit().success());

    // The offerer speaks the wire itself: peerchat-client asks TRANSFER (which needs the
    // user online) before it offers, so its own offers to offline users wait for a fix.
    let mut alice = Wire::registered(server.addr, "alice", PW, free_port()).named("alice");
    alice.send("OFFER bob 41 31 plans.txt");
    alice.expect_exact("OK OFFER 41 queued");
    let held = || {
        rusqlite::Connection::open(server.db_path())
            .unwrap()
            .query_row("SELECT COUNT(*) FROM held_events", [], |r| {
                r.get::<_, i64>(0)
            })
            .unwrap()
    };
    assert_eq!(held(), 1);

    // bob's login delivers it; he sees the usual offer line and accepts it.
    let mut bob = lab.login("bob", &[]);
    let line = bob.expect_line("the offer", |l| {
        l.starts_with("* [") && l.contains("] alice offers plans.txt (")
    });
    assert_eq!(held(), 0, "a delivered offer stays held");
    bob.send(&format!("\\accept {}", bracket_id(&line)));
    // The answer goes back through the server (bob has no session with alice).
    alice.expect_event("EVENT OFFER_ANSWER bob 41 ok");
    // Nothing arrives without the offerer's push.
    assert!(!lab.downloads("bob").join("plans.txt").exists());
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

    // 32 offers may wait for bob; the 33rd is refused (paced under the SEND rate).
    for i in 0..32 {
        if i == 25 {
            thread::sleep(Duration::from_millis(1600));
        }
        mallory.send(&format!("OFFER bob {i} 10 file{i}.txt"));
        mallory.expect(&format!("OK OFFER {i} queued"));
    }
    mallory.send("OFFER bob 99 10 one-more.txt");
    mallory.expect_exact("ERR 455 OFFERS_FULL bob has 32 file offers waiting already; try later");

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
        mallory.expect(&format!("OK OFFER_ANSWER {offer}"));
    }
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
