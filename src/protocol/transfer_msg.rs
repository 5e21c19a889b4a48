//! The lines of a file transfer's data connection (protocol.md §11), after its first
//! line (`PUSH` or `FETCH`, in `peer_msg`).
//!
//! Owns the text of those lines and the file hash scheme's constants. It must not touch
//! sockets or files: `client::transfer` reads the raw chunk bytes that follow `CHUNK`.

use std::fmt;

use super::codes::ErrorCode;
use super::server_msg::one_line;
use super::{ParseError, parse_err, write_err};

/// Bytes per chunk: each is hashed and checked on its own, and resume restarts at a
/// chunk boundary.
pub const CHUNK_SIZE: usize = 1 << 20;

/// One line of the data connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XferLine {
    /// `FILE <size> <name>` (sender): what is coming.
    File { size: u64, name: String },
    /// `RESUME <offset> <prefix-hash|->` (receiver): I have verified `offset` bytes whose
    /// chunk hashes combine to this hash.
    Resume {
        offset: u64,
        prefix: Option<blake3::Hash>,
    },
    /// `START <offset>` (sender): chunks follow from `offset` (0 if the prefix differed).
    Start { offset: u64 },
    /// `CHUNK <len> <hash>` (sender), followed by exactly `len` raw bytes.
    Chunk { len: usize, hash: blake3::Hash },
    /// `END <file-hash>` (sender): all chunks sent.
    End { hash: blake3::Hash },
    /// `DONE <file-hash>` (receiver): verified and stored.
    Done { hash: blake3::Hash },
    /// `CANCEL` (either side): stop now.
    Cancel,
    /// `ERR <code> <NAME> <message>` (either side): the last line before closing.
    Err { code: ErrorCode, message: String },
}

fn parse_hash(text: &str) -> Result<blake3::Hash, ParseError> {
    blake3::Hash::from_hex(text).map_err(|_| ParseError::bad("malformed hash"))
}

fn parse_u64(text: &str) -> Result<u64, ParseError> {
    text.parse().map_err(|_| {
        ParseError::bad(format!(
            "not a number: {}",
            text.chars().take(24).collect::<String>()
        ))
    })
}

impl XferLine {
    /// The wire form, ending in `\n`.
    pub fn to_wire(&self) -> String {
        format!("{self}\n")
    }

    /// Parses one line.
    pub fn parse(line: &str) -> Result<XferLine, ParseError> {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        let words: Vec<&str> = rest.split(' ').collect();
        Ok(match (word, words.as_slice()) {
            ("FILE", _) => {
                let (size, name) = rest
                    .split_once(' ')
                    .ok_or_else(|| ParseError::bad("usage: FILE <size> <name>"))?;
                if name.is_empty() {
                    return Err(ParseError::bad("usage: FILE <size> <name>"));
                }
                XferLine::File {
                    size: parse_u64(size)?,
                    name: name.to_string(),
                }
            }
            ("RESUME", [offset, prefix]) => XferLine::Resume {
                offset: parse_u64(offset)?,
                prefix: match *prefix {
                    "-" => None,
                    hex => Some(parse_hash(hex)?),
                },
            },
            ("START", [offset]) => XferLine::Start {
                offset: parse_u64(offset)?,
            },
            ("CHUNK", [len, hash]) => {
                let len = parse_u64(len)? as usize;
                if len == 0 || len > CHUNK_SIZE {
                    return Err(ParseError::bad("chunk length out of range"));
                }
                XferLine::Chunk {
                    len,
                    hash: parse_hash(hash)?,
                }
            }
            ("END", [hash]) => XferLine::End {
                hash: parse_hash(hash)?,
            },
            ("DONE", [hash]) => XferLine::Done {
                hash: parse_hash(hash)?,
            },
            ("CANCEL", [""]) => XferLine::Cancel,
            ("ERR", _) => {
                let (code, message) = parse_err(rest)?;
                XferLine::Err { code, message }
            }
            _ => return Err(ParseError::bad("unexpected line in a transfer")),
        })
    }
}

impl fmt::Display for XferLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            XferLine::File { size, name } => write!(f, "FILE {size} {}", one_line(name)),
            XferLine::Resume { offset, prefix } => match prefix {
                Some(hash) => write!(f, "RESUME {offset} {}", hash.to_hex()),
                None => write!(f, "RESUME {offset} -"),
            },
            XferLine::Start { offset } => write!(f, "START {offset}"),
            XferLine::Chunk { len, hash } => write!(f, "CHUNK {len} {}", hash.to_hex()),
            XferLine::End { hash } => write!(f, "END {}", hash.to_hex()),
            XferLine::Done { hash } => write!(f, "DONE {}", hash.to_hex()),
            XferLine::Cancel => write!(f, "CANCEL"),
            XferLine::Err { code, message } => write_err(f, *code, message),
        }
    }
}

/// The peerchat file hash: BLAKE3 over the BLAKE3 hashes of the file's chunks, in order.
/// Built chunk by chunk, so a resumed transfer needs only the hashes of what it has.
#[derive(Default, Clone)]
pub struct FileHasher {
    inner: blake3::Hasher,
    /// Chunks added so far.
    pub chunks: u64,
}

impl FileHasher {
    /// No chunks yet.
    pub fn new() -> FileHasher {
        FileHasher::default()
    }

    /// Adds the next chunk's hash.
    pub fn add(&mut self, chunk_hash: &blake3::Hash) {
        self.inner.update(chunk_hash.as_bytes());
        self.chunks += 1;
    }

    /// The hash of the chunks added so far.
    pub fn finish(&self) -> blake3::Hash {
        self.inner.finalize()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_transfer_line_round_trips() {
        let hash = blake3::hash(b"x");
        for line in [
            XferLine::File {
                size: 10,
                name: "a b.txt".into(),
            },
            XferLine::Resume {
                offset: 0,
                prefix: None,
            },
            XferLine::Resume {
                offset: CHUNK_SIZE as u64,
                prefix: Some(hash),
            },
            XferLine::Start { offset: 5 },
            XferLine::Chunk { len: 7, hash },
            XferLine::End { hash },
            XferLine::Done { hash },
            XferLine::Cancel,
            XferLine::Err {
                code: ErrorCode::Corrupt,
                message: "chunk 3".into(),
            },
        ] {
            let wire = line.to_wire();
            assert_eq!(XferLine::parse(wire.trim_end()).unwrap(), line, "{wire}");
        }
    }

    #[test]
    fn malformed_transfer_lines_are_rejected() {
        for bad in [
            "",
            "FILE",
            "FILE 1",
            "FILE x name",
            "RESUME 1",
            "RESUME x -",
            "RESUME 0 zz",
            "START",
            "CHUNK 0 00",
            "CHUNK 5 nothex",
            &format!("CHUNK {} {}", CHUNK_SIZE + 1, blake3::hash(b"").to_hex()),
            "END",
            "DONE x",
            "CANCEL now",
            "ERR 1 X y",
            "NOPE",
        ] {
            assert!(XferLine::parse(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn file_hash_depends_on_every_chunk_in_order() {
        let (a, b) = (blake3::hash(b"a"), blake3::hash(b"b"));
        let mut ab = FileHasher::new();
        ab.add(&a);
        ab.add(&b);
        let mut ba = FileHasher::new();
        ba.add(&b);
        ba.add(&a);
        assert_ne!(ab.finish(), ba.finish());
        assert_eq!(ab.chunks, 2);
        assert_eq!(FileHasher::new().finish(), blake3::hash(b""));
        // The example in protocol.md §11: a 6-byte file "hello\n".
        let mut hello = FileHasher::new();
        hello.add(&blake3::hash(b"hello\n"));
        assert_eq!(
            hello.finish().to_hex().as_str(),
            "4180cbd7a2b9297abf1f04eb033f30624f1f17186eab61e01aaaf1896a20de96"
        );
    }
}
