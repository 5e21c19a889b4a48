//! The ladder's reverse rung end to end on loopback (protocol.md §13): a requester that
//! cannot reach its target sends `REVERSE SESSION <id>`, the server tells the target
//! `EVENT DIAL` with the requester's hints, the target dials back and names the request
//! with one `REVERSE` line in clear, and the session runs over that connection with the
//! logical roles unchanged: the requester is still the Noise initiator (the target, which
//! dialled, the responder) and still says `HELLO`, inside Noise. One test drives a real requester
//! (the target is raw protocol), the other a real target (the requester is raw). A
//! stranger's `REVERSE` line, and a second one for a request already answered, are
//! refused with `525 NO_REVERSE`. A real target that cannot dial back says `DIAL_FAILED`
//! and the requester hears it at once. The same in network namespaces with NAT: tests/nat.rs.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use peerchat::protocol::ticket::Ticket;

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// Dials `addr` and names the pending request `what` (`SESSION 7`, say) in clear; the
/// connection stays in clear (for the listener's refusals).
fn dial_back(addr: SocketAddr, what: &str, label: &str) -> Wire {
    let stream = TcpStream::connect(addr).unwrap();
    let mut w = Wire::from_accepted(stream, label);
    w.send(&format!("REVERSE {what}"));
    w
}

/// Dials `addr`, names the pending request `what` in clear, then answers the requester's
/// Noise handshake as the responder for `ticket` (the target's side of the reverse rung).
fn dial_back_secured(addr: SocketAddr, what: &str, ticket: &str, label: &str) -> Wire {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .write_all(format!("REVERSE {what}\n").as_bytes())
        .unwrap();
    Wire::accepted_peer(stream, ticket, label)
}

/// Reads one clear line off `stream` byte by byte (nothing after it is taken).
fn clear_line(stream: &mut TcpStream) -> String {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while stream.read_exact(&mut byte).is_ok() && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    stream.set_read_timeout(None).unwrap();
    String::from_utf8_lossy(&line).trim_end().to_string()
}

/// The path the server's session log recorded for session `id`.
fn logged_path(server: &Server, id: u64) -> Option<String> {
    if let Some(url) = pg_url_of(&server.db_path()) {
        let rows = pg_rows(&url, &format!("SELECT path FROM sessions WHERE id = {id}"));
        return rows[0][0].clone();
    }
    let conn = rusqlite::Connection::open(server.db_path()).unwrap();
    conn.query_row(
        "SELECT path FROM sessions WHERE id = ?1",
        [id as i64],
        |r| r.get(0),
    )
    .unwrap()
}

#[test]
fn a_requester_that_cannot_reach_the_target_is_dialled_back() {
    let server = Server::start();
    let mut alice = Client::register(server.addr, "alice", PW, 0).named("alice");
    // bob announces a port where nothing listens: the direct rung fails at once.
    let mut bob = Wire::registered(server.addr, "bob", PW, free_port()).named("bob");
    alice.send("\\connect bob");
    let event = bob.expect_event("EVENT SESSION_REQUEST");
    let words: Vec<&str> = event.split(' ').collect();
    let id: u64 = words[2].parse().unwrap();
    let ticket = Ticket::parse(words[4]).unwrap();
    alice.expect("cannot reach bob directly; asking it to connect to us");
    let dial = bob.expect_event("EVENT DIAL SESSION");
    let words: Vec<&str> = dial.split(' ').collect();
    assert_eq!(words[3], id.to_string(), "{dial}");
    // The first hint is the address the server sees alice's listener at.
    let hints: Vec<SocketAddr> = words[4].split(',').map(|h| h.parse().unwrap()).collect();
    let alice_at = hints[0];
    // A stranger naming a request alice does not have is refused.
    let mut stranger = dial_back(alice_at, "TRANSFER 999", "stranger");
    stranger.expect("ERR 525 NO_REVERSE");
    // The same handshake as on a direct link: alice, the requester, is the Noise
    // initiator over the connection bob dialled, and speaks first inside it.
    let mut link = dial_back_secured(
        alice_at,
        &format!("SESSION {id}"),
        &ticket.to_string(),
        "bob dialling back",
    );
    link.expect(&format!("HELLO peerchat 1 alice {id}"));
    // Only one connection wins: a second one for the same request is refused.
    let mut late = dial_back(alice_at, &format!("SESSION {id}"), "a second dial-back");
    late.expect("ERR 525 NO_REVERSE");
    link.send(&format!(
        "ACCEPT {}",
        ticket.accept_mac(id, "alice", "bob").to_hex()
    ));
    alice.expect("* session with bob open");
    link.send(&format!(
        "MSG {} hello from the dialled-back side",
        now_ms()
    ));
    alice.expect_chat(None, "bob", "hello from the dialled-back side");
    alice.send("and back the same way");
    let got = link.expect("MSG");
    assert!(got.ends_with("and back the same way"), "{got}");
    alice.send("\\sessions");
    alice.expect("bob (active, reverse)");
    assert_eq!(logged_path(&server, id).as_deref(), Some("reverse"));
}

#[test]
fn a_target_asked_to_dial_back_does_and_answers_as_on_its_listener() {
    let server = Server::start();
    let mut bob = Client::register(server.addr, "bob", PW, 0).named("bob");
    // alice listens for real, so bob can dial her back.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut alice = Wire::registered(server.addr, "alice", PW, port).named("alice");
    alice.send("CONNECT bob");
    let reply = alice.expect("OK SESSION");
    let words: Vec<&str> = reply.split(' ').collect();
    let id: u64 = words[2].parse().unwrap();
    let ticket = words[5].to_string();
    alice.send(&format!("REVERSE SESSION {id}"));
    alice.expect_exact(&format!("OK REVERSE SESSION {id}"));
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let stream = loop {
        match listener.accept() {
            Ok((stream, _)) => break stream,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("bob never dialled back: {e}"),
        }
    };
    let mut stream = stream;
    stream.set_nonblocking(false).unwrap();
    // bob names the request in clear, then waits for alice's Noise handshake: alice,
    // the requester, is the initiator although bob dialled.
    assert_eq!(clear_line(&mut stream), format!("REVERSE SESSION {id}"));
    let mut link = Wire::peer_on(stream, &ticket, "bob's dial-back");
    link.send(&format!("HELLO peerchat 1 alice {id} {ticket}"));
    bob.expect("* alice wants to chat");
    bob.send("\\accept alice");
    let accept = link.expect("ACCEPT");
    let want = Ticket::parse(&ticket)
        .unwrap()
        .accept_mac(id, "alice", "bob")
        .to_hex();
    assert_eq!(accept, format!("ACCEPT {want}"));
    link.send(&format!("MSG {} over a reverse connection", now_ms()));
    bob.expect_chat(None, "alice", "over a reverse connection");
    bob.send("\\sessions");
    bob.expect("alice (active, reverse)");
    assert_eq!(logged_path(&server, id).as_deref(), Some("reverse"));
}

#[test]
fn reverse_for_a_session_that_is_not_yours_is_refused() {
    let server = Server::start();
    let mut alice = Wire::registered(server.addr, "alice", PW, free_port());
    let mut bob = Wire::registered(server.addr, "bob", PW, free_port());
    let mut carol = Wire::registered(server.addr, "carol", PW, free_port());
    alice.send("CONNECT bob");
    let reply = alice.expect("OK SESSION");
    let id: u64 = reply.split(' ').nth(2).unwrap().parse().unwrap();
    // Neither a third user nor the target may make anyone dial.
    carol.send(&format!("REVERSE SESSION {id}"));
    carol.expect("ERR 432 NO_SESSION");
    bob.send(&format!("REVERSE SESSION {id}"));
    bob.expect("ERR 432 NO_SESSION");
    bob.send("REVERSE TRANSFER 424242");
    bob.expect("ERR 432 NO_SESSION");
}

/// `DIAL_FAILED` sent by the real client: a real target told to dial back a requester it
/// cannot reach (nothing listens at any of its hints) says so to the server at once, and
/// the requester hears `EVENT DIAL_FAILED` long before it would stop waiting by itself
/// (`REVERSE_WAIT`), so it goes on to the relay at once. For a session and a transfer.
#[test]
fn a_target_that_cannot_dial_back_says_so_and_the_requester_hears_at_once() {
    use peerchat::protocol::limits::REVERSE_WAIT;
    let server = Server::start();
    let mut bob = Client::register(server.addr, "bob", PW, 0).named("bob");
    // alice announces a port nobody listens on: every hint of hers refuses.
    let port = {
        let closed = TcpListener::bind("127.0.0.1:0").unwrap();
        closed.local_addr().unwrap().port()
    };
    let mut alice = Wire::registered(server.addr, "alice", PW, port).named("alice");
    for (ask, grant, what) in [
        ("CONNECT bob", "OK SESSION", "SESSION"),
        ("TRANSFER bob", "OK TRANSFER", "TRANSFER"),
    ] {
        alice.send(ask);
        let reply = alice.expect(grant);
        let id: u64 = reply.split(' ').nth(2).unwrap().parse().unwrap();
        let asked = Instant::now();
        alice.send(&format!("REVERSE {what} {id}"));
        alice.expect_exact(&format!("OK REVERSE {what} {id}"));
        alice.expect_event(&format!("EVENT DIAL_FAILED {what} {id}"));
        let took = asked.elapsed();
        println!("figure: {what} {id}: EVENT DIAL_FAILED {took:?} after REVERSE");
        assert!(
            took < REVERSE_WAIT,
            "the requester heard of the failed dial-back only after {took:?}"
        );
        let logged = format!(
            "{} {id}: bob could not dial alice back",
            what.to_ascii_lowercase()
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while server.log_count(&logged) == 0 {
            assert!(
                Instant::now() < deadline,
                "the server never logged {logged:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // bob's client is still fine: it answers an ordinary request.
    bob.send("\\list");
    bob.expect("alice");
}
