//! The harness every group uses: the panic hook and open-file limit, the machine's
//! description, finding the release binaries, child processes (`Proc`: started with
//! `PR_SET_PDEATHSIG`, their output read by a thread, killed on drop), the server
//! (`start_server`), and two logged-in clients with a chat session (`Ctx`).
//!
//! Owns starting, driving and stopping processes; it must not measure (the groups do)
//! or print figures (`report` does).

use super::*;

/// Kills every child still running before the default hook prints the panic.
pub(crate) fn install_panic_hook() {
    let default = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        if let Ok(children) = CHILDREN.try_lock() {
            for &pid in children.iter() {
                // SAFETY: plain system call; the pids are our own unreaped children.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGKILL);
                }
            }
        }
        default(info);
    }));
}

/// Open files the bench wants: the server and the bench each hold one descriptor per
/// client (the server inherits the bench's limit), 10,000 and a few hundred each.
pub(crate) const WANTED_NOFILE: u64 = 65_536;

/// Raises the open-file limit: the hard limit too, up to [`WANTED_NOFILE`] (and never past
/// the kernel's `fs.nr_open`), which only root may do; otherwise the soft limit to the
/// hard one. Returns the limit now in force.
pub(crate) fn raise_nofile_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    let nr_open = fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok())
        .unwrap_or(WANTED_NOFILE);
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        let wanted = WANTED_NOFILE.min(nr_open);
        if limit.rlim_max < wanted {
            let raised = libc::rlimit {
                rlim_cur: wanted,
                rlim_max: wanted,
            };
            // Fails (EPERM) unless root (CAP_SYS_RESOURCE): then the soft limit below.
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return wanted;
            }
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    limit.rlim_cur
}

pub(crate) fn print_machine(nofile: u64, quick: bool) {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown".into());
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "peerchat bench {}: {} cores ({model}), {:.1} GiB RAM, Linux {}, open-file limit {nofile}{}",
        chrono::Local::now().format("%Y-%m-%d %H:%M"),
        cores(),
        mem_kib as f64 / (1024.0 * 1024.0),
        kernel.trim(),
        if quick { ", QUICK sizes" } else { "" }
    );
}

pub(crate) fn cores() -> usize {
    thread::available_parallelism().map_or(1, |n| n.get())
}

/// The binaries under test and this program.
pub(crate) struct Bins {
    pub(crate) server: PathBuf,
    pub(crate) client: PathBuf,
    pub(crate) me: PathBuf,
}

impl Bins {
    pub(crate) fn find() -> Bins {
        let target = env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
        let release = target.join("release");
        let bins = Bins {
            server: release.join("peerchat-server"),
            client: release.join("peerchat-client"),
            me: env::current_exe().expect("the bench's own path"),
        };
        for bin in [&bins.server, &bins.client] {
            assert!(
                bin.is_file(),
                "{} is missing: run `cargo build --release --bins` (make bench does)",
                bin.display()
            );
        }
        bins
    }
}

#[derive(Default)]
pub(crate) struct OutState {
    /// Every stdout line with the moment it was read.
    pub(crate) lines: Vec<(Instant, String)>,
    pub(crate) eof: bool,
}

/// Called by a child's output thread with each line it reads (see `Output::respond`).
pub(crate) type Responder = Box<dyn FnMut(&str) + Send>;

#[derive(Default)]
pub(crate) struct Output {
    pub(crate) state: Mutex<OutState>,
    pub(crate) cond: Condvar,
    /// Answers lines on the output thread itself, so a measured round trip does not
    /// also pay for waking the bench's main thread (the chat group's replies).
    pub(crate) respond: Mutex<Option<Responder>>,
}

pub(crate) fn read_output(stdout: ChildStdout, out: &Output) {
    let mut reader = BufReader::with_capacity(1 << 16, stdout);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let at = Instant::now();
                let text = String::from_utf8_lossy(&buf).trim_end().to_string();
                if let Some(respond) = out
                    .respond
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .as_mut()
                {
                    respond(&text);
                }
                let mut state = out.state.lock().unwrap_or_else(PoisonError::into_inner);
                state.lines.push((at, text));
                out.cond.notify_all();
            }
        }
    }
    out.state.lock().unwrap_or_else(PoisonError::into_inner).eof = true;
    out.cond.notify_all();
}

/// A running child with piped stdin and stdout (read into lines on a thread) and stderr
/// in a log file. Dropping it kills the child.
pub(crate) struct Proc {
    pub(crate) name: String,
    pub(crate) child: Child,
    pub(crate) stdin: Option<ChildStdin>,
    pub(crate) out: Arc<Output>,
    pub(crate) log: PathBuf,
}

impl Proc {
    pub(crate) fn spawn(name: &str, mut cmd: Command, log: &Path) -> Proc {
        let err = File::create(log).unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(err);
        // SAFETY: prctl is async-signal-safe and touches no memory of ours. Children are
        // only spawned from the main thread, which lives until the bench ends.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        CHILDREN
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(child.id());
        let stdout = child.stdout.take().expect("piped stdout");
        let out = Arc::new(Output::default());
        let sink = Arc::clone(&out);
        thread::Builder::new()
            .name(format!("out-{name}"))
            .spawn(move || read_output(stdout, &sink))
            .expect("an output thread");
        Proc {
            name: name.to_string(),
            stdin: child.stdin.take(),
            child,
            out,
            log: log.to_path_buf(),
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Writes one line to the child's stdin.
    pub(crate) fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        if let Err(e) = stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| stdin.flush())
        {
            panic!("{}: writing {line:?}: {e}{}", self.name, self.stderr_tail());
        }
    }

    /// The number of lines read so far: a cursor that sees only what comes next.
    pub(crate) fn cursor(&self) -> usize {
        self.out
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .lines
            .len()
    }

    /// Waits for the next line (from `cursor` on) that `pred` accepts; returns when it
    /// was read and its text, and moves the cursor past it.
    pub(crate) fn wait_line(
        &self,
        cursor: &mut usize,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> (Instant, String) {
        let deadline = Instant::now() + timeout;
        let mut state = self
            .out
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        loop {
            while *cursor < state.lines.len() {
                let (at, line) = &state.lines[*cursor];
                *cursor += 1;
                if pred(line) {
                    return (*at, line.clone());
                }
            }
            let now = Instant::now();
            if state.eof || now >= deadline {
                let why = if state.eof {
                    "exited".to_string()
                } else {
                    format!("timed out after {timeout:?}")
                };
                let from = state.lines.len().saturating_sub(12);
                let tail: Vec<&str> = state.lines[from..]
                    .iter()
                    .map(|(_, l)| l.as_str())
                    .collect();
                let tail = tail.join("\n  ");
                drop(state);
                panic!(
                    "{}: {why} waiting for {what:?}\n  last stdout lines:\n  {tail}{}",
                    self.name,
                    self.stderr_tail()
                );
            }
            state = self
                .out
                .cond
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    pub(crate) fn wait_for(
        &self,
        cursor: &mut usize,
        needle: &str,
        timeout: Duration,
    ) -> (Instant, String) {
        self.wait_line(cursor, needle, timeout, |l| l.contains(needle))
    }

    pub(crate) fn stderr_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(8);
        format!(
            "\n  stderr ({}):\n  {}",
            self.log.display(),
            lines[from..].join("\n  ")
        )
    }

    /// A `/proc/PID/status` field in KiB (`VmHWM`, `VmRSS`) or count (`Threads`).
    pub(crate) fn status(&self, field: &str) -> u64 {
        proc_status(self.pid(), field)
    }

    /// Closes stdin (a client then logs out and exits) and waits up to `grace`; the
    /// drop kills what is still running.
    pub(crate) fn finish(mut self, grace: Duration) {
        drop(self.stdin.take());
        let until = Instant::now() + grace;
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        drop(self.stdin.take());
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let pid = self.child.id();
        CHILDREN
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|&p| p != pid);
        let _ = self.child.wait();
    }
}

pub(crate) fn proc_status(pid: u32, field: &str) -> u64 {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .strip_prefix(':')?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// User plus system CPU seconds a process has used.
pub(crate) fn cpu_secs(pid: u32) -> f64 {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some(end) = text.rfind(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = text[end + 1..].split_whitespace().collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (tick(11) + tick(12)) as f64 / hz
}

pub(crate) fn role_cmd(bins: &Bins, role: &str) -> Command {
    let mut cmd = Command::new(&bins.me);
    cmd.env(ROLE_ENV, role);
    cmd
}

pub(crate) fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("peerchat-bench-")
        .tempdir()
        .expect("a temporary folder")
}

/// Starts a server on a free loopback port with its database in `dir`.
pub(crate) fn start_server(
    bins: &Bins,
    dir: &Path,
    cost: Option<u32>,
    extra: &[String],
) -> (Proc, SocketAddr) {
    let mut cmd = Command::new(&bins.server);
    cmd.args(["--addr", "127.0.0.1:0", "--db"])
        .arg(dir.join("server.db"));
    if let Some(cost) = cost {
        cmd.args(["--bcrypt-cost", &cost.to_string()]);
    }
    cmd.args(extra);
    let server = Proc::spawn("server", cmd, &dir.join("server.log"));
    let mut cursor = 0;
    let (_, line) = server.wait_for(&mut cursor, "listening on ", SHORT);
    let addr = line
        .trim_start_matches("listening on ")
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("server address in {line:?}: {e}"));
    (server, addr)
}

/// What the client-driving figures share: the server, a folder, fresh user names.
pub(crate) struct Ctx<'a> {
    pub(crate) bins: &'a Bins,
    pub(crate) dir: PathBuf,
    pub(crate) addr: SocketAddr,
    pub(crate) next: Cell<usize>,
}

impl Ctx<'_> {
    pub(crate) fn fresh(&self, prefix: &str) -> String {
        self.next.set(self.next.get() + 1);
        format!("{prefix}{}", self.next.get())
    }

    pub(crate) fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Starts a client, registers `name` and waits for its welcome.
    pub(crate) fn client(&self, name: &str, share: Option<&Path>) -> Proc {
        let mut cmd = Command::new(&self.bins.client);
        cmd.args(["--server", &self.addr.to_string(), "--trust-first-use"])
            .args(["--port", "0", "--listen-addr", "127.0.0.1", "--data-dir"])
            .arg(self.data_dir());
        if let Some(share) = share {
            cmd.arg("--share").arg(share);
        }
        let mut client = Proc::spawn(name, cmd, &self.dir.join(format!("{name}.log")));
        client.send("y");
        client.send(name);
        client.send(PASSWORD);
        let mut cursor = 0;
        client.wait_for(&mut cursor, &format!("Welcome, {name}."), SHORT);
        if share.is_some() {
            client.wait_for(&mut cursor, "* sharing", SHORT);
        }
        client
    }
}

/// `a` asks `b` for a chat session; `b` accepts; both see it open.
pub(crate) fn open_session(a: &mut Proc, b: &mut Proc) {
    let (mut ca, mut cb) = (a.cursor(), b.cursor());
    let (a_name, b_name) = (a.name.clone(), b.name.clone());
    a.send(&format!("\\connect {b_name}"));
    b.wait_for(&mut cb, &format!("{a_name} wants to chat"), SHORT);
    b.send("\\accept");
    b.wait_for(&mut cb, &format!("session with {a_name} open"), SHORT);
    a.wait_for(&mut ca, &format!("session with {b_name} open"), SHORT);
}
