//! A shared folder (`\\share`): which files in it may be announced and served, checked
//! after resolving symlinks and `..` so a name from the network never leads outside it.
//!
//! It must not open data connections or send bytes (`send` does).

use std::fs::{self};
use std::io::{self};
use std::path::{Path, PathBuf};

use crate::protocol::server_msg::SharedFile;

use super::safe_file_name;

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

#[cfg(test)]
mod tests {
    use super::*;

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
