//! The receiving side of one file: check the announced name and size against what we
//! expect, resume from verified chunks, verify each chunk and the whole, and place the
//! finished file under a free name.
//!
//! It must not decide who may transfer (`sessions` checks tickets) nor print.

use std::fs::{self, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crossbeam_channel::Sender;

use crate::client::core::disk_space;
use crate::client::core::resume_check::PrefixCheck;
use crate::protocol::codes::ErrorCode;
use crate::protocol::server_msg::TransferResult;
use crate::protocol::transfer_msg::{CHUNK_SIZE, FileHasher, XferLine};

use super::names::place;
use super::partial::{Partial, STATE_SYNC_CHUNKS, commit_chunks, destination};
use super::wire::{Reporter, Stop, Wire, fail, fail_and_tell, fail_privately, unexpected};
use super::{Cancel, Outcome, TransferEvent, safe_file_name};

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
    wire.finish(result, cancel, size, resumed_from, started)
}
