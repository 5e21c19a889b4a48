//! Identity keys on the server (issue 12, protocol.md §4 "Identity keys"): the client
//! makes its X25519 key at the first login and registers it with `KEY` after every
//! login; the server stores it with the account and hands the other user's key on in
//! `INFO` and the four grant lines. Real server and client binaries.

mod common;

use std::fs;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// The public key (hex) in `name`'s key file, which the real client made.
fn public_key_of(lab: &Lab, name: &str) -> String {
    let path = lab.data_dir(name).join(name).join("identity.key");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let public = text.lines().nth(1).expect("a public key line").to_string();
    assert_eq!(public.len(), 64, "{public:?}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the key file is readable by others");
    }
    public
}

/// The key field of `INFO <user>`.
fn key_in_info(w: &mut Wire, user: &str) -> String {
    w.send(&format!("INFO {user}"));
    let line = w.expect(&format!("OK INFO {user}"));
    let words: Vec<&str> = line.split(' ').collect();
    assert_eq!(words.len(), 5, "{line:?}");
    words[4].to_string()
}

/// Waits (bounded) until `INFO <user>` shows `want`: the client sends `KEY` just after
/// its login, so the first `INFO` may come before it (or before it is online).
fn wait_for_key(w: &mut Wire, user: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // A client that has just (re)connected may not be online yet: it says so on its
        // login, before it gives its port.
        w.send(&format!("INFO {user}"));
        let line = w.expect_one_of(&[&format!("OK INFO {user} "), "ERR 404 "]);
        let got = match line.strip_prefix("OK INFO ") {
            Some(_) => line.rsplit(' ').next().unwrap().to_string(),
            None => String::new(),
        };
        if got == want {
            return;
        }
        if Instant::now() > deadline {
            w.fail(&format!("INFO {user} shows key {got}, not {want}"));
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// The last word of a line.
fn last_word(line: &str) -> &str {
    line.rsplit(' ').next().unwrap()
}

/// The key field of a grant line (`OK SESSION|TRANSFER ... <key> <hints>`): the address
/// hints follow it (protocol.md §13).
fn key_in_grant(line: &str) -> &str {
    let words: Vec<&str> = line.split(' ').collect();
    assert_eq!(words.len(), 8, "{line:?}");
    words[6]
}

const K1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const K2: &str = "ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789";
const K3: &str = "3333333333333333333333333333333333333333333333333333333333333333";

#[test]
fn a_real_client_registers_its_key_and_others_get_it_in_info_and_grants() {
    let server = Server::start();
    let lab = Lab::new(&server);
    let mut alice = lab.register("alice", &[]);
    let alice_key = public_key_of(&lab, "alice");
    let mut bob = Wire::registered(server.addr, "bob", PW, free_port()).named("bob");
    bob.send(&format!("KEY {K3}"));
    bob.expect_exact("OK KEY");
    wait_for_key(&mut bob, "alice", &alice_key);

    // bob asks: his grant carries alice's key.
    bob.send("CONNECT alice");
    let grant = bob.expect("OK SESSION");
    assert_eq!(grant.split(' ').count(), 8, "{grant:?}");
    assert_eq!(key_in_grant(&grant), alice_key, "{grant:?}");
    bob.send("TRANSFER alice");
    let grant = bob.expect("OK TRANSFER");
    assert_eq!(key_in_grant(&grant), alice_key, "{grant:?}");

    // alice asks: bob's event carries alice's key; alice's client parsed its own grant
    // (with bob's key) and says it is trying to reach bob.
    alice.send("\\connect bob");
    let event = bob.expect_event("EVENT SESSION_REQUEST");
    assert_eq!(event.split(' ').count(), 6, "{event:?}");
    assert_eq!(last_word(&event), alice_key, "{event:?}");
    alice.expect("* asking bob to chat...");

    // The client shows the key the server has for a user, as a fingerprint.
    let k3: [u8; 32] = [0x33; 32];
    let fingerprint = peerchat::crypto::identity::key_fingerprint(&k3);
    alice.send("\\info bob");
    alice.expect(&format!("(identity key {fingerprint})"));
}

#[test]
fn a_changed_key_replaces_the_old_one_and_a_malformed_key_changes_nothing() {
    let server = Server::start();
    let mut alice = Wire::registered(server.addr, "alice", PW, free_port()).named("alice");
    let mut bob = Wire::registered(server.addr, "bob", PW, free_port()).named("bob");
    // No key yet: `-`.
    assert_eq!(key_in_info(&mut bob, "alice"), "-");
    alice.send(&format!("KEY {K1}"));
    alice.expect_exact("OK KEY");
    assert_eq!(key_in_info(&mut bob, "alice"), K1);

    for bad in [
        "KEY".to_string(),
        "KEY xyz".to_string(),
        format!("KEY {}", &K1[1..]),
        format!("KEY {K1}0"),
        format!("KEY {}", "g".repeat(64)),
        format!("KEY {K1} {K1}"),
    ] {
        alice.send(&bad);
        let reply = alice.expect("ERR 400 BAD_REQUEST");
        assert!(reply.contains("usage: KEY <key>"), "{bad}: {reply:?}");
    }
    assert_eq!(
        key_in_info(&mut bob, "alice"),
        K1,
        "a refused KEY changed the key"
    );

    // A new device: the key is replaced (and shown in lower case).
    alice.send(&format!("KEY {K2}"));
    alice.expect_exact("OK KEY");
    let k2 = K2.to_ascii_lowercase();
    assert_eq!(key_in_info(&mut bob, "alice"), k2);

    // Both grant lines of both kinds carry the other user's key, `-` for none.
    bob.send("CONNECT alice");
    assert_eq!(key_in_grant(&bob.expect("OK SESSION")), k2);
    assert_eq!(last_word(&alice.expect_event("EVENT SESSION_REQUEST")), "-");
    bob.send(&format!("KEY {K3}"));
    bob.expect_exact("OK KEY");
    alice.send("TRANSFER bob");
    assert_eq!(key_in_grant(&alice.expect("OK TRANSFER")), K3);
    assert_eq!(last_word(&bob.expect_event("EVENT TRANSFER_REQUEST")), k2);
}

#[test]
fn keys_survive_a_restart_and_a_resumed_client_registers_its_key_again() {
    let mut server = Server::start();
    let lab = Lab::new(&server);
    let mut alice = lab.register("alice", &[]);
    let alice_key = public_key_of(&lab, "alice");
    let mut bob = Wire::registered(server.addr, "bob", PW, free_port()).named("bob");
    bob.send(&format!("KEY {K1}"));
    bob.expect_exact("OK KEY");
    wait_for_key(&mut bob, "alice", &alice_key);

    server.kill();
    alice.expect("* lost the connection to the server");
    // Forget alice's key behind the server's back: only her client can bring it back.
    const FORGET: &str = "UPDATE users SET identity_key = NULL WHERE username = 'alice'";
    let changed = match pg_url_of(&server.db_path()) {
        Some(url) => postgres::Client::connect(&url, postgres::NoTls)
            .unwrap()
            .execute(FORGET, &[])
            .unwrap() as usize,
        None => rusqlite::Connection::open(server.db_path())
            .unwrap()
            .execute(FORGET, [])
            .unwrap(),
    };
    assert_eq!(changed, 1);

    let server2 = server.restart_same_addr();
    let mut bob = Wire::logged_in(server2.addr, "bob", PW, free_port()).named("bob again");
    // bob's key was stored, not just remembered by his connection.
    assert_eq!(key_in_info(&mut bob, "bob"), K1);
    alice.send("\\reconnect");
    alice.expect("* reconnected to the server");
    wait_for_key(&mut bob, "alice", &alice_key);
    // The same key as before: the client keeps it in its data folder.
    assert_eq!(public_key_of(&lab, "alice"), alice_key);
}

/// The race of issue 12's key registration: a client whose key file was replaced (a new
/// device) logs in while a peer asks for it the moment it is online. The server must
/// name the NEW key from that moment on (`INFO`, and the grant a real peer dials with),
/// so the peer never refuses the new key as one the server did not name, and the session
/// opens. Before the key travelled inside the login, the server knew it only when the
/// client's `KEY` line came after `OK WELCOME`, and handed out the old one meanwhile.
#[test]
fn a_client_with_a_new_key_file_is_known_by_its_new_key_the_moment_it_is_online() {
    let server = Server::start();
    let lab = Lab::new(&server);
    let mut watcher = Wire::registered(server.addr, "carol", PW, free_port()).named("carol");
    let key_file = lab.data_dir("alice").join("alice").join("identity.key");
    // alice's first device: its key is what the server stores.
    let mut first = lab.register("alice", &[]);
    let first_key = public_key_of(&lab, "alice");
    wait_for_key(&mut watcher, "alice", &first_key);
    quit(&mut first);
    quit(&mut lab.register("bob", &[]));
    let mut keys = vec![first_key];
    for round in 0..4 {
        // Nobody pins anything across rounds (a changed pin would be a true warning).
        for name in ["alice", "bob"] {
            let _ = fs::remove_file(lab.data_dir(name).join(name).join("peer-keys"));
        }
        fs::remove_file(&key_file).unwrap();
        wait_until_offline(&mut watcher, "alice");
        let mut bob = lab.login("bob", &[]).named(&format!("bob {round}"));
        let (mut alice, seen) = thread::scope(|s| {
            let login = s.spawn(|| lab.login("alice", &[]).named(&format!("alice {round}")));
            // Ask as fast as the server answers, and bob connects the moment alice is
            // online: the window is between her welcome and her client's next lines.
            let seen = loop {
                watcher.send("INFO alice");
                let line = watcher.expect_one_of(&["OK INFO alice ", "ERR 404 "]);
                if line.starts_with("OK INFO ") {
                    bob.send("\\connect alice");
                    break last_word(&line).to_string();
                }
            };
            (login.join().unwrap(), seen)
        });
        let new_key = public_key_of(&lab, "alice");
        assert!(
            !keys.contains(&new_key),
            "round {round}: the key was not new"
        );
        assert_eq!(
            seen, new_key,
            "round {round}: the server named alice's old key while she was online with a new one"
        );
        bob.expect("* asking alice to chat...");
        alice.expect("* bob wants to chat: \\accept bob or \\decline bob");
        alice.send("\\accept bob");
        alice.expect("* session with bob open");
        bob.expect("* session with alice open");
        for (who, client) in [("bob", &bob), ("alice", &alice)] {
            let out = client.output();
            assert!(
                !out.contains("WARNING") && !out.contains("KEY_MISMATCH"),
                "round {round}: {who} refused a key:\n{out}"
            );
        }
        keys.push(new_key);
        quit(&mut alice);
        quit(&mut bob);
    }
}

/// Waits (bounded) until `INFO <user>` says it is not online.
fn wait_until_offline(w: &mut Wire, user: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        w.send(&format!("INFO {user}"));
        if w.expect_one_of(&[&format!("OK INFO {user} "), "ERR 404 "])
            .starts_with("ERR")
        {
            return;
        }
        if Instant::now() > deadline {
            w.fail(&format!("{user} stayed online"));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Logs a real client out and waits for it to exit.
fn quit(client: &mut Client) {
    client.send("\\quit");
    client.wait_exit();
}

/// A server from before the key travelled with the port refuses `<port> <key>` (its
/// `ASK PORT` takes a number alone) and asks again: the client answers with the port
/// alone and registers its key with `KEY` right after the welcome. A fake server.
#[test]
fn against_a_server_that_refuses_the_key_with_the_port_the_client_sends_key_after_the_welcome() {
    use std::net::TcpListener;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tls, fingerprint, _key_dir) = fake_server_tls();
    let data = tempfile::TempDir::new().unwrap();
    let mut client = Client::spawn(
        addr,
        &[
            "--port",
            "0",
            "--data-dir",
            data.path().to_str().unwrap(),
            "--server-fingerprint",
            &fingerprint,
        ],
    )
    .named("alice (against an older server)");
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let stream = loop {
        match listener.accept() {
            Ok((stream, _)) => break stream,
            Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("the client never connected: {e}"),
        }
    };
    stream.set_nonblocking(false).unwrap();
    let mut old = Wire::accepted_tls(stream, "older server", tls);
    old.send("HELLO peerchat 1");
    old.send("ASK NEW Are you a new client? (Y/N)");
    client.expect("Are you a new client? (Y/N): ");
    client.send("n");
    old.expect_exact("n");
    old.send("ASK USERNAME Username");
    client.expect("Username: ");
    client.send("alice");
    old.expect_exact("alice");
    old.send("ASK PASSWORD Password");
    client.expect("Password: ");
    client.send(PW);
    old.expect_exact(PW);
    old.send("OK LOGGED_IN alice");
    old.send("ASK PORT Listening port for peer connections");
    let keyed = old.next_line();
    let words: Vec<&str> = keyed.split(' ').collect();
    assert_eq!(words.len(), 2, "{keyed:?}");
    let key = words[1].to_string();
    old.send("ERR 415 BAD_PORT the port must be a number from 1 to 65535");
    old.send("ASK PORT Listening port for peer connections");
    let port = old.next_line();
    assert_eq!(port, words[0], "the port alone, the second time");
    old.send(&format!("OK WELCOME alice 127.0.0.1:{port}"));
    client.expect_welcome("alice", 0);
    let file = data.path().join("alice").join("identity.key");
    let public = fs::read_to_string(&file).unwrap();
    assert_eq!(public.lines().nth(1), Some(key.as_str()));
    // After the welcome, before anything else the core says: the key.
    old.expect_exact(&format!("KEY {key}"));
    old.send("OK KEY");
    old.expect("TOKEN");
}
