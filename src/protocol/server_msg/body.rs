//! The body lines of list replies and of `SHARE`: one user (`USER`), one shared file
//! (`FILE`), one file offered for sharing (`<size> <name>`).
//!
//! Owns parsing and formatting of one such line; it must not count or frame them (see
//! `ServerMsg::body_len`) nor touch sockets.

use std::fmt;

use super::super::file_name::safe_file_name;
use super::ParseError;
use super::one_line;

/// One user in a `LIST` page: `USER <name> <id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedUser {
    /// The name as registered.
    pub name: String,
    /// The account's short numeric id, for `\msg <id>` (`WHOIS`, `SEND`).
    pub id: u64,
}

/// One shared file in a listing or search result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Who shares it.
    pub user: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its name inside that user's shared folder.
    pub name: String,
}

impl FileEntry {
    pub(super) fn parse(line: &str) -> Result<FileEntry, ParseError> {
        let bad = || ParseError::bad("a file line is FILE <user> <size> <name>");
        let mut parts = line.splitn(4, ' ');
        if parts.next() != Some("FILE") {
            return Err(bad());
        }
        let user = parts.next().filter(|u| !u.is_empty()).ok_or_else(bad)?;
        let size = parts.next().and_then(|n| n.parse().ok()).ok_or_else(bad)?;
        let name = parts.next().filter(|n| !n.is_empty()).ok_or_else(bad)?;
        Ok(FileEntry {
            user: user.to_string(),
            size,
            name: name.to_string(),
        })
    }
}

impl fmt::Display for FileEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "FILE {} {} {}",
            self.user,
            self.size,
            one_line(&self.name)
        )
    }
}

/// One line of a `SHARE` body: `<size> <name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedFile {
    /// Size in bytes.
    pub size: u64,
    /// Name inside the shared folder.
    pub name: String,
}

impl SharedFile {
    /// Parses `<size> <name>`: the name is everything after the first space, spaces
    /// included, and must pass the file name rule (`protocol::file_name`).
    pub fn parse(line: &str) -> Result<SharedFile, ParseError> {
        let bad = || ParseError::bad("a SHARE line is <size> <name>");
        let (size, name) = line.split_once(' ').ok_or_else(bad)?;
        let size = size.parse().map_err(|_| bad())?;
        let name = safe_file_name(name).map_err(ParseError::bad)?;
        Ok(SharedFile {
            size,
            name: name.to_string(),
        })
    }
}

impl fmt::Display for SharedFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.size, one_line(&self.name))
    }
}
