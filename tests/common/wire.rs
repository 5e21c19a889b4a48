//! `Wire`: a raw protocol connection to the server over real TCP (and TLS), with a
//! transcript for failure messages, bounded reads and expectations on replies and events.
//!
//! Owns the raw conversation; the TLS halves it uses are in `tls`, peer-link (Noise)
//! connections in `peer`. It must not start processes.

use super::*;

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
    pub(super) label: String,
    /// The socket (addresses, timeouts); bytes go through `input` and `output`.
    pub(super) stream: TcpStream,
    /// Plaintext in: the socket itself, or a TLS / Noise reader over it.
    pub(super) input: Box<dyn Read + Send>,
    /// Plaintext out, shared with `clone_stream` handles so writes never interleave.
    pub(super) output: SharedOut,
    /// Bytes received but not yet split into lines.
    pub(super) buf: Vec<u8>,
    /// The server closed (or reset) the connection.
    pub(super) eof: bool,
    /// Lines put back with `unread`.
    pub(super) pushback: VecDeque<String>,
    /// Events read while waiting for something else.
    pub(super) events: VecDeque<String>,
    /// Everything sent (`>`) and received (`<`), for failure messages.
    pub(super) transcript: Vec<String>,
    /// `HELLO` and the first `ASK NEW` have been read.
    pub(super) greeted: bool,
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

    pub(super) fn from_stream(stream: TcpStream) -> Wire {
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
