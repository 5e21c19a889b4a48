//! The session log tells the truth (issue 9, "Flags and the session log"): a session that
//! outlives a server run is unknown, not ended, until a client reports its end; the
//! transfer log says push or fetch, the bytes that moved, resumed or not, cancelled
//! versus failed, and keeps each side's report with the receiver's shown.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use peerchat::protocol::ticket::Ticket;

/// What `peerchat-server sessions --db` prints.
fn sessions_output(db: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_peerchat-server"))
        .arg("sessions")
        .arg("--db")
        .arg(db_arg(db))
        .output()
        .expect("run peerchat-server sessions");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "sessions failed: {text}");
    text
}

/// The printed row whose first word is `id`, in the section that starts with `section`.
fn printed_row(text: &str, section: &str, id: u64) -> String {
    let start = text
        .find(section)
        .unwrap_or_else(|| panic!("no {section}:\n{text}"));
    text[start..]
        .lines()
        .find(|l| l.split_whitespace().next() == Some(&id.to_string()))
        .unwrap_or_else(|| panic!("row {id} missing from {section}:\n{text}"))
        .to_string()
}

/// The `unknown_since_ms` column of session `id`.
fn unknown_since(db: &Path, id: i64) -> Option<i64> {
    if let Some(url) = pg_url_of(db) {
        let rows = pg_rows(
            &url,
            &format!("SELECT unknown_since_ms FROM sessions WHERE id = {id}"),
        );
        return rows[0][0].as_deref().map(|v| v.parse().unwrap());
    }
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    conn.busy_timeout(WAIT).unwrap();
    conn.query_row(
        "SELECT unknown_since_ms FROM sessions WHERE id = ?1",
        [id],
        |r| r.get(0),
    )
    .unwrap()
}

/// One transfer's summary and its side reports, read from the database.
#[derive(Debug)]
struct Logged {
    direction: Option<String>,
    result: Option<String>,
    moved: Option<i64>,
    resumed_from: Option<i64>,
    from_receiver: bool,
    /// (side, role, result, moved)
    reports: Vec<(String, Option<String>, String, i64)>,
}

fn logged(db: &Path, id: u64) -> Logged {
    if let Some(url) = pg_url_of(db) {
        let [summary, reports] = pg_snapshot(
            &url,
            [
                &format!(
                    "SELECT direction, result, moved, resumed_from, from_receiver FROM transfers
                     WHERE id = {id}"
                ),
                &format!(
                    "SELECT side, role, result, moved FROM transfer_reports
                     WHERE transfer_id = {id} ORDER BY side"
                ),
            ],
        );
        let int = |v: &Option<String>| v.as_deref().map(|v| v.parse::<i64>().unwrap());
        let r = &summary[0];
        return Logged {
            direction: r[0].clone(),
            result: r[1].clone(),
            moved: int(&r[2]),
            resumed_from: int(&r[3]),
            from_receiver: int(&r[4]) != Some(0),
            reports: reports
                .iter()
                .map(|r| {
                    (
                        r[0].clone().unwrap(),
                        r[1].clone(),
                        r[2].clone().unwrap(),
                        int(&r[3]).unwrap(),
                    )
                })
                .collect(),
        };
    }
    let mut conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    conn.busy_timeout(WAIT).unwrap();
    // One read transaction: the summary and the reports from the same moment (the server
    // writes a report and the summary it changes in one transaction).
    let conn = conn.transaction().unwrap();
    let mut row = conn
        .query_row(
            "SELECT direction, result, moved, resumed_from, from_receiver FROM transfers
             WHERE id = ?1",
            [id as i64],
            |r| {
                Ok(Logged {
                    direction: r.get(0)?,
                    result: r.get(1)?,
                    moved: r.get(2)?,
                    resumed_from: r.get(3)?,
                    from_receiver: r.get::<_, i64>(4)? != 0,
                    reports: Vec::new(),
                })
            },
        )
        .unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT side, role, result, moved FROM transfer_reports WHERE transfer_id = ?1
             ORDER BY side",
        )
        .unwrap();
    row.reports = stmt
        .query_map([id as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    drop(stmt);
    conn.finish().unwrap();
    row
}

/// Polls until transfer `id` satisfies `ok` (bounded by `POLL`).
fn wait_logged(db: &Path, id: u64, what: &str, ok: impl Fn(&Logged) -> bool) -> Logged {
    let deadline = Instant::now() + POLL;
    loop {
        let row = logged(db, id);
        if ok(&row) {
            return row;
        }
        if Instant::now() >= deadline {
            panic!("transfer {id}: {what}, not seen within {POLL:?}: {row:#?}");
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// The ids of the transfers in the log, oldest first.
fn transfer_ids(db: &Path) -> Vec<u64> {
    if let Some(url) = pg_url_of(db) {
        return pg_rows(&url, "SELECT id FROM transfers ORDER BY id")
            .iter()
            .map(|r| r[0].as_deref().unwrap().parse().unwrap())
            .collect();
    }
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    conn.busy_timeout(WAIT).unwrap();
    let mut stmt = conn
        .prepare("SELECT id FROM transfers ORDER BY id")
        .unwrap();
    stmt.query_map([], |r| r.get::<_, i64>(0))
        .unwrap()
        .map(|r| r.unwrap() as u64)
        .collect()
}

/// The number in `* [N] ...`.
fn bracket_id(line: &str) -> u64 {
    let start = line.find('[').expect("[") + 1;
    let end = line[start..].find(']').expect("]") + start;
    line[start..end].parse().expect("id")
}

#[test]
fn a_session_open_across_a_restart_is_unknown_until_a_client_reports_its_end() {
    let mut server = Server::start();
    let lab = Lab::new(&server);
    let mut alice = lab.register("alice", &[]);
    let mut bob = lab.register("bob", &[]);
    open_session(&mut alice, "alice", &mut bob, "bob");
    let id = db_sessions(&server.db_path())
        .last()
        .expect("a session row")
        .id;
    wait_session_row(&server.db_path(), id, "accepted", |r| {
        r.accepted_at_ms.is_some()
    });

    // A clean shutdown (Ctrl+C): the old code ended the session as its users left.
    assert!(server.stop().success(), "{}", server.log_text());
    let lost = "* lost the connection to the server; open sessions go on.";
    alice.expect(lost);
    bob.expect(lost);
    let row = db_sessions(&server.db_path())
        .into_iter()
        .find(|r| r.id == id)
        .unwrap();
    assert_eq!(
        row.ended_at_ms, None,
        "a shutdown ended the session: {row:?}"
    );
    assert_eq!(row.end_reason, None, "{row:?}");
    let since = unknown_since(&server.db_path(), id).expect("marked unknown at shutdown");
    assert!(since >= row.accepted_at_ms.unwrap(), "{row:?} {since}");

    // A new run: still unknown (not ended at startup), and printed so.
    let server2 = server.restart_same_addr();
    let row = db_sessions(&server2.db_path())
        .into_iter()
        .find(|r| r.id == id)
        .unwrap();
    assert_eq!(
        row.ended_at_ms, None,
        "the new run ended the session: {row:?}"
    );
    let printed = printed_row(
        &sessions_output(&server2.db_path()),
        "Chat sessions:",
        id as u64,
    );
    assert!(
        printed.contains("unknown since server restart"),
        "{printed}"
    );

    // The peers talked on; after reconnecting, alice closes and the real end is recorded.
    alice.send("still here");
    bob.expect_chat(None, "alice", "still here");
    for c in [&mut alice, &mut bob] {
        c.send("\\reconnect");
        c.expect("* reconnected to the server\n");
    }
    alice.send("\\close");
    alice.expect("* session with bob closed\n");
    let row = wait_session_row(&server2.db_path(), id, "ended", |r| r.ended_at_ms.is_some());
    assert_eq!(row.end_reason.as_deref(), Some("closed"), "{row:?}");
    assert!(row.ended_at_ms.unwrap() >= since, "{row:?}");
    let printed = printed_row(
        &sessions_output(&server2.db_path()),
        "Chat sessions:",
        id as u64,
    );
    assert!(printed.ends_with("closed"), "{printed}");
}

#[test]
fn a_push_and_a_fetch_show_their_direction_and_the_bytes_moved() {
    let server = Server::start();
    let lab = Lab::new(&server);
    let size = 3 * 1024 * 1024 + 17;
    let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(lab.share_dir("carol").join("shared.bin"), &data).unwrap();
    let mut carol = lab.register_sharing("carol");
    let mut alice = lab.register("alice", &[]);
    let mut bob = lab.register("bob", &[]);

    // alice pushes to bob over a session.
    open_session(&mut alice, "alice", &mut bob, "bob");
    let pushed = lab.share_dir("alice").join("pushed.bin");
    std::fs::write(&pushed, &data[..size / 2]).unwrap();
    alice.send(&format!("\\send {}", pushed.display()));
    let line = bob.expect_line("the offer", |l| {
        l.starts_with("* [") && l.contains("alice offers pushed.bin")
    });
    bob.send(&format!("\\accept {}", bracket_id(&line)));
    for c in [&mut alice, &mut bob] {
        c.expect_line("the push's end", |l| {
            l.contains("pushed.bin") && l.contains("done, verified")
        });
    }
    // bob fetches from carol, no session needed.
    bob.send("\\fetch carol shared.bin");
    bob.expect_line("the fetch's end", |l| {
        l.contains("fetch shared.bin from carol") && l.contains("done, verified")
    });
    carol.output_for(Duration::from_millis(100));

    let ids = transfer_ids(&server.db_path());
    assert_eq!(ids.len(), 2, "{ids:?}");
    let (push, fetch) = (ids[0], ids[1]);
    let both = |l: &Logged| l.reports.len() == 2;
    let p = wait_logged(&server.db_path(), push, "both sides reported", both);
    let f = wait_logged(&server.db_path(), fetch, "both sides reported", both);
    assert_eq!(p.direction.as_deref(), Some("push"), "{p:#?}");
    assert_eq!(f.direction.as_deref(), Some("fetch"), "{f:#?}");
    for (l, moved) in [(&p, size / 2), (&f, size)] {
        assert_eq!(l.result.as_deref(), Some("ok"), "{l:#?}");
        assert_eq!(l.moved, Some(moved as i64), "{l:#?}");
        assert_eq!(l.resumed_from, Some(0), "{l:#?}");
        assert!(l.from_receiver, "the summary is not the receiver's: {l:#?}");
    }
    let roles =
        |l: &Logged| -> Vec<Option<String>> { l.reports.iter().map(|r| r.1.clone()).collect() };
    assert_eq!(roles(&p), [Some("send".into()), Some("receive".into())]);
    assert_eq!(roles(&f), [Some("fetch".into()), Some("serve".into())]);

    let text = sessions_output(&server.db_path());
    let row = printed_row(&text, "File transfers:", push);
    let words: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(words[1..3], ["alice", "bob"], "{row}");
    assert!(words.contains(&"push") && words.contains(&"ok"), "{row}");
    assert!(row.contains(&format!("{0}/{0}", size / 2)), "{row}");
    let row = printed_row(&text, "File transfers:", fetch);
    assert!(
        row.contains(" fetch ") && row.contains(&format!("{size}/{size}")),
        "{row}"
    );
    assert!(text.contains("target bob (receive) reported ok"), "{text}");
}

#[test]
fn a_cancelled_fetch_shows_cancelled_and_the_receivers_report_wins_over_a_lying_sender() {
    let server = Server::start();
    let lab = Lab::new(&server);
    let mut alice = lab.register("alice", &[]);
    // mallory is raw: she serves by hand and reports what she likes.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut mallory = Wire::registered(server.addr, "mallory", PW, port);
    alice.expect("* mallory is online");
    // A fetch takes the size the owner listed, so mallory shares the file first.
    const SIZE: usize = 8 << 20;
    mallory.send("SHARE 1");
    mallory.send(&format!("{SIZE} big.bin"));
    mallory.expect("OK SHARE 1");

    alice.send("\\fetch mallory big.bin");
    let line = alice.expect_line("the fetch's start", |l| {
        l.starts_with("* [") && l.contains("fetch big.bin from mallory")
    });
    let local = bracket_id(&line);
    let event = mallory.expect_event("EVENT TRANSFER_REQUEST");
    let id: u64 = event.split(' ').nth(2).unwrap().parse().unwrap();
    let xfer_ticket = event.split(' ').nth(4).unwrap().to_string();
    listener.set_nonblocking(false).unwrap();
    let (stream, _) = listener.accept().unwrap();
    let mut data = Wire::accepted_peer(stream, &xfer_ticket, "alice -> mallory (fetch)");
    let first = data.expect("FETCH peerchat 1 alice");
    // mallory proves she holds the ticket, as a real owner does (protocol.md §11).
    let ticket = Ticket::parse(first.split(' ').nth(5).unwrap()).unwrap();
    data.send(&format!(
        "ACCEPT {}",
        ticket.accept_mac(id, "alice", "mallory").to_hex()
    ));
    data.send(&format!("FILE {SIZE} big.bin"));
    data.expect_exact("RESUME 0 -");
    data.send("START 0");
    let chunk = vec![7u8; 1 << 20];
    data.send(&format!(
        "CHUNK {} {}",
        chunk.len(),
        blake3::hash(&chunk).to_hex()
    ));
    data.send_bytes(&chunk).unwrap();
    alice.expect_line("progress", |l| {
        l.starts_with(&format!("  [{local}] big.bin ["))
    });

    // mallory claims a complete success first, and cannot pass herself off as the receiver.
    let fake_hash = "ab".repeat(32);
    mallory.send(&format!(
        "TRANSFER_END {id} ok {SIZE} 5 {fake_hash} fetch {SIZE} 0 big.bin"
    ));
    mallory.expect("ERR 400");
    mallory.send(&format!(
        "TRANSFER_END {id} ok {SIZE} 5 {fake_hash} serve {SIZE} 0 big.bin"
    ));
    mallory.expect(&format!("OK TRANSFER_END {id}"));
    let l = logged(&server.db_path(), id);
    assert_eq!(l.result.as_deref(), Some("ok"), "{l:#?}");

    // alice cancels: her (the receiver's) report replaces mallory's in the summary.
    alice.send(&format!("\\cancel {local}"));
    // alice's transfer thread sees the cancel between chunks: give the UI a moment to
    // take the command, then send the next chunk.
    alice.output_for(Duration::from_millis(300));
    let _ = data.try_send(&format!(
        "CHUNK {} {}",
        chunk.len(),
        blake3::hash(&chunk).to_hex()
    ));
    let _ = data.send_bytes(&chunk);
    alice.expect_line("the cancel", |l| {
        l.starts_with(&format!(
            "* [{local}] fetch big.bin from mallory: cancelled"
        ))
    });
    let l = wait_logged(&server.db_path(), id, "alice's report", |l| {
        l.reports.len() == 2
    });
    assert_eq!(l.result.as_deref(), Some("cancelled"), "{l:#?}");
    assert!(l.from_receiver, "{l:#?}");
    assert_eq!(l.direction.as_deref(), Some("fetch"), "{l:#?}");
    let moved = l.moved.unwrap();
    assert!(
        moved <= SIZE as i64 / 2,
        "alice moved 1 MiB, not {moved}: {l:#?}"
    );
    assert_eq!(
        l.reports
            .iter()
            .map(|r| (r.0.as_str(), r.2.as_str()))
            .collect::<Vec<_>>(),
        [("requester", "cancelled"), ("target", "ok")],
        "{l:#?}"
    );
    // A second report from the same side changes nothing.
    mallory.send(&format!(
        "TRANSFER_END {id} failed {SIZE} 5 - serve 0 0 big.bin"
    ));
    mallory.expect(&format!("OK TRANSFER_END {id}"));
    let l = logged(&server.db_path(), id);
    assert_eq!(l.result.as_deref(), Some("cancelled"), "{l:#?}");

    let text = sessions_output(&server.db_path());
    let row = printed_row(&text, "File transfers:", id);
    assert!(
        row.contains(" fetch ") && row.contains(" cancelled "),
        "{row}"
    );
    assert!(!row.contains(" failed "), "{row}");
    assert!(
        text.contains("requester alice (fetch) reported cancelled"),
        "{text}"
    );
    assert!(
        text.contains("target mallory (serve) reported ok"),
        "{text}"
    );
}

#[test]
fn a_session_closed_while_the_server_is_away_gets_its_real_end_after_reconnecting() {
    // A shared database cannot tell a killed server's sessions from other servers' open
    // ones, so a restart there marks none (a clean stop marks its own; README).
    if sqlite_only("a_session_closed_while_the_server_is_away_gets_its_real_end") {
        return;
    }
    let mut server = Server::start();
    let lab = Lab::new(&server);
    let mut alice = lab.register("alice", &[]);
    let mut bob = lab.register("bob", &[]);
    open_session(&mut alice, "alice", &mut bob, "bob");
    let id = db_sessions(&server.db_path())
        .last()
        .expect("a session row")
        .id;
    wait_session_row(&server.db_path(), id, "accepted", |r| {
        r.accepted_at_ms.is_some()
    });

    // SIGKILL: the new run finds the session open and marks it unknown at startup.
    server.kill();
    let lost = "* lost the connection to the server; open sessions go on.";
    alice.expect(lost);
    bob.expect(lost);
    let server2 = server.restart_same_addr();
    // The new run marks it before its accept loop starts (just after printing its address).
    let deadline = Instant::now() + POLL;
    while unknown_since(&server2.db_path(), id).is_none() {
        assert!(
            Instant::now() < deadline,
            "the new run never marked session {id} unknown"
        );
        thread::sleep(Duration::from_millis(50));
    }

    // The session ends while neither is logged in; the report waits for \reconnect.
    alice.send("\\close");
    alice.expect("* session with bob closed\n");
    bob.expect("* alice closed the session\n");
    thread::sleep(Duration::from_millis(300));
    let row = db_sessions(&server2.db_path())
        .into_iter()
        .find(|r| r.id == id)
        .unwrap();
    assert_eq!(row.ended_at_ms, None, "{row:?}");
    alice.send("\\reconnect");
    alice.expect("* reconnected to the server\n");
    let row = wait_session_row(&server2.db_path(), id, "ended", |r| r.ended_at_ms.is_some());
    assert_eq!(row.end_reason.as_deref(), Some("closed"), "{row:?}");
}
