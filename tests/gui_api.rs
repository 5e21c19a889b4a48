//! The web front end's JSON API (`peerchat-client --gui`), driven over plain sockets
//! against the real server, a real GUI client and real terminal clients: login (new and
//! returning), presence, chat both ways, accept/decline, send, fetch and cancel files,
//! events in order with no gaps; the guard's 403s (token, Host, Origin); hostile text
//! coming back as JSON text; body and long-poll caps; the loopback-only bind.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{Client, PW, Server, WAIT};
use serde_json::{Value, json};
use tempfile::TempDir;

/// One HTTP answer.
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

/// A raw HTTP/1.1 request with `Connection: close`; `headers` are sent as given.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let mut stream = TcpStream::connect(addr).expect("connect to the GUI");
    stream
        .set_read_timeout(Some(Duration::from_secs(40)))
        .unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read the answer");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header block");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    Answer {
        status,
        head,
        body: raw[split + 4..].to_vec(),
    }
}

/// A `peerchat-client --gui` process and what it printed.
struct Gui {
    child: Child,
    addr: SocketAddr,
    token: String,
    host: String,
    /// Every event seen so far, in order.
    events: Vec<Value>,
    _dir: Option<TempDir>,
}

impl Drop for Gui {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gui {
    /// A GUI client that knows the server's fingerprint (`--server-fingerprint`).
    fn spawn(server: SocketAddr, data: &std::path::Path, extra: &[&str]) -> Gui {
        Gui::spawn_with(server, data, extra, true)
    }

    /// A GUI client; `pin`: told the server's fingerprint, else the page is asked.
    fn spawn_with(server: SocketAddr, data: &std::path::Path, extra: &[&str], pin: bool) -> Gui {
        let mut child = Command::new(env!("CARGO_BIN_EXE_peerchat-client"))
            .args([
                "--server",
                &server.to_string(),
                "--gui",
                "--no-browser",
                "--port",
                "0",
            ])
            .arg("--data-dir")
            .arg(data)
            .args(extra)
            .args(
                common::server_fingerprint(server)
                    .filter(|_| pin)
                    .map(|fp| vec!["--server-fingerprint".to_string(), fp])
                    .unwrap_or_default(),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the GUI client");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let line = rx.recv_timeout(WAIT).expect("the GUI line");
        let url = line
            .strip_prefix("GUI: http://")
            .unwrap_or_else(|| panic!("GUI line: {line:?}"));
        let (host, token) = url.split_once("/#token=").expect("a token in the fragment");
        assert_eq!(token.len(), 32, "128 bits as hex: {token}");
        Gui {
            child,
            addr: host.parse().unwrap(),
            token: token.to_string(),
            host: host.to_string(),
            events: Vec::new(),
            _dir: None,
        }
    }

    fn get(&self, path: &str) -> Answer {
        http(
            self.addr,
            "GET",
            path,
            &[("Host", &self.host), ("X-Peerchat-Token", &self.token)],
            b"",
        )
    }

    fn post(&self, path: &str, body: &Value) -> Answer {
        http(
            self.addr,
            "POST",
            path,
            &[
                ("Host", &self.host),
                ("X-Peerchat-Token", &self.token),
                ("Content-Type", "application/json"),
            ],
            body.to_string().as_bytes(),
        )
    }

    fn command(&self, body: Value) {
        let a = self.post("/api/command", &body);
        assert_eq!(a.status, 202, "{body}: {}", a.text());
    }

    fn state(&self) -> Value {
        let a = self.get("/api/state");
        assert_eq!(a.status, 200, "{}", a.text());
        a.json()
    }

    /// Long-polls until an event matches; checks the ids rise by one with no gap.
    fn wait_event(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(e) = self.events.iter().find(|e| pred(e)) {
            return e.clone();
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let since = self.events.last().map_or(0, |e| e["id"].as_u64().unwrap());
            let a = self.get(&format!("/api/events?since={since}&timeout=2"));
            assert_eq!(a.status, 200, "{}", a.text());
            for event in a.json().as_array().unwrap() {
                let id = event["id"].as_u64().unwrap();
                let last = self.events.last().map_or(0, |e| e["id"].as_u64().unwrap());
                assert_eq!(id, last + 1, "event ids must rise by one: {event}");
                self.events.push(event.clone());
                if pred(event) {
                    return event.clone();
                }
            }
            if Instant::now() > deadline {
                let seen: Vec<String> = self.events.iter().map(|e| e.to_string()).collect();
                panic!("no {what} event; seen:\n{}", seen.join("\n"));
            }
        }
    }

    fn wait_type(&mut self, kind: &str) -> Value {
        self.wait_event(kind, |e| e["type"] == kind)
    }

    /// Answers the login questions until logged in.
    fn log_in(&mut self, new: bool, name: &str, pass: &str) {
        // Questions already answered are behind the last answer.
        let mut after = self
            .events
            .iter()
            .rfind(|e| e["type"] == "login_answered")
            .map_or(0, |e| e["id"].as_u64().unwrap());
        loop {
            let e = self.wait_event("login question or welcome", |e| {
                e["id"].as_u64().unwrap() > after
                    && matches!(
                        e["type"].as_str(),
                        Some("welcome" | "login_question" | "login_failed")
                    )
            });
            after = e["id"].as_u64().unwrap();
            match e["type"].as_str().unwrap() {
                "welcome" => return,
                "login_failed" => panic!("login failed: {e}"),
                _ => {}
            }
            let answer = match e["data"]["kind"].as_str().unwrap() {
                "new" => {
                    if new {
                        "Y"
                    } else {
                        "N"
                    }
                }
                "username" => name,
                "password" => pass,
                "share" => "",
                "trust" => "Y",
                other => panic!("unexpected question {other}"),
            };
            let a = self.post("/api/login", &json!({"answer": answer}));
            assert_eq!(a.status, 200, "{}", a.text());
        }
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the GUI client did not exit");
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A logged-in GUI client `name` (registered now).
fn gui_user(server: &Server, name: &str) -> Gui {
    let dir = TempDir::new().unwrap();
    let mut gui = Gui::spawn(server.addr, dir.path(), &[]);
    gui.log_in(true, name, PW);
    gui._dir = Some(dir);
    gui
}

fn session_event<'a>(e: &'a Value, kind: &str) -> Option<&'a Value> {
    (e["type"] == "session" && e["data"]["kind"] == kind).then(|| &e["data"]["data"])
}

fn transfer_event<'a>(e: &'a Value, kind: &str) -> Option<&'a Value> {
    (e["type"] == "transfer" && e["data"]["kind"] == kind).then(|| &e["data"]["data"])
}

#[test]
fn gui_logs_in_lists_and_chats_both_ways_with_a_terminal_client() {
    let server = Server::start();
    let mut bob = Client::register(server.addr, "bob", PW, 0);
    let mut alice = gui_user(&server, "alice");
    let state = alice.state();
    assert_eq!(state["phase"], "ready");
    assert_eq!(state["me"], "alice");
    assert_eq!(state["connected"], true);
    alice.command(json!({"type": "list"}));
    alice.wait_event("users with bob", |e| {
        e["type"] == "users"
            && e["data"]["users"]
                .as_array()
                .unwrap()
                .iter()
                .any(|u| u == "bob")
    });

    alice.command(json!({"type": "connect", "user": "bob"}));
    bob.expect("* alice wants to chat");
    bob.send("\\accept alice");
    alice.wait_event("opened", |e| {
        session_event(e, "opened").is_some_and(|d| d["peer"] == "bob")
    });
    alice.command(json!({"type": "say_to", "user": "bob", "text": "hello from the page"}));
    bob.expect("alice: hello from the page");
    alice.wait_event("own line", |e| {
        session_event(e, "said").is_some_and(|d| {
            d["line"]["text"] == "hello from the page" && d["line"]["sender"] == "alice"
        })
    });
    bob.send("and hello from the terminal");
    let chat = alice.wait_event("bob's line", |e| session_event(e, "chat").is_some());
    let line = &chat["data"]["data"]["line"];
    assert_eq!(line["sender"], "bob");
    assert_eq!(line["text"], "and hello from the terminal");
    assert!(line["at_ms"].as_u64().unwrap() > 0);
    let state = alice.state();
    let lines = state["sessions"]["bob"]["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 2, "{state:#}");
    assert_eq!(state["sessions"]["bob"]["state"], "open");

    // bob leaves: presence and the session end reach the page.
    bob.send("\\quit");
    alice.wait_event("bob closed", |e| {
        session_event(e, "closed").is_some_and(|d| d["peer"] == "bob")
    });
    alice.wait_event("bob offline", |e| {
        e["type"] == "offline"
            && e["data"]["users"]
                .as_array()
                .is_some_and(|users| users.iter().any(|u| u == "bob"))
    });
    assert!(
        !alice.state()["users"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u == "bob")
    );

    // Quit from the page: the process logs out and exits.
    alice.command(json!({"type": "quit"}));
    assert!(alice.wait_exit().success());
}

#[test]
fn a_returning_user_logs_in_through_the_page_and_errors_are_words() {
    let server = Server::start();
    let dir = TempDir::new().unwrap();
    {
        let mut first = Gui::spawn(server.addr, dir.path(), &[]);
        first.log_in(true, "carol", PW);
        first.command(json!({"type": "quit"}));
        first.wait_exit();
    }
    let mut again = Gui::spawn(server.addr, dir.path(), &[]);
    // A wrong password first: the server's sentence reaches the page as a login message.
    let q = again.wait_event("new?", |e| e["type"] == "login_question");
    assert_eq!(q["data"]["kind"], "new");
    assert_eq!(
        again.post("/api/login", &json!({"answer": "N"})).status,
        200
    );
    again.wait_event("username?", |e| {
        e["type"] == "login_question" && e["data"]["kind"] == "username"
    });
    assert_eq!(
        again.post("/api/login", &json!({"answer": "carol"})).status,
        200
    );
    again.wait_event("password?", |e| {
        e["type"] == "login_question" && e["data"]["kind"] == "password"
    });
    assert_eq!(
        again
            .post("/api/login", &json!({"answer": "wrong password"}))
            .status,
        200
    );
    let msg = again.wait_event("a login message", |e| e["type"] == "login_message");
    assert!(
        msg["data"]["text"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("password"),
        "{msg}"
    );
    // No question waiting right now is a clear 409, not a hang.
    let state = again.state();
    assert_eq!(state["phase"], "login");
    // The server asks again (name, then password); the right answers log in.
    again.log_in(false, "carol", PW);
    assert_eq!(again.state()["me"], "carol");
    assert_eq!(
        again.post("/api/login", &json!({"answer": "late"})).status,
        409
    );
}

#[test]
fn requests_are_accepted_and_declined_from_the_page() {
    let server = Server::start();
    let mut bob = Client::register(server.addr, "bob", PW, 0);
    let mut dave = Client::register(server.addr, "dave", PW, 0);
    let mut alice = gui_user(&server, "alice");

    bob.send("\\connect alice");
    let req = alice.wait_event("bob's request", |e| session_event(e, "request").is_some());
    assert_eq!(req["data"]["data"]["from"], "bob");
    assert!(req["data"]["data"]["within"].as_u64().unwrap() >= 1);
    assert!(alice.state()["requests"]["bob"].as_u64().is_some());
    alice.command(json!({"type": "decline", "user": "bob"}));
    bob.expect("* alice declined");

    dave.send("\\connect alice");
    alice.wait_event("dave's request", |e| {
        session_event(e, "request").is_some_and(|d| d["from"] == "dave")
    });
    alice.command(json!({"type": "accept", "user": "dave"}));
    dave.expect("* session with alice open");
    alice.wait_event("opened", |e| {
        session_event(e, "opened").is_some_and(|d| d["peer"] == "dave")
    });
    assert!(alice.state()["requests"].as_object().unwrap().is_empty());
}

#[test]
fn files_are_sent_fetched_cancelled_and_saved_through_the_page() {
    let server = Server::start();
    let share = TempDir::new().unwrap();
    let shared: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(share.path().join("notes.bin"), &shared).unwrap();
    let bob_dl = TempDir::new().unwrap();
    let mut bob = Client::spawn(
        server.addr,
        &[
            "--port",
            "0",
            "--share",
            share.path().to_str().unwrap(),
            "--downloads",
            bob_dl.path().to_str().unwrap(),
        ],
    )
    .named("bob");
    bob.expect("Are you a new client? (Y/N): ");
    bob.send("y");
    bob.expect("Choose a username: ");
    bob.send("bob");
    bob.expect("Choose a password: ");
    bob.send(PW);
    bob.expect_welcome("bob", 0);
    let mut alice = gui_user(&server, "alice");

    // Fetch from bob's share: listing, fetch, verified, then the bytes come back.
    alice.command(json!({"type": "files", "user": null}));
    let files = alice.wait_event("files", |e| {
        e["type"] == "files"
            && e["data"]["files"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["name"] == "notes.bin")
    });
    assert_eq!(files["data"]["files"][0]["size"], shared.len());
    alice.command(json!({"type": "fetch", "user": "bob", "name": "notes.bin"}));
    let done = alice.wait_event("fetched", |e| transfer_event(e, "finished").is_some());
    let row = &done["data"]["data"]["row"];
    assert_eq!(row["stage"]["kind"], "finished");
    assert_eq!(row["stage"]["data"]["result"], "ok", "{row}");
    let id = row["id"].as_u64().unwrap();
    assert_eq!(alice.state()["transfers"][id.to_string()]["saved"], true);
    let file = alice.get(&format!("/api/file?id={id}"));
    assert_eq!(file.status, 200);
    assert!(
        file.body == shared,
        "the saved file comes back byte for byte ({} bytes)",
        file.body.len()
    );
    assert!(
        file.header("Content-Disposition")
            .unwrap()
            .starts_with("attachment")
    );
    assert_eq!(alice.get("/api/file?id=999").status, 404);

    // Send: upload into a session with bob; bob accepts in the terminal.
    alice.command(json!({"type": "connect", "user": "bob"}));
    bob.expect("* alice wants to chat");
    bob.send("\\accept alice");
    alice.wait_event("opened", |e| session_event(e, "opened").is_some());
    let payload = vec![42u8; 200_000];
    let up = http(
        alice.addr,
        "POST",
        "/api/upload",
        &[
            ("Host", &alice.host),
            ("X-Peerchat-Token", &alice.token),
            ("X-File-Name", "my%20report.txt"),
            ("X-To", "bob"),
        ],
        &payload,
    );
    assert_eq!(up.status, 202, "{}", up.text());
    let offered = alice.wait_event("offered", |e| transfer_event(e, "offered").is_some());
    assert_eq!(offered["data"]["data"]["name"], "my report.txt");
    bob.expect("alice offers my report.txt (");
    let text = bob.output();
    let n = text
        .rsplit("* [")
        .find_map(|s| {
            s.split_once("] alice offers my report.txt")
                .map(|(n, _)| n.to_string())
        })
        .expect("bob's offer id");
    bob.send(&format!("\\accept {n}"));
    let sent = alice.wait_event("sent", |e| {
        transfer_event(e, "finished").is_some_and(|d| d["row"]["name"] == "my report.txt")
    });
    assert_eq!(sent["data"]["data"]["row"]["stage"]["data"]["result"], "ok");
    bob.expect("my report.txt");
    // The staged copy sits in the data folder, under a safe name.
    // A second offer that alice withdraws with cancel.
    let up = http(
        alice.addr,
        "POST",
        "/api/upload",
        &[
            ("Host", &alice.host),
            ("X-Peerchat-Token", &alice.token),
            ("X-File-Name", "second.txt"),
            ("X-To", "bob"),
        ],
        b"two",
    );
    assert_eq!(up.status, 202);
    let offered = alice.wait_event("second offer", |e| {
        transfer_event(e, "offered").is_some_and(|d| d["name"] == "second.txt")
    });
    let id = offered["data"]["data"]["id"].as_u64().unwrap();
    alice.command(json!({"type": "cancel", "id": id}));
    alice.wait_event("dropped", |e| {
        transfer_event(e, "dropped").is_some_and(|d| d["row"]["id"] == id)
    });
    // Both staged copies are gone once their offers ended (sent; withdrawn).
    let staging = alice
        ._dir
        .as_ref()
        .unwrap()
        .path()
        .join("alice")
        .join("staging");
    let deadline = Instant::now() + WAIT;
    loop {
        let left: Vec<_> = std::fs::read_dir(&staging)
            .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "staged uploads left: {left:?}");
        thread::sleep(Duration::from_millis(50));
    }
    // Unsafe names are refused before anything is written.
    let bad = http(
        alice.addr,
        "POST",
        "/api/upload",
        &[
            ("Host", &alice.host),
            ("X-Peerchat-Token", &alice.token),
            ("X-File-Name", "..%2F..%2Fevil"),
            ("X-To", "bob"),
        ],
        b"x",
    );
    assert_eq!(bad.status, 400, "{}", bad.text());
    // A path from the page is never taken as a file to send.
    let a = alice.post(
        "/api/command",
        &json!({"type": "send_file", "path": "/etc/passwd", "to": "bob"}),
    );
    assert_eq!(a.status, 400);
}

#[test]
fn the_guard_refuses_missing_or_wrong_tokens_foreign_hosts_and_origins() {
    let server = Server::start();
    let dir = TempDir::new().unwrap();
    let gui = Gui::spawn(server.addr, dir.path(), &[]);
    let host = gui.host.clone();
    let a = gui.get("/api/state");
    assert_eq!(a.status, 200);
    // No token, a wrong token, a token of the right length but one bit off.
    let no_token = http(gui.addr, "GET", "/api/state", &[("Host", &host)], b"");
    assert_eq!(no_token.status, 403);
    let wrong = http(
        gui.addr,
        "GET",
        "/api/state",
        &[("Host", &host), ("X-Peerchat-Token", "nope")],
        b"",
    );
    assert_eq!(wrong.status, 403);
    let mut near = gui.token.clone();
    let last = if near.ends_with('0') { "1" } else { "0" };
    near.replace_range(31.., last);
    let near = http(
        gui.addr,
        "GET",
        "/api/events?since=0&timeout=1",
        &[("Host", &host), ("X-Peerchat-Token", &near)],
        b"",
    );
    assert_eq!(near.status, 403);
    // The token in the URL is not a way in either.
    let in_url = http(
        gui.addr,
        "GET",
        &format!("/api/state?token={}", gui.token),
        &[("Host", &host)],
        b"",
    );
    assert_eq!(in_url.status, 403);
    // DNS rebinding: the right token but a foreign Host, for the API and the page.
    let evil_host = http(
        gui.addr,
        "GET",
        "/api/state",
        &[
            ("Host", "evil.example:80"),
            ("X-Peerchat-Token", &gui.token),
        ],
        b"",
    );
    assert_eq!(evil_host.status, 403);
    let port = gui.addr.port();
    let rebinding = http(
        gui.addr,
        "GET",
        "/",
        &[("Host", &format!("attacker.example:{port}"))],
        b"",
    );
    assert_eq!(rebinding.status, 403);
    let no_host = http(gui.addr, "GET", "/", &[], b"");
    assert_eq!(no_host.status, 403);
    // CSRF: a foreign Origin is refused even with the token; no CORS permission is given.
    let csrf = http(
        gui.addr,
        "POST",
        "/api/login",
        &[
            ("Host", &host),
            ("X-Peerchat-Token", &gui.token),
            ("Origin", "http://evil.example"),
            ("Content-Type", "application/json"),
        ],
        br#"{"answer":"Y"}"#,
    );
    assert_eq!(csrf.status, 403);
    assert!(csrf.header("Access-Control-Allow-Origin").is_none());
    let same_origin = http(
        gui.addr,
        "GET",
        "/api/state",
        &[
            ("Host", &host),
            ("X-Peerchat-Token", &gui.token),
            ("Origin", &format!("http://{host}")),
        ],
        b"",
    );
    assert_eq!(same_origin.status, 200);
    assert!(same_origin.header("Access-Control-Allow-Origin").is_none());
    // A form post (not JSON) is refused too.
    let form = http(
        gui.addr,
        "POST",
        "/api/login",
        &[
            ("Host", &host),
            ("X-Peerchat-Token", &gui.token),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        b"answer=Y",
    );
    assert_eq!(form.status, 415);
    // The page itself: no token needed, strict headers, no inline script.
    let page = http(
        gui.addr,
        "GET",
        "/",
        &[("Host", &format!("localhost:{port}"))],
        b"",
    );
    assert_eq!(page.status, 200);
    let csp = page.header("Content-Security-Policy").unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(
        page.header("X-Content-Type-Options").as_deref(),
        Some("nosniff")
    );
    let html = page.text();
    assert!(
        !html.contains("<script>") && html.contains("<script src=\"/app.js\""),
        "no inline script"
    );
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no external requests"
    );
    let js = gui.get("/app.js").text();
    assert!(!js.contains("innerHTML"), "text goes in as text");
}

#[test]
fn hostile_names_and_lines_come_back_as_json_text() {
    let server = Server::start();
    let share = TempDir::new().unwrap();
    let evil_name = "<img src=x onerror=alert(1)>.txt";
    std::fs::write(share.path().join(evil_name), b"boo").unwrap();
    let mut bob = Client::spawn(
        server.addr,
        &["--port", "0", "--share", share.path().to_str().unwrap()],
    )
    .named("bob");
    bob.expect("Are you a new client? (Y/N): ");
    bob.send("y");
    bob.expect("Choose a username: ");
    bob.send("bob");
    bob.expect("Choose a password: ");
    bob.send(PW);
    bob.expect_welcome("bob", 0);
    let mut alice = gui_user(&server, "alice");
    alice.command(json!({"type": "files", "user": "bob"}));
    let files = alice.wait_type("files");
    assert_eq!(files["data"]["files"][0]["name"], evil_name);

    alice.command(json!({"type": "connect", "user": "bob"}));
    bob.expect("* alice wants to chat");
    bob.send("\\accept alice");
    alice.wait_event("opened", |e| session_event(e, "opened").is_some());
    let payload = "<script>alert('x')</script>\"</li><b>bold</b>";
    bob.send(payload);
    let chat = alice.wait_event("the line", |e| session_event(e, "chat").is_some());
    assert_eq!(chat["data"]["data"]["line"]["text"], payload);
    let raw = alice.get("/api/state");
    assert_eq!(
        raw.header("Content-Type").as_deref(),
        Some("application/json")
    );
    assert_eq!(
        raw.header("X-Content-Type-Options").as_deref(),
        Some("nosniff")
    );
    assert!(raw.json()["sessions"]["bob"]["lines"][0]["text"] == payload);
}

#[test]
fn bodies_and_long_polls_are_capped_and_the_bind_is_loopback_only() {
    let server = Server::start();
    let dir = TempDir::new().unwrap();
    let mut gui = Gui::spawn(server.addr, dir.path(), &[]);
    let big = vec![b' '; peerchat::protocol::limits::GUI_MAX_BODY + 10];
    let a = http(
        gui.addr,
        "POST",
        "/api/command",
        &[
            ("Host", &gui.host),
            ("X-Peerchat-Token", &gui.token),
            ("Content-Type", "application/json"),
        ],
        &big,
    );
    assert_eq!(a.status, 413);
    // More long polls than allowed: the extra ones get 429 at once, the others wait.
    // Once the first question is out, nothing happens until it is answered.
    let last = gui.wait_type("login_question")["id"].as_u64().unwrap();
    assert_eq!(gui.state()["last_id"].as_u64().unwrap(), last);
    let polls: Vec<_> = (0..peerchat::protocol::limits::GUI_MAX_LONG_POLLS + 3)
        .map(|_| {
            let (addr, host, token) = (gui.addr, gui.host.clone(), gui.token.clone());
            thread::spawn(move || {
                http(
                    addr,
                    "GET",
                    &format!("/api/events?since={last}&timeout=3"),
                    &[("Host", &host), ("X-Peerchat-Token", &token)],
                    b"",
                )
                .status
            })
        })
        .collect();
    let statuses: Vec<u16> = polls.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );

    // A non-loopback address is refused unless allowed.
    let out = Command::new(env!("CARGO_BIN_EXE_peerchat-client"))
        .args([
            "--server",
            &server.addr.to_string(),
            "--gui",
            "--no-browser",
            "--gui-addr",
            "0.0.0.0:0",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--gui-allow-remote"));
}

#[test]
fn the_page_sees_the_server_go_and_reconnects() {
    let mut server = Server::start();
    let mut bob = Client::register(server.addr, "bob", PW, 0);
    let mut alice = gui_user(&server, "alice");
    alice.command(json!({"type": "connect", "user": "bob"}));
    bob.expect("* alice wants to chat");
    bob.send("\\accept alice");
    alice.wait_event("opened", |e| session_event(e, "opened").is_some());
    server.kill();
    alice.wait_type("server_lost");
    assert_eq!(alice.state()["connected"], false);
    // Sessions go on without the server.
    alice.command(json!({"type": "say_to", "user": "bob", "text": "still here"}));
    bob.expect("alice: still here");
    let restarted = server.restart_same_addr();
    alice.command(json!({"type": "reconnect"}));
    alice.wait_type("reconnected");
    assert_eq!(alice.state()["connected"], true);
    drop(restarted);
}

#[test]
fn the_page_is_asked_to_trust_a_server_it_has_not_seen() {
    let server = Server::start();
    let dir = TempDir::new().unwrap();
    let mut gui = Gui::spawn_with(server.addr, dir.path(), &[], false);
    let q = gui.wait_event("trust?", |e| e["type"] == "login_question");
    assert_eq!(q["data"]["kind"], "trust", "{q}");
    let prompt = q["data"]["prompt"].as_str().unwrap().to_lowercase();
    let fingerprint = server.fingerprint().to_lowercase();
    assert!(
        prompt.contains(&fingerprint) || prompt.contains(&fingerprint.replace(':', "")),
        "the fingerprint is shown: {prompt}"
    );
    // log_in answers the trust question Y, then registers.
    gui.log_in(true, "erin", PW);
    assert_eq!(gui.state()["me"], "erin");
}

#[test]
fn offers_through_the_server_to_and_from_offline_users_show_in_the_page() {
    let server = Server::start();
    let lab = common::Lab::new(&server);
    // bob (GUI) registers and leaves.
    let bob_dir = TempDir::new().unwrap();
    let mut bob = Gui::spawn(server.addr, bob_dir.path(), &[]);
    bob.log_in(true, "bob", PW);
    bob.command(json!({"type": "quit"}));
    assert!(bob.wait_exit().success());

    // alice (terminal) offers him a file while he is away.
    let mut carol = lab.register("carol", &[]);
    let path = lab.share_dir("carol").join("away.bin");
    let payload: Vec<u8> = (0..150_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(&path, &payload).unwrap();
    carol.send(&format!("\\offer bob {}", path.display()));
    carol.expect("bob is offline: the offer of away.bin waits at the server");

    // bob's page, at his next login: a note that it waited, and the offer as one that
    // came through the server; he accepts it there and the file arrives.
    let mut bob = Gui::spawn(server.addr, bob_dir.path(), &[]);
    bob.log_in(false, "bob", PW);
    bob.wait_event("the away note", |e| {
        e["type"] == "note"
            && e["data"]["text"]
                .as_str()
                .is_some_and(|t| t.contains("while you were away, carol offered you away.bin"))
    });
    let offer = bob.wait_event("the offer", |e| {
        transfer_event(e, "offer_in").is_some_and(|d| d["name"] == "away.bin")
    });
    let data = &offer["data"]["data"];
    assert_eq!(data["via_server"], true, "{data}");
    let id = data["id"].as_u64().unwrap();
    let row = &bob.state()["transfers"][id.to_string()]["row"];
    assert_eq!(row["via_server"], true, "{row}");
    assert_eq!(row["stage"]["kind"], "asked");
    bob.command(json!({"type": "accept_file", "id": id}));
    let done = bob.wait_event("received", |e| {
        transfer_event(e, "finished").is_some_and(|d| d["row"]["id"] == id)
    });
    assert_eq!(done["data"]["data"]["row"]["stage"]["data"]["result"], "ok");
    let file = bob.get(&format!("/api/file?id={id}"));
    assert!(file.body == payload, "the file arrives byte for byte");

    // The other way: bob's page offers dave (offline) a file; it shows as queued.
    let mut dave = lab.register("dave", &[]);
    dave.send("\\quit");
    dave.expect("Bye.");
    assert!(dave.wait_exit().success());
    let up = http(
        bob.addr,
        "POST",
        "/api/upload",
        &[
            ("Host", &bob.host),
            ("X-Peerchat-Token", &bob.token),
            ("X-File-Name", "later.txt"),
            ("X-To", "dave"),
        ],
        b"for later",
    );
    assert_eq!(up.status, 202, "{}", up.text());
    let offered = bob.wait_event("offered", |e| {
        transfer_event(e, "offered").is_some_and(|d| d["name"] == "later.txt")
    });
    assert_eq!(offered["data"]["data"]["via_server"], true);
    bob.wait_event("the queued note", |e| {
        e["type"] == "note"
            && e["data"]["text"].as_str().is_some_and(|t| {
                t.contains("dave is offline: the offer of later.txt waits at the server")
            })
    });
    let id = offered["data"]["data"]["id"].as_u64().unwrap();
    let row = &bob.state()["transfers"][id.to_string()]["row"];
    assert_eq!(row["stage"]["kind"], "offered");
    assert_eq!(row["via_server"], true);
    // dave logs in and accepts; the staged copy reaches him.
    let mut dave = lab.login("dave", &[]);
    let line = dave.expect_line("the offer", |l| l.contains("] bob offers later.txt ("));
    dave.send(&format!("\\accept {id}"));
    assert!(line.contains(&format!("[{id}]")));
    let sent = bob.wait_event("sent", |e| {
        transfer_event(e, "finished").is_some_and(|d| d["row"]["id"] == id)
    });
    assert_eq!(sent["data"]["data"]["row"]["stage"]["data"]["result"], "ok");
    assert_eq!(
        std::fs::read(lab.downloads("dave").join("later.txt")).unwrap(),
        b"for later"
    );
}

#[test]
fn messages_through_the_server_and_the_users_page_fold_into_the_state() {
    let server = Server::start();
    let mut bob = Client::register(server.addr, "bob", PW, 0);
    let mut alice = gui_user(&server, "alice");

    // bob writes with no session: a conversation of messages, not a session "asking".
    bob.send("\\msg alice hi via the server");
    bob.expect("message to alice delivered");
    alice.wait_event("the message", |e| {
        e["type"] == "mail" && e["data"]["kind"] == "received"
    });
    let state = alice.state();
    let talk = &state["sessions"]["bob"];
    assert_eq!(talk["state"], "messages", "{talk}");
    assert_eq!(talk["lines"][0]["text"], "(via server) hi via the server");

    // alice answers through the server: her line joins once the server took it.
    alice.command(json!({"type": "msg", "to": "bob", "text": "and back"}));
    alice.wait_event("sent", |e| {
        e["type"] == "mail" && e["data"]["kind"] == "sent"
    });
    bob.expect("(via server) alice: and back");
    let state = alice.state();
    let last = state["sessions"]["bob"]["lines"]
        .as_array()
        .and_then(|l| l.last())
        .cloned()
        .unwrap();
    assert_eq!(last["sender"], "alice", "{last}");
    assert_eq!(last["text"], "(via server) and back");

    // The users page the page asked for is kept, with its offset and the total.
    alice.command(json!({"type": "list", "offset": 1}));
    alice.wait_event("the second page", |e| {
        e["type"] == "users" && e["data"]["users"].as_array().is_some_and(|u| u.len() == 1)
    });
    let state = alice.state();
    assert_eq!(state["users_offset"], 1, "{state}");
    assert_eq!(state["users"], json!(["bob"]));
    assert_eq!(state["users_total"], 2);
}
