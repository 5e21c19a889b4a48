//! The terminal front end as a person meets it: the real `peerchat-client` runs in a
//! pseudo-terminal (`portable-pty`) and its screen is read through a terminal emulator
//! (`vt100`), so what is asserted is what a user would see. Peers and servers are the
//! real binaries (pipe-driven `Client`s and `Server`). Also the operator's side: the
//! server's startup error and its log level.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use common::{Client, PW, Server, WAIT};
use portable_pty::{Child, CommandBuilder, PtySize, native_pty_system};

const ROWS: u16 = 30;
const COLS: u16 = 100;

const LEFT: &str = "\x1b[D";
const UP: &str = "\x1b[A";
const TAB: &str = "\t";
const CTRL_U: &str = "\x15";
const CTRL_C: &str = "\x03";
const ENTER: &str = "\r";

/// A program running in a pseudo-terminal, with its screen as a terminal would draw it.
struct Pty {
    /// Name used in failure messages.
    label: String,
    child: Box<dyn Child + Send + Sync>,
    writer: Box<dyn Write + Send>,
    /// Output chunks from the reader thread.
    rx: Receiver<Vec<u8>>,
    /// The emulated screen.
    screen: vt100::Parser,
    /// Kept open so the terminal lives as long as the test needs it.
    _master: Box<dyn portable_pty::MasterPty + Send>,
}

impl Pty {
    /// Starts `program args...` in a fresh 30x100 terminal, in `cwd`, with `envs` set.
    fn spawn(label: &str, program: &str, args: &[&str], cwd: &Path, envs: &[(&str, &str)]) -> Pty {
        let pair = native_pty_system()
            .openpty(PtySize {
                rows: ROWS,
                cols: COLS,
                pixel_width: 0,
                pixel_height: 0,
            })
            .expect("open a pty");
        let mut cmd = CommandBuilder::new(program);
        cmd.args(args);
        cmd.cwd(cwd);
        cmd.env("TERM", "xterm-256color");
        cmd.env_remove("NO_COLOR");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let child = pair.slave.spawn_command(cmd).expect("spawn in the pty");
        drop(pair.slave);
        let mut reader = pair.master.try_clone_reader().expect("pty reader");
        let writer = pair.master.take_writer().expect("pty writer");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            loop {
                match reader.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.send(chunk[..n].to_vec()).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        Pty {
            label: label.into(),
            child,
            writer,
            rx,
            screen: vt100::Parser::new(ROWS.try_into().unwrap(), COLS.try_into().unwrap(), 500),
            _master: pair.master,
        }
    }

    /// Starts the real client against `server`, its data in `dir`.
    fn client(label: &str, server: std::net::SocketAddr, dir: &Path, extra: &[&str]) -> Pty {
        let mut args = vec![
            "--server".to_string(),
            server.to_string(),
            "--port".into(),
            "0".into(),
            "--data-dir".into(),
            dir.join("data").display().to_string(),
            "--server-fingerprint".into(),
            common::server_fingerprint(server).expect("a server this test started"),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let home = dir.display().to_string();
        Pty::spawn(
            label,
            env!("CARGO_BIN_EXE_peerchat-client"),
            &args,
            dir,
            &[("HOME", &home)],
        )
    }

    /// Types `keys` as they are (escape sequences included).
    fn keys(&mut self, keys: &str) {
        self.writer.write_all(keys.as_bytes()).expect("type");
        self.writer.flush().expect("type");
    }

    /// Takes in whatever the program wrote so far, waiting at most `wait` for some.
    fn pump(&mut self, wait: Duration) {
        if let Ok(chunk) = self.rx.recv_timeout(wait) {
            self.screen.process(&chunk);
            while let Ok(chunk) = self.rx.try_recv() {
                self.screen.process(&chunk);
            }
        }
    }

    /// The screen's text, row by row.
    fn text(&self) -> String {
        self.screen.screen().contents()
    }

    /// The row the cursor is on, and the cursor's column.
    fn cursor_row(&self) -> (String, u16) {
        let (row, col) = self.screen.screen().cursor_position();
        let text = self
            .screen
            .screen()
            .rows(0, COLS)
            .nth(usize::from(row))
            .unwrap_or_default();
        (text.trim_end().to_string(), col)
    }

    /// Waits until `ok(screen)` holds.
    fn wait_for(&mut self, what: &str, ok: impl Fn(&Pty) -> bool) {
        let deadline = Instant::now() + WAIT;
        loop {
            if ok(self) {
                return;
            }
            if Instant::now() > deadline {
                self.fail(&format!("timed out waiting for {what}"));
            }
            self.pump(Duration::from_millis(50));
        }
    }

    /// Waits until the screen shows `text`.
    fn expect(&mut self, text: &str) {
        self.wait_for(&format!("{text:?}"), |p| p.text().contains(text));
    }

    /// Waits until the cursor's row reads `line` with the cursor at column `col`.
    fn expect_input(&mut self, line: &str, col: usize) {
        self.wait_for(&format!("input line {line:?} at column {col}"), |p| {
            let (row, at) = p.cursor_row();
            row == line && usize::from(at) == col
        });
    }

    /// Waits for the process to end.
    fn wait_exit(&mut self) {
        let deadline = Instant::now() + WAIT;
        loop {
            self.pump(Duration::from_millis(50));
            if let Ok(Some(_)) = self.child.try_wait() {
                // The last words, if any.
                self.pump(Duration::from_millis(100));
                return;
            }
            if Instant::now() > deadline {
                self.fail("did not exit");
            }
        }
    }

    fn fail(&mut self, msg: &str) -> ! {
        let _ = self.child.kill();
        let (row, col) = self.cursor_row();
        panic!(
            "{}: {msg}\n--- screen ---\n{}\n--- cursor row {row:?} col {col}",
            self.label,
            self.text()
        );
    }

    /// Registers `name` through the login prompts, sharing nothing, and waits for the
    /// welcome line.
    fn register(&mut self, name: &str) {
        self.expect("Are you a new client? (Y/N): ");
        self.keys("y\r");
        self.expect("Choose a username: ");
        self.keys(&format!("{name}\r"));
        self.expect("Choose a password: ");
        self.keys(&format!("{PW}\r"));
        self.expect_after_password();
        self.expect("Folder to share (Enter for none): ");
        self.keys(ENTER);
        self.expect(&format!("Welcome, {name}."));
        self.expect_input(">", 2);
    }

    /// Registration in a terminal asks for the password again.
    fn expect_after_password(&mut self) {
        self.expect("Repeat the password: ");
        self.keys(&format!("{PW}\r"));
        self.expect("Registered as ");
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `[hh:mm:ss] who: text` line on the screen.
fn shows_own_line(screen: &str, who: &str, text: &str) -> bool {
    screen.lines().any(|l| {
        let l = l.trim_end();
        l.len() > 11
            && l.as_bytes()[0] == b'['
            && l.as_bytes()[9] == b']'
            && l[1..9].bytes().filter(u8::is_ascii_digit).count() == 6
            && l[11..] == format!("{who}: {text}")
    })
}

/// bob through pipes, his data (and downloads) under `dir/bob-data`.
fn bob_in(server: &Server, dir: &Path) -> Client {
    let data = dir.join("bob-data").display().to_string();
    let mut bob = Client::spawn(server.addr, &["--port", "0", "--data-dir", &data]).named("bob");
    bob.expect("Are you a new client? (Y/N): ");
    bob.send("y");
    bob.expect("Choose a username: ");
    bob.send("bob");
    bob.expect("Choose a password: ");
    bob.send(PW);
    bob.expect_welcome("bob", 0);
    bob
}

/// alice in a terminal with an open session with bob (pipes); returns both.
fn alice_talks_to_bob(server: &Server, dir: &Path) -> (Pty, Client) {
    let mut bob = bob_in(server, dir);
    let mut alice = Pty::client("alice", server.addr, dir, &[]);
    alice.register("alice");
    alice.keys("\\connect bob\r");
    bob.expect("alice wants to chat");
    bob.send("\\accept alice");
    alice.expect("session with bob open");
    // The prompt names the active peer from the next line on.
    alice.keys(ENTER);
    alice.expect_input("bob>", 5);
    (alice, bob)
}

#[test]
fn the_typed_line_survives_incoming_messages_and_edits_like_readline() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let (mut alice, mut bob) = alice_talks_to_bob(&server, dir.path());

    // Half a line typed, then two messages arrive: both are shown above it and the line
    // and its cursor are as they were.
    alice.keys("hello wor");
    alice.expect_input("bob> hello wor", 14);
    bob.send("first from bob");
    bob.send("second from bob");
    alice.expect("bob: second from bob");
    assert!(alice.text().contains("bob: first from bob"));
    alice.expect_input("bob> hello wor", 14);
    alice.keys("ld\r");
    bob.expect("alice: hello world");
    // Own lines carry the time and the name, like everyone else's.
    alice.wait_for("own line with time and name", |p| {
        shows_own_line(&p.text(), "alice", "hello world")
    });

    // Left, Left, X edits in the middle; nothing raw reaches the peer.
    alice.keys("abcdef");
    alice.keys(LEFT);
    alice.keys(LEFT);
    alice.keys("X");
    alice.expect_input("bob> abcdXef", 10);
    alice.keys(ENTER);
    bob.expect("alice: abcdXef");

    // Up recalls the last line; Ctrl+U clears it.
    alice.expect_input("bob>", 5);
    alice.keys(UP);
    alice.expect_input("bob> abcdXef", 12);
    alice.keys(CTRL_U);
    alice.expect_input("bob>", 5);

    // Tab completes commands and names.
    alice.keys("\\swi");
    alice.keys(TAB);
    alice.expect_input("bob> \\switch", 13);
    alice.keys(CTRL_U);
    alice.keys("@b");
    alice.keys(TAB);
    alice.expect_input("bob> @bob", 10);
    alice.keys(CTRL_U);

    // `//` sends a line that starts with a slash; `\me` an action. Typed in one go (a
    // paste, or keys that came while the editor thread waited for the core): the
    // editor must keep what it read past the first line for the next one.
    alice.keys("//etc is a folder\r\\me waves\r");
    bob.expect("alice: /etc is a folder");
    bob.expect("* alice waves");
    alice.expect("* alice waves");

    // The input history is kept per user in the data folder.
    alice.keys("\\quit\r");
    alice.wait_exit();
    let history = std::fs::read_to_string(dir.path().join("data/alice/input_history"))
        .expect("input history file");
    assert!(history.contains("abcdXef"), "{history}");
}

#[test]
fn ctrl_c_at_the_password_prompt_leaves_echo_on() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    // The client, then `stty` in the same terminal, as a shell would run them. An
    // interactive shell puts the client in a process group of its own, so Ctrl+C never
    // reaches the shell; `sh -c` shares the client's, so it catches SIGINT (a handler,
    // which the client does not inherit) instead of sometimes dying before `stty`.
    let script = format!(
        "trap 'true' INT; '{}' --server {} --server-fingerprint {} --port 0 --data-dir data; stty -a | tr ' ' '\\n' | grep -x -e echo -e -echo | sed 's/^/ECHO=/'",
        env!("CARGO_BIN_EXE_peerchat-client"),
        server.addr,
        server.fingerprint()
    );
    let mut pty = Pty::spawn("client", "sh", &["-c", &script], dir.path(), &[]);
    pty.expect("Are you a new client? (Y/N): ");
    pty.keys("n\r");
    pty.expect("Username: ");
    pty.keys("alice\r");
    pty.expect("Password: ");
    pty.keys("half a pass");
    pty.keys(CTRL_C);
    pty.wait_for("stty's answer", |p| p.text().contains("ECHO="));
    let screen = pty.text();
    assert!(screen.contains("ECHO=echo"), "{screen}");
    assert!(!screen.contains("ECHO=-echo"), "{screen}");
}

#[test]
fn a_startup_error_names_the_address_once_and_leaves_no_database() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("new").join("server.db");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_peerchat-server"))
        .args(["--addr", &addr.to_string(), "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let want = format!("cannot listen on {addr}: address already in use");
    assert_eq!(err.matches(&want).count(), 1, "{err}");
    assert!(!err.contains("os error"), "{err}");
    assert!(!db.exists(), "a database was left at {}", db.display());
    assert!(!dir.path().join("new").exists());
}

#[test]
fn heartbeats_stay_out_of_the_info_log() {
    // The operator's default level, not the harness's debug.
    let server = Server::builder().env("RUST_LOG", "info").start();
    let mut wire = common::Wire::registered(server.addr, "carol", PW, 40_001);
    wire.ping();
    wire.ping();
    wire.list();
    wire.quit();
    let log = server.log_text();
    assert!(log.contains("LIST"), "{log}");
    assert!(!log.contains("PING"), "{log}");
}

#[test]
fn offers_withdrawn_or_sent_from_home_are_shown_plainly() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let (mut alice, mut bob) = alice_talks_to_bob(&server, dir.path());

    // bob offers, then withdraws: alice hears it at once, not after two minutes.
    let file = dir.path().join("plan.txt");
    std::fs::write(&file, b"the plan").unwrap();
    bob.send(&format!("\\send {}", file.display()));
    alice.expect("bob offers plan.txt");
    alice.expect("the offer stays open for 2 min");
    bob.send("\\cancel 1");
    alice.expect("bob withdrew the offer");

    // `~` is alice's home folder (HOME is the test's folder), and bob's `\accept`
    // alone takes the only offer waiting.
    std::fs::write(dir.path().join("note.txt"), b"hello from home").unwrap();
    alice.keys("\\send ~/note.txt\r");
    bob.expect("alice offers note.txt");
    bob.send("\\accept");
    alice.expect("note.txt to bob: done");
    let got = dir.path().join("bob-data/bob/downloads/note.txt");
    let deadline = Instant::now() + WAIT;
    while !got.exists() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(std::fs::read(&got).unwrap(), b"hello from home");
}

#[test]
fn registration_in_a_terminal_asks_twice_refuses_empty_names_and_can_go_back() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let mut alice = Pty::client("alice", server.addr, dir.path(), &[]);
    // `N` by mistake: an empty username goes back to registration.
    alice.expect("Are you a new client? (Y/N): ");
    alice.keys("n\r");
    alice.expect("Username: ");
    alice.keys(ENTER);
    alice.expect("Registering a new account.");
    // An empty username is refused before any password is asked.
    alice.expect("Choose a username: ");
    alice.keys(ENTER);
    alice.expect("error: a username cannot be empty");
    assert!(!alice.text().contains("Choose a password"));
    alice.keys("alice\r");
    alice.expect("Choose a password: ");
    alice.keys(&format!("{PW}\r"));
    alice.expect("Repeat the password: ");
    alice.keys("not the same\r");
    alice.expect("error: the two passwords differ");
    alice.keys(&format!("{PW}\r"));
    alice.expect_after_password();
    alice.expect("Folder to share (Enter for none): ");
    alice.keys(ENTER);
    alice.expect("Welcome, alice.");
    // The account works with the password given twice.
    alice.expect_input(">", 2);
    alice.keys("\\quit\r");
    alice.wait_exit();
    let mut wire = common::Wire::connect(server.addr);
    wire.login("alice", PW, 40_003);
}

#[test]
fn the_server_is_told_the_address_given_with_listen_addr() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data").display().to_string();
    let mut alice = Client::spawn(
        server.addr,
        &[
            "--port",
            "0",
            "--listen-addr",
            "127.0.0.2",
            "--data-dir",
            &data,
        ],
    )
    .named("alice");
    alice.expect("Are you a new client? (Y/N): ");
    alice.send("y");
    alice.expect("Choose a username: ");
    alice.send("alice");
    alice.expect("Choose a password: ");
    alice.send(PW);
    let port = alice.expect_between("Peers reach you at 127.0.0.2:", ".");
    let mut carol = common::Wire::registered(server.addr, "carol", PW, 40_004);
    carol.send("INFO alice");
    carol.expect(&format!("OK INFO alice 127.0.0.2:{port}"));
}

#[test]
fn ctrl_c_clears_the_line_then_asks_before_quitting_and_letters_work_without_a_session() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let mut alice = Pty::client("alice", server.addr, dir.path(), &[]);
    alice.register("alice");
    // Seed 001's letters with no session: `l` lists.
    alice.keys("l\r");
    alice.expect("Online users (1):");
    // Ctrl+C on a line with text clears it and nothing is sent.
    alice.keys("half a thought");
    alice.expect_input("> half a thought", 16);
    alice.keys(CTRL_C);
    alice.expect_input(">", 2);
    // On an empty line it asks; `n` goes on, `y` leaves.
    alice.keys(CTRL_C);
    alice.expect("quit? (y/N)");
    alice.keys("n\r");
    alice.expect_input(">", 2);
    alice.keys(CTRL_C);
    alice.wait_for("the second question", |p| {
        p.text().matches("quit? (y/N)").count() == 2
    });
    alice.keys("y\r");
    alice.expect("Bye.");
    alice.wait_exit();
    assert!(!alice.text().contains("half a thought\n"));
}

#[test]
fn a_folder_of_three_files_is_accepted_once_and_arrives_with_its_layout() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let (mut alice, mut bob) = alice_talks_to_bob(&server, dir.path());
    let photos = dir.path().join("photos");
    std::fs::create_dir_all(photos.join("2024/june")).unwrap();
    std::fs::write(photos.join("cover.txt"), b"cover").unwrap();
    std::fs::write(photos.join("2024/a b.txt"), b"first of june").unwrap();
    std::fs::write(photos.join("2024/june/c.txt"), vec![7u8; 300_000]).unwrap();

    alice.keys("\\send ~/photos\r");
    bob.expect("alice offers the folder photos/ (3 files");
    bob.send("\\accept");
    let got = dir.path().join("bob-data/bob/downloads/photos");
    let want: [(&str, Vec<u8>); 3] = [
        ("cover.txt", b"cover".to_vec()),
        ("2024/a b.txt", b"first of june".to_vec()),
        ("2024/june/c.txt", vec![7u8; 300_000]),
    ];
    let deadline = Instant::now() + WAIT;
    while want
        .iter()
        .any(|(p, bytes)| std::fs::read(got.join(p)).ok().as_ref() != Some(bytes))
    {
        if Instant::now() > deadline {
            bob.fail(&format!(
                "the folder did not arrive whole; bob has {:?}",
                walk_names(&got)
            ));
        }
        thread::sleep(Duration::from_millis(50));
    }
    // Nothing else was written, and bob was asked once.
    assert_eq!(walk_names(&got).len(), 3, "{:?}", walk_names(&got));
    assert_eq!(
        bob.output().matches("offers").count(),
        1,
        "{}",
        bob.output()
    );
    alice.expect("c.txt to bob: done");
}

/// Every file under `dir`, as paths relative to it.
fn walk_names(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path().strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn errors_are_red_in_a_terminal_and_plain_with_no_color() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let red_row = |p: &Pty| {
        let screen = p.screen.screen();
        (0..ROWS).find_map(|row| {
            let text: String = (0..COLS)
                .filter_map(|col| screen.cell(row, col).map(|c| c.contents().to_string()))
                .collect();
            text.starts_with("error: unknown command")
                .then(|| screen.cell(row, 0).map(|c| c.fgcolor()))
                .flatten()
        })
    };
    let mut alice = Pty::client("alice", server.addr, dir.path(), &[]);
    alice.register("alice");
    alice.keys("\\frob\r");
    alice.expect("error: unknown command \\frob");
    assert_eq!(red_row(&alice), Some(vt100::Color::Idx(1)));

    let other = tempfile::tempdir().unwrap();
    let home = other.path().display().to_string();
    let data = other.path().join("data").display().to_string();
    let mut bob = Pty::spawn(
        "bob",
        env!("CARGO_BIN_EXE_peerchat-client"),
        &[
            "--server",
            &server.addr.to_string(),
            "--server-fingerprint",
            &server.fingerprint(),
            "--port",
            "0",
            "--data-dir",
            &data,
        ],
        other.path(),
        &[("HOME", &home), ("NO_COLOR", "1")],
    );
    bob.register("bob");
    bob.keys("\\frob\r");
    bob.expect("error: unknown command \\frob");
    assert_eq!(red_row(&bob), Some(vt100::Color::Default));
}

#[test]
fn the_progress_line_counts_bytes_says_stalled_and_goes_away_at_the_end() {
    const SIZE: usize = 128 << 20;
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let (mut alice, mut bob) = alice_talks_to_bob(&server, dir.path());
    std::fs::write(dir.path().join("big.bin"), vec![5u8; SIZE]).unwrap();
    alice.keys("\\send ~/big.bin\r");
    bob.expect("alice offers big.bin");
    bob.send("\\accept");
    // Hold bob still once a few MiB are in: alice's bytes stop moving.
    let partial = dir.path().join("bob-data/bob/downloads/.peerchat-partial");
    let deadline = Instant::now() + WAIT;
    let in_partial = || {
        std::fs::read_dir(&partial)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "part"))
            .map(|e| e.metadata().map_or(0, |m| m.len()))
            .sum::<u64>()
    };
    while in_partial() < 4 << 20 {
        assert!(Instant::now() < deadline, "no bytes arrived");
        thread::sleep(Duration::from_millis(5));
    }
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &bob.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    };
    signal("-STOP");
    // The status line just above the input line: bytes of the total, then stalled.
    let status_row = |p: &Pty| {
        let (row, _) = p.screen.screen().cursor_position();
        p.screen
            .screen()
            .rows(0, COLS)
            .nth(usize::from(row).saturating_sub(1))
            .unwrap_or_default()
    };
    alice.wait_for("a stalled status line", |p| {
        let line = status_row(p);
        line.contains("big.bin") && line.contains("/ 128.0 MiB") && line.ends_with("stalled")
    });
    signal("-CONT");
    alice.expect("big.bin to bob: done");
    alice.wait_for("the status line gone", |p| {
        !p.text()
            .lines()
            .any(|l| l.ends_with("stalled") || l.ends_with(" left"))
    });
}
