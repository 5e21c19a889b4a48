//! The sender's side of one file chunk on the wire: the `CHUNK` line and the chunk's
//! bytes sealed together and written with one system call.
//!
//! Owns the sender's two buffers: the plaintext (room for the `CHUNK` line, then the
//! chunk read from the file right behind it, so the line is put in front without
//! moving the chunk) and the sealed frames. The line and the first bytes of the chunk
//! go in one Noise message small enough for the receiver's line buffer (it opens that
//! message in place and the following full-size messages straight into its chunk
//! buffer); the rest of the chunk goes in messages of the largest size; all of them
//! leave in one `write_all`. The bytes on the wire are the same stream as before
//! (protocol.md §11 is unchanged): only where messages begin changed. It must not read
//! from the socket nor decide what is sent.

use std::io::{self, Read, Write};
use std::net::TcpStream;

use crate::crypto::noise::NoiseWriter;
use crate::protocol::transfer_msg::{CHUNK_SIZE, XferLine};

/// Room before the chunk for its `CHUNK` line (`CHUNK 1048576 <64 hex digits>\n` is 79
/// bytes).
const HEAD: usize = 128;

/// Plaintext of the first message of a chunk (the line and the first bytes): with its
/// 16-byte tag it fits the receiver's 8 KiB line buffer, which opens it in place.
const FIRST: usize = 8192 - 16;

/// One chunk's worth of buffers, reused for every chunk of a transfer.
pub struct ChunkOut {
    /// `HEAD` bytes of room for the line, then the chunk.
    plain: Vec<u8>,
    /// The sealed frames of the line and the chunk.
    sealed: Vec<u8>,
    /// Chunk bytes read into `plain[HEAD..]`.
    len: usize,
}

impl Default for ChunkOut {
    fn default() -> Self {
        ChunkOut::new()
    }
}

impl ChunkOut {
    /// Buffers for chunks of up to `CHUNK_SIZE` bytes.
    pub fn new() -> ChunkOut {
        ChunkOut {
            plain: vec![0u8; HEAD + CHUNK_SIZE],
            // 17 frames of 2 + 16 bytes overhead per chunk, with room to spare.
            sealed: Vec::with_capacity(HEAD + CHUNK_SIZE + 32 * 18),
            len: 0,
        }
    }

    /// Reads the next chunk from `file` (fewer bytes only at its end); returns how many.
    pub fn read_from(&mut self, file: &mut impl Read) -> io::Result<usize> {
        self.len = super::transfer::read_chunk(file, &mut self.plain[HEAD..])?;
        Ok(self.len)
    }

    /// The chunk read last.
    pub fn chunk(&self) -> &[u8] {
        &self.plain[HEAD..HEAD + self.len]
    }

    /// Seals `CHUNK <len> <hash>` and the chunk read last with `noise` and writes them
    /// to `sock` in one go.
    pub fn send(
        &mut self,
        hash: blake3::Hash,
        noise: &mut NoiseWriter,
        mut sock: &TcpStream,
    ) -> io::Result<()> {
        let line = XferLine::Chunk {
            len: self.len,
            hash,
        }
        .to_wire();
        let line = line.as_bytes();
        if line.len() > HEAD {
            return Err(io::Error::other("CHUNK line longer than its room"));
        }
        let at = HEAD - line.len();
        self.plain[at..HEAD].copy_from_slice(line);
        let end = HEAD + self.len;
        let first = (at + FIRST).min(end);
        self.sealed.clear();
        noise.seal_into(&self.plain[at..first], &mut self.sealed)?;
        noise.seal_into(&self.plain[first..end], &mut self.sealed)?;
        sock.write_all(&self.sealed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::noise::{self, generate_keypair};
    use crate::protocol::line::LineReader;
    use std::net::TcpListener;
    use std::time::{Duration, Instant};

    #[test]
    fn chunks_read_back_as_a_line_then_the_bytes() {
        let (apriv, _) = generate_keypair().unwrap();
        let (bpriv, _) = generate_keypair().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        // A full chunk, a short one, and one smaller than the first message.
        let sizes = [CHUNK_SIZE, 100_000, 77];
        let data: Vec<u8> = (0..sizes.iter().sum::<usize>())
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let far = std::thread::spawn(move || {
            let (sock, _) = listener.accept().unwrap();
            let (h, _) = noise::respond(&sock, &bpriv, deadline, |_| Some("t".into())).unwrap();
            let mut lines = LineReader::new(h.reader, 4096);
            let mut got = Vec::new();
            while let Some(line) = lines.read_line().unwrap() {
                let XferLine::Chunk { len, hash } = XferLine::parse(&line).unwrap() else {
                    panic!("not a CHUNK line: {line}");
                };
                let mut chunk = vec![0u8; len];
                lines.read_exact(&mut chunk).unwrap();
                assert_eq!(blake3::hash(&chunk), hash);
                got.extend_from_slice(&chunk);
            }
            got
        });
        let sock = TcpStream::connect(addr).unwrap();
        let mut h = noise::initiate(&sock, &apriv, "t", None, deadline).unwrap();
        let mut out = ChunkOut::new();
        let mut file = &data[..];
        for size in sizes {
            let mut piece = (&mut file).take(size as u64);
            assert_eq!(out.read_from(&mut piece).unwrap(), size);
            let hash = blake3::hash(out.chunk());
            out.send(hash, &mut h.writer, &sock).unwrap();
        }
        drop(h);
        drop(sock);
        assert!(far.join().unwrap() == data);
    }
}
