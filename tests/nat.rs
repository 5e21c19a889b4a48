//! The connection ladder through real NAT, in network namespaces (run as root; skipped
//! with a clear message otherwise, or when `ip`/`iptables` are missing).
//!
//! Topology, all addresses inside the test's own namespaces (10.99.x.x), never outside:
//! a "public" namespace with a bridge at 10.99.0.1 runs `peerchat-server` (and its
//! in-process relay). Each client host is either public (10.99.0.1N on the bridge) or
//! behind its own NAT router (outer 10.99.0.2N, inner 10.99.N.1 ↔ host 10.99.N.2) that
//! masquerades outgoing traffic and drops inbound connections that are not replies.
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

fn server(lab: &Lab) -> NsServer {
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

/// Sends `path` from `sender` to `receiver` over their open session and waits until the
/// receiver has it, byte for byte; returns the route `\transfers` shows on the sender.
fn send_file(sender: &mut Client, receiver: &mut Client, rhome: &Path, path: &Path) {
    let name = path.file_name().unwrap().to_str().unwrap().to_string();
    sender.send(&format!("\\send {}", path.display()));
    let line = receiver.expect_line("an offer", |l| {
        l.starts_with("* [") && l.contains(&name) && l.contains("\\accept")
    });
    let id: String = line[3..line.find(']').unwrap()].to_string();
    receiver.send(&format!("\\accept {id}"));
    let saved = rhome.join("downloads").join(&name);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if fs::read(&saved).ok().as_deref() == Some(&fs::read(path).unwrap()[..]) {
            break;
        }
        assert!(Instant::now() < deadline, "{name} did not arrive intact");
        receiver.output_for(Duration::from_millis(200));
    }
}

#[test]
fn two_hosts_behind_two_nats_chat_and_send_files_both_ways_through_the_relay() {
    if skip("two_hosts_behind_two_nats...") {
        return;
    }
    let mut lab = Lab::new();
    let a = lab.host(1, true);
    let b = lab.host(2, true);
    let srv = server(&lab);
    let (mut alice, ahome) = client(&lab, &srv, &a, "alice");
    let (mut bob, bhome) = client(&lab, &srv, &b, "bob");
    alice.send("\\connect bob");
    // bob's announced address is his NAT's, which drops new inbound connections.
    alice.expect("cannot reach bob directly");
    bob.expect("* alice wants to chat");
    bob.send("\\accept alice");
    alice.expect("* session with bob open");
    alice.send("hello across two NATs");
    bob.expect_chat(None, "alice", "hello across two NATs");
    bob.send("and back again");
    alice.expect_chat(None, "bob", "and back again");
    alice.send("\\sessions");
    alice.expect("bob (active, relay)");
    bob.send("\\sessions");
    bob.expect("alice (active, relay)");
    let to_bob = pattern_file(&ahome, "to-bob.bin", 3 << 20, 5);
    send_file(&mut alice, &mut bob, &bhome, &to_bob);
    alice.send("\\transfers");
    alice.expect("to-bob.bin to bob (relay)");
    let to_alice = pattern_file(&bhome, "to-alice.bin", 2 << 20, 9);
    send_file(&mut bob, &mut alice, &ahome, &to_alice);
    bob.send("\\transfers");
    bob.expect("to-alice.bin to alice (relay)");
}

#[test]
fn two_public_hosts_connect_directly() {
    if skip("two_public_hosts_connect_directly") {
        return;
    }
    let mut lab = Lab::new();
    let a = lab.host(1, false);
    let b = lab.host(2, false);
    let srv = server(&lab);
    let (mut alice, ahome) = client(&lab, &srv, &a, "alice");
    let (mut bob, bhome) = client(&lab, &srv, &b, "bob");
    alice.send("\\connect bob");
    bob.expect("* alice wants to chat");
    bob.send("\\accept alice");
    alice.expect("* session with bob open");
    alice.send("hello, no NAT");
    bob.expect_chat(None, "alice", "hello, no NAT");
    alice.send("\\sessions");
    // A direct session carries no path mark (only relayed ones do).
    alice.expect("bob (active)\n");
    let to_bob = pattern_file(&ahome, "direct.bin", 3 << 20, 3);
    send_file(&mut alice, &mut bob, &bhome, &to_bob);
    alice.send("\\transfers");
    alice.expect("direct.bin to bob: ");
    assert!(!alice.output().contains("cannot reach bob directly"));
}

#[test]
fn behind_one_nat_the_natted_host_dials_out_directly_and_is_reached_through_the_relay() {
    if skip("behind_one_nat...") {
        return;
    }
    let mut lab = Lab::new();
    let a = lab.host(1, false);
    let b = lab.host(2, true);
    let srv = server(&lab);
    let (mut alice, _) = client(&lab, &srv, &a, "alice");
    let (mut bob, _) = client(&lab, &srv, &b, "bob");
    // bob (behind NAT) reaches public alice directly.
    bob.send("\\connect alice");
    alice.expect("* bob wants to chat");
    alice.send("\\accept bob");
    bob.expect("* session with alice open");
    bob.send("\\sessions");
    bob.expect("alice (active)\n");
    bob.send("\\close alice");
    alice.expect("bob closed the session");
    // alice cannot reach bob: relay (the reverse rung, bob dialling alice, is not built).
    alice.send("\\connect bob");
    let deadline = Instant::now() + Duration::from_secs(40);
    while !alice.output().contains("cannot reach bob directly") {
        assert!(Instant::now() < deadline, "{}", alice.output());
        alice.output_for(Duration::from_millis(200));
    }
    alice.expect("cannot reach bob directly");
    bob.expect("* alice wants to chat");
    bob.send("\\accept alice");
    alice.expect("* session with bob open");
    alice.send("through the relay");
    bob.expect_chat(None, "alice", "through the relay");
    alice.send("\\sessions");
    alice.expect("bob (active, relay)");
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
    let srv = server(&lab);
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
