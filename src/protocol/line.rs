//! Bounded line framing: the only code that turns raw socket bytes into lines.
//!
//! Owns reading lines of at most a given length and writing them back; it must not know
//! what a line means. A read that times out keeps the partial line, so callers can poll
//! with read timeouts without losing bytes.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A source whose reads can be given a timeout: a socket, or an encrypted link over one
/// (`crypto::tls::TlsReader`, `crypto::noise::NoiseReader`).
pub trait ReadTimeout {
    /// Sets (or clears, with `None`) how long one read may block.
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
}

impl ReadTimeout for TcpStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        TcpStream::set_read_timeout(self, timeout)
    }
}

/// Why a line could not be read.
#[derive(Debug)]
pub enum LineError {
    /// The line grew past the limit before its `\n`; the stream cannot be resynchronised.
    TooLong,
    /// The line was framed correctly but is not UTF-8; the stream is still in sync.
    BadUtf8,
    /// The socket failed or timed out (`WouldBlock` / `TimedOut`); a partial line is kept.
    Io(io::Error),
}

impl LineError {
    /// True when the error is a read timeout rather than a failure.
    pub fn is_timeout(&self) -> bool {
        matches!(self, LineError::Io(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut))
    }
}

/// Reads `\n`-terminated lines of at most `max` bytes (a `\r` before the `\n` is dropped).
pub struct LineReader<R> {
    /// Buffered source; the buffer size bounds how much one `read` pulls in.
    inner: BufReader<R>,
    /// The line read so far; survives timeouts.
    partial: Vec<u8>,
    /// Longest line accepted, terminator excluded.
    max: usize,
}

impl<R: Read + ReadTimeout> LineReader<R> {
    /// The next line, which must be complete by `deadline` however slowly its bytes
    /// drip in (a read timeout alone restarts with every byte). A missed deadline is a
    /// timeout error; the partial line is kept.
    pub fn read_line_by(&mut self, deadline: Instant) -> Result<Option<String>, LineError> {
        self.read_line_with(|stream| {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed"));
            }
            stream.set_read_timeout(Some(left))
        })
    }
}

impl<R: Read> LineReader<R> {
    /// A reader that refuses lines longer than `max` bytes.
    pub fn new(inner: R, max: usize) -> Self {
        LineReader {
            inner: BufReader::with_capacity(8192, inner),
            partial: Vec::new(),
            max,
        }
    }

    /// The next line without its terminator; `Ok(None)` at end of stream. Bytes after the
    /// last `\n` at end of stream are discarded.
    pub fn read_line(&mut self) -> Result<Option<String>, LineError> {
        self.read_line_with(|_| Ok(()))
    }

    /// Like `read_line`, calling `before_read` on the source before each read from it,
    /// e.g. to shorten its timeout to what is left of a deadline.
    fn read_line_with(
        &mut self,
        mut before_read: impl FnMut(&R) -> io::Result<()>,
    ) -> Result<Option<String>, LineError> {
        loop {
            if self.inner.buffer().is_empty() {
                before_read(self.inner.get_ref()).map_err(LineError::Io)?;
            }
            let available = match self.inner.fill_buf() {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(LineError::Io(e)),
            };
            if available.is_empty() {
                self.partial.clear();
                return Ok(None);
            }
            match available.iter().position(|&b| b == b'\n') {
                Some(newline) => {
                    self.partial.extend_from_slice(&available[..newline]);
                    self.inner.consume(newline + 1);
                    let mut line = std::mem::take(&mut self.partial);
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    if line.len() > self.max {
                        return Err(LineError::TooLong);
                    }
                    return String::from_utf8(line)
                        .map(Some)
                        .map_err(|_| LineError::BadUtf8);
                }
                None => {
                    let taken = available.len();
                    self.partial.extend_from_slice(available);
                    self.inner.consume(taken);
                    // One extra byte of slack for a `\r` that may precede the `\n`.
                    if self.partial.len() > self.max + 1 {
                        self.partial.clear();
                        return Err(LineError::TooLong);
                    }
                }
            }
        }
    }

    /// Reads exactly `buf.len()` raw bytes that follow the last line (a file chunk).
    pub fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        debug_assert!(
            self.partial.is_empty(),
            "raw bytes only follow a complete line"
        );
        self.inner.read_exact(buf)
    }

    /// The underlying reader, to change timeouts on it.
    pub fn get_ref(&self) -> &R {
        self.inner.get_ref()
    }
}

/// Writes `text` (one or more complete lines, each ending in `\n`) and flushes.
pub fn write_lines<W: Write>(out: &mut W, text: &str) -> io::Result<()> {
    out.write_all(text.as_bytes())?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8], max: usize) -> Vec<Result<Option<String>, String>> {
        let mut reader = LineReader::new(input, max);
        let mut out = Vec::new();
        loop {
            match reader.read_line() {
                Ok(None) => {
                    out.push(Ok(None));
                    return out;
                }
                Ok(Some(l)) => out.push(Ok(Some(l))),
                Err(LineError::TooLong) => {
                    out.push(Err("too long".into()));
                    return out;
                }
                Err(e) => out.push(Err(format!("{e:?}"))),
            }
        }
    }

    #[test]
    fn splits_lines_and_strips_crlf() {
        assert_eq!(
            lines(b"a\nbc\r\n\nd", 10),
            vec![
                Ok(Some("a".into())),
                Ok(Some("bc".into())),
                Ok(Some("".into())),
                Ok(None)
            ]
        );
    }

    #[test]
    fn exactly_max_is_accepted_and_one_more_is_not() {
        let ok = [b"x".repeat(10), b"\r\n".to_vec()].concat();
        assert_eq!(lines(&ok, 10)[0], Ok(Some("x".repeat(10))));
        let long = [b"x".repeat(11), b"\n".to_vec()].concat();
        assert_eq!(lines(&long, 10)[0], Err("too long".into()));
    }

    #[test]
    fn unterminated_flood_is_cut_off_without_buffering_it_all() {
        let flood = vec![b'a'; 1 << 20];
        assert_eq!(lines(&flood, 4096), vec![Err("too long".into())]);
    }

    #[test]
    fn invalid_utf8_is_reported_and_the_stream_stays_in_sync() {
        let out = lines(b"\xff\xfe\nok\n", 10);
        assert!(matches!(&out[0], Err(e) if e.contains("BadUtf8")));
        assert_eq!(out[1], Ok(Some("ok".into())));
    }

    #[test]
    fn a_partial_line_survives_a_timeout() {
        struct Chunks(Vec<io::Result<Vec<u8>>>);
        impl Read for Chunks {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0.is_empty() {
                    return Ok(0);
                }
                match self.0.remove(0) {
                    Ok(bytes) => {
                        buf[..bytes.len()].copy_from_slice(&bytes);
                        Ok(bytes.len())
                    }
                    Err(e) => Err(e),
                }
            }
        }
        let source = Chunks(vec![
            Ok(b"hel".to_vec()),
            Err(io::Error::new(io::ErrorKind::WouldBlock, "timeout")),
            Ok(b"lo\n".to_vec()),
        ]);
        let mut reader = LineReader::new(source, 100);
        assert!(reader.read_line().unwrap_err().is_timeout());
        assert_eq!(reader.read_line().unwrap(), Some("hello".into()));
    }
}
