//! The sending side of one established peer link: seals lines and gets them onto the
//! socket with as few thread hand-offs as possible.
//!
//! Owns the link's Noise writer and the sealed bytes not yet written. Whoever sends (the
//! core loop saying a line, the link's reader answering `PING`) seals under a short
//! lock and, when nothing is waiting and the writer thread is idle, writes the record
//! at once with a non-blocking `send`: a chat line then costs no wake-up of another
//! thread. What the socket does not take at once is left for the link's writer thread,
//! which writes it blocking (with the write timeout), many records per system call, and
//! sends the keep-alive `PING`. The lock is held for memory work and non-blocking
//! `send`s only, never across a blocking write; records reach the socket in the order
//! they were sealed, since only one side writes at a time (`busy`). It must not read
//! from the socket nor know what the lines mean.

use std::io::{self, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError, bounded};

use crate::crypto::noise::NoiseWriter;
use crate::protocol::limits::{MAX_LINE, PEER_PING_INTERVAL, PEER_QUEUE};
use crate::protocol::peer_msg::PeerMsg;

/// Sealed bytes that may wait for a peer that does not read: `PEER_QUEUE` lines of the
/// longest size with their frame overhead. Past it the link is cut, so the sender never
/// blocks and memory stays bounded.
const MAX_PENDING: usize = PEER_QUEUE * (MAX_LINE + 64);

/// Why a line was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The peer stopped reading and too much waits for it (the caller cuts the link).
    Full,
    /// The link is closing or gone.
    Gone,
}

/// What the senders and the writer thread share.
struct State {
    /// Seals records; its nonce counts in the order records are sealed.
    noise: NoiseWriter,
    /// Sealed bytes not on the socket yet, in order.
    pending: Vec<u8>,
    /// The writer thread holds bytes taken from `pending` and is writing them: nobody
    /// else may write until it is done.
    busy: bool,
    /// `close` was called (no more lines), or writing failed.
    closed: bool,
    /// When the last record was sealed, for the keep-alive.
    last: Instant,
}

/// The sending side of one link; shared by the core (through `PeerLink`), the link's
/// reader and its writer thread.
pub struct PeerOut {
    state: Mutex<State>,
    /// The socket, for the non-blocking sends and for cutting the link.
    stream: Arc<TcpStream>,
    /// Wakes the writer thread: there is something in `pending` for it, or the end.
    wake: Sender<()>,
}

impl PeerOut {
    /// Wraps `noise` (the link's Noise writer on `stream`); returns the shared side and
    /// the receiver the writer thread (`write_loop`) waits on.
    pub fn new(noise: NoiseWriter, stream: Arc<TcpStream>) -> (Arc<PeerOut>, Receiver<()>) {
        let (wake, woken) = bounded(1);
        let out = PeerOut {
            state: Mutex::new(State {
                noise,
                pending: Vec::new(),
                busy: false,
                closed: false,
                last: Instant::now(),
            }),
            stream,
            wake,
        };
        (Arc::new(out), woken)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Seals `msg` and writes it now if the socket takes it, or leaves it for the writer
    /// thread.
    pub fn send(&self, msg: &PeerMsg) -> Result<(), Refused> {
        self.send_text(&msg.to_wire())
    }

    fn send_text(&self, text: &str) -> Result<(), Refused> {
        let mut state = self.lock();
        if state.closed {
            return Err(Refused::Gone);
        }
        if state.pending.len() > MAX_PENDING {
            return Err(Refused::Full);
        }
        let idle = state.pending.is_empty() && !state.busy;
        let State { noise, pending, .. } = &mut *state;
        if noise.seal_into(text.as_bytes(), pending).is_err() {
            state.closed = true;
            return Err(Refused::Gone);
        }
        state.last = Instant::now();
        if idle {
            // Nobody is writing: try to put it on the socket from here.
            match send_now(&self.stream, &state.pending) {
                Ok(n) => {
                    state.pending.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    log::debug!("writing to a peer failed: {e}");
                    state.closed = true;
                    drop(state);
                    self.kill();
                    return Err(Refused::Gone);
                }
            }
        }
        let wake = !state.pending.is_empty() && !state.busy;
        drop(state);
        if wake {
            self.wake_writer();
        }
        Ok(())
    }

    /// Queues `msg` as the last line: the writer thread writes what waits, then a FIN.
    pub fn close_with(&self, msg: &PeerMsg) {
        let _ = self.send(msg);
        self.close();
    }

    /// No more lines: the writer thread writes what waits, then a FIN.
    pub fn close(&self) {
        self.lock().closed = true;
        self.wake_writer();
    }

    /// Cuts the connection now.
    pub fn kill(&self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    fn wake_writer(&self) {
        // Full: the writer is woken already and will look at `pending`.
        if let Err(TrySendError::Disconnected(())) = self.wake.try_send(()) {
            self.kill();
        }
    }

    /// Takes what waits for the writer thread into `spare`, marking it busy.
    fn take(&self, spare: &mut Vec<u8>) -> Take {
        let mut state = self.lock();
        if state.pending.is_empty() {
            state.busy = false;
            // Checked under the same lock: nothing can be added once `closed` is set.
            return if state.closed { Take::Done } else { Take::Idle };
        }
        state.busy = true;
        spare.clear();
        std::mem::swap(spare, &mut state.pending);
        Take::Bytes
    }
}

/// What the writer thread found to do.
enum Take {
    /// Bytes to write (in its buffer).
    Bytes,
    /// Nothing waits.
    Idle,
    /// Nothing waits and nothing more will come: send the FIN.
    Done,
}

/// One non-blocking `send` (no `SIGPIPE`): how much the socket took, or `WouldBlock`.
fn send_now(stream: &TcpStream, bytes: &[u8]) -> io::Result<usize> {
    use rustix::net::{SendFlags, send};
    Ok(send(
        stream.as_fd(),
        bytes,
        SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
    )?)
}

/// The link's writer thread: writes what the senders left (blocking, with the socket's
/// write timeout), sends `PING` after `PEER_PING_INTERVAL` of silence, and after
/// `close` writes what waits and sends a FIN.
pub fn write_loop(out: &PeerOut, woken: &Receiver<()>) {
    let mut batch = Vec::new();
    loop {
        let since = out.lock().last.elapsed();
        let wait = PEER_PING_INTERVAL.saturating_sub(since);
        match woken.recv_timeout(wait.max(Duration::from_millis(1))) {
            Ok(()) => {}
            Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {
                if out.lock().last.elapsed() >= PEER_PING_INTERVAL {
                    let _ = out.send(&PeerMsg::Ping);
                }
            }
        }
        // Write until nothing waits; the senders add behind us meanwhile.
        loop {
            match out.take(&mut batch) {
                Take::Bytes => {
                    if let Err(e) = (&*out.stream).write_all(&batch) {
                        log::debug!("writing to a peer failed: {e}");
                        out.lock().closed = true;
                        out.kill();
                        return;
                    }
                }
                Take::Idle => break,
                Take::Done => {
                    let _ = out.stream.shutdown(Shutdown::Write);
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::noise::{self, NoiseReader, generate_keypair};
    use crate::protocol::line::LineReader;
    use std::net::TcpListener;
    use std::thread;

    /// A Noise link over loopback: our writer, the far side's reader.
    fn link() -> (TcpStream, NoiseWriter, NoiseReader) {
        let (apriv, _) = generate_keypair().unwrap();
        let (bpriv, _) = generate_keypair().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let far = thread::spawn(move || {
            let (sock, _) = listener.accept().unwrap();
            let (h, _) = noise::respond(&sock, &bpriv, deadline, |_| Some("t".into())).unwrap();
            h.reader
        });
        let sock = TcpStream::connect(addr).unwrap();
        let h = noise::initiate(&sock, &apriv, "t", None, deadline).unwrap();
        (sock, h.writer, far.join().unwrap())
    }

    #[test]
    fn lines_arrive_in_order_whether_written_at_once_or_by_the_writer_thread() {
        let (sock, writer, reader) = link();
        let stream = Arc::new(sock);
        let (out, woken) = PeerOut::new(writer, Arc::clone(&stream));
        let thread_out = Arc::clone(&out);
        let writer = thread::spawn(move || write_loop(&thread_out, &woken));
        // The far side reads only after a pause, so the socket's buffers fill and later
        // lines wait in `pending` for the writer thread, behind the ones sent at once.
        let far = thread::spawn(move || {
            thread::sleep(Duration::from_millis(300));
            let mut lines = LineReader::new(reader, MAX_LINE);
            let mut got = Vec::new();
            while let Some(line) = lines.read_line().unwrap() {
                got.push(line);
            }
            got
        });
        let text = "x".repeat(900);
        let n = 3000;
        for i in 0..n {
            let msg = PeerMsg::Msg {
                at_ms: i,
                text: format!("{i} {text}"),
            };
            assert_eq!(out.send(&msg), Ok(()), "line {i}");
        }
        out.close_with(&PeerMsg::Close {
            reason: "done".into(),
        });
        assert_eq!(out.send(&PeerMsg::Ping), Err(Refused::Gone));
        writer.join().unwrap();
        let got = far.join().unwrap();
        assert_eq!(
            got.len(),
            n as usize + 1,
            "every line, then CLOSE, then the FIN"
        );
        for (i, line) in got[..n as usize].iter().enumerate() {
            let want = PeerMsg::Msg {
                at_ms: i as u64,
                text: format!("{i} {text}"),
            };
            assert_eq!(format!("{line}\n"), want.to_wire(), "line {i}");
        }
        assert_eq!(got[n as usize], "CLOSE done");
    }

    #[test]
    fn a_peer_that_does_not_read_is_refused_not_waited_for() {
        let (sock, writer, reader) = link();
        let stream = Arc::new(sock);
        let (out, woken) = PeerOut::new(writer, Arc::clone(&stream));
        let thread_out = Arc::clone(&out);
        let writer = thread::spawn(move || write_loop(&thread_out, &woken));
        let text = "y".repeat(MAX_LINE - 64);
        let started = Instant::now();
        let mut refused = None;
        for i in 0..(PEER_QUEUE as u64 * 16) {
            let msg = PeerMsg::Msg {
                at_ms: i,
                text: text.clone(),
            };
            if let Err(why) = out.send(&msg) {
                refused = Some(why);
                break;
            }
        }
        assert_eq!(refused, Some(Refused::Full));
        assert!(started.elapsed() < Duration::from_secs(20), "never blocked");
        out.kill();
        out.close();
        writer.join().unwrap();
        drop(reader);
    }
}
