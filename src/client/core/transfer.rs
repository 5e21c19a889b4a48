//! Moving one file over one data connection: sending, receiving, hashing, resume; and
//! the safety rules for names and shared folders.
//!
//! Owns the byte stream after a data connection's first line (protocol.md §11), the
//! partial files and their state beside them, and every check that keeps a name from
//! the network inside the downloads or shared folder. Memory stays bounded (one chunk
//! buffer per transfer, whatever the file size). It must not decide who may transfer
//! (`sessions` checks tickets, `transfers` keeps the table) nor print.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::chunk_out::ChunkOut;
use super::disk_space;
use super::resume_check::PrefixCheck;
use crate::crypto::noise::{NoiseReader, NoiseWriter};
use crate::protocol::codes::ErrorCode;
use crate::protocol::limits::WRITE_TIMEOUT;
use crate::protocol::line::{LineError, LineReader, ReadTimeout, write_lines};
use crate::protocol::server_msg::{SharedFile, TransferResult};
use crate::protocol::transfer_msg::{CHUNK_SIZE, FileHasher, XferLine};

/// Folder inside the downloads folder for partial files and their state.
pub const PARTIAL_DIR: &str = ".peerchat-partial";

/// How often a running transfer reports progress.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// How long either side waits for the other's next line or bytes.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// What a transfer thread reports.
#[derive(Debug)]
pub enum TransferEvent {
    /// `done` of `total` bytes are through (including a resumed prefix).
    Progress { id: u64, done: u64, total: u64 },
    /// The transfer ended.
    Finished { id: u64, outcome: Outcome },
    /// The peer of our transfer (server id `transfer`) could not be reached directly:
    /// ask the server for the relay (the thread waits for its token).
    NeedRelay { id: u64, transfer: u64 },
    /// The peer of our transfer (server id `transfer`) could not be reached directly:
    /// ask the server to have it dial us back (the thread waits for the connection).
    NeedReverse { id: u64, transfer: u64 },
}

/// How a transfer ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Outcome {
    /// The result class, as logged by the server.
    #[serde(serialize_with = "super::event::transfer_result")]
    pub result: TransferResult,
    /// A sentence for people: why it failed, or where the file went.
    pub detail: String,
    /// The file's size.
    pub size: u64,
    /// The peerchat file hash, when verified.
    #[serde(serialize_with = "super::event::hash")]
    pub hash: Option<blake3::Hash>,
    /// Where a received file was stored.
    pub saved_as: Option<PathBuf>,
    /// Bytes skipped because an earlier attempt had them.
    pub resumed_from: u64,
    /// How long it took.
    #[serde(serialize_with = "super::event::millis")]
    pub elapsed: Duration,
}

/// Lets the UI stop a running transfer from its thread, and remembers who asked.
#[derive(Clone, Default)]
pub struct Cancel(Arc<AtomicU8>);

const NOT_CANCELLED: u8 = 0;
const BY_US: u8 = 1;
const BY_PEER: u8 = 2;

impl Cancel {
    /// Asks the transfer to stop; it sends `CANCEL` and ends.
    pub fn cancel(&self) {
        let _ = self
            .0
            .compare_exchange(NOT_CANCELLED, BY_US, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// The peer cancelled (over the chat link): stop, and say so.
    pub fn cancelled_by_peer(&self) {
        let _ = self
            .0
            .compare_exchange(NOT_CANCELLED, BY_PEER, Ordering::SeqCst, Ordering::SeqCst);
    }

    fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst) != NOT_CANCELLED
    }

    /// Why the transfer stopped, if it was cancelled.
    fn reason(&self) -> Option<&'static str> {
        match self.0.load(Ordering::SeqCst) {
            BY_US => Some("cancelled"),
            BY_PEER => Some("cancelled by the peer"),
            _ => None,
        }
    }

    /// A failure while a cancel is under way is the cancel: the other side closing the
    /// connection breaks our read or write first.
    fn explain(&self, stop: Stop) -> Stop {
        match (stop, self.reason()) {
            (Stop::Fail(TransferResult::Failed, _, tell), Some(why)) => {
                Stop::Fail(TransferResult::Cancelled, why.into(), tell)
            }
            (Stop::Fail(TransferResult::Cancelled, _, tell), Some(why)) => {
                Stop::Fail(TransferResult::Cancelled, why.into(), tell)
            }
            (stop, _) => stop,
        }
    }
}

/// The one file name rule (protocol.md §8), shared with the server's `SHARE` check.
pub use crate::protocol::file_name::safe_file_name;

/// A shared folder: only regular files directly inside it are shared (subfolders are
/// not), and every path is checked after resolving symlinks and `..`.
#[derive(Debug, Clone)]
pub struct Share {
    /// The folder, canonical.
    root: PathBuf,
}

impl Share {
    /// Opens a shared folder; it must exist.
    pub fn open(dir: &Path) -> io::Result<Share> {
        let root = dir.canonicalize()?;
        if !root.is_dir() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a folder"));
        }
        Ok(Share { root })
    }

    /// The folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The files to announce: regular files inside the folder (symlinks only if they
    /// resolve inside it), with safe UTF-8 names, sorted by name.
    pub fn scan(&self) -> io::Result<Vec<SharedFile>> {
        let mut files = Vec::new();
        for entry in fs::read_dir(&self.root)? {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if let Ok((_, size)) = self.resolve(&name) {
                files.push(SharedFile { size, name });
            }
        }
        files.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(files)
    }

    /// The real path and size of shared file `name`, or why it cannot be served.
    pub fn resolve(&self, name: &str) -> Result<(PathBuf, u64), String> {
        let name = safe_file_name(name)?;
        let path = self
            .root
            .join(name)
            .canonicalize()
            .map_err(|_| "no such shared file".to_string())?;
        if path.parent() != Some(self.root.as_path()) {
            return Err("not inside the shared folder".into());
        }
        let meta = fs::metadata(&path).map_err(|_| "no such shared file".to_string())?;
        if !meta.is_file() {
            return Err("not a regular file".into());
        }
        Ok((path, meta.len()))
    }
}

/// `name`, or `name (1).ext`, `name (2).ext`... : the first that does not exist.
fn candidate(dir: &Path, name: &str, n: u32) -> PathBuf {
    if n == 0 {
        return dir.join(name);
    }
    let (stem, ext) = match name.rfind('.') {
        Some(dot) if dot > 0 => (&name[..dot], &name[dot..]),
        _ => (name, ""),
    };
    dir.join(format!("{stem} ({n}){ext}"))
}

/// Moves a finished partial file to its final name without ever replacing a file: the
/// hard link fails if the name exists, so two finishing transfers cannot race.
fn place(part: &Path, dir: &Path, name: &str) -> io::Result<PathBuf> {
    for n in 0..10_000 {
        let target = candidate(dir, name, n);
        match fs::hard_link(part, &target) {
            Ok(()) => {
                fs::remove_file(part)?;
                return Ok(target);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(_) if !target.exists() => {
                // A file system without hard links: check, then rename.
                fs::rename(part, &target)?;
                return Ok(target);
            }
            Err(_) => continue,
        }
    }
    Err(io::Error::other("no free name"))
}

/// One side of a data connection after its first line, inside Noise.
pub struct Wire {
    /// Reads lines and the raw chunk bytes after `CHUNK`.
    reader: LineReader<NoiseReader>,
    /// Writes lines and chunk bytes (sealed in frames of up to `noise::MAX_PLAIN`).
    writer: NoiseWriter,
    /// The raw socket: timeouts, peeks and shutdown only.
    stream: TcpStream,
    /// A line read already (the requester's first answer, when it was an `ERR`).
    first: Option<String>,
}

/// Why a transfer stopped early.
enum Stop {
    /// Ends with this result and detail; `tell` is sent to the peer first, if any.
    Fail(TransferResult, String, Option<XferLine>),
}

fn fail(result: TransferResult, detail: impl Into<String>) -> Stop {
    Stop::Fail(result, detail.into(), None)
}

fn fail_and_tell(result: TransferResult, detail: impl Into<String>, code: ErrorCode) -> Stop {
    let detail = detail.into();
    let line = XferLine::Err {
        code,
        message: detail.clone(),
    };
    Stop::Fail(result, detail, Some(line))
}

/// Like [`fail_and_tell`], but the peer is told only `told`: `detail` may hold local
/// paths or system errors, which never leave this machine.
fn fail_privately(
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
fn unexpected(line: XferLine, want: &str, on_err: TransferResult) -> Stop {
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

    fn send(&mut self, line: &XferLine) -> Result<(), Stop> {
        write_lines(&mut self.writer, &line.to_wire())
            .map_err(|e| fail(TransferResult::Failed, format!("connection lost: {e}")))
    }

    fn recv(&mut self) -> Result<XferLine, Stop> {
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
    fn poll_peer(&mut self) -> Option<XferLine> {
        self.stream.set_nonblocking(true).ok()?;
        let mut probe = [0u8; 1];
        let waiting = matches!(self.stream.peek(&mut probe), Ok(n) if n > 0);
        let _ = self.stream.set_nonblocking(false);
        if !waiting {
            return None;
        }
        self.recv().ok()
    }

    /// Ends the conversation: what `stop` says is sent, the connection is closed, and
    /// the outcome is built.
    fn finish(&mut self, stop: Stop, size: u64, resumed_from: u64, started: Instant) -> Outcome {
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
struct Reporter<'a> {
    id: u64,
    events: &'a Sender<TransferEvent>,
    last: Instant,
}

impl Reporter<'_> {
    fn report(&mut self, done: u64, total: u64, force: bool) {
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

/// The hashes of the first `chunks` full chunks of `path`, computed by one thread per
/// core on its own part of the file: a resume waits for this before sending anything,
/// and the receiver is idle meanwhile, so every core may help.
fn hash_prefix(path: &Path, chunks: u64) -> io::Result<Vec<blake3::Hash>> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(chunks.max(1) as usize);
    let per = (chunks as usize).div_ceil(workers);
    let mut hashes = vec![blake3::Hash::from_bytes([0; 32]); chunks as usize];
    std::thread::scope(|scope| {
        let parts: Vec<_> = hashes
            .chunks_mut(per.max(1))
            .enumerate()
            .map(|(part, slots)| {
                scope.spawn(move || -> io::Result<()> {
                    let mut file = File::open(path)?;
                    file.seek(SeekFrom::Start((part * per * CHUNK_SIZE) as u64))?;
                    let mut buf = vec![0u8; CHUNK_SIZE];
                    for slot in slots {
                        file.read_exact(&mut buf)?;
                        *slot = blake3::hash(&buf);
                    }
                    Ok(())
                })
            })
            .collect();
        parts.into_iter().try_for_each(|part| {
            part.join()
                .unwrap_or_else(|_| Err(io::Error::other("a hashing thread failed")))
        })
    })?;
    Ok(hashes)
}

/// Reads up to one chunk; fewer bytes only at the end of the file.
pub(super) fn read_chunk(file: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Sends `path` as `name`: announces it, honours the receiver's resume point after
/// checking that our copy has the same prefix, streams hashed chunks, and waits for the
/// receiver's verdict.
pub fn send(
    mut wire: Wire,
    path: &Path,
    name: &str,
    id: u64,
    events: &Sender<TransferEvent>,
    cancel: &Cancel,
) -> Outcome {
    let started = Instant::now();
    let mut size = 0;
    let mut resumed_from = 0;
    let result = (|| -> Result<Outcome, Stop> {
        let mut file = File::open(path).map_err(|e| {
            fail_privately(
                TransferResult::Refused,
                format!("cannot read {}: {e}", path.display()),
                ErrorCode::TransferRefused,
                "the sender cannot read the file",
            )
        })?;
        size = file
            .metadata()
            .map_err(|e| fail(TransferResult::Failed, e.to_string()))?
            .len();
        wire.send(&XferLine::File {
            size,
            name: name.to_string(),
        })?;
        let (offset, prefix) = match wire.recv()? {
            XferLine::Resume { offset, prefix } => (offset, prefix),
            other => return Err(unexpected(other, "RESUME", TransferResult::Refused)),
        };
        let mut hasher = FileHasher::new();
        let mut out = ChunkOut::new();
        let mut start = 0;
        if offset > 0 && offset <= size && offset % CHUNK_SIZE as u64 == 0 {
            // Prove that our file still starts with what the receiver has; otherwise
            // the whole file goes again.
            let hashes = hash_prefix(path, offset / CHUNK_SIZE as u64)
                .map_err(|e| fail(TransferResult::Failed, e.to_string()))?;
            hashes.iter().for_each(|h| hasher.add(h));
            if Some(hasher.finish()) == prefix {
                start = offset;
            } else {
                hasher = FileHasher::new();
            }
        }
        file.seek(SeekFrom::Start(start))
            .map_err(|e| fail(TransferResult::Failed, e.to_string()))?;
        resumed_from = start;
        wire.send(&XferLine::Start { offset: start })?;
        let mut reporter = Reporter {
            id,
            events,
            last: Instant::now(),
        };
        let mut done = start;
        reporter.report(done, size, true);
        while done < size {
            if cancel.is_set() {
                return Err(Stop::Fail(
                    TransferResult::Cancelled,
                    "cancelled".into(),
                    Some(XferLine::Cancel),
                ));
            }
            match wire.poll_peer() {
                Some(XferLine::Cancel) => {
                    return Err(fail(TransferResult::Cancelled, "cancelled by the peer"));
                }
                Some(XferLine::Err { code, message }) => {
                    let result = if code == ErrorCode::Corrupt {
                        TransferResult::Corrupt
                    } else {
                        TransferResult::Failed
                    };
                    return Err(fail(result, format!("the peer stopped: {message}")));
                }
                _ => {}
            }
            let n = out
                .read_from(&mut file)
                .map_err(|e| fail(TransferResult::Failed, e.to_string()))?;
            if n == 0 {
                return Err(fail_and_tell(
                    TransferResult::Failed,
                    "the file shrank while sending",
                    ErrorCode::TransferRefused,
                ));
            }
            let hash = blake3::hash(out.chunk());
            hasher.add(&hash);
            // The line and the chunk, sealed together, in one system call.
            out.send(hash, &mut wire.writer, &wire.stream)
                .map_err(|e| fail(TransferResult::Failed, format!("connection lost: {e}")))?;
            done += n as u64;
            reporter.report(done, size, false);
        }
        let hash = hasher.finish();
        wire.send(&XferLine::End { hash })?;
        reporter.report(done, size, true);
        match wire.recv()? {
            XferLine::Done { hash: theirs } if theirs == hash => Ok(Outcome {
                result: TransferResult::Ok,
                detail: "delivered and verified".into(),
                size,
                hash: Some(hash),
                saved_as: None,
                resumed_from,
                elapsed: started.elapsed(),
            }),
            XferLine::Done { .. } => Err(fail(TransferResult::Corrupt, "the peer's hash differs")),
            other => Err(unexpected(other, "DONE", TransferResult::Failed)),
        }
    })();
    match result {
        Ok(outcome) => {
            let _ = wire.stream.shutdown(Shutdown::Write);
            outcome
        }
        Err(stop) => wire.finish(cancel.explain(stop), size, resumed_from, started),
    }
}

/// What a receiver expects, when it knows (a push it accepted, or a fetch it asked for).
pub struct Expect {
    /// The name offered or asked for.
    pub name: String,
    /// The size offered, or the size the server's index lists for a fetch; a `FILE`
    /// line announcing another size is refused. `None` trusts the sender.
    pub size: Option<u64>,
    /// For a file of a folder: the folder inside the downloads folder where it goes
    /// (its names already checked one by one); `None` for a file on its own.
    pub into: Option<PathBuf>,
}

impl Expect {
    /// The name its partial file is kept under: the path inside the downloads folder, so
    /// two files of one name in two folders never share a partial file.
    pub fn key(&self) -> String {
        match &self.into {
            Some(dir) => format!("{}/{}", dir.display(), self.name),
            None => self.name.clone(),
        }
    }
}

/// Makes `downloads/into` (for a folder's file) and checks that it resolves inside the
/// downloads folder, so a symlink planted in a received folder cannot lead a file out.
fn destination(downloads: &Path, into: Option<&Path>) -> io::Result<PathBuf> {
    let Some(into) = into else {
        return Ok(downloads.to_path_buf());
    };
    let dir = downloads.join(into);
    fs::create_dir_all(&dir)?;
    let root = downloads.canonicalize()?;
    if !dir.canonicalize()?.starts_with(&root) {
        return Err(io::Error::other(
            "the folder leads outside the downloads folder",
        ));
    }
    Ok(dir)
}

/// The partial file of one (peer, name, size) and the hashes of its verified chunks.
struct Partial {
    part: PathBuf,
    state: PathBuf,
    hashes: Vec<blake3::Hash>,
}

/// How many bytes of `name` (`size` bytes) from `from` are already in `downloads` and
/// verified, where a resume would start; 0 when none. Only reads.
pub fn kept_bytes(downloads: &Path, from: &str, name: &str, size: u64) -> u64 {
    let header = format!(
        "peerchat-partial 1 {} {size} {}",
        from.to_ascii_lowercase(),
        name
    );
    let key = blake3::hash(header.as_bytes()).to_hex();
    let key = &key.as_str()[..32];
    let dir = downloads.join(PARTIAL_DIR);
    let Ok(file) = File::open(dir.join(format!("{key}.state"))) else {
        return 0;
    };
    let mut lines = BufReader::new(file).lines();
    if lines.next().and_then(Result::ok).as_deref() != Some(header.as_str()) {
        return 0;
    }
    let hashed = lines
        .map_while(Result::ok)
        .take_while(|l| blake3::Hash::from_hex(l.trim()).is_ok())
        .count() as u64;
    let on_disk = fs::metadata(dir.join(format!("{key}.part"))).map_or(0, |m| m.len());
    (hashed * CHUNK_SIZE as u64).min(on_disk).min(size)
}

impl Partial {
    /// Finds or starts the partial file for this file from this peer. The state file
    /// holds a header line, then one hex hash per verified chunk, appended as chunks
    /// arrive: a resume reads only this, never the data.
    fn open(downloads: &Path, from: &str, name: &str, size: u64) -> io::Result<Partial> {
        let dir = downloads.join(PARTIAL_DIR);
        fs::create_dir_all(&dir)?;
        let header = format!(
            "peerchat-partial 1 {} {size} {}",
            from.to_ascii_lowercase(),
            name
        );
        let key = blake3::hash(header.as_bytes()).to_hex();
        let key = &key.as_str()[..32];
        let part = dir.join(format!("{key}.part"));
        let state = dir.join(format!("{key}.state"));
        let mut hashes = Vec::new();
        if let Ok(file) = File::open(&state) {
            let mut lines = BufReader::new(file).lines();
            if lines.next().and_then(Result::ok).as_deref() == Some(header.as_str()) {
                for line in lines {
                    match line
                        .ok()
                        .and_then(|l| blake3::Hash::from_hex(l.trim()).ok())
                    {
                        Some(hash) => hashes.push(hash),
                        None => break,
                    }
                }
            }
        }
        // Trust only chunks that are both hashed and on disk.
        let on_disk = fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
        let chunks_on_disk = if on_disk >= size && size > 0 {
            size.div_ceil(CHUNK_SIZE as u64)
        } else {
            on_disk / CHUNK_SIZE as u64
        };
        hashes.truncate(chunks_on_disk as usize);
        let mut text = format!("{header}\n");
        for hash in &hashes {
            text.push_str(hash.to_hex().as_str());
            text.push('\n');
        }
        fs::write(&state, text)?;
        Ok(Partial {
            part,
            state,
            hashes,
        })
    }

    fn verified_bytes(&self, size: u64) -> u64 {
        (self.hashes.len() as u64 * CHUNK_SIZE as u64).min(size)
    }

    fn restart(&mut self) -> io::Result<()> {
        self.hashes.clear();
        let header = fs::read_to_string(&self.state)?
            .lines()
            .next()
            .unwrap_or_default()
            .to_string();
        fs::write(&self.state, format!("{header}\n"))
    }

    fn discard(&self) {
        let _ = fs::remove_file(&self.part);
        let _ = fs::remove_file(&self.state);
    }
}

/// Receives a file into `downloads`: checks the announced name, resumes from verified
/// chunks of an earlier attempt, verifies each chunk and the whole, and moves the file
/// to its final name (never replacing one) only when complete.
pub fn receive(
    mut wire: Wire,
    downloads: &Path,
    from: &str,
    expect: &Expect,
    id: u64,
    events: &Sender<TransferEvent>,
    cancel: &Cancel,
) -> Outcome {
    let started = Instant::now();
    let mut size = 0;
    let mut resumed_from = 0;
    let result = (|| -> Result<Outcome, Stop> {
        let (announced, name) = match wire.recv()? {
            XferLine::File { size, name } => (size, name),
            other => return Err(unexpected(other, "FILE", TransferResult::Refused)),
        };
        size = announced;
        if name != expect.name {
            return Err(fail_and_tell(
                TransferResult::Refused,
                "not the file that was agreed on",
                ErrorCode::TransferRefused,
            ));
        }
        if let Some(agreed) = expect.size.filter(|&s| s != size) {
            return Err(fail_and_tell(
                TransferResult::Refused,
                format!(
                    "the sender announced {size} bytes, not the {agreed} bytes offered or listed; not the file that was agreed on"
                ),
                ErrorCode::TransferRefused,
            ));
        }
        let name = safe_file_name(&name)
            .map_err(|e| fail_and_tell(TransferResult::Refused, e, ErrorCode::TransferRefused))?
            .to_string();
        // The detail (with our paths) stays here; the peer hears a generic reason.
        let disk = |e: io::Error| {
            fail_privately(
                TransferResult::Failed,
                format!("cannot write in {}: {e}", downloads.display()),
                ErrorCode::TransferRefused,
                "the receiver cannot store the file (disk error)",
            )
        };
        fs::create_dir_all(downloads).map_err(disk)?;
        let mut partial = Partial::open(downloads, from, &expect.key(), size).map_err(disk)?;
        if let (Some(dir), Some(key)) = (
            partial.part.parent(),
            partial.part.file_stem().and_then(|k| k.to_str()),
        ) {
            disk_space::clean_partials(dir, key);
        }
        let have = partial.verified_bytes(size);
        disk_space::check_room(downloads, size - have).map_err(|why| {
            fail_privately(
                TransferResult::Refused,
                why,
                ErrorCode::NoSpace,
                "the receiver has not enough free disk space",
            )
        })?;
        let mut hasher = FileHasher::new();
        partial.hashes.iter().for_each(|h| hasher.add(h));
        let prefix = (have > 0).then(|| hasher.finish());
        wire.send(&XferLine::Resume {
            offset: have,
            prefix,
        })?;
        let start = match wire.recv()? {
            XferLine::Start { offset } if offset == have || offset == 0 => offset,
            other => return Err(unexpected(other, "START", TransferResult::Refused)),
        };
        if start == 0 && have > 0 {
            // The sender's file changed: start over.
            partial.restart().map_err(disk)?;
            hasher = FileHasher::new();
        }
        // The kept prefix is re-read and checked against its stored hashes while the
        // rest streams in; "verified" needs both.
        let mut prefix_check = if start > 0 {
            let hashes = partial.hashes.clone();
            Some(PrefixCheck::start(partial.part.clone(), hashes, size).map_err(disk)?)
        } else {
            None
        };
        let kept_changed = |why: String| {
            partial.discard();
            fail_and_tell(
                TransferResult::Corrupt,
                format!(
                    "the part kept from an earlier attempt failed its check ({why}); discarded"
                ),
                ErrorCode::Corrupt,
            )
        };
        resumed_from = start;
        let mut part = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&partial.part)
            .map_err(disk)?;
        part.set_len(start).map_err(disk)?;
        part.seek(SeekFrom::Start(start)).map_err(disk)?;
        let mut state = OpenOptions::new()
            .append(true)
            .open(&partial.state)
            .map_err(disk)?;
        let mut reporter = Reporter {
            id,
            events,
            last: Instant::now(),
        };
        let mut done = start;
        reporter.report(done, size, true);
        let mut buf = vec![0u8; CHUNK_SIZE];
        // Hashes of chunks written but not yet synced: not yet in the state file.
        let mut unsynced: Vec<blake3::Hash> = Vec::with_capacity(STATE_SYNC_CHUNKS);
        let streamed = (|| -> Result<(), Stop> {
            while done < size {
                if cancel.is_set() {
                    return Err(Stop::Fail(
                        TransferResult::Cancelled,
                        "cancelled".into(),
                        Some(XferLine::Cancel),
                    ));
                }
                if let Some(Err(why)) = prefix_check.as_mut().and_then(PrefixCheck::poll) {
                    return Err(kept_changed(why));
                }
                let (len, hash) = match wire.recv()? {
                    XferLine::Chunk { len, hash } => (len, hash),
                    other => return Err(unexpected(other, "CHUNK", TransferResult::Failed)),
                };
                let expected = (size - done).min(CHUNK_SIZE as u64) as usize;
                if len != expected {
                    return Err(fail_and_tell(
                        TransferResult::Failed,
                        "wrong chunk length",
                        ErrorCode::BadRequest,
                    ));
                }
                let chunk = &mut buf[..len];
                wire.reader
                    .read_exact(chunk)
                    .map_err(|e| fail(TransferResult::Failed, format!("connection lost: {e}")))?;
                if blake3::hash(chunk) != hash {
                    return Err(fail_and_tell(
                        TransferResult::Corrupt,
                        format!(
                            "chunk {} failed its hash; discarded",
                            done / CHUNK_SIZE as u64
                        ),
                        ErrorCode::Corrupt,
                    ));
                }
                part.write_all(chunk).map_err(disk)?;
                unsynced.push(hash);
                if unsynced.len() >= STATE_SYNC_CHUNKS {
                    commit_chunks(&part, &mut state, &mut unsynced).map_err(disk)?;
                }
                hasher.add(&hash);
                done += len as u64;
                reporter.report(done, size, false);
            }
            Ok(())
        })();
        // The chunks verified so far count, whatever ended the stream (a sender that
        // went away, a cancel, a bad chunk): a later transfer resumes after them.
        let committed = commit_chunks(&part, &mut state, &mut unsynced).map_err(disk);
        streamed?;
        committed?;

        let whole = hasher.finish();
        match wire.recv()? {
            XferLine::End { hash } if hash == whole => {}
            XferLine::End { .. } => {
                partial.discard();
                return Err(fail_and_tell(
                    TransferResult::Corrupt,
                    "the whole file failed its hash; discarded",
                    ErrorCode::Corrupt,
                ));
            }
            other => return Err(unexpected(other, "END", TransferResult::Failed)),
        }
        if let Some(check) = prefix_check.take()
            && let Err(why) = check.wait()
        {
            return Err(kept_changed(why));
        }
        part.flush().map_err(disk)?;
        drop(part);
        let dir = destination(downloads, expect.into.as_deref()).map_err(disk)?;
        let saved = place(&partial.part, &dir, &name).map_err(disk)?;
        let _ = fs::remove_file(&partial.state);
        wire.send(&XferLine::Done { hash: whole })?;
        reporter.report(done, size, true);
        Ok(Outcome {
            result: TransferResult::Ok,
            detail: format!("saved as {}", saved.display()),
            size,
            hash: Some(whole),
            saved_as: Some(saved),
            resumed_from,
            elapsed: started.elapsed(),
        })
    })();
    match result {
        Ok(outcome) => {
            let _ = wire.stream.shutdown(Shutdown::Write);
            outcome
        }
        Err(stop) => wire.finish(cancel.explain(stop), size, resumed_from, started),
    }
}

/// Chunks received between two syncs of the partial file and its state file. Syncing
/// every chunk cost a 200 MiB push half its speed; every 16 MiB the two fdatasyncs are
/// lost in the stream, and a crash loses at most 16 chunks of progress.
const STATE_SYNC_CHUNKS: usize = 16;

/// Makes the chunks in `unsynced` count as verified: their bytes reach the disk first,
/// then their hashes are appended to the state file and synced, so after a crash the
/// state file never vouches for bytes that were not written.
fn commit_chunks(
    part: &File,
    state: &mut File,
    unsynced: &mut Vec<blake3::Hash>,
) -> std::io::Result<()> {
    if unsynced.is_empty() {
        return Ok(());
    }
    part.sync_data()?;
    let mut lines = String::with_capacity(unsynced.len() * 65);
    for hash in unsynced.drain(..) {
        lines.push_str(&hash.to_hex());
        lines.push('\n');
    }
    state.write_all(lines.as_bytes())?;
    state.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parallel_prefix_hash_matches_a_sequential_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.bin");
        let data: Vec<u8> = (0..CHUNK_SIZE * 5 + 1234)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        fs::write(&path, &data).unwrap();
        for chunks in [1u64, 2, 5] {
            let want: Vec<blake3::Hash> = data
                .chunks(CHUNK_SIZE)
                .take(chunks as usize)
                .map(blake3::hash)
                .collect();
            assert_eq!(hash_prefix(&path, chunks).unwrap(), want, "{chunks} chunks");
        }
        assert!(
            hash_prefix(&path, 6).is_err(),
            "the sixth chunk is not a full one"
        );
    }

    #[test]
    fn existing_files_get_numbered_names() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.txt"), "old").unwrap();
        fs::write(dir.path().join("a (1).txt"), "old").unwrap();
        let part = dir.path().join("x.part");
        fs::write(&part, "new").unwrap();
        let placed = place(&part, dir.path(), "a.txt").unwrap();
        assert_eq!(placed, dir.path().join("a (2).txt"));
        assert_eq!(fs::read_to_string(dir.path().join("a.txt")).unwrap(), "old");
        assert!(!part.exists());
        assert_eq!(
            candidate(dir.path(), "noext", 3),
            dir.path().join("noext (3)")
        );
        assert_eq!(
            candidate(dir.path(), ".hidden", 1),
            dir.path().join(".hidden (1)")
        );
    }

    #[test]
    fn share_serves_only_regular_files_inside_it() {
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("secret"), "s").unwrap();
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("ok.txt"), "hello").unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        fs::write(dir.path().join("sub/deep.txt"), "d").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("link")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("ok.txt"), dir.path().join("inner-link"))
            .unwrap();
        let share = Share::open(dir.path()).unwrap();
        let names: Vec<String> = share.scan().unwrap().into_iter().map(|f| f.name).collect();
        assert_eq!(names, ["inner-link", "ok.txt"]);
        assert_eq!(share.resolve("ok.txt").unwrap().1, 5);
        for bad in [
            "link",
            "sub",
            "sub/deep.txt",
            "../secret",
            "missing",
            "/etc/passwd",
        ] {
            assert!(share.resolve(bad).is_err(), "{bad}");
        }
    }
}
