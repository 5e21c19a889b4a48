//! What `\send`'s argument names: `~` expanded to the home folder, globs expanded, several
//! paths at once, a path with spaces kept whole when it exists.
//!
//! Owns only turning the typed argument into a list of existing paths, in a stable
//! order, capped at what a receiver takes at once. It must not open, read or offer
//! files (`transfers` does).

use std::path::{Path, PathBuf};

use crate::protocol::limits::MAX_PENDING_OFFERS_PER_PEER;

/// The paths `arg` names, with `home` for `~`. The whole argument is one path when it
/// exists as typed (`\send my file.txt`); otherwise each word is a path or a glob
/// (`\send ~/photos/*.jpg notes.txt`), and `"..."` keeps a word's spaces.
pub fn expand(arg: &str, home: Option<&Path>) -> Result<Vec<PathBuf>, String> {
    let arg = arg.trim();
    if arg.is_empty() {
        return Err("usage: \\send <path...>".into());
    }
    let whole = tilde(arg, home);
    if whole.exists() {
        return Ok(vec![whole]);
    }
    let mut out = Vec::new();
    for word in words(arg) {
        let path = tilde(&word, home);
        let text = path.to_string_lossy().into_owned();
        if text.contains(['*', '?', '[']) {
            let matches = glob::glob(&text).map_err(|e| format!("bad pattern {word}: {e}"))?;
            let mut found: Vec<PathBuf> = matches.filter_map(Result::ok).collect();
            if found.is_empty() {
                return Err(format!("nothing matches {word}"));
            }
            found.sort();
            out.extend(found);
        } else {
            out.push(path);
        }
        if out.len() > MAX_PENDING_OFFERS_PER_PEER {
            return Err(format!(
                "a \\send offers at most {MAX_PENDING_OFFERS_PER_PEER} files at once (what a \
                 receiver takes waiting); send the rest once these are answered"
            ));
        }
    }
    Ok(out)
}

/// `~` or `~/x` with the home folder; anything else as typed.
fn tilde(word: &str, home: Option<&Path>) -> PathBuf {
    match (word, home) {
        ("~", Some(home)) => home.to_path_buf(),
        (w, Some(home)) if w.starts_with("~/") => home.join(&w[2..]),
        (w, _) => PathBuf::from(w),
    }
}

/// Splits on spaces; `"a b"` is one word.
fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in text.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !word.is_empty() {
                    out.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

/// The user's home folder, from `HOME`.
pub fn home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tilde_globs_and_several_paths() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path();
        for name in ["a.txt", "b.txt", "c.bin", "my file.txt"] {
            std::fs::write(home.join(name), b"x").unwrap();
        }
        assert_eq!(
            expand("~/my file.txt", Some(home)).unwrap(),
            vec![home.join("my file.txt")]
        );
        assert_eq!(
            expand("~/*.txt", Some(home)).unwrap(),
            vec![
                home.join("a.txt"),
                home.join("b.txt"),
                home.join("my file.txt")
            ]
        );
        assert_eq!(
            expand("~/c.bin \"~/my file.txt\"", Some(home)).unwrap(),
            vec![home.join("c.bin"), home.join("my file.txt")]
        );
        assert!(
            expand("~/*.jpg", Some(home))
                .unwrap_err()
                .contains("nothing matches")
        );
        assert_eq!(expand("x", None).unwrap(), vec![PathBuf::from("x")]);
    }
}
