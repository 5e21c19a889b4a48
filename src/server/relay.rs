//! The relay: pairs two peers that cannot reach each other by a one-time relay token and
//! copies bytes both ways between them.
//!
//! Owns the relay's listening socket, its pairing table and its circuits. Each client
//! connects out, sends one line `RELAY <token>` and waits; when the other end of the same
//! circuit arrives, both get `OK RELAYED` and from then on the relay copies raw bytes (the
//! peers' Noise stream, end to end encrypted: the relay never sees a ticket, a line or a
//! chunk in clear). The pairing table is a mutex held only to insert and take; each pair
//! gets two copy threads. It runs inside the server by default and as its own process
//! (`peerchat-server --relay-only`). It must not know peerchat's peer or server lines
//! beyond its own first line and `ERR`.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded};

use super::relay_token::{RelaySecret, Side, Token, unix_now};
use crate::protocol::codes::ErrorCode;
use crate::protocol::limits;
use crate::protocol::line::LineReader;

/// Copy threads only move bytes through one buffer.
const COPY_STACK: usize = 128 * 1024;

/// How often a blocked copy thread looks at the idle clock and the stop flag.
const POLL: Duration = Duration::from_millis(500);

/// Relay settings (flags of `peerchat-server`, shared by the in-process relay and
/// `--relay-only`).
#[derive(Debug, Clone, clap::Args)]
pub struct RelayConfig {
    /// Run only a relay (no accounts, no database): pair clients by the tokens a server
    /// holding the same --relay-secret-file issues.
    #[arg(long)]
    pub relay_only: bool,
    /// Where the relay listens. Default: the server's address with a free port (printed
    /// as `relay listening on ADDR`).
    #[arg(long)]
    pub relay_listen: Option<SocketAddr>,
    /// The address clients are told to dial for the relay (a separate relay process, or
    /// the public address of this one). With it and no --relay-listen, no relay runs here.
    #[arg(long)]
    pub relay: Option<SocketAddr>,
    /// File with the secret shared by the server and a separate relay (at least 16
    /// characters, e.g. `openssl rand -hex 32`). Without it the in-process relay makes one.
    #[arg(long)]
    pub relay_secret_file: Option<std::path::PathBuf>,
    /// Relayed circuits at once, in all (1-65536); more: ERR 520 RELAY_FULL.
    #[arg(long, default_value_t = limits::DEFAULT_RELAY_CIRCUITS, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=limits::MAX_MAX_CLIENTS))]
    pub relay_max_circuits: usize,
    /// Relayed circuits at once per requesting user (1-65536); more: ERR 521 RELAY_USER_FULL.
    #[arg(long, default_value_t = limits::DEFAULT_RELAY_CIRCUITS_PER_USER, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=limits::MAX_MAX_CLIENTS))]
    pub relay_max_per_user: usize,
    /// Bytes per second each direction of a circuit may carry (1024-10^10).
    #[arg(long, default_value_t = limits::DEFAULT_RELAY_RATE, value_parser = clap::value_parser!(u64).range(1024..=10_000_000_000))]
    pub relay_rate: u64,
    /// Seconds a circuit may carry nothing either way before it is closed (1-86400).
    #[arg(long, default_value_t = limits::DEFAULT_RELAY_IDLE.as_secs(), value_parser = clap::value_parser!(u64).range(1..=limits::MAX_IDLE_TIMEOUT_SECS))]
    pub relay_idle_secs: u64,
    /// Seconds a relay token is valid after the server issues it (1-3600); an end waits
    /// for its partner until then.
    #[arg(long, default_value_t = limits::DEFAULT_RELAY_TOKEN_TTL.as_secs(), value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub relay_token_secs: u64,
    /// Where clients dial the relay and the secret its tokens are made with, once known
    /// (set by [`start`]); `None` when no relay is reachable.
    #[arg(skip)]
    pub issuing: Option<(SocketAddr, RelaySecret)>,
}

impl RelayConfig {
    /// The secret from --relay-secret-file, or a fresh one for an in-process relay.
    pub fn secret(&self) -> crate::error::Result<RelaySecret> {
        match &self.relay_secret_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    crate::Error::Config(format!(
                        "cannot read the relay secret {}: {e}",
                        path.display()
                    ))
                })?;
                RelaySecret::from_text(&text).map_err(crate::Error::Config)
            }
            None if self.relay_only || self.relay.is_some() => Err(crate::Error::Config(
                "a separate relay needs --relay-secret-file (the same file on both)".into(),
            )),
            None => RelaySecret::random().map_err(|e| crate::Error::Config(e.to_string())),
        }
    }
}

/// Starts the relay this server uses: in this process (listening on --relay-listen, or
/// the server's address with a free port) unless --relay names a separate one without
/// --relay-listen. Records where clients dial and the secret in `config.issuing`, and
/// returns the address a relay in this process listens on.
pub fn start(
    config: &mut RelayConfig,
    server: SocketAddr,
    stop: Arc<AtomicBool>,
) -> crate::error::Result<Option<SocketAddr>> {
    let secret = config.secret()?;
    if config.relay.is_some() && config.relay_listen.is_none() {
        config.issuing = config.relay.map(|addr| (addr, secret));
        return Ok(None);
    }
    let want = config
        .relay_listen
        .unwrap_or_else(|| SocketAddr::new(server.ip(), 0));
    let listener = super::bind(want)
        .map_err(|e| crate::Error::Config(format!("cannot listen for the relay on {want}: {e}")))?;
    let bound = listener.local_addr()?;
    config.issuing = Some((config.relay.unwrap_or(bound), secret.clone()));
    let relay = Relay::new(config.clone(), secret, stop);
    thread::Builder::new()
        .name("relay-accept".into())
        .spawn(move || relay.serve(listener))?;
    Ok(Some(bound))
}

/// An end waiting for its partner: its socket, and where to hand the partner's.
struct Waiting {
    side: Side,
    handoff: Sender<TcpStream>,
}

/// Counts of circuits in use; every change under one mutex, held for arithmetic only.
#[derive(Default)]
struct Counts {
    /// Circuit id → ends connected (1 or 2) and the user it is charged to: a circuit
    /// counts from its first end's arrival until its last end is done.
    live: HashMap<u64, (u8, String)>,
    /// Circuits charged to each user: the requester's, whichever end arrived first. A
    /// target is never charged, so an end waiting for a requester who never comes
    /// cannot use up the target's circuits (found in the round-2 audit: one account
    /// could keep anyone's eight taken with `CONNECT` + `RELAY` eight times a minute).
    per_user: HashMap<String, usize>,
}

/// A running relay's state.
pub struct Relay {
    config: RelayConfig,
    secret: RelaySecret,
    /// Pairing table: circuit id → the end that arrived first.
    waiting: Mutex<HashMap<u64, Waiting>>,
    /// Spent tokens (circuit, side) with their expiry, so a token opens one end once.
    spent: Mutex<HashMap<(u64, Side), u64>>,
    counts: Mutex<Counts>,
    /// Bytes relayed, both directions (for the bench and the log).
    pub bytes: AtomicU64,
    /// Connections being read or waiting (bounded with the circuits).
    pending: AtomicUsize,
    stop: Arc<AtomicBool>,
}

impl Relay {
    /// A relay with these settings and secret, stopped when `stop` is set.
    pub fn new(config: RelayConfig, secret: RelaySecret, stop: Arc<AtomicBool>) -> Arc<Relay> {
        Arc::new(Relay {
            config,
            secret,
            waiting: Mutex::new(HashMap::new()),
            spent: Mutex::new(HashMap::new()),
            counts: Mutex::new(Counts::default()),
            bytes: AtomicU64::new(0),
            pending: AtomicUsize::new(0),
            stop,
        })
    }

    /// Circuits in use now (ends waiting count as one circuit).
    pub fn circuits(&self) -> usize {
        self.counts.lock().map(|c| c.live.len()).unwrap_or(0)
    }

    /// Accepts on `listener` until the stop flag is set (the listener must have a read
    /// timeout, as `server::bind` gives it).
    pub fn serve(self: &Arc<Relay>, listener: TcpListener) {
        while !self.stop.load(Ordering::SeqCst) {
            let stream = match listener.accept() {
                Ok((stream, _)) => stream,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    continue;
                }
                Err(e) => {
                    log::warn!("relay accept failed: {e}");
                    thread::sleep(Duration::from_millis(20));
                    continue;
                }
            };
            // Unpaired connections are bounded by twice the circuit cap plus a margin
            // for first lines being read: a flood of idle sockets costs no threads.
            let cap = self.config.relay_max_circuits * 2 + 64;
            if self.pending.fetch_add(1, Ordering::SeqCst) >= cap {
                self.pending.fetch_sub(1, Ordering::SeqCst);
                refuse(&stream, ErrorCode::RelayFull, "the relay is full");
                continue;
            }
            let relay = Arc::clone(self);
            let spawned = thread::Builder::new()
                .name("relay-conn".into())
                .stack_size(COPY_STACK)
                .spawn(move || {
                    relay.handle(stream);
                    relay.pending.fetch_sub(1, Ordering::SeqCst);
                });
            if spawned.is_err() {
                self.pending.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    fn handle(self: &Arc<Relay>, stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let _ = stream.set_write_timeout(Some(limits::WRITE_TIMEOUT));
        let token = match self.first_line(&stream) {
            Ok(token) => token,
            Err((code, why)) => {
                refuse(&stream, code, &why);
                return;
            }
        };
        if let Err(why) = self.reserve(&token) {
            refuse(&stream, why.0, &why.1);
            return;
        }
        // From here the reservation is released exactly once, when this end is done.
        let done = |relay: &Relay| relay.release(&token);
        // Take the waiting partner or wait ourselves, in one hold of the table, so two
        // ends arriving together never both wait.
        let (handoff, partner) = bounded(1);
        let taken =
            self.waiting
                .lock()
                .ok()
                .and_then(|mut table| match table.remove(&token.circuit) {
                    Some(w) if w.side != token.side => Some(Ok(w)),
                    Some(w) => {
                        table.insert(token.circuit, w);
                        Some(Err(()))
                    }
                    None => {
                        table.insert(
                            token.circuit,
                            Waiting {
                                side: token.side,
                                handoff,
                            },
                        );
                        None
                    }
                });
        match taken {
            Some(Ok(first)) => {
                // The partner waits: hand it our socket; it runs the circuit. The
                // channel has room for one, so this never blocks.
                let keep = stream.try_clone();
                if first.handoff.try_send(stream).is_err() {
                    if let Ok(s) = keep {
                        refuse(&s, ErrorCode::RelayNoPartner, "the other end went away");
                    }
                    done(self);
                    return;
                }
                // Our reservation lives as long as the circuit: wait for our socket to
                // close (the partner's thread shuts both down at the end).
                if let Ok(s) = keep {
                    wait_closed(&s);
                }
                done(self);
            }
            Some(Err(())) => {
                refuse(
                    &stream,
                    ErrorCode::RelayToken,
                    "that end is already connected",
                );
                done(self);
            }
            None => {
                match self.await_partner(&token, &partner) {
                    Some(other) => {
                        self.run_circuit(stream, other);
                        done(self);
                    }
                    None => {
                        // Free the slot first: whoever reads this refusal may retry at once.
                        done(self);
                        refuse(
                            &stream,
                            ErrorCode::RelayNoPartner,
                            "the other end did not arrive before the token expired",
                        );
                    }
                }
            }
        }
    }

    /// Reads `RELAY <token>` within the handshake deadline and checks the token.
    fn first_line(&self, stream: &TcpStream) -> Result<Token, (ErrorCode, String)> {
        let clone = stream
            .try_clone()
            .map_err(|e| (ErrorCode::Internal, e.to_string()))?;
        let mut reader = LineReader::new(clone, limits::MAX_LINE);
        let deadline = Instant::now() + limits::RELAY_FIRST_LINE;
        let line = match reader.read_line_by(deadline) {
            Ok(Some(line)) => line,
            _ => return Err((ErrorCode::Timeout, "no RELAY line in time".into())),
        };
        let text = line
            .strip_prefix("RELAY ")
            .ok_or((ErrorCode::OutOfOrder, "expected RELAY <token>".to_string()))?;
        let token = self
            .secret
            .check(text)
            .ok_or((ErrorCode::RelayToken, "not a valid relay token".to_string()))?;
        if token.expires < unix_now() {
            return Err((ErrorCode::RelayToken, "the relay token expired".into()));
        }
        Ok(token)
    }

    /// Marks the token spent and counts its circuit, or says which limit refuses it.
    fn reserve(&self, token: &Token) -> Result<(), (ErrorCode, String)> {
        {
            let mut spent = self
                .spent
                .lock()
                .map_err(|_| (ErrorCode::Internal, "relay state poisoned".to_string()))?;
            let now = unix_now();
            if spent.len() >= limits::RELAY_SPENT_TOKENS {
                spent.retain(|_, expires| *expires >= now);
            }
            if spent.len() >= limits::RELAY_SPENT_TOKENS {
                return Err((ErrorCode::RelayFull, "the relay is full".into()));
            }
            if spent
                .insert((token.circuit, token.side), token.expires)
                .is_some()
            {
                return Err((ErrorCode::RelayToken, "the relay token was used".into()));
            }
        }
        let mut counts = self
            .counts
            .lock()
            .map_err(|_| (ErrorCode::Internal, "relay state poisoned".to_string()))?;
        // The second end joins a circuit already counted.
        if let Some((ends, _)) = counts.live.get_mut(&token.circuit) {
            *ends += 1;
            return Ok(());
        }
        let charged = counts.per_user.get(&token.payer).copied().unwrap_or(0);
        if charged >= self.config.relay_max_per_user {
            return Err((
                ErrorCode::RelayUserFull,
                format!(
                    "{} has {} relayed connections already",
                    token.payer, self.config.relay_max_per_user
                ),
            ));
        }
        if counts.live.len() >= self.config.relay_max_circuits {
            return Err((
                ErrorCode::RelayFull,
                format!(
                    "the relay carries its limit of {} circuits",
                    self.config.relay_max_circuits
                ),
            ));
        }
        counts.live.insert(token.circuit, (1, token.payer.clone()));
        *counts.per_user.entry(token.payer.clone()).or_insert(0) += 1;
        Ok(())
    }

    /// Gives back what [`Relay::reserve`] counted for this end: the circuit and its
    /// charge once its last end is done.
    fn release(&self, token: &Token) {
        let Ok(mut counts) = self.counts.lock() else {
            return;
        };
        let Some((ends, _)) = counts.live.get_mut(&token.circuit) else {
            return;
        };
        *ends = ends.saturating_sub(1);
        if *ends > 0 {
            return;
        }
        let Some((_, payer)) = counts.live.remove(&token.circuit) else {
            return;
        };
        if let Some(n) = counts.per_user.get_mut(&payer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.per_user.remove(&payer);
            }
        }
    }

    /// Waits for the partner until the token expires or the relay stops; takes this
    /// end out of the table when giving up.
    fn await_partner(&self, token: &Token, partner: &Receiver<TcpStream>) -> Option<TcpStream> {
        let until = token.expires.saturating_sub(unix_now()).max(1);
        let deadline = Instant::now() + Duration::from_secs(until);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.stop.load(Ordering::SeqCst) {
                break;
            }
            if let Ok(other) = partner.recv_timeout(left.min(POLL)) {
                return Some(other);
            }
        }
        let _ = self.waiting.lock().map(|mut t| t.remove(&token.circuit));
        // The partner may have taken our entry just before: its socket is on the way.
        partner.recv_timeout(Duration::from_millis(50)).ok()
    }

    /// Tells both ends they are paired and copies bytes both ways until either closes,
    /// the circuit idles out or the relay stops.
    fn run_circuit(self: &Arc<Relay>, a: TcpStream, b: TcpStream) {
        let ok = b"OK RELAYED\r\n";
        if (&a).write_all(ok).is_err() || (&b).write_all(ok).is_err() {
            let _ = a.shutdown(Shutdown::Both);
            let _ = b.shutdown(Shutdown::Both);
            return;
        }
        let last = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let (a2, b2) = match (a.try_clone(), b.try_clone()) {
            (Ok(a2), Ok(b2)) => (a2, b2),
            _ => return,
        };
        let relay = Arc::clone(self);
        let last2 = Arc::clone(&last);
        let back = thread::Builder::new()
            .name("relay-copy".into())
            .stack_size(COPY_STACK)
            .spawn(move || relay.copy(b2, a2, &last2, start));
        self.copy(a, b, &last, start);
        if let Ok(handle) = back {
            let _ = handle.join();
        }
    }

    /// One direction: reads `from`, paces to the rate, writes `to`; on the end of either
    /// side shuts both down so the other direction ends too.
    fn copy(&self, mut from: TcpStream, mut to: TcpStream, last: &AtomicU64, start: Instant) {
        let idle = Duration::from_secs(self.config.relay_idle_secs);
        let rate = self.config.relay_rate;
        let mut buf = vec![0u8; 64 * 1024];
        let _ = from.set_read_timeout(Some(POLL));
        let began = Instant::now();
        let mut carried: u64 = 0;
        loop {
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
            let n = match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    let quiet = (start.elapsed().as_millis() as u64)
                        .saturating_sub(last.load(Ordering::Relaxed));
                    if quiet >= idle.as_millis() as u64 {
                        log::info!("relay: a circuit idle for {}s closed", idle.as_secs());
                        break;
                    }
                    continue;
                }
                Err(_) => break,
            };
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
            last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
            self.bytes.fetch_add(n as u64, Ordering::Relaxed);
            carried += n as u64;
            // Pace: never ahead of `rate` bytes per second since this direction began.
            let due = Duration::from_secs_f64(carried as f64 / rate as f64);
            let spent = began.elapsed();
            if due > spent {
                thread::sleep(due - spent);
            }
        }
        let _ = from.shutdown(Shutdown::Both);
        let _ = to.shutdown(Shutdown::Both);
    }
}

/// Waits until the peer (or the circuit's thread) closes `stream`, without reading data
/// meant for the other side: the waiting end's thread owns reading. The socket's read
/// timeout is shared with the copy thread's clone, so it is set to the same `POLL`.
fn wait_closed(stream: &TcpStream) {
    let mut byte = [0u8; 1];
    let _ = stream.set_read_timeout(Some(POLL));
    // `peek` returns 0 only at the end of the stream; data waiting makes it return at
    // once, so sleep between looks then.
    loop {
        match stream.peek(&mut byte) {
            Ok(0) => return,
            Ok(_) => thread::sleep(POLL),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

/// Sends one `ERR` line and closes.
fn refuse(stream: &TcpStream, code: ErrorCode, message: &str) {
    let _ = (&*stream).write_all(format!("ERR {code} {message}\r\n").as_bytes());
    let _ = stream.shutdown(Shutdown::Both);
}
