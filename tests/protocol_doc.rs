//! protocol.md is executed: every fenced block marked `example server` or `example peer`
//! is replayed against the real binaries and compared line by line (issue 8, "Make
//! drift impossible"); every error code of `protocol::codes` must appear in §7 with its
//! situations; the RESUME worked example of §11 is recomputed from the document's text.
//!
//! The fence's info string says how an example is set up (protocol.md §9 and §10 explain
//! the words). Only words listed in `vary=` may differ from the document; each stands for
//! one value throughout its example (bound where the software first says it, substituted
//! where the example's client sends it).

mod common;

use std::collections::HashMap;
use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use common::{Client, Got, Lab, PW, Server, Wire};
use peerchat::protocol::codes::ErrorCode;
use peerchat::protocol::peer_msg::PeerMsg;
use peerchat::protocol::ticket::Ticket;
use peerchat::protocol::transfer_msg::{CHUNK_SIZE, FileHasher};

/// One example block of protocol.md.
struct Example {
    /// `server` or `peer`.
    kind: String,
    /// Bare words of the info string (`chat`, `fetch`, `raw`).
    flags: Vec<String>,
    /// `key=value` words of the info string.
    opts: HashMap<String, String>,
    /// The block's lines.
    lines: Vec<String>,
    /// Line number of the opening fence in protocol.md, for failure messages.
    at: usize,
}

impl Example {
    fn list(&self, key: &str) -> Vec<String> {
        self.opts
            .get(key)
            .map(|v| v.split(',').map(str::to_string).collect())
            .unwrap_or_default()
    }
}

fn doc() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("protocol.md");
    fs::read_to_string(path).expect("read protocol.md")
}

/// Every fenced block: (info string, lines, fence line number).
fn blocks(text: &str) -> Vec<(String, Vec<String>, usize)> {
    let mut out = Vec::new();
    let mut current: Option<(String, Vec<String>, usize)> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if let Some(info) = trimmed.strip_prefix("```") {
            match current.take() {
                Some(block) => out.push(block),
                None => current = Some((info.trim().to_string(), Vec::new(), i + 1)),
            }
        } else if let Some((_, lines, _)) = current.as_mut() {
            lines.push(line.to_string());
        }
    }
    assert!(current.is_none(), "protocol.md has an unclosed fence");
    out
}

fn examples() -> Vec<Example> {
    blocks(&doc())
        .into_iter()
        .filter_map(|(info, lines, at)| {
            let mut words = info.split_whitespace();
            if words.next() != Some("example") {
                return None;
            }
            let kind = words.next().unwrap_or("").to_string();
            let (mut flags, mut opts) = (Vec::new(), HashMap::new());
            for w in words {
                match w.split_once('=') {
                    Some((k, v)) => {
                        opts.insert(k.to_string(), v.to_string());
                    }
                    None => flags.push(w.to_string()),
                }
            }
            Some(Example {
                kind,
                flags,
                opts,
                lines,
                at,
            })
        })
        .collect()
}

/// The port each user of the examples declares.
fn port_of(user: &str) -> u16 {
    match user {
        "alice" => 40001,
        "bob" => 40002,
        "carol" => 40003,
        "mallory" => 40004,
        _ => 40010,
    }
}

/// The words that vary, and what they stand for once seen.
struct Vary {
    words: Vec<String>,
    bound: HashMap<String, String>,
}

impl Vary {
    fn new(ex: &Example) -> Vary {
        Vary {
            words: ex.list("vary"),
            bound: HashMap::new(),
        }
    }

    /// The document's line with every bound word replaced by its value.
    fn substitute(&self, line: &str) -> String {
        line.split(' ')
            .map(|w| self.bound.get(w).map_or(w, String::as_str))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Does `got` match the document's `want`? Binds varying words on first sight.
    fn matches(&mut self, want: &str, got: &str) -> bool {
        let (w, g): (Vec<&str>, Vec<&str>) = (want.split(' ').collect(), got.split(' ').collect());
        if w.len() != g.len() {
            return false;
        }
        for (w, g) in w.iter().zip(&g) {
            // A word bound already (listed in `vary=`, or set up by the test, such as
            // the real ticket and the proof made from it) must have that value.
            if let Some(value) = self.bound.get(*w) {
                if value != g {
                    return false;
                }
            } else if self.words.iter().any(|v| v == w) {
                self.bound.insert(w.to_string(), g.to_string());
            } else if w != g {
                return false;
            }
        }
        true
    }
}

/// Reads the next line of `wire` and checks it against the document's `want`.
fn expect_doc_line(wire: &mut Wire, vary: &mut Vary, want: &str, at: usize) {
    let got = wire.next_line();
    if !vary.matches(want, &got) {
        wire.fail(&format!(
            "protocol.md example at line {at}: expected {want:?}, got {got:?}"
        ));
    }
}

fn expect_closed(wire: &mut Wire, at: usize) {
    match wire.read_within(Duration::from_secs(10)) {
        Got::Closed => {}
        Got::Line(line) => wire.fail(&format!(
            "protocol.md example at line {at}: expected the close, got {line:?}"
        )),
        Got::TimedOut => wire.fail(&format!(
            "protocol.md example at line {at}: the connection stayed open"
        )),
    }
}

/// Sends a `C:` line; two placeholders stand for bytes a document cannot show.
fn send_doc_line(wire: &mut Wire, vary: &Vary, line: &str) {
    match line {
        "<bytes that are not UTF-8>" => wire.send_bytes(b"\xff\xfe\xfd\n").unwrap(),
        "<5000 bytes without a newline>" => wire.send_bytes(&[b'x'; 5000]).unwrap(),
        _ => wire.send(&vary.substitute(line)),
    }
}

/// PING until OK PONG, dropping events: nothing from the setup is left to read.
fn drain(wire: &mut Wire) {
    wire.send("PING");
    while wire.next_line() != "OK PONG" {}
}

fn run_server_example(ex: &Example) {
    let mut builder = Server::builder();
    let args: Vec<String> = ex
        .list("args")
        .iter()
        .flat_map(|a| a.splitn(2, '=').map(str::to_string).collect::<Vec<_>>())
        .collect();
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    builder = builder.args(&arg_refs);
    let server = builder.start();
    let accounts = ex.list("accounts");
    for name in &accounts {
        Wire::registered(server.addr, name, PW, port_of(name)).quit();
    }
    let join = |name: &str| match accounts.iter().any(|a| a == name) {
        true => Wire::logged_in(server.addr, name, PW, port_of(name)),
        false => Wire::registered(server.addr, name, PW, port_of(name)),
    };
    let mut others: HashMap<String, Wire> = HashMap::new();
    for name in ex.list("online") {
        others.insert(name.clone(), join(&name));
    }
    let mut main = match ex.opts.get("as") {
        Some(name) => join(name),
        None => Wire::connect(server.addr).named("example"),
    };
    for wire in others.values_mut() {
        drain(wire);
    }
    if ex.opts.contains_key("as") {
        drain(&mut main);
    }
    let mut vary = Vary::new(ex);
    for (i, line) in ex.lines.iter().enumerate() {
        let at = ex.at + 1 + i;
        let (who, rest) = match line.split_once(' ') {
            Some((who, rest)) if others.contains_key(who) => (Some(who), rest),
            _ => (None, line.as_str()),
        };
        let wire = match who {
            Some(who) => others.get_mut(who).unwrap(),
            None => &mut main,
        };
        if let Some(sent) = rest.strip_prefix("C: ") {
            send_doc_line(wire, &vary, sent);
        } else if let Some(want) = rest.strip_prefix("S: ") {
            expect_doc_line(wire, &mut vary, want, at);
        } else if rest == "(the server closes the connection)" {
            expect_closed(wire, at);
        } else if rest == "(the connection breaks; the client connects again)" {
            // The example's own connection drops without QUIT and a new one starts.
            *wire = Wire::connect(server.addr).named("example, again");
        } else if rest == "(the server gets Ctrl+C)" {
            server.interrupt();
        } else if let Some(n) = rest
            .strip_prefix('(')
            .and_then(|r| r.strip_suffix(" more TEXT lines)"))
        {
            for _ in 0..n.parse::<usize>().expect("a count of TEXT lines") {
                let got = wire.next_line();
                assert!(got.starts_with("TEXT "), "line {at}: {got:?}");
            }
        } else {
            panic!("protocol.md line {at}: this test does not know {line:?}");
        }
    }
}

/// Bob's real client for a peer example, and alice's server connection.
struct PeerLab {
    _server: Server,
    _lab: Lab,
    bob: Client,
    alice: Wire,
}

fn peer_lab() -> PeerLab {
    let server = Server::start();
    let lab = Lab::new(&server);
    fs::write(lab.share_dir("bob").join("hi there.txt"), b"hello\n").unwrap();
    let bob = lab.register_sharing("bob");
    let alice = Wire::registered(server.addr, "alice", PW, 40001);
    PeerLab {
        _server: server,
        _lab: lab,
        bob,
        alice,
    }
}

/// `OK SESSION|TRANSFER <id> bob <addr> <ticket> <key>` → (id, addr, ticket).
fn grant(alice: &mut Wire, command: &str) -> (String, SocketAddr, String) {
    alice.send(command);
    let reply = alice.expect("OK");
    match reply.split(' ').collect::<Vec<_>>().as_slice() {
        ["OK", _, id, "bob", addr, ticket, _key, _hints] => {
            (id.to_string(), addr.parse().unwrap(), ticket.to_string())
        }
        _ => alice.fail(&format!("unexpected grant {reply:?}")),
    }
}

fn run_peer_example(ex: &Example) {
    let mut lab = peer_lab();
    let mut vary = Vary::new(ex);
    let kind = ex.flags.first().map(String::as_str).unwrap_or("");
    let first = ex.lines.first().expect("an empty example");
    // How the connection starts: Noise with this ticket (§10), or plain.
    let mut noise_ticket: Option<String> = None;
    let addr = match kind {
        "chat" | "fetch" => {
            let first = first
                .strip_prefix("> ")
                .expect("a chat or fetch example starts with its first line `> `");
            let command = if kind == "chat" {
                "CONNECT bob"
            } else {
                "TRANSFER bob"
            };
            let (id, addr, ticket) = grant(&mut lab.alice, command);
            // The document's id and ticket in the first line stand for the real ones.
            let (doc_id, doc_ticket) = match PeerMsg::parse_first(first) {
                Ok(PeerMsg::Hello {
                    session, ticket, ..
                }) => (session, ticket),
                Ok(PeerMsg::Fetch {
                    transfer, ticket, ..
                }) => (transfer, ticket),
                other => panic!("line {}: not a first line: {other:?}", ex.at + 1),
            };
            // So does the proof in bob's `ACCEPT`, which is made from them (§10).
            let real = Ticket::parse(&ticket).expect("the server's ticket");
            let real_id: u64 = id.parse().expect("a numeric id");
            vary.bound.insert(
                doc_ticket
                    .accept_mac(doc_id, "alice", "bob")
                    .to_hex()
                    .to_string(),
                real.accept_mac(real_id, "alice", "bob")
                    .to_hex()
                    .to_string(),
            );
            vary.bound.insert(doc_id.to_string(), id);
            vary.bound.insert(doc_ticket.to_string(), ticket.clone());
            noise_ticket = Some(ticket);
            addr
        }
        "inside" => {
            // A real ticket for the handshake; the lines go exactly as shown.
            let (_, addr, ticket) = grant(&mut lab.alice, "CONNECT bob");
            noise_ticket = Some(ticket);
            addr
        }
        "raw" => {
            lab.alice.send("INFO bob");
            let info = lab.alice.expect("OK INFO bob");
            info.split(' ').nth(3).unwrap().parse().unwrap()
        }
        other => panic!("line {}: unknown peer example kind {other:?}", ex.at),
    };
    // `(handshake with ticket T)`: the handshake itself, refused in clear; the `<`
    // lines that follow are that refusal.
    let mut refusal: Option<String> = None;
    let mut wire = match &noise_ticket {
        Some(ticket) => Wire::peer(addr, ticket).named("bob's listener (Noise)"),
        None => Wire::try_connect(addr)
            .expect("connect to bob's listener")
            .named("bob's listener"),
    };
    for (i, line) in ex.lines.iter().enumerate() {
        let at = ex.at + 1 + i;
        if let Some(ticket) = line
            .strip_prefix("(handshake with ticket ")
            .and_then(|t| t.strip_suffix(')'))
        {
            refusal = Some(Wire::refused_peer(addr, ticket));
        } else if let (Some(want), Some(got)) = (line.strip_prefix("< "), refusal.as_ref()) {
            assert!(
                vary.matches(want, got),
                "protocol.md example at line {at}: expected {want:?}, got {got:?} in clear"
            );
        } else if line == "(the connection closes)" && refusal.is_some() {
            // `Wire::refused_peer` saw the close after the refusal line.
        } else if let Some(sent) = line.strip_prefix("> ") {
            wire.send(&vary.substitute(sent));
        } else if let Some(want) = line.strip_prefix("< ") {
            expect_doc_line(&mut wire, &mut vary, want, at);
        } else if line == "(bob accepts)" {
            lab.bob
                .expect_line("alice's request", |l| l.contains("alice wants to chat"));
            lab.bob.send("\\accept alice");
        } else if let Some(text) = line
            .strip_prefix("(bob types: ")
            .and_then(|t| t.strip_suffix(')'))
        {
            lab.bob.send(text);
        } else if let Some(text) = line
            .strip_prefix("(bob sees: ")
            .and_then(|t| t.strip_suffix(')'))
        {
            // What bob's client shows: the example waits for it before going on.
            lab.bob.expect(text);
        } else if line == "(the connection closes)" {
            expect_closed(&mut wire, at);
        } else if line == "(3 s later)" || line == "(5 s without a line)" {
            // Only a pace: the next line's read waits up to 15 s.
        } else {
            panic!("protocol.md line {at}: this test does not know {line:?}");
        }
    }
}

#[test]
fn every_server_example_in_protocol_md_runs_against_the_real_server() {
    let examples: Vec<Example> = examples()
        .into_iter()
        .filter(|e| e.kind == "server")
        .collect();
    assert!(
        examples.len() >= 12,
        "only {} server examples",
        examples.len()
    );
    for ex in &examples {
        eprintln!("running the server example at protocol.md line {}", ex.at);
        run_server_example(ex);
    }
}

#[test]
fn every_peer_example_in_protocol_md_runs_against_a_real_client() {
    let examples: Vec<Example> = examples()
        .into_iter()
        .filter(|e| e.kind == "peer")
        .collect();
    assert!(examples.len() >= 7, "only {} peer examples", examples.len());
    // Each example has its own server and client; run them side by side (the forged
    // ticket alone waits 3 s).
    let handles: Vec<_> = examples
        .into_iter()
        .map(|ex| {
            std::thread::spawn(move || {
                eprintln!("running the peer example at protocol.md line {}", ex.at);
                run_peer_example(&ex);
            })
        })
        .collect();
    let failed = handles.into_iter().filter_map(|h| h.join().err()).count();
    assert_eq!(failed, 0, "{failed} peer example(s) failed; see above");
}

#[test]
fn every_exchange_shown_in_protocol_md_is_an_executed_example() {
    for (info, lines, at) in blocks(&doc()) {
        if info.starts_with("example ") {
            assert!(
                info.starts_with("example server")
                    || info.starts_with("example peer")
                    || info.starts_with("example relay"),
                "line {at}: unknown example kind {info:?}"
            );
            continue;
        }
        let exchange = lines
            .iter()
            .any(|l| ["C: ", "S: ", "> ", "< "].iter().any(|p| l.starts_with(p)));
        assert!(
            !exchange,
            "protocol.md line {at}: a block showing an exchange must be an executed example"
        );
    }
}

#[test]
fn every_error_code_is_in_section_7_with_its_situations() {
    let text = doc();
    let start = text.find("## 7. Error codes").expect("§7");
    let end = text[start..].find("\n## 8.").expect("§8") + start;
    let section = &text[start..end];
    for &code in ErrorCode::ALL {
        let prefix = format!("| {} | `{}` |", code.number(), code.name());
        let row = section
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("§7 has no row for {code}"));
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        // | code | name | situations | closes? |
        assert!(
            cells.len() >= 5 && cells[3].len() >= 10 && !cells[4].is_empty(),
            "§7's row for {code} must say when it happens and whether it closes: {row}"
        );
    }
    let rows = section
        .lines()
        .filter(|l| l.starts_with("| 4") || l.starts_with("| 5"))
        .count();
    assert_eq!(
        rows,
        ErrorCode::ALL.len(),
        "§7 lists a code protocol::codes does not have"
    );
}

/// The 64-hex word right after `label` in `text`.
fn hash_after(text: &str, label: &str) -> String {
    let at = text
        .find(label)
        .unwrap_or_else(|| panic!("{label:?} not in §11"))
        + label.len();
    text[at..]
        .split(|c: char| !c.is_ascii_hexdigit())
        .find(|w| w.len() == 64)
        .unwrap_or_else(|| panic!("no hash after {label:?}"))
        .to_string()
}

#[test]
fn the_resume_worked_example_recomputes_from_the_document() {
    let text = doc();
    let start = text
        .find("**Worked example**")
        .expect("the worked example in §11");
    let example = &text[start..start + 3000];
    // "a file of 2,097,157 bytes (2 MiB + 5) whose byte `i` is `i mod 251`"
    assert!(example.contains("2,097,157 bytes") && example.contains("`i mod 251`"));
    let size = 2 * CHUNK_SIZE + 5;
    assert_eq!(size, 2_097_157);
    let bytes: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let mut file = FileHasher::new();
    let mut prefixes = Vec::new();
    for (k, chunk) in bytes.chunks(CHUNK_SIZE).enumerate() {
        let hash = blake3::hash(chunk);
        assert_eq!(
            hash_after(example, &format!("| {k} |")),
            hash.to_hex().as_str(),
            "chunk {k}"
        );
        file.add(&hash);
        prefixes.push(file.finish());
    }
    assert_eq!(
        hash_after(example, "RESUME 1048576"),
        prefixes[0].to_hex().as_str()
    );
    assert_eq!(
        hash_after(example, "RESUME 2097152"),
        prefixes[1].to_hex().as_str()
    );
    assert_eq!(
        hash_after(example, "`END` and `DONE` is"),
        prefixes[2].to_hex().as_str()
    );
    assert_eq!(
        hash_after(example, "BLAKE3 of nothing,"),
        FileHasher::new().finish().to_hex().as_str()
    );
}

/// Formats 200000 as `200,000`, as the document writes numbers.
fn with_commas(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[test]
fn section_8_states_the_limits_the_code_enforces() {
    use peerchat::protocol::limits::*;
    let text = doc();
    let start = text.find("## 8. Limits and timeouts").expect("§8");
    let end = text[start..].find("\n## 9.").expect("§9") + start;
    let section = &text[start..end];
    let mib = |n: usize| format!("{} MiB", n >> 20);
    for (row, values) in [
        ("| line length |", vec![format!("{MAX_LINE} bytes")]),
        (
            "| outgoing queue per connection |",
            vec![
                format!("{OUTGOING_QUEUE} messages"),
                mib(OUTGOING_QUEUE_BYTES),
            ],
        ),
        (
            "| own replies wait (pipelining) |",
            vec![format!("{REPLY_QUEUE} messages"), mib(REPLY_QUEUE_BYTES)],
        ),
        ("| chat text |", vec![format!("{MAX_CHAT_TEXT} bytes")]),
        (
            "| shared files per user |",
            vec![with_commas(MAX_SHARED_FILES)],
        ),
        (
            "| search results shown |",
            vec![MAX_SEARCH_RESULTS.to_string()],
        ),
        (
            "| `FILES` lines per reply |",
            vec![MAX_FILES_PAGE.to_string()],
        ),
        (
            "| files in the index, all users |",
            vec![with_commas(MAX_INDEX_FILES)],
        ),
        (
            "| files in the index from one IP address |",
            vec![with_commas(MAX_INDEX_FILES_PER_ADDRESS)],
        ),
        ("| file name |", vec![format!("1–{MAX_FILE_NAME} bytes")]),
        (
            "| `LIST` lines per reply |",
            vec![MAX_LIST_PAGE.to_string()],
        ),
        (
            "| presence announcements |",
            vec![
                format!("every {} ms", PRESENCE_INTERVAL.as_millis()),
                format!("over {MAX_PRESENCE_NAMES} names"),
                format!("{} lines a second", with_commas(PRESENCE_FANOUT)),
            ],
        ),
        (
            "| resumable-login token |",
            vec![
                format!("valid {} s", TOKEN_LIFETIME.as_secs()),
                format!("{MAX_TOKENS_PER_USER} per account"),
            ],
        ),
        ("| transfer chunk |", vec![with_commas(CHUNK_SIZE)]),
        (
            "| transfer ticket kept by the target",
            vec![
                format!("{} s after issue", TRANSFER_TICKET_TTL.as_secs()),
                format!("an offer's {} s", OFFER_TIMEOUT.as_secs()),
            ],
        ),
        // ---- x3: messages through the server ----
        (
            "| message text through the server (§4d) |",
            vec![format!("{MAX_MESSAGE_TEXT} bytes")],
        ),
        (
            "| sealed message (`SEND`) |",
            vec![format!("{MAX_SEALED_MESSAGE} bytes")],
        ),
        (
            "| messages waiting per recipient |",
            vec![
                format!("| {MAILBOX_PER_USER} "),
                format!("1–{MAX_MAILBOX_SETTING}"),
            ],
        ),
        (
            "| messages waiting, all recipients |",
            vec![with_commas(MAILBOX_TOTAL)],
        ),
        (
            "| a waiting message expires |",
            vec![format!("{} s", MAILBOX_EXPIRY.as_secs())],
        ),
        (
            "| file offers and answers held per user |",
            vec![format!("| {OFFERS_PER_USER} ")],
        ),
        (
            "| file offers and answers held, all users |",
            vec![with_commas(OFFERS_TOTAL)],
        ),
        (
            "| `SEND` per user |",
            vec![
                format!("{MESSAGE_BURST} at once"),
                format!("{MESSAGE_RATE} per second"),
            ],
        ),
    ] {
        let line = section
            .lines()
            .find(|l| l.starts_with(row))
            .unwrap_or_else(|| panic!("§8 has no row {row}"));
        for value in values {
            assert!(
                line.contains(&value),
                "§8 row {row} should say {value}: {line}"
            );
        }
    }
}

// ---- W5: relay examples ----

/// Replays every `example relay` block against a real `peerchat-server --relay-only`:
/// `a`, `b`, `c`... are connections; `<token-a>` and `<token-b>` stand for the two tokens
/// of one fresh circuit (issued with the relay's secret); `args=--flag=value` passes flags.
#[test]
fn every_relay_example_in_protocol_md_runs_against_a_real_relay() {
    use peerchat::server::relay_token::RelaySecret;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpStream;
    const SECRET: &str = "protocol.md relay example secret";
    let examples: Vec<Example> = examples()
        .into_iter()
        .filter(|e| e.kind == "relay")
        .collect();
    assert!(!examples.is_empty(), "protocol.md has no relay example");
    for ex in examples {
        let dir = tempfile::TempDir::new().unwrap();
        let key = dir.path().join("relay.key");
        fs::write(&key, SECRET).unwrap();
        let args: Vec<String> = ex
            .list("args")
            .iter()
            .flat_map(|a| a.splitn(2, '=').map(str::to_string).collect::<Vec<_>>())
            .collect();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_peerchat-server"))
            .args([
                "--relay-only",
                "--addr",
                "127.0.0.1:0",
                "--relay-secret-file",
            ])
            .arg(&key)
            .args(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        out.read_line(&mut first).unwrap();
        let addr: SocketAddr = first
            .trim()
            .strip_prefix("relay listening on ")
            .expect("relay line")
            .parse()
            .unwrap();
        let next_pair = {
            let secret = RelaySecret::from_text(SECRET).unwrap();
            move || {
                secret
                    .issue_pair("alice", "bob", Duration::from_secs(30))
                    .unwrap()
            }
        };
        let (mut ta, mut tb) = next_pair();
        let mut conns: HashMap<String, TcpStream> = HashMap::new();
        for (i, line) in ex.lines.iter().enumerate() {
            let at = ex.at + 1 + i;
            if line.trim().is_empty() {
                continue;
            }
            if line.trim() == "(new circuit)" {
                (ta, tb) = next_pair();
                continue;
            }
            let (who, rest) = line.split_once(' ').expect("who");
            let text = rest.replace("<token-a>", &ta).replace("<token-b>", &tb);
            let conn = conns.entry(who.to_string()).or_insert_with(|| {
                let s = TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                s
            });
            if let Some(sent) = text.strip_prefix("C: ") {
                (&*conn)
                    .write_all(format!("{sent}\r\n").as_bytes())
                    .unwrap();
            } else if let Some(want) = text.strip_prefix("S: ") {
                let mut got = Vec::new();
                let mut b = [0u8; 1];
                while let Ok(1) = (&*conn).read(&mut b) {
                    if b[0] == b'\n' {
                        break;
                    }
                    got.push(b[0]);
                }
                let got = String::from_utf8_lossy(&got).trim_end().to_string();
                assert_eq!(got, want, "protocol.md line {at}");
            } else {
                panic!("protocol.md line {at}: not C: or S:");
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

// ---- x4: address hints and the reverse rung ----

/// §8 states the ladder's limits as the code has them.
#[test]
fn section_8_states_the_ladder_limits() {
    use peerchat::protocol::limits::*;
    let text = doc();
    let start = text.find("## 8. Limits and timeouts").expect("§8");
    let end = text[start..].find("\n## 9.").expect("§9") + start;
    let section = &text[start..end];
    for (row, value) in [
        ("| address hints a client reports", MAX_HINTS.to_string()),
        (
            "| ladder: each direct or reverse connect attempt",
            format!("{} s", HINT_CONNECT_TIMEOUT.as_secs()),
        ),
        (
            "| ladder: the requester waits to be dialled back",
            format!("{} s", REVERSE_WAIT.as_secs()),
        ),
        (
            "| ladder: reverse dials a client runs at once",
            MAX_REVERSE_DIALS.to_string(),
        ),
    ] {
        let line = section
            .lines()
            .find(|l| l.starts_with(row))
            .unwrap_or_else(|| panic!("§8 has no row {row:?}"));
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        assert!(
            cells[2].starts_with(&value),
            "§8 row {row:?} says {:?}, the code {value}",
            cells[2]
        );
    }
}
