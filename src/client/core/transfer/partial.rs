//! Partial downloads kept beside the downloads folder (`.peerchat-partial`): the part
//! file and its state file of verified chunk hashes, what a resume may trust, where a
//! folder's file may go, and syncing chunks before their hashes vouch for them.
//!
//! It must not read from the network (`receive` does) nor name the final file (`names`).

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use crate::protocol::transfer_msg::CHUNK_SIZE;

/// Folder inside the downloads folder for partial files and their state.
pub const PARTIAL_DIR: &str = ".peerchat-partial";

/// Makes `downloads/into` (for a folder's file) and checks that it resolves inside the
/// downloads folder, so a symlink planted in a received folder cannot lead a file out.
pub(super) fn destination(downloads: &Path, into: Option<&Path>) -> io::Result<PathBuf> {
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
pub(super) struct Partial {
    pub(super) part: PathBuf,
    pub(super) state: PathBuf,
    pub(super) hashes: Vec<blake3::Hash>,
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
    pub(super) fn open(downloads: &Path, from: &str, name: &str, size: u64) -> io::Result<Partial> {
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

    pub(super) fn verified_bytes(&self, size: u64) -> u64 {
        (self.hashes.len() as u64 * CHUNK_SIZE as u64).min(size)
    }

    pub(super) fn restart(&mut self) -> io::Result<()> {
        self.hashes.clear();
        let header = fs::read_to_string(&self.state)?
            .lines()
            .next()
            .unwrap_or_default()
            .to_string();
        fs::write(&self.state, format!("{header}\n"))
    }

    pub(super) fn discard(&self) {
        let _ = fs::remove_file(&self.part);
        let _ = fs::remove_file(&self.state);
    }
}

/// Chunks received between two syncs of the partial file and its state file. Syncing
/// every chunk cost a 200 MiB push half its speed; every 16 MiB the two fdatasyncs are
/// lost in the stream, and a crash loses at most 16 chunks of progress.
pub(super) const STATE_SYNC_CHUNKS: usize = 16;

/// Makes the chunks in `unsynced` count as verified: their bytes reach the disk first,
/// then their hashes are appended to the state file and synced, so after a crash the
/// state file never vouches for bytes that were not written.
pub(super) fn commit_chunks(
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
