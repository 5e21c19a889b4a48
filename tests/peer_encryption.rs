//! Peer links run Noise (protocol.md §10, issue 12), proven against real clients: a
//! forwarding proxy placed exactly where the server says a peer listens sees no chat
//! text and no file byte; a flipped byte breaks the link and nothing is accepted or
//! saved; a ticket seen on the wire is worthless to anyone else; an impostor at the
//! target's address cannot complete the handshake; a changed key is refused loudly
//! until `\trust`; safety numbers match on both sides and differ for other pairs.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use socket2::{Domain, Protocol, Socket, Type};

/// Where the watched client really listens, and where its server connection appears
/// to come from (so the server announces the proxy's address to peers).
const BOB_REAL: &str = "127.0.0.8";
const BOB_SEEN: &str = "127.0.0.9";

/// Bytes that went through a [`Tap`] each way, and a byte to flip.
#[derive(Default)]
struct Seen {
    up: Vec<u8>,
    down: Vec<u8>,
    flip: Option<usize>,
}

/// A forwarding proxy: listens at `addr`, connects to `target` (from `source` if
/// given), records every byte and, when armed, flips one byte going up.
struct Tap {
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
}

impl Tap {
    fn start(listen: SocketAddr, target: SocketAddr, source: Option<IpAddr>) -> Tap {
        let listener = TcpListener::bind(listen).unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let shared = Arc::clone(&seen);
        thread::spawn(move || {
            for _ in 0..32 {
                let Ok((inbound, _)) = listener.accept() else {
                    return;
                };
                let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
                if let Some(ip) = source {
                    socket.bind(&SocketAddr::new(ip, 0).into()).unwrap();
                }
                if socket.connect_timeout(&target.into(), WAIT).is_err() {
                    continue;
                }
                let outbound: TcpStream = socket.into();
                let pairs = [
                    (
                        inbound.try_clone().unwrap(),
                        outbound.try_clone().unwrap(),
                        true,
                    ),
                    (outbound, inbound, false),
                ];
                for (from, to, up) in pairs {
                    let seen = Arc::clone(&shared);
                    thread::spawn(move || pump(from, to, up, &seen));
                }
            }
        });
        Tap { addr, seen }
    }

    fn all(&self) -> Vec<u8> {
        let seen = self.seen.lock().unwrap();
        let mut all = seen.up.clone();
        all.extend_from_slice(&seen.down);
        all
    }

    fn up(&self) -> Vec<u8> {
        self.seen.lock().unwrap().up.clone()
    }

    /// Flips (xor 1) the byte `ahead` bytes past what has gone up so far.
    fn flip_up_ahead(&self, ahead: usize) {
        let mut seen = self.seen.lock().unwrap();
        seen.flip = Some(seen.up.len() + ahead);
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, up: bool, seen: &Mutex<Seen>) {
    let _ = from.set_read_timeout(Some(Duration::from_secs(60)));
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        {
            let mut seen = seen.lock().unwrap();
            let start = if up { seen.up.len() } else { seen.down.len() };
            if up
                && let Some(at) = seen.flip
                && at >= start
                && at < start + n
            {
                buf[at - start] ^= 0x01;
                seen.flip = None;
            }
            let log = if up { &mut seen.up } else { &mut seen.down };
            log.extend_from_slice(&buf[..n]);
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

/// bob, a real client listening on `BOB_REAL`, whom the server (through a forwarder that
/// connects from `BOB_SEEN`) announces at `BOB_SEEN`, where a [`Tap`] forwards to him.
/// Returns bob and the tap on his peer links; `share` is bob's shared folder, if any.
fn watched_bob(server: &Server, lab: &Lab, share: Option<&Path>) -> (Client, Tap, Tap) {
    let port = free_port();
    let real: IpAddr = BOB_REAL.parse().unwrap();
    let seen: IpAddr = BOB_SEEN.parse().unwrap();
    let to_server = Tap::start("127.0.0.1:0".parse().unwrap(), server.addr, Some(seen));
    let peer_tap = Tap::start(
        SocketAddr::new(seen, port),
        SocketAddr::new(real, port),
        None,
    );
    let data = lab.data_dir("bob");
    let fp = server.fingerprint();
    let port_text = port.to_string();
    let mut args = vec![
        "--data-dir",
        data.to_str().unwrap(),
        "--listen-addr",
        BOB_REAL,
        "--port",
        &port_text,
        "--server-fingerprint",
        &fp,
    ];
    let share_text;
    if let Some(dir) = share {
        share_text = dir.to_str().unwrap().to_string();
        args.extend_from_slice(&["--share", &share_text]);
    }
    let mut bob = Client::spawn(to_server.addr, &args).named("bob");
    bob.expect("Are you a new client? (Y/N): ");
    bob.send("y");
    bob.expect("Choose a username: ");
    bob.send("bob");
    bob.expect("Choose a password: ");
    bob.send(&password("bob"));
    bob.expect("Registered as bob.");
    bob.expect(&format!(
        "Welcome, bob. Peers reach you at {BOB_SEEN}:{port}."
    ));
    if share.is_some() {
        bob.expect_line("the sharing line", |l| l.starts_with("* sharing "));
    }
    (bob, peer_tap, to_server)
}

/// Waits (bounded) until `text` appears anywhere in `client`'s output.
fn wait_anywhere(client: &mut Client, text: &str) {
    let deadline = Instant::now() + WAIT;
    while !client.output().contains(text) {
        if Instant::now() >= deadline {
            client.fail(&format!("expected {text:?} somewhere on stdout"));
        }
        client.output_for(Duration::from_millis(100));
    }
}

/// Waits (bounded) until `path` holds exactly `want`.
fn wait_file(path: &Path, want: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while fs::read(path).ok().as_deref() != Some(want) {
        assert!(
            Instant::now() < deadline,
            "{} never held the expected bytes",
            path.display()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// `\send <path>` from `sender` (session with `receiver` active); the receiver accepts.
fn offer_and_accept(sender: &mut Client, sname: &str, receiver: &mut Client, path: &Path) {
    let name = path.file_name().unwrap().to_str().unwrap();
    sender.send(&format!("\\send {}", path.display()));
    let want = format!("{sname} offers {name} (");
    let line = receiver.expect_line("the offer", |l| l.contains(&want));
    let id = line
        .rsplit("\\accept ")
        .next()
        .and_then(|t| t.split(' ').next())
        .unwrap_or_else(|| receiver.fail(&format!("no offer number in {line:?}")))
        .to_string();
    receiver.send(&format!("\\accept {id}"));
}

/// File bytes no encryption would leave intact: a marker repeated.
fn marked_bytes(marker: &str, size: usize) -> Vec<u8> {
    marker
        .as_bytes()
        .iter()
        .copied()
        .cycle()
        .take(size)
        .collect()
}

#[test]
fn a_proxy_between_two_clients_sees_no_chat_text_and_no_file_byte() {
    let server = Server::start();
    let lab = Lab::new(&server);
    let share = lab.share_dir("bob");
    let served = marked_bytes("SERVED-FILE-MARKER-", 300_000);
    fs::write(share.join("served.bin"), &served).unwrap();
    let (mut bob, tap, _srv) = watched_bob(&server, &lab, Some(&share));
    let mut alice = lab.register("alice", &[]);

    open_session(&mut alice, "alice", &mut bob, "bob");
    alice.send("the secret plan is at noon");
    bob.expect_chat(None, "alice", "the secret plan is at noon");
    bob.send("understood, bring the blue folder");
    alice.expect_chat(None, "bob", "understood, bring the blue folder");

    // A push from alice to bob and a fetch by alice from bob's share: both data
    // connections go to bob's announced address, through the tap.
    let pushed = marked_bytes("PUSHED-FILE-MARKER-", 500_000);
    let source = lab.share_dir("alice").join("pushed.bin");
    fs::write(&source, &pushed).unwrap();
    offer_and_accept(&mut alice, "alice", &mut bob, &source);
    wait_file(&lab.downloads("bob").join("pushed.bin"), &pushed);
    alice.send("\\fetch bob served.bin");
    wait_file(&lab.downloads("alice").join("served.bin"), &served);

    let all = tap.all();
    assert!(
        all.len() > pushed.len() + served.len(),
        "the files did not go through the tap ({} bytes seen)",
        all.len()
    );
    for clear in [
        "the secret plan",
        "blue folder",
        "PUSHED-FILE-MARKER",
        "SERVED-FILE-MARKER",
        "pushed.bin",
        "served.bin",
        "HELLO",
        "ACCEPT",
        "MSG ",
        "CHUNK",
    ] {
        assert!(
            !contains_bytes(&all, clear.as_bytes()),
            "{clear:?} crossed the tap in clear"
        );
    }
}

#[test]
fn a_flipped_byte_on_a_chat_link_ends_it_and_the_line_never_shows() {
    let server = Server::start();
    let lab = Lab::new(&server);
    let (mut bob, tap, _srv) = watched_bob(&server, &lab, None);
    let mut alice = lab.register("alice", &[]);
    open_session(&mut alice, "alice", &mut bob, "bob");
    alice.send("an honest line first");
    bob.expect_chat(None, "alice", "an honest line first");

    // The next frame alice sends: its ciphertext (past the 2-byte length).
    tap.flip_up_ahead(20);
    alice.send("pay mallory 1000 euros");
    wait_anywhere(
        &mut bob,
        "* lost the connection to alice: what arrived failed the encryption check",
    );
    bob.output_for(Duration::from_millis(300));
    assert!(
        !bob.output().contains("mallory 1000") && !bob.output().contains("mallorz"),
        "a tampered line was shown:\n{}",
        bob.output()
    );
}

#[test]
fn a_flipped_byte_in_a_file_fails_the_transfer_and_nothing_is_saved() {
    let server = Server::start();
    let lab = Lab::new(&server);
    let (mut bob, tap, _srv) = watched_bob(&server, &lab, None);
    let mut alice = lab.register("alice", &[]);
    open_session(&mut alice, "alice", &mut bob, "bob");

    let data = marked_bytes("FILE-TO-TAMPER-", 2_000_000);
    let source = lab.share_dir("alice").join("tampered.bin");
    fs::write(&source, &data).unwrap();
    // Somewhere inside the file's bytes once the push starts (chat pings are tiny).
    tap.flip_up_ahead(700_000);
    offer_and_accept(&mut alice, "alice", &mut bob, &source);
    wait_anywhere(&mut bob, "failed");
    thread::sleep(Duration::from_millis(300));
    assert!(
        !lab.downloads("bob").join("tampered.bin").exists(),
        "a tampered file was saved"
    );
}

#[test]
fn a_ticket_seen_on_the_wire_is_useless_to_anyone_else() {
    let server = Server::start();
    let lab = Lab::new(&server);
    let (mut bob, tap, _srv) = watched_bob(&server, &lab, None);
    let mut alice = Wire::registered(server.addr, "alice", PW, free_port()).named("alice");

    // alice (raw) opens a session through the tap; the tap sees only ciphertext.
    alice.send("CONNECT bob");
    let grant = alice.expect("OK SESSION");
    let words: Vec<&str> = grant.split(' ').collect();
    let (id, ticket) = (words[2].to_string(), words[5].to_string());
    let mut link = Wire::peer(tap.addr, &ticket).named("alice via tap");
    link.send(&format!("HELLO peerchat 1 alice {id} {ticket}"));
    bob.expect("* alice wants to chat");
    let captured = tap.up();
    assert!(
        !contains_bytes(&captured, ticket.as_bytes()),
        "the ticket crossed in clear"
    );

    // Replaying what the tap captured (message 1 and everything after) straight to bob:
    // refused in clear, the ticket is spent, and bob is not asked again.
    let bob_real: SocketAddr = format!("{BOB_REAL}:{}", tap.addr.port()).parse().unwrap();
    let mut replay = TcpStream::connect(bob_real).unwrap();
    replay.set_read_timeout(Some(WAIT)).unwrap();
    let _ = replay.write_all(&captured);
    let mut answer = Vec::new();
    let _ = replay.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("ERR 421 BAD_TICKET"),
        "a replay got {answer:?}"
    );

    // A third party that saw a fresh ticket's id but not the ticket: it can send message
    // 1 with that id, but cannot finish: bob opens nothing.
    alice.send("CONNECT bob");
    let grant = alice.expect_one_of(&["OK SESSION", "ERR 434"]);
    if grant.starts_with("OK SESSION") {
        let ticket2 = grant.split(' ').nth(5).unwrap().to_string();
        let id_seen = peerchat::crypto::noise::ticket_id(&ticket2);
        let failed = third_party_handshake(bob_real, &id_seen);
        assert!(failed, "a handshake without the ticket completed");
    }
    bob.output_for(Duration::from_millis(500));
    assert_eq!(
        bob.output().matches("alice wants to chat").count(),
        1,
        "bob was asked again:\n{}",
        bob.output()
    );
    drop(link);
}

/// Runs an initiator that knows only a ticket's id (what a sniffer sees in message 1),
/// guessing the pre-shared key; true if bob ended the handshake.
fn third_party_handshake(addr: SocketAddr, id: &[u8; 16]) -> bool {
    let (private, _) = peerchat::crypto::noise::generate_keypair().unwrap();
    let mut hs = snow::Builder::new(peerchat::crypto::noise::PATTERN.parse().unwrap())
        .local_private_key(&private)
        .unwrap()
        .psk(3, &[7u8; 32])
        .unwrap()
        .prologue(b"peerchat peer link v1")
        .unwrap()
        .build_initiator()
        .unwrap();
    let mut sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut msg = vec![0u8; 65535];
    let n = hs.write_message(id, &mut msg).unwrap();
    sock.write_all(&(n as u16).to_be_bytes()).unwrap();
    sock.write_all(&msg[..n]).unwrap();
    let mut len = [0u8; 2];
    if sock.read_exact(&mut len).is_err() {
        return true;
    }
    let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
    if sock.read_exact(&mut body).is_err() {
        return true;
    }
    let mut payload = vec![0u8; 65535];
    if hs.read_message(&body, &mut payload).is_err() {
        return true;
    }
    let n = hs.write_message(&[], &mut msg).unwrap();
    let _ = sock.write_all(&(n as u16).to_be_bytes());
    let _ = sock.write_all(&msg[..n]);
    // Whatever bob does now, it cannot be an answer we can read: he closes.
    let mut rest = Vec::new();
    let _ = sock.read_to_end(&mut rest);
    rest.len() < 2 || {
        let mut t = hs.into_transport_mode().unwrap();
        let l = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        rest.len() < 2 + l || t.read_message(&rest[2..2 + l], &mut payload).is_err()
    }
}

#[test]
fn an_impostor_at_the_targets_address_cannot_complete_the_handshake() {
    let server = Server::start();
    let lab = Lab::new(&server);
    let mut alice = lab.register("alice", &[]);
    // bob (raw) is online and announces a port where an impostor listens, who does not
    // hold the ticket (it is never told it).
    let impostor = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = impostor.local_addr().unwrap().port();
    let mut bob = Wire::registered(server.addr, "bob", PW, port).named("bob");
    let handle = thread::spawn(move || {
        let (sock, _) = impostor.accept().unwrap();
        let (private, _) = peerchat::crypto::noise::generate_keypair().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        // It guesses a ticket: the handshake fails at message 3.
        peerchat::crypto::noise::respond(&sock, &private, deadline, |_| {
            Some("00000000000000000000000000000000".to_string())
        })
        .is_err()
    });
    alice.send("\\connect bob");
    bob.expect_event("EVENT SESSION_REQUEST");
    alice.expect("may not hold the ticket for bob; not opened");
    assert!(
        handle.join().unwrap(),
        "the impostor completed the handshake"
    );
    let pins = lab.data_dir("alice").join("alice").join("peer-keys");
    let pinned = fs::read_to_string(&pins).unwrap_or_default();
    assert!(
        !pinned.contains("bob"),
        "the impostor's key was pinned for bob: {pinned:?}"
    );
    alice.send("\\sessions");
    alice.expect("No sessions.");
}

#[test]
fn a_peer_whose_key_changed_is_refused_until_trusted() {
    let server = Server::start();
    let lab = Lab::new(&server);
    let mut alice = lab.register("alice", &[]);
    let mut bob = lab.register("bob", &[]);
    open_session(&mut alice, "alice", &mut bob, "bob");
    wait_anywhere(&mut alice, "* first contact with bob: key fingerprint ");
    alice.send("\\close");
    alice.expect("* session with bob closed");

    // bob moves to a new device: a new key (registered with the server at login).
    let mut watcher = Wire::registered(server.addr, "carol", "carol password", free_port());
    let old_key = key_of(&mut watcher, "bob");
    bob.send("\\quit");
    bob.wait_exit();
    fs::remove_file(lab.data_dir("bob").join("bob").join("identity.key")).unwrap();
    let mut bob = lab.login("bob", &[]);
    // The client registers its key just after its login: wait until the server names
    // the new one (a grant made in between would carry the old key, 444 KEY_MISMATCH).
    let deadline = Instant::now() + Duration::from_secs(10);
    while [old_key.as_str(), "-"].contains(&key_of(&mut watcher, "bob").as_str()) {
        assert!(
            Instant::now() < deadline,
            "the server never got bob's new key"
        );
        thread::sleep(Duration::from_millis(50));
    }

    alice.send("\\connect bob");
    alice.expect("WARNING: bob's identity key has CHANGED");
    alice.expect("\\trust bob");
    bob.output_for(Duration::from_millis(500));
    assert!(
        !bob.output().contains("alice wants to chat"),
        "bob was asked although alice refused his key:\n{}",
        bob.output()
    );
    alice.send("\\verify bob");
    alice.expect("NEW key");
    alice.send("\\trust bob");
    alice.expect("* bob's new key");
    open_session(&mut alice, "alice", &mut bob, "bob");
    alice.send("hello again");
    bob.expect_chat(None, "alice", "hello again");
}

/// The key the server names for `user` (the last field of `OK INFO`), `-` when offline
/// or unknown.
fn key_of(wire: &mut Wire, user: &str) -> String {
    wire.send(&format!("INFO {user}"));
    let reply = wire.next_reply();
    match reply.strip_prefix("OK INFO ") {
        Some(rest) => rest.split(' ').nth(2).unwrap_or("-").to_string(),
        None => "-".to_string(),
    }
}

/// The 60 digits `\verify <peer>` shows.
fn safety_number(client: &mut Client, peer: &str) -> String {
    client.send(&format!("\\verify {peer}"));
    let prefix = format!("* safety number with {peer}: ");
    let line = client.expect_line("a safety number", |l| l.starts_with(&prefix));
    let number = line[prefix.len()..].to_string();
    assert_eq!(number.split(' ').count(), 12, "{line:?}");
    number
}

#[test]
fn safety_numbers_match_on_both_sides_and_differ_for_another_pair() {
    let server = Server::start();
    let lab = Lab::new(&server);
    let mut alice = lab.register("alice", &[]);
    let mut bob = lab.register("bob", &[]);
    let mut carol = lab.register("carol", &[]);
    open_session(&mut alice, "alice", &mut bob, "bob");
    open_session(&mut carol, "carol", &mut alice, "alice");
    let ab = safety_number(&mut alice, "bob");
    let ba = safety_number(&mut bob, "alice");
    assert_eq!(ab, ba, "alice and bob see different numbers");
    let ac = safety_number(&mut alice, "carol");
    let ca = safety_number(&mut carol, "alice");
    assert_eq!(ac, ca);
    assert_ne!(ab, ac, "two pairs share a safety number");
    // Nobody met yet: said plainly.
    bob.send("\\verify carol");
    bob.expect("error: no key known for carol yet");
}
