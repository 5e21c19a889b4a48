//! The terminal client: the real `peerchat-client` binary driven through stdin/stdout
//! pipes against the real server. Prompts have no trailing newline, so output is matched
//! as a byte stream (see `Client::expect`).

mod common;

use std::thread;
use std::time::Duration;

use common::*;

#[test]
fn client_registers_lists_quits_and_logs_in_again() {
    let server = Server::start();
    let port = free_port();
    let mut alice = Client::spawn(server.addr, &["--port", &port.to_string()]).named("alice");
    alice.expect("Are you a new client? (Y/N): ");
    alice.send("y");
    alice.expect("Choose a username: ");
    alice.send("alice");
    alice.expect("Choose a password: ");
    alice.send("alice password");
    alice.expect("Registered as alice.");
    alice.expect(&format!(
        "Welcome, alice. Peers reach you at 127.0.0.1:{port}. Type \\help for commands."
    ));
    alice.send("\\list");
    alice.expect("Online users (1):\n  #1 alice (you)\n");
    alice.send("\\quit");
    alice.expect("Bye.");
    let status = alice.wait_exit();
    assert!(status.success(), "exit status after \\quit: {status}");
    assert!(
        !alice.output().contains("alice password"),
        "the password was printed:\n{}",
        alice.output()
    );

    // Again, as a returning user, and without --port: Enter picks a free port.
    let mut again = Client::spawn(server.addr, &[]).named("alice again");
    again.expect("Are you a new client? (Y/N): ");
    again.send("n");
    again.expect("Username: ");
    again.send("alice");
    again.expect("Password: ");
    again.send("alice password");
    again.expect("Logged in as alice.");
    again.expect("Listening port for peer connections (Enter for any free port): ");
    again.send("");
    let chosen = again.expect_welcome("alice", 0);

    // The server knows the port the client chose.
    let mut observer = Wire::registered(server.addr, "observer", PW, 40000);
    observer.send("INFO alice");
    observer.expect(&format!("OK INFO alice 127.0.0.1:{chosen}"));

    again.send("\\q");
    again.expect("Bye.");
    assert!(again.wait_exit().success());
    observer.wait_for_list(&["observer"]);
}

#[test]
fn client_sees_others_come_and_go() {
    let server = Server::start();
    let mut bob = Client::register(server.addr, "bob", "bob password", 0);
    let mut alice = Client::register(server.addr, "alice", "alice password", 0);
    bob.expect("* alice is online");
    bob.send("\\list");
    bob.expect("Online users (2):\n  #2 alice\n  #1 bob (you)\n");
    alice.send("\\list");
    alice.expect("Online users (2):\n  #2 alice (you)\n  #1 bob\n");

    alice.send("\\quit");
    alice.expect("Bye.");
    assert!(alice.wait_exit().success());
    bob.expect("* alice went offline");
    bob.send("\\list");
    bob.expect("Online users (1):\n  #1 bob (you)\n");
}

#[test]
fn client_info_shows_the_declared_port_and_commands_have_aliases() {
    let server = Server::start();
    let alice_port = free_port();
    let _alice = Client::register(server.addr, "alice", "alice password", alice_port);
    let mut bob = Client::register(server.addr, "bob", "bob password", 0);

    bob.send("\\info alice");
    bob.expect(&format!("alice is online at 127.0.0.1:{alice_port}"));
    bob.send("\\GET_CLIENT_INFO alice");
    bob.expect(&format!("alice is online at 127.0.0.1:{alice_port}"));
    bob.send("\\info carol");
    bob.expect("error: carol is not online");

    for alias in ["\\l", "/list", "\\LIST", "\\GET_CLIENT_LIST"] {
        bob.send(alias);
        bob.expect("Online users (2):\n  #1 alice\n  #2 bob (you)\n");
    }
    bob.send("\\frob");
    bob.expect("error: unknown command \\frob; type \\help");

    bob.send("\\DISCONNECT_CLIENT");
    bob.expect("Bye.");
    assert!(bob.wait_exit().success());
}

#[test]
fn end_of_stdin_exits_cleanly_and_goes_offline() {
    let server = Server::start();
    let mut observer = Wire::registered(server.addr, "observer", PW, 40000);
    let mut alice = Client::register(server.addr, "alice", "alice password", 0);
    observer.expect_event("EVENT ONLINE alice");

    alice.close_stdin();
    alice.expect("Bye.");
    let status = alice.wait_exit();
    assert!(status.success(), "exit status at end of stdin: {status}");
    observer.wait_for_list(&["observer"]);
    observer.expect_event("EVENT OFFLINE alice");
}

#[test]
fn client_asks_again_when_the_name_is_taken() {
    let server = Server::start();
    let _alice = Wire::registered(server.addr, "alice", PW, 40001);

    let mut c = Client::spawn(server.addr, &["--port", "0"]).named("newcomer");
    c.expect("Are you a new client? (Y/N): ");
    c.send("Y");
    c.expect("Choose a username: ");
    c.send("alice");
    c.expect("error: the username alice is taken; choose another");
    c.expect("Choose a username: ");
    c.send("alice2");
    c.expect("Choose a password: ");
    c.send("alice2 password");
    c.expect("Registered as alice2.");
    c.expect_welcome("alice2", 0);
    c.send("\\list");
    c.expect("Online users (2):\n  #1 alice\n  #2 alice2 (you)\n");
}

#[test]
fn client_reports_a_lost_server_and_keeps_running() {
    let mut server = Server::start();
    let mut alice = Client::register(server.addr, "alice", "alice password", 0);

    server.kill(); // SIGKILL: no SHUTDOWN event, the connection just drops
    alice.expect("* lost the connection to the server");
    thread::sleep(Duration::from_secs(1));
    assert!(
        alice.is_running(),
        "the client exited after losing the server:\n{}",
        alice.output()
    );

    alice.close_stdin();
    alice.expect("Bye.");
    let status = alice.wait_exit();
    assert!(status.success(), "exit status at end of stdin: {status}");
}

#[test]
fn client_shows_the_server_shutdown() {
    let mut server = Server::start();
    let mut alice = Client::register(server.addr, "alice", "alice password", 0);

    server.interrupt();
    alice.expect("* server: the server is shutting down");
    assert_eq!(server.wait_exit().code(), Some(0));
    assert!(
        alice.is_running(),
        "the client should wait for the user:\n{}",
        alice.output()
    );

    alice.send("\\quit");
    alice.expect("Bye.");
    assert!(alice.wait_exit().success());
}

#[test]
fn client_exits_with_status_1_when_blocked_during_login() {
    let server = Server::start();
    Wire::registered(server.addr, "alice", PW, 40001).quit();
    let mut w = Wire::connect(server.addr).named("attacker");
    w.start_login();
    for wrong in ["wrong1", "wrong2"] {
        w.answer_login("alice", wrong);
        w.expect("ERR 401 AUTH_FAILED");
        w.expect("ASK USERNAME");
    }
    w.answer_login("alice", "wrong3");
    w.expect("ERR 403 BLOCKED");

    let mut c = Client::spawn(server.addr, &["--port", "0"]).named("alice, blocked");
    c.expect("Are you a new client? (Y/N): ");
    c.send("N");
    c.expect("Username: ");
    c.send("alice");
    c.expect("Password: ");
    c.send(PW);
    c.expect("error: ");
    let status = c.wait_exit();
    assert_eq!(
        status.code(),
        Some(1),
        "exit status when blocked:\n{}",
        c.output()
    );
    assert!(!c.output().contains("Logged in as"), "{}", c.output());
}
