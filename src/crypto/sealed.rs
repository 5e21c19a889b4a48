//! Messages sealed to a user's identity key, for the server to relay without reading
//! (protocol.md §4d): one one-way Noise message, `Noise_X_25519_AESGCM_SHA256`.
//!
//! The sender knows the recipient's static key in advance; its own static key travels
//! encrypted and is authenticated by the `ss` Diffie-Hellman, so opening a message
//! proves which key sealed it (the caller compares that key with the one the server
//! has for the sender's name, and with its pin). The prologue binds both names, so a
//! ciphertext cannot be replayed as coming from, or going to, another user. This module
//! must not know wire lines or users beyond the two names it is given.

use std::io;

use snow::Builder;

/// The Noise protocol name of a sealed message.
pub const PATTERN: &str = "Noise_X_25519_AESGCM_SHA256";

/// Bytes a sealed message adds to its text: ephemeral key (32), encrypted static key
/// (32 + 16) and the payload's tag (16).
pub const OVERHEAD: usize = 96;

/// What a message is bound to: the protocol, the sender's and the recipient's names
/// (lower case, since names are unique in any case).
fn prologue(from: &str, to: &str) -> Vec<u8> {
    format!(
        "peerchat sealed message v1\n{}\n{}",
        from.to_ascii_lowercase(),
        to.to_ascii_lowercase()
    )
    .into_bytes()
}

fn builder() -> io::Result<Builder<'static>> {
    let params = PATTERN
        .parse()
        .map_err(|e| io::Error::other(format!("noise params: {e:?}")))?;
    Ok(Builder::new(params))
}

fn noise_err(e: snow::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("noise: {e}"))
}

/// Seals `text` from `from` (secret key `private`) to `to` (public key `recipient`).
pub fn seal(
    private: &[u8; 32],
    from: &str,
    to: &str,
    recipient: &[u8; 32],
    text: &[u8],
) -> io::Result<Vec<u8>> {
    let prologue = prologue(from, to);
    let mut state = builder()?
        .local_private_key(private)
        .map_err(noise_err)?
        .remote_public_key(recipient)
        .map_err(noise_err)?
        .prologue(&prologue)
        .map_err(noise_err)?
        .build_initiator()
        .map_err(noise_err)?;
    let mut out = vec![0u8; text.len() + OVERHEAD];
    let n = state.write_message(text, &mut out).map_err(noise_err)?;
    out.truncate(n);
    Ok(out)
}

/// A message opened: the key that sealed it and its text.
#[derive(Debug, PartialEq, Eq)]
pub struct Opened {
    /// The sender's static public key, proved by the message.
    pub sender_key: [u8; 32],
    /// The text as sealed (not yet checked as UTF-8 or sanitised).
    pub text: Vec<u8>,
}

/// Opens a message `from` sent to `to` (us, secret key `private`). Fails when it was
/// not sealed to our key, names other users, or was changed on the way.
pub fn open(private: &[u8; 32], from: &str, to: &str, sealed: &[u8]) -> io::Result<Opened> {
    let prologue = prologue(from, to);
    let mut state = builder()?
        .local_private_key(private)
        .map_err(noise_err)?
        .prologue(&prologue)
        .map_err(noise_err)?
        .build_responder()
        .map_err(noise_err)?;
    let mut text = vec![0u8; sealed.len()];
    let n = state.read_message(sealed, &mut text).map_err(noise_err)?;
    text.truncate(n);
    let remote = state
        .get_remote_static()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no sender key"))?;
    let mut sender_key = [0u8; 32];
    if remote.len() != 32 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "bad sender key"));
    }
    sender_key.copy_from_slice(remote);
    Ok(Opened { sender_key, text })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::noise::generate_keypair;

    #[test]
    fn a_sealed_message_opens_only_for_its_recipient_names_and_bytes() {
        let (a_priv, a_pub) = generate_keypair().unwrap();
        let (b_priv, b_pub) = generate_keypair().unwrap();
        let (c_priv, _) = generate_keypair().unwrap();
        let sealed = seal(&a_priv, "Alice", "bob", &b_pub, b"hello bob").unwrap();
        assert_eq!(sealed.len(), 9 + OVERHEAD);
        assert!(!sealed.windows(9).any(|w| w == b"hello bob"));
        let opened = open(&b_priv, "alice", "BOB", &sealed).unwrap();
        assert_eq!(opened.sender_key, a_pub);
        assert_eq!(opened.text, b"hello bob");
        // Another recipient, another claimed sender or recipient, a changed byte: no.
        assert!(open(&c_priv, "alice", "bob", &sealed).is_err());
        assert!(open(&b_priv, "mallory", "bob", &sealed).is_err());
        assert!(open(&b_priv, "alice", "carol", &sealed).is_err());
        for i in [0, 40, sealed.len() - 1] {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert!(open(&b_priv, "alice", "bob", &bad).is_err(), "byte {i}");
        }
        assert!(open(&b_priv, "alice", "bob", &sealed[..50]).is_err());
    }
}
