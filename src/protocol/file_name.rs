//! The rule for file names on the wire (protocol.md §8, "file name"): one function used
//! by the server for `SHARE` lines and by clients for offers, pushes and fetches.
//!
//! Owns the pure name check; it must not touch the file system (resolving symlinks and
//! checking that a file is shared is `client::transfer`'s job).

use super::limits::MAX_FILE_NAME;

/// Refuses names that could leave a folder or confuse a terminal: empty, `.`, `..`, path
/// separators (`/`, `\`), a drive letter (`C:`), control characters, or more than
/// `MAX_FILE_NAME` bytes. The error says which rule, without echoing the name.
pub fn safe_file_name(name: &str) -> Result<&str, String> {
    let bad = |why: &str| Err(format!("unsafe file name ({why})"));
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > MAX_FILE_NAME {
        return bad("too long");
    }
    if name == "." || name == ".." {
        return bad("a folder reference");
    }
    if name.contains(['/', '\\']) {
        return bad("a path separator");
    }
    if name.chars().any(char::is_control) {
        return bad("a control character");
    }
    let bytes = name.as_bytes();
    if bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':' {
        return bad("a drive letter");
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_names_are_refused_and_safe_ones_kept() {
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "/etc/passwd",
            "a\\b",
            "C:evil",
            "c:\\x",
            "tab\there",
            "nl\nx",
            &"x".repeat(256),
        ] {
            assert!(safe_file_name(bad).is_err(), "{bad:?}");
        }
        for good in [
            "report.pdf",
            "two  spaces .txt",
            "ünïcødé ✓.bin",
            ".hidden",
            "ab:c",
            &"x".repeat(255),
        ] {
            assert_eq!(safe_file_name(good), Ok(good));
        }
    }
}
