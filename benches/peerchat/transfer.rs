//! Group `transfer` (figure 1): encrypted push and fetch of large files between two
//! clients against a plain TCP copy of the same bytes in the same run, resume after an
//! interruption, and the prefix hash a resume costs.
//!
//! Owns the file helpers (random files, hashes, where a file was saved) and the
//! transfer runs; it must not start processes other than through `harness`.

use super::*;

/// Writes `size` pseudo-random bytes (incompressible; xorshift) and returns their BLAKE3.
pub(crate) fn write_random_file(path: &Path, size: u64, seed: u64) -> blake3::Hash {
    let mut file = File::create(path).expect("creating the test file");
    let mut buf = vec![0u8; MIB as usize];
    let mut x = seed | 1;
    let mut hasher = blake3::Hasher::new();
    let mut left = size;
    while left > 0 {
        for word in buf.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            word.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(MIB) as usize;
        file.write_all(&buf[..n]).expect("writing the test file");
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    hasher.finalize()
}

fn hash_file(path: &Path) -> blake3::Hash {
    let mut file = File::open(path).expect("opening a received file");
    let mut buf = vec![0u8; MIB as usize];
    let mut hasher = blake3::Hasher::new();
    loop {
        let n = file.read(&mut buf).expect("reading a received file");
        if n == 0 {
            return hasher.finalize();
        }
        hasher.update(&buf[..n]);
    }
}

/// `(saved as PATH[, resumed at X])` in a client's done line.
fn saved_path(line: &str) -> PathBuf {
    let start = line.find("(saved as ").expect("a saved-as path") + "(saved as ".len();
    let end = line.rfind(')').expect("a closing parenthesis");
    let inner = &line[start..end];
    let path = inner.split(", resumed at ").next().unwrap_or(inner);
    PathBuf::from(path)
}

/// Touches and frees `bytes` of memory right before a timed transfer. On this kind of
/// VM the guest hands free pages back to the host (virtio free page reporting), and
/// faulting them in again made writing 1 GiB cost anywhere from 0.3 to 2 s of system
/// time at random; the receiver of the next transfer (baseline or peerchat alike) now
/// gets pages the host already backs.
pub(crate) fn warm_pages(bytes: u64) {
    let ballast = vec![1u8; bytes as usize];
    std::hint::black_box(&ballast);
}

/// Checks a received file (size always, content when `hash` is given) and deletes it.
pub(crate) fn check_and_remove(path: &Path, size: u64, hash: Option<blake3::Hash>) {
    let len = fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .len();
    assert_eq!(len, size, "{} has the wrong size", path.display());
    if let Some(hash) = hash {
        assert_eq!(
            hash_file(path),
            hash,
            "{} differs from the source",
            path.display()
        );
    }
    fs::remove_file(path).expect("removing a received file");
}

/// The end line of transfer `head` (e.g. `fetch x.bin from alice`), not its start.
fn is_end_of(line: &str, head: &str) -> bool {
    line.contains(&format!("{head}: ")) && !line.ends_with(": started")
}

pub(crate) fn transfer_timeout(size: u64) -> Duration {
    Duration::from_secs(60 + size / (20 * MIB))
}

/// One plain TCP copy of `src` between two processes, `std::io::copy` on both ends (or a
/// `buffer`-sized read loop on the receiving end).
fn tcp_copy(bins: &Bins, dir: &Path, src: &Path, size: u64, buffer: Option<usize>) -> Moved {
    let dst = dir.join("copy.out");
    let mut cmd = role_cmd(bins, "copy-recv");
    cmd.env(FILE_ENV, &dst);
    if let Some(buffer) = buffer {
        cmd.env(BUF_ENV, buffer.to_string());
    }
    let recv = Proc::spawn("copy-recv", cmd, &dir.join("copy-recv.log"));
    let mut rc = 0;
    let (_, line) = recv.wait_for(&mut rc, "port ", SHORT);
    let port = line["port ".len()..].trim().to_string();
    let mut cmd = role_cmd(bins, "copy-send");
    cmd.env(FILE_ENV, src)
        .env(ADDR_ENV, format!("127.0.0.1:{port}"));
    let mut send = Proc::spawn("copy-send", cmd, &dir.join("copy-send.log"));
    let mut sc = 0;
    send.wait_for(&mut sc, "ready", SHORT);
    warm_pages(size + 512 * MIB);
    let t0 = Instant::now();
    send.send("go");
    let (t1, line) = recv.wait_for(&mut rc, "done ", transfer_timeout(size));
    let mut words = line.split_whitespace().skip(1);
    let copied: u64 = words
        .next()
        .and_then(|w| w.parse().ok())
        .expect("a byte count");
    let cpu_recv: f64 = words
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or(f64::NAN);
    assert_eq!(copied, size, "the baseline copy moved the wrong amount");
    let (_, line) = send.wait_for(&mut sc, "sent cpu ", SHORT);
    let cpu_send: f64 = line["sent cpu ".len()..].trim().parse().unwrap_or(f64::NAN);
    check_and_remove(&dst, size, None);
    send.finish(SHORT);
    recv.finish(SHORT);
    Moved {
        secs: (t1 - t0).as_secs_f64(),
        rss_send: 0,
        rss_recv: 0,
        cpu_send,
        cpu_recv,
    }
}

/// One transfer's time, and the peak RSS (KiB) and CPU seconds of the sending and
/// receiving processes.
pub(crate) struct Moved {
    pub(crate) secs: f64,
    rss_send: u64,
    rss_recv: u64,
    cpu_send: f64,
    cpu_recv: f64,
}

/// Fetches `name` from a fresh owner into a fresh fetcher: time from `\fetch` to the
/// fetcher's `done, verified`.
fn fetch_once(
    ctx: &Ctx,
    share: &Path,
    name: &str,
    size: u64,
    check: Option<blake3::Hash>,
) -> Moved {
    let (a, b) = (ctx.fresh("fa"), ctx.fresh("fb"));
    let owner = ctx.client(&a, Some(share));
    let mut fetcher = ctx.client(&b, None);
    let (mut co, mut cf) = (owner.cursor(), fetcher.cursor());
    warm_pages(size + 512 * MIB);
    let cpu0 = (cpu_secs(owner.pid()), cpu_secs(fetcher.pid()));
    let t0 = Instant::now();
    fetcher.send(&format!("\\fetch {a} {name}"));
    let head = format!("fetch {name} from {a}");
    let (t1, line) = fetcher.wait_line(&mut cf, &head, transfer_timeout(size), |l| {
        is_end_of(l, &head)
    });
    assert!(line.contains("done, verified"), "fetch failed: {line}");
    let serve = format!("serve {name} to {b}");
    let (_, line) = owner.wait_line(&mut co, &serve, SHORT, |l| is_end_of(l, &serve));
    assert!(line.contains("done, verified"), "serving failed: {line}");
    let moved = Moved {
        secs: (t1 - t0).as_secs_f64(),
        rss_send: owner.status("VmHWM"),
        rss_recv: fetcher.status("VmHWM"),
        cpu_send: cpu_secs(owner.pid()) - cpu0.0,
        cpu_recv: cpu_secs(fetcher.pid()) - cpu0.1,
    };
    check_and_remove(&saved_path_of(&fetcher, &head), size, check);
    owner.finish(SHORT);
    fetcher.finish(SHORT);
    moved
}

/// The saved path from the last end line of transfer `head`.
fn saved_path_of(client: &Proc, head: &str) -> PathBuf {
    let state = client
        .out
        .state
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let line = state
        .lines
        .iter()
        .rev()
        .map(|(_, l)| l)
        .find(|l| is_end_of(l, head) && l.contains("saved as"))
        .expect("a done line with a path");
    saved_path(line)
}

/// Pushes `path` in a chat session: time from the receiver's `\accept N` to its
/// `done, verified`.
pub(crate) fn push_once(
    ctx: &Ctx,
    path: &Path,
    name: &str,
    size: u64,
    check: Option<blake3::Hash>,
) -> Moved {
    let (a, b) = (ctx.fresh("pa"), ctx.fresh("pb"));
    let mut sender = ctx.client(&a, None);
    let mut receiver = ctx.client(&b, None);
    open_session(&mut sender, &mut receiver);
    let (mut cs, mut cr) = (sender.cursor(), receiver.cursor());
    sender.send(&format!("\\send {}", path.display()));
    let (_, offer) = receiver.wait_for(&mut cr, &format!("{a} offers {name} ("), SHORT);
    let id: u64 = offer
        .split("\\accept ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no offer id in {offer:?}"));
    warm_pages(size + 512 * MIB);
    let cpu0 = (cpu_secs(sender.pid()), cpu_secs(receiver.pid()));
    let t0 = Instant::now();
    receiver.send(&format!("\\accept {id}"));
    let head = format!("receive {name} from {a}");
    let (t1, line) = receiver.wait_line(&mut cr, &head, transfer_timeout(size), |l| {
        is_end_of(l, &head)
    });
    assert!(line.contains("done, verified"), "push failed: {line}");
    let send_head = format!("send {name} to {b}");
    let (_, line) = sender.wait_line(&mut cs, &send_head, SHORT, |l| is_end_of(l, &send_head));
    assert!(line.contains("done, verified"), "sending failed: {line}");
    let moved = Moved {
        secs: (t1 - t0).as_secs_f64(),
        rss_send: sender.status("VmHWM"),
        rss_recv: receiver.status("VmHWM"),
        cpu_send: cpu_secs(sender.pid()) - cpu0.0,
        cpu_recv: cpu_secs(receiver.pid()) - cpu0.1,
    };
    check_and_remove(&saved_path(&line_of(&receiver, &head)), size, check);
    sender.finish(SHORT);
    receiver.finish(SHORT);
    moved
}

fn line_of(client: &Proc, head: &str) -> String {
    let state = client
        .out
        .state
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    state
        .lines
        .iter()
        .rev()
        .map(|(_, l)| l.clone())
        .find(|l| is_end_of(l, head))
        .expect("an end line")
}

/// Seconds to read and BLAKE3-hash the first `bytes` of `path` in 1 MiB chunks, as a
/// sender checks a resume point.
fn time_prefix_hash(path: &Path, bytes: u64) -> f64 {
    let t = Instant::now();
    let mut file = File::open(path).expect("the shared file");
    let mut buf = vec![0u8; MIB as usize];
    let mut hashes = Vec::new();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(MIB) as usize;
        file.read_exact(&mut buf[..n])
            .expect("reading the shared file");
        hashes.push(blake3::hash(&buf[..n]));
        left -= n as u64;
    }
    assert!(hashes.len() as u64 * MIB >= bytes);
    t.elapsed().as_secs_f64()
}

/// Verified bytes a partial download holds: chunk hashes in its state file.
fn partial_verified(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "state"))
        .map(|e| {
            let text = fs::read_to_string(e.path()).unwrap_or_default();
            text.lines().count().saturating_sub(1) as u64 * MIB
        })
        .max()
        .unwrap_or(0)
}

fn partial_on_disk(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "part"))
        .filter_map(|e| e.metadata().ok().map(|m| m.len()))
        .max()
        .unwrap_or(0)
}

/// Starts a fetch, cancels it at about half (watching the partial file grow), fetches
/// again and times the second fetch. Returns (seconds, bytes resumed from).
fn resume_once(ctx: &Ctx, share: &Path, name: &str, size: u64) -> (f64, u64) {
    let (a, b) = (ctx.fresh("ra"), ctx.fresh("rb"));
    let owner = ctx.client(&a, Some(share));
    let mut fetcher = ctx.client(&b, None);
    let partial_dir = ctx
        .data_dir()
        .join(&b)
        .join("downloads")
        .join(".peerchat-partial");
    let mut cf = fetcher.cursor();
    let head = format!("fetch {name} from {a}");
    fetcher.send(&format!("\\fetch {a} {name}"));
    let (_, started) = fetcher.wait_for(&mut cf, &format!("{head}: started"), SHORT);
    let id = started
        .split('[')
        .nth(1)
        .and_then(|r| r.split(']').next())
        .unwrap_or_else(|| panic!("no transfer id in {started:?}"))
        .to_string();
    let deadline = Instant::now() + transfer_timeout(size);
    while partial_on_disk(&partial_dir) < size / 2 {
        assert!(
            Instant::now() < deadline,
            "the first fetch never reached half"
        );
        thread::sleep(Duration::from_millis(2));
    }
    fetcher.send(&format!("\\cancel {id}"));
    let (_, line) = fetcher.wait_line(&mut cf, &head, SHORT, |l| is_end_of(l, &head));
    assert!(
        line.contains("cancelled"),
        "expected a cancelled fetch: {line}"
    );
    let resumed = partial_verified(&partial_dir);
    warm_pages(size + 512 * MIB);
    let t0 = Instant::now();
    fetcher.send(&format!("\\fetch {a} {name}"));
    let (t1, line) = fetcher.wait_line(&mut cf, &head, transfer_timeout(size), |l| {
        is_end_of(l, &head)
    });
    assert!(
        line.contains("done, verified"),
        "resumed fetch failed: {line}"
    );
    assert!(
        line.contains("resumed at"),
        "the second fetch did not resume: {line}"
    );
    check_and_remove(&saved_path(&line), size, None);
    owner.finish(SHORT);
    fetcher.finish(SHORT);
    ((t1 - t0).as_secs_f64(), resumed)
}

/// Free bytes on the file system holding `path`.
fn free_bytes(path: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return 0;
    };
    // SAFETY: statvfs writes only into the zeroed struct we pass.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return 0;
        }
        st.f_bavail as u64 * st.f_frsize as u64
    }
}

/// The transfer figures' folder: in memory (`/dev/shm`) when it has room, so that disk
/// write-back of gigabytes of received data does not add its noise to both sides of
/// the ratio; on disk otherwise.
pub(crate) fn transfer_dir(largest: u64, report: &mut Report) -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && free_bytes(shm) > 4 * largest
        && let Ok(dir) = tempfile::Builder::new()
            .prefix("peerchat-bench-")
            .tempdir_in(shm)
    {
        return dir;
    }
    report.note(
        "transfer: files were written to disk (no room in /dev/shm); expect noise from write-back",
    );
    temp_dir()
}

pub(super) fn group_transfer(s: &Settings, bins: &Bins, report: &mut Report) {
    let tmp = transfer_dir(*s.sizes.iter().max().expect("a size"), report);
    println!("  files in {}", tmp.path().display());
    let dir = tmp.path().to_path_buf();
    let share = dir.join("share");
    fs::create_dir_all(&share).expect("a share folder");
    let (_server, addr) = start_server(bins, &dir, Some(4), &[]);
    let ctx = Ctx {
        bins,
        dir: dir.clone(),
        addr,
        next: Cell::new(0),
    };
    let mut fetch_medians = HashMap::new();
    for (i, &size) in s.sizes.iter().enumerate() {
        let label = size_label(size);
        let name = format!("bench-{}.bin", label.replace(' ', ""));
        let path = share.join(&name);
        let t = Instant::now();
        let hash = write_random_file(&path, size, 0x9e37_79b9_7f4a_7c15 + i as u64);
        println!(
            "  made {label} of random data in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        let (mut base, mut base_big) = (Vec::new(), Vec::new());
        let (mut fetch, mut push) = (Vec::new(), Vec::new());
        let (mut cpu_base, mut cpu_fetch, mut cpu_push) = (Vec::new(), Vec::new(), Vec::new());
        let (mut rss_fetch, mut rss_push) = ((0, 0), (0, 0));
        for run in 0..s.transfer_runs {
            // The first run of each kind also compares the received bytes with the source.
            let check = (run == 0).then_some(hash);
            let b = tcp_copy(bins, &dir, &path, size, None);
            let f = fetch_once(&ctx, &share, &name, size, check);
            let big = tcp_copy(bins, &dir, &path, size, Some(MIB as usize));
            let p = push_once(&ctx, &path, &name, size, check);
            println!("  {label} run {}:", run + 1);
            for (what, m) in [
                ("io::copy", &b),
                ("fetch", &f),
                ("1 MiB-read copy", &big),
                ("push", &p),
            ] {
                println!(
                    "    {what:>16}: {} ({}); CPU sender {:.2} s, receiver {:.2} s{}",
                    secs(m.secs),
                    rate(size, m.secs),
                    m.cpu_send,
                    m.cpu_recv,
                    if m.rss_send > 0 {
                        format!(
                            "; peak RSS sender {} receiver {}",
                            mib(m.rss_send),
                            mib(m.rss_recv)
                        )
                    } else {
                        String::new()
                    }
                );
            }
            base.push(b.secs);
            base_big.push(big.secs);
            fetch.push(f.secs);
            push.push(p.secs);
            for (cpu, m) in [
                (&mut cpu_base, &b),
                (&mut cpu_fetch, &f),
                (&mut cpu_push, &p),
            ] {
                cpu.push((m.cpu_send + m.cpu_recv) * (1024 * MIB) as f64 / size as f64);
            }
            rss_fetch = (rss_fetch.0.max(f.rss_send), rss_fetch.1.max(f.rss_recv));
            rss_push = (rss_push.0.max(p.rss_send), rss_push.1.max(p.rss_recv));
        }
        let b = median(&base);
        let big = median(&base_big);
        let baseline = format!(
            "io::copy {} ({}); 1 MiB reads {} ({})",
            secs(b),
            rate(size, b),
            secs(big),
            rate(size, big)
        );
        for (what, times) in [("fetch", &fetch), ("push", &push)] {
            let m = median(times);
            let ratio = b / m;
            report.add(
                "1 transfer",
                format!("{what} {label}"),
                format!("{} ({})", secs(m), rate(size, m)),
                baseline.clone(),
                format!("{ratio:.2} ({:.2} vs 1 MiB reads)", big / m),
                format!("≥ 0.85: {}", verdict(ratio >= 0.85)),
            );
        }
        report.add(
            "1 transfer",
            format!("CPU s per GiB, sender + receiver, {label}"),
            format!(
                "fetch {:.2} s, push {:.2} s",
                median(&cpu_fetch),
                median(&cpu_push)
            ),
            format!("io::copy {:.2} s", median(&cpu_base)),
            "-",
            "-",
        );
        fetch_medians.insert(size, median(&fetch));
        for (what, (send, recv)) in [
            ("fetch (owner / fetcher)", rss_fetch),
            ("push (sender / receiver)", rss_push),
        ] {
            report.add(
                "1 transfer",
                format!("peak RSS, {what}, {label}"),
                format!("{} / {}", mib(send), mib(recv)),
                "-",
                "-",
                format!("≤ 32 MiB each: {}", verdict(send.max(recv) <= 32 * 1024)),
            );
        }
        if i + 1 < s.sizes.len() {
            fs::remove_file(&path).expect("removing the test file");
        }
    }
    // Resume, with the largest file.
    let size = *s.sizes.last().expect("a size");
    let label = size_label(size);
    let name = format!("bench-{}.bin", label.replace(' ', ""));
    let mut times = Vec::new();
    let mut fractions = Vec::new();
    for run in 0..s.transfer_runs {
        let (t, from) = resume_once(&ctx, &share, &name, size);
        let fraction = from as f64 / size as f64;
        println!(
            "  resume {label} run {}: cancelled with {} verified ({:.0}%), second fetch {} ({} of the rest)",
            run + 1,
            size_label(from),
            fraction * 100.0,
            secs(t),
            rate(size - from, t)
        );
        times.push(t);
        fractions.push(fraction);
    }
    let full = fetch_medians[&size];
    let t = median(&times);
    let fraction = median(&fractions);
    let ratio = t / full;
    // What the owner does before it sends a byte of a resumed file: read and hash the
    // prefix the fetcher already has, chunk by chunk, on one thread (protocol.md §11).
    let prefix = (fraction * size as f64) as u64 / MIB * MIB;
    let rehash = median(
        &(0..s.runs)
            .map(|_| time_prefix_hash(&share.join(&name), prefix))
            .collect::<Vec<_>>(),
    );
    println!(
        "  the owner's re-hash of a {} prefix, alone: {}",
        size_label(prefix),
        secs(rehash)
    );
    report.add(
        "1 transfer",
        format!(
            "resumed fetch {label}: second fetch after a cancel at {:.0}%",
            fraction * 100.0
        ),
        secs(t),
        format!(
            "full fetch {}; re-hashing the prefix alone {}",
            secs(full),
            secs(rehash)
        ),
        format!("{ratio:.2} of a full fetch"),
        format!(
            "≈ {:.2} (the part left): {}",
            1.0 - fraction,
            verdict(ratio <= (1.0 - fraction) * 1.25 + 0.05)
        ),
    );
}
