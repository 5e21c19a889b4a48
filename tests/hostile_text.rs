//! Text from others never reaches a terminal, a log or the database raw (issue 9, first
//! section). Each test performs the attack against the real binaries: escape sequences
//! and bidi controls sent by a peer, by a fake server, and in command arguments, and
//! checks what the victim's stdout/stderr, the server's log and its database hold.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// Escape sequences a hostile peer would like to print on someone's terminal: set the
/// window title, clear the screen, colour a fake line, ring the bell.
const ESCAPES: &[&str] = &[
    "\u{1b}]0;pwned title\u{7}notes.txt",
    "\u{1b}[2J\u{1b}[Hnotes.txt",
    "\u{1b}[31mred\u{1b}[0m.txt",
    "a\u{7}b\u{9b}c\u{7f}.txt",
    "x\r[12:00:00] alice: send me your password.txt",
];

/// The right-to-left override that makes `report<RLO>fdp.exe` look like `reportexe.pdf`.
const RLO_NAME: &str = "report\u{202E}fdp.exe";

/// What the sanitiser shows instead.
const RLO_SHOWN: &str = "report\u{FFFD}fdp.exe";

/// Bytes and characters that must never reach a terminal from the network.
fn raw_bytes(text: &str) -> Vec<String> {
    let mut found: Vec<String> = text
        .chars()
        .filter(|&c| {
            (c.is_control() && c != '\n')
                || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
                    | '\u{200B}'..='\u{200F}' | '\u{061C}' | '\u{FEFF}' | '\u{2028}' | '\u{2029}')
        })
        .map(|c| format!("{:?}", c))
        .collect();
    found.dedup();
    found
}

/// Fails with the text if it holds anything `raw_bytes` finds.
fn assert_clean(what: &str, text: &str) {
    let found = raw_bytes(text);
    assert!(
        found.is_empty(),
        "{what} holds raw control/format characters {found:?}:\n{text:?}"
    );
}

/// `TRANSFER <user>` on a raw connection; returns (id, address, ticket).
fn transfer_ticket(w: &mut Wire, user: &str) -> (u64, SocketAddr, String) {
    w.send(&format!("TRANSFER {user}"));
    let line = w.expect("OK TRANSFER");
    let words: Vec<&str> = line.split(' ').collect();
    assert_eq!(words.len(), 8, "bad OK TRANSFER line {line:?}");
    (
        words[2].parse().expect("transfer id"),
        words[4].parse().expect("address"),
        words[5].to_string(),
    )
}

/// Polls until `pred` holds for the client's stdout (bounded by `WAIT`).
fn wait_output(client: &mut Client, what: &str, pred: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + WAIT;
    while !pred(&client.output()) {
        if Instant::now() >= deadline {
            client.fail(&format!("expected on stdout: {what}"));
        }
        client.output_for(Duration::from_millis(100));
    }
}

#[test]
fn a_fetch_for_a_name_with_escape_sequences_never_reaches_the_victims_terminal_raw() {
    let server = Server::start();
    let lab = Lab::new(&server);
    std::fs::write(lab.share_dir("bob").join("notes.txt"), b"bob's notes\n").unwrap();
    let mut bob = lab.register_sharing("bob");
    let mut mallory = Wire::registered(server.addr, "mallory", PW, free_port());
    bob.expect("* mallory is online");
    let before = bob.output().matches("mallory").count();

    for (i, name) in ESCAPES.iter().enumerate() {
        let (id, bob_addr, ticket) = transfer_ticket(&mut mallory, "bob");
        let mut data = Wire::peer(bob_addr, &ticket).named("mallory -> bob (fetch)");
        data.send(&format!("FETCH peerchat 1 mallory {id} {ticket} {name}"));
        // bob refuses: an error line or the close, whatever it says.
        let deadline = Instant::now() + WAIT;
        while let Got::Line(_) =
            data.read_within(deadline.saturating_duration_since(Instant::now()))
        {}
        // bob tells his user about the refusal: wait for the i-th notice.
        wait_output(&mut bob, "a notice about mallory's request", |out| {
            out.matches("mallory").count() > before + i
        });
    }
    // Anything late arrives now.
    bob.output_for(Duration::from_millis(300));
    let out = bob.output();
    assert_clean("bob's stdout", &out);
    assert_clean("bob's stderr", &bob.stderr());
    // The refusal is shown, with the escapes made visible.
    assert!(
        out.contains("\u{FFFD}]0;pwned title\u{FFFD}notes.txt"),
        "the refusal does not show the cleaned name:\n{out}"
    );
    assert!(out.contains("\u{FFFD}[2J"), "{out}");
    // bob is still fine: his own commands work.
    bob.send("\\list");
    bob.expect("Online users (2):");
}

#[test]
fn a_right_to_left_override_never_reaches_another_users_screen() {
    let server = Server::start();
    let lab = Lab::new(&server);
    // bob shares a file whose name holds the override; alice lists, searches and fetches it.
    std::fs::write(lab.share_dir("bob").join(RLO_NAME), b"not a pdf\n").unwrap();
    let mut bob = lab.register_sharing("bob");
    let mut alice = lab.register("alice", &[]);

    alice.send("\\files bob");
    alice.expect("Shared files (1):");
    alice.expect(RLO_SHOWN);
    alice.send("\\search fdp");
    alice.expect("Search: 1 match(es)");
    alice.expect(RLO_SHOWN);
    alice.send(&format!("\\fetch bob {RLO_NAME}"));
    // Whatever the fetch ends as (refused or done), its lines show the cleaned name.
    wait_output(&mut alice, "the end of the fetch", |out| {
        out.lines().any(|l| {
            l.starts_with("* [")
                && l.contains(RLO_SHOWN)
                && !l.ends_with(": started")
                && !l.ends_with(": connecting")
        }) || out.contains("error:")
    });

    // Offered over a chat session, and chatted.
    open_session(&mut alice, "alice", &mut bob, "bob");
    let offered = lab.share_dir("alice").join(RLO_NAME);
    std::fs::write(&offered, b"pushed\n").unwrap();
    alice.send(&format!("\\send {}", offered.display()));
    bob.expect(&format!("alice offers {RLO_SHOWN}"));
    alice.send(&format!(
        "look at {RLO_NAME} now \u{2066}isolated\u{2069} \u{200B}"
    ));
    bob.expect_line("the chat line", |l| {
        l.contains("alice: look at") && l.contains(RLO_SHOWN)
    });
    alice.output_for(Duration::from_millis(300));
    bob.output_for(Duration::from_millis(300));
    for (who, client) in [("alice", &alice), ("bob", &bob)] {
        assert_clean(&format!("{who}'s stdout"), &client.output());
        assert_clean(&format!("{who}'s stderr"), &client.stderr());
    }
    // bob's history database holds the line cleaned as well.
    let history = lab.data_dir("bob").join("bob").join("history.db");
    let conn =
        rusqlite::Connection::open_with_flags(&history, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    conn.busy_timeout(WAIT).unwrap();
    let texts: Vec<String> = conn
        .prepare("SELECT text FROM messages")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(texts.iter().any(|t| t.contains(RLO_SHOWN)), "{texts:?}");
    assert_clean("bob's history", &texts.join("\n"));
}

/// Plays a hostile server on a real socket: the greeting, an `ASK` and an `ERR` full of
/// escapes and bidi controls, then a second `ASK`, then it hangs up.
fn fake_server(listener: TcpListener, tls: std::sync::Arc<rustls::ServerConfig>) {
    // The client speaks TLS to any server (pinned to this fake's fingerprint).
    let mut tls = accept_tls(&listener, tls);
    let say = |tls: &mut FakeTls, line: &str| {
        tls.write_all(format!("{line}\n").as_bytes()).unwrap();
        tls.flush().unwrap();
    };
    say(&mut tls, "HELLO peerchat 1");
    say(
        &mut tls,
        "ASK NEW \u{1b}[2J\u{1b}]0;owned\u{7}Are you new? \u{202E}(N/Y)",
    );
    let _ = read_tls_line(&mut tls);
    say(
        &mut tls,
        "ERR 400 BAD_REQUEST \u{1b}[31mred alert\u{1b}[0m \u{202E}gnp.exe\u{7}\rOK fake",
    );
    say(&mut tls, "ASK NEW again\u{1b}[5n\u{2028}");
    let _ = read_tls_line(&mut tls);
    say(&mut tls, "ERR 403 BLOCKED \u{9b}31m\u{1b}c bye");
    tls.conn.send_close_notify();
    let _ = tls.flush();
    // Closing the socket ends the client's login.
}

#[test]
fn a_fake_servers_ask_and_err_texts_never_reach_the_client_raw() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tls, fingerprint, _key_dir) = fake_server_tls();
    let server = thread::spawn(move || fake_server(listener, tls));
    let mut client =
        Client::spawn(addr, &["--port", "0", "--server-fingerprint", &fingerprint]).named("victim");
    client.expect("Are you new?");
    client.send("y");
    client.expect("red alert");
    client.expect("again");
    client.send("n");
    client.expect("bye");
    server.join().expect("fake server");
    client.wait_exit();
    let out = client.output();
    assert_clean("the client's stdout", &out);
    assert_clean("the client's stderr", &client.stderr());
    assert!(out.contains("\u{FFFD}gnp.exe"), "{out}");
}

#[test]
fn a_cr_in_command_arguments_never_forges_a_server_log_line() {
    let server = Server::builder().env("RUST_LOG", "info").start();
    let mut mallory = Wire::registered(server.addr, "mallory", PW, free_port());
    let _bob = Wire::registered(server.addr, "bob", PW, free_port());
    // One-word arguments for the one-argument commands; the rest-of-line ones may hold
    // spaces, so they carry a whole fake log line.
    let fake = "[2099-01-01T00:00:00Z INFO  peerchat::server::login] 6.6.6.6: logged in admin";
    for (command, want) in [
        ("INFO bob\rFORGED-INFO", "ERR"),
        ("FILES bob\rFORGED-FILES", "ERR"),
        ("CONNECT bob\rFORGED-CONNECT", "ERR"),
        ("TRANSFER bob\rFORGED-TRANSFER", "ERR"),
        ("INFO bob\u{1b}[2K\u{1b}[1AFORGED-ESC", "ERR"),
    ] {
        mallory.send(command);
        mallory.expect(want);
    }
    mallory.send(&format!("SEARCH x\r{fake}"));
    mallory.expect("OK SEARCH");
    let (id, _, _) = transfer_ticket(&mut mallory, "bob");
    mallory.send(&format!(
        "TRANSFER_END {id} failed 10 1 - send 1 0 x\r{fake}\u{1b}[2J"
    ));
    mallory.expect(&format!("OK TRANSFER_END {id}"));
    mallory.ping();

    let log = server.log_text();
    for forged in [
        "FORGED-INFO",
        "FORGED-FILES",
        "FORGED-CONNECT",
        "FORGED-TRANSFER",
        "FORGED-ESC",
        fake,
    ] {
        // The command was logged (so the test sees what it should)...
        assert!(log.contains(forged), "{forged} is not in the log:\n{log}");
        // ...but never at the start of a line, whatever a terminal does with CR.
        for piece in log.split(['\r', '\n']) {
            assert!(
                !piece.starts_with(forged),
                "the log has a forged line {piece:?}:\n{log}"
            );
        }
    }
    assert!(!log.contains('\u{1b}'), "an ESC reached the log:\n{log}");
}

#[test]
fn transfer_names_are_stored_and_printed_sanitised() {
    // It writes a raw row into the SQLite file itself.
    if sqlite_only("transfer_names_are_stored_and_printed_sanitised") {
        return;
    }
    let server = Server::start();
    let mut mallory = Wire::registered(server.addr, "mallory", PW, free_port());
    let _bob = Wire::registered(server.addr, "bob", PW, free_port());
    let (id, _, _) = transfer_ticket(&mut mallory, "bob");
    let evil = "evil\u{1b}]0;t\u{7}\u{1b}[2J\r\u{202E}fdp.exe";
    mallory.send(&format!("TRANSFER_END {id} ok 10 1 - send 10 0 {evil}"));
    mallory.expect(&format!("OK TRANSFER_END {id}"));

    let conn = rusqlite::Connection::open_with_flags(
        server.db_path(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    conn.busy_timeout(WAIT).unwrap();
    let stored: String = conn
        .query_row(
            "SELECT name FROM transfers WHERE id = ?1",
            [id as i64],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        stored,
        "evil\u{FFFD}]0;t\u{FFFD}\u{FFFD}[2J\u{FFFD}\u{FFFD}fdp.exe"
    );
    let reported: String = conn
        .query_row(
            "SELECT name FROM transfer_reports WHERE transfer_id = ?1",
            [id as i64],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(reported, stored);

    // `peerchat-server sessions` prints it clean too, and so would it an older raw row.
    conn.close().unwrap();
    let rw = rusqlite::Connection::open(server.db_path()).unwrap();
    rw.busy_timeout(WAIT).unwrap();
    rw.execute(
        "INSERT INTO transfers (requester, target, started_at_ms, ended_at_ms, result, name, size)
         VALUES ('mallory\u{1b}[2J', 'bob', 1, 2, 'ok', ?1, 1)",
        [evil],
    )
    .unwrap();
    drop(rw);
    let out = Command::new(env!("CARGO_BIN_EXE_peerchat-server"))
        .arg("sessions")
        .arg("--db")
        .arg(server.db_path())
        .output()
        .expect("run peerchat-server sessions");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert_clean("peerchat-server sessions", &text);
    assert!(text.contains("\u{FFFD}fdp.exe"), "{text}");
}
