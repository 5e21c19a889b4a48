//! Where the server's database is: `--db` takes a file path (SQLite, the default) or a
//! `postgres://` URL.
//!
//! Owns parsing that flag and showing it safely: Display and Debug never show a password
//! from the URL (neither `user:password@` nor `?password=`), so the location can be logged.
//! It must not connect to anything.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Where the store lives.
#[derive(Clone, PartialEq, Eq)]
pub enum DbLocation {
    /// A SQLite database file (created with its folder if missing).
    File(PathBuf),
    /// A PostgreSQL URL (`postgres://user@host:port/db`), possibly shared with other
    /// servers.
    Postgres(String),
}

/// The folder of the default database: with a URL, the server keeps its other files
/// (the self-signed TLS identity) here.
const DEFAULT_DIR: &str = "data";

impl DbLocation {
    /// The path next to which the server keeps its own files (the self-signed TLS
    /// identity): the database file, or `data/server.db` when the database is a URL.
    pub fn file_anchor(&self) -> PathBuf {
        match self {
            DbLocation::File(path) => path.clone(),
            DbLocation::Postgres(_) => Path::new(DEFAULT_DIR).join("server.db"),
        }
    }
}

impl FromStr for DbLocation {
    type Err = String;

    fn from_str(text: &str) -> Result<DbLocation, String> {
        let lower = text.to_ascii_lowercase();
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            // Checked now so a typo fails at start-up; the error never repeats the URL.
            return match postgres::Config::from_str(text) {
                Ok(_) => Ok(DbLocation::Postgres(text.to_string())),
                Err(_) => Err("not a valid postgres:// URL \
                     (postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE)"
                    .into()),
            };
        }
        if text.is_empty() {
            return Err("an empty database path".into());
        }
        Ok(DbLocation::File(PathBuf::from(text)))
    }
}

/// `url` with any password replaced by `***`.
pub fn redact(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if key.eq_ignore_ascii_case("password") => {
                        format!("{key}=***")
                    }
                    _ => pair.to_string(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_string(),
    };
    format!("{scheme}://{authority}{tail}")
}

impl fmt::Display for DbLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbLocation::File(path) => write!(f, "{}", path.display()),
            DbLocation::Postgres(url) => f.write_str(&redact(url)),
        }
    }
}

impl fmt::Debug for DbLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DbLocation({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_urls_are_told_apart_and_passwords_never_shown() {
        assert_eq!(
            "data/server.db".parse::<DbLocation>().unwrap(),
            DbLocation::File("data/server.db".into())
        );
        let url = "postgres://peer:s3cret@db.example:5433/chat?password=s3cret&sslmode=disable";
        let db: DbLocation = url.parse().unwrap();
        assert_eq!(db, DbLocation::Postgres(url.into()));
        let shown = format!("{db} {db:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            shown.contains("postgres://peer:***@db.example:5433/chat?password=***&sslmode=disable")
        );
        assert_eq!(redact("postgres://u@h/d"), "postgres://u@h/d");
        let bad = "postgres://u:pw@h:notaport/d"
            .parse::<DbLocation>()
            .unwrap_err();
        assert!(!bad.contains("pw"), "{bad}");
        assert_eq!(
            db.file_anchor(),
            Path::new("data/server.db"),
            "a URL keeps the TLS identity in data/"
        );
    }
}
