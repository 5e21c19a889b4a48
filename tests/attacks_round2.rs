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
