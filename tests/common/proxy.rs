//! `Proxy`: a TCP proxy between a client and its target that records, per direction,
//! the bytes that went through (to check what crosses the wire in clear).
//!
//! Owns the proxy threads; it must not know the protocol.

use super::*;

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
pub(super) struct ProxyState {
    /// Every byte in each direction, over all connections.
    pub(super) up: Vec<u8>,
    pub(super) down: Vec<u8>,
    /// Change the byte at this offset of this direction (of the whole stream so far).
    pub(super) flip: Option<(Dir, usize)>,
}

/// A forwarding TCP proxy on 127.0.0.1: a sniffer (it records every byte) and, when
/// armed, a tamperer (it flips one byte). Serves at most 16 connections; its threads
/// end when either side closes.
pub struct Proxy {
    /// Where to connect instead of the target.
    pub addr: SocketAddr,
    pub(super) state: Arc<Mutex<ProxyState>>,
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

pub(super) fn pump_bytes(
    mut from: TcpStream,
    mut to: TcpStream,
    dir: Dir,
    state: &Mutex<ProxyState>,
) {
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
