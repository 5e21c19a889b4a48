//! The connection ladder's relay rung, end to end on loopback: a requester that cannot
//! reach its target directly asks the server (`RELAY SESSION <id>`), both ends meet at
//! the server's in-process relay, and the session opens, chats both ways and is shown
//! and logged as `relay`. One test drives a real requester (the target is raw protocol,
//! announcing a port where nothing listens); the other a real target (the requester is
//! raw protocol). Before the relay, the requester tries the reverse rung (the raw target
//! ignores `EVENT DIAL`): that rung is tests/reverse.rs; real NAT is tests/nat.rs.
//! On the direct rung, every address is dialled at once and each connection runs the
//! Noise handshake: an impostor that answers first at one address does not win over
//! the target proving the ticket at another.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use peerchat::protocol::ticket::Ticket;

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// Dials the relay at `addr` with `token`, waits until paired, and runs the Noise
/// handshake end to end through it: as the responder for `ticket` (`target`) or as the
/// initiator.
fn meet(addr: &str, token: &str, ticket: &str, target: bool, label: &str) -> Wire {
    let stream = relay_meet(addr.parse().unwrap(), token);
    if target {
        Wire::accepted_peer(stream, ticket, label)
    } else {
        Wire::peer_on(stream, ticket, label)
    }
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
fn a_requester_that_cannot_reach_the_target_meets_it_at_the_relay() {
    let server = Server::start();
    let mut alice = Client::register(server.addr, "alice", PW, 0).named("alice");
    // bob announces a port where nothing listens: direct cannot work.
    let mut bob = Wire::registered(server.addr, "bob", PW, free_port()).named("bob");
    alice.send("\\connect bob");
    let event = bob.expect_event("EVENT SESSION_REQUEST");
    let words: Vec<&str> = event.split(' ').collect();
    let id: u64 = words[2].parse().unwrap();
    let ticket = Ticket::parse(words[4]).unwrap();
    alice.expect("cannot reach bob directly");
    let invite = bob.expect_event("EVENT RELAY");
    let words: Vec<&str> = invite.split(' ').collect();
    assert_eq!(words[2], id.to_string(), "{invite}");
    let mut link = meet(
        words[3],
        words[4],
        &ticket.to_string(),
        true,
        "bob at the relay",
    );
    // The same handshake as on a direct link, through the relay.
    link.expect(&format!("HELLO peerchat 1 alice {id}"));
    link.send(&format!(
        "ACCEPT {}",
        ticket.accept_mac(id, "alice", "bob").to_hex()
    ));
    alice.expect("* session with bob open");
    link.send(&format!("MSG {} hello through the relay", now_ms()));
    alice.expect_chat(None, "bob", "hello through the relay");
    alice.send("and back through it");
    let got = link.expect("MSG");
    assert!(got.ends_with("and back through it"), "{got}");
    alice.send("\\sessions");
    alice.expect("bob (active, relay)");
    assert_eq!(logged_path(&server, id).as_deref(), Some("relay"));
    // The printed log says so too.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_peerchat-server"))
        .arg("sessions")
        .arg("--db")
        .arg(db_arg(&server.db_path()))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.contains("alice") && l.contains("bob") && l.contains("(via relay)")),
        "{text}"
    );
}

#[test]
fn a_target_told_to_meet_at_the_relay_answers_there() {
    let server = Server::start();
    let mut bob = Client::register(server.addr, "bob", PW, 0).named("bob");
    let mut alice = Wire::registered(server.addr, "alice", PW, free_port()).named("alice");
    alice.send("CONNECT bob");
    let reply = alice.expect("OK SESSION");
    let words: Vec<&str> = reply.split(' ').collect();
    let id: u64 = words[2].parse().unwrap();
    let ticket = words[5].to_string();
    alice.send(&format!("RELAY SESSION {id}"));
    let reply = alice.expect("OK RELAY SESSION");
    let words: Vec<&str> = reply.split(' ').collect();
    assert_eq!(words[3], id.to_string(), "{reply}");
    let mut link = meet(words[4], words[5], &ticket, false, "alice at the relay");
    link.send(&format!("HELLO peerchat 1 alice {id} {ticket}"));
    bob.expect("* alice wants to chat");
    bob.send("\\accept alice");
    let accept = link.expect("ACCEPT");
    let want = Ticket::parse(&ticket)
        .unwrap()
        .accept_mac(id, "alice", "bob")
        .to_hex();
    assert_eq!(accept, format!("ACCEPT {want}"));
    link.send(&format!("MSG {} over the relay", now_ms()));
    bob.expect_chat(None, "alice", "over the relay");
    bob.send("\\sessions");
    bob.expect("alice (active, relay)");
}

#[test]
fn relay_for_a_session_that_is_not_yours_is_refused() {
    let server = Server::start();
    let mut alice = Wire::registered(server.addr, "alice", PW, free_port());
    let _bob = Wire::registered(server.addr, "bob", PW, free_port());
    let mut carol = Wire::registered(server.addr, "carol", PW, free_port());
    alice.send("CONNECT bob");
    let reply = alice.expect("OK SESSION");
    let id: u64 = reply.split(' ').nth(2).unwrap().parse().unwrap();
    carol.send(&format!("RELAY SESSION {id}"));
    carol.expect("ERR 432 NO_SESSION");
}

/// The next connection on `listener` within 10 s.
fn accept_within(listener: &TcpListener) -> TcpStream {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).unwrap();
                return stream;
            }
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("nobody connected to {:?}: {e}", listener.local_addr()),
        }
    }
}

#[test]
fn on_the_direct_rung_the_address_that_completes_the_handshake_wins() {
    // A second address of this machine that peers may be given as a hint.
    let Some(ip) = peerchat::client::core::ladder::local_ips(None)
        .into_iter()
        .find(IpAddr::is_ipv4)
    else {
        eprintln!("SKIPPED: no non-loopback IPv4 address for a hint");
        return;
    };
    let server = Server::start();
    let mut alice = Client::register(server.addr, "alice", PW, 0).named("alice");
    // An impostor holds the address the server sees for bob; bob listens at his hint.
    let impostor = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = impostor.local_addr().unwrap().port();
    let Ok(real) = TcpListener::bind((ip, port)) else {
        eprintln!("SKIPPED: port {port} is taken on {ip}");
        return;
    };
    let mut bob = Wire::registered(server.addr, "bob", PW, port).named("bob");
    bob.send(&format!("HINTS {ip}"));
    bob.expect_exact("OK HINTS 1");
    alice.send("\\connect bob");
    let event = bob.expect_event("EVENT SESSION_REQUEST");
    let words: Vec<&str> = event.split(' ').collect();
    let id: u64 = words[2].parse().unwrap();
    let ticket = Ticket::parse(words[4]).unwrap();
    // The impostor answers message 1 at once with a message 2 it cannot make right.
    let fake = std::thread::spawn(move || {
        let mut stream = accept_within(&impostor);
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut message_1 = [0u8; 66];
        stream.read_exact(&mut message_1).unwrap();
        let mut message_2 = vec![0u8, 96];
        message_2.extend((0..96u8).map(|i| i.wrapping_mul(37)));
        let _ = stream.write_all(&message_2);
        // Held open: the requester must drop it, not wait on it.
        std::thread::sleep(Duration::from_secs(2));
    });
    // bob answers later, as the responder proving the ticket.
    let stream = accept_within(&real);
    std::thread::sleep(Duration::from_millis(300));
    let mut link = Wire::accepted_peer(stream, &ticket.to_string(), "bob at his hint");
    link.expect(&format!("HELLO peerchat 1 alice {id}"));
    link.send(&format!(
        "ACCEPT {}",
        ticket.accept_mac(id, "alice", "bob").to_hex()
    ));
    alice.expect("* session with bob open");
    link.send(&format!("MSG {} from the address that proved it", now_ms()));
    alice.expect_chat(None, "bob", "from the address that proved it");
    alice.send("\\sessions");
    // Direct: no other rung was tried.
    alice.expect("bob (active, direct)\n");
    fake.join().unwrap();
}
