//! One side of a data connection after its first line (protocol.md §11): reading and
//! writing `XferLine`s inside Noise, stall timeouts, how a transfer stops early (`Stop`
//! and the `ERR` it tells the peer), and throttled progress reports.
//!
//! It must not touch files (`send`, `receive` and `partial` do) nor decide who may transfer.

use std::io;
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use crate::crypto::noise::{NoiseReader, NoiseWriter};
use crate::protocol::codes::ErrorCode;
use crate::protocol::limits::WRITE_TIMEOUT;
use crate::protocol::line::{LineError, LineReader, ReadTimeout, write_lines};
use crate::protocol::server_msg::TransferResult;
use crate::protocol::transfer_msg::XferLine;

use super::{Cancel, Outcome, TransferEvent};

/// How often a running transfer reports progress.
pub(super) const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// How long either side waits for the other's next line or bytes.
pub(super) const STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// One side of a data connection after its first line, inside Noise.
pub struct Wire {
    /// Reads lines and the raw chunk bytes after `CHUNK`.
    pub(super) reader: LineReader<NoiseReader>,
    /// Writes lines and chunk bytes (sealed in frames of up to `noise::MAX_PLAIN`).
    pub(super) writer: NoiseWriter,
    /// The raw socket: timeouts, peeks and shutdown only.
    pub(super) stream: TcpStream,
    /// A line read already (the requester's first answer, when it was an `ERR`).
    pub(super) first: Option<String>,
}

/// Why a transfer stopped early.
pub(super) enum Stop {
    /// Ends with this result and detail; `tell` is sent to the peer first, if any.
    Fail(TransferResult, String, Option<XferLine>),
}

pub(super) fn fail(result: TransferResult, detail: impl Into<String>) -> Stop {
    Stop::Fail(result, detail.into(), None)
}

pub(super) fn fail_and_tell(
    result: TransferResult,
    detail: impl Into<String>,
    code: ErrorCode,
) -> Stop {
    let detail = detail.into();
    let line = XferLine::Err {
        code,
        message: detail.clone(),
    };
    Stop::Fail(result, detail, Some(line))
}

/// Like [`fail_and_tell`], but the peer is told only `told`: `detail` may hold local
/// paths or system errors, which never leave this machine.
pub(super) fn fail_privately(
    result: TransferResult,
    detail: impl Into<String>,
    code: ErrorCode,
    told: &str,
) -> Stop {
    let line = XferLine::Err {
        code,
        message: told.to_string(),
    };
    Stop::Fail(result, detail.into(), Some(line))
}

/// The stop for a line other than the one expected next: the peer's cancel or error
/// (`on_err` says what a plain error means at this step), or a protocol violation.
pub(super) fn unexpected(line: XferLine, want: &str, on_err: TransferResult) -> Stop {
    match line {
        XferLine::Cancel => fail(TransferResult::Cancelled, "cancelled by the peer"),
        XferLine::Err {
            code: ErrorCode::Corrupt,
            message,
        } => fail(TransferResult::Corrupt, message),
        // Refusals with a limit behind them are said plainly (the code is stable, the
        // peer's text is not).
        XferLine::Err {
            code: code @ ErrorCode::ServeBusy,
            ..
        } => fail(
            TransferResult::Refused,
            format!("the owner is serving as many fetches as it allows; try again later ({code})"),
        ),
        XferLine::Err {
            code: code @ ErrorCode::NoSpace,
            ..
        } => fail(
            TransferResult::Refused,
            format!("the receiver has not enough free disk space for the file ({code})"),
        ),
        XferLine::Err { message, .. } => fail(on_err, message),
        _ => fail_and_tell(
            TransferResult::Failed,
            format!("expected {want}"),
            ErrorCode::OutOfOrder,
        ),
    }
}

impl Wire {
    /// Wraps a secured connection (`stream` is its raw socket) whose first line was
    /// already read (or written) through `reader` / `writer`.
    pub fn new(
        stream: TcpStream,
        reader: LineReader<NoiseReader>,
        writer: NoiseWriter,
    ) -> io::Result<Wire> {
        // The short lines of the exchange must not wait for Nagle's algorithm.
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
        reader.get_ref().set_read_timeout(Some(STALL_TIMEOUT))?;
        Ok(Wire {
            reader,
            writer,
            stream,
            first: None,
        })
    }

    /// [`Wire::new`] with a line already read, which `recv` returns first.
    pub fn with_first_line(
        stream: TcpStream,
        reader: LineReader<NoiseReader>,
        writer: NoiseWriter,
        line: String,
    ) -> io::Result<Wire> {
        let mut wire = Wire::new(stream, reader, writer)?;
        wire.first = Some(line);
        Ok(wire)
    }

    pub(super) fn send(&mut self, line: &XferLine) -> Result<(), Stop> {
        match write_lines(&mut self.writer, &line.to_wire()) {
            Ok(()) => Ok(()),
            Err(e) => Err(self.write_failed(&e)),
        }
    }

    /// The stop for a write that failed. A peer that cancels (or refuses) sends
    /// `CANCEL` (or `ERR`) and closes; when our bytes were still unread there, its close
    /// resets the connection and our next write fails. Its line may still wait unread
    /// here, and says why: a cancel is reported as one, not as a lost connection,
    /// whichever of the chat link's `CANCEL` and this failure comes first.
    pub(super) fn write_failed(&mut self, e: &io::Error) -> Stop {
        match self.poll_peer() {
            Some(line @ (XferLine::Cancel | XferLine::Err { .. })) => {
                unexpected(line, "CHUNK", TransferResult::Failed)
            }
            _ => fail(TransferResult::Failed, format!("connection lost: {e}")),
        }
    }

    pub(super) fn recv(&mut self) -> Result<XferLine, Stop> {
        let next = match self.first.take() {
            Some(line) => Ok(Some(line)),
            None => self.reader.read_line(),
        };
        match next {
            Ok(Some(line)) => XferLine::parse(&line).map_err(|e| {
                fail_and_tell(
                    TransferResult::Failed,
                    format!("protocol error: {}", e.message),
                    e.code,
                )
            }),
            Ok(None) => Err(fail(
                TransferResult::Failed,
                "the peer closed the connection",
            )),
            Err(e) if e.is_timeout() => {
                Err(fail(TransferResult::Failed, "the peer stopped sending"))
            }
            Err(LineError::Io(e)) => Err(fail(
                TransferResult::Failed,
                format!("connection lost: {e}"),
            )),
            Err(_) => Err(fail_and_tell(
                TransferResult::Failed,
                "unreadable line",
                ErrorCode::BadRequest,
            )),
        }
    }

    /// A line the peer sent while we were sending, if any (`CANCEL` or `ERR`), without
    /// waiting.
    pub(super) fn poll_peer(&mut self) -> Option<XferLine> {
        self.stream.set_nonblocking(true).ok()?;
        let mut probe = [0u8; 1];
        let waiting = matches!(self.stream.peek(&mut probe), Ok(n) if n > 0);
        let _ = self.stream.set_nonblocking(false);
        if !waiting {
            return None;
        }
        self.recv().ok()
    }

    /// Ends the conversation of `send` or `receive`: a transfer that got through closes
    /// our sending half and keeps its outcome; for one that stopped, what `stop` says
    /// (as `cancel` explains it) is sent, the connection is closed, and the outcome is
    /// built.
    pub(super) fn finish(
        &mut self,
        result: Result<Outcome, Stop>,
        cancel: &Cancel,
        size: u64,
        resumed_from: u64,
        started: Instant,
    ) -> Outcome {
        let stop = match result {
            Ok(outcome) => {
                let _ = self.stream.shutdown(Shutdown::Write);
                return outcome;
            }
            Err(stop) => cancel.explain(stop),
        };
        let Stop::Fail(result, detail, tell) = stop;
        if let Some(line) = tell {
            let _ = self.send(&line);
        }
        let _ = self.stream.shutdown(Shutdown::Write);
        Outcome {
            result,
            detail,
            size,
            hash: None,
            saved_as: None,
            resumed_from,
            elapsed: started.elapsed(),
        }
    }

    /// Refuses with `ERR` and closes (before anything was sent).
    pub fn refuse(mut self, message: &str) {
        let _ = self.send(&XferLine::Err {
            code: ErrorCode::TransferRefused,
            message: message.to_string(),
        });
        let _ = self.stream.shutdown(Shutdown::Write);
    }
}

/// Reports progress at most every `PROGRESS_EVERY`.
pub(super) struct Reporter<'a> {
    pub(super) id: u64,
    pub(super) events: &'a Sender<TransferEvent>,
    pub(super) last: Instant,
}

impl Reporter<'_> {
    pub(super) fn report(&mut self, done: u64, total: u64, force: bool) {
        if force || self.last.elapsed() >= PROGRESS_EVERY {
            self.last = Instant::now();
            let _ = self.events.try_send(TransferEvent::Progress {
                id: self.id,
                done,
                total,
            });
        }
    }
}
