//! The framed Noise transport after the handshake: [`NoiseReader`] opens length-prefixed
//! frames read ahead from its own socket clone, [`NoiseWriter`] seals them, each with
//! its own nonce counter over one shared stateless transport state (no lock, DESIGN.md).
//!
//! Owns the frame format after the handshake and its buffers; it must not run the
//! handshake (the parent module does) or know any peerchat line.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use snow::StatelessTransportState;

use super::{MAX_MESSAGE, MAX_PLAIN, TAG, noise_err};
use crate::protocol::line::ReadTimeout;

/// Ciphertext read ahead: room for several frames, so one system call brings many.
const READ_AHEAD: usize = 4 * (2 + MAX_MESSAGE);

/// Plaintext in: reads frames from its own socket clone, several per system call, and
/// opens them in order, straight into the caller's buffer when it has room (no extra
/// copy). A timeout mid-frame keeps what was read, so read timeouts are safe to use.
pub struct NoiseReader {
    sock: TcpStream,
    state: Arc<StatelessTransportState>,
    /// The next message's nonce.
    nonce: u64,
    /// Ciphertext read ahead; `rstart..rend` is not parsed yet.
    raw: Box<[u8]>,
    rstart: usize,
    rend: usize,
    /// A message opened for a caller whose buffer was too small; `start..end` is left.
    plain: Box<[u8]>,
    start: usize,
    end: usize,
}

impl NoiseReader {
    /// A reader over `sock` (a clone of the link's socket) for the transport `state`.
    pub(super) fn new(sock: TcpStream, state: Arc<StatelessTransportState>) -> NoiseReader {
        NoiseReader {
            sock,
            state,
            nonce: 0,
            raw: vec![0u8; READ_AHEAD].into_boxed_slice(),
            rstart: 0,
            rend: 0,
            plain: vec![0u8; MAX_MESSAGE].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    /// The socket under the link (for timeouts and shutdown).
    pub fn socket(&self) -> &TcpStream {
        &self.sock
    }

    /// The length of the next whole frame waiting in `raw`, if one is complete.
    fn whole_frame(&self) -> io::Result<Option<usize>> {
        let have = self.rend - self.rstart;
        if have < 2 {
            return Ok(None);
        }
        let len = usize::from(u16::from_be_bytes([
            self.raw[self.rstart],
            self.raw[self.rstart + 1],
        ]));
        if len < TAG {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "short frame"));
        }
        Ok((have >= 2 + len).then_some(len))
    }
}

impl ReadTimeout for NoiseReader {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.sock.set_read_timeout(timeout)
    }
}

impl Read for NoiseReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            if self.start < self.end {
                let n = out.len().min(self.end - self.start);
                out[..n].copy_from_slice(&self.plain[self.start..self.start + n]);
                self.start += n;
                return Ok(n);
            }
            if let Some(len) = self.whole_frame()? {
                let body = &self.raw[self.rstart + 2..self.rstart + 2 + len];
                // ring opens in place: the target must hold the tag too.
                let direct = out.len() >= len;
                let target: &mut [u8] = if direct { out } else { &mut self.plain };
                let n = self
                    .state
                    .read_message(self.nonce, body, target)
                    .map_err(noise_err)?;
                self.nonce += 1;
                self.rstart += 2 + len;
                if direct {
                    return Ok(n);
                }
                self.start = 0;
                self.end = n;
                continue;
            }
            // Not a whole frame yet: make room at the end, then read what is there.
            if self.rstart > 0 && self.raw.len() - self.rend < 2 + MAX_MESSAGE {
                self.raw.copy_within(self.rstart..self.rend, 0);
                self.rend -= self.rstart;
                self.rstart = 0;
            }
            let n = self.sock.read(&mut self.raw[self.rend..])?;
            if n == 0 {
                if self.rstart == self.rend {
                    return Ok(0);
                }
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.rend += n;
        }
    }
}

/// Plaintext out: each `write` seals up to [`MAX_PLAIN`] bytes into one frame and writes
/// it at once (no buffering, so nothing waits for a flush).
pub struct NoiseWriter {
    sock: TcpStream,
    state: Arc<StatelessTransportState>,
    /// The next message's nonce.
    nonce: u64,
    /// Reused frame buffer.
    frame: Box<[u8]>,
}

impl NoiseWriter {
    /// A writer over `sock` (a clone of the link's socket) for the transport `state`.
    pub(super) fn new(sock: TcpStream, state: Arc<StatelessTransportState>) -> NoiseWriter {
        NoiseWriter {
            sock,
            state,
            nonce: 0,
            frame: vec![0u8; 2 + MAX_MESSAGE].into_boxed_slice(),
        }
    }

    /// The socket under the link (for timeouts and shutdown).
    pub fn socket(&self) -> &TcpStream {
        &self.sock
    }

    /// Seals `plain` as frames (one per [`MAX_PLAIN`] bytes) appended to `out`, without
    /// writing anything: the caller writes many frames with one system call, or from
    /// another thread. Frames must reach the socket in the order they were sealed.
    pub fn seal_into(&mut self, plain: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        for piece in plain.chunks(MAX_PLAIN) {
            let at = out.len();
            out.resize(at + 2 + piece.len() + TAG, 0);
            let n = self
                .state
                .write_message(self.nonce, piece, &mut out[at + 2..])
                .map_err(noise_err)?;
            self.nonce += 1;
            let len = u16::try_from(n).map_err(io::Error::other)?;
            out[at..at + 2].copy_from_slice(&len.to_be_bytes());
            out.truncate(at + 2 + n);
        }
        Ok(())
    }
}

impl Write for NoiseWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let take = buf.len().min(MAX_PLAIN);
        let n = self
            .state
            .write_message(self.nonce, &buf[..take], &mut self.frame[2..])
            .map_err(noise_err)?;
        self.nonce += 1;
        let len = u16::try_from(n).map_err(io::Error::other)?;
        self.frame[..2].copy_from_slice(&len.to_be_bytes());
        self.sock.write_all(&self.frame[..2 + n])?;
        Ok(take)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.sock.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{generate_keypair, initiate, respond};
    use super::*;
    use std::net::TcpListener;
    use std::time::Instant;

    #[test]
    fn large_writes_split_into_frames() {
        let (apriv, _) = generate_keypair().unwrap();
        let (bpriv, _) = generate_keypair().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let b = std::thread::spawn(move || {
            let (sock, _) = listener.accept().unwrap();
            let (mut h, _) = respond(&sock, &bpriv, deadline, |_| Some("t".into())).unwrap();
            // Small and large buffers in turn: both the copying and the direct path.
            let mut all = Vec::new();
            let mut buf = vec![0u8; 100_000];
            let mut turn = 0usize;
            let got = loop {
                let want = if turn.is_multiple_of(2) {
                    1000
                } else {
                    buf.len()
                };
                turn += 1;
                match h.reader.read(&mut buf[..want]) {
                    Ok(0) => break Ok(all.len()),
                    Ok(n) => all.extend_from_slice(&buf[..n]),
                    Err(e) => break Err(e),
                }
            };
            (got, all)
        });
        let sock = TcpStream::connect(addr).unwrap();
        let mut a = initiate(&sock, &apriv, "t", None, deadline).unwrap();
        let data = vec![7u8; 200_000];
        a.writer.write_all(&data).unwrap();
        drop(a);
        drop(sock);
        let (len, all) = b.join().unwrap();
        assert_eq!(len.unwrap(), 200_000);
        assert!(all.iter().all(|b| *b == 7));
    }
}
