//! Names a received file may take on disk: the one file name rule (re-exported from
//! `protocol::file_name`), numbering `name (1).ext` when a name is taken, and the final
//! move of a finished partial file that never replaces an existing file.
//!
//! It must not read from the network or decide where downloads live (`receive` does).

use std::fs::{self};
use std::io::{self};
use std::path::{Path, PathBuf};

/// The one file name rule (protocol.md §8), shared with the server's `SHARE` check.
pub use crate::protocol::file_name::safe_file_name;

/// `name`, or `name (1).ext`, `name (2).ext`... : the first that does not exist.
pub(super) fn candidate(dir: &Path, name: &str, n: u32) -> PathBuf {
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
pub(super) fn place(part: &Path, dir: &Path, name: &str) -> io::Result<PathBuf> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
