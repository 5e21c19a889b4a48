//! The sending side of one file: announce it, check the receiver's resume point against
//! our own prefix (hashed on every core), stream hashed chunks, await the verdict.
//!
//! Memory stays one chunk buffer per transfer. It must not decide who may transfer nor print.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::time::Instant;

use crossbeam_channel::Sender;

use crate::client::core::chunk_out::ChunkOut;
use crate::protocol::codes::ErrorCode;
use crate::protocol::server_msg::TransferResult;
use crate::protocol::transfer_msg::{CHUNK_SIZE, FileHasher, XferLine};

use super::wire::{Reporter, Stop, Wire, fail, fail_and_tell, fail_privately, unexpected};
use super::{Cancel, Outcome, TransferEvent};

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
pub(in crate::client::core) fn read_chunk(
    file: &mut impl Read,
    buf: &mut [u8],
) -> io::Result<usize> {
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
            if let Err(e) = out.send(hash, &mut wire.writer, &wire.stream) {
                return Err(wire.write_failed(&e));
            }
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
    wire.finish(result, cancel, size, resumed_from, started)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

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
}
