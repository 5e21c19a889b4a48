//! Encrypted, authenticated links (issue 12), proved against the real binaries through
//! forwarding proxies that sniff or change bytes.
//!
//! Server link: TLS 1.3 pinned to the certificate the server made on first start.

mod common;

use std::time::Duration;

use common::*;
use peerchat::crypto::tls::{Trust, fingerprint};

/// A password nobody else uses, to look for in captured bytes.
const SECRET: &str = "a very secret passphrase";

#[test]
fn a_sniffer_on_the_server_link_sees_no_password_name_or_line() {
    let server = Server::start();
    let proxy = Proxy::start(server.addr);
    let mut alice = Wire::connect_tls(proxy.addr, Trust::Pinned(server.fingerprint()));
    alice.register("alicesecretname", SECRET, 40001);
    alice.send("SEARCH findme-unique-text");
    alice.expect("OK SEARCH");
    alice.quit();
    let (up, down) = (proxy.seen(Dir::Up), proxy.seen(Dir::Down));
    assert!(
        up.len() > 200 && down.len() > 200,
        "bytes crossed the proxy"
    );
    for clear in [
        SECRET,
        "alicesecretname",
        "findme-unique-text",
        "HELLO peerchat",
        "ASK ",
        "OK ",
    ] {
        assert!(
            !contains_bytes(&up, clear.as_bytes()) && !contains_bytes(&down, clear.as_bytes()),
            "{clear:?} crossed the wire in clear"
        );
    }
}

#[test]
fn one_changed_byte_from_the_client_breaks_the_link_and_nothing_is_accepted() {
    let server = Server::start();
    let proxy = Proxy::start(server.addr);
    let mut w = Wire::connect_tls(proxy.addr, Trust::Pinned(server.fingerprint()));
    w.hello();
    // The next record from the client carries "Y"; its 10th byte is changed.
    proxy.flip_ahead(Dir::Up, 10);
    let _ = w.try_send("Y");
    let _ = w.try_send("mallory");
    let _ = w.try_send(PW);
    let _ = w.try_send("40001");
    w.expect_closed();
    // Nothing of it counted: no account was made.
    assert!(
        !db_users(&server.db_path())
            .iter()
            .any(|(n, _)| n == "mallory"),
        "an account was made over a tampered link"
    );
    assert!(
        server.log_text().contains("read failed"),
        "the server saw the bad record"
    );
    // The server still serves others.
    let mut ok = Wire::registered(server.addr, "alice", PW, 40002);
    ok.ping();
}

#[test]
fn one_changed_byte_from_the_server_breaks_the_link() {
    let server = Server::start();
    let proxy = Proxy::start(server.addr);
    let mut w = Wire::connect_tls(proxy.addr, Trust::Pinned(server.fingerprint()));
    w.register("alice", PW, 40001);
    proxy.flip_ahead(Dir::Down, 8);
    w.send("PING");
    match w.read_within(WAIT) {
        Got::Closed => {}
        Got::Line(line) => w.fail(&format!("a tampered record was accepted: {line:?}")),
        Got::TimedOut => w.fail("the tampered link neither failed nor answered"),
    }
}

#[test]
fn a_wrong_server_fingerprint_is_refused_before_any_line() {
    let server = Server::start();
    let wrong = fingerprint(b"not the server's certificate");
    let mut w = Wire::connect_tls(server.addr, Trust::Pinned(wrong));
    assert!(w.is_closed(), "the handshake went through with a wrong pin");
    match w.read_within(Duration::from_secs(2)) {
        Got::Line(line) => w.fail(&format!("read a line over an unverified link: {line:?}")),
        Got::Closed | Got::TimedOut => {}
    }
}

#[test]
fn the_server_keeps_its_certificate_across_restarts_with_a_private_key() {
    let mut server = Server::start();
    let first = server.fingerprint();
    let key = server.db_path().with_file_name("server-key.pem");
    let mode = std::fs::metadata(&key).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600,
        "the key file must be private"
    );
    server.stop();
    let again = server.restart();
    assert_eq!(again.fingerprint(), first);
}
