//! The connection ladder through real NAT, in network namespaces (run as root; skipped
//! with a clear message otherwise, or when `ip`/`iptables` are missing).
//!
//! Topology, all addresses inside the test's own namespaces (10.99.x.x), never outside:
//! a "public" namespace with a bridge at 10.99.0.1 runs `peerchat-server` (and its
//! in-process relay). Each client host is either public (10.99.0.1N on the bridge) or
//! behind its own NAT router (outer 10.99.0.2N, inner 10.99.N.1 ↔ host 10.99.N.2) that
//! masquerades outgoing traffic and drops inbound connections that are not replies.
//! Each ladder case checks its path (direct, reverse, relay) on both clients and in the
//! server log, with chat both ways and a 50 MiB push and fetch verified by hash.
//! Every namespace is deleted when the test ends, passed or failed.

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;

static LABS: AtomicUsize = AtomicUsize::new(0);

/// Why this machine cannot run the namespace tests, if it cannot.
fn cannot_run() -> Option<String> {
    // SAFETY-free check of the effective uid through /proc.
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        == Some("0");
    if !root {
        return Some("not root".into());
    }
    for tool in ["ip", "iptables"] {
        let found = Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            return Some(format!(
                "`{tool}` is missing (.ci/run installs iproute2 and iptables)"
            ));
        }
    }
    None
}

fn skip(test: &str) -> bool {
    match cannot_run() {
        Some(why) => {
            eprintln!("SKIPPED {test}: network namespace tests need root, ip and iptables: {why}");
            true
        }
        None => false,
    }
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The namespaces of one test; deleted on drop.
struct Lab {
    prefix: String,
    spaces: Vec<String>,
    dir: tempfile::TempDir,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.spaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

impl Lab {
    fn new() -> Lab {
        let prefix = format!(
            "w5n{}x{}",
            std::process::id() % 100_000,
            LABS.fetch_add(1, Ordering::SeqCst)
        );
        let mut lab = Lab {
            prefix,
            spaces: Vec::new(),
            dir: tempfile::TempDir::new().unwrap(),
        };
        let public = lab.ns("pub");
        sh(&["ip", "-n", &public, "link", "add", "br0", "type", "bridge"]);
        sh(&[
            "ip",
            "-n",
            &public,
            "addr",
            "add",
            "10.99.0.1/24",
            "dev",
            "br0",
        ]);
        sh(&["ip", "-n", &public, "link", "set", "br0", "up"]);
        lab
    }

    fn ns(&mut self, name: &str) -> String {
        let full = format!("{}{name}", self.prefix);
        sh(&["ip", "netns", "add", &full]);
        self.spaces.push(full.clone());
        sh(&["ip", "-n", &full, "link", "set", "lo", "up"]);
        full
    }

    /// A veth from the public bridge into `ns` as `eth0` with `addr`.
    fn plug(&self, ns: &str, port: &str, addr: &str) {
        let public = format!("{}pub", self.prefix);
        sh(&[
            "ip", "-n", &public, "link", "add", port, "type", "veth", "peer", "name", "eth0",
            "netns", ns,
        ]);
        sh(&[
            "ip", "-n", &public, "link", "set", port, "master", "br0", "up",
        ]);
        sh(&["ip", "-n", ns, "addr", "add", addr, "dev", "eth0"]);
        sh(&["ip", "-n", ns, "link", "set", "eth0", "up"]);
    }

    /// A host numbered `n` (1 or 2): public, or behind a NAT router of its own.
    /// Returns its namespace.
    fn host(&mut self, n: u8, natted: bool) -> String {
        let host = self.ns(&format!("h{n}"));
        if !natted {
            self.plug(&host, &format!("p{n}"), &format!("10.99.0.1{n}/24"));
            return host;
        }
        let router = self.ns(&format!("r{n}"));
        self.plug(&router, &format!("p{n}"), &format!("10.99.0.2{n}/24"));
        sh(&[
            "ip", "-n", &router, "link", "add", "in0", "type", "veth", "peer", "name", "eth1",
            "netns", &host,
        ]);
        sh(&[
            "ip",
            "-n",
            &router,
            "addr",
            "add",
            &format!("10.99.{n}.1/24"),
            "dev",
            "in0",
        ]);
        sh(&["ip", "-n", &router, "link", "set", "in0", "up"]);
        sh(&[
            "ip",
            "-n",
            &host,
            "addr",
            "add",
            &format!("10.99.{n}.2/24"),
            "dev",
            "eth1",
        ]);
        sh(&["ip", "-n", &host, "link", "set", "eth1", "up"]);
        sh(&[
            "ip",
            "-n",
            &host,
            "route",
            "add",
            "default",
            "via",
            &format!("10.99.{n}.1"),
        ]);
        let x = |args: &[&str]| {
            let mut all = vec!["ip", "netns", "exec", &router];
            all.extend_from_slice(args);
            sh(&all);
        };
        x(&["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]);
        x(&[
            "iptables",
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-o",
            "eth0",
            "-j",
            "MASQUERADE",
        ]);
        x(&[
            "iptables",
            "-A",
            "FORWARD",
            "-i",
            "eth0",
            "-m",
            "conntrack",
            "--ctstate",
            "ESTABLISHED,RELATED",
            "-j",
            "ACCEPT",
        ]);
        x(&["iptables", "-A", "FORWARD", "-i", "eth0", "-j", "DROP"]);
        // The router itself answers nothing from outside either: no RST, just silence.
        x(&[
            "iptables",
            "-A",
            "INPUT",
            "-i",
            "eth0",
            "-m",
            "conntrack",
            "--ctstate",
            "ESTABLISHED,RELATED",
            "-j",
            "ACCEPT",
        ]);
        x(&["iptables", "-A", "INPUT", "-i", "eth0", "-j", "DROP"]);
        host
    }
}

/// `peerchat-server` in the lab's public namespace; killed on drop.
struct NsServer {
    child: Child,
    addr: String,
    fingerprint: String,
}

impl Drop for NsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn server(lab: &Lab, args: &[&str]) -> NsServer {
    let public = format!("{}pub", lab.prefix);
    let mut child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &public,
            env!("CARGO_BIN_EXE_peerchat-server"),
        ])
        .args(["--addr", "10.99.0.1:0", "--bcrypt-cost", "4", "--db"])
        .arg(lab.dir.path().join("server.db"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    for _ in 0..3 {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        lines.push(line.trim().to_string());
    }
    // Keep reading so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in out.lines() {});
    let addr = lines[0].strip_prefix("listening on ").unwrap().to_string();
    let fingerprint = lines[1].rsplit(' ').next().unwrap().to_string();
    assert!(
        lines[2].starts_with("relay listening on 10.99.0.1:"),
        "{lines:?}"
    );
    NsServer {
        child,
        addr,
        fingerprint,
    }
}

/// A client in namespace `ns` registering `name`, with its own data and share folders.
fn client(lab: &Lab, server: &NsServer, ns: &str, name: &str) -> (Client, PathBuf) {
    let home = lab.dir.path().join(name);
    let share = home.join("share");
    fs::create_dir_all(&share).unwrap();
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_peerchat-client")])
        .args([
            "--server",
            &server.addr,
            "--server-fingerprint",
            &server.fingerprint,
        ])
        .args(["--port", "0", "--data-dir"])
        .arg(home.join("data"))
        .arg("--share")
        .arg(&share)
        .arg("--downloads")
        .arg(home.join("downloads"));
    let mut c = Client::spawn_command(cmd).named(name);
    c.expect("Are you a new client? (Y/N): ");
    c.send("y");
    c.expect("Choose a username: ");
    c.send(name);
    c.expect("Choose a password: ");
    c.send(PW);
    c.expect(&format!("Welcome, {name}."));
    (c, home)
}

fn pattern_file(dir: &Path, name: &str, size: usize, seed: u8) -> PathBuf {
    let data: Vec<u8> = (0..size)
        .map(|i| ((i as u32).wrapping_mul(2_654_435_761) >> 13) as u8 ^ seed)
        .collect();
    let path = dir.join(name);
    fs::write(&path, data).unwrap();
    path
}

/// The BLAKE3 hash of the file at `path`, if it exists with `size` bytes.
fn hash_if_complete(path: &Path, size: u64) -> Option<blake3::Hash> {
    if fs::metadata(path).ok()?.len() != size {
        return None;
    }
    Some(blake3::hash(&fs::read(path).ok()?))
}

/// Waits (up to 50 s) until `saved` holds exactly the bytes of `source`, by hash.
fn wait_same(watch: &mut Client, source: &Path, saved: &Path) {
    let want = blake3::hash(&fs::read(source).unwrap());
    let size = fs::metadata(source).unwrap().len();
    let deadline = Instant::now() + Duration::from_secs(50);
    while hash_if_complete(saved, size) != Some(want) {
        assert!(
            Instant::now() < deadline,
            "{} did not arrive intact; output:\n{}",
            saved.display(),
            watch.output()
        );
        watch.output_for(Duration::from_millis(300));
    }
}

/// Sends `path` from `sender` to `receiver` over their open session and waits until the
/// receiver has it, verified by hash.
fn send_file(sender: &mut Client, receiver: &mut Client, rhome: &Path, path: &Path) {
    let name = path.file_name().unwrap().to_str().unwrap().to_string();
    sender.send(&format!("\\send {}", path.display()));
    let line = receiver.expect_line("an offer", |l| {
        l.starts_with("* [") && l.contains(&name) && l.contains("\\accept")
    });
    let id: String = line[3..line.find(']').unwrap()].to_string();
    receiver.send(&format!("\\accept {id}"));
    wait_same(receiver, path, &rhome.join("downloads").join(&name));
}

/// `peerchat-server sessions` on the lab's database.
fn server_log(lab: &Lab) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_peerchat-server"))
        .arg("sessions")
        .arg("--db")
        .arg(lab.dir.path().join("server.db"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const BIG: usize = 50 << 20;

/// alice (public or natted) asks bob (public or natted) for a session, chats both ways,
/// pushes a 50 MiB file to bob and fetches another 50 MiB from him; every connection
/// must take `path`, shown so on both clients and in the server's log.
fn ladder_case(alice_natted: bool, bob_natted: bool, path: &str) {
    let mut lab = Lab::new();
    let a = lab.host(1, alice_natted);
    let b = lab.host(2, bob_natted);
    let srv = server(&lab, &[]);
    // bob shares a file before he starts, so the server lists it for alice's fetch.
    let bshare = lab.dir.path().join("bob").join("share");
    fs::create_dir_all(&bshare).unwrap();
    let served = pattern_file(&bshare, "served.bin", BIG, 7);
    let (mut alice, ahome) = client(&lab, &srv, &a, "alice");
    let (mut bob, bhome) = client(&lab, &srv, &b, "bob");
    let started = Instant::now();
    alice.send("\\connect bob");
    bob.expect("* alice wants to chat");
    bob.send("\\accept alice");
    alice.expect("* session with bob open");
    eprintln!("{path}: session open after {:?}", started.elapsed());
    alice.send(&format!("hello over {path}"));
    bob.expect_chat(None, "alice", &format!("hello over {path}"));
    bob.send(&format!("and back over {path}"));
    alice.expect_chat(None, "bob", &format!("and back over {path}"));
    // Every session names its path in `\sessions`: direct, reverse or relay.
    let mark = |peer: &str| format!("{peer} (active, {path})");
    alice.send("\\sessions");
    alice.expect(&mark("bob"));
    bob.send("\\sessions");
    bob.expect(&mark("alice"));
    let route = |row: &str| format!("{row} ({path}): ");
    // Push: alice → bob.
    let to_bob = pattern_file(&ahome, "to-bob.bin", BIG, 5);
    let started = Instant::now();
    send_file(&mut alice, &mut bob, &bhome, &to_bob);
    eprintln!("{path}: 50 MiB pushed in {:?}", started.elapsed());
    // Fetch: bob → alice, alice asking again.
    let started = Instant::now();
    alice.send("\\fetch bob served.bin");
    wait_same(
        &mut alice,
        &served,
        &ahome.join("downloads").join("served.bin"),
    );
    eprintln!("{path}: 50 MiB fetched in {:?}", started.elapsed());
    alice.send("\\transfers");
    alice.expect(&route("send to-bob.bin to bob"));
    alice.expect(&route("fetch served.bin from bob"));
    bob.send("\\transfers");
    bob.expect(&route("receive to-bob.bin from alice"));
    bob.expect(&route("serve served.bin to alice"));
    // The server's log records the path of the session and of both transfers.
    let log = server_log(&lab);
    let session = log
        .lines()
        .find(|l| l.contains("alice") && l.contains("bob") && !l.contains(".bin"))
        .unwrap_or_else(|| panic!("no session row:\n{log}"));
    match path {
        "direct" => assert!(!session.contains("(via "), "{session}"),
        other => assert!(session.ends_with(&format!("(via {other})")), "{session}"),
    }
    let transfers: Vec<&str> = log.lines().filter(|l| l.contains(".bin")).collect();
    assert_eq!(transfers.len(), 2, "{log}");
    for row in transfers {
        let words: Vec<&str> = row.split_whitespace().collect();
        assert!(words.contains(&path), "{row}");
    }
}

#[test]
fn two_public_hosts_connect_directly_chat_and_move_50_mib_both_ways() {
    if skip("two_public_hosts_connect_directly...") {
        return;
    }
    ladder_case(false, false, "direct");
}

#[test]
fn a_public_host_reaches_a_natted_one_by_reverse_connection_chat_and_50_mib_both_ways() {
    if skip("a_public_host_reaches_a_natted_one_by_reverse...") {
        return;
    }
    ladder_case(false, true, "reverse");
}

#[test]
fn two_hosts_behind_two_nats_meet_at_the_relay_chat_and_50_mib_both_ways() {
    if skip("two_hosts_behind_two_nats_meet_at_the_relay...") {
        return;
    }
    ladder_case(true, true, "relay");
}

#[test]
fn a_natted_host_reaches_a_public_one_directly() {
    if skip("a_natted_host_reaches_a_public_one_directly") {
        return;
    }
    let mut lab = Lab::new();
    let a = lab.host(1, false);
    let b = lab.host(2, true);
    let srv = server(&lab, &[]);
    let (mut alice, _) = client(&lab, &srv, &a, "alice");
    let (mut bob, _) = client(&lab, &srv, &b, "bob");
    bob.send("\\connect alice");
    alice.expect("* bob wants to chat");
    alice.send("\\accept bob");
    bob.expect("* session with alice open");
    bob.send("\\sessions");
    bob.expect("alice (active, direct)\n");
    assert!(!bob.output().contains("cannot reach"), "{}", bob.output());
}

#[test]
fn a_full_relay_refuses_the_next_circuit_and_the_client_says_so() {
    if skip("a_full_relay_refuses_the_next_circuit...") {
        return;
    }
    let mut lab = Lab::new();
    let a = lab.host(1, true);
    let b = lab.host(2, true);
    let srv = server(&lab, &["--relay-max-circuits", "1"]);
    let (mut alice, ahome) = client(&lab, &srv, &a, "alice");
    let (mut bob, _) = client(&lab, &srv, &b, "bob");
    alice.send("\\connect bob");
    bob.expect("* alice wants to chat");
    bob.send("\\accept alice");
    alice.expect("* session with bob open");
    alice.send("\\sessions");
    alice.expect("bob (active, relay)");
    // The session holds the relay's only circuit: the file's data connection is refused.
    let file = pattern_file(&ahome, "one-too-many.bin", 1 << 20, 1);
    alice.send(&format!("\\send {}", file.display()));
    let line = bob.expect_line("an offer", |l| {
        l.starts_with("* [") && l.contains("\\accept")
    });
    let id: String = line[3..line.find(']').unwrap()].to_string();
    bob.send(&format!("\\accept {id}"));
    let deadline = Instant::now() + Duration::from_secs(40);
    while !alice.output().contains("520 RELAY_FULL") {
        assert!(Instant::now() < deadline, "{}", alice.output());
        alice.output_for(Duration::from_millis(300));
    }
    // The session itself goes on.
    alice.send("still here");
    bob.expect_chat(None, "alice", "still here");
}

/// What a capture on the relay's network sees of a relayed chat line: ciphertext only,
/// since peer links run Noise end to end through the relay (protocol.md §10, §13).
#[test]
fn a_capture_on_the_relay_sees_no_plaintext() {
    if skip("a_capture_on_the_relay_sees_no_plaintext") {
        return;
    }
    let mut lab = Lab::new();
    let a = lab.host(1, true);
    let b = lab.host(2, true);
    let srv = server(&lab, &[]);
    let pcap = lab.dir.path().join("relay.pcap");
    let public = format!("{}pub", lab.prefix);
    let mut dump = Command::new("ip")
        .args(["netns", "exec", &public, "tcpdump", "-i", "br0", "-U", "-w"])
        .arg(&pcap)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tcpdump");
    std::thread::sleep(Duration::from_millis(500));
    let (mut alice, _) = client(&lab, &srv, &a, "alice");
    let (mut bob, _) = client(&lab, &srv, &b, "bob");
    alice.send("\\connect bob");
    bob.expect("* alice wants to chat");
    bob.send("\\accept alice");
    alice.expect("* session with bob open");
    alice.send("zebra-quartz-marmalade");
    bob.expect_chat(None, "alice", "zebra-quartz-marmalade");
    std::thread::sleep(Duration::from_millis(500));
    let _ = dump.kill();
    let _ = dump.wait();
    let seen = fs::read(&pcap).unwrap();
    assert!(seen.len() > 1000, "the capture saw the traffic");
    let needle = b"zebra-quartz-marmalade";
    assert!(
        !seen.windows(needle.len()).any(|w| w == needle),
        "the relay's network saw the chat line in clear"
    );
}
