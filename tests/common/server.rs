//! The real `peerchat-server` binary: options (`ServerBuilder`), starting it on a free
//! port with its own temporary directory and database, restarting it, its log, its
//! process, and the TLS fingerprints of the servers this test binary started.
//!
//! Owns server processes; it must not talk the protocol (`wire` does) or read the
//! database (`db` does).

use super::*;

/// Counts server starts in this test binary, so each start gets its own log file.
pub(super) static STARTS: AtomicUsize = AtomicUsize::new(0);

/// Options for starting a server; `Server::builder()` makes one.
pub struct ServerBuilder {
    /// Extra command-line arguments, e.g. `--block-secs 2`.
    pub(super) args: Vec<String>,
    /// Extra environment variables, e.g. `RUST_LOG=trace`.
    pub(super) envs: Vec<(String, String)>,
    /// bcrypt cost; 4 keeps tests fast, one test needs a slow one.
    pub(super) bcrypt_cost: u32,
}

impl ServerBuilder {
    /// Adds command-line arguments.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Sets an environment variable for the server process.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.envs.push((key.to_string(), value.to_string()));
        self
    }

    /// Sets the bcrypt cost (default 4).
    pub fn bcrypt_cost(mut self, cost: u32) -> Self {
        self.bcrypt_cost = cost;
        self
    }

    /// Starts the server in a fresh temporary directory.
    pub fn start(self) -> Server {
        let dir = Arc::new(TempDir::new().expect("create temp dir"));
        Server::spawn(dir, self)
    }
}

impl Clone for ServerBuilder {
    fn clone(&self) -> Self {
        ServerBuilder {
            args: self.args.clone(),
            envs: self.envs.clone(),
            bcrypt_cost: self.bcrypt_cost,
        }
    }
}

/// A running `peerchat-server` process. Killed on Drop.
pub struct Server {
    /// The process, `None` once it has been reaped.
    pub(super) child: Option<Child>,
    /// Its exit status once known.
    pub(super) status: Option<ExitStatus>,
    /// The address it printed on its first stdout line.
    pub addr: SocketAddr,
    /// Temporary directory holding the database and logs; shared with restarts.
    pub(super) dir: Arc<TempDir>,
    /// How it was started, so `restart` can start it the same way.
    pub(super) opts: ServerBuilder,
    /// Where this process's stderr (the log) goes.
    pub(super) log: PathBuf,
    /// Its PostgreSQL database when the suite runs on PostgreSQL (`PEERCHAT_TEST_DB`).
    pub(super) pg: Option<Arc<PgDatabase>>,
}

impl Server {
    /// Starts a server with default options (bcrypt cost 4).
    pub fn start() -> Server {
        Server::builder().start()
    }

    /// Options for a server.
    pub fn builder() -> ServerBuilder {
        ServerBuilder {
            args: Vec::new(),
            envs: Vec::new(),
            bcrypt_cost: 4,
        }
    }

    pub(super) fn spawn(dir: Arc<TempDir>, opts: ServerBuilder) -> Server {
        let any_port: SocketAddr = "127.0.0.1:0".parse().unwrap();
        match launch(dir, opts, any_port) {
            Ok(server) => server,
            Err((why, log)) => panic!("server: {why}\n--- server log ---\n{log}"),
        }
    }

    pub(super) fn fail(&mut self, msg: &str) -> ! {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("server: {msg}\n--- server log ---\n{}", self.log_text());
    }

    /// Starts a new server process on the same directory and database, with the same
    /// options. The previous process should have exited.
    pub fn restart(&self) -> Server {
        Server::spawn(self.dir.clone(), self.opts.clone())
    }

    /// The SQLite database file.
    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("server.db")
    }

    /// Everything this server process wrote to stderr so far.
    pub fn log_text(&self) -> String {
        fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Sends SIGINT (what Ctrl+C sends).
    pub fn interrupt(&self) {
        let pid = self.child.as_ref().expect("server already reaped").id();
        let status = Command::new("kill")
            .arg("-INT")
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -INT {pid} failed");
    }

    /// Waits (bounded) for the process to exit and returns its status.
    pub fn wait_exit(&mut self) -> ExitStatus {
        if let Some(status) = self.status {
            return status;
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let child = self.child.as_mut().expect("server child");
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                self.status = Some(status);
                return status;
            }
            if Instant::now() >= deadline {
                self.fail("the server did not exit in time");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGINT, then wait for the exit; returns the status.
    pub fn stop(&mut self) -> ExitStatus {
        self.interrupt();
        self.wait_exit()
    }

    /// SIGKILL: the process dies at once, without telling anyone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            self.status = child.wait().ok();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts a server process on `dir` with `opts`, listening on `addr` (port 0: any free
/// port), and reads the address it prints first. On failure the process is reaped and
/// the reason comes back with its log.
pub(super) fn launch(
    dir: Arc<TempDir>,
    opts: ServerBuilder,
    addr: SocketAddr,
) -> Result<Server, (String, String)> {
    let n = STARTS.fetch_add(1, Ordering::SeqCst);
    let log = dir.path().join(format!("server-{n}.log"));
    let log_file = File::create(&log).expect("create server log");
    let (db_args, pg) = db_args(dir.path(), &opts);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_peerchat-server"));
    cmd.arg("--addr")
        .arg(addr.to_string())
        .args(&db_args)
        .arg("--bcrypt-cost")
        .arg(opts.bcrypt_cost.to_string())
        .args(&opts.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file));
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "debug");
    }
    for (k, v) in &opts.envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn peerchat-server");

    // Read stdout on a thread for the whole life of the process, so the server never
    // blocks on a full pipe; the first line is the address.
    let stdout = child.stdout.take().expect("server stdout");
    let (tx, rx) = mpsc::channel::<String>();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let bound = match rx.recv_timeout(WAIT) {
        Ok(line) => match line.strip_prefix("listening on ").map(|a| a.trim().parse()) {
            Some(Ok(bound)) if addr.port() == 0 || bound == addr => Ok(bound),
            _ => Err(format!(
                "first stdout line should be `listening on {addr}`, got {line:?}"
            )),
        },
        Err(_) => Err("the server did not print `listening on ADDR`".to_string()),
    };
    let bound = bound.and_then(|bound| note_server_fingerprint(bound, &rx).map(|()| bound));
    match bound {
        Ok(addr) => Ok(Server {
            child: Some(child),
            status: None,
            addr,
            dir,
            opts,
            log,
            pg,
        }),
        Err(why) => {
            let _ = child.kill();
            let _ = child.wait();
            Err((why, fs::read_to_string(&log).unwrap_or_default()))
        }
    }
}

impl Server {
    /// Starts a new server process on the same directory, database and address (so that
    /// clients can `\reconnect` to it). The previous process must have exited. Retries for
    /// up to `WAIT` in case the port is briefly unavailable.
    pub fn restart_same_addr(&self) -> Server {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(server) = launch(self.dir.clone(), self.opts.clone(), self.addr) {
                return server;
            }
            if Instant::now() >= deadline {
                panic!(
                    "could not start a server on {} again\n--- previous log ---\n{}",
                    self.addr,
                    self.log_text()
                );
            }
            thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Server {
    /// The server process's id (for reading /proc/PID/status).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server is running").id()
    }

    /// The server's resident memory in KiB, from /proc (Linux).
    pub fn rss_kib(&self) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }
}

impl Server {
    /// A new server process on the same directory and database (the previous one should
    /// have exited), with a different bcrypt cost.
    pub fn restart_with_cost(&self, cost: u32) -> Server {
        let mut opts = self.opts.clone();
        opts.bcrypt_cost = cost;
        Server::spawn(self.dir.clone(), opts)
    }

    /// How many lines of this server's log contain `text`.
    pub fn log_count(&self, text: &str) -> usize {
        self.log_text().lines().filter(|l| l.contains(text)).count()
    }
}

/// Fingerprints of the servers this test binary started, by address, so every `Wire`
/// to a server speaks TLS pinned to the right certificate.
pub(super) static SERVER_FINGERPRINTS: Mutex<Vec<(SocketAddr, String)>> = Mutex::new(Vec::new());

/// The prefix of the server's second stdout line.
pub const FINGERPRINT_LINE: &str = "TLS certificate SHA-256 fingerprint: ";

/// Reads the server's fingerprint line and remembers it for `addr`.
pub(super) fn note_server_fingerprint(
    addr: SocketAddr,
    rx: &Receiver<String>,
) -> Result<(), String> {
    let line = rx
        .recv_timeout(WAIT)
        .map_err(|_| "the server did not print its fingerprint".to_string())?;
    let fp = line
        .strip_prefix(FINGERPRINT_LINE)
        .ok_or_else(|| format!("second stdout line should be the fingerprint, got {line:?}"))?;
    let mut known = SERVER_FINGERPRINTS.lock().unwrap();
    known.retain(|(a, _)| *a != addr);
    known.push((addr, fp.trim().to_string()));
    Ok(())
}

/// The fingerprint of the server this test binary started at `addr`.
pub fn server_fingerprint(addr: SocketAddr) -> Option<String> {
    SERVER_FINGERPRINTS
        .lock()
        .unwrap()
        .iter()
        .find(|(a, _)| *a == addr)
        .map(|(_, fp)| fp.clone())
}

impl Server {
    /// The server's certificate fingerprint, as it printed it.
    pub fn fingerprint(&self) -> String {
        server_fingerprint(self.addr).expect("fingerprint of a started server")
    }
}
