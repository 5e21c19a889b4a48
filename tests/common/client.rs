//! `Client`: the real `peerchat-client` binary driven through stdin/stdout pipes (or
//! started by a given command, e.g. in a network namespace), with bounded `expect`s on
//! what it prints, chat sessions and chat lines.
//!
//! Owns client processes; it must not start servers (`server` does).

use super::*;

/// A running `peerchat-client` process driven through stdin/stdout. Killed on Drop.
///
/// Prompts have no trailing newline, so stdout is read as a byte stream and `expect`
/// searches for text after the point the previous `expect` matched.
pub struct Client {
    /// Name used in failure messages.
    pub(super) label: String,
    pub(super) child: Child,
    pub(super) stdin: Option<ChildStdin>,
    /// Chunks of stdout from the reader thread; disconnected at EOF.
    pub(super) rx: Receiver<Vec<u8>>,
    /// All stdout received so far.
    pub(super) out: Vec<u8>,
    /// `expect` searches `out[pos..]`.
    pub(super) pos: usize,
    /// stdout reached EOF.
    pub(super) out_done: bool,
    /// All stderr so far (reader thread).
    pub(super) err: Arc<Mutex<Vec<u8>>>,
    /// Exit status once reaped.
    pub(super) status: Option<ExitStatus>,
    /// Everything written to stdin, for failure messages.
    pub(super) sent: Vec<String>,
    /// A data folder of its own (`Client::spawn` without `--data-dir`), removed on drop.
    pub(super) _data: Option<TempDir>,
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
    pub(super) fn pump(&mut self, deadline: Instant) -> bool {
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

    pub(super) fn find(&self, text: &str, from: usize) -> Option<usize> {
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

impl Client {
    /// The process id (to send it a signal from another thread).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// `--server-fingerprint` of a server this binary started, unless the test decides
/// about trust itself.
pub(super) fn trust_args(server: SocketAddr, args: &[&str]) -> Vec<String> {
    let decides = args
        .iter()
        .any(|a| *a == "--server-fingerprint" || *a == "--trust-first-use");
    match server_fingerprint(server) {
        Some(fp) if !decides => vec!["--server-fingerprint".into(), fp],
        _ => Vec::new(),
    }
}

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
