//! The connection ladder's first two rungs (protocol.md §13): obtaining a connected
//! `TcpStream` to a peer, directly at every address hint in parallel, or by having the
//! peer dial us back (`REVERSE`). The relay rung is `peer_dial::dial`.
//!
//! Owns the parallel race over hints (generic over a per-attempt step, so that the
//! first attempt to finish that step wins), the table of our requests waiting to be
//! dialled back and the listener's check for a `REVERSE` line, and the target's side of
//! dialling back. It must not speak the peer protocol (`HELLO`, tickets, proofs: that
//! is `peer_dial` and `peer_link`) nor decide when a rung is tried (`sessions`,
//! `transfers`).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded};

use super::peer_limits::Refusals;
use crate::protocol::codes::ErrorCode;
use crate::protocol::hints::dialable;
use crate::protocol::limits::{
    HINT_CONNECT_TIMEOUT, MAX_HINTS, MAX_REVERSE_DIALS, REVERSE_WAIT, WRITE_TIMEOUT,
};
use crate::protocol::line::write_lines;
use crate::protocol::peer_msg::PeerMsg;

/// Stacks of the dialling threads: besides connecting, each runs the per-attempt step
/// (the Noise handshake: X25519, AES-GCM, SHA-256 in `snow`), which overflowed 64 KiB.
const THREAD_STACK: usize = 256 * 1024;

/// How a connection to a peer is obtained.
pub enum Route {
    /// Dial every address at once; the first to connect wins.
    Direct(Vec<SocketAddr>),
    /// Wait for the peer to dial us back (we sent `REVERSE`).
    Reverse(ReverseWait),
    /// Meet the peer at the relay at this address with this token.
    Relay(SocketAddr, String),
}

impl Route {
    /// The path word shown to the person and logged: `direct`, `reverse` or `relay`.
    pub fn path(&self) -> &'static str {
        match self {
            Route::Direct(_) => "direct",
            Route::Reverse(_) => "reverse",
            Route::Relay(..) => "relay",
        }
    }
}

/// A connected stream to the peer by `route`.
pub fn obtain(route: &Route) -> io::Result<TcpStream> {
    obtain_with(route, |stream, _| Ok(stream))
}

/// A stream to the peer by `route`, with `secure` run on it (the Noise handshake that
/// proves the peer, `peer_dial`): on the direct rung `secure` runs on every connection
/// that opens, so the first attempt to complete it wins (not merely the first to
/// connect) and the others are dropped; on the reverse and relay rungs there is one
/// connection, and it runs on that. When no connection opened at all (nothing
/// answered, the peer never dialled back, the relay failed) the error is marked so
/// that [`is_unreached`] tells it from an error of `secure` (someone answered).
pub fn obtain_with<T, F>(route: &Route, secure: F) -> io::Result<T>
where
    T: Send + 'static,
    F: Fn(TcpStream, SocketAddr) -> io::Result<T> + Send + Sync + 'static,
{
    match route {
        Route::Direct(addrs) => race(addrs, HINT_CONNECT_TIMEOUT, unreached, secure)
            .map(|(secured, _)| secured)
            .map_err(best_error),
        Route::Reverse(wait) => {
            let stream = wait.wait(REVERSE_WAIT).map_err(unreached)?;
            let from = stream.peer_addr().map_err(unreached)?;
            secure(stream, from)
        }
        Route::Relay(relay, token) => {
            let stream = super::peer_dial::dial(*relay, Some(&(*relay, token.clone())))
                .map_err(unreached)?;
            secure(stream, *relay)
        }
    }
}

/// Why no connection opened by a route (carried inside an `io::Error` of the same kind).
#[derive(Debug)]
struct Unreached(io::Error);

impl std::fmt::Display for Unreached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Unreached {}

/// Marks `e` as "no connection opened" (see [`is_unreached`]).
fn unreached(e: io::Error) -> io::Error {
    if is_unreached(&e) {
        return e;
    }
    io::Error::new(e.kind(), Unreached(e))
}

/// Whether `e` (from [`obtain_with`]) means that no connection opened by the route, so
/// nobody answered: the ladder's next rung may still reach the peer.
pub fn is_unreached(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<Unreached>())
}

/// The most telling of several failed attempts: one where someone answered before one
/// where nothing did; among each, one where someone answered wrongly (not the peer)
/// before a refusal, before a timeout.
pub fn best_error(errors: Vec<io::Error>) -> io::Error {
    let rank = |e: &io::Error| {
        let answered = if is_unreached(e) { 0 } else { 10 };
        answered
            + match e.kind() {
                io::ErrorKind::PermissionDenied | io::ErrorKind::InvalidData => 3,
                io::ErrorKind::ConnectionRefused => 2,
                io::ErrorKind::TimedOut => 1,
                _ => 0,
            }
    };
    errors
        .into_iter()
        .max_by_key(rank)
        .unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address to try"))
}

/// The first address first, then the hints, each once, at most `MAX_HINTS + 1`.
pub fn candidates(addr: SocketAddr, hints: &[SocketAddr]) -> Vec<SocketAddr> {
    let mut all = vec![addr];
    for hint in hints {
        if !all.contains(hint) && all.len() <= MAX_HINTS {
            all.push(*hint);
        }
    }
    all
}

/// Dials every address in `addrs` at once (each connect bounded by `timeout`) and runs
/// `step` on each connection that opens (a handshake, say); the first attempt whose
/// step succeeds wins and the others are dropped as they finish (their streams close).
/// `connect_err` turns a failed connect into the caller's error type. All failed: every
/// error, in the order they came.
pub fn race<T, E, F>(
    addrs: &[SocketAddr],
    timeout: Duration,
    connect_err: impl Fn(io::Error) -> E,
    step: F,
) -> Result<(T, SocketAddr), Vec<E>>
where
    T: Send + 'static,
    E: Send + 'static,
    F: Fn(TcpStream, SocketAddr) -> Result<T, E> + Send + Sync + 'static,
{
    let step = Arc::new(step);
    let (tx, rx) = bounded(addrs.len().max(1));
    let mut errors = Vec::new();
    let mut running = 0;
    for &addr in addrs {
        let step = Arc::clone(&step);
        let tx = tx.clone();
        let spawned = thread::Builder::new()
            .name("peer-dial".into())
            .stack_size(THREAD_STACK)
            .spawn(move || {
                let result = match TcpStream::connect_timeout(&addr, timeout) {
                    Ok(stream) => step(stream, addr).map_err(Ok),
                    Err(e) => Err(Err(e)),
                };
                // The receiver is gone once someone won: the result (a stream) drops.
                let _ = tx.send((addr, result));
            });
        match spawned {
            Ok(_) => running += 1,
            Err(e) => errors.push(connect_err(e)),
        }
    }
    drop(tx);
    for _ in 0..running {
        match rx.recv() {
            Ok((addr, Ok(won))) => return Ok((won, addr)),
            Ok((addr, Err(Err(e)))) => {
                log::debug!("dialling {addr}: {e}");
                errors.push(connect_err(e));
            }
            Ok((_, Err(Ok(e)))) => errors.push(e),
            Err(_) => break,
        }
    }
    Err(errors)
}

/// Requests waiting to be dialled back: (for a transfer, id) → where to hand the stream.
type Waiting = HashMap<(bool, u64), Sender<TcpStream>>;

/// Our requests waiting to be dialled back, shared with the peer listener.
#[derive(Clone, Default)]
pub struct Reversals {
    waiting: Arc<Mutex<Waiting>>,
}

/// One request waiting to be dialled back; dropping it stops waiting (a `REVERSE` for
/// it then gets `525 NO_REVERSE`).
pub struct ReverseWait {
    table: Reversals,
    key: (bool, u64),
    rx: Receiver<TcpStream>,
}

impl ReverseWait {
    /// The connection the peer dialled back, within `timeout`.
    pub fn wait(&self, timeout: Duration) -> io::Result<TcpStream> {
        self.rx.recv_timeout(timeout).map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                "the peer could not dial us back either",
            )
        })
    }
}

impl Drop for ReverseWait {
    fn drop(&mut self) {
        self.table.lock().remove(&self.key);
    }
}

impl Reversals {
    /// An empty table.
    pub fn new() -> Reversals {
        Reversals::default()
    }

    fn lock(&self) -> MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts waiting for the peer of session (or transfer, if `transfer`) `id` to dial
    /// us back. Call before asking the server, so an early connection finds us.
    pub fn expect(&self, transfer: bool, id: u64) -> ReverseWait {
        let (tx, rx) = bounded(1);
        self.lock().insert((transfer, id), tx);
        ReverseWait {
            table: self.clone(),
            key: (transfer, id),
            rx,
        }
    }

    /// The target said it could not dial us back for `id` (`EVENT DIAL_FAILED`): stop
    /// waiting now, so the relay rung starts at once (the waiter's channel closes).
    pub fn give_up(&self, transfer: bool, id: u64) {
        if self.lock().remove(&(transfer, id)).is_some() {
            log::info!("the peer could not dial back for {id}; on to the relay");
        }
    }

    /// For the listener: if `stream` starts with `REVERSE SESSION|TRANSFER <id>`, hands
    /// it to the request waiting for it (only the first such connection wins) or refuses
    /// it with `525 NO_REVERSE`, and returns `None`. Otherwise (or when nothing arrives
    /// by `deadline`) returns the stream untouched for the usual handshake.
    pub fn claim(
        &self,
        stream: TcpStream,
        remote: SocketAddr,
        deadline: Instant,
        refusals: &Refusals,
    ) -> Option<TcpStream> {
        const WORD: &[u8] = b"REVERSE ";
        let mut buf = [0u8; 8];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
                return Some(stream);
            }
            match stream.peek(&mut buf) {
                Ok(0) | Err(_) => return Some(stream),
                Ok(n) if n == WORD.len() || buf[..n] != WORD[..n] => break,
                // Part of the first word: `peek` returns at once while it waits.
                Ok(_) => thread::sleep(Duration::from_millis(5)),
            }
        }
        if buf != WORD {
            return Some(stream);
        }
        let refuse = |message: &str| {
            refusals.add(remote.ip(), ErrorCode::NoReverse);
            log::info!("refused a REVERSE connection from {remote}: {message}");
            // In clear: a `REVERSE` line comes before any Noise handshake.
            let line = PeerMsg::Err {
                code: ErrorCode::NoReverse,
                message: message.into(),
            };
            let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
            let mut out = &stream;
            let _ = write_lines(&mut out, &line.to_wire());
            let _ = stream.shutdown(std::net::Shutdown::Write);
            None
        };
        let Ok((line, taken)) = super::peer_dial::peek_line(&stream, deadline) else {
            return refuse("malformed REVERSE line");
        };
        let key = match line.split(' ').collect::<Vec<_>>().as_slice() {
            ["REVERSE", what @ ("SESSION" | "TRANSFER"), id] => match id.parse::<u64>() {
                Ok(id) => (*what == "TRANSFER", id),
                Err(_) => return refuse("usage: REVERSE SESSION|TRANSFER <id>"),
            },
            _ => return refuse("usage: REVERSE SESSION|TRANSFER <id>"),
        };
        let Some(waiter) = self.lock().remove(&key) else {
            return refuse("no request of ours waits to be dialled back with that id");
        };
        let mut used = vec![0u8; taken];
        if io::Read::read_exact(&mut &stream, &mut used).is_err() {
            return None;
        }
        let _ = stream.set_read_timeout(None);
        log::info!("{remote} dialled back for {line}");
        let _ = waiter.try_send(stream);
        None
    }
}

/// Reverse dials under way in this process, bounded by `MAX_REVERSE_DIALS`.
static DIALLING_BACK: AtomicUsize = AtomicUsize::new(0);

/// The target's side of `EVENT DIAL`: on a thread of its own, dials every hint of the
/// requester at once, sends `REVERSE SESSION|TRANSFER <id>` on the first connection to
/// open (only on that one, so exactly one reaches the requester's waiting request) and
/// hands it to `then`, which answers the requester's first line as if the connection
/// had arrived on our listener. At most `MAX_REVERSE_DIALS` at once; more are dropped.
/// When no connection could be made (or one is dropped), `failed` is called, which says
/// so to the server (`DIAL_FAILED`), so the requester goes on to the relay at once.
pub fn dial_back(
    hints: Vec<SocketAddr>,
    transfer: bool,
    id: u64,
    then: impl FnOnce(TcpStream, SocketAddr) + Send + 'static,
    failed: impl FnOnce() + Send + 'static,
) {
    if DIALLING_BACK.fetch_add(1, Ordering::SeqCst) >= MAX_REVERSE_DIALS {
        DIALLING_BACK.fetch_sub(1, Ordering::SeqCst);
        log::warn!("too many reverse dials at once; ignored one for {id}");
        failed();
        return;
    }
    let spawned = thread::Builder::new()
        .name("peer-dial-back".into())
        .stack_size(128 * 1024)
        .spawn(move || {
            let hints: Vec<SocketAddr> = hints
                .into_iter()
                // The server names a requester on its own machine by a loopback address
                // (never reported as a hint, but seen): dial those too.
                .filter(|a| dialable(a.ip()) || a.ip().is_loopback())
                .take(MAX_HINTS + 1)
                .collect();
            match race(&hints, HINT_CONNECT_TIMEOUT, |e| e, |s, _| Ok(s)) {
                Ok((stream, addr)) => {
                    let what = if transfer { "TRANSFER" } else { "SESSION" };
                    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
                    let mut out = &stream;
                    match write_lines(&mut out, &format!("REVERSE {what} {id}\n")) {
                        Ok(()) => then(stream, addr),
                        Err(e) => {
                            log::info!("dialling back {addr} failed: {e}");
                            failed();
                        }
                    }
                }
                Err(errors) => {
                    log::info!("could not dial back for {id}: {}", best_error(errors));
                    failed();
                }
            }
            DIALLING_BACK.fetch_sub(1, Ordering::SeqCst);
        });
    if spawned.is_err() {
        DIALLING_BACK.fetch_sub(1, Ordering::SeqCst);
    }
}

/// This machine's interface addresses that peers elsewhere could dial (for `HINTS`),
/// or `only` alone when the listener is bound to one address.
pub fn local_ips(only: Option<IpAddr>) -> Vec<IpAddr> {
    if let Some(ip) = only.filter(|ip| !ip.is_unspecified()) {
        return if dialable(ip) { vec![ip] } else { Vec::new() };
    }
    let mut ips = Vec::new();
    match nix::ifaddrs::getifaddrs() {
        Ok(addrs) => {
            for ifaddr in addrs {
                let Some(addr) = ifaddr.address else { continue };
                let ip = if let Some(v4) = addr.as_sockaddr_in() {
                    IpAddr::V4(v4.ip())
                } else if let Some(v6) = addr.as_sockaddr_in6() {
                    IpAddr::V6(v6.ip())
                } else {
                    continue;
                };
                if dialable(ip) && !ips.contains(&ip) && ips.len() < MAX_HINTS {
                    ips.push(ip);
                }
            }
        }
        Err(e) => log::info!("cannot list the interface addresses: {e}"),
    }
    ips
}

/// The `HINTS` line reporting our interface addresses (see [`local_ips`]).
pub fn hints_command(listen_ip: Option<IpAddr>) -> String {
    crate::protocol::server_msg::Command::Hints {
        ips: local_ips(listen_ip),
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn the_first_address_that_connects_wins_and_failures_are_all_reported() {
        let open = TcpListener::bind("127.0.0.1:0").unwrap();
        let closed = TcpListener::bind("127.0.0.1:0").unwrap();
        let dead = closed.local_addr().unwrap();
        drop(closed);
        let live = open.local_addr().unwrap();
        let (stream, won) = race(&[dead, live], Duration::from_secs(2), |e| e, |s, _| Ok(s))
            .map_err(|_| "no winner")
            .unwrap();
        assert_eq!(won, live);
        assert_eq!(stream.peer_addr().unwrap(), live);
        let errors = race(&[dead], Duration::from_secs(2), |e| e, |s, _| Ok(s)).unwrap_err();
        assert_eq!(errors.len(), 1);
        // A step that fails makes the attempt fail even though it connected.
        let refused = race(
            &[live],
            Duration::from_secs(2),
            |e| e,
            |_, _| Err::<TcpStream, _>(io::Error::new(io::ErrorKind::PermissionDenied, "not them")),
        )
        .unwrap_err();
        assert_eq!(best_error(refused).kind(), io::ErrorKind::PermissionDenied);
    }

    #[test]
    fn candidates_are_unique_and_bounded() {
        let a: SocketAddr = "10.0.0.1:5".parse().unwrap();
        let hints: Vec<SocketAddr> = (0..20)
            .map(|i| format!("10.0.1.{i}:5").parse().unwrap())
            .chain([a])
            .collect();
        let all = candidates(a, &hints);
        assert_eq!(all[0], a);
        assert_eq!(all.len(), MAX_HINTS + 1);
    }

    #[test]
    fn a_dialled_back_connection_reaches_its_waiter_once() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let table = Reversals::new();
        let wait = table.expect(false, 7);
        let refusals = Refusals::new();
        for line in ["REVERSE SESSION 7\n", "REVERSE SESSION 7\n", "HELLO x\n"] {
            let mut c = TcpStream::connect(addr).unwrap();
            io::Write::write_all(&mut c, line.as_bytes()).unwrap();
            let (s, remote) = listener.accept().unwrap();
            let kept = table.claim(
                s,
                remote,
                Instant::now() + Duration::from_secs(2),
                &refusals,
            );
            match line {
                "HELLO x\n" => assert!(kept.is_some(), "a HELLO goes to the handshake"),
                _ => assert!(kept.is_none()),
            }
            std::mem::forget(c);
        }
        assert!(wait.wait(Duration::from_secs(1)).is_ok());
        assert!(
            wait.wait(Duration::from_millis(50)).is_err(),
            "only one wins"
        );
        drop(wait);
        assert!(table.lock().is_empty());
    }
}
