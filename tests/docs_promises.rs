//! What README.md and protocol.md promise a user of the real binaries, checked the way an
//! outside tester would: the real server on a free port with a temporary database, real
//! clients through pipes (tests/common). Each test here failed before the fix it names.
//!
//! Owns only these checks and their small helpers; shared harness code stays in
//! tests/common.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::*;

/// The peer's `CLOSE closed` and `CLOSE quit` are said in plain words: not
/// "alice closed the session (closed)" (issue 11: no repeated words).
#[test]
fn a_peer_closing_or_quitting_is_said_once() {
    let server = Server::start();
    let lab = Lab::new(&server);
    let mut alice = lab.register("alice", &[]);
    let mut bob = lab.register("bob", &[]);
    open_session(&mut alice, "alice", &mut bob, "bob");
    alice.send("\\CLOSE_SESSION");
    bob.expect("* alice closed the session\n");

    open_session(&mut alice, "alice", &mut bob, "bob");
    alice.send("\\DISCONNECT_CLIENT");
    bob.expect("* alice quit; the session is closed\n");
    assert!(
        !bob.output().contains("(closed)") && !bob.output().contains("(quit)"),
        "a reason repeated in brackets:\n{}",
        bob.output()
    );
}

/// `\offer` to a user who does not exist, then `\msg`s typed before its refusal came
/// back: each `ERR 450` answers its own request, so the messages go to whom they were
/// typed for. Before, the offer's refusal was taken for the first message's, and the
/// next `OK WHOIS` sealed the *following* message to the wrong recipient.
#[test]
fn a_refused_offer_does_not_take_a_later_message_s_answer() {
    let server = Server::start();
    let lab = Lab::new(&server);
    let mut alice = lab.register("alice", &[]);
    let mut bob = lab.register("bob", &[]);
    let file = lab.share_dir("alice").join("plans.txt");
    fs::write(&file, "plans").unwrap();
    alice.send_all(&[
        format!("\\offer nobody {}", file.display()),
        "\\msg nobody hello".into(),
        "\\msg bob first".into(),
        "\\msg bob second".into(),
    ]);
    bob.expect_line("bob gets the first message", |l| {
        l.ends_with("(via server) alice: first")
    });
    bob.expect_line("bob gets the second message", |l| {
        l.ends_with("(via server) alice: second")
    });
    wait_for_text(&mut alice, "error: could not offer plans.txt to nobody:");
    wait_for_text(&mut alice, "error: message to nobody not sent");
    let out = alice.output();
    assert!(
        !out.contains("message to bob not sent"),
        "a message to bob took someone else's refusal:\n{out}"
    );
}

/// Waits (bounded) until `text` is anywhere in what `c` printed, in whatever order
/// it came with the lines around it.
fn wait_for_text(c: &mut Client, text: &str) {
    let deadline = std::time::Instant::now() + WAIT;
    while !c.output().contains(text) {
        if std::time::Instant::now() > deadline {
            c.fail(&format!("expected {text:?} somewhere on stdout"));
        }
        c.output_for(std::time::Duration::from_millis(200));
    }
}

/// README: "answered `N` by mistake? Press Enter at `Username:` to go back to
/// registration." With pipes too: before, the empty name was sent as a login, failed,
/// and spent one of the three attempts.
#[test]
fn enter_at_username_goes_back_to_registration_with_pipes() {
    let server = Server::start();
    let mut c = Client::spawn(server.addr, &["--port", "0"]).named("carol");
    c.expect("Are you a new client? (Y/N): ");
    c.send("n");
    c.expect("Username: ");
    c.send("");
    c.expect("Registering a new account.");
    c.expect("Choose a username: ");
    c.send("carol");
    c.expect("Choose a password: ");
    c.send(&password("carol"));
    c.expect("Registered as carol.");
    c.expect_welcome("carol", 0);
    assert!(
        !c.output().contains("invalid username or password"),
        "the empty name was tried as a login:\n{}",
        c.output()
    );
}

/// `\menu`: "anything but a number leaves it" — and a command typed there runs, instead
/// of being swallowed by the menu.
#[test]
fn a_command_typed_in_the_menu_leaves_it_and_runs() {
    let server = Server::start();
    let lab = Lab::new(&server);
    let mut alice = lab.register("alice", &[]);
    alice.send("\\menu");
    alice.expect("4) exit\n");
    alice.send("\\GET_CLIENT_LIST");
    alice.expect("(left the menu)\n");
    alice.expect("Online users (1):\n  #1 alice (you)\n");
    alice.send("\\menu");
    alice.expect("4) exit\n");
    alice.send("2");
    alice.expect("Which user?");
    alice.send("/info alice");
    alice.expect("alice (you) is online at 127.0.0.1:");
    alice.expect_line("no \\connect to yourself", |l| !l.contains("connect alice"));
}

/// "Where data lives": the user's folder (history, keys, pins, seen ids, downloads) is
/// readable by its owner only; before, `history.db` was readable by everyone.
#[test]
fn the_user_folder_is_readable_by_its_owner_only() {
    let server = Server::start();
    let lab = Lab::new(&server);
    let mut alice = lab.register("alice", &[]);
    alice.send("\\list");
    alice.expect("Online users (1):");
    let dir = lab.data_dir("alice").join("alice");
    let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{} has mode {mode:o}", dir.display());
    let key = fs::metadata(dir.join("identity.key"))
        .unwrap()
        .permissions();
    assert_eq!(key.mode() & 0o777, 0o600);
}

/// The flags in `--help` of both binaries and the flags in README's tables are the same
/// set, with the same defaults.
#[test]
fn every_flag_in_help_is_in_readme_with_its_default() {
    let readme = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for (bin, table_start) in [
        (env!("CARGO_BIN_EXE_peerchat-server"), "`peerchat-server`:"),
        (env!("CARGO_BIN_EXE_peerchat-client"), "`peerchat-client`:"),
    ] {
        let help = Command::new(bin).arg("--help").output().unwrap();
        assert!(help.status.success());
        let help = String::from_utf8(help.stdout).unwrap();
        let mut rows = readme_table_rows(&readme, table_start);
        if bin.ends_with("client") {
            // The GUI's flags have their own table under "The graphical client".
            rows.extend(readme_table_rows(&readme, "| `--gui` |"));
        }
        let documented: Vec<String> = rows.iter().flat_map(|r| flags_in(&r.0)).collect();
        let offered = help_flags(&help);
        for (flag, default) in &offered {
            let Some(row) = rows.iter().find(|r| flags_in(&r.0).contains(flag)) else {
                panic!("{bin}: {flag} is in --help but in no README table row");
            };
            if let Some(default) = default {
                assert!(
                    row.1.contains(default.as_str()),
                    "{bin}: {flag} defaults to {default} in --help, README says {:?}",
                    row.1
                );
            }
        }
        for flag in &documented {
            assert!(
                offered.iter().any(|(f, _)| f == flag),
                "{bin}: README documents {flag}, which --help does not offer"
            );
        }
    }
}

/// The rows (first column, second column) of the first markdown table after `marker`,
/// up to its first non-table line: a blank line inside the table ends it there, as a
/// renderer would.
fn readme_table_rows(readme: &str, marker: &str) -> Vec<(String, String)> {
    let at = readme.find(marker).expect("the table's marker");
    let mut lines = readme[at..].lines().peekable();
    // The marker may be the table's first row (the GUI's), or a line before it.
    if !marker.starts_with('|') {
        while lines.peek().is_some_and(|l| !l.starts_with('|')) {
            lines.next();
        }
    } else {
        // Start at the header two lines above the marker's row.
        let before = &readme[..at];
        let header_at = before[..before.len() - 1]
            .rfind("\n| flag")
            .expect("the GUI table's header");
        lines = readme[header_at + 1..].lines().peekable();
    }
    let mut rows = Vec::new();
    for line in lines {
        if !line.starts_with('|') {
            break;
        }
        let cells: Vec<&str> = line.split(" | ").collect();
        if cells.len() >= 2 && line.contains("`--") {
            rows.push((cells[0].to_string(), cells[1].to_string()));
        }
    }
    rows
}

/// The `--flags` named in a README table cell.
fn flags_in(cell: &str) -> Vec<String> {
    cell.split('`')
        .filter_map(|part| part.split_whitespace().next())
        .filter(|w| w.starts_with("--"))
        .map(str::to_string)
        .collect()
}

/// Each long flag of a `--help` text with its `[default: ...]`, if any.
fn help_flags(help: &str) -> Vec<(String, Option<String>)> {
    let mut flags: Vec<(String, Option<String>)> = Vec::new();
    for line in help.lines() {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix("--").or_else(|| {
            trimmed
                .strip_prefix("-h, --")
                .or_else(|| trimmed.strip_prefix("-V, --"))
        }) {
            let name = rest.split([' ', '=']).next().unwrap();
            if name != "help" && name != "version" {
                flags.push((format!("--{name}"), None));
            }
        } else if let Some(i) = line.find("[default: ") {
            let default = line[i + 10..].trim_end().trim_end_matches(']').to_string();
            if let Some(last) = flags.last_mut() {
                last.1 = Some(default);
            }
        }
    }
    flags
}

/// README: a server that cannot start "says why once and leaves nothing behind". A
/// `--tls-cert` that cannot be read, or a missing `--relay-secret-file`, used to be
/// found only after the database had been created.
#[test]
fn a_server_that_cannot_start_leaves_no_database() {
    let dir = tempfile::TempDir::new().unwrap();
    let db = dir.path().join("sub").join("server.db");
    for bad in [
        &[
            "--tls-cert",
            "/nonexistent/cert.pem",
            "--tls-key",
            "/nonexistent/key.pem",
        ][..],
        &["--relay-secret-file", "/nonexistent/relay.key"][..],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_peerchat-server"))
            .args(["--addr", "127.0.0.1:0", "--db"])
            .arg(&db)
            .args(bad)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{bad:?}: {stderr}");
        assert_eq!(
            stderr.matches("/nonexistent/").count(),
            1,
            "{bad:?}: the reason, once: {stderr}"
        );
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("listening on"),
            "{bad:?}: it said it listens"
        );
        assert!(!db.exists(), "{bad:?} left {} behind", db.display());
    }
}

/// Folder flags that cannot work stop the client before it logs in (exit 2), instead
/// of registering an account and then sharing nothing (`--share`) or failing on the key
/// file (`--data-dir`).
#[test]
fn a_share_or_data_dir_that_cannot_work_stops_the_client_at_once() {
    let server = Server::start();
    let dir = tempfile::TempDir::new().unwrap();
    let file = dir.path().join("a file");
    fs::write(&file, "not a folder").unwrap();
    let blocked = file.join("data");
    for (args, says) in [
        (
            vec!["--share".to_string(), "/nonexistent/share".to_string()],
            "--share /nonexistent/share: not a folder",
        ),
        (
            vec!["--share".to_string(), file.display().to_string()],
            "not a folder",
        ),
        (
            vec!["--data-dir".to_string(), blocked.display().to_string()],
            "--data-dir ",
        ),
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut c = Client::spawn(server.addr, &args);
        let status = c.wait_exit();
        assert_eq!(status.code(), Some(2), "{args:?}: {}", c.stderr());
        // stderr is read by a thread of its own: give it a moment after the exit.
        let deadline = std::time::Instant::now() + WAIT;
        while !c.stderr().contains(says) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert!(c.stderr().contains(says), "{args:?}: {}", c.stderr());
        assert!(
            !c.output().contains("Are you a new client?"),
            "{args:?}: it talked to the server first"
        );
    }
}

/// The seeds' commands for a user who is not online say so, and only that: before,
/// `\connect` first said "* asking nobody to chat..." and then the error.
#[test]
fn commands_for_a_user_who_is_not_online_say_so() {
    let server = Server::start();
    let lab = Lab::new(&server);
    let mut alice = lab.register("alice", &[]);
    let bob = lab.register("bob", &[]);
    alice.expect("* bob is online");
    drop(bob);
    alice.expect("* bob went offline");
    for typed in [
        "\\connect nobody",
        "\\c bob",
        "\\GET_CLIENT_INFO nobody",
        "\\info bob",
        "\\files bob",
    ] {
        alice.send(typed);
        let who = typed.rsplit(' ').next().unwrap();
        alice.expect(&format!("error: {who} is not online\n"));
    }
    let out = alice.output();
    assert!(
        !out.contains("* asking"),
        "a request to someone offline was announced:\n{out}"
    );
}

/// README's own pipe example, run as written (with the server's address, its
/// fingerprint and a data folder of its own): it registers and lists. Before, it lacked
/// the fingerprint, and a client with pipes refuses a server it cannot ask about.
#[test]
fn the_readme_pipe_example_works_as_written() {
    let server = Server::start();
    let readme = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let example = readme
        .lines()
        .find(|l| l.starts_with("printf 'y") && l.contains("| peerchat-client"))
        .expect("the pipe example");
    let fp = server_fingerprint(server.addr).expect("the server's fingerprint");
    let data = tempfile::TempDir::new().unwrap();
    let line = example
        .replace("peerchat-client", env!("CARGO_BIN_EXE_peerchat-client"))
        .replace("127.0.0.1:9876", &server.addr.to_string())
        .replace(" FP", &format!(" {fp}"));
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("{line} --data-dir '{}'", data.path().display()))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("Registered as alice.") && stdout.contains("  #1 alice (you)"),
        "{line}\n--- stdout ---\n{stdout}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success());
}

/// Every command and alias in README's table of commands, with its arguments as README
/// writes them, is one the client takes (not chat text, not "unknown command", not a
/// usage error).
#[test]
fn every_command_in_readme_parses_as_written() {
    use peerchat::client::tui::ui::{UserCommand, parse_input};
    let readme = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let table = readme
        .split("| command | aliases | what it does |")
        .nth(1)
        .expect("README's command table");
    let mut checked = 0;
    for row in table.lines().skip(2).take_while(|l| l.starts_with('|')) {
        let cells: Vec<&str> = row.split(" | ").collect();
        // An alias written alone takes the arguments of the row's first command.
        let args = cells[0]
            .split('`')
            .nth(1)
            .and_then(|u| u.split_once(' '))
            .map_or("", |(_, args)| args);
        for cell in &cells[..2] {
            for usage in cell.split('`').skip(1).step_by(2) {
                if !usage.starts_with('\\') {
                    continue;
                }
                let usage = if usage.contains(' ') {
                    usage.to_string()
                } else {
                    format!("{usage} {args}")
                };
                let typed = usage
                    .replace("<id\\|user>", "bob")
                    .replace("<path...>", "a.txt")
                    .replace("<path>", "a.txt")
                    .replace("<user>", "bob")
                    .replace("<id>", "7")
                    .replace("<text>", "hi there")
                    .replace("<name>", "a.txt")
                    .replace("<action>", "waves")
                    .replace("[offset]", "")
                    .replace("[user]", "")
                    .replace("[n]", "");
                let parsed = parse_input(&typed);
                assert!(
                    matches!(&parsed, Ok(c) if !matches!(c, UserCommand::Text(_))),
                    "README's {usage:?} (typed {typed:?}): {parsed:?}"
                );
                checked += 1;
            }
        }
    }
    assert!(
        checked > 30,
        "only {checked} commands found in README's table"
    );
}

/// `\list` shows `#7 bob`, and README says `<id>` is that number: `\msg #7 hi` reaches
/// bob (before, `#7` was looked up as a name and refused).
#[test]
fn msg_takes_the_id_as_list_shows_it() {
    let server = Server::start();
    let lab = Lab::new(&server);
    let mut alice = lab.register("alice", &[]);
    let mut bob = lab.register("bob", &[]);
    alice.send("\\list");
    let row = alice.expect_line("bob's row in the list", |l| l.ends_with(" bob"));
    let id = row.trim().split(' ').next().unwrap().to_string();
    assert!(id.starts_with('#'), "{row:?}");
    alice.send(&format!("\\msg {id} hi by id"));
    bob.expect_line("the message by id", |l| {
        l.ends_with("(via server) alice: hi by id")
    });
    alice.expect("* message to ");
}

/// `\sessions` lists a request of ours as "waiting for an answer"; `\close` on it says
/// what becomes of it, not "no session with bob".
#[test]
fn closing_a_request_not_answered_yet_says_what_happens() {
    let server = Server::start();
    let lab = Lab::new(&server);
    let mut alice = lab.register("alice", &[]);
    let mut bob = lab.register("bob", &[]);
    alice.send("\\connect bob");
    bob.expect("* alice wants to chat:");
    alice.expect("* asking bob to chat...");
    alice.send("\\sessions");
    alice.expect("  bob (waiting for an answer)");
    alice.send("\\CLOSE_SESSION bob");
    alice.expect("error: bob has not answered your request yet;");
    assert!(!alice.output().contains("no session with bob"));
}

/// Three failed logins: the block is said once, plainly, and the client exits 1; the
/// connection the server then closes is not a second error.
#[test]
fn three_failed_logins_say_the_block_once() {
    let server = Server::start();
    let lab = Lab::new(&server);
    drop(lab.register("bob", &[]));
    let mut c = Client::spawn(server.addr, &["--port", "0"]).named("guesser");
    c.expect("Are you a new client? (Y/N): ");
    c.send("n");
    for left in ["(2 attempts left)", "(1 attempt left)"] {
        c.expect("Username: ");
        c.send("bob");
        c.expect("Password: ");
        c.send("wrong guess");
        c.expect(&format!("error: invalid username or password {left}\n"));
    }
    c.expect("Username: ");
    c.send("bob");
    c.expect("Password: ");
    c.send("wrong guess");
    c.expect("error: too many failed logins: bob is blocked from your address for 300 s\n");
    assert_eq!(c.wait_exit().code(), Some(1));
    let out = c.output();
    assert_eq!(out.matches("error: ").count(), 3, "{out}");
    assert!(!out.contains("closed the connection"), "{out}");
}

/// Issue 14's paged `\list` from the user's side: a page says which users it shows of
/// the total and how to get the next (before: "(1 of 2; \list <offset> shows the
/// others)" on every page, the last one included).
#[test]
fn list_pages_say_which_page_they_are() {
    let server = Server::start();
    let lab = Lab::new(&server);
    let mut alice = lab.register("alice", &[]);
    let _bob = lab.register("bob", &[]);
    alice.expect("* bob is online");
    alice.send("\\list");
    alice.expect("Online users (2):\n  #");
    alice.send("\\GET_CLIENT_LIST 1");
    alice.expect("Online users 2-2 of 2:\n  #");
    alice.expect(" bob\n");
    alice.send("\\l 5");
    alice.expect("Online users: none from number 6 on (2 online; \\list shows the first page)\n");
}

/// README "Where data lives": the server's database holds the password hashes and is
/// created readable by its owner only (it was 0644).
#[test]
fn the_servers_database_is_readable_by_its_owner_only() {
    let server = Server::start();
    let db = server.db_path();
    if pg_url_of(&db).is_some() {
        return; // PostgreSQL keeps its own files.
    }
    let _alice = Wire::registered(server.addr, "alice", PW, free_port());
    let mode = fs::metadata(&db).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode & 0o077, 0, "{} has mode {mode:o}", db.display());
}
