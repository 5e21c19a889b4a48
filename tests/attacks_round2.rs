//! Round two of the hostile run (task a3): what one account (or a handful, from one
//! address) can make the server or another user's client do. Each test performs the
//! attack against the real `peerchat-server` over real TLS sockets (raw `Wire`s, as in
//! `hostile.rs` and `server_limits.rs`) and asserts what must hold; SECURITY.md's table
//! names them. Helpers for these attacks live here, not in `tests/common`.

mod common;

use std::io::Write;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{Got, PW, Server, Wire, free_port};
use peerchat::protocol::server_msg::ServerMsg;

/// Reads a list reply starting with `head` (`OK SEARCH`, `OK FILES`) and its body:
/// (n, total, "user name" of each body line).
fn read_list(w: &mut Wire, head: &str) -> (usize, usize, Vec<String>) {
    let line = w.expect(head);
    let words: Vec<&str> = line.split(' ').collect();
    let (n, total) = match words.as_slice() {
        [_, _, n, total] => (n.parse().unwrap(), total.parse().unwrap()),
        _ => w.fail(&format!("bad list header {line:?}")),
    };
    assert_eq!(ServerMsg::body_len(&line).ok(), Some(n), "{line}");
    let mut files = Vec::with_capacity(n);
    for _ in 0..n {
        let body = w.next_line();
        match body.splitn(4, ' ').collect::<Vec<_>>().as_slice() {
            ["FILE", user, _size, name] => files.push(format!("{user} {name}")),
            _ => w.fail(&format!("expected a FILE line, got {body:?}")),
        }
    }
    (n, total, files)
}

/// `SEARCH <text>` → (total, "user name" of each shown file).
fn search(w: &mut Wire, text: &str) -> (usize, Vec<String>) {
    w.send(&format!("SEARCH {text}"));
    let (_, total, files) = read_list(w, "OK SEARCH");
    (total, files)
}

/// Shares `names` (size 1 each) and expects `OK SHARE`.
fn share(w: &mut Wire, names: &[&str]) {
    let lines: Vec<String> = names.iter().map(|n| format!("1 {n}")).collect();
    w.send_share(&lines);
    w.expect_exact(&format!("OK SHARE {}", names.len()));
}

// ---------------------------------------------------------------------------------------
// 1: SEARCH with non-ASCII case and pathological needles
// ---------------------------------------------------------------------------------------

#[test]
fn search_matches_any_case_even_where_lower_case_depends_on_the_neighbours() {
    let server = Server::start();
    let mut alice = Wire::registered(server.addr, "alice", PW, free_port());
    // Greek capital sigma lowers to 'ς' at the end of a word and to 'σ' elsewhere, so
    // lowering a whole string at once gives the needle one letter and the name another.
    // 'Ⱥ' (2 bytes) lowers to 'ⱥ' (3 bytes): positions in the lowered names shift, and
    // every match must still name the right file. 'İ' lowers to 'i' and a combining dot
    // (which a typed 'izmir' lacks); the
    // Kelvin sign 'K' to an ASCII 'k'; 'ẞ' to 'ß'.
    share(
        &mut alice,
        &[
            "ΟΔΟΣ.txt",
            "οδος-δεύτερη.txt",
            "ΑΣΒ.bin",
            "ȺȺȺȺ-x1.dat",
            "b-x2.dat",
            "ȺȺy.dat",
            "İzmir.jpg",
            "\u{212A}elvin.txt",
            "Straße.pdf",
        ],
    );
    let mut bob = Wire::registered(server.addr, "bob", PW, free_port());
    let names = |found: Vec<String>| -> Vec<String> {
        found
            .into_iter()
            .map(|f| f.trim_start_matches("alice ").to_string())
            .collect()
    };
    let cases: &[(&str, &[&str])] = &[
        // The needle exactly as it stands in the name must find it.
        // Sorted by the folded name: "οδοσ-" before "οδοσ.".
        ("ΟΔΟΣ", &["οδος-δεύτερη.txt", "ΟΔΟΣ.txt"]),
        ("ΟΔΟΣ.TXT", &["ΟΔΟΣ.txt"]),
        ("οδος", &["οδος-δεύτερη.txt", "ΟΔΟΣ.txt"]),
        ("ΑΣ", &["ΑΣΒ.bin"]),
        ("ασβ", &["ΑΣΒ.bin"]),
        ("x2", &["b-x2.dat"]),
        ("ȺY", &["ȺȺy.dat"]),
        ("ⱥⱥⱥⱥ-X1", &["ȺȺȺȺ-x1.dat"]),
        ("İZMİR", &["İzmir.jpg"]),
        ("izmir", &["İzmir.jpg"]),
        ("kelvin", &["\u{212A}elvin.txt"]),
        ("STRAẞE", &["Straße.pdf"]),
    ];
    for (needle, want) in cases {
        let (total, found) = search(&mut bob, needle);
        let found = names(found);
        assert_eq!(
            (total, found.iter().map(String::as_str).collect::<Vec<_>>()),
            (want.len(), want.to_vec()),
            "SEARCH {needle}"
        );
    }
}

#[test]
fn pathological_search_needles_get_correct_bounded_replies() {
    let server = Server::start();
    let mut alice = Wire::registered(server.addr, "alice", PW, free_port());
    let lines: Vec<String> = (0..20_000)
        .map(|i| format!("{} photo-{i:05}-{}.jpg", i + 1, "a".repeat(200)))
        .collect();
    alice.send_share(&lines);
    alice.expect_exact("OK SHARE 20000");
    let mut bob = Wire::registered(server.addr, "bob", PW, free_port());
    // Every file matches: 100 shown, the total right, in listing order.
    let (total, found) = search(&mut bob, "PHOTO");
    assert_eq!((total, found.len()), (20_000, 100));
    assert!(found[0].starts_with("alice photo-00000-"), "{}", found[0]);
    assert!(found[99].starts_with("alice photo-00099-"), "{}", found[99]);
    // Every file matches many times over ("aaaa..." 200 times): still counted once each.
    let (total, found) = search(&mut bob, "aa");
    assert_eq!((total, found.len()), (20_000, 100));
    // The longest needle a line can carry, of a letter every name is full of: no match,
    // and no quadratic scan (the reply comes within the generous bound of `expect`).
    let long = "a".repeat(4096 - "SEARCH ".len());
    let (total, found) = search(&mut bob, &long);
    assert_eq!((total, found.len()), (0, 0));
    // Every printable ASCII byte, and a run of non-ASCII letters.
    let every: String = (0x21u8..0x7f).map(char::from).collect();
    assert_eq!(search(&mut bob, &every).0, 0);
    assert_eq!(search(&mut bob, &"İẞΣ\u{212A}Ⱥ".repeat(100)).0, 0);
    // Control characters and bidi overrides in a needle: answered, nothing matched.
    assert_eq!(search(&mut bob, "a\u{1b}[2Ja").0, 0);
    assert_eq!(search(&mut bob, "\u{202E}gpj").0, 0);
    // A needle that is all spaces finds names holding them (none here).
    assert_eq!(search(&mut bob, "   x").0, 0);
    // One over the line limit closes, as protocol.md §1 says.
    bob.send(&format!("SEARCH {}", "a".repeat(4096)));
    bob.expect("ERR 413 LINE_TOO_LONG");
    bob.expect_closed();
    // The server goes on.
    let mut carol = Wire::registered(server.addr, "carol", PW, free_port());
    assert_eq!(search(&mut carol, "photo-19999").0, 1);
}

// ---------------------------------------------------------------------------------------
// 2: SHARE/SEARCH churn: every search after a change rebuilds the flat copy of all names
// ---------------------------------------------------------------------------------------

/// How many times one churner alternates `SHARE 1` and `SEARCH` (pipelined in rounds).
const CHURN_ROUNDS: usize = 15;

/// Connections churning at once, all from the attacking address.
const CHURNERS: usize = 4;

#[test]
fn share_and_search_churn_keeps_others_served_and_the_server_bounded() {
    // The fillers say nothing once they shared: no idle timeout may take them offline.
    let server = Server::builder().args(&["--idle-timeout", "3600"]).start();
    let attacker: IpAddr = "127.0.0.21".parse().unwrap();
    // Two accounts fill the address's 50,000-file cap with long names (about 40,000 x 250
    // bytes; 'Ⱥ' lowers to 3 bytes, so their folded copy is about 15 MB): every rebuild
    // copies all of it.
    let heavy = |tag: &str| -> Vec<String> {
        (0..20_000)
            .map(|i| format!("1 {tag}-{i:05}-{}", "Ⱥ".repeat(118)))
            .collect()
    };
    let mut fillers = Vec::new();
    for (i, tag) in ["fill1", "fill2"].iter().enumerate() {
        let mut w = Wire::connect_from(server.addr, attacker).named(tag);
        w.register(tag, PW, 43000 + i as u16);
        w.send_share(&heavy(tag));
        w.expect_exact("OK SHARE 20000");
        fillers.push(w);
    }
    let mut victim = Wire::connect_from(server.addr, "127.0.0.22".parse().unwrap()).named("vic");
    victim.register("victim", PW, 43100);
    assert_eq!(search(&mut victim, "fill2-19999").0, 1);
    let before = server.rss_kib();

    // Four churners from the same address: each round changes the index and searches,
    // so every search finds the copy stale.
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(before));
    let sampler = {
        let (stop, peak, pid) = (Arc::clone(&stop), Arc::clone(&peak), server.pid());
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some(kib) = rss_of(pid) {
                    peak.fetch_max(kib, Ordering::Relaxed);
                }
                thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let churners: Vec<_> = (0..CHURNERS)
        .map(|c| {
            let mut w = Wire::connect_from(server.addr, attacker).named("churner");
            let name = format!("churn{c}");
            w.register(&name, PW, 43200 + c as u16);
            thread::spawn(move || {
                let started = Instant::now();
                for round in 0..CHURN_ROUNDS {
                    let text = format!("SHARE 1\n1 c{c}-{round}\nSEARCH zzzz\n").repeat(4);
                    w.clone_stream().write_all(text.as_bytes()).unwrap();
                    for _ in 0..4 {
                        w.expect_exact("OK SHARE 1");
                        let (total, _) = {
                            let (_, total, files) = read_list(&mut w, "OK SEARCH");
                            (total, files)
                        };
                        assert_eq!(total, 0);
                    }
                }
                // The connection stays open until every churner is done.
                (started.elapsed(), w)
            })
        })
        .collect();

    // Meanwhile the victim is served: LIST, INFO, a SEARCH with the right answer.
    let mut worst = Duration::ZERO;
    let mut asked = 0;
    while churners.iter().any(|c| !c.is_finished()) {
        let t = Instant::now();
        victim.send("INFO fill1");
        victim.expect("OK INFO fill1");
        let (total, found) = search(&mut victim, "FILL1-0001");
        assert_eq!((total, found.len()), (10, 10));
        let users = victim.list();
        assert_eq!(users.len(), 3 + CHURNERS, "{users:?}");
        worst = worst.max(t.elapsed());
        asked += 1;
    }
    let (churn_time, _churners): (Vec<Duration>, Vec<Wire>) =
        churners.into_iter().map(|c| c.join().unwrap()).unzip();
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let grown_mib = peak.load(Ordering::Relaxed).saturating_sub(before) / 1024;
    println!(
        "churn: {} rounds x 4 SHARE+SEARCH on each of {CHURNERS} connections in {churn_time:?}; \
         the victim's INFO+SEARCH+LIST x{asked}, worst {worst:?}; RSS {} MiB before, peak +{grown_mib} MiB",
        CHURN_ROUNDS,
        before / 1024
    );
    // Generous: the victim's three commands within 10 s each time on a loaded machine.
    assert!(
        worst < Duration::from_secs(10),
        "the victim waited {worst:?}"
    );
    // A copy of the names is about 15 MB; a few alive at once (and the allocator keeping
    // a freed one per thread that built one) is fine, one per search ever made is not.
    assert!(
        grown_mib < 150,
        "the server grew by {grown_mib} MiB under churn"
    );
}

/// Resident memory of process `pid` in KiB (None once it is gone).
fn rss_of(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

// ---------------------------------------------------------------------------------------
// 3: one account filling another user's mailbox or held offers for everyone else
// ---------------------------------------------------------------------------------------

#[test]
fn one_account_cannot_fill_an_offline_users_mailbox_or_held_offers_for_others() {
    let server = Server::start();
    Wire::registered(server.addr, "bob", PW, free_port()).quit();
    let mut mallory = Wire::registered(server.addr, "mallory", PW, free_port()).named("mallory");
    let mut carol = Wire::registered(server.addr, "carol", PW, free_port()).named("carol");
    // bob's mailbox holds 100; mallory may fill a quarter of it.
    for i in 0..25 {
        mallory.send(&format!("SEND bob {i:02x}"));
        let reply = mallory.expect("OK SENT");
        assert!(reply.ends_with(" queued"), "{reply}");
    }
    mallory.send("SEND bob ff");
    mallory.expect_exact(
        "ERR 465 TOO_MANY_WAITING you have 25 messages waiting for bob already; try once they have read them",
    );
    // Others still reach bob.
    carol.send("SEND bob 00");
    assert!(carol.expect("OK SENT").ends_with(" queued"));
    // The same for file offers held for bob: 8 from one account of the 32 he may hold.
    thread::sleep(Duration::from_millis(1200));
    for i in 0..8 {
        mallory.send(&format!("OFFER bob - 10 junk{i}.bin"));
        mallory.expect("OK OFFER");
    }
    mallory.send("OFFER bob - 10 junk8.bin");
    mallory.expect_exact(
        "ERR 465 TOO_MANY_WAITING you have 8 offers to bob waiting for answers already; try later",
    );
    carol.send("OFFER bob - 10 real.pdf");
    assert!(carol.expect("OK OFFER").ends_with(" queued"));
    // bob gets what waited: 26 messages, 9 offers; mallory's refused ones never.
    let mut bob = Wire::connect(server.addr).named("bob");
    bob.login("bob", PW, free_port());
    assert_eq!(bob.expect_event("EVENT MAILBOX"), "EVENT MAILBOX 26");
    assert_eq!(bob.expect_event("EVENT HELD"), "EVENT HELD 9");
    bob.ping();
    let events = bob.take_events();
    assert!(!events.iter().any(|e| e.contains("junk8")), "{events:?}");
    assert!(
        !events.iter().any(|e| e.ends_with(" ff")),
        "a refused message arrived"
    );
    // Once bob is online, mallory's messages pass on at once (no cap on what never waits).
    thread::sleep(Duration::from_millis(1200));
    mallory.send("SEND bob ee");
    assert!(mallory.expect("OK SENT").ends_with(" delivered"));
}

// ---------------------------------------------------------------------------------------
// 4: slowloris at every stage, and half-open TLS handshakes, from one address
// ---------------------------------------------------------------------------------------

/// Reads from a raw socket until it closes (true) or `bound` passes (false).
fn closed_within(stream: &mut std::net::TcpStream, bound: Duration) -> bool {
    use std::io::{ErrorKind, Read};
    let deadline = Instant::now() + bound;
    let mut sink = [0u8; 4096];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        stream
            .set_read_timeout(Some(left.max(Duration::from_millis(10))))
            .unwrap();
        match stream.read(&mut sink) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
    false
}

/// The server must close `w` within `bound`, after at most an `ERR 408` (events kept).
fn timed_out(w: &mut Wire, bound: Duration) -> Vec<String> {
    let deadline = Instant::now() + bound;
    let mut seen = Vec::new();
    loop {
        match w.read_within(deadline.saturating_duration_since(Instant::now())) {
            Got::Closed => return seen,
            Got::Line(line) if line.starts_with("EVENT ") => {}
            Got::Line(line) => seen.push(line),
            Got::TimedOut => w.fail(&format!("still open after {bound:?}; saw {seen:?}")),
        }
    }
}

#[test]
fn slow_and_half_open_connections_from_one_address_do_not_keep_others_out() {
    let server = Server::builder()
        .args(&["--login-timeout", "4", "--idle-timeout", "4"])
        .start();
    let attacker: IpAddr = "127.0.0.31".parse().unwrap();
    let bound = Duration::from_secs(20);
    // Two logged-in accounts of the attacker: one stops in the middle of a SHARE body,
    // one in the middle of a command line. Each line must come whole within the idle
    // timeout, so both are cut off.
    let mut mid_share = Wire::connect_from(server.addr, attacker).named("mid-share");
    mid_share.register("midshare", PW, free_port());
    mid_share.send_bytes(b"SHARE 3\n1 a.txt\n2 b.t").unwrap();
    let mut mid_line = Wire::connect_from(server.addr, attacker).named("mid-line");
    mid_line.register("midline", PW, free_port());
    mid_line.send_bytes(b"SEARCH som").unwrap();
    // 40 TCP connections that start a TLS handshake and stop (a record header and a few
    // bytes of a ClientHello), and 24 TLS connections that drip a login: the address's
    // 64 connections not logged in.
    let mut half_open = Vec::new();
    for _ in 0..40 {
        let socket = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )
        .unwrap();
        socket
            .bind(&std::net::SocketAddr::new(attacker, 0).into())
            .unwrap();
        socket.connect(&server.addr.into()).unwrap();
        let mut stream: std::net::TcpStream = socket.into();
        stream
            .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
            .unwrap();
        half_open.push(stream);
    }
    let mut dripping = Vec::new();
    for i in 0..24 {
        let mut w = Wire::connect_from(server.addr, attacker).named("dripper");
        w.hello();
        w.send_bytes(if i % 2 == 0 { b"N\nalic" } else { b"Y" })
            .unwrap();
        dripping.push(w);
    }
    let started = Instant::now();
    // The 65th from that address is refused at once; another address logs in at once.
    let mut extra = Wire::connect_from(server.addr, attacker).named("65th");
    assert_eq!(
        timed_out(&mut extra, bound).first().map(|l| l
            .split(' ')
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")),
        Some("ERR 435".to_string())
    );
    let mut victim = Wire::connect_from(server.addr, "127.0.0.32".parse().unwrap()).named("vic");
    victim.register("victim", PW, free_port());
    victim.ping();
    let victim_in = started.elapsed();
    // Every slow connection is cut by its deadline: the logged-in ones with `408`.
    for w in [&mut mid_share, &mut mid_line] {
        let said = timed_out(w, bound);
        assert!(
            said.iter().any(|l| l.starts_with("ERR 408 TIMEOUT")),
            "{said:?}"
        );
        assert!(
            !said.iter().any(|l| l.starts_with("OK SHARE")),
            "a SHARE cut in its body was taken: {said:?}"
        );
    }
    for w in &mut dripping {
        let said = timed_out(w, bound);
        assert!(
            said.iter()
                .all(|l| l.starts_with("ERR 408") || l.starts_with("ASK")),
            "{said:?}"
        );
    }
    let mut still_open = 0;
    for s in &mut half_open {
        if !closed_within(s, bound) {
            still_open += 1;
        }
    }
    assert_eq!(
        still_open, 0,
        "half-open TLS handshakes outlived the login deadline"
    );
    let all_cut = started.elapsed();
    // Once they are gone, the address logs in again (a refused connection keeps its
    // slot for the 2 s the server lingers for the client to close: a few tries).
    let deadline = Instant::now() + bound;
    let mut back = loop {
        let mut w = Wire::connect_from(server.addr, attacker).named("back");
        match w.read_within(Duration::from_secs(10)) {
            Got::Line(line) if line == "HELLO peerchat 1" => {
                w.unread(line);
                break w;
            }
            Got::Line(line) if line.starts_with("ERR 435") && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(500));
            }
            _ => w.fail("the attacker's address never got a slot back"),
        }
    };
    back.register("back", PW, free_port());
    back.ping();
    // (The victim said nothing for the 4 s idle timeout meanwhile: it logs in again.)
    drop(victim);
    let mut victim = Wire::connect_from(server.addr, "127.0.0.32".parse().unwrap()).named("vic");
    victim.login("victim", PW, free_port());
    victim.ping();
    println!(
        "slowloris: another address logged in after {victim_in:?}; 2 mid-line/mid-SHARE, \
         24 dripped logins and 40 half-open handshakes all cut within {all_cut:?}"
    );
}

// ---------------------------------------------------------------------------------------
// 5: hostile file names in offers through the server, to a real client's terminal
// ---------------------------------------------------------------------------------------

/// Characters that must never reach a terminal from the network: controls and the
/// invisible format characters protocol.md §1 lists.
fn raw_chars(text: &str) -> Vec<char> {
    let mut found: Vec<char> = text
        .chars()
        .filter(|&c| {
            (c.is_control() && c != '\n')
                || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
                    | '\u{200B}'..='\u{200F}' | '\u{2060}'..='\u{2064}' | '\u{061C}'
                    | '\u{FEFF}' | '\u{2028}' | '\u{2029}')
        })
        .collect();
    found.dedup();
    found
}

#[test]
fn hostile_names_in_offers_through_the_server_reach_the_terminal_cleaned() {
    let server = Server::start();
    let lab = common::Lab::new(&server);
    {
        let mut bob = lab.register("bob", &[]);
        bob.send("\\quit");
        bob.wait_exit();
    }
    let mut mallory = Wire::registered(server.addr, "mallory", PW, free_port()).named("mallory");
    // The file-name rule refuses controls (ESC, CSI, DEL) at the server...
    for bad in ["a\u{1b}[2Jb.txt", "a\u{9b}31mb.txt", "a\u{7f}b.txt"] {
        mallory.send(&format!("OFFER bob - 10 {bad}"));
        mallory.expect("ERR 400 BAD_REQUEST unsafe file name");
    }
    // ...but format characters travel (protocol.md §1): held while bob is away, then one
    // more once he is online.
    let held = [
        "report\u{202E}fdp.exe",
        "zero\u{200B}width\u{2060}joiner.txt",
        "line\u{2028}sep\u{2029}para.txt",
        "bom\u{FEFF}\u{2066}isolate\u{2069}.txt",
    ];
    for name in held {
        mallory.send(&format!("OFFER bob - 10 {name}"));
        assert!(mallory.expect("OK OFFER").ends_with(" queued"));
    }
    let mut bob = lab.login("bob", &[]);
    bob.expect("while you were away, mallory offered you report\u{FFFD}fdp.exe");
    thread::sleep(Duration::from_millis(1200));
    mallory.send("OFFER bob - 10 live\u{202D}exe.txt");
    assert!(mallory.expect("OK OFFER").ends_with(" delivered"));
    bob.expect("mallory offers live\u{FFFD}exe.txt");
    bob.send("\\transfers");
    bob.output_for(Duration::from_millis(800));
    let out = bob.output();
    for shown in [
        "zero\u{FFFD}width\u{FFFD}joiner.txt",
        "line\u{FFFD}sep\u{FFFD}para.txt",
        "bom\u{FFFD}\u{FFFD}isolate\u{FFFD}.txt",
    ] {
        assert!(out.contains(shown), "{shown:?} not shown:\n{out}");
    }
    let raw = raw_chars(&out);
    assert!(raw.is_empty(), "bob's terminal got {raw:?}:\n{out:?}");
    let raw = raw_chars(&bob.stderr());
    assert!(raw.is_empty(), "bob's stderr got {raw:?}");
}

// ---------------------------------------------------------------------------------------
// 6: the server's log is not the attacker's disk
// ---------------------------------------------------------------------------------------

#[test]
fn long_command_lines_do_not_grow_the_servers_log_by_their_length() {
    let server = Server::start();
    let mut mallory = Wire::registered(server.addr, "mallory", PW, free_port()).named("mallory");
    let before = server.log_text().len();
    // 300 SEARCHes of 4,000 bytes each: 1.2 MB of needles.
    let needle = "q".repeat(4000);
    let text = format!("SEARCH {needle}\n").repeat(300);
    mallory.clone_stream().write_all(text.as_bytes()).unwrap();
    for _ in 0..300 {
        read_list(&mut mallory, "OK SEARCH");
    }
    mallory.ping();
    let grown = server.log_text().len() - before;
    // Each is logged, cut to 200 characters and its size.
    assert_eq!(server.log_count("(4007 bytes)"), 300);
    assert!(grown < 300 * 400, "the log grew by {grown} bytes");
    println!("log growth for 300 SEARCHes of 4,000 bytes: {grown} bytes");
}
