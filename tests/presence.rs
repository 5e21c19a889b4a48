//! Presence: who is online (LIST), where to reach them (INFO), ONLINE/OFFLINE events, and
//! users leaving the list when they quit, drop the socket or their process dies
//! (protocol.md §4–§6). Raw sockets and the real client binary against the real server.

mod common;

use common::*;

#[test]
fn list_shows_exactly_the_online_users_sorted() {
    let server = Server::start();
    // Registered in an unsorted order.
    let mut carol = Wire::registered(server.addr, "carol", PW, 40003);
    let _alice = Wire::registered(server.addr, "alice", PW, 40001);
    // dave registers and leaves: he must not be listed.
    Wire::registered(server.addr, "dave", PW, 40004).quit();
    let mut bob = Wire::registered(server.addr, "bob", PW, 40002);

    bob.wait_for_list(&["alice", "bob", "carol"]);
    // Every user sees the same list, the asker included.
    carol.wait_for_list(&["alice", "bob", "carol"]);
    // The alias and any case.
    bob.send("GET_CLIENT_LIST");
    bob.expect_exact("OK LIST 3 3");
    // `USER <name> <id>`: the id is the account's (carol registered first, then alice,
    // dave and bob).
    for line in ["USER alice 2", "USER bob 4", "USER carol 1"] {
        bob.expect_exact(line);
    }
    bob.send("list");
    bob.expect_exact("OK LIST 3 3");
    // `USER <name> <id>`: the id is the account's (carol registered first, then alice,
    // dave and bob).
    for line in ["USER alice 2", "USER bob 4", "USER carol 1"] {
        bob.expect_exact(line);
    }
    // Pages: from an offset, and past the end; the total is always given.
    bob.send("LIST 1");
    bob.expect_exact("OK LIST 2 3");
    bob.expect_exact("USER bob 4");
    bob.expect_exact("USER carol 1");
    bob.send("LIST 7");
    bob.expect_exact("OK LIST 0 3");
    bob.send("LIST x");
    bob.expect("ERR 400 BAD_REQUEST usage: LIST [offset]");
}

#[test]
fn info_returns_the_source_address_and_declared_port() {
    let server = Server::start();
    let mut alice = Wire::registered(server.addr, "alice", PW, 40001);
    let mut bob = Wire::connect_from(server.addr, OTHER_IP).named("bob from 127.0.0.2");
    bob.register("bob", PW, 40002);
    Wire::registered(server.addr, "carol", PW, 40003).quit();
    alice.wait_for_list(&["alice", "bob"]);

    alice.send("INFO bob");
    alice.expect_exact("OK INFO bob 127.0.0.2:40002 -");
    bob.send("INFO alice");
    bob.expect_exact("OK INFO alice 127.0.0.1:40001 -");
    // Lookup ignores case; the name is shown as registered. The alias works too.
    alice.send("INFO BOB");
    alice.expect_exact("OK INFO bob 127.0.0.2:40002 -");
    alice.send("get_client_info bob");
    alice.expect_exact("OK INFO bob 127.0.0.2:40002 -");
    // Registered but offline, and unknown.
    alice.send("INFO carol");
    alice.expect("ERR 404 NOT_ONLINE");
    alice.send("INFO nobody");
    alice.expect("ERR 404 NOT_ONLINE");
    // The connection is still usable after the errors.
    alice.ping();
}

#[test]
fn online_and_offline_events_reach_other_clients() {
    let server = Server::start();
    let mut alice = Wire::registered(server.addr, "alice", PW, 40001);
    let mut bob = Wire::registered(server.addr, "bob", PW, 40002);
    alice.expect_event("EVENT ONLINE bob");
    // bob gets no event about himself (alice may be named, if she came in the same
    // interval): nothing before the reply to PING names him.
    bob.send("PING");
    loop {
        let line = bob.next_line();
        if line == "OK PONG" {
            break;
        }
        assert!(
            line.starts_with("EVENT ONLINE ") && !line.split(' ').any(|w| w == "bob"),
            "{line:?}"
        );
    }

    let mut carol = Wire::registered(server.addr, "carol", PW, 40003);
    alice.expect_event("EVENT ONLINE carol");
    bob.expect_event("EVENT ONLINE carol");

    bob.quit();
    alice.expect_event("EVENT OFFLINE bob");
    carol.expect_event("EVENT OFFLINE bob");
}

#[test]
fn help_lists_its_lines() {
    let server = Server::start();
    let mut alice = Wire::registered(server.addr, "alice", PW, 40001);
    alice.send("HELP");
    let head = alice.expect("OK HELP");
    let n: usize = head["OK HELP".len()..].trim().parse().expect("OK HELP <n>");
    assert!(n > 0, "HELP should have some lines: {head:?}");
    for _ in 0..n {
        alice.next_line();
    }
    // Exactly n lines: the next line is the reply to the next command.
    alice.send("PING");
    assert_eq!(alice.next_line(), "OK PONG");
}

#[test]
fn clean_quit_leaves_the_list() {
    let server = Server::start();
    let mut alice = Wire::registered(server.addr, "alice", PW, 40001);
    let mut bob = Wire::registered(server.addr, "bob", PW, 40002);
    let mut carol = Wire::registered(server.addr, "carol", PW, 40003);
    alice.wait_for_list(&["alice", "bob", "carol"]);

    bob.send("QUIT");
    bob.expect_exact("OK BYE");
    bob.expect_closed();
    alice.wait_for_list(&["alice", "carol"]);
    alice.expect_event("EVENT OFFLINE bob");
    alice.send("INFO bob");
    alice.expect("ERR 404 NOT_ONLINE");

    // The alias does the same.
    carol.send("DISCONNECT_CLIENT");
    carol.expect_exact("OK BYE");
    carol.expect_closed();
    alice.wait_for_list(&["alice"]);
    alice.expect_event("EVENT OFFLINE carol");
}

#[test]
fn dropped_socket_leaves_the_list() {
    let server = Server::start();
    let mut alice = Wire::registered(server.addr, "alice", PW, 40001);
    let bob = Wire::registered(server.addr, "bob", PW, 40002);
    alice.wait_for_list(&["alice", "bob"]);

    drop(bob); // no QUIT: the socket just closes
    alice.wait_for_list(&["alice"]);
    alice.expect_event("EVENT OFFLINE bob");
}

#[test]
fn killed_client_process_leaves_the_list() {
    let server = Server::start();
    let mut alice = Wire::registered(server.addr, "alice", PW, 40001);
    let mut bob = Client::register(server.addr, "bob", "bob password", 0);
    alice.expect_event("EVENT ONLINE bob");
    alice.wait_for_list(&["alice", "bob"]);

    bob.kill_hard(); // SIGKILL
    alice.wait_for_list(&["alice"]);
    alice.expect_event("EVENT OFFLINE bob");
}
