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

/// Starts the real client with exactly `args` (no fingerprint added by the harness) and
/// returns its exit status and everything it printed.
fn run_client_plain(server: &Server, args: &[&str], stdin: &str) -> (i32, String) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_peerchat-client"))
        .arg("--server")
        .arg(server.addr.to_string())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    let deadline = std::time::Instant::now() + WAIT;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the client did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn a_client_in_a_pipe_without_a_fingerprint_refuses_an_unknown_server_and_says_what_to_do() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let (code, text) = run_client_plain(&server, &["--data-dir", data, "--port", "0"], "y\n");
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(&server.fingerprint()),
        "shows the fingerprint: {text}"
    );
    assert!(
        text.contains("--server-fingerprint"),
        "says what to do: {text}"
    );
    assert!(
        !text.contains("Are you a new client"),
        "no login over an untrusted link"
    );
    assert!(
        !dir.path().join("server-pins").exists(),
        "nothing was pinned"
    );
}

#[test]
fn a_wrong_fingerprint_given_to_the_client_is_refused() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let wrong = fingerprint(b"someone else");
    let (code, text) = run_client_plain(
        &server,
        &[
            "--data-dir",
            data,
            "--port",
            "0",
            "--server-fingerprint",
            &wrong,
        ],
        "y\n",
    );
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("not the"), "{text}");
    assert!(!text.contains("Are you a new client"), "{text}");
}

#[test]
fn a_changed_server_certificate_is_refused_loudly_with_what_to_do() {
    let mut server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    // First contact: trusted on first use and pinned.
    let (code, text) = run_client_plain(
        &server,
        &["--data-dir", data, "--port", "0", "--trust-first-use"],
        "y\nalice\ncorrect horse\n",
    );
    assert_eq!(code, 0, "{text}");
    let pins = std::fs::read_to_string(dir.path().join("server-pins")).unwrap();
    assert!(pins.contains(&server.fingerprint()), "{pins}");
    // The server comes back at the same address with another certificate.
    server.stop();
    let db = server.db_path();
    std::fs::remove_file(db.with_file_name("server-cert.pem")).unwrap();
    std::fs::remove_file(db.with_file_name("server-key.pem")).unwrap();
    let server = server.restart_same_addr();
    let (code, text) = run_client_plain(
        &server,
        &["--data-dir", data, "--port", "0", "--trust-first-use"],
        "n\nalice\ncorrect horse\n",
    );
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("CERTIFICATE HAS CHANGED"), "{text}");
    assert!(
        text.contains("server-pins"),
        "says where the pin is: {text}"
    );
    assert!(
        text.contains(&server.fingerprint()),
        "shows the new one: {text}"
    );
    assert!(!text.contains("Password"), "nothing was sent: {text}");
}
