//! Test harness shared by every integration test file.
//!
//! It starts the real `peerchat-server` and `peerchat-client` binaries (no mocks), each
//! server on `127.0.0.1:0` with its own temporary directory and database, talks to the
//! server over real TCP sockets (`Wire`) and drives the client through stdin/stdout pipes
//! (`Client`). Every wait here is bounded, and every child process is killed on Drop so a
//! failing test never leaves processes behind. Tests never assert durations, only order.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tempfile::TempDir;

/// How long any single wait may take before the test fails (reading a line, a process
/// exiting, a server starting). Generous on purpose: it only matters when something hangs.
pub const WAIT: Duration = Duration::from_secs(15);

/// How long to poll for a state change that the server makes "promptly" (leaving the list).
pub const POLL: Duration = Duration::from_secs(10);

/// A password that satisfies the rules, for tests that do not care which one.
pub const PW: &str = "correct horse";

/// A second loopback address, so a connection can come from another source IP.
pub const OTHER_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// Counts server starts in this test binary, so each start gets its own log file.
static STARTS: AtomicUsize = AtomicUsize::new(0);

// ---------------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------------

/// Options for starting a server; `Server::builder()` makes one.
pub struct ServerBuilder {
    /// Extra command-line arguments, e.g. `--block-secs 2`.
    args: Vec<String>,
    /// Extra environment variables, e.g. `RUST_LOG=trace`.
    envs: Vec<(String, String)>,
    /// bcrypt cost; 4 keeps tests fast, one test needs a slow one.
    bcrypt_cost: u32,
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
    child: Option<Child>,
    /// Its exit status once known.
    status: Option<ExitStatus>,
    /// The address it printed on its first stdout line.
    pub addr: SocketAddr,
    /// Temporary directory holding the database and logs; shared with restarts.
    dir: Arc<TempDir>,
    /// How it was started, so `restart` can start it the same way.
    opts: ServerBuilder,
    /// Where this process's stderr (the log) goes.
    log: PathBuf,
    /// Its PostgreSQL database when the suite runs on PostgreSQL (`PEERCHAT_TEST_DB`).
    pg: Option<Arc<PgDatabase>>,
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

    fn spawn(dir: Arc<TempDir>, opts: ServerBuilder) -> Server {
        let any_port: SocketAddr = "127.0.0.1:0".parse().unwrap();
        match launch(dir, opts, any_port) {
            Ok(server) => server,
            Err((why, log)) => panic!("server: {why}\n--- server log ---\n{log}"),
        }
    }

    fn fail(&mut self, msg: &str) -> ! {
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

// ---------------------------------------------------------------------------------------
// Database
// ---------------------------------------------------------------------------------------

/// `PRAGMA integrity_check` of the database (the server must have exited).
pub fn integrity_check(db: &Path) -> String {
    if let Some(url) = pg_url_of(db) {
        // PostgreSQL has no such check; that it answers is what can be checked.
        let one = pg_rows(&url, "SELECT 1");
        return if one.len() == 1 { "ok" } else { "no answer" }.to_string();
    }
    let conn = rusqlite::Connection::open(db).expect("open database");
    conn.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0))
        .expect("integrity_check")
}

/// `(username, pw_hash)` of every user, sorted by username.
pub fn db_users(db: &Path) -> Vec<(String, String)> {
    if let Some(url) = pg_url_of(db) {
        return pg_rows(
            &url,
            "SELECT username, pw_hash FROM users ORDER BY username",
        )
        .into_iter()
        .map(|r| {
            (
                r[0].clone().unwrap_or_default(),
                r[1].clone().unwrap_or_default(),
            )
        })
        .collect();
    }
    let conn = rusqlite::Connection::open(db).expect("open database");
    let mut stmt = conn
        .prepare("SELECT username, pw_hash FROM users ORDER BY username")
        .expect("prepare");
    stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .expect("query users")
        .map(|r| r.expect("row"))
        .collect()
}

/// Asserts that `name` is stored with a bcrypt hash and not with its password.
pub fn assert_stored_hash(users: &[(String, String)], name: &str, password: &str) {
    let (_, hash) = users
        .iter()
        .find(|(u, _)| u == name)
        .unwrap_or_else(|| panic!("user {name} not in the database: {users:?}"));
    assert!(
        hash.starts_with("$2"),
        "pw_hash of {name} is not a bcrypt hash: {hash:?}"
    );
    assert_ne!(hash, password, "pw_hash of {name} is the password itself");
    assert!(
        !hash.contains(password),
        "pw_hash of {name} contains the password"
    );
}

// ---------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------

/// A TCP port that was free a moment ago (bound, then released).
///
/// Picked below the kernel's ephemeral range (32768 and up here), so no outgoing
/// connection of another test can take the port between this check and its use (the
/// race that made tests flaky under load); each test process walks its own sequence,
/// starting from a place derived from its pid.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7919) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// True if `line` is `prefix` or starts with `prefix` followed by a space (so that
/// `OK REGISTERED alice` does not match `OK REGISTERED alice2`).
pub fn line_matches(line: &str, prefix: &str) -> bool {
    line == prefix
        || (line.starts_with(prefix)
            && (prefix.ends_with(' ') || line[prefix.len()..].starts_with(' ')))
}

/// Shortens a line for error messages.
fn short(s: &str) -> String {
    if s.len() <= 200 {
        s.to_string()
    } else {
        let mut end = 200;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}... ({} bytes)", &s[..end], s.len())
    }
}

/// A one-shot barrier with a bounded wait: if not all `n` threads arrive within `WAIT`,
/// the waiting threads panic instead of hanging forever.
pub struct Gate {
    n: usize,
    arrived: Mutex<usize>,
    cv: Condvar,
}

impl Gate {
    /// A gate for `n` threads.
    pub fn new(n: usize) -> Arc<Gate> {
        Arc::new(Gate {
            n,
            arrived: Mutex::new(0),
            cv: Condvar::new(),
        })
    }

    /// Blocks until all `n` threads have called `wait`.
    pub fn wait(&self) {
        let deadline = Instant::now() + WAIT;
        let mut arrived = self.arrived.lock().unwrap();
        *arrived += 1;
        self.cv.notify_all();
        while *arrived < self.n {
            let now = Instant::now();
            if now >= deadline {
                panic!("only {} of {} threads reached the gate", *arrived, self.n);
            }
            arrived = self.cv.wait_timeout(arrived, deadline - now).unwrap().0;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Wire: a raw protocol connection
// ---------------------------------------------------------------------------------------

/// What one bounded read produced.
pub enum Got {
    Line(String),
    Closed,
    TimedOut,
}

/// One raw TCP connection to the server, speaking protocol.md by hand.
///
/// `expect*` methods read the next line that is not an `EVENT` (events are kept aside for
/// `expect_event`), with a timeout; on any mismatch they panic with the transcript.
pub struct Wire {
    /// Name used in failure messages.
    label: String,
    /// The socket (addresses, timeouts); bytes go through `input` and `output`.
    stream: TcpStream,
    /// Plaintext in: the socket itself, or a TLS / Noise reader over it.
    input: Box<dyn Read + Send>,
    /// Plaintext out, shared with `clone_stream` handles so writes never interleave.
    output: SharedOut,
    /// Bytes received but not yet split into lines.
    buf: Vec<u8>,
    /// The server closed (or reset) the connection.
    eof: bool,
    /// Lines put back with `unread`.
    pushback: VecDeque<String>,
    /// Events read while waiting for something else.
    events: VecDeque<String>,
    /// Everything sent (`>`) and received (`<`), for failure messages.
    transcript: Vec<String>,
    /// `HELLO` and the first `ASK NEW` have been read.
    greeted: bool,
}

impl Wire {
    /// Connects from the default source address (127.0.0.1).
    pub fn connect(addr: SocketAddr) -> Wire {
        let stream = TcpStream::connect_timeout(&addr, WAIT)
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        Wire::from_stream(stream)
    }

    /// Connects from a chosen source IP (e.g. 127.0.0.2) by binding before connecting.
    pub fn connect_from(addr: SocketAddr, ip: IpAddr) -> Wire {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
            .expect("socket");
        socket
            .bind(&SocketAddr::new(ip, 0).into())
            .unwrap_or_else(|e| panic!("bind {ip}: {e}"));
        socket
            .connect_timeout(&addr.into(), WAIT)
            .unwrap_or_else(|e| panic!("connect {addr} from {ip}: {e}"));
        Wire::from_stream(socket.into())
    }

    fn from_stream(stream: TcpStream) -> Wire {
        stream.set_nodelay(true).unwrap();
        stream.set_write_timeout(Some(WAIT)).unwrap();
        let label = format!("wire {}", stream.local_addr().unwrap());
        let (input, output, eof) = secure_halves(&stream);
        Wire {
            label,
            stream,
            input,
            output,
            buf: Vec::new(),
            eof,
            pushback: VecDeque::new(),
            events: VecDeque::new(),
            transcript: Vec::new(),
            greeted: false,
        }
    }

    /// Names this connection in failure messages.
    pub fn named(mut self, label: &str) -> Wire {
        self.label = label.to_string();
        self
    }

    /// The source IP the server sees.
    pub fn local_ip(&self) -> IpAddr {
        self.stream.local_addr().unwrap().ip()
    }

    /// A second handle on the link, e.g. to write from another thread (its writes go
    /// through the same encryption, in order with this Wire's).
    pub fn clone_stream(&self) -> WireStream {
        WireStream {
            sock: self.stream.try_clone().unwrap(),
            out: Arc::clone(&self.output),
        }
    }

    /// Panics with the transcript.
    pub fn fail(&self, msg: &str) -> ! {
        panic!(
            "[{}] {msg}\n--- transcript ---\n{}",
            self.label,
            self.transcript.join("\n")
        );
    }

    /// Sends one line (adds `\n`); panics if the write fails.
    pub fn send(&mut self, line: &str) {
        if let Err(e) = self.try_send(line) {
            self.fail(&format!("sending {:?} failed: {e}", short(line)));
        }
    }

    /// Sends one line (adds `\n`) and returns the write result.
    pub fn try_send(&mut self, line: &str) -> io::Result<()> {
        self.transcript.push(format!("> {}", short(line)));
        let mut bytes = line.as_bytes().to_vec();
        bytes.push(b'\n');
        lock_out(&self.output).write_all(&bytes)
    }

    /// Sends raw bytes as they are (no newline added) and returns the write result.
    pub fn send_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.transcript.push(format!(
            "> (raw) {}",
            short(&format!("{:?}", String::from_utf8_lossy(bytes)))
        ));
        lock_out(&self.output).write_all(bytes)
    }

    /// Reads one line within `timeout` (events included; pushed-back lines first).
    pub fn read_within(&mut self, timeout: Duration) -> Got {
        if let Some(line) = self.pushback.pop_front() {
            return Got::Line(line);
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let mut raw: Vec<u8> = self.buf.drain(..=pos).collect();
                raw.pop();
                if raw.last() == Some(&b'\r') {
                    raw.pop();
                }
                let line = String::from_utf8_lossy(&raw).into_owned();
                self.transcript.push(format!("< {}", short(&line)));
                return Got::Line(line);
            }
            if self.eof {
                if !self.buf.is_empty() {
                    let line = String::from_utf8_lossy(&std::mem::take(&mut self.buf)).into_owned();
                    self.transcript
                        .push(format!("< {} (no newline before close)", short(&line)));
                    return Got::Line(line);
                }
                return Got::Closed;
            }
            let now = Instant::now();
            if now >= deadline {
                return Got::TimedOut;
            }
            self.stream
                .set_read_timeout(Some((deadline - now).max(Duration::from_millis(1))))
                .unwrap();
            let mut chunk = [0u8; 8192];
            match self.input.read(&mut chunk) {
                Ok(0) => {
                    self.eof = true;
                    self.transcript.push("(closed by server)".into());
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::ConnectionReset
                            | ErrorKind::ConnectionAborted
                            | ErrorKind::BrokenPipe
                            | ErrorKind::UnexpectedEof
                            | ErrorKind::InvalidData
                    ) =>
                {
                    // InvalidData: the TLS or Noise layer refused what arrived (a
                    // changed byte, an alert): the link is over.
                    self.eof = true;
                    self.transcript.push(format!("(connection {e})"));
                }
                Err(e) => self.fail(&format!("read error: {e}")),
            }
        }
    }

    /// Puts a line back; the next read returns it first.
    pub fn unread(&mut self, line: String) {
        self.pushback.push_front(line);
    }

    /// The very next line, whatever it is (events included).
    pub fn next_line(&mut self) -> String {
        match self.read_within(WAIT) {
            Got::Line(line) => line,
            Got::Closed => self.fail("the server closed the connection while a line was expected"),
            Got::TimedOut => self.fail(&format!("no line within {WAIT:?}")),
        }
    }

    /// The next line that is not an `EVENT` (events are kept for `expect_event`).
    pub fn next_reply(&mut self) -> String {
        loop {
            let line = self.next_line();
            if line.starts_with("EVENT ") {
                self.events.push_back(line);
            } else {
                return line;
            }
        }
    }

    /// The next non-event line must start with `prefix` (word-wise); returns it.
    pub fn expect(&mut self, prefix: &str) -> String {
        if prefix.starts_with("EVENT") {
            return self.expect_event(prefix);
        }
        let line = self.next_reply();
        if !line_matches(&line, prefix) {
            self.fail(&format!("expected `{prefix}...`, got {:?}", short(&line)));
        }
        line
    }

    /// The next non-event line must be exactly `want`.
    pub fn expect_exact(&mut self, want: &str) {
        let line = self.next_reply();
        if line != want {
            self.fail(&format!(
                "expected exactly {want:?}, got {:?}",
                short(&line)
            ));
        }
    }

    /// The next non-event line must start with one of `prefixes`; returns it.
    pub fn expect_one_of(&mut self, prefixes: &[&str]) -> String {
        let line = self.next_reply();
        if !prefixes.iter().any(|p| line_matches(&line, p)) {
            self.fail(&format!(
                "expected one of {prefixes:?}, got {:?}",
                short(&line)
            ));
        }
        line
    }

    /// An event starting with `prefix`, either already seen or still to come. Other events
    /// are skipped (kept); a reply while waiting is a failure.
    pub fn expect_event(&mut self, prefix: &str) -> String {
        if let Some(i) = self.events.iter().position(|e| line_matches(e, prefix)) {
            return self.events.remove(i).unwrap();
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match self.read_within(left) {
                Got::Line(line) => line,
                Got::Closed => self.fail(&format!("closed while waiting for `{prefix}`")),
                Got::TimedOut => self.fail(&format!("no `{prefix}` within {WAIT:?}")),
            };
            if line_matches(&line, prefix) {
                return line;
            }
            if line.starts_with("EVENT ") {
                self.events.push_back(line);
            } else {
                self.fail(&format!(
                    "waiting for `{prefix}`, got the reply {:?}",
                    short(&line)
                ));
            }
        }
    }

    /// The server must close the connection (within `WAIT`) without sending any more
    /// replies; events before the close are kept.
    pub fn expect_closed(&mut self) {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read_within(left) {
                Got::Closed => return,
                Got::TimedOut => {
                    self.fail("expected the server to close the connection; it stayed open")
                }
                Got::Line(line) if line.starts_with("EVENT ") => self.events.push_back(line),
                Got::Line(line) => self.fail(&format!(
                    "expected the server to close the connection, got {:?}",
                    short(&line)
                )),
            }
        }
    }

    /// Reads `HELLO peerchat 1` and the first `ASK NEW` (once).
    pub fn hello(&mut self) {
        if !self.greeted {
            self.expect_exact("HELLO peerchat 1");
            self.expect("ASK NEW");
            self.greeted = true;
        }
    }

    /// Full registration on a fresh connection; returns the `OK WELCOME` line.
    pub fn register(&mut self, name: &str, pass: &str, port: u16) -> String {
        self.hello();
        self.send("Y");
        self.expect("ASK USERNAME");
        self.send(name);
        self.expect("ASK PASSWORD");
        self.send(pass);
        self.expect_exact(&format!("OK REGISTERED {name}"));
        self.answer_port(name, port)
    }

    /// Full login of a returning user on a fresh connection; returns the `OK WELCOME` line.
    pub fn login(&mut self, name: &str, pass: &str, port: u16) -> String {
        self.start_login();
        self.answer_login(name, pass);
        self.expect_exact(&format!("OK LOGGED_IN {name}"));
        self.answer_port(name, port)
    }

    /// HELLO, answers `N`, and waits for the username question.
    pub fn start_login(&mut self) {
        self.hello();
        self.send("N");
        self.expect("ASK USERNAME");
    }

    /// At the returning user's `ASK USERNAME`: sends the name, waits for `ASK PASSWORD`,
    /// sends the password. The caller reads the verdict.
    pub fn answer_login(&mut self, name: &str, pass: &str) {
        self.send(name);
        self.expect("ASK PASSWORD");
        self.send(pass);
    }

    /// Answers `ASK PORT` and checks `OK WELCOME <name> <source ip>:<port>`.
    pub fn answer_port(&mut self, name: &str, port: u16) -> String {
        self.expect("ASK PORT");
        self.send(&port.to_string());
        let want = format!("OK WELCOME {name} {}:{port}", self.local_ip());
        self.expect_exact(&want);
        want
    }

    /// Connects and registers.
    pub fn registered(addr: SocketAddr, name: &str, pass: &str, port: u16) -> Wire {
        let mut w = Wire::connect(addr).named(name);
        w.register(name, pass, port);
        w
    }

    /// Connects and logs in.
    pub fn logged_in(addr: SocketAddr, name: &str, pass: &str, port: u16) -> Wire {
        let mut w = Wire::connect(addr).named(name);
        w.login(name, pass, port);
        w
    }

    /// Sends `LIST` and returns the user names (checks `OK LIST n total` + n `USER`
    /// lines).
    pub fn list(&mut self) -> Vec<String> {
        self.send("LIST");
        let head = self.expect("OK LIST");
        let n: usize = match head.split(' ').nth(2).unwrap_or("").parse() {
            Ok(n) => n,
            Err(_) => self.fail(&format!("bad list header {head:?}")),
        };
        let mut users = Vec::with_capacity(n);
        for _ in 0..n {
            // No EVENT may land inside a list: read strictly.
            let line = self.next_line();
            // `USER <name> <id>`: the name.
            match line.strip_prefix("USER ") {
                Some(u) => users.push(u.split(' ').next().unwrap_or("").to_string()),
                None => self.fail(&format!(
                    "expected a `USER` line inside the list, got {line:?}"
                )),
            }
        }
        users
    }

    /// Polls `LIST` (for up to `POLL`) until it equals `want`.
    pub fn wait_for_list(&mut self, want: &[&str]) {
        let deadline = Instant::now() + POLL;
        loop {
            let got = self.list();
            if got == want {
                return;
            }
            if Instant::now() >= deadline {
                self.fail(&format!(
                    "LIST is still {got:?} after {POLL:?}; want {want:?}"
                ));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// `PING` → `OK PONG`.
    pub fn ping(&mut self) {
        self.send("PING");
        self.expect_exact("OK PONG");
    }

    /// `QUIT` → `OK BYE`, then the server closes.
    pub fn quit(&mut self) {
        self.send("QUIT");
        self.expect_exact("OK BYE");
        self.expect_closed();
    }

    /// Events seen so far and not yet consumed by `expect_event`.
    pub fn pending_events(&self) -> Vec<String> {
        self.events.iter().cloned().collect()
    }
}

// ---------------------------------------------------------------------------------------
// Client: the real peerchat-client binary over pipes
// ---------------------------------------------------------------------------------------

/// A running `peerchat-client` process driven through stdin/stdout. Killed on Drop.
///
/// Prompts have no trailing newline, so stdout is read as a byte stream and `expect`
/// searches for text after the point the previous `expect` matched.
pub struct Client {
    /// Name used in failure messages.
    label: String,
    child: Child,
    stdin: Option<ChildStdin>,
    /// Chunks of stdout from the reader thread; disconnected at EOF.
    rx: Receiver<Vec<u8>>,
    /// All stdout received so far.
    out: Vec<u8>,
    /// `expect` searches `out[pos..]`.
    pos: usize,
    /// stdout reached EOF.
    out_done: bool,
    /// All stderr so far (reader thread).
    err: Arc<Mutex<Vec<u8>>>,
    /// Exit status once reaped.
    status: Option<ExitStatus>,
    /// Everything written to stdin, for failure messages.
    sent: Vec<String>,
    /// A data folder of its own (`Client::spawn` without `--data-dir`), removed on drop.
    _data: Option<TempDir>,
}

impl Client {
    /// Starts `peerchat-client --server <addr> <args...>`. Without `--data-dir` in
    /// `args` the client gets a temporary data folder of its own: identity keys and
    /// pinned peer keys must not leak between tests through a shared `data/`.
    pub fn spawn(server: SocketAddr, args: &[&str]) -> Client {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_peerchat-client"));
        cmd.arg("--server")
            .arg(server.to_string())
            .args(trust_args(server, args))
            .args(args);
        let own = (!args.contains(&"--data-dir")).then(|| TempDir::new().expect("temp dir"));
        if let Some(dir) = &own {
            cmd.arg("--data-dir").arg(dir.path());
        }
        let mut client = Client::spawn_command(cmd);
        client._data = own;
        client
    }

    /// Names this client in failure messages.
    pub fn named(mut self, label: &str) -> Client {
        self.label = label.to_string();
        self
    }

    /// Starts a client with `--port <port>` (0 = any free port) and registers `name`
    /// through its prompts; returns it once the welcome line is printed.
    pub fn register(server: SocketAddr, name: &str, pass: &str, port: u16) -> Client {
        let mut c = Client::spawn(server, &["--port", &port.to_string()]).named(name);
        c.expect("Are you a new client? (Y/N): ");
        c.send("y");
        c.expect("Choose a username: ");
        c.send(name);
        c.expect("Choose a password: ");
        c.send(pass);
        c.expect(&format!("Registered as {name}."));
        c.expect_welcome(name, port);
        c
    }

    /// Waits for `Welcome, <name>. Peers reach you at 127.0.0.1:<port>. Type \help for
    /// commands.` (any non-zero port if `port` is 0); returns the port shown.
    pub fn expect_welcome(&mut self, name: &str, port: u16) -> u16 {
        let shown = self.expect_between(
            &format!("Welcome, {name}. Peers reach you at 127.0.0.1:"),
            ". Type \\help for commands.",
        );
        let shown: u16 = shown
            .parse()
            .unwrap_or_else(|_| self.fail(&format!("bad port in welcome: {shown:?}")));
        if port != 0 && shown != port {
            self.fail(&format!("welcome shows port {shown}, want {port}"));
        }
        if shown == 0 {
            self.fail("welcome shows port 0");
        }
        shown
    }

    /// Writes one line to stdin.
    pub fn send(&mut self, line: &str) {
        self.sent.push(line.to_string());
        let result = match self.stdin.as_mut() {
            Some(stdin) => stdin
                .write_all(format!("{line}\n").as_bytes())
                .and_then(|_| stdin.flush()),
            None => Err(io::Error::other("stdin already closed")),
        };
        if let Err(e) = result {
            self.fail(&format!("writing {line:?} to stdin failed: {e}"));
        }
    }

    /// Closes stdin (end of input).
    pub fn close_stdin(&mut self) {
        self.sent.push("(end of stdin)".into());
        self.stdin = None;
    }

    /// Receives more stdout, waiting until `deadline`. False if nothing more came.
    fn pump(&mut self, deadline: Instant) -> bool {
        if self.out_done {
            return false;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match self.rx.recv_timeout(left) {
            Ok(chunk) => {
                self.out.extend_from_slice(&chunk);
                true
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => {
                self.out_done = true;
                false
            }
        }
    }

    fn find(&self, text: &str, from: usize) -> Option<usize> {
        let hay = &self.out[from..];
        let needle = text.as_bytes();
        if needle.is_empty() {
            return Some(from);
        }
        hay.windows(needle.len())
            .position(|w| w == needle)
            .map(|i| from + i)
    }

    /// Waits until `text` appears in stdout after the previous match; moves past it.
    pub fn expect(&mut self, text: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(i) = self.find(text, self.pos) {
                self.pos = i + text.len();
                return;
            }
            if !self.pump(deadline) {
                let why = if self.out_done {
                    "stdout closed"
                } else {
                    "timed out"
                };
                self.fail(&format!("expected {text:?} on stdout ({why})"));
            }
        }
    }

    /// Waits for `before`, then `after`; returns the text between them.
    pub fn expect_between(&mut self, before: &str, after: &str) -> String {
        self.expect(before);
        let start = self.pos;
        self.expect(after);
        let end = self.pos - after.len();
        String::from_utf8_lossy(&self.out[start..end]).into_owned()
    }

    /// Collects stdout for `wait` and returns what arrived after the last match
    /// (without moving past it).
    pub fn output_for(&mut self, wait: Duration) -> String {
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if !self.pump(deadline) && self.out_done {
                break;
            }
        }
        String::from_utf8_lossy(&self.out[self.pos..]).into_owned()
    }

    /// All stdout received so far.
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.out).into_owned()
    }

    /// All stderr received so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.err.lock().unwrap()).into_owned()
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        if self.status.is_some() {
            return false;
        }
        match self.child.try_wait().expect("try_wait") {
            Some(status) => {
                self.status = Some(status);
                false
            }
            None => true,
        }
    }

    /// Waits (bounded) for the process to exit; returns its status.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        while self.is_running() {
            if Instant::now() >= deadline {
                self.fail("the client did not exit in time");
            }
            thread::sleep(Duration::from_millis(20));
        }
        // Collect the rest of stdout for later assertions and messages.
        let until = Instant::now() + Duration::from_secs(2);
        while self.pump(until) {}
        self.status.unwrap()
    }

    /// SIGKILL: the process dies at once; its sockets are closed by the kernel.
    pub fn kill_hard(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
    }

    /// Panics with stdout, stderr and what was typed.
    pub fn fail(&self, msg: &str) -> ! {
        panic!(
            "[{}] {msg}\n--- typed ---\n{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.label,
            self.sent.join("\n"),
            self.output(),
            self.stderr()
        );
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------
// Chat sessions (used by tests/sessions.rs)
// ---------------------------------------------------------------------------------------

/// Starts a server process on `dir` with `opts`, listening on `addr` (port 0: any free
/// port), and reads the address it prints first. On failure the process is reaped and
/// the reason comes back with its log.
fn launch(
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

/// One row of the server's `sessions` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    pub id: i64,
    pub requester: String,
    pub target: String,
    pub started_at_ms: i64,
    pub accepted_at_ms: Option<i64>,
    pub ended_at_ms: Option<i64>,
    pub end_reason: Option<String>,
}

/// Every row of the `sessions` table, by id (the server may be running: WAL mode).
pub fn db_sessions(db: &Path) -> Vec<SessionRow> {
    if let Some(url) = pg_url_of(db) {
        let int = |v: &Option<String>| v.as_deref().and_then(|v| v.parse::<i64>().ok());
        return pg_rows(
            &url,
            "SELECT id, requester, target, started_at_ms, accepted_at_ms, ended_at_ms, end_reason
             FROM sessions ORDER BY id",
        )
        .into_iter()
        .map(|r| SessionRow {
            id: int(&r[0]).unwrap_or_default(),
            requester: r[1].clone().unwrap_or_default(),
            target: r[2].clone().unwrap_or_default(),
            started_at_ms: int(&r[3]).unwrap_or_default(),
            accepted_at_ms: int(&r[4]),
            ended_at_ms: int(&r[5]),
            end_reason: r[6].clone(),
        })
        .collect();
    }
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open database");
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT id, requester, target, started_at_ms, accepted_at_ms, ended_at_ms, end_reason
             FROM sessions ORDER BY id",
        )
        .expect("prepare");
    stmt.query_map([], |r| {
        Ok(SessionRow {
            id: r.get(0)?,
            requester: r.get(1)?,
            target: r.get(2)?,
            started_at_ms: r.get(3)?,
            accepted_at_ms: r.get(4)?,
            ended_at_ms: r.get(5)?,
            end_reason: r.get(6)?,
        })
    })
    .expect("query sessions")
    .map(|r| r.expect("row"))
    .collect()
}

/// Polls the `sessions` table (for up to `POLL`) until the row with `id` satisfies
/// `ok`; returns it. Panics with the table if it never does.
pub fn wait_session_row(
    db: &Path,
    id: i64,
    what: &str,
    ok: impl Fn(&SessionRow) -> bool,
) -> SessionRow {
    let deadline = Instant::now() + POLL;
    loop {
        let rows = db_sessions(db);
        if let Some(row) = rows.iter().find(|r| r.id == id && ok(r)) {
            return row.clone();
        }
        if Instant::now() >= deadline {
            panic!("session {id}: {what}, not seen within {POLL:?}; table:\n{rows:#?}");
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// True if `line` is a chat line as the client prints it:
/// `[<prefix>][HH:MM:SS] <sender>: <text>`, where prefix is `(peer) ` or nothing.
pub fn is_chat_line(line: &str, prefix: Option<&str>, sender: &str, text: &str) -> bool {
    let rest = match prefix {
        Some(p) => match line.strip_prefix(&format!("({p}) ")) {
            Some(rest) => rest,
            None => return false,
        },
        None => line,
    };
    let b = rest.as_bytes();
    if b.len() < 11 || b[0] != b'[' || b[9] != b']' || b[10] != b' ' {
        return false;
    }
    let clock_ok = b[1..9].iter().enumerate().all(|(i, c)| {
        if i == 2 || i == 5 {
            *c == b':'
        } else {
            c.is_ascii_digit()
        }
    });
    clock_ok && rest[11..] == format!("{sender}: {text}")
}

impl Client {
    /// Starts a client with `--port 0` and `args` (e.g. `--data-dir`), and registers
    /// (`new`) or logs in `name`; returns once the welcome line is printed.
    pub fn start_with(
        server: SocketAddr,
        name: &str,
        pass: &str,
        new: bool,
        args: &[&str],
    ) -> Client {
        let mut all = vec!["--port", "0"];
        all.extend_from_slice(args);
        let mut c = Client::spawn(server, &all).named(name);
        c.expect("Are you a new client? (Y/N): ");
        if new {
            c.send("y");
            c.expect("Choose a username: ");
            c.send(name);
            c.expect("Choose a password: ");
            c.send(pass);
            c.expect(&format!("Registered as {name}."));
        } else {
            c.send("n");
            c.expect("Username: ");
            c.send(name);
            c.expect("Password: ");
            c.send(pass);
            c.expect(&format!("Logged in as {name}."));
        }
        c.expect_welcome(name, 0);
        c
    }

    /// Writes many lines to stdin in one write.
    pub fn send_all(&mut self, lines: &[String]) {
        let mut bytes = Vec::new();
        for line in lines {
            bytes.extend_from_slice(line.as_bytes());
            bytes.push(b'\n');
        }
        self.sent.push(format!("({} lines at once)", lines.len()));
        let result = match self.stdin.as_mut() {
            Some(stdin) => stdin.write_all(&bytes).and_then(|_| stdin.flush()),
            None => Err(io::Error::other("stdin already closed")),
        };
        if let Err(e) = result {
            self.fail(&format!(
                "writing {} lines to stdin failed: {e}",
                lines.len()
            ));
        }
    }

    /// Waits until a complete stdout line after the previous match satisfies `ok`;
    /// moves past that line and returns it. `what` describes it in failure messages.
    pub fn expect_line(&mut self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        let mut scanned = self.pos;
        loop {
            // Only complete lines; `scanned` skips those already rejected.
            while let Some(nl) = self.out[scanned..].iter().position(|&b| b == b'\n') {
                let end = scanned + nl;
                let line = String::from_utf8_lossy(&self.out[scanned..end]).into_owned();
                scanned = end + 1;
                if ok(&line) {
                    self.pos = scanned;
                    return line;
                }
            }
            if !self.pump(deadline) {
                let why = if self.out_done {
                    "stdout closed"
                } else {
                    "timed out"
                };
                self.fail(&format!("expected a line: {what} ({why})"));
            }
        }
    }

    /// Waits for the chat line `[HH:MM:SS] sender: text` (with `(prefix) ` before it if
    /// given) after the previous match.
    pub fn expect_chat(&mut self, prefix: Option<&str>, sender: &str, text: &str) -> String {
        let what = match prefix {
            Some(p) => format!("({p}) [HH:MM:SS] {sender}: {text}"),
            None => format!("[HH:MM:SS] {sender}: {text}"),
        };
        self.expect_line(&what, |l| is_chat_line(l, prefix, sender, text))
    }

    /// Where the next `expect` starts searching (a byte offset in `output()`).
    pub fn mark(&self) -> usize {
        self.pos
    }
}

// ---------------------------------------------------------------------------------------
// Hostile-input and load tests (tests/hostile.rs, tests/load.rs)
// ---------------------------------------------------------------------------------------

impl Wire {
    /// Connects like `connect`, but returns the error instead of panicking (e.g. when
    /// the server may just have been killed).
    pub fn try_connect(addr: SocketAddr) -> io::Result<Wire> {
        let stream = TcpStream::connect_timeout(&addr, WAIT)?;
        Ok(Wire::from_stream(stream))
    }

    /// Wraps a socket the test opened or accepted itself (a raw peer's side of a link).
    pub fn from_accepted(stream: TcpStream, label: &str) -> Wire {
        stream.set_nonblocking(false).unwrap();
        Wire::from_stream(stream).named(label)
    }

    /// Takes the events read so far (so a long-lived connection does not pile them up).
    pub fn take_events(&mut self) -> Vec<String> {
        self.events.drain(..).collect()
    }

    /// Forgets the transcript so far (long-lived connections in load tests).
    pub fn clear_transcript(&mut self) {
        self.transcript.clear();
    }
}

impl Client {
    /// The process id (to send it a signal from another thread).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

// ---------------------------------------------------------------------------------------
// Real clients in one temporary folder (used by sessions, hostile and files tests)
// ---------------------------------------------------------------------------------------

/// A test's clients: one temp dir holding a data dir (and a share dir) per user.
pub struct Lab {
    dir: TempDir,
    server: SocketAddr,
}

impl Lab {
    pub fn new(server: &Server) -> Lab {
        Lab {
            dir: TempDir::new().expect("temp dir"),
            server: server.addr,
        }
    }

    pub fn data_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}-data"))
    }

    pub fn share_dir(&self, name: &str) -> PathBuf {
        let dir = self.dir.path().join(format!("{name}-share"));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// The default downloads folder of `name` (inside its data dir).
    pub fn downloads(&self, name: &str) -> PathBuf {
        self.data_dir(name).join(name).join("downloads")
    }

    /// Registers `name` with a real client (own data dir, `extra` flags).
    pub fn register(&self, name: &str, extra: &[&str]) -> Client {
        self.start(name, true, extra)
    }

    /// Logs `name` in again with a real client on the same data dir.
    pub fn login(&self, name: &str, extra: &[&str]) -> Client {
        self.start(name, false, extra)
    }

    /// Registers `name` with a real client sharing its share dir.
    pub fn register_sharing(&self, name: &str) -> Client {
        let share = self.share_dir(name);
        let mut c = self.register(name, &["--share", share.to_str().unwrap()]);
        c.expect_line("the sharing line", |l| l.starts_with("* sharing "));
        c
    }

    fn start(&self, name: &str, new: bool, extra: &[&str]) -> Client {
        let data = self.data_dir(name);
        let data = data.to_str().unwrap();
        let mut args = vec!["--data-dir", data];
        args.extend_from_slice(extra);
        Client::start_with(self.server, name, &password(name), new, &args)
    }
}

/// The password every test user gets.
pub fn password(name: &str) -> String {
    format!("{name} password")
}

/// `requester` asks `target` (both real clients) and `target` accepts; waits until both
/// print that the session is open.
pub fn open_session(requester: &mut Client, rname: &str, target: &mut Client, tname: &str) {
    requester.send(&format!("\\connect {tname}"));
    requester.expect(&format!("* asking {tname} to chat..."));
    target.expect(&format!(
        "* {rname} wants to chat: \\accept {rname} or \\decline {rname}"
    ));
    target.send(&format!("\\accept {rname}"));
    target.expect(&format!(
        "* session with {rname} open; what you type goes to {rname}\n"
    ));
    requester.expect(&format!(
        "* session with {tname} open; what you type goes to {tname}\n"
    ));
}

// ---- H1 (protocol doc, server limits) ----

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

// ---- H3: login limits, request limits, flags ----

/// A loopback source address per index: 127.0.0.2, 127.0.0.3, ... (then 127.0.1.x), so
/// a test can act from many addresses at once.
pub fn loopback(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, (i / 250) as u8, (2 + i % 250) as u8))
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

impl Wire {
    /// Sends `SHARE <n>` and its `n` lines in one write (no reply read).
    pub fn send_share(&mut self, lines: &[String]) {
        let mut text = format!("SHARE {}\n", lines.len());
        for line in lines {
            text.push_str(line);
            text.push('\n');
        }
        self.transcript
            .push(format!("> SHARE {} (+{} lines)", lines.len(), lines.len()));
        if let Err(e) = lock_out(&self.output).write_all(text.as_bytes()) {
            self.fail(&format!("sending SHARE failed: {e}"));
        }
    }

    /// Like [`Wire::connect_from`], but returns the error instead of panicking (for
    /// servers that may be gone).
    pub fn try_connect_from(addr: SocketAddr, ip: IpAddr) -> io::Result<Wire> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.bind(&SocketAddr::new(ip, 0).into())?;
        socket.connect_timeout(&addr.into(), WAIT)?;
        Ok(Wire::from_stream(socket.into()))
    }
}

// ---- W2: encrypted links (TLS to the server, Noise between peers) ----

/// Fingerprints of the servers this test binary started, by address, so every `Wire`
/// to a server speaks TLS pinned to the right certificate.
static SERVER_FINGERPRINTS: Mutex<Vec<(SocketAddr, String)>> = Mutex::new(Vec::new());

/// The prefix of the server's second stdout line.
pub const FINGERPRINT_LINE: &str = "TLS certificate SHA-256 fingerprint: ";

/// Reads the server's fingerprint line and remembers it for `addr`.
fn note_server_fingerprint(addr: SocketAddr, rx: &Receiver<String>) -> Result<(), String> {
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

/// The write half a `Wire` shares with its `clone_stream` handles.
pub type SharedOut = Arc<Mutex<Box<dyn Write + Send>>>;

fn lock_out(out: &SharedOut) -> std::sync::MutexGuard<'_, Box<dyn Write + Send>> {
    out.lock().unwrap_or_else(|p| p.into_inner())
}

/// Plaintext out over TLS: every write is sealed and sent at once; `flush` sends the
/// records rustls has ready (handshake answers).
struct TlsOut {
    sock: TcpStream,
    sealer: peerchat::crypto::tls::TlsSealer,
    sealed: Vec<u8>,
}

impl Write for TlsOut {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.sealed.clear();
        self.sealer.seal(buf, &mut self.sealed)?;
        self.sock.write_all(&self.sealed)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.sealed.clear();
        self.sealer.pending(&mut self.sealed)?;
        self.sock.write_all(&self.sealed)
    }
}

/// The two halves for a new connection: TLS pinned to the server's fingerprint when
/// `stream` goes to a server this binary started (the handshake is run here), the bare
/// socket otherwise. The bool is true if the server closed during the handshake.
fn secure_halves(stream: &TcpStream) -> (Box<dyn Read + Send>, SharedOut, bool) {
    let plain = || -> (Box<dyn Read + Send>, SharedOut, bool) {
        (
            Box::new(stream.try_clone().unwrap()),
            Arc::new(Mutex::new(Box::new(stream.try_clone().unwrap()))),
            false,
        )
    };
    let Some(fp) = stream.peer_addr().ok().and_then(server_fingerprint) else {
        return plain();
    };
    tls_halves(stream, peerchat::crypto::tls::Trust::Pinned(fp))
}

/// TLS halves over `stream` with the given trust; runs the handshake (bounded by
/// `WAIT`). The bool is true if the link ended during the handshake.
pub fn tls_halves(
    stream: &TcpStream,
    trust: peerchat::crypto::tls::Trust,
) -> (Box<dyn Read + Send>, SharedOut, bool) {
    use peerchat::protocol::line::ReadTimeout;
    let (config, _seen) = peerchat::crypto::tls::client_config(trust).unwrap();
    let (mut reader, sealer) = peerchat::crypto::tls::client(stream, config).unwrap();
    let out: SharedOut = Arc::new(Mutex::new(Box::new(TlsOut {
        sock: stream.try_clone().unwrap(),
        sealer: sealer.clone(),
        sealed: Vec::new(),
    })));
    let nudged = Arc::clone(&out);
    reader.set_nudge(Box::new(move || {
        let _ = lock_out(&nudged).flush();
    }));
    let _ = lock_out(&out).flush();
    let deadline = Instant::now() + WAIT;
    let mut ended = false;
    while reader.is_handshaking() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            panic!("TLS handshake with {:?} took too long", stream.peer_addr());
        }
        reader.set_read_timeout(Some(left)).unwrap();
        match reader.pump() {
            Ok(true) => {}
            Ok(false) | Err(_) => {
                ended = true;
                break;
            }
        }
    }
    (Box::new(reader), out, ended)
}

/// A second handle on a `Wire`'s link: writes are encrypted like the Wire's own and
/// never interleave with them; reads come straight off the socket (plain links only).
pub struct WireStream {
    sock: TcpStream,
    out: SharedOut,
}

impl WireStream {
    /// Sets the socket's write timeout.
    pub fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.sock.set_write_timeout(t)
    }

    /// Sets the socket's read timeout.
    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.sock.set_read_timeout(t)
    }
}

impl Write for WireStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        lock_out(&self.out).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        lock_out(&self.out).flush()
    }
}

impl Read for WireStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.sock.read(buf)
    }
}

impl Wire {
    /// Connects to `addr` (e.g. a proxy in front of a server) speaking TLS with `trust`.
    pub fn connect_tls(addr: SocketAddr, trust: peerchat::crypto::tls::Trust) -> Wire {
        let stream = TcpStream::connect_timeout(&addr, WAIT)
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream.set_nodelay(true).unwrap();
        stream.set_write_timeout(Some(WAIT)).unwrap();
        let label = format!("tls wire {}", stream.local_addr().unwrap());
        let (input, output, eof) = tls_halves(&stream, trust);
        Wire {
            label,
            stream,
            input,
            output,
            buf: Vec::new(),
            eof,
            pushback: VecDeque::new(),
            events: VecDeque::new(),
            transcript: Vec::new(),
            greeted: false,
        }
    }

    /// True once the other side closed (or the link broke).
    pub fn is_closed(&self) -> bool {
        self.eof
    }
}

/// Which way a byte goes through a [`Proxy`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Dir {
    /// From the side that connected to the proxy to the target.
    Up,
    /// From the target back.
    Down,
}

/// What a proxy has seen and what it should change.
#[derive(Default)]
struct ProxyState {
    /// Every byte in each direction, over all connections.
    up: Vec<u8>,
    down: Vec<u8>,
    /// Change the byte at this offset of this direction (of the whole stream so far).
    flip: Option<(Dir, usize)>,
}

/// A forwarding TCP proxy on 127.0.0.1: a sniffer (it records every byte) and, when
/// armed, a tamperer (it flips one byte). Serves at most 16 connections; its threads
/// end when either side closes.
pub struct Proxy {
    /// Where to connect instead of the target.
    pub addr: SocketAddr,
    state: Arc<Mutex<ProxyState>>,
}

impl Proxy {
    /// Starts a proxy in front of `target`.
    pub fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(ProxyState::default()));
        let shared = Arc::clone(&state);
        thread::spawn(move || {
            for _ in 0..16 {
                let Ok((inbound, _)) = listener.accept() else {
                    return;
                };
                let Ok(outbound) = TcpStream::connect_timeout(&target, WAIT) else {
                    continue;
                };
                for (from, to, dir) in [
                    (
                        inbound.try_clone().unwrap(),
                        outbound.try_clone().unwrap(),
                        Dir::Up,
                    ),
                    (outbound, inbound, Dir::Down),
                ] {
                    let state = Arc::clone(&shared);
                    thread::spawn(move || pump_bytes(from, to, dir, &state));
                }
            }
        });
        Proxy { addr, state }
    }

    /// Bytes seen so far going `dir`.
    pub fn seen(&self, dir: Dir) -> Vec<u8> {
        let state = self.state.lock().unwrap();
        match dir {
            Dir::Up => state.up.clone(),
            Dir::Down => state.down.clone(),
        }
    }

    /// Flips (xor 0x01) the byte `ahead` bytes after what has gone `dir` so far.
    pub fn flip_ahead(&self, dir: Dir, ahead: usize) {
        let mut state = self.state.lock().unwrap();
        let at = match dir {
            Dir::Up => state.up.len(),
            Dir::Down => state.down.len(),
        } + ahead;
        state.flip = Some((dir, at));
    }
}

fn pump_bytes(mut from: TcpStream, mut to: TcpStream, dir: Dir, state: &Mutex<ProxyState>) {
    let _ = from.set_read_timeout(Some(Duration::from_secs(60)));
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        {
            let mut state = state.lock().unwrap();
            let seen = match dir {
                Dir::Up => &mut state.up,
                Dir::Down => &mut state.down,
            };
            let start = seen.len();
            seen.extend_from_slice(&buf[..n]);
            if let Some((d, at)) = state.flip
                && d == dir
                && at >= start
                && at < start + n
            {
                buf[at - start] ^= 0x01;
                state.flip = None;
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

/// True if `needle` occurs anywhere in `hay`.
pub fn contains_bytes(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// `--server-fingerprint` of a server this binary started, unless the test decides
/// about trust itself.
fn trust_args(server: SocketAddr, args: &[&str]) -> Vec<String> {
    let decides = args
        .iter()
        .any(|a| *a == "--server-fingerprint" || *a == "--trust-first-use");
    match server_fingerprint(server) {
        Some(fp) if !decides => vec!["--server-fingerprint".into(), fp],
        _ => Vec::new(),
    }
}

/// A blocking TLS server side for a fake server written in a test.
pub type FakeTls = rustls::StreamOwned<rustls::ServerConnection, TcpStream>;

/// A certificate for a fake server: its TLS configuration and the fingerprint to give
/// the client (`--server-fingerprint`). The folder holds the key; keep it alive.
pub fn fake_server_tls() -> (Arc<rustls::ServerConfig>, String, TempDir) {
    let dir = TempDir::new().unwrap();
    let id = peerchat::crypto::tls::ServerIdentity::load_or_create(
        None,
        None,
        &dir.path().join("fake.db"),
    )
    .unwrap();
    (id.server_config().unwrap(), id.fingerprint(), dir)
}

/// Accepts one connection on `listener` and wraps it in TLS (the handshake runs on the
/// first read or write).
pub fn accept_tls(listener: &TcpListener, config: Arc<rustls::ServerConfig>) -> FakeTls {
    let (stream, _) = listener.accept().expect("accept the client");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let conn = rustls::ServerConnection::new(config).unwrap();
    rustls::StreamOwned::new(conn, stream)
}

/// Reads one line (without its `\n`) from a fake server's TLS stream; empty at the end.
pub fn read_tls_line(tls: &mut FakeTls) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while let Ok(1) = tls.read(&mut byte) {
        if byte[0] == b'\n' {
            break;
        }
        line.push(byte[0]);
    }
    String::from_utf8_lossy(&line).into_owned()
}

impl Wire {
    /// The server's side of an accepted connection, speaking TLS with `config` (a fake
    /// server in a test); the handshake is run here.
    pub fn accepted_tls(stream: TcpStream, label: &str, config: Arc<rustls::ServerConfig>) -> Wire {
        use peerchat::protocol::line::ReadTimeout;
        stream.set_nodelay(true).unwrap();
        stream.set_write_timeout(Some(WAIT)).unwrap();
        let (mut reader, sealer) = peerchat::crypto::tls::server(&stream, config).unwrap();
        let output: SharedOut = Arc::new(Mutex::new(Box::new(TlsOut {
            sock: stream.try_clone().unwrap(),
            sealer: sealer.clone(),
            sealed: Vec::new(),
        })));
        let nudged = Arc::clone(&output);
        reader.set_nudge(Box::new(move || {
            let _ = lock_out(&nudged).flush();
        }));
        let deadline = Instant::now() + WAIT;
        let mut eof = false;
        while reader.is_handshaking() && !eof {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "TLS handshake (server side) took too long");
            reader.set_read_timeout(Some(left)).unwrap();
            eof = !matches!(reader.pump(), Ok(true));
        }
        Wire {
            label: label.to_string(),
            stream,
            input: Box::new(reader),
            output,
            buf: Vec::new(),
            eof,
            pushback: VecDeque::new(),
            events: VecDeque::new(),
            transcript: Vec::new(),
            greeted: false,
        }
    }
}

// ---- W5: clients started by a given command (network namespaces) ----

impl Client {
    /// Starts a client from a prepared `cmd` (for example `ip netns exec NS
    /// peerchat-client ...`), with its pipes read as `spawn` does.
    pub fn spawn_command(mut cmd: Command) -> Client {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn a client command");
        let mut stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            loop {
                match stdout.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.send(chunk[..n].to_vec()).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        let err = Arc::new(Mutex::new(Vec::new()));
        let err2 = err.clone();
        thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            loop {
                match stderr.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => err2.lock().unwrap().extend_from_slice(&chunk[..n]),
                }
            }
        });
        let stdin = child.stdin.take();
        Client {
            label: "client".into(),
            child,
            stdin,
            rx,
            out: Vec::new(),
            pos: 0,
            out_done: false,
            err,
            status: None,
            sent: Vec::new(),
            _data: None,
        }
    }
}

// ---- W6: Noise on peer links (issue 12) ----

/// Noise halves over `stream` after the handshake `run` performs: a plaintext reader and
/// a shared plaintext writer, as [`Wire`] uses them.
fn noise_halves(h: peerchat::crypto::noise::Handshaken) -> (Box<dyn Read + Send>, SharedOut) {
    (Box::new(h.reader), Arc::new(Mutex::new(Box::new(h.writer))))
}

impl Wire {
    /// Connects to a peer listener at `addr` and runs the Noise handshake as the
    /// initiator with `ticket` (a fresh key of our own; the listener's key is not
    /// checked). Afterwards the Wire behaves exactly like a plain one: lines and bytes
    /// travel inside Noise.
    pub fn peer(addr: SocketAddr, ticket: &str) -> Wire {
        Wire::try_peer(addr, ticket).unwrap_or_else(|e| panic!("noise to {addr}: {e}"))
    }

    /// [`Wire::peer`], returning the handshake's error (e.g. a wrong ticket).
    pub fn try_peer(addr: SocketAddr, ticket: &str) -> io::Result<Wire> {
        use peerchat::crypto::noise;
        let stream = TcpStream::connect_timeout(&addr, WAIT)?;
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(WAIT))?;
        // One key for every raw peer of this test binary: a client pins the key of each
        // name it meets, so a raw "mallory" must keep hers across connections.
        let private = raw_peer_key().0;
        let h = noise::initiate(&stream, &private, ticket, None, Instant::now() + WAIT)?;
        let label = format!("noise wire {}", stream.local_addr()?);
        Ok(Wire::over_noise(stream, h, label))
    }

    /// The listener's side for a connection a client made to us (e.g. a raw peer that
    /// was granted `ticket`): runs the Noise handshake as the responder, accepting only
    /// `ticket`, then behaves like [`Wire::from_accepted`].
    pub fn accepted_peer(stream: TcpStream, ticket: &str, label: &str) -> Wire {
        use peerchat::crypto::noise;
        stream.set_nonblocking(false).unwrap();
        stream.set_nodelay(true).unwrap();
        stream.set_write_timeout(Some(WAIT)).unwrap();
        let private = raw_peer_key().0;
        let want = noise::ticket_id(ticket);
        let (h, _) = noise::respond(&stream, &private, Instant::now() + WAIT, |id| {
            (*id == want).then(|| ticket.to_string())
        })
        .unwrap_or_else(|e| panic!("{label}: noise handshake: {e}"));
        Wire::over_noise(stream, h, label.to_string())
    }

    fn over_noise(
        stream: TcpStream,
        h: peerchat::crypto::noise::Handshaken,
        label: String,
    ) -> Wire {
        let (input, output) = noise_halves(h);
        Wire {
            label,
            stream,
            input,
            output,
            buf: Vec::new(),
            eof: false,
            pushback: VecDeque::new(),
            events: VecDeque::new(),
            transcript: Vec::new(),
            greeted: false,
        }
    }
}

// ---- x2: Noise on every peer connection ----

impl Wire {
    /// Runs the Noise handshake with the peer listener at `addr` with `ticket`, which the
    /// listener must refuse in clear before the handshake: returns its `ERR` line.
    pub fn refused_peer(addr: SocketAddr, ticket: &str) -> String {
        match Wire::try_peer(addr, ticket) {
            Ok(w) => w.fail("the listener completed a handshake it should have refused"),
            Err(e) => match e
                .get_ref()
                .and_then(|r| r.downcast_ref::<peerchat::crypto::noise::ClearRefusal>())
            {
                Some(line) => line.0.clone(),
                None => panic!("expected a refusal in clear from {addr}, got {e}"),
            },
        }
    }
}

/// The key pair raw peers of this test binary use (`Wire::peer`, `Wire::accepted_peer`).
pub fn raw_peer_key() -> ([u8; 32], [u8; 32]) {
    static KEY: std::sync::OnceLock<([u8; 32], [u8; 32])> = std::sync::OnceLock::new();
    *KEY.get_or_init(|| peerchat::crypto::noise::generate_keypair().expect("a key pair"))
}

impl Wire {
    /// [`Wire::try_peer`] with the given private key (e.g. to play a user whose key
    /// changed) and the key the listener must prove (`None`: any).
    pub fn try_peer_as(
        addr: SocketAddr,
        ticket: &str,
        private: &[u8; 32],
        expect: Option<&[u8; 32]>,
    ) -> io::Result<Wire> {
        use peerchat::crypto::noise;
        let stream = TcpStream::connect_timeout(&addr, WAIT)?;
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(WAIT))?;
        let h = noise::initiate(&stream, private, ticket, expect, Instant::now() + WAIT)?;
        let label = format!("noise wire {}", stream.local_addr()?);
        Ok(Wire::over_noise(stream, h, label))
    }
}

impl Wire {
    /// [`Wire::peer`] over a socket the test connected itself (e.g. with small buffers).
    pub fn peer_on(stream: TcpStream, ticket: &str, label: &str) -> Wire {
        use peerchat::crypto::noise;
        stream.set_nodelay(true).unwrap();
        stream.set_write_timeout(Some(WAIT)).unwrap();
        let private = raw_peer_key().0;
        let h = noise::initiate(&stream, &private, ticket, None, Instant::now() + WAIT)
            .unwrap_or_else(|e| panic!("{label}: noise handshake: {e}"));
        Wire::over_noise(stream, h, label.to_string())
    }
}

/// Dials the relay at `addr` with `token` and waits, reading byte by byte (so nothing of
/// the peer's first bytes is taken), until paired: the returned socket is end to end.
pub fn relay_meet(addr: SocketAddr, token: &str) -> TcpStream {
    let mut stream = TcpStream::connect_timeout(&addr, WAIT).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream
        .write_all(format!("RELAY {token}\r\n").as_bytes())
        .unwrap();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while stream.read_exact(&mut byte).is_ok() && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    let line = String::from_utf8_lossy(&line).trim_end().to_string();
    assert_eq!(line, "OK RELAYED", "the relay answered {line:?}");
    stream.set_read_timeout(None).unwrap();
    stream
}

/// A well-formed Noise message 1 (with its 2-byte length) naming ticket id `id`, from a
/// fresh ephemeral key: what anyone can send without holding the ticket (the ticket is
/// mixed in only at message 3).
pub fn forged_message_1(id: &[u8; 16]) -> Vec<u8> {
    let mut hs = snow::Builder::new(peerchat::crypto::noise::PATTERN.parse().unwrap())
        .local_private_key(&raw_peer_key().0)
        .unwrap()
        .psk(3, &[0u8; 32])
        .unwrap()
        .prologue(b"peerchat peer link v1")
        .unwrap()
        .build_initiator()
        .unwrap();
    let mut msg = vec![0u8; 1024];
    let n = hs.write_message(id, &mut msg).unwrap();
    let mut frame = (n as u16).to_be_bytes().to_vec();
    frame.extend_from_slice(&msg[..n]);
    frame
}

// ---- x6 redis ----

/// A real `redis-server` (Debian's package) on a free loopback port, in its own temporary
/// folder, with no persistence; stopped on Drop. For the cluster tests (tests/cluster.rs).
pub struct Redis {
    child: Option<Child>,
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    /// Its working folder (nothing is saved there).
    _dir: TempDir,
}

impl Redis {
    /// Starts one, or returns `None` after printing why when `redis-server` is not
    /// installed (`.ci/run` installs it; a developer's machine may lack it).
    pub fn start() -> Option<Redis> {
        let installed = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            eprintln!("SKIP: redis-server is not installed (apt-get install redis-server)");
            return None;
        }
        // A free port can be taken between the check and the bind: try a few.
        let mut last = String::new();
        for _ in 0..5 {
            let dir = TempDir::new().expect("temp dir for redis");
            let port = free_port();
            let mut child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(dir.path())
                .args(["--daemonize", "no", "--loglevel", "warning"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn redis-server");
            let deadline = Instant::now() + WAIT;
            while Instant::now() < deadline {
                if let Ok(Some(status)) = child.try_wait() {
                    let mut err = String::new();
                    if let Some(mut e) = child.stderr.take() {
                        let _ = e.read_to_string(&mut err);
                    }
                    last = format!("redis-server exited ({status}): {err}");
                    break;
                }
                if redis_ping(port) {
                    return Some(Redis {
                        child: Some(child),
                        port,
                        _dir: dir,
                    });
                }
                thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("could not start redis-server: {last}");
    }

    /// The URL for `--cluster`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops it now (SIGKILL), as a crash or an outage would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// True if a Redis on `port` answers `PING` with `+PONG`.
fn redis_ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    stream.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

impl ServerBuilder {
    /// Starts the server on the folder (and so the database and TLS identity) of
    /// `other`: two servers of one cluster share one database.
    pub fn start_beside(self, other: &Server) -> Server {
        Server::spawn(other.dir.clone(), self)
    }
}

// ---- x5 postgres ----

/// A real PostgreSQL server from Debian's packages (`initdb`, `pg_ctl`), in a temporary
/// folder, listening on 127.0.0.1 on a free port and on a unix socket in that folder,
/// with fsync off (test data only). As root it runs as the `postgres` user (PostgreSQL
/// refuses root). Stopped and deleted on drop.
pub struct Postgres {
    /// The cluster's folder (data, socket, log).
    dir: TempDir,
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
    /// Where `pg_ctl` is.
    bin: PathBuf,
    /// `(uid, gid)` to run the tools as, when we are root.
    run_as: Option<(u32, u32)>,
}

/// Counts databases made in this test binary, for unique names.
static PG_DATABASES: AtomicUsize = AtomicUsize::new(0);

/// The folder with `initdb` and `pg_ctl`: the newest /usr/lib/postgresql/*/bin, else
/// the PATH.
fn postgres_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .find(|d| d.join("initdb").exists() && d.join("pg_ctl").exists())
    })
}

/// A fresh `initdb` cluster for the PostgreSQL in `bin`, made once and kept in the
/// target folder (`CARGO_TARGET_TMPDIR`) for every test binary and run: instances copy
/// it (`cp -a`) instead of running `initdb` each. Made in a temporary folder and renamed
/// into place, so a concurrent test binary never sees half of one (the loser of a race
/// deletes its own copy).
fn pg_template(bin: &Path, run_as: Option<(u32, u32)>) -> Result<PathBuf, String> {
    use std::os::unix::process::CommandExt;
    let tag: String = bin
        .display()
        .to_string()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let template = root.join(format!("pg-template{tag}"));
    if template.join("PG_VERSION").exists() {
        return Ok(template);
    }
    let work = tempfile::Builder::new()
        .prefix("pg-initdb")
        .tempdir_in(root)
        .map_err(|e| e.to_string())?;
    if let Some((uid, gid)) = run_as {
        std::os::unix::fs::chown(work.path(), Some(uid), Some(gid)).map_err(|e| e.to_string())?;
    }
    let data = work.path().join("data");
    let mut initdb = Command::new(bin.join("initdb"));
    initdb
        .args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-locale",
            "-N",
            "-D",
        ])
        .arg(&data)
        .current_dir(work.path())
        .stdin(Stdio::null());
    if let Some((uid, gid)) = run_as {
        initdb.uid(uid).gid(gid);
    }
    let out = initdb
        .output()
        .map_err(|e| format!("running {initdb:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{initdb:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    // Another binary may have won the race: its template is as good as ours.
    if fs::rename(&data, &template).is_err() && !template.join("PG_VERSION").exists() {
        return Err(format!("could not keep {}", template.display()));
    }
    Ok(template)
}

/// The uid and gid of the `postgres` user, from /etc/passwd.
fn postgres_user() -> Option<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    let line = passwd.lines().find(|l| l.starts_with("postgres:"))?;
    let fields: Vec<&str> = line.split(':').collect();
    Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?))
}

impl Postgres {
    /// Starts a new PostgreSQL, or says why not (not installed, say) in `Err`.
    pub fn start() -> Result<Postgres, String> {
        use std::os::unix::process::CommandExt;
        let bin = postgres_bin().ok_or("PostgreSQL is not installed (no initdb/pg_ctl)")?;
        let root = unsafe { libc::geteuid() } == 0;
        let run_as = if root {
            Some(postgres_user().ok_or("running as root and there is no postgres user")?)
        } else {
            None
        };
        let dir = TempDir::new().map_err(|e| e.to_string())?;
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .map_err(|e| e.to_string())?;
        }
        let pg = Postgres {
            dir,
            port: free_port(),
            bin,
            run_as,
        };
        let data = pg.dir.path().join("data");
        // A copy of a cluster `initdb` made once (seconds of CPU, paid by every test
        // binary before): copying it takes a fraction of that.
        let template = pg_template(&pg.bin, run_as)?;
        let copied = Command::new("cp")
            .arg("-a")
            .arg(&template)
            .arg(&data)
            .status()
            .map_err(|e| format!("copying {}: {e}", template.display()))?;
        if !copied.success() {
            return Err(format!("copying {} failed", template.display()));
        }
        let mut start = Command::new(pg.bin.join("pg_ctl"));
        start
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(pg.dir.path().join("log"))
            .arg("-o")
            .arg(format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
                 -c full_page_writes=off -c max_connections=300",
                pg.port,
                pg.dir.path().display()
            ))
            .args(["-w", "-t", "30", "start"])
            .current_dir(pg.dir.path());
        if let Some((uid, gid)) = pg.run_as {
            start.uid(uid).gid(gid);
        }
        let out = start
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running {start:?}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{start:?} failed: {}{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                fs::read_to_string(pg.dir.path().join("log")).unwrap_or_default()
            ));
        }
        Ok(pg)
    }

    /// The URL of database `name`.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// A client connected to database `name`.
    pub fn client(&self, name: &str) -> postgres::Client {
        postgres::Client::connect(&self.url(name), postgres::NoTls)
            .unwrap_or_else(|e| panic!("connecting to PostgreSQL: {e}"))
    }

    /// Creates a new empty database and returns its name.
    pub fn create_database(&self) -> String {
        let name = format!(
            "t{}_{}",
            std::process::id(),
            PG_DATABASES.fetch_add(1, Ordering::SeqCst)
        );
        self.client("postgres")
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("CREATE DATABASE");
        name
    }

    /// Drops database `name`, cutting off whoever is still connected.
    pub fn drop_database(&self, name: &str) {
        if let Ok(mut c) = postgres::Client::connect(&self.url("postgres"), postgres::NoTls) {
            let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        use std::os::unix::process::CommandExt;
        let mut stop = Command::new(self.bin.join("pg_ctl"));
        stop.arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "-t", "30", "stop"])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((uid, gid)) = self.run_as {
            stop.uid(uid).gid(gid);
        }
        let _ = stop.status();
    }
}

/// One PostgreSQL for the whole test binary while anyone uses it: started by the first
/// user, stopped when the last `Arc` goes. `Err` says why there is none.
pub fn shared_postgres() -> Result<Arc<Postgres>, String> {
    static SHARED: Mutex<std::sync::Weak<Postgres>> = Mutex::new(std::sync::Weak::new());
    let mut shared = SHARED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(pg) = shared.upgrade() {
        return Ok(pg);
    }
    let pg = Arc::new(Postgres::start()?);
    *shared = Arc::downgrade(&pg);
    Ok(pg)
}

/// PostgreSQL for a test that needs one, or `None` after printing a plain skip message
/// when PostgreSQL is not installed. Under `PEERCHAT_TEST_DB=postgres` a missing
/// PostgreSQL fails the test instead.
pub fn postgres_or_skip(test: &str) -> Option<Arc<Postgres>> {
    match shared_postgres() {
        Ok(pg) => Some(pg),
        Err(why) if !postgres_mode() => {
            eprintln!("SKIPPED {test}: {why}");
            None
        }
        Err(why) => panic!("{test}: PEERCHAT_TEST_DB=postgres but {why}"),
    }
}

/// True when the server suite runs against PostgreSQL (`PEERCHAT_TEST_DB=postgres`).
pub fn postgres_mode() -> bool {
    std::env::var("PEERCHAT_TEST_DB").is_ok_and(|v| v == "postgres")
}

/// A database of the shared PostgreSQL, dropped when the last server using it goes.
pub struct PgDatabase {
    /// Keeps the PostgreSQL running.
    pub pg: Arc<Postgres>,
    /// The database's name.
    pub name: String,
}

impl PgDatabase {
    /// Creates a new database on `pg`.
    pub fn create(pg: &Arc<Postgres>) -> PgDatabase {
        PgDatabase {
            pg: Arc::clone(pg),
            name: pg.create_database(),
        }
    }

    /// Its URL, for `--db`.
    pub fn url(&self) -> String {
        self.pg.url(&self.name)
    }

    /// A client connected to it.
    pub fn client(&self) -> postgres::Client {
        self.pg.client(&self.name)
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        self.pg.drop_database(&self.name);
    }
}

/// The PostgreSQL database behind each server folder in postgres mode, while a server of
/// that folder lives (restarts share it).
static PG_FOLDERS: Mutex<Vec<(PathBuf, std::sync::Weak<PgDatabase>)>> = Mutex::new(Vec::new());

/// The `--db` (and, in postgres mode, TLS) arguments for a server in `dir`. In postgres
/// mode the folder's database is made on first use, its URL written to `dir/pg-url` (the
/// db helpers read it) and the TLS identity made in `dir` as the SQLite mode would.
fn db_args(dir: &Path, opts: &ServerBuilder) -> (Vec<std::ffi::OsString>, Option<Arc<PgDatabase>>) {
    let db = dir.join("server.db");
    let given = opts
        .args
        .iter()
        .position(|a| a == "--db")
        .and_then(|i| opts.args.get(i + 1));
    let (mut args, database) = match given {
        // The test chose a database itself (two servers on one PostgreSQL, say).
        Some(url) if url.starts_with("postgres") => {
            fs::write(dir.join("pg-url"), url).expect("write pg-url");
            (Vec::new(), None)
        }
        Some(_) => return (Vec::new(), None),
        None if !postgres_mode() => return (vec!["--db".into(), db.into()], None),
        None => {
            let pg = postgres_or_skip("server suite").expect("postgres mode");
            let mut folders = PG_FOLDERS.lock().unwrap_or_else(|p| p.into_inner());
            folders.retain(|(_, weak)| weak.strong_count() > 0);
            let found = folders
                .iter()
                .find(|(d, _)| d == dir)
                .and_then(|(_, w)| w.upgrade());
            let database = found.unwrap_or_else(|| {
                let database = Arc::new(PgDatabase::create(&pg));
                folders.push((dir.to_path_buf(), Arc::downgrade(&database)));
                database
            });
            fs::write(dir.join("pg-url"), database.url()).expect("write pg-url");
            (vec!["--db".into(), database.url().into()], Some(database))
        }
    };

    if !opts.args.iter().any(|a| a == "--tls-cert") {
        peerchat::crypto::tls::ServerIdentity::load_or_create(None, None, &db)
            .expect("TLS identity for a postgres-mode server");
        args.extend([
            "--tls-cert".into(),
            dir.join("server-cert.pem").into(),
            "--tls-key".into(),
            dir.join("server-key.pem").into(),
        ]);
    }
    (args, database)
}

/// The PostgreSQL URL a postgres-mode server of `db`'s folder uses, if any.
pub fn pg_url_of(db: &Path) -> Option<String> {
    fs::read_to_string(db.with_file_name("pg-url")).ok()
}

/// What `peerchat-server sessions --db` should get for the database at `db`: the path,
/// or the URL in postgres mode.
pub fn db_arg(db: &Path) -> std::ffi::OsString {
    pg_url_of(db).map_or_else(|| db.as_os_str().to_owned(), Into::into)
}

/// Rows of a query on a postgres-mode server's database, each column as text (NULL as
/// `None`).
pub fn pg_rows(url: &str, sql: &str) -> Vec<Vec<Option<String>>> {
    let mut client = postgres::Client::connect(url, postgres::NoTls).expect("connect");
    client
        .simple_query(sql)
        .expect("query")
        .into_iter()
        .filter_map(|m| match m {
            postgres::SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_string))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// The rows of each of `queries`, all read in one repeatable-read transaction (one
/// moment of the database), each column as text.
pub fn pg_snapshot<const N: usize>(url: &str, queries: [&str; N]) -> [Vec<Vec<Option<String>>>; N] {
    let mut client = postgres::Client::connect(url, postgres::NoTls).expect("connect");
    let mut tx = client
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .start()
        .expect("begin");
    let result = queries.map(|sql| {
        tx.simple_query(sql)
            .expect("query")
            .into_iter()
            .filter_map(|m| match m {
                postgres::SimpleQueryMessage::Row(row) => Some(
                    (0..row.len())
                        .map(|i| row.get(i).map(str::to_string))
                        .collect(),
                ),
                _ => None,
            })
            .collect()
    });
    tx.commit().expect("commit");
    result
}

/// Skips a test that reads the SQLite file itself when the suite runs on PostgreSQL;
/// true means return now.
pub fn sqlite_only(test: &str) -> bool {
    if postgres_mode() {
        eprintln!("SKIPPED {test} under PostgreSQL: it reads the SQLite file directly");
        return true;
    }
    false
}
