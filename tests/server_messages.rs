//! Messages by id through the server (issue 13, protocol.md §4d): `\msg <id|user>`
//! seals the text to the recipient's identity key, the server relays or queues only
//! ciphertext, a queued message survives a restart and arrives at login under "while
//! you were away", forged or tampered messages are refused by the recipient, and the
//! mailbox bounds, size and rate limits answer with their codes. Real binaries.

mod common;

use std::fs;
use std::path::Path;

use common::*;
use peerchat::client::core::replay;
use peerchat::crypto::noise::generate_keypair;
use peerchat::crypto::sealed;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// What a client seals: a fresh message id and the send time, then the text.
fn payload(text: &str) -> Vec<u8> {
    replay::wrap(&replay::new_id().unwrap(), now_ms(), text)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// A raw connection logged in as `name` that registered a fresh identity key.
fn keyed(server: &Server, name: &str) -> (Wire, [u8; 32], [u8; 32]) {
    let (private, public) = generate_keypair().unwrap();
    let mut w = Wire::registered(server.addr, name, PW, free_port()).named(name);
    w.send(&format!("KEY {}", hex(&public)));
    w.expect_exact("OK KEY");
    (w, private, public)
}

/// The public key in the key file a real client made for `name`.
fn client_key(lab: &Lab, name: &str) -> String {
    let text = fs::read_to_string(lab.data_dir(name).join(name).join("identity.key")).unwrap();
    text.lines().nth(1).unwrap().to_string()
}

/// `WHOIS` → (id, key bytes).
fn whois(w: &mut Wire, user: &str) -> (u64, [u8; 32]) {
    w.send(&format!("WHOIS {user}"));
    let line = w.expect("OK WHOIS");
    let words: Vec<&str> = line.split(' ').collect();
    assert_eq!(words.len(), 6, "{line:?}");
    let key: [u8; 32] = unhex(words[4]).try_into().expect("a key");
    (words[2].parse().unwrap(), key)
}

/// Every byte of the server's database files (the WAL holds recent writes).
fn db_bytes(db: &Path) -> Vec<u8> {
    let mut all = fs::read(db).unwrap();
    for extra in ["-wal", "-shm"] {
        let path = format!("{}{extra}", db.display());
        if let Ok(bytes) = fs::read(&path) {
            all.extend(bytes);
        }
    }
    all
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A line of the client's output: `[HH:MM:SS] (via server) <from>: <text>`.
fn is_via_server(line: &str, from: &str, text: &str) -> bool {
    line.starts_with('[')
        && line.len() > 11
        && line[10..] == format!(" (via server) {from}: {text}")
}

#[test]
fn a_message_by_id_reaches_an_online_user_sealed_end_to_end() {
    let server = Server::start();
    let lab = Lab::new(&server);
    let (mut bob, bob_private, _) = keyed(&server, "bob");
    let mut alice = lab.register("alice", &[]);
    let alice_key = client_key(&lab, "alice");

    // The id `\list` shows is what `\msg` takes.
    alice.send("\\list");
    let row = alice.expect_line("bob's row", |l| l.starts_with("  #") && l.ends_with(" bob"));
    let id: u64 = row
        .trim_start_matches("  #")
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    bob.send("LIST");
    let head = bob.expect("OK LIST");
    let n: usize = head.split(' ').nth(2).unwrap().parse().unwrap();
    let body: Vec<String> = (0..n).map(|_| bob.next_reply()).collect();
    assert!(body.contains(&format!("USER bob {id}")), "{body:?}");

    const SECRET: &str = "the vault code is 7311 ünïcode";
    alice.send(&format!("\\msg {id} {SECRET}"));
    alice.expect("* message to bob delivered");

    // What the server sent bob (the server link's contents inside TLS) is ciphertext.
    let event = bob.expect_event("EVENT MESSAGE");
    let words: Vec<&str> = event.split(' ').collect();
    assert_eq!(words.len(), 7, "{event:?}");
    assert_eq!(words[3], "alice", "{event:?}");
    assert_eq!(words[5], alice_key, "the server's key for alice");
    assert!(
        // "vault": letters that cannot occur in hex or in a number by chance.
        !event.contains("vault"),
        "{event:?}"
    );
    let sealed_bytes = unhex(words[6]);
    assert!(!contains(&sealed_bytes, SECRET.as_bytes()));
    // Only bob's key opens it, and it proves alice's key sealed it.
    let opened = sealed::open(&bob_private, "alice", "bob", &sealed_bytes).unwrap();
    // Inside: a message id and the send time, then the text.
    let (_, sent, text) = replay::unwrap(&opened.text).unwrap();
    assert_eq!(text, SECRET.as_bytes());
    assert!(sent.abs_diff(now_ms()) < 600_000, "send time {sent}");
    assert_eq!(hex(&opened.sender_key), alice_key);
    assert!(
        // Not "7311": a port, an id or a hex key in the log may hold those digits.
        !server.log_text().contains("vault"),
        "the server logged the text"
    );

    // A reply from bob's raw connection, sealed to alice's key, shows as via server.
    let (alice_id, alice_pub) = whois(&mut bob, "alice");
    let reply = sealed::seal(&bob_private, "bob", "alice", &alice_pub, &payload("got it")).unwrap();
    bob.send(&format!("SEND {alice_id} {}", hex(&reply)));
    bob.expect("OK SENT");
    // bob's raw connection registered a key the server hands on: it verifies.
    alice.expect_line("bob's reply", |l| is_via_server(l, "bob", "got it"));
    // Both are kept in alice's history with bob, marked.
    alice.send("\\history bob");
    alice.expect(&format!("alice: (via server) {SECRET}"));
    alice.expect("bob: (via server) got it");

    // The client refuses what the server would: too long, to nobody, to itself.
    alice.send(&format!("\\msg bob {}", "x".repeat(1025)));
    alice.expect(
        "error: message to bob not sent: a message through the server holds at most 1024 bytes",
    );
    alice.send("\\msg nobody hi");
    alice.expect("error: message to nobody not sent: no user has the name or id nobody");
    alice.send("\\msg alice hi");
    alice.expect("error: message to alice not sent: that is you");
}

#[test]
fn a_queued_message_is_only_ciphertext_at_the_server_survives_a_restart_and_arrives_at_login() {
    // It counts rows in the SQLite file itself.
    if sqlite_only(
        "a_queued_message_is_only_ciphertext_at_the_server_survives_a_restart_and_arrives_at_login",
    ) {
        return;
    }
    let mut server = Server::start();
    let lab = Lab::new(&server);
    let mut bob = lab.register("bob", &[]);
    bob.send("\\quit");
    bob.expect("Bye.");
    assert!(bob.wait_exit().success());
    let mut alice = lab.register("alice", &[]);

    const SECRET: &str = "meet me at the old mill at nine";
    alice.send(&format!("\\msg bob {SECRET}"));
    alice.expect("* message to bob queued: bob is offline");
    alice.send("\\msg bob second one");
    alice.expect("* message to bob queued");

    // The server holds it, and holds only ciphertext.
    let db = server.db_path();
    let rows: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT COUNT(*) FROM mailbox", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 2);
    let bytes = db_bytes(&db);
    assert!(
        !contains(&bytes, SECRET.as_bytes()),
        "plaintext in the database"
    );
    assert!(!contains(&bytes, b"old mill"), "plaintext in the database");
    assert!(!server.log_text().contains("old mill"));

    // A restart loses nothing; bob's login delivers both, once.
    server.kill();
    let server2 = server.restart_same_addr();
    let mut bob = lab.login("bob", &[]);
    bob.expect("* while you were away (2 messages through the server):");
    bob.expect_line("the first", |l| is_via_server(l, "alice", SECRET));
    bob.expect_line("the second", |l| is_via_server(l, "alice", "second one"));
    let rows: i64 = rusqlite::Connection::open(server2.db_path())
        .unwrap()
        .query_row("SELECT COUNT(*) FROM mailbox", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 0, "delivered messages stay at the server");
    bob.send("\\quit");
    bob.expect("Bye.");
    assert!(bob.wait_exit().success());
    let mut bob = lab.login("bob", &[]);
    bob.send("\\list");
    bob.expect("Online users");
    assert!(
        !bob.output().contains("while you were away"),
        "delivered twice: {}",
        bob.output()
    );
}

#[test]
fn forged_or_tampered_messages_are_refused_with_a_warning() {
    let server = Server::start();
    let lab = Lab::new(&server);
    let mut bob = lab.register("bob", &[]);
    let bob_key: [u8; 32] = unhex(&client_key(&lab, "bob")).try_into().unwrap();
    let (mut mallory, mallory_private, _) = keyed(&server, "mallory");
    let (other_private, _) = generate_keypair().unwrap();
    let send = |w: &mut Wire, sealed: &[u8]| {
        w.send(&format!("SEND bob {}", hex(sealed)));
        w.expect("OK SENT");
    };

    // Sealed with a key that is not the one mallory registered.
    let forged = sealed::seal(
        &other_private,
        "mallory",
        "bob",
        &bob_key,
        &payload("forged one"),
    )
    .unwrap();
    send(&mut mallory, &forged);
    bob.expect("warning: a message through the server said to be from mallory was refused: it was sealed with a key that is not mallory's identity key");

    // Made to look as if alice wrote it (the names are bound into the message).
    let as_alice = sealed::seal(
        &mallory_private,
        "alice",
        "bob",
        &bob_key,
        &payload("forged two"),
    )
    .unwrap();
    send(&mut mallory, &as_alice);
    bob.expect("warning: a message through the server said to be from mallory was refused: it does not open with your key");

    // One byte changed on the way.
    let mut changed = sealed::seal(
        &mallory_private,
        "mallory",
        "bob",
        &bob_key,
        &payload("forged three"),
    )
    .unwrap();
    let last = changed.len() - 1;
    changed[last] ^= 1;
    send(&mut mallory, &changed);
    bob.expect("warning: a message through the server said to be from mallory was refused: it does not open with your key");

    // The real thing is shown.
    let real = sealed::seal(
        &mallory_private,
        "mallory",
        "bob",
        &bob_key,
        &payload("honest"),
    )
    .unwrap();
    send(&mut mallory, &real);
    bob.expect_line("the honest message", |l| {
        is_via_server(l, "mallory", "honest")
    });

    // The same sealed bytes handed over again (a replay): refused, shown once.
    send(&mut mallory, &real);
    bob.expect("warning: a message through the server said to be from mallory was refused: it is a copy of a message already shown");
    // An old message (dated past the mailbox's 7 days), or one with no id at all.
    let old = replay::wrap(
        &replay::new_id().unwrap(),
        now_ms() - 8 * 86_400_000,
        "stale",
    );
    let old = sealed::seal(&mallory_private, "mallory", "bob", &bob_key, &old).unwrap();
    send(&mut mallory, &old);
    bob.expect("warning: a message through the server said to be from mallory was refused: it was sent more than 7 days ago");
    let bare = sealed::seal(&mallory_private, "mallory", "bob", &bob_key, b"no id").unwrap();
    send(&mut mallory, &bare);
    bob.expect("warning: a message through the server said to be from mallory was refused: it carries no message id and send time");
    let real = sealed::seal(
        &mallory_private,
        "mallory",
        "bob",
        &bob_key,
        &payload("honest"),
    )
    .unwrap();

    // A key that differs from bob's pin for mallory is refused (the pin hook).
    let pins = lab.data_dir("bob").join("bob").join("peer-keys");
    fs::write(&pins, format!("mallory {}\n", "ab".repeat(32))).unwrap();
    send(&mut mallory, &real);
    bob.expect("warning: a message through the server said to be from mallory was refused: mallory's key is not the one you pinned");

    let shown = bob.output();
    for text in ["forged one", "forged two", "forged three", "stale", "no id"] {
        assert!(!shown.contains(text), "{text} was shown: {shown}");
    }
    assert_eq!(
        shown.matches("(via server) mallory: honest").count(),
        1,
        "{shown}"
    );
}

#[test]
fn mailbox_bounds_sizes_and_rates_are_enforced_with_their_codes() {
    let server = Server::builder()
        .args(&["--mailbox-per-user", "2", "--mailbox-total", "3"])
        .start();
    let lab = Lab::new(&server);
    let mut alice = Wire::registered(server.addr, "alice", PW, free_port()).named("alice");
    keyed(&server, "bob").0.quit();
    Wire::registered(server.addr, "carol", PW, free_port()).quit();
    let (bob_id, _) = {
        alice.send("WHOIS BOB");
        let line = alice.expect("OK WHOIS");
        assert!(
            line.ends_with(" offline") && line.contains(" bob "),
            "{line:?}"
        );
        (line.split(' ').nth(2).unwrap().parse::<u64>().unwrap(), ())
    };
    alice.send(&format!("SEND {bob_id} 00ff"));
    let first = alice.expect("OK SENT");
    assert!(first.ends_with(" queued"), "{first:?}");
    alice.send("SEND bob 01");
    alice.expect("OK SENT");
    alice.send("SEND bob 02");
    alice.expect_exact("ERR 451 MAILBOX_FULL bob has 2 messages waiting already; try later");
    alice.send("SEND carol 03");
    alice.expect("OK SENT");
    alice.send("SEND carol 04");
    alice.expect_exact("ERR 452 MAILBOXES_FULL the server holds 3 waiting messages; try later");
    alice.send("SEND nobody 00");
    alice.expect("ERR 450 NO_SUCH_USER");
    alice.send("SEND 99999 00");
    alice.expect("ERR 450 NO_SUCH_USER");
    alice.send("WHOIS nobody");
    alice.expect("ERR 450 NO_SUCH_USER");
    alice.send(&format!("SEND bob {}", "00".repeat(1201)));
    alice.expect("ERR 453 MESSAGE_TOO_LARGE");
    alice.send("SEND bob xyz");
    alice.expect("ERR 400 BAD_REQUEST");
    alice.send("SEND alice 00");
    alice.expect("ERR 400 BAD_REQUEST that is you");

    // A real client says plainly why its message was not taken.
    let mut dave = lab.register("dave", &[]);
    Wire::registered(server.addr, "erin", PW, free_port()).quit();
    dave.send("\\msg bob hello");
    dave.expect("error: message to bob not sent: bob has 2 messages waiting already; try later");
    dave.send("\\msg erin hello");
    dave.expect("error: message to erin not sent: erin has no identity key yet");

    // Nobody can flood a recipient: past the burst, SEND is refused for a while.
    let (mut target, _, _) = keyed(&server, "target");
    let mut refused = 0;
    for _ in 0..40 {
        alice.send("SEND target 00");
    }
    for _ in 0..40 {
        let reply = alice.expect_one_of(&["OK SENT", "ERR 454 TOO_MANY_MESSAGES"]);
        if reply.starts_with("ERR 454") {
            refused += 1;
        }
    }
    assert!(refused >= 1, "40 SENDs at once were all taken");
    // The burst is 30, a few of which the SENDs above spent.
    assert!(refused <= 20, "{refused} of 40 refused");
    // The recipient got the ones taken and is still connected.
    target.ping();
    let delivered = target
        .take_events()
        .iter()
        .filter(|e| e.starts_with("EVENT MESSAGE "))
        .count();
    assert_eq!(delivered, 40 - refused);
}

#[test]
fn a_delivered_message_put_back_into_the_mailbox_is_refused_after_a_restart() {
    // It copies a row of the SQLite file itself.
    if sqlite_only("a_delivered_message_put_back_into_the_mailbox_is_refused_after_a_restart") {
        return;
    }
    let server = Server::start();
    let lab = Lab::new(&server);
    let mut bob = lab.register("bob", &[]);
    bob.send("\\quit");
    bob.expect("Bye.");
    assert!(bob.wait_exit().success());
    let mut alice = lab.register("alice", &[]);
    alice.send("\\msg bob transfer 500 to account 12");
    alice.expect("* message to bob queued");

    // Capture the queued row, as a malicious server (or anyone who can write the
    // mailbox) could.
    type Row = (i64, String, Option<String>, i64, i64, Vec<u8>);
    let db = server.db_path();
    let row: Row = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row(
            "SELECT recipient_id, sender, sender_key, sent_at_ms, expires_at_ms, sealed FROM mailbox",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
        )
        .unwrap();

    let mut bob = lab.login("bob", &[]);
    bob.expect_line("the message", |l| {
        is_via_server(l, "alice", "transfer 500 to account 12")
    });
    bob.send("\\quit");
    bob.expect("Bye.");
    assert!(bob.wait_exit().success());

    // Put back: delivered again at bob's next login, to a restarted client.
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute(
            "INSERT INTO mailbox (recipient_id, sender, sender_key, sent_at_ms, expires_at_ms, sealed)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            rusqlite::params![row.0, row.1, row.2, row.3, row.4, row.5],
        )
        .unwrap();
    let mut bob = lab.login("bob", &[]);
    bob.expect("warning: a message through the server said to be from alice was refused: it is a copy of a message already shown");
    bob.send("\\history alice");
    bob.expect("alice: (via server) transfer 500 to account 12");
    let shown = bob.output();
    assert_eq!(
        shown
            .lines()
            .filter(|l| is_via_server(l, "alice", "transfer 500 to account 12"))
            .count(),
        0,
        "shown again as a new message: {shown}"
    );
    bob.send("\\quit");
    bob.expect("Bye.");
    assert!(bob.wait_exit().success());
}

/// `SEND` with the sealed bytes, waiting out the per-user rate limit (`454`).
fn send_paced(w: &mut Wire, to: &str, sealed: &[u8]) {
    loop {
        w.send(&format!("SEND {to} {}", hex(sealed)));
        let reply = w.expect_one_of(&["OK SENT", "ERR 454 TOO_MANY_MESSAGES"]);
        if reply.starts_with("OK SENT") {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

/// The message ids in a `seen-messages` file once it holds `n` of them (the client
/// opens it just after its welcome), in its order.
fn seen_ids_when(file: &Path, n: usize) -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let ids = seen_ids(file);
        if ids.len() == n || std::time::Instant::now() > deadline {
            return ids;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The message ids in a `seen-messages` file, in its order (without the senders'
/// floors, `<sender> * <sent-ms>`).
fn seen_ids(file: &Path) -> Vec<String> {
    fs::read_to_string(file)
        .unwrap()
        .lines()
        .map(|l| l.split(' ').nth(1).expect("an id").to_string())
        .filter(|id| id != "*")
        .collect()
}

/// The floor a `seen-messages` file holds for `sender`: the newest send time among
/// their ids forgotten.
fn seen_floor(file: &Path, sender: &str) -> Option<u64> {
    fs::read_to_string(file).unwrap().lines().find_map(|l| {
        let w: Vec<&str> = l.split(' ').collect();
        (w.len() == 3 && w[0] == sender && w[1] == "*").then(|| w[2].parse().expect("a time"))
    })
}

/// The replay guard's record (`<data-dir>/<user>/seen-messages`, the last 10,000 ids)
/// attacked through one account: it is already full (12,000 ids of carol's messages of
/// the last hour) when mallory sends 40 messages. The file stays bounded, the oldest ids
/// age out first (at the next start), and a replay of a recent message is refused, also
/// after a restart.
#[test]
fn the_seen_messages_record_stays_bounded_and_recent_replays_are_still_refused() {
    let server = Server::start();
    let lab = Lab::new(&server);
    let mut bob = lab.register("bob", &[]);
    let bob_key: [u8; 32] = unhex(&client_key(&lab, "bob")).try_into().unwrap();
    bob.send("\\quit");
    bob.wait_exit();
    let file = lab.data_dir("bob").join("bob").join(replay::SEEN_FILE);
    let now = now_ms();
    let carol: Vec<String> = (0..12_000u64).map(|i| format!("{i:032x}")).collect();
    let text: String = carol
        .iter()
        .enumerate()
        .map(|(i, id)| format!("carol {id} {}\n", now - 3_600_000 + i as u64))
        .collect();
    fs::write(&file, text).unwrap();

    // At start the record keeps the newest `SEEN_KEPT` and the file is cut to them.
    let mut bob = lab.login("bob", &[]);
    let kept = seen_ids_when(&file, replay::SEEN_KEPT);
    assert_eq!(kept.len(), replay::SEEN_KEPT);
    assert_eq!(kept[0], carol[12_000 - replay::SEEN_KEPT]);
    // What was forgotten of carol's is still refused: her floor is the newest of them.
    let carol_sent = |i: usize| now - 3_600_000 + i as u64;
    assert_eq!(
        seen_floor(&file, "carol"),
        Some(carol_sent(12_000 - replay::SEEN_KEPT - 1))
    );

    let (mut mallory, mallory_private, _) = keyed(&server, "mallory");
    let mut sent = Vec::new();
    for i in 0..40 {
        let id = replay::new_id().unwrap();
        let payload = replay::wrap(&id, now_ms(), &format!("flood {i}"));
        let sealed = sealed::seal(&mallory_private, "mallory", "bob", &bob_key, &payload).unwrap();
        send_paced(&mut mallory, "bob", &sealed);
        sent.push((id, sealed));
    }
    bob.expect_line("the last of mallory's messages", |l| {
        is_via_server(l, "mallory", "flood 39")
    });
    let ids = seen_ids(&file);
    assert!(
        ids.len() <= replay::SEEN_FILE_MAX_LINES,
        "{} lines",
        ids.len()
    );
    for (id, _) in &sent {
        assert!(ids.contains(id), "{id} was not recorded");
    }
    // The newest message handed over again: refused.
    send_paced(&mut mallory, "bob", &sent[39].1);
    bob.expect("warning: a message through the server said to be from mallory was refused: it is a copy of a message already shown");

    // After a restart the file holds the newest `SEEN_KEPT` again: the oldest of carol's
    // aged out, mallory's are all there, and a replay of one is still refused.
    bob.send("\\quit");
    bob.wait_exit();
    let mut bob = lab.login("bob", &[]);
    let ids = seen_ids_when(&file, replay::SEEN_KEPT);
    assert_eq!(ids.len(), replay::SEEN_KEPT);
    let oldest_kept = 12_000 - replay::SEEN_KEPT + sent.len();
    assert_eq!(ids[0], carol[oldest_kept]);
    assert!(!ids.contains(&carol[oldest_kept - 1]));
    assert_eq!(
        seen_floor(&file, "carol"),
        Some(carol_sent(oldest_kept - 1))
    );
    for (id, _) in &sent {
        assert!(ids.contains(id), "{id} was forgotten");
    }
    send_paced(&mut mallory, "bob", &sent[0].1);
    bob.expect("warning: a message through the server said to be from mallory was refused: it is a copy of a message already shown");
    assert_eq!(
        bob.output()
            .matches("(via server) mallory: flood 0\n")
            .count(),
        0
    );
}
