//! Re-checking the kept prefix of a resumed transfer against its stored chunk hashes,
//! on its own thread while the rest of the file streams in.
//!
//! A resume trusts the state file's hashes for the bytes kept in the `.part` file, and
//! the whole-file hash is built from those stored hashes, so a byte changed on disk
//! since (a bad sector, a crash between the data and the state write, tampering) would
//! otherwise end as "done, verified". This module re-reads those bytes and compares;
//! the receiver calls a transfer verified only if this check passes too. It owns only
//! the checking thread; it must not write files, talk to the peer or print.

use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;
use std::thread;

use crossbeam_channel::{Receiver, TryRecvError, bounded};

use crate::protocol::transfer_msg::CHUNK_SIZE;

/// A running check; ask it with [`PrefixCheck::poll`] or [`PrefixCheck::wait`].
pub struct PrefixCheck {
    /// The verdict, sent once by the checking thread.
    verdict: Receiver<Result<(), String>>,
    /// The verdict once received (the channel gives it only once).
    known: Option<Result<(), String>>,
}

impl PrefixCheck {
    /// Starts re-hashing the first `hashes.len()` chunks of `part` (the last one may be
    /// short when the whole file is kept: `size` is the file's size).
    pub fn start(part: PathBuf, hashes: Vec<blake3::Hash>, size: u64) -> io::Result<PrefixCheck> {
        let (tx, verdict) = bounded(1);
        thread::Builder::new()
            .name("resume-check".into())
            .spawn(move || {
                let _ = tx.send(check(&part, &hashes, size));
            })?;
        Ok(PrefixCheck {
            verdict,
            known: None,
        })
    }

    /// The verdict if the check has finished, without waiting.
    pub fn poll(&mut self) -> Option<Result<(), String>> {
        if self.known.is_none() {
            self.known = match self.verdict.try_recv() {
                Ok(verdict) => Some(verdict),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => Some(Err("the check stopped".into())),
            };
        }
        self.known.clone()
    }

    /// Waits for the verdict.
    pub fn wait(self) -> Result<(), String> {
        match self.known {
            Some(verdict) => verdict,
            None => self
                .verdict
                .recv()
                .unwrap_or_else(|_| Err("the check stopped".into())),
        }
    }
}

fn check(part: &std::path::Path, hashes: &[blake3::Hash], size: u64) -> Result<(), String> {
    let mut file = File::open(part).map_err(|e| format!("cannot read the kept part: {e}"))?;
    let mut buf = vec![0u8; CHUNK_SIZE];
    for (n, want) in hashes.iter().enumerate() {
        let left = size.saturating_sub(n as u64 * CHUNK_SIZE as u64);
        let len = left.min(CHUNK_SIZE as u64) as usize;
        file.read_exact(&mut buf[..len])
            .map_err(|_| format!("chunk {n} of the kept part is missing"))?;
        if blake3::hash(&buf[..len]) != *want {
            return Err(format!("chunk {n} of the kept part changed on disk"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flipped_byte_in_the_kept_part_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.part");
        let data: Vec<u8> = (0..CHUNK_SIZE * 2).map(|i| (i % 253) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let hashes: Vec<blake3::Hash> = data.chunks(CHUNK_SIZE).map(blake3::hash).collect();
        let size = 3 * CHUNK_SIZE as u64;
        let mut good = PrefixCheck::start(path.clone(), hashes.clone(), size).unwrap();
        while good.poll().is_none() {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(good.poll(), Some(Ok(())), "asked twice, the same answer");
        assert_eq!(good.wait(), Ok(()));
        let mut bad = data.clone();
        bad[CHUNK_SIZE + 17] ^= 1;
        std::fs::write(&path, &bad).unwrap();
        let check = PrefixCheck::start(path.clone(), hashes.clone(), size).unwrap();
        assert_eq!(
            check.wait(),
            Err("chunk 1 of the kept part changed on disk".into())
        );
        std::fs::write(&path, &data[..CHUNK_SIZE]).unwrap();
        let check = PrefixCheck::start(path, hashes, size).unwrap();
        assert!(check.wait().unwrap_err().contains("missing"));
    }
}
