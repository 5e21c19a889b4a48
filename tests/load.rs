//! A load test sized for CI on two cores: 300 logged-in raw clients, 50 chat sessions
//! at once (10 between real client processes, 40 between raw peers using the ticket
//! flow) and 20 file fetches at once between real clients. Nothing may be lost or
//! duplicated, every raw client keeps answering `PING` and `LIST` throughout, and the
//! server's `LIST` shows exactly who should be online at the end.
//!
//! Scale: the full sizes of the plan (300 / 50 / 20) run here in well under a minute on
//! a busy 2-core machine, so nothing is scaled down.

mod common;

use std::fs;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use tempfile::TempDir;

/// Raw clients logged in over `Wire`s; the first `2 * RAW_PAIRS` of them chat in pairs.
const RAW: usize = 300;
/// Chat sessions between raw peers (requester `r<2k>`, target `r<2k+1>`).
const RAW_PAIRS: usize = 40;
/// Chat sessions between real client processes (`c<2k>` asks `c<2k+1>`).
const REAL_PAIRS: usize = 10;
/// Real clients.
const REAL: usize = 2 * REAL_PAIRS;
/// The first `OWNERS` real clients share `FILES_PER_OWNER` files each; every real client
/// fetches one of them, so `REAL` fetches run at once.
const OWNERS: usize = 4;
const FILES_PER_OWNER: usize = 5;
/// Size of the shared files (a few MiB, not a multiple of the 1 MiB chunk).
const FILE_SIZE: usize = 5 * (1 << 20) + 12_345;
/// Chat lines each way in every session.
const LINES: usize = 250;
/// Threads that register the raw clients.
const REG_THREADS: usize = 6;
/// Threads that keep the idle raw clients busy with `PING` and `LIST`.
const CROWD_THREADS: usize = 4;
/// Rounds of `PING` each crowd thread makes at least (one `LIST` per client per 10).
const MIN_ROUNDS: usize = 10;
/// Bound for a fetch to finish while everything else runs.
const FETCH_BOUND: Duration = Duration::from_secs(90);

fn raw_name(i: usize) -> String {
    format!("r{i:03}")
}

fn real_name(i: usize) -> String {
    format!("c{i:02}")
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// Which file real client `f` fetches: (owner, file number). Fetch `j` goes to owner
/// `j % OWNERS`, file `j / OWNERS`, and is made by client `(j + 1) % REAL`, so nobody
/// fetches from themselves and every client fetches exactly once.
fn fetch_of(f: usize) -> (usize, usize) {
    let j = (f + REAL - 1) % REAL;
    (j % OWNERS, j / OWNERS)
}

fn file_name(owner: usize, file: usize) -> String {
    format!("o{owner}-f{file}.bin")
}

/// Deterministic file contents (SplitMix64).
fn file_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Sets a flag when dropped, so helper threads stop even when the test panics.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Accepts one connection on `listener` within `bound`.
fn accept_within(listener: &TcpListener, bound: Duration) -> TcpStream {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + bound;
    loop {
        match listener.accept() {
            Ok((stream, _)) => return stream,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                assert!(
                    Instant::now() < deadline,
                    "nobody connected to {:?} within {bound:?}",
                    listener.local_addr()
                );
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("accept failed: {e}"),
        }
    }
}

/// `PING` and forget the events read on the way (presence events pile up otherwise).
fn ping(w: &mut Wire) {
    w.ping();
    w.take_events();
}

/// `LIST` must show exactly `want`.
fn check_list(w: &mut Wire, want: &[String]) {
    let got = w.list();
    w.take_events();
    if got != want {
        let missing: Vec<&String> = want.iter().filter(|u| !got.contains(u)).collect();
        let extra: Vec<&String> = got.iter().filter(|u| !want.contains(u)).collect();
        w.fail(&format!(
            "LIST shows {} users, want {}; missing {missing:?}, extra {extra:?}",
            got.len(),
            want.len()
        ));
    }
}

/// The texts of the chat lines from `sender` in `client`'s stdout, in order.
fn chat_texts(client: &Client, sender: &str) -> Vec<String> {
    let prefix = format!("({sender}) ");
    let who = format!("{sender}: ");
    client
        .output()
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(&prefix).unwrap_or(line);
            let b = rest.as_bytes();
            if b.len() < 11 || b[0] != b'[' || b[9] != b']' || b[10] != b' ' {
                return None;
            }
            rest[11..].strip_prefix(&who).map(str::to_string)
        })
        .collect()
}

/// The end of the fetch of `name` from `owner` on `client`'s stdout, waited for up to
/// `bound`; must be `done, verified`.
fn expect_fetch_done(client: &mut Client, name: &str, owner: &str, bound: Duration) {
    let mid = format!("] fetch {name} from {owner}: ");
    let is_end = |l: &str| {
        l.starts_with("* [")
            && l.split_once(&mid).is_some_and(|(_, state)| {
                state != "started" && state != "connecting" && !state.starts_with('[')
            })
    };
    let deadline = Instant::now() + bound;
    loop {
        let out = client.output();
        if let Some(line) = out.lines().find(|l| is_end(l)) {
            let state = line.split_once(&mid).unwrap().1;
            if !state.starts_with("done, verified") {
                client.fail(&format!("the fetch of {name} ended with {state:?}"));
            }
            return;
        }
        if Instant::now() >= deadline {
            client.fail(&format!(
                "the fetch of {name} from {owner} did not end within {bound:?}"
            ));
        }
        client.output_for(Duration::from_millis(200));
    }
}

/// One raw chat session: `req` asks `tgt` (whose peer listener is `listener`) through
/// the server, the two talk `LINES` lines each way over the peer link, close, and report
/// the end. Returns the two server connections.
fn raw_pair(k: usize, mut req: Wire, mut tgt: Wire, listener: TcpListener) -> (Wire, Wire) {
    let (rname, tname) = (raw_name(2 * k), raw_name(2 * k + 1));
    req.send(&format!("CONNECT {tname}"));
    let line = req.expect("OK SESSION");
    let words: Vec<&str> = line.split(' ').collect();
    assert_eq!(words.len(), 8, "bad OK SESSION line {line:?}");
    assert_eq!(words[3], tname, "{line:?}");
    let id: u64 = words[2].parse().unwrap();
    let addr: SocketAddr = words[4].parse().unwrap();
    let ticket = words[5].to_string();
    expect_exact_event(
        &mut tgt,
        &format!("EVENT SESSION_REQUEST {id} {rname} {ticket} -"),
    );

    let hello = format!("HELLO peerchat 1 {rname} {id} {ticket}");
    let mut a = Wire::connect(addr).named(&format!("{rname} -> {tname} (peer)"));
    a.send(&hello);
    let mut b = Wire::from_accepted(
        accept_within(&listener, WAIT),
        &format!("{tname} <- {rname} (peer)"),
    );
    b.expect_exact(&hello);
    b.send("ACCEPT");
    tgt.send(&format!("SESSION_OPEN {id}"));
    tgt.expect_exact(&format!("OK SESSION_OPEN {id}"));
    a.expect_exact("ACCEPT");

    // Both sides write all their lines at once, then read the other's.
    let stamp = now_ms();
    let lines_of = |who: &str| -> Vec<String> {
        (0..LINES)
            .map(|i| format!("MSG {stamp} {who} line {i:03} of {LINES}"))
            .collect()
    };
    let (from_a, from_b) = (lines_of(&rname), lines_of(&tname));
    let joined = |lines: &[String]| lines.iter().map(|l| format!("{l}\n")).collect::<String>();
    a.send_bytes(joined(&from_a).as_bytes()).unwrap();
    b.send_bytes(joined(&from_b).as_bytes()).unwrap();
    for want in &from_a {
        b.expect_exact(want);
    }
    for want in &from_b {
        a.expect_exact(want);
    }
    // Nothing more than the lines (no duplicates): the next line is the close.
    a.send("CLOSE closed");
    b.expect_exact("CLOSE closed");
    drop(a);
    for w in [&mut req, &mut tgt] {
        w.send(&format!("SESSION_END {id} closed"));
        w.expect_exact(&format!("OK SESSION_END {id}"));
        ping(w);
    }
    (req, tgt)
}

/// The event `want`, exactly (other events are kept aside).
fn expect_exact_event(w: &mut Wire, want: &str) {
    let got = w.expect_event(want);
    if got != want {
        w.fail(&format!("expected the event {want:?}, got {got:?}"));
    }
}

/// One real pair: both clients start their fetch, then `c<2k>` opens a session with
/// `c<2k+1>`, they exchange `LINES` numbered lines each way, and both fetches must end
/// verified and byte-identical.
fn real_pair(k: usize, a: &mut Client, b: &mut Client, lab: &Lab, gate: &Gate) {
    let (an, bn) = (real_name(2 * k), real_name(2 * k + 1));
    gate.wait();
    for (c, f) in [(&mut *a, 2 * k), (&mut *b, 2 * k + 1)] {
        let (owner, file) = fetch_of(f);
        c.send(&format!(
            "\\fetch {} {}",
            real_name(owner),
            file_name(owner, file)
        ));
    }

    a.send(&format!("\\connect {bn}"));
    b.expect(&format!(
        "* {an} wants to chat: \\accept {an} or \\decline {an}"
    ));
    b.send(&format!("\\accept {an}"));
    b.expect(&format!("* session with {an} open"));
    a.expect(&format!("* session with {bn} open"));

    let from_a: Vec<String> = (0..LINES)
        .map(|i| format!("{an} line {i:03} of {LINES}"))
        .collect();
    let from_b: Vec<String> = (0..LINES)
        .map(|i| format!("{bn} line {i:03} of {LINES}"))
        .collect();
    a.send_all(&from_a);
    b.send_all(&from_b);
    b.expect_chat(None, &an, from_a.last().unwrap());
    a.expect_chat(None, &bn, from_b.last().unwrap());
    // A last exchange after everything, so nothing is still on its way when counting.
    a.send("over");
    b.expect_chat(None, &an, "over");
    b.send("over");
    a.expect_chat(None, &bn, "over");
    let mut want_a = from_a.clone();
    want_a.push("over".into());
    let mut want_b = from_b.clone();
    want_b.push("over".into());
    assert_eq!(chat_texts(b, &an), want_a, "{bn}'s view of {an}");
    assert_eq!(chat_texts(a, &bn), want_b, "{an}'s view of {bn}");

    for (c, f) in [(&mut *a, 2 * k), (&mut *b, 2 * k + 1)] {
        let (owner, file) = fetch_of(f);
        let name = file_name(owner, file);
        expect_fetch_done(c, &name, &real_name(owner), FETCH_BOUND);
        let got = fs::read(lab.downloads(&real_name(f)).join(&name)).unwrap();
        let want = fs::read(lab.share(owner).join(&name)).unwrap();
        assert!(
            got == want,
            "{} fetched {name} from {}: {} bytes, not identical to the {} shared",
            real_name(f),
            real_name(owner),
            got.len(),
            want.len()
        );
    }
}

/// Folders of the real clients.
struct Lab {
    dir: TempDir,
}

impl Lab {
    fn data(&self, name: &str) -> PathBuf {
        self.dir.path().join(name).join("data")
    }

    fn downloads(&self, name: &str) -> PathBuf {
        self.data(name).join(name).join("downloads")
    }

    fn share(&self, owner: usize) -> PathBuf {
        self.dir.path().join(real_name(owner)).join("share")
    }

    fn start(&self, server: SocketAddr, i: usize) -> Client {
        let name = real_name(i);
        let data = self.data(&name);
        let share = self.share(i);
        let mut args = vec!["--data-dir", data.to_str().unwrap()];
        if i < OWNERS {
            args.extend_from_slice(&["--share", share.to_str().unwrap()]);
        }
        let mut c = Client::start_with(server, &name, &password(&name), true, &args);
        if i < OWNERS {
            c.expect(&format!("* sharing {FILES_PER_OWNER} file(s) from "));
        }
        c
    }
}

fn write_shares(lab: &Lab) {
    for owner in 0..OWNERS {
        let dir = lab.share(owner);
        fs::create_dir_all(&dir).unwrap();
        for file in 0..FILES_PER_OWNER {
            let seed = (owner * 100 + file) as u64;
            let bytes = file_bytes(seed, FILE_SIZE + file * 1000);
            fs::write(dir.join(file_name(owner, file)), bytes).unwrap();
        }
    }
}

#[test]
fn three_hundred_clients_fifty_sessions_and_twenty_fetches_at_once() {
    let started = Instant::now();
    let server = Server::start();
    let addr = server.addr;
    let lab = Lab {
        dir: TempDir::new().unwrap(),
    };
    write_shares(&lab);

    // Peer listeners for the raw targets, then all raw clients, registered in parallel.
    let mut listeners: Vec<Option<TcpListener>> = (0..RAW_PAIRS)
        .map(|_| Some(TcpListener::bind("127.0.0.1:0").unwrap()))
        .collect();
    let ports: Vec<u16> = (0..RAW)
        .map(|i| {
            if i < 2 * RAW_PAIRS && i % 2 == 1 {
                listeners[i / 2]
                    .as_ref()
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port()
            } else {
                20_000 + i as u16
            }
        })
        .collect();
    let mut raw: Vec<Option<Wire>> = (0..RAW).map(|_| None).collect();
    thread::scope(|s| {
        let handles: Vec<_> = (0..REG_THREADS)
            .map(|t| {
                let ports = &ports;
                s.spawn(move || {
                    (t..RAW)
                        .step_by(REG_THREADS)
                        .map(|i| {
                            let name = raw_name(i);
                            let mut w = Wire::registered(addr, &name, &password(&name), ports[i]);
                            w.take_events();
                            (i, w)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            for (i, w) in h.join().unwrap() {
                raw[i] = Some(w);
            }
        }
    });

    // The real clients, started four at a time.
    let mut real: Vec<Option<Client>> = (0..REAL).map(|_| None).collect();
    thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let lab = &lab;
                s.spawn(move || {
                    (t..REAL)
                        .step_by(4)
                        .map(|i| (i, lab.start(addr, i)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            for (i, c) in h.join().unwrap() {
                real[i] = Some(c);
            }
        }
    });
    let mut real: Vec<Client> = real.into_iter().map(Option::unwrap).collect();
    let mut everyone: Vec<String> = (0..RAW)
        .map(raw_name)
        .chain((0..REAL).map(real_name))
        .collect();
    everyone.sort();
    let setup = started.elapsed();

    // Everything at once: the crowd pings and lists, 40 raw and 10 real sessions chat,
    // 20 fetches run.
    let stop = AtomicBool::new(false);
    let gate = Gate::new(REAL_PAIRS);
    let mut crowd: Vec<Vec<Wire>> = (0..CROWD_THREADS).map(|_| Vec::new()).collect();
    for (i, w) in raw.iter_mut().enumerate().skip(2 * RAW_PAIRS) {
        crowd[i % CROWD_THREADS].push(w.take().unwrap());
    }
    let mut pair_wires = Vec::new();
    for k in 0..RAW_PAIRS {
        let req = raw[2 * k].take().unwrap();
        let tgt = raw[2 * k + 1].take().unwrap();
        pair_wires.push((k, req, tgt, listeners[k].take().unwrap()));
    }
    let (mut crowd_back, mut pairs_back, rounds) = thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        let crowd_handles: Vec<_> = crowd
            .drain(..)
            .map(|mut wires| {
                let (stop, everyone) = (&stop, &everyone);
                s.spawn(move || {
                    let mut rounds = 0usize;
                    while rounds < MIN_ROUNDS || !stop.load(Ordering::SeqCst) {
                        for (j, w) in wires.iter_mut().enumerate() {
                            ping(w);
                            if (j + rounds).is_multiple_of(10) {
                                check_list(w, everyone);
                            }
                            w.clear_transcript();
                        }
                        rounds += 1;
                    }
                    (wires, rounds)
                })
            })
            .collect();
        let pair_handles: Vec<_> = pair_wires
            .drain(..)
            .map(|(k, req, tgt, listener)| {
                let everyone = &everyone;
                s.spawn(move || {
                    let (mut req, mut tgt) = raw_pair(k, req, tgt, listener);
                    check_list(&mut req, everyone);
                    check_list(&mut tgt, everyone);
                    (req, tgt)
                })
            })
            .collect();
        let real_handles: Vec<_> = real
            .chunks_mut(2)
            .enumerate()
            .map(|(k, pair)| {
                let (a, b) = pair.split_at_mut(1);
                let (a, b) = (&mut a[0], &mut b[0]);
                let (lab, gate) = (&lab, &gate);
                s.spawn(move || real_pair(k, a, b, lab, gate))
            })
            .collect();

        let mut failure = None;
        let mut pairs_back = Vec::new();
        for h in pair_handles {
            match h.join() {
                Ok(wires) => pairs_back.push(wires),
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        for h in real_handles {
            if let Err(e) = h.join() {
                failure = failure.or(Some(e));
            }
        }
        stop.store(true, Ordering::SeqCst);
        let mut crowd_back = Vec::new();
        let mut rounds = Vec::new();
        for h in crowd_handles {
            match h.join() {
                Ok((wires, r)) => {
                    crowd_back.extend(wires);
                    rounds.push(r);
                }
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        if let Some(e) = failure {
            std::panic::resume_unwind(e);
        }
        (crowd_back, pairs_back, rounds)
    });
    let busy = started.elapsed() - setup;

    // After: every raw client answers, and LIST shows exactly everyone.
    assert_eq!(crowd_back.len() + 2 * pairs_back.len(), RAW);
    for w in crowd_back
        .iter_mut()
        .chain(pairs_back.iter_mut().flat_map(|(a, b)| [a, b]))
    {
        ping(w);
        check_list(w, &everyone);
    }
    // The session log holds the 50 sessions, each accepted once.
    let rows = db_sessions(&server.db_path());
    assert_eq!(rows.len(), RAW_PAIRS + REAL_PAIRS, "session log: {rows:#?}");
    for row in &rows {
        assert!(row.accepted_at_ms.is_some(), "not accepted: {row:?}");
    }
    // The real clients are all still there.
    for c in &mut real {
        assert!(c.is_running(), "a real client exited:\n{}", c.output());
    }
    eprintln!(
        "load: setup {setup:?}, sessions and fetches {busy:?}, total {:?}; crowd rounds {rounds:?}",
        started.elapsed()
    );
}
