//! The receiver's disk: is there room for a file before we accept or resume it, and
//! which partial files of earlier transfers to clean up.
//!
//! Owns the free-space check (statvfs on the downloads folder, through `rustix`) and
//! the cap on kept partial files (`MAX_PARTIAL_FILES`, `MAX_PARTIAL_BYTES`, oldest
//! deleted first). It must not read or write file contents, talk to peers or print:
//! callers turn its answers into refusals and notices.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::protocol::limits::{DISK_SPACE_MARGIN, MAX_PARTIAL_BYTES, MAX_PARTIAL_FILES};

/// A partial file touched more recently than this may belong to a running transfer (a
/// receiver writes one chunk at least every stall timeout), so cleaning never takes it.
const IN_USE: Duration = Duration::from_secs(120);

/// Bytes free for us (not for root's reserve) in the file system holding `dir`; if
/// `dir` does not exist yet, in the one holding its nearest existing ancestor.
pub fn available_space(dir: &Path) -> io::Result<u64> {
    let mut at = dir;
    loop {
        match rustix::fs::statvfs(at) {
            Ok(stat) => return Ok(stat.f_bavail.saturating_mul(stat.f_frsize)),
            Err(rustix::io::Errno::NOENT) => match at.parent() {
                Some(parent) => at = parent,
                None => return Err(io::Error::from(rustix::io::Errno::NOENT)),
            },
            Err(e) => return Err(e.into()),
        }
    }
}

/// Ok if `need` more bytes (plus `DISK_SPACE_MARGIN`) fit in `dir`; otherwise a sentence
/// for the person saying how much is needed and free. A folder whose space cannot be
/// read is let through: the write itself will then fail with a clear error.
pub fn check_room(dir: &Path, need: u64) -> Result<(), String> {
    let free = match available_space(dir) {
        Ok(free) => free,
        Err(e) => {
            log::warn!("cannot read the free space of {}: {e}", dir.display());
            return Ok(());
        }
    };
    if need.saturating_add(DISK_SPACE_MARGIN) <= free {
        return Ok(());
    }
    Err(format!(
        "not enough free disk space in the downloads folder ({need} bytes needed, {free} free)"
    ))
}

/// One kept partial transfer: its `.part` and `.state` files share a key.
struct Kept {
    files: Vec<PathBuf>,
    bytes: u64,
    touched: SystemTime,
}

/// Deletes the oldest partial files in `partial_dir` while more than
/// `MAX_PARTIAL_FILES` are kept or they hold more than `MAX_PARTIAL_BYTES`; `keep` (a
/// key, the file stem) and anything touched within `IN_USE` are never deleted. Returns
/// how many partial transfers were deleted.
pub fn clean_partials(partial_dir: &Path, keep: &str) -> usize {
    clean_partials_with(partial_dir, keep, MAX_PARTIAL_FILES, MAX_PARTIAL_BYTES)
}

fn clean_partials_with(partial_dir: &Path, keep: &str, max_files: usize, max_bytes: u64) -> usize {
    let Ok(entries) = fs::read_dir(partial_dir) else {
        return 0;
    };
    let mut kept: HashMap<String, Kept> = HashMap::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let (Some(stem), Some(ext)) = (
            path.file_stem().and_then(|s| s.to_str()),
            path.extension().and_then(|s| s.to_str()),
        ) else {
            continue;
        };
        if !matches!(ext, "part" | "state") {
            continue;
        }
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        let touched = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        let one = kept.entry(stem.to_string()).or_insert(Kept {
            files: Vec::new(),
            bytes: 0,
            touched,
        });
        one.files.push(path.clone());
        one.bytes += meta.len();
        one.touched = one.touched.max(touched);
    }
    let mut count = kept.len();
    let mut bytes: u64 = kept.values().map(|k| k.bytes).sum();
    let now = SystemTime::now();
    let mut oldest: Vec<(String, Kept)> = kept
        .into_iter()
        .filter(|(key, k)| {
            key != keep && now.duration_since(k.touched).is_ok_and(|age| age >= IN_USE)
        })
        .collect();
    oldest.sort_by_key(|(_, k)| k.touched);
    let mut deleted = 0;
    for (key, one) in oldest {
        if count <= max_files && bytes <= max_bytes {
            break;
        }
        for file in &one.files {
            let _ = fs::remove_file(file);
        }
        log::info!(
            "deleted the partial file {key} ({} bytes): more partial files than kept",
            one.bytes
        );
        count -= 1;
        bytes = bytes.saturating_sub(one.bytes);
        deleted += 1;
    }
    deleted
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;

    fn aged(dir: &Path, key: &str, len: usize, age_secs: u64) {
        for ext in ["part", "state"] {
            let path = dir.join(format!("{key}.{ext}"));
            fs::write(&path, vec![0u8; if ext == "part" { len } else { 10 }]).unwrap();
            let when = SystemTime::now() - Duration::from_secs(age_secs);
            File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(when)
                .unwrap();
        }
    }

    #[test]
    fn the_oldest_partials_beyond_the_caps_go_first() {
        let dir = tempfile::tempdir().unwrap();
        for (i, key) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            aged(dir.path(), key, 100, 10_000 - i as u64 * 1000);
        }
        // Fresh (in use) and the current one are never deleted.
        aged(dir.path(), "fresh", 100, 1);
        assert_eq!(clean_partials_with(dir.path(), "a", 3, u64::MAX), 3);
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".part"))
            .collect();
        left.sort();
        assert_eq!(left, ["a.part", "e.part", "fresh.part"]);
        // The byte cap alone.
        assert_eq!(clean_partials_with(dir.path(), "x", 100, 250), 1);
        assert!(!dir.path().join("a.part").exists());
    }

    #[test]
    fn free_space_is_read_even_for_a_folder_not_made_yet() {
        let dir = tempfile::tempdir().unwrap();
        let free = available_space(&dir.path().join("not/yet")).unwrap();
        assert!(free > 0);
        assert!(check_room(dir.path(), 0).is_ok());
        let err = check_room(dir.path(), u64::MAX / 2).unwrap_err();
        assert!(err.contains("not enough free disk space"), "{err}");
    }
}
