//! File sharing (protocol.md §10 offers, the data connections of `PUSH` and `FETCH`, the
//! server's transfer log, shared-file index and search): the real server and real
//! clients over pipes, real files in temporary folders, and raw sockets where a test
//! plays a hostile peer. Every received file is compared byte for byte with its source.

mod common;

use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use tempfile::TempDir;

/// Bytes per chunk on a data connection (protocol: `CHUNK_SIZE`).
const CHUNK: usize = 1 << 20;

/// One MiB, for sizes.
const MIB: u64 = 1 << 20;

/// The size of the "large" files.
const BIG: u64 = 200 * MIB;

/// Upper bound for a whole 200 MiB transfer in a debug build; only matters if it hangs.
const BIG_WAIT: Duration = Duration::from_secs(300);

// ---------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------

/// Writes `size` bytes of a pseudo-random pattern (seeded by `seed`), in 1 MiB blocks:
/// one random block, rotated differently for every block so no two chunks are equal.
fn write_pattern(path: &Path, size: u64, seed: u64) {
    let mut base = vec![0u8; CHUNK];
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for word in base.chunks_mut(8) {
        // xorshift64*
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let v = x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
        word.copy_from_slice(&v[..word.len()]);
    }
    let mut out = BufWriter::with_capacity(CHUNK, File::create(path).expect("create file"));
    let mut block = vec![0u8; CHUNK];
    let mut left = size;
    let mut i = 0usize;
    while left > 0 {
        let turn = (i * 4099 + 7) % CHUNK;
        block[..CHUNK - turn].copy_from_slice(&base[turn..]);
        block[CHUNK - turn..].copy_from_slice(&base[..turn]);
        block[..8].copy_from_slice(&(i as u64).to_le_bytes());
        let n = left.min(CHUNK as u64) as usize;
        out.write_all(&block[..n]).expect("write file");
        left -= n as u64;
        i += 1;
    }
    out.flush().expect("flush file");
}

/// Reads up to `buf.len()` bytes; fewer only at the end.
fn read_full(file: &mut File, buf: &mut [u8]) -> usize {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]).expect("read file") {
            0 => break,
            n => filled += n,
        }
    }
    filled
}

/// Panics unless `got` has exactly the bytes of `want` (compared block by block).
fn assert_same_file(want: &Path, got: &Path) {
    let (wm, gm) = (
        fs::metadata(want).unwrap_or_else(|e| panic!("{}: {e}", want.display())),
        fs::metadata(got).unwrap_or_else(|e| panic!("{}: {e}", got.display())),
    );
    assert_eq!(
        gm.len(),
        wm.len(),
        "{} has {} bytes, its source {} has {}",
        got.display(),
        gm.len(),
        want.display(),
        wm.len()
    );
    let (mut a, mut b) = (File::open(want).unwrap(), File::open(got).unwrap());
    let (mut ba, mut bb) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
    let mut offset = 0u64;
    loop {
        let na = read_full(&mut a, &mut ba);
        let nb = read_full(&mut b, &mut bb);
        assert_eq!(na, nb, "short read at {offset}");
        if na == 0 {
            return;
        }
        if ba[..na] != bb[..nb] {
            let at = ba.iter().zip(&bb).position(|(x, y)| x != y).unwrap();
            panic!(
                "{} differs from {} at byte {}",
                got.display(),
                want.display(),
                offset + at as u64
            );
        }
        offset += na as u64;
    }
}

/// The peerchat file hash: BLAKE3 over the BLAKE3 hashes of the 1 MiB chunks, in order.
fn peerchat_hash(path: &Path) -> String {
    let mut file = File::open(path).unwrap();
    let mut buf = vec![0u8; CHUNK];
    let mut whole = blake3::Hasher::new();
    loop {
        let n = read_full(&mut file, &mut buf);
        if n == 0 {
            break;
        }
        whole.update(blake3::hash(&buf[..n]).as_bytes());
    }
    whole.finalize().to_hex().to_string()
}

/// Every regular file under `dir` (recursively), as paths relative to it, sorted.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let entry = entry.unwrap();
            let path = entry.path();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                walk(root, &path, out);
            } else {
                out.push(path.strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// The files directly in `dir` (not the partial folder), sorted by name.
fn final_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap())
            .filter(|e| e.file_type().unwrap().is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

/// `1.5 MiB` as the client prints sizes.
fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Bytes in a printed size such as `42.0 MiB` (approximate: one decimal).
fn parse_human(text: &str) -> Option<f64> {
    let (value, unit) = text.trim().split_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let scale = match unit {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some(value * scale)
}

// ---------------------------------------------------------------------------------------
// The server's transfer log
// ---------------------------------------------------------------------------------------

/// One row of the server's `transfers` table.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TransferRow {
    id: i64,
    requester: String,
    target: String,
    ended_at_ms: Option<i64>,
    result: Option<String>,
    name: Option<String>,
    size: Option<i64>,
    hash: Option<String>,
}

fn db_transfers(db: &Path) -> Vec<TransferRow> {
    if let Some(url) = pg_url_of(db) {
        let int = |v: &Option<String>| v.as_deref().map(|v| v.parse::<i64>().unwrap());
        return pg_rows(
            &url,
            "SELECT id, requester, target, ended_at_ms, result, name, size, hash
             FROM transfers ORDER BY id",
        )
        .into_iter()
        .map(|r| TransferRow {
            id: int(&r[0]).unwrap(),
            requester: r[1].clone().unwrap(),
            target: r[2].clone().unwrap(),
            ended_at_ms: int(&r[3]),
            result: r[4].clone(),
            name: r[5].clone(),
            size: int(&r[6]),
            hash: r[7].clone(),
        })
        .collect();
    }
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open database");
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT id, requester, target, ended_at_ms, result, name, size, hash
             FROM transfers ORDER BY id",
        )
        .expect("prepare");
    stmt.query_map([], |r| {
        Ok(TransferRow {
            id: r.get(0)?,
            requester: r.get(1)?,
            target: r.get(2)?,
            ended_at_ms: r.get(3)?,
            result: r.get(4)?,
            name: r.get(5)?,
            size: r.get(6)?,
            hash: r.get(7)?,
        })
    })
    .expect("query transfers")
    .map(|r| r.expect("row"))
    .collect()
}

/// Polls the transfer log (for up to `POLL`) until an ended row for `name` with an id
/// above `after` exists; returns the first such row.
fn wait_ended_transfer(db: &Path, name: &str, after: i64) -> TransferRow {
    let deadline = Instant::now() + POLL;
    loop {
        let rows = db_transfers(db);
        if let Some(row) = rows
            .iter()
            .find(|r| r.id > after && r.ended_at_ms.is_some() && r.name.as_deref() == Some(name))
        {
            return row.clone();
        }
        if Instant::now() >= deadline {
            panic!(
                "no ended transfer of {name:?} after id {after} logged within {POLL:?}; \
                 table:\n{rows:#?}"
            );
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// The log must show `name` (first row after id `after`) as a successful transfer of
/// `source` (size and peerchat hash) requested by `requester` from `target`; returns
/// its id.
fn assert_logged_ok(
    db: &Path,
    name: &str,
    source: &Path,
    (requester, target): (&str, &str),
    after: i64,
) -> i64 {
    let row = wait_ended_transfer(db, name, after);
    let size = fs::metadata(source).unwrap().len() as i64;
    assert_eq!(row.result.as_deref(), Some("ok"), "{row:#?}");
    assert_eq!(row.size, Some(size), "logged size of {name}: {row:#?}");
    assert_eq!(
        row.hash.as_deref(),
        Some(peerchat_hash(source).as_str()),
        "logged hash of {name}: {row:#?}"
    );
    assert_eq!(
        (row.requester.as_str(), row.target.as_str()),
        (requester, target),
        "{row:#?}"
    );
    row.id
}

/// The log's verdict on the first ended transfer of `name` after id `after`.
fn logged_result(db: &Path, name: &str, after: i64) -> String {
    wait_ended_transfer(db, name, after)
        .result
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------

/// A test's clients: one temp dir with, per user, a data dir, a downloads dir and a
/// shared dir (`<user>/data`, `<user>/downloads`, `<user>/share`).
struct Lab {
    dir: TempDir,
    server: SocketAddr,
}

impl Lab {
    fn new(server: &Server) -> Lab {
        Lab {
            dir: TempDir::new().expect("temp dir"),
            server: server.addr,
        }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn home(&self, name: &str) -> PathBuf {
        let home = self.dir.path().join(name);
        fs::create_dir_all(&home).unwrap();
        home
    }

    fn downloads(&self, name: &str) -> PathBuf {
        self.home(name).join("downloads")
    }

    fn share(&self, name: &str) -> PathBuf {
        let share = self.home(name).join("share");
        fs::create_dir_all(&share).unwrap();
        share
    }

    /// A folder for files to send, outside every shared and downloads folder.
    fn outbox(&self, name: &str) -> PathBuf {
        let dir = self.home(name).join("outbox");
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Registers `name` with a real client; `share` adds `--share <user>/share`.
    fn register(&self, name: &str, share: bool) -> Client {
        self.start(name, true, share)
    }

    /// Logs `name` in again with a real client on the same folders.
    fn login(&self, name: &str, share: bool) -> Client {
        self.start(name, false, share)
    }

    fn start(&self, name: &str, new: bool, share: bool) -> Client {
        let data = self.home(name).join("data");
        let downloads = self.downloads(name);
        let share_dir = self.share(name);
        let mut args = vec![
            "--data-dir".to_string(),
            data.to_str().unwrap().to_string(),
            "--downloads".to_string(),
            downloads.to_str().unwrap().to_string(),
        ];
        if share {
            args.push("--share".into());
            args.push(share_dir.to_str().unwrap().to_string());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut client = Client::start_with(self.server, name, &password(name), new, &args);
        if share {
            client.expect_line("the sharing line", |l| {
                l.starts_with("* sharing ") && l.contains(" file(s) from ")
            });
        }
        client
    }
}

/// The complete stdout lines after `client`'s last match.
fn pending_lines(client: &Client) -> Vec<String> {
    let out = client.output();
    let bytes = &out.as_bytes()[client.mark().min(out.len())..];
    let text = String::from_utf8_lossy(bytes);
    let complete = match text.rfind('\n') {
        Some(end) => &text[..end],
        None => "",
    };
    complete.lines().map(str::to_string).collect()
}

/// Like `Client::expect_line`, with a longer bound (for big transfers); waits until a
/// line after the last match satisfies `ok`, moves past it and returns it.
fn wait_line(
    client: &mut Client,
    what: &str,
    timeout: Duration,
    ok: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        if pending_lines(client).iter().any(|l| ok(l)) {
            return client.expect_line(what, ok);
        }
        if Instant::now() >= deadline {
            client.fail(&format!("expected a line within {timeout:?}: {what}"));
        }
        client.output_for(Duration::from_millis(200));
    }
}

/// The state part of a transfer line `* [id] <role> <name> <to|from> <peer>: <state>`.
fn transfer_state<'a>(
    line: &'a str,
    id: u64,
    role: &str,
    name: &str,
    peer: &str,
) -> Option<&'a str> {
    let dir = if matches!(role, "send" | "serve") {
        "to"
    } else {
        "from"
    };
    line.strip_prefix(&format!("* [{id}] {role} {name} {dir} {peer}: "))
}

/// True for the state of an ended transfer (not its start, progress or offer).
fn is_final_state(state: &str) -> bool {
    !state.starts_with('[')
        && !matches!(state, "started" | "connecting")
        && !state.starts_with("offered")
}

/// Waits (up to `timeout`) for the line that ends transfer `id`; returns its state.
fn wait_final(
    client: &mut Client,
    id: u64,
    role: &str,
    name: &str,
    peer: &str,
    timeout: Duration,
) -> String {
    let line = wait_line(
        client,
        &format!("the end of transfer [{id}] ({role} {name})"),
        timeout,
        |l| transfer_state(l, id, role, name, peer).is_some_and(is_final_state),
    );
    transfer_state(&line, id, role, name, peer)
        .unwrap()
        .to_string()
}

/// Waits for the end of transfer `id` and requires `done, verified (...)`; returns the
/// text inside the parentheses.
fn expect_done(
    client: &mut Client,
    id: u64,
    role: &str,
    name: &str,
    peer: &str,
    timeout: Duration,
) -> String {
    let state = wait_final(client, id, role, name, peer, timeout);
    match state
        .strip_prefix("done, verified (")
        .and_then(|s| s.strip_suffix(')'))
    {
        Some(detail) => detail.to_string(),
        None => client.fail(&format!(
            "transfer [{id}] ({role} {name}) ended with {state:?}, not `done, verified (...)`"
        )),
    }
}

/// `\send <path>` from `sender` in its active session with `receiver`, who accepts.
/// Returns (sender's id, receiver's id).
fn offer_and_accept(
    sender: &mut Client,
    sname: &str,
    receiver: &mut Client,
    rname: &str,
    path: &Path,
) -> (u64, u64) {
    let (sid, rid) = offer(sender, sname, receiver, rname, path);
    receiver.send(&format!("\\accept {rid}"));
    (sid, rid)
}

/// `\send <path>` and the offer lines on both sides; returns (sender's id, receiver's id).
fn offer(
    sender: &mut Client,
    sname: &str,
    receiver: &mut Client,
    rname: &str,
    path: &Path,
) -> (u64, u64) {
    let name = path.file_name().unwrap().to_str().unwrap();
    let size = human(fs::metadata(path).unwrap().len());
    sender.send(&format!("\\send {}", path.display()));
    let tail = format!("] offered {name} ({size}) to {rname}; waiting for an answer");
    let line = sender.expect_line(&format!("* [N{tail}"), |l| {
        l.starts_with("* [") && l.ends_with(&tail)
    });
    let sid = bracket_id(&line);
    let want = format!("] {sname} offers {name} ({size}): \\accept ");
    let line = receiver.expect_line(&format!("* [N{want}N or \\decline N"), |l| {
        l.starts_with("* [") && l.contains(&want)
    });
    let rid = bracket_id(&line);
    assert!(
        line.ends_with(&format!("{want}{rid} or \\decline {rid}")),
        "offer line names another number: {line:?}"
    );
    // Both users see one number for it: the server's transfer id (issue 11).
    assert_eq!(sid, rid, "the sender shows [{sid}], the receiver [{rid}]");
    (sid, rid)
}

/// The number in `* [N] ...` or `  [N] ...`.
fn bracket_id(line: &str) -> u64 {
    let start = line.find('[').expect("[") + 1;
    let end = line[start..].find(']').expect("]") + start;
    line[start..end]
        .parse()
        .unwrap_or_else(|_| panic!("no transfer number in {line:?}"))
}

/// Pushes `path` from `sender` to `receiver` (session open and active) and waits for
/// both done lines; returns where the receiver saved it.
fn push(
    sender: &mut Client,
    sname: &str,
    receiver: &mut Client,
    rname: &str,
    path: &Path,
    timeout: Duration,
) -> PathBuf {
    let name = path.file_name().unwrap().to_str().unwrap().to_string();
    let (sid, rid) = offer_and_accept(sender, sname, receiver, rname, path);
    let detail = expect_done(receiver, rid, "receive", &name, sname, timeout);
    let saved = detail
        .strip_prefix("saved as ")
        .unwrap_or_else(|| receiver.fail(&format!("no `saved as` in {detail:?}")));
    let sent = expect_done(sender, sid, "send", &name, rname, WAIT);
    assert_eq!(sent, "delivered");
    PathBuf::from(saved)
}

/// Waits (bounded) until `text` appears anywhere in `client`'s stdout, whatever was
/// matched before.
fn wait_anywhere(client: &mut Client, text: &str) {
    let deadline = Instant::now() + WAIT;
    while !client.output().contains(text) {
        if Instant::now() >= deadline {
            client.fail(&format!("expected {text:?} somewhere on stdout"));
        }
        client.output_for(Duration::from_millis(100));
    }
}

/// (done, total) from a progress line `  [N] name [###---]  42%  84.0 MiB / 200.0 MiB ...`.
fn progress_done(line: &str) -> Option<(f64, f64)> {
    let after = &line[line.rfind("%  ")? + 3..];
    let (done, rest) = after.split_once(" / ")?;
    let total = rest.split("  ").next()?;
    Some((parse_human(done)?, parse_human(total)?))
}

/// Prints `text` into the test output (shown only on failure) with a timestamp.
fn note(text: &str) {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    eprintln!("[{ms}] {text}");
}

// ---------------------------------------------------------------------------------------
// Raw peers
// ---------------------------------------------------------------------------------------

/// `CONNECT <user>` (answered `OK SESSION`) or `TRANSFER <user>` (`OK TRANSFER`) on a
/// raw server connection; returns (id, peer address, ticket).
fn grant(w: &mut Wire, command: &str, user: &str) -> (u64, SocketAddr, String) {
    w.send(&format!("{command} {user}"));
    let reply = if command == "CONNECT" {
        "SESSION"
    } else {
        command
    };
    let line = w.expect(&format!("OK {reply}"));
    let words: Vec<&str> = line.split(' ').collect();
    assert_eq!(words.len(), 8, "bad OK {command} line {line:?}");
    assert_eq!(words[3], user, "OK {command} names another user: {line:?}");
    (
        words[2].parse().expect("id"),
        words[4].parse().expect("peer address"),
        words[5].to_string(),
    )
}

/// mallory (raw) opens a chat session with the real client bob; returns her link.
fn raw_session_with_bob(mallory: &mut Wire, bob: &mut Client) -> Wire {
    let (id, bob_addr, ticket) = grant(mallory, "CONNECT", "bob");
    let mut raw = Wire::peer(bob_addr, &ticket).named("mallory <-> bob (chat)");
    raw.send(&format!("HELLO peerchat 1 mallory {id} {ticket}"));
    bob.expect("* mallory wants to chat");
    bob.send("\\accept mallory");
    bob.expect("* session with mallory open");
    raw.expect("ACCEPT");
    raw
}

/// The next line on a raw chat link that is not a keep-alive (a `PING` is answered).
fn peer_line(raw: &mut Wire) -> String {
    loop {
        let line = raw.next_line();
        match line.as_str() {
            "PING" => raw.send("PONG"),
            "PONG" => {}
            _ => return line,
        }
    }
}

/// A raw data connection: asks the server for a transfer ticket to bob and connects to
/// bob's listener with `first(transfer id, ticket)` as the first line.
fn raw_transfer(mallory: &mut Wire, first: impl Fn(u64, &str) -> String) -> Wire {
    let (id, addr, ticket) = grant(mallory, "TRANSFER", "bob");
    let mut data = Wire::peer(addr, &ticket).named("mallory -> bob (data)");
    data.send(&first(id, &ticket));
    // bob proves he holds the ticket before any file line (protocol.md §11).
    data.expect("ACCEPT");
    data
}

// ---------------------------------------------------------------------------------------
// 1: push files of every kind
// ---------------------------------------------------------------------------------------

/// A text file, a binary file with every byte value, and an empty file arrive byte for
/// byte, and the server logs each as `ok` with its size and hash.
#[test]
fn pushed_text_binary_and_empty_files_arrive_identical_and_are_logged() {
    let server = Server::start();
    let lab = Lab::new(&server);
    let mut alice = lab.register("alice", false);
    let mut bob = lab.register("bob", false);
    open_session(&mut alice, "alice", &mut bob, "bob");
    let out = lab.outbox("alice");

    let text = out.join("notes.txt");
    fs::write(
        &text,
        "first line\nsecond line, with ünïcode ✓\r\nno newline at the end",
    )
    .unwrap();
    // Every byte value, many times over: more than one chunk, so a chunk boundary
    // falls inside the file.
    let binary = out.join("all-bytes.bin");
    let bytes: Vec<u8> = (0..=255u8).cycle().take(256 * 4200).collect();
    assert!(bytes.len() > CHUNK);
    fs::write(&binary, &bytes).unwrap();
    let empty = out.join("empty.dat");
    fs::write(&empty, b"").unwrap();

    for source in [&text, &binary, &empty] {
        let saved = push(&mut alice, "alice", &mut bob, "bob", source, WAIT);
        let name = source.file_name().unwrap();
        assert_eq!(saved, lab.downloads("bob").join(name), "saved elsewhere");
        assert_same_file(source, &saved);
        assert_logged_ok(
            &server.db_path(),
            name.to_str().unwrap(),
            source,
            ("alice", "bob"),
            0,
        );
    }
    assert_eq!(
        final_files(&lab.downloads("bob")),
        ["all-bytes.bin", "empty.dat", "notes.txt"]
    );
    assert!(
        files_under(&lab.downloads("bob").join(".peerchat-partial")).is_empty(),
        "partial files left behind: {:?}",
        files_under(&lab.downloads("bob"))
    );
}

/// A 200 MiB file arrives byte for byte and is logged as `ok` with its size.
#[test]
fn a_200_mib_push_arrives_identical_and_is_logged() {
    let server = Server::start();
    let lab = Lab::new(&server);
    let mut alice = lab.register("alice", false);
    let mut bob = lab.register("bob", false);
    open_session(&mut alice, "alice", &mut bob, "bob");
    let source = lab.outbox("alice").join("big.bin");
    write_pattern(&source, BIG, 1);

    let started = Instant::now();
    let saved = push(&mut alice, "alice", &mut bob, "bob", &source, BIG_WAIT);
    note(&format!("200 MiB push took {:?}", started.elapsed()));
    assert_eq!(saved, lab.downloads("bob").join("big.bin"));
    assert_same_file(&source, &saved);
    assert_logged_ok(&server.db_path(), "big.bin", &source, ("alice", "bob"), 0);
}

// ---------------------------------------------------------------------------------------
// Holding a transfer still: signals to real client processes
// ---------------------------------------------------------------------------------------

/// The pid of the `peerchat-client` process whose command line mentions `marker` (a
/// path unique to one test's client, such as its data dir).
fn client_pid(marker: &Path) -> u32 {
    let marker = marker.to_str().unwrap();
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap() {
        let entry = entry.unwrap();
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.first().is_some_and(|a| a.ends_with("peerchat-client"))
            && args.iter().any(|a| a == marker)
        {
            found.push(pid);
        }
    }
    assert_eq!(found.len(), 1, "client processes with {marker}: {found:?}");
    found[0]
}

fn signal(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{sig} {pid} failed");
}

/// A client process held with SIGSTOP; continued (SIGCONT) on `resume` or on Drop.
struct Frozen {
    pid: Option<u32>,
}

impl Frozen {
    fn new(pid: u32) -> Frozen {
        signal(pid, "STOP");
        Frozen { pid: Some(pid) }
    }

    fn resume(mut self) {
        if let Some(pid) = self.pid.take() {
            signal(pid, "CONT");
        }
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if let Some(pid) = self.pid.take() {
            let _ = std::process::Command::new("kill")
                .arg("-CONT")
                .arg(pid.to_string())
                .status();
        }
    }
}

impl Frozen {
    /// Lets the process run for `run`, then holds it again.
    fn pulse(&self, run: Duration) {
        let pid = self.pid.expect("frozen");
        signal(pid, "CONT");
        thread::sleep(run);
        signal(pid, "STOP");
    }
}

/// Waits for a progress line of transfer `id` on `client` showing at least `min` bytes
/// (and not all) while the other side is `frozen`. A transfer reports its progress only
/// when a chunk completes, at most every 200 ms, so a side stalled by a frozen peer
/// keeps showing what it had reported before; short pulses of the frozen side let a few
/// more chunks through so that a fresh count is reported.
fn wait_progress_frozen(
    client: &mut Client,
    id: u64,
    name: &str,
    min: u64,
    frozen: &Frozen,
) -> u64 {
    let prefix = format!("  [{id}] {name} [");
    let ok = |l: &str| {
        l.starts_with(&prefix)
            && progress_done(l).is_some_and(|(done, total)| done >= min as f64 && done < total)
    };
    let deadline = Instant::now() + WAIT;
    loop {
        let until = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < until {
            if pending_lines(client).iter().any(|l| ok(l)) {
                let line = client.expect_line("a progress line", ok);
                return progress_done(&line).unwrap().0 as u64;
            }
            client.output_for(Duration::from_millis(100));
        }
        if Instant::now() >= deadline {
            client.fail(&format!(
                "no progress line of [{id}] with at least {min} bytes within {WAIT:?}"
            ));
        }
        thread::sleep(Duration::from_millis(250));
        frozen.pulse(Duration::from_millis(15));
    }
}

/// Size of the largest `.part` file in `downloads/.peerchat-partial` (0 if none).
fn partial_bytes(downloads: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(downloads.join(".peerchat-partial")) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".part"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .max()
        .unwrap_or(0)
}

/// Polls (every millisecond, for up to `WAIT`) until the receiver's partial file holds
/// at least `min` bytes, then freezes `pid` at once. Loopback moves hundreds of MiB per
/// second, so the transfer must be held still before anything can be said "during" it.
fn freeze_when_partial(downloads: &Path, min: u64, pid: u32) -> Frozen {
    let deadline = Instant::now() + WAIT;
    loop {
        if partial_bytes(downloads) >= min {
            let frozen = Frozen::new(pid);
            // Held in time? (Not a verdict on peerchat: the test could not set up.)
            let (held, finished) = (partial_bytes(downloads), final_files(downloads));
            assert!(
                held < BIG && finished.is_empty(),
                "the transfer ended before it could be held still (partial {held} bytes, \
                 files {finished:?}); this machine is too fast for this test's set-up"
            );
            return frozen;
        }
        assert!(
            Instant::now() < deadline,
            "the partial file in {} never reached {min} bytes (has {:?})",
            downloads.display(),
            files_under(downloads)
        );
        thread::sleep(Duration::from_millis(1));
    }
}

// ---------------------------------------------------------------------------------------
// 2: names with spaces and non-ASCII letters
// ---------------------------------------------------------------------------------------

#[test]
fn names_with_spaces_and_non_ascii_letters_push_and_fetch() {
    const NAME: &str = "my report ü.txt";
    let server = Server::start();
    let lab = Lab::new(&server);
    // bob shares a file of that name; alice pushes another of the same name.
    let shared = lab.share("bob").join(NAME);
    fs::write(
        &shared,
        "bob's shared report, ünïcode inside too\n".repeat(50),
    )
    .unwrap();
    let mut alice = lab.register("alice", false);
    let mut bob = lab.register("bob", true);

    open_session(&mut alice, "alice", &mut bob, "bob");
    let pushed = lab.outbox("alice").join(NAME);
    fs::write(&pushed, "alice's report ✓\n".repeat(77)).unwrap();
    let saved = push(&mut alice, "alice", &mut bob, "bob", &pushed, WAIT);
    assert_eq!(saved, lab.downloads("bob").join(NAME));
    assert_same_file(&pushed, &saved);
    let push_id = assert_logged_ok(&server.db_path(), NAME, &pushed, ("alice", "bob"), 0);

    // The index shows the name whole, and a search in another case finds it.
    alice.send("\\search REPORT Ü");
    alice.expect("Search: 1 match(es):\n");
    let row = alice.expect_line("the search row", |_| true);
    assert!(
        row.starts_with("  bob ") && row.ends_with(&format!("  {NAME}")),
        "{row:?}"
    );

    alice.send(&format!("\\fetch bob {NAME}"));
    let detail = expect_done(&mut alice, 2, "fetch", NAME, "bob", WAIT);
    let got = lab.downloads("alice").join(NAME);
    assert_eq!(detail, format!("saved as {}", got.display()));
    assert_same_file(&shared, &got);
    let served = expect_done(&mut bob, 2, "serve", NAME, "alice", WAIT);
    assert_eq!(served, "delivered");
    // The fetcher asks the server for the ticket: alice is the requester again.
    assert_logged_ok(&server.db_path(), NAME, &shared, ("alice", "bob"), push_id);
}

// ---------------------------------------------------------------------------------------
// 3: decline
// ---------------------------------------------------------------------------------------

#[test]
fn a_declined_offer_tells_the_sender_and_writes_nothing() {
    let server = Server::start();
    let lab = Lab::new(&server);
    let mut alice = lab.register("alice", false);
    let mut bob = lab.register("bob", false);
    open_session(&mut alice, "alice", &mut bob, "bob");
    let source = lab.outbox("alice").join("unwanted.bin");
    write_pattern(&source, 3 * MIB + 5, 3);

    let (sid, rid) = offer(&mut alice, "alice", &mut bob, "bob", &source);
    bob.send(&format!("\\decline {rid}"));
    let theirs = wait_final(&mut bob, rid, "receive", "unwanted.bin", "alice", WAIT);
    assert_eq!(theirs, "declined");
    let mine = wait_final(&mut alice, sid, "send", "unwanted.bin", "bob", WAIT);
    assert!(mine.starts_with("declined"), "alice sees {mine:?}");

    // Answering again changes nothing, and the session goes on.
    bob.send(&format!("\\accept {rid}"));
    bob.expect(&format!("error: no file offer {rid} is waiting for you"));
    bob.send("still friends");
    alice.expect_chat(None, "bob", "still friends");
    let downloads = lab.downloads("bob");
    assert!(
        files_under(&downloads).is_empty(),
        "a declined offer left files: {:?}",
        files_under(&downloads)
    );
    // The offer was numbered by the server before it went out (both sides show that
    // number); declined, it is logged as refused, with no bytes.
    let row = wait_ended_transfer(&server.db_path(), "unwanted.bin", 0);
    assert_eq!(row.id as u64, sid, "{row:#?}");
    assert_eq!(row.result.as_deref(), Some("refused"), "{row:#?}");
}

// ---------------------------------------------------------------------------------------
// 4: cancel from either side
// ---------------------------------------------------------------------------------------

/// alice pushes 200 MiB to bob and the transfer is held still mid-way (the process on
/// the other side of `canceller` is frozen once bob has a few MiB); then `canceller`
/// types `\cancel`, the frozen side is let go, and both must end `cancelled`.
fn cancel_mid_transfer(sender_cancels: bool) {
    let server = Server::start();
    let lab = Lab::new(&server);
    let mut alice = lab.register("alice", false);
    let mut bob = lab.register("bob", false);
    open_session(&mut alice, "alice", &mut bob, "bob");
    let source = lab.outbox("alice").join("big.bin");
    write_pattern(&source, BIG, 4);
    let downloads = lab.downloads("bob");
    let frozen_pid = if sender_cancels {
        client_pid(&lab.home("bob").join("data"))
    } else {
        client_pid(&lab.home("alice").join("data"))
    };

    let (sid, rid) = offer_and_accept(&mut alice, "alice", &mut bob, "bob", &source);
    let frozen = freeze_when_partial(&downloads, 2 * MIB, frozen_pid);
    let (canceller, id) = if sender_cancels {
        (&mut alice, sid)
    } else {
        (&mut bob, rid)
    };
    let shown = wait_progress_frozen(canceller, id, "big.bin", 1, &frozen);
    note(&format!("cancelling at {shown} bytes"));
    canceller.send(&format!("\\cancel {id}"));
    // Give the UI loop a moment to take the command before the other side runs again.
    canceller.output_for(Duration::from_millis(300));
    frozen.resume();

    let mine = wait_final(&mut alice, sid, "send", "big.bin", "bob", WAIT);
    let theirs = wait_final(&mut bob, rid, "receive", "big.bin", "alice", WAIT);
    if !mine.starts_with("cancelled") || !theirs.starts_with("cancelled") {
        let log = wait_ended_transfer(&server.db_path(), "big.bin", 0);
        alice.fail(&format!(
            "after \\cancel on the {}, the sender shows {mine:?} and the receiver {theirs:?}; \
             both should be cancelled; the server logged {:?}\n--- bob's stdout ---\n{}",
            if sender_cancels { "sender" } else { "receiver" },
            log.result,
            bob.output()
        ));
    }
    assert_eq!(
        final_files(&downloads),
        Vec::<String>::new(),
        "a cancelled transfer left a final file"
    );
    assert_eq!(logged_result(&server.db_path(), "big.bin", 0), "cancelled");
    // Both go on: the session still works and \cancel again is an error.
    alice.send("after the cancel");
    bob.expect_chat(None, "alice", "after the cancel");
    alice.send(&format!("\\cancel {sid}"));
    alice.expect(&format!("error: transfer {sid} has ended already"));
}

#[test]
fn the_sender_cancels_a_large_push_and_both_sides_show_it() {
    cancel_mid_transfer(true);
}

#[test]
fn the_receiver_cancels_a_large_push_and_both_sides_show_it() {
    cancel_mid_transfer(false);
}

// ---------------------------------------------------------------------------------------
// 5: corruption is detected
// ---------------------------------------------------------------------------------------

/// mallory (raw) offers `name` of `size` bytes to bob over her chat link; bob accepts;
/// she asks the server for a transfer ticket and opens the data connection with `PUSH`.
fn mallory_pushes(
    mallory: &mut Wire,
    chat: &mut Wire,
    bob: &mut Client,
    offer: u64,
    size: u64,
    name: &str,
) -> Wire {
    chat.send(&format!("OFFER {offer} {size} {name}"));
    let line = bob.expect_line("mallory's offer", |l| {
        l.contains(&format!("] mallory offers {name} ("))
    });
    let rid = bracket_id(&line);
    bob.send(&format!("\\accept {rid}"));
    let ok = peer_line(chat);
    assert_eq!(ok, format!("OFFER_OK {offer}"));
    raw_transfer(mallory, |id, ticket| {
        format!("PUSH peerchat 1 mallory {id} {ticket} {offer}")
    })
}

#[test]
fn a_flipped_byte_is_detected_and_nothing_is_saved() {
    let server = Server::start();
    let lab = Lab::new(&server);
    let mut bob = lab.register("bob", false);
    let mut mallory = Wire::registered(server.addr, "mallory", PW, free_port());
    let mut chat = raw_session_with_bob(&mut mallory, &mut bob);

    let original: Vec<u8> = (0..100_000u32).map(|i| (i * 31 % 251) as u8).collect();
    let hash = blake3::hash(&original);
    let mut tampered = original.clone();
    tampered[54_321] ^= 0x01;
    let mut data = mallory_pushes(
        &mut mallory,
        &mut chat,
        &mut bob,
        1,
        original.len() as u64,
        "x.bin",
    );
    data.send(&format!("FILE {} x.bin", original.len()));
    data.expect_exact("RESUME 0 -");
    data.send("START 0");
    data.send(&format!("CHUNK {} {}", original.len(), hash.to_hex()));
    data.send_bytes(&tampered).unwrap();
    data.expect("ERR 422 CORRUPT");
    data.expect_closed();

    let state = wait_final(&mut bob, 1, "receive", "x.bin", "mallory", WAIT);
    assert!(state.starts_with("corrupt: "), "bob shows {state:?}");
    let downloads = lab.downloads("bob");
    assert!(
        !files_under(&downloads)
            .iter()
            .any(|p| p.file_name().unwrap() == "x.bin"),
        "a corrupt file was saved: {:?}",
        files_under(&downloads)
    );
    assert_eq!(logged_result(&server.db_path(), "x.bin", 0), "corrupt");
    // The chat link survives the bad transfer.
    chat.send("MSG 1 still here");
    bob.expect_chat(None, "mallory", "still here");
}

/// Every chunk checks out but `END` carries another file hash: the whole file is
/// refused and nothing is saved.
#[test]
fn a_wrong_whole_file_hash_is_detected_and_nothing_is_saved() {
    let server = Server::start();
    let lab = Lab::new(&server);
    let mut bob = lab.register("bob", false);
    let mut mallory = Wire::registered(server.addr, "mallory", PW, free_port());
    let mut chat = raw_session_with_bob(&mut mallory, &mut bob);

    let first = vec![7u8; CHUNK];
    let second = b"the second and last chunk".to_vec();
    let size = (first.len() + second.len()) as u64;
    let mut data = mallory_pushes(&mut mallory, &mut chat, &mut bob, 5, size, "y.bin");
    data.send(&format!("FILE {size} y.bin"));
    data.expect_exact("RESUME 0 -");
    data.send("START 0");
    for chunk in [&first, &second] {
        data.send(&format!(
            "CHUNK {} {}",
            chunk.len(),
            blake3::hash(chunk).to_hex()
        ));
        data.send_bytes(chunk).unwrap();
    }
    // The hash of the chunks in the wrong order.
    let mut wrong = blake3::Hasher::new();
    wrong.update(blake3::hash(&second).as_bytes());
    wrong.update(blake3::hash(&first).as_bytes());
    data.send(&format!("END {}", wrong.finalize().to_hex()));
    data.expect("ERR 422 CORRUPT");

    let state = wait_final(&mut bob, 5, "receive", "y.bin", "mallory", WAIT);
    assert!(state.starts_with("corrupt: "), "bob shows {state:?}");
    assert_eq!(final_files(&lab.downloads("bob")), Vec::<String>::new());
    assert_eq!(logged_result(&server.db_path(), "y.bin", 0), "corrupt");
}

// ---------------------------------------------------------------------------------------
// 6: no overwriting
// ---------------------------------------------------------------------------------------

#[test]
fn a_second_file_of_the_same_name_gets_a_numbered_name() {
    let server = Server::start();
    let lab = Lab::new(&server);
    let mut alice = lab.register("alice", false);
    let mut bob = lab.register("bob", false);
    open_session(&mut alice, "alice", &mut bob, "bob");
    // Same name and size, different contents.
    let first = lab.outbox("alice").join("a.txt");
    fs::write(&first, "the first a.txt\n").unwrap();
    let other = lab.home("alice").join("elsewhere");
    fs::create_dir_all(&other).unwrap();
    let second = other.join("a.txt");
    fs::write(&second, "the other a.txt\n").unwrap();

    let saved1 = push(&mut alice, "alice", &mut bob, "bob", &first, WAIT);
    let saved2 = push(&mut alice, "alice", &mut bob, "bob", &second, WAIT);
    let downloads = lab.downloads("bob");
    assert_eq!(saved1, downloads.join("a.txt"));
    assert_eq!(saved2, downloads.join("a (1).txt"));
    assert_same_file(&first, &downloads.join("a.txt"));
    assert_same_file(&second, &downloads.join("a (1).txt"));
    assert_eq!(final_files(&downloads), ["a (1).txt", "a.txt"]);
}

// ---------------------------------------------------------------------------------------
// 7: traversal
// ---------------------------------------------------------------------------------------

const EVIL_NAMES: [&str; 3] = ["../x", "/etc/passwd", "a/../../b"];

#[test]
fn offers_with_paths_in_their_names_are_refused() {
    let server = Server::start();
    let lab = Lab::new(&server);
    let mut bob = lab.register("bob", false);
    let mut mallory = Wire::registered(server.addr, "mallory", PW, free_port());
    let mut chat = raw_session_with_bob(&mut mallory, &mut bob);
    let passwd_before = fs::read("/etc/passwd").ok();

    for (i, name) in EVIL_NAMES.iter().enumerate() {
        let offer = 10 + i as u64;
        chat.send(&format!("OFFER {offer} 5 {name}"));
        let answer = peer_line(&mut chat);
        assert!(
            answer.starts_with(&format!("OFFER_NO {offer}")),
            "offer of {name:?} answered {answer:?}"
        );
        bob.expect_line(&format!("an error about {name}"), |l| {
            l.starts_with("error: mallory offered a file with an unsafe file name")
        });
    }
    // None of them became an offer bob could accept.
    bob.send("\\transfers");
    bob.expect("No transfers.");

    // An offer with a safe name, then a data connection announcing another name.
    let mut data = mallory_pushes(&mut mallory, &mut chat, &mut bob, 20, 5, "ok.txt");
    data.send("FILE 5 ../x");
    data.expect("ERR 423 TRANSFER_REFUSED");
    data.expect_closed();
    let state = wait_final(&mut bob, 20, "receive", "ok.txt", "mallory", WAIT);
    assert!(state.starts_with("refused: "), "bob shows {state:?}");

    // Nothing anywhere in the test's folders, and /etc/passwd untouched.
    let all = files_under(lab.root());
    assert!(
        all.iter().all(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n != "x" && n != "b" && n != "passwd" && n != "ok.txt"
        }),
        "a file was written: {all:?}"
    );
    assert_eq!(fs::read("/etc/passwd").ok(), passwd_before);
}

#[test]
fn fetches_outside_the_shared_folder_are_refused() {
    let server = Server::start();
    let lab = Lab::new(&server);
    // bob's home: share/{inside.txt, a/, link.txt -> ../secret.txt}, x, b, secret.txt.
    let home = lab.home("bob");
    let share = lab.share("bob");
    fs::write(share.join("inside.txt"), "shared on purpose\n").unwrap();
    fs::create_dir_all(share.join("a")).unwrap();
    for outside in ["x", "b", "secret.txt"] {
        fs::write(home.join(outside), format!("{outside}: not shared\n")).unwrap();
    }
    std::os::unix::fs::symlink(home.join("secret.txt"), share.join("link.txt")).unwrap();
    let mut bob = lab.register("bob", true);
    let mut mallory = Wire::registered(server.addr, "mallory", PW, free_port());

    // The control: a shared file is served to the same raw fetch.
    let mut data = raw_transfer(&mut mallory, |id, ticket| {
        format!("FETCH peerchat 1 mallory {id} {ticket} inside.txt")
    });
    data.expect_exact("FILE 18 inside.txt");
    drop(data);

    for name in EVIL_NAMES.iter().chain(&["link.txt", "a", "missing.txt"]) {
        let mut data = raw_transfer(&mut mallory, |id, ticket| {
            format!("FETCH peerchat 1 mallory {id} {ticket} {name}")
        });
        let line = data.next_line();
        assert!(
            line.starts_with("ERR 423 TRANSFER_REFUSED"),
            "fetching {name:?} got {line:?}"
        );
        data.expect_closed();
        bob.expect(&format!("error: mallory asked for {name}, refused: "));
    }

    // Through the real client too.
    let mut alice = lab.register("alice", false);
    alice.send("\\fetch bob ../x");
    alice.expect("error: unsafe file name");
    alice.send("\\fetch bob link.txt");
    // Its number is the server's transfer id.
    let line = alice.expect_line("the fetch's start", |l| {
        l.ends_with("] fetch link.txt from bob: started")
    });
    let id = bracket_id(&line);
    let state = wait_final(&mut alice, id, "fetch", "link.txt", "bob", WAIT);
    assert!(state.starts_with("refused: "), "alice shows {state:?}");
    assert_eq!(final_files(&lab.downloads("alice")), Vec::<String>::new());
    assert_eq!(final_files(&lab.downloads("bob")), Vec::<String>::new());
}

// ---------------------------------------------------------------------------------------
// 8: resume after the sender died
// ---------------------------------------------------------------------------------------

#[test]
fn a_push_resumes_after_the_sender_was_killed() {
    let server = Server::start();
    let lab = Lab::new(&server);
    let mut alice = lab.register("alice", false);
    let mut bob = lab.register("bob", false);
    open_session(&mut alice, "alice", &mut bob, "bob");
    let source = lab.outbox("alice").join("big.bin");
    write_pattern(&source, BIG, 8);
    let downloads = lab.downloads("bob");
    let bob_pid = client_pid(&lab.home("bob").join("data"));

    let (sid, rid) = offer_and_accept(&mut alice, "alice", &mut bob, "bob", &source);
    // Hold bob still once he has a few MiB, so alice is mid-transfer when she dies.
    let frozen = freeze_when_partial(&downloads, 3 * MIB, bob_pid);
    let shown = wait_progress_frozen(&mut alice, sid, "big.bin", MIB, &frozen);
    note(&format!("killing alice at {shown} bytes sent"));
    alice.kill_hard();
    frozen.resume();

    let state = wait_final(&mut bob, rid, "receive", "big.bin", "alice", WAIT);
    assert!(
        state.starts_with("failed: "),
        "bob's transfer ended with {state:?} after alice died"
    );
    wait_anywhere(&mut bob, "* lost the connection to alice: ");
    assert_eq!(final_files(&downloads), Vec::<String>::new());
    let kept = partial_bytes(&downloads);
    assert!(
        kept >= MIB,
        "bob kept only {kept} bytes of the partial file"
    );

    // alice comes back on the same data dir and sends the same file again.
    let mut alice = lab.login("alice", false);
    open_session(&mut alice, "alice", &mut bob, "bob");
    let (sid, rid) = offer_and_accept(&mut alice, "alice", &mut bob, "bob", &source);
    let detail = expect_done(&mut bob, rid, "receive", "big.bin", "alice", BIG_WAIT);
    let saved = downloads.join("big.bin");
    let (where_, resumed) = detail
        .split_once(", resumed at ")
        .unwrap_or_else(|| bob.fail(&format!("no `resumed at` in {detail:?}")));
    assert_eq!(where_, format!("saved as {}", saved.display()));
    let at = parse_human(resumed).unwrap_or_else(|| panic!("bad size {resumed:?}"));
    assert!(at >= MIB as f64 && at < BIG as f64, "resumed at {at} bytes");
    // The sender says the same.
    assert_eq!(
        expect_done(&mut alice, sid, "send", "big.bin", "bob", WAIT),
        format!("delivered, resumed at {resumed}")
    );
    assert_same_file(&source, &saved);
    let first = wait_ended_transfer(&server.db_path(), "big.bin", 0);
    assert_eq!(first.result.as_deref(), Some("failed"), "{first:#?}");
    assert_logged_ok(
        &server.db_path(),
        "big.bin",
        &source,
        ("alice", "bob"),
        first.id,
    );
    assert!(
        files_under(&downloads.join(".peerchat-partial")).is_empty(),
        "partial files left after the resumed transfer: {:?}",
        files_under(&downloads)
    );
}

// ---------------------------------------------------------------------------------------
// 9 and 11: chat goes on during transfers
// ---------------------------------------------------------------------------------------

/// a and b (in a session with each other, each the other's active peer) each type a
/// line every few milliseconds until `done` holds (checked on their and `extra`'s
/// output so far), then three more each. Returns the lines a and b typed.
fn chat_until(
    a: &mut Client,
    aname: &str,
    b: &mut Client,
    bname: &str,
    mut extra: Option<&mut Client>,
    done: impl Fn(&Client, &Client, Option<&Client>) -> bool,
) -> (Vec<String>, Vec<String>) {
    let deadline = Instant::now() + BIG_WAIT;
    let (mut from_a, mut from_b) = (Vec::new(), Vec::new());
    let mut after = 0;
    for i in 0.. {
        let (ta, tb) = (format!("{aname} says {i}"), format!("{bname} says {i}"));
        a.send(&ta);
        b.send(&tb);
        from_a.push(ta);
        from_b.push(tb);
        a.output_for(Duration::from_millis(10));
        b.output_for(Duration::from_millis(10));
        if let Some(extra) = extra.as_deref_mut() {
            extra.output_for(Duration::from_millis(5));
        }
        if after > 0 || done(a, b, extra.as_deref()) {
            after += 1;
            if after > 3 {
                break;
            }
        }
        if Instant::now() >= deadline {
            a.fail("the transfer did not end while chatting");
        }
    }
    (from_a, from_b)
}

/// Every line of `texts` arrives at `client` from `sender`, in order.
fn expect_chat_in_order(client: &mut Client, sender: &str, texts: &[String]) {
    for text in texts {
        client.expect_chat(None, sender, text);
    }
}

/// The index of the first line of `client`'s whole output satisfying `ok`.
fn line_index(client: &Client, ok: impl Fn(&str) -> bool) -> Option<usize> {
    client.output().lines().position(ok)
}

/// How many of `sender`'s chat lines `client` printed strictly between the first line
/// satisfying `from` and the first satisfying `to`.
fn chat_lines_between(
    client: &Client,
    sender: &str,
    from: impl Fn(&str) -> bool,
    to: impl Fn(&str) -> bool,
) -> usize {
    let out = client.output();
    let lines: Vec<&str> = out.lines().collect();
    let start = lines.iter().position(|l| from(l));
    let end = lines.iter().position(|l| to(l));
    let (Some(start), Some(end)) = (start, end) else {
        client.fail("the transfer's start or end line is missing");
    };
    let prefix = format!("] {sender}: {sender} says ");
    lines[start..end]
        .iter()
        .filter(|l| l.starts_with('[') && l.contains(&prefix))
        .count()
}

/// The state on the end line of transfer `id`, anywhere in `client`'s output.
fn final_state_anywhere(client: &Client, id: u64, role: &str, name: &str, peer: &str) -> String {
    let out = client.output();
    let state = out
        .lines()
        .find_map(|l| transfer_state(l, id, role, name, peer).filter(|s| is_final_state(s)));
    match state {
        Some(state) => state.to_string(),
        None => client.fail(&format!("transfer [{id}] ({role} {name}) has no end line")),
    }
}

/// The `started` line of transfer `id` and its end line.
fn starts(
    id: u64,
    role: &'static str,
    name: &'static str,
    peer: &'static str,
) -> impl Fn(&str) -> bool {
    move |l| transfer_state(l, id, role, name, peer) == Some("started")
}

fn ends(
    id: u64,
    role: &'static str,
    name: &'static str,
    peer: &'static str,
) -> impl Fn(&str) -> bool {
    move |l| transfer_state(l, id, role, name, peer).is_some_and(is_final_state)
}

#[test]
fn chat_flows_both_ways_during_a_200_mib_push() {
    let server = Server::start();
    let lab = Lab::new(&server);
    let mut alice = lab.register("alice", false);
    let mut bob = lab.register("bob", false);
    open_session(&mut alice, "alice", &mut bob, "bob");
    let source = lab.outbox("alice").join("big.bin");
    write_pattern(&source, BIG, 9);

    let (sid, rid) = offer_and_accept(&mut alice, "alice", &mut bob, "bob", &source);
    let (from_alice, from_bob) =
        chat_until(&mut alice, "alice", &mut bob, "bob", None, |a, b, _| {
            line_index(a, ends(sid, "send", "big.bin", "bob")).is_some()
                && line_index(b, ends(rid, "receive", "big.bin", "alice")).is_some()
        });
    note(&format!("{} lines each way", from_alice.len()));

    expect_chat_in_order(&mut bob, "alice", &from_alice);
    expect_chat_in_order(&mut alice, "bob", &from_bob);
    let during_bob = chat_lines_between(
        &bob,
        "alice",
        starts(rid, "receive", "big.bin", "alice"),
        ends(rid, "receive", "big.bin", "alice"),
    );
    let during_alice = chat_lines_between(
        &alice,
        "bob",
        starts(sid, "send", "big.bin", "bob"),
        ends(sid, "send", "big.bin", "bob"),
    );
    assert!(
        during_bob > 0 && during_alice > 0,
        "no chat line was shown while the transfer ran (bob saw {during_bob}, alice \
         {during_alice})"
    );
    let saved = lab.downloads("bob").join("big.bin");
    assert_eq!(
        final_state_anywhere(&bob, rid, "receive", "big.bin", "alice"),
        format!("done, verified (saved as {})", saved.display())
    );
    assert_eq!(
        final_state_anywhere(&alice, sid, "send", "big.bin", "bob"),
        "done, verified (delivered)"
    );
    assert_same_file(&source, &saved);
    assert_logged_ok(&server.db_path(), "big.bin", &source, ("alice", "bob"), 0);
}

#[test]
fn a_fetch_is_served_while_the_owner_chats_with_someone_else() {
    let server = Server::start();
    let lab = Lab::new(&server);
    let shared = lab.share("alice").join("movie.bin");
    write_pattern(&shared, BIG, 11);
    let mut alice = lab.register("alice", true);
    let mut bob = lab.register("bob", false);
    let mut carol = lab.register("carol", false);
    open_session(&mut alice, "alice", &mut carol, "carol");

    bob.send("\\fetch alice movie.bin");
    bob.expect("* [1] fetch movie.bin from alice: started");
    let (from_alice, from_carol) = chat_until(
        &mut alice,
        "alice",
        &mut carol,
        "carol",
        Some(&mut bob),
        |a, _, b| {
            line_index(a, ends(1, "serve", "movie.bin", "bob")).is_some()
                && line_index(b.unwrap(), ends(1, "fetch", "movie.bin", "alice")).is_some()
        },
    );
    expect_chat_in_order(&mut carol, "alice", &from_alice);
    expect_chat_in_order(&mut alice, "carol", &from_carol);
    let during = chat_lines_between(
        &alice,
        "carol",
        starts(1, "serve", "movie.bin", "bob"),
        ends(1, "serve", "movie.bin", "bob"),
    );
    assert!(
        during > 0,
        "alice showed no chat line while serving the fetch"
    );

    let got = lab.downloads("bob").join("movie.bin");
    assert_eq!(
        final_state_anywhere(&bob, 1, "fetch", "movie.bin", "alice"),
        format!("done, verified (saved as {})", got.display())
    );
    assert_eq!(
        final_state_anywhere(&alice, 1, "serve", "movie.bin", "bob"),
        "done, verified (delivered)"
    );
    assert_same_file(&shared, &got);
    assert_logged_ok(&server.db_path(), "movie.bin", &shared, ("bob", "alice"), 0);
}

// ---------------------------------------------------------------------------------------
// 10: index and search
// ---------------------------------------------------------------------------------------

/// (user, printed size, name) of one listing row `  user   12 B  name`.
fn parse_row(client: &Client, row: &str) -> (String, String, String) {
    let Some(rest) = row.strip_prefix("  ") else {
        client.fail(&format!("bad listing row {row:?}"));
    };
    let (user, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let Some((size, name)) = rest.trim_start().split_once("  ") else {
        client.fail(&format!("bad listing row {row:?}"));
    };
    (user.to_string(), size.to_string(), name.to_string())
}

/// Sends `command` (`\files ...`) and reads the listing: sorted (user, size, name).
fn listing(client: &mut Client, command: &str) -> Vec<(String, String, String)> {
    client.send(command);
    let head = client.expect_line(&format!("the answer to {command}"), |l| {
        l.starts_with("Shared files (") || l == "No shared files." || l.starts_with("error: ")
    });
    if head == "No shared files." {
        return Vec::new();
    }
    let Some(n) = head
        .strip_prefix("Shared files (")
        .and_then(|r| r.strip_suffix("):"))
        .and_then(|n| n.parse::<usize>().ok())
    else {
        client.fail(&format!("{command} answered {head:?}"));
    };
    let mut rows: Vec<_> = (0..n)
        .map(|_| {
            let row = client.expect_line("a listing row", |_| true);
            parse_row(client, &row)
        })
        .collect();
    rows.sort();
    rows
}

/// Sends `\search <text>` and reads the result: (total, sorted rows).
fn search(client: &mut Client, text: &str) -> (usize, Vec<(String, String, String)>) {
    client.send(&format!("\\search {text}"));
    let head = client.expect_line("the search result", |l| {
        l.starts_with("Search: ") || l.starts_with("error: ")
    });
    if head == "Search: no matches." {
        return (0, Vec::new());
    }
    let parsed = head
        .strip_prefix("Search: ")
        .and_then(|r| r.strip_suffix(':'))
        .and_then(|r| {
            let (total, shown) = match r.split_once(" match(es), first ") {
                Some((total, rest)) => (total, rest.strip_suffix(" shown")?.parse().ok()?),
                None => {
                    let total = r.strip_suffix(" match(es)")?;
                    (total, total.parse().ok()?)
                }
            };
            Some((total.parse::<usize>().ok()?, shown))
        });
    let Some((total, shown)) = parsed else {
        client.fail(&format!("\\search {text} answered {head:?}"));
    };
    let mut rows: Vec<_> = (0..shown)
        .map(|_| {
            let row = client.expect_line("a search row", |_| true);
            parse_row(client, &row)
        })
        .collect();
    rows.sort();
    (total, rows)
}

fn row(user: &str, size: u64, name: &str) -> (String, String, String) {
    (user.to_string(), human(size), name.to_string())
}

/// Polls `\files` on `client` (for up to `POLL`) until it equals `want`.
fn wait_listing(client: &mut Client, command: &str, want: &[(String, String, String)]) {
    let deadline = Instant::now() + POLL;
    loop {
        let got = listing(client, command);
        if got == want {
            return;
        }
        if Instant::now() >= deadline {
            client.fail(&format!("{command} still lists {got:?}, want {want:?}"));
        }
        thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn files_and_search_cover_every_online_user_and_follow_quits_and_rescans() {
    let server = Server::start();
    let lab = Lab::new(&server);
    let put = |user: &str, name: &str, size: usize| -> (String, String, String) {
        fs::write(lab.share(user).join(name), vec![b'z'; size]).unwrap();
        row(user, size as u64, name)
    };
    let a1 = put("alice", "Alpha Report.txt", 100);
    let a2 = put("alice", "notes.md", 2000);
    let b1 = put("bob", "beta-REPORT.pdf", 3 * 1024);
    let b2 = put("bob", "song.mp3", 5 * 1024 * 1024 + 17);
    let mut alice = lab.register("alice", true);
    let mut bob = lab.register("bob", true);
    let mut carol = lab.register("carol", false);

    let mut everything = vec![a1.clone(), a2.clone(), b1.clone(), b2.clone()];
    everything.sort();
    assert_eq!(listing(&mut carol, "\\files"), everything);
    assert_eq!(
        listing(&mut carol, "\\files alice"),
        vec![a1.clone(), a2.clone()]
    );
    assert_eq!(
        listing(&mut carol, "\\files bob"),
        vec![b1.clone(), b2.clone()]
    );
    let reports = vec![a1.clone(), b1.clone()];
    for text in ["report", "REPORT", "RePoRt"] {
        assert_eq!(search(&mut carol, text), (2, reports.clone()), "{text}");
    }
    assert_eq!(search(&mut carol, "SONG"), (1, vec![b2.clone()]));
    assert_eq!(search(&mut carol, "nothing like it"), (0, Vec::new()));
    // The owners see the same index.
    assert_eq!(search(&mut bob, "report"), (2, reports));

    // alice leaves: her files leave the index with her.
    alice.send("\\quit");
    alice.wait_exit();
    wait_listing(&mut carol, "\\files", &[b1.clone(), b2.clone()]);
    assert_eq!(search(&mut carol, "report"), (1, vec![b1.clone()]));
    carol.send("\\files alice");
    carol.expect("error: alice is not online");

    // bob adds a file and rescans.
    let b3 = put("bob", "gamma report ü.txt", 42);
    bob.send("\\rescan");
    bob.expect(&format!(
        "* sharing 3 file(s) from {}",
        lab.share("bob").canonicalize().unwrap().display()
    ));
    let mut now = vec![b1.clone(), b2, b3.clone()];
    now.sort();
    wait_listing(&mut carol, "\\files bob", &now);
    assert_eq!(search(&mut carol, "REPORT"), (2, vec![b1, b3]));
}

/// An unusable downloads folder (here a regular file stands where the folder should be,
/// since root ignores permission bits): a clear error on both sides, nothing written,
/// and the server logs the transfer as not ok.
#[test]
fn an_unusable_downloads_folder_is_a_clear_error_on_both_sides() {
    let server = Server::start();
    let lab = Lab::new(&server);
    fs::write(lab.downloads("bob"), "I am a file, not a folder").unwrap();
    let mut alice = lab.register("alice", false);
    let mut bob = lab.register("bob", false);
    open_session(&mut alice, "alice", &mut bob, "bob");
    let source = lab.outbox("alice").join("photo.bin");
    write_pattern(&source, 3 * CHUNK as u64 + 17, 7);

    let (sid, rid) = offer_and_accept(&mut alice, "alice", &mut bob, "bob", &source);
    let theirs = wait_final(&mut bob, rid, "receive", "photo.bin", "alice", WAIT);
    assert!(
        theirs.starts_with("failed: cannot write in ") && theirs.contains("downloads"),
        "bob should say why: {theirs:?}"
    );
    let ours = wait_final(&mut alice, sid, "send", "photo.bin", "bob", WAIT);
    assert!(
        ours.contains("cannot store the file")
            && !ours.contains(lab.downloads("bob").to_str().unwrap()),
        "alice should hear why, without bob's paths: {ours:?}"
    );
    assert_eq!(
        fs::read_to_string(lab.downloads("bob")).unwrap(),
        "I am a file, not a folder"
    );
    let result = logged_result(&server.db_path(), "photo.bin", 0);
    assert_ne!(result, "ok", "the server logged an impossible success");
    // Chat goes on after the failed transfer.
    alice.send("still here?");
    bob.expect_chat(None, "alice", "still here?");
}

// ---------------------------------------------------------------------------------------
// x1: one transfer number on both sides (issue 11)
// ---------------------------------------------------------------------------------------

/// alice fetches 200 MiB from bob's shared folder: both show the server's transfer id
/// as its number (as `offer` asserts for every push), and bob's `\cancel` with the
/// number he sees stops it on both sides (the push tests cancel with it either side).
#[test]
fn a_fetch_shows_one_number_on_both_sides_and_the_owner_cancels_by_it() {
    let server = Server::start();
    let lab = Lab::new(&server);
    let shared = lab.share("bob").join("big.bin");
    write_pattern(&shared, BIG, 6);
    let mut alice = lab.register("alice", false);
    let mut bob = lab.register("bob", true);
    // A push first, so the fetch's number is not 1 on either side by chance.
    open_session(&mut alice, "alice", &mut bob, "bob");
    let small = lab.outbox("alice").join("small.txt");
    fs::write(&small, b"a small file").unwrap();
    push(&mut alice, "alice", &mut bob, "bob", &small, WAIT);
    let frozen_pid = client_pid(&lab.home("alice").join("data"));

    alice.send("\\fetch bob big.bin");
    let line = alice.expect_line("the fetch's start", |l| {
        l.ends_with("] fetch big.bin from bob: started")
    });
    let fid = bracket_id(&line);
    let line = bob.expect_line("the serve's start", |l| {
        l.ends_with("] serve big.bin to alice: started")
    });
    let sid = bracket_id(&line);
    assert_eq!(fid, sid, "alice shows [{fid}], bob [{sid}]");
    assert!(fid >= 2, "the fetch came after a push: {fid}");

    let frozen = freeze_when_partial(&lab.downloads("alice"), 2 * MIB, frozen_pid);
    wait_progress_frozen(&mut bob, sid, "big.bin", 1, &frozen);
    bob.send(&format!("\\cancel {sid}"));
    bob.output_for(Duration::from_millis(300));
    frozen.resume();
    let theirs = wait_final(&mut bob, sid, "serve", "big.bin", "alice", WAIT);
    let mine = wait_final(&mut alice, fid, "fetch", "big.bin", "bob", WAIT);
    assert!(theirs.starts_with("cancelled"), "bob shows {theirs:?}");
    assert!(mine.starts_with("cancelled"), "alice shows {mine:?}");
    assert_eq!(final_files(&lab.downloads("alice")), Vec::<String>::new());
}

/// alice sends a folder of six 40 MiB files; bob accepts it once and, while its first
/// files are under way (alice held still), cancels the folder by the number both see:
/// the files under way stop on both sides, alice is told and offers no more of them.
#[test]
fn the_receiver_cancels_a_whole_folder_by_its_number() {
    let server = Server::start();
    let lab = Lab::new(&server);
    let mut alice = lab.register("alice", false);
    let mut bob = lab.register("bob", false);
    open_session(&mut alice, "alice", &mut bob, "bob");
    let album = lab.outbox("alice").join("album");
    fs::create_dir_all(&album).unwrap();
    for i in 0..6 {
        write_pattern(&album.join(format!("part{i}.bin")), 40 * MIB, i);
    }
    let frozen_pid = client_pid(&lab.home("alice").join("data"));

    alice.send(&format!("\\send {}", album.display()));
    let line = alice.expect_line("alice's folder offer", |l| {
        l.contains("] offered album/ (6 files)")
    });
    let sid = bracket_id(&line);
    let line = bob.expect_line("the folder offer", |l| {
        l.contains("] alice offers the folder album/ (6 files")
    });
    let rid = bracket_id(&line);
    assert_eq!(
        sid, rid,
        "alice shows the folder as [{sid}], bob as [{rid}]"
    );
    bob.send(&format!("\\accept {rid}"));

    let frozen = freeze_when_partial(&lab.downloads("bob"), 2 * MIB, frozen_pid);
    bob.send(&format!("\\cancel {rid}"));
    // Up to 4 files are in flight at once, so at least the last 2 were still queued;
    // more when alice (frozen once bob had 2 MiB) had not offered all 4 by then.
    let line = bob.expect_line("the folder's cancel", |l| {
        l.contains("album/ cancelled: its last ") && l.ends_with(" file(s) will not come")
    });
    let queued: usize = line
        .split("its last ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {line:?}"));
    assert!((2..=5).contains(&queued), "{line:?}");
    bob.output_for(Duration::from_millis(300));
    frozen.resume();
    // How many were still queued (said after a colon) depends on whether the files'
    // broken connections reached alice before bob's word did (each lets one more go).
    alice.expect("error: bob cancelled album/");

    // Nothing more arrives: no final file, and the session goes on.
    bob.output_for(Duration::from_secs(2));
    alice.send("after the folder");
    bob.expect_chat(None, "alice", "after the folder");
    let got = files_under(&lab.downloads("bob").join("album"));
    assert!(got.is_empty(), "files arrived after the cancel: {got:?}");
    let shown = bob.output();
    // At most the 4 files in flight ever started (a file cancelled before its first
    // bytes were counted may end without a "started" line of its own).
    let started = shown.matches(": started").count();
    assert!(
        (1..=4).contains(&started),
        "bob started {started} files, not at most the 4 in flight:\n{shown}"
    );
    for line in shown.lines().filter(|l| l.contains("] receive album/part")) {
        let state = line.rsplit(": ").next().unwrap_or("");
        assert!(
            state == "started" || state.starts_with("cancelled"),
            "a file of the cancelled folder ended otherwise: {line:?}"
        );
    }
}
