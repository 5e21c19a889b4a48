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

// ---- The Noise layer for peer links (crypto::noise), over real sockets through the
// proxy. Not yet wired into the client: these prove the building block. ----

use peerchat::crypto::noise;
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

/// The responder's thread: what it read after the handshake, or why it failed.
type Responder = std::thread::JoinHandle<Result<Vec<u8>, String>>;

/// A responder on its own thread that knows `ticket`; returns what it read after the
/// handshake, or the handshake's error.
fn noise_responder(ticket: &'static str) -> (std::net::SocketAddr, Responder, [u8; 32]) {
    let (private, public) = noise::generate_keypair().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        let (sock, _) = listener.accept().map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(5);
        let (mut h, _) = noise::respond(&sock, &private, deadline, |id| {
            (*id == noise::ticket_id(ticket)).then(|| ticket.to_string())
        })
        .map_err(|e| e.to_string())?;
        let mut got = Vec::new();
        h.reader.read_to_end(&mut got).map_err(|e| e.to_string())?;
        Ok(got)
    });
    (addr, handle, public)
}

#[test]
fn noise_a_sniffer_sees_neither_the_ticket_nor_the_bytes_and_cannot_reuse_what_it_saw() {
    const TICKET: &str = "6f1c0d3e9a2b4c5d8e7f60718293a4b5";
    let (addr, responder, bob_key) = noise_responder(TICKET);
    let proxy = Proxy::start(addr);
    let (alice, _) = noise::generate_keypair().unwrap();
    let sock = TcpStream::connect(proxy.addr).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut h = noise::initiate(&sock, &alice, TICKET, Some(&bob_key), deadline).unwrap();
    h.writer.write_all(b"MSG 1 the secret chat line\n").unwrap();
    drop(h);
    sock.shutdown(std::net::Shutdown::Both).unwrap();
    assert_eq!(
        responder.join().unwrap().unwrap(),
        b"MSG 1 the secret chat line\n"
    );
    let up = proxy.seen(Dir::Up);
    assert!(
        !contains_bytes(&up, TICKET.as_bytes()),
        "the ticket crossed in clear"
    );
    assert!(
        !contains_bytes(&up, b"secret chat line"),
        "the line crossed in clear"
    );

    // Replaying the captured first message (all a sniffer has) to a fresh responder
    // for the same ticket gets nowhere: the handshake needs the ticket itself.
    let (addr2, responder2, _) = noise_responder(TICKET);
    let mut replay = TcpStream::connect(addr2).unwrap();
    let first_len = 2 + usize::from(u16::from_be_bytes([up[0], up[1]]));
    let _ = replay.write_all(&up[..first_len]);
    let third = &up[first_len..];
    let _ = replay.write_all(third);
    drop(replay);
    assert!(
        responder2.join().unwrap().is_err(),
        "a replay completed the handshake"
    );
}

#[test]
fn noise_an_impostor_without_the_ticket_cannot_complete_and_a_changed_byte_fails() {
    const TICKET: &str = "00112233445566778899aabbccddeeff";
    // An impostor at the target's address that does not hold the ticket.
    let (imp_private, _) = noise::generate_keypair().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let impostor = std::thread::spawn(move || {
        let (sock, _) = listener.accept().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        // It guesses: any ticket it makes up.
        noise::respond(&sock, &imp_private, deadline, |_| Some("a guess".into())).map(|_| ())
    });
    let (alice, _) = noise::generate_keypair().unwrap();
    let sock = TcpStream::connect(addr).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    // Told the real target's key, the requester refuses the impostor's at once.
    let (_, real_key) = noise::generate_keypair().unwrap();
    assert!(noise::initiate(&sock, &alice, TICKET, Some(&real_key), deadline).is_err());
    drop(sock);
    let _ = impostor.join();
    // Even not told any key, the impostor's handshake fails without the ticket.
    let (imp2_private, _) = noise::generate_keypair().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let impostor = std::thread::spawn(move || {
        let (sock, _) = listener.accept().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        noise::respond(&sock, &imp2_private, deadline, |_| Some("a guess".into())).map(|_| ())
    });
    let sock = TcpStream::connect(addr).unwrap();
    let _ = noise::initiate(&sock, &alice, TICKET, None, deadline);
    assert!(
        impostor.join().unwrap().is_err(),
        "the impostor finished the handshake"
    );

    // A changed byte in a transport message fails the link; nothing is delivered.
    let (addr, responder, bob_key) = noise_responder(TICKET);
    let proxy = Proxy::start(addr);
    let sock = TcpStream::connect(proxy.addr).unwrap();
    let mut h = noise::initiate(&sock, &alice, TICKET, Some(&bob_key), deadline).unwrap();
    proxy.flip_ahead(Dir::Up, 5);
    h.writer
        .write_all(b"FILE BYTES THAT MUST NOT LAND\n")
        .unwrap();
    drop(h);
    let _ = sock.shutdown(std::net::Shutdown::Both);
    assert!(
        responder.join().unwrap().is_err(),
        "a changed record was accepted"
    );
}

#[test]
fn safety_numbers_match_on_both_sides_and_differ_for_other_keys() {
    use peerchat::crypto::identity::safety_number;
    let (_, alice) = noise::generate_keypair().unwrap();
    let (_, bob) = noise::generate_keypair().unwrap();
    let (_, mallory) = noise::generate_keypair().unwrap();
    let seen_by_alice = safety_number(("alice", &alice), ("bob", &bob));
    let seen_by_bob = safety_number(("bob", &bob), ("alice", &alice));
    assert_eq!(seen_by_alice, seen_by_bob);
    assert_eq!(seen_by_alice.len(), 60 + 11, "12 groups of 5 digits");
    assert_ne!(
        seen_by_alice,
        safety_number(("alice", &alice), ("bob", &mallory))
    );
}

// ---- W6: the Noise Read/Write adapters carry the peer line protocol unchanged, and the
// test harness's Noise wires (Wire::peer / Wire::accepted_peer) ----

/// A 1 MiB chunk (the transfer chunk size) with a pattern that shows any misordering.
fn noise_chunk() -> Vec<u8> {
    (0..1024 * 1024u32).map(|i| (i % 251) as u8).collect()
}

#[test]
fn noise_a_line_reader_over_the_noise_reader_reads_lines_and_a_whole_chunk() {
    use peerchat::protocol::line::{LineReader, write_lines};
    const TICKET: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let side = std::thread::spawn(move || -> Result<(String, Vec<u8>), String> {
        let (sock, _) = listener.accept().map_err(|e| e.to_string())?;
        let (private, _) = noise::generate_keypair().map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let (h, ticket) = noise::respond(&sock, &private, deadline, |id| {
            (*id == noise::ticket_id(TICKET)).then(|| TICKET.to_string())
        })
        .map_err(|e| e.to_string())?;
        assert_eq!(ticket, TICKET);
        let mut writer = h.writer;
        let mut lines = LineReader::new(h.reader, 4096);
        let line = lines
            .read_line_by(Instant::now() + Duration::from_secs(10))
            .map_err(|e| format!("{e:?}"))?
            .ok_or("closed before the line")?;
        let mut chunk = vec![0u8; 1024 * 1024];
        lines.read_exact(&mut chunk).map_err(|e| e.to_string())?;
        write_lines(&mut writer, "OK got it\n").map_err(|e| e.to_string())?;
        Ok((line, chunk))
    });
    let mut wire = Wire::peer(addr, TICKET);
    wire.send("PUSH alice 1 file.bin 1048576");
    wire.send_bytes(&noise_chunk()).unwrap();
    wire.expect_exact("OK got it");
    let (line, chunk) = side.join().unwrap().unwrap();
    assert_eq!(line, "PUSH alice 1 file.bin 1048576");
    assert!(chunk == noise_chunk(), "the chunk arrived changed");
}

#[test]
fn noise_an_accepted_peer_wire_talks_to_a_noise_initiator() {
    use peerchat::protocol::line::{LineReader, write_lines};
    const TICKET: &str = "ffeeddccbbaa99887766554433221100";
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let side = std::thread::spawn(move || -> Result<String, String> {
        let sock = TcpStream::connect(addr).map_err(|e| e.to_string())?;
        let (private, _) = noise::generate_keypair().map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let h =
            noise::initiate(&sock, &private, TICKET, None, deadline).map_err(|e| e.to_string())?;
        let mut writer = h.writer;
        write_lines(&mut writer, "HELLO alice 1 tkt\n").map_err(|e| e.to_string())?;
        let mut lines = LineReader::new(h.reader, 4096);
        lines
            .read_line_by(Instant::now() + Duration::from_secs(10))
            .map_err(|e| format!("{e:?}"))?
            .ok_or_else(|| "closed".to_string())
    });
    let (sock, _) = listener.accept().unwrap();
    let mut wire = Wire::accepted_peer(sock, TICKET, "bob");
    wire.expect_exact("HELLO alice 1 tkt");
    wire.send("ACCEPT 00");
    assert_eq!(side.join().unwrap().unwrap(), "ACCEPT 00");
}

#[test]
fn noise_a_peer_wire_with_another_ticket_does_not_get_through() {
    let (addr, responder, _) = noise_responder("11112222333344445555666677778888");
    let got = Wire::try_peer(addr, "99990000aaaabbbbccccddddeeeeffff");
    // The initiator may finish its last message before the responder refuses; either
    // way nothing it sends is accepted.
    if let Ok(mut wire) = got {
        let _ = wire.send_bytes(b"MSG 1 hi\n");
    }
    assert!(
        responder.join().unwrap().is_err(),
        "a responder accepted another ticket"
    );
}
