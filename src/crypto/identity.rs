//! Long-term identities and what a client remembers about others: its own X25519 key
//! (kept in the data folder, mode 0600), the pins of peers' keys and of servers'
//! certificates, and safety numbers to compare by voice.
//!
//! Pins are plain text files, one `name value` per line, so a person can read and edit
//! them. This module must not do network I/O or print anything.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::noise;
use super::tls::write_private;

/// File name of the user's private key inside the data folder.
pub const KEY_FILE: &str = "identity.key";
/// File name of the peers' pinned keys.
pub const PEER_PINS: &str = "peer-keys";
/// File name of the servers' pinned certificate fingerprints.
pub const SERVER_PINS: &str = "server-pins";

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses 64 hex digits into a 32-byte key.
pub fn parse_key(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(key)
}

/// A short, readable form of a public key: its SHA-256, first 16 bytes, in groups.
pub fn key_fingerprint(key: &[u8; 32]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, key);
    hex(&digest.as_ref()[..16])
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// This user's long-term key pair.
pub struct Identity {
    /// The secret half; never leaves this process except to the key file.
    private: [u8; 32],
    /// The public half, registered with the server.
    pub public: [u8; 32],
}

impl Identity {
    /// Loads the key from `dir`, or makes one (mode 0600) when there is none.
    pub fn load_or_create(dir: &Path) -> io::Result<Identity> {
        let path = dir.join(KEY_FILE);
        match fs::read_to_string(&path) {
            Ok(text) => {
                // Line 1: the private key; line 2: its public key (kept beside it so no
                // curve arithmetic is needed here).
                let mut lines = text.lines().map(parse_key);
                match (lines.next().flatten(), lines.next().flatten()) {
                    (Some(private), Some(public)) => Ok(Identity { private, public }),
                    _ => Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{} is not a peerchat key file", path.display()),
                    )),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(dir)?;
                let (private, public) = noise::generate_keypair()?;
                let text = format!("{}\n{}\n", hex(&private), hex(&public));
                write_private(&path, text.as_bytes())?;
                Ok(Identity { private, public })
            }
            Err(e) => Err(e),
        }
    }

    /// The secret key, for the Noise handshake.
    pub fn private(&self) -> &[u8; 32] {
        &self.private
    }
}

/// What the pin file says about a key someone shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinCheck {
    /// Never seen: pinned now (trust on first use), and shown to the user.
    First,
    /// The pinned key.
    Same,
    /// A different key than pinned: refuse until the user says `\trust`.
    Changed {
        /// The key pinned before.
        pinned: [u8; 32],
    },
}

/// A pin file: one `name hex` per line, names compared without case.
pub struct Pins {
    path: PathBuf,
    map: BTreeMap<String, String>,
}

impl Pins {
    /// Opens (or starts) the pin file `file` in `dir`.
    pub fn open(dir: &Path, file: &str) -> io::Result<Pins> {
        let path = dir.join(file);
        let mut map = BTreeMap::new();
        match fs::read_to_string(&path) {
            Ok(text) => {
                for line in text.lines() {
                    if let Some((name, value)) = line.trim().split_once(' ') {
                        map.insert(name.to_ascii_lowercase(), value.trim().to_string());
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(Pins { path, map })
    }

    /// The value pinned for `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.map.get(&name.to_ascii_lowercase()).map(String::as_str)
    }

    /// Pins `value` for `name` and writes the file (mode 0600).
    pub fn set(&mut self, name: &str, value: &str) -> io::Result<()> {
        self.map
            .insert(name.to_ascii_lowercase(), value.to_string());
        let text: String = self.map.iter().map(|(k, v)| format!("{k} {v}\n")).collect();
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir)?;
        }
        write_private(&self.path, text.as_bytes())
    }

    /// Checks a peer's key against its pin, pinning it on first contact.
    pub fn check_key(&mut self, name: &str, key: &[u8; 32]) -> io::Result<PinCheck> {
        match self.get(name).and_then(parse_key) {
            None => {
                self.set(name, &hex(key))?;
                Ok(PinCheck::First)
            }
            Some(pinned) if pinned == *key => Ok(PinCheck::Same),
            Some(pinned) => Ok(PinCheck::Changed { pinned }),
        }
    }
}

/// Iterations of the hash per side, as Signal's numeric fingerprints use.
const SAFETY_ITERATIONS: usize = 5200;

/// One side's 30 digits: SHA-512 iterated over (version, key, name), six groups of five.
fn side_digits(name: &str, key: &[u8; 32]) -> String {
    let mut hash = {
        let mut first = vec![0u8, 0u8];
        first.extend_from_slice(key);
        first.extend_from_slice(name.to_ascii_lowercase().as_bytes());
        first
    };
    for _ in 0..SAFETY_ITERATIONS {
        let mut input = hash.clone();
        input.extend_from_slice(key);
        hash = ring::digest::digest(&ring::digest::SHA512, &input)
            .as_ref()
            .to_vec();
    }
    (0..6)
        .map(|i| {
            let chunk = &hash[i * 5..i * 5 + 5];
            let value = chunk.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
            format!("{:05}", value % 100_000)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The safety number of two users' keys: 60 digits, the same on both sides (the two
/// halves are sorted), different for any other key.
pub fn safety_number(a: (&str, &[u8; 32]), b: (&str, &[u8; 32])) -> String {
    let mut sides = [side_digits(a.0, a.1), side_digits(b.0, b.1)];
    sides.sort();
    format!("{} {}", sides[0], sides[1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_persist_with_owner_only_mode() {
        let dir = tempfile::tempdir().unwrap();
        let a = Identity::load_or_create(dir.path()).unwrap();
        let b = Identity::load_or_create(dir.path()).unwrap();
        assert_eq!(a.public, b.public);
        let mode = fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
    }

    #[test]
    fn pins_first_same_changed() {
        let dir = tempfile::tempdir().unwrap();
        let mut pins = Pins::open(dir.path(), PEER_PINS).unwrap();
        assert_eq!(pins.check_key("Bob", &[1; 32]).unwrap(), PinCheck::First);
        let mut again = Pins::open(dir.path(), PEER_PINS).unwrap();
        assert_eq!(again.check_key("bob", &[1; 32]).unwrap(), PinCheck::Same);
        assert_eq!(
            again.check_key("bob", &[2; 32]).unwrap(),
            PinCheck::Changed { pinned: [1; 32] }
        );
    }

    #[test]
    fn safety_numbers_are_symmetric_and_key_bound() {
        let ab = safety_number(("alice", &[1; 32]), ("bob", &[2; 32]));
        let ba = safety_number(("bob", &[2; 32]), ("alice", &[1; 32]));
        assert_eq!(ab, ba);
        assert_eq!(ab.split(' ').count(), 12);
        assert_ne!(ab, safety_number(("alice", &[1; 32]), ("bob", &[3; 32])));
    }
}
