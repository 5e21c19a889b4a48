//! Securing a connected peer stream: the Noise handshake on both sides (the requester is
//! always the initiator, the target always the responder, whoever dialled), the ticket
//! index the responder looks a ticket up in, and the identity checks after the
//! handshake (the key the server named, the user's pins).
//!
//! Owns the user's identity key in the client, the pins of peers' keys, the notes a
//! person must see about keys (first contact, a changed key) and `\trust` / `\verify`.
//! It must not obtain connections (`peer_dial`, `peer_link` do), read peerchat lines
//! after the handshake, or print: notes go to the core loop, which emits them.

use std::cell::Cell;
use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use crate::crypto::identity::{self, Identity, PEER_PINS, PinCheck, Pins};
use crate::crypto::noise::{self, ClearRefusal, NoiseReader, NoiseWriter, TICKET_ID_LEN};
use crate::protocol::codes::ErrorCode;
use crate::protocol::limits::{HANDSHAKE_TIMEOUT, TICKET_GRACE};
use crate::protocol::peer_msg::PeerMsg;
use crate::protocol::ticket::Ticket;
use crate::sanitize::Untrusted;

/// How often a responder looks again for a ticket the server has not announced yet.
const TICKET_POLL: Duration = Duration::from_millis(20);

/// How long a used ticket id is remembered, to refuse a replay at once.
const USED_MEMORY: Duration = Duration::from_secs(600);

/// A ticket used this recently is most likely being presented by the losers of the
/// requester's own race over several address hints (the first handshake wins, the
/// others arrive with the same ticket): refused as any reused ticket, but not counted
/// in the person's summary of refused connections.
const RACE_WINDOW: Duration = Duration::from_secs(15);

/// The refusal message of a ticket used within [`RACE_WINDOW`]
/// ([`is_race_loser`] tells it apart).
const RACE_LOSER: &str = "this ticket was used a moment ago (another of your attempts won)";

/// Whether `refusal` is a loser of the requester's own race over address hints: it is
/// logged, not shown to the person.
pub fn is_race_loser(refusal: &Refusal) -> bool {
    refusal.0 == ErrorCode::BadTicket && refusal.1 == RACE_LOSER
}

/// A peer stream after the handshake: peer lines go through `reader` and `writer`;
/// `sock` is the raw socket, kept to time out, peek and shut down.
pub struct Secured {
    /// The raw socket (never written to directly after the handshake).
    pub sock: TcpStream,
    /// Plaintext in.
    pub reader: NoiseReader,
    /// Plaintext out.
    pub writer: NoiseWriter,
    /// The other side's identity key, as proven in the handshake.
    pub remote_key: [u8; 32],
}

/// What the server told us about an incoming connection before it came: the ticket,
/// who will present it and the key the server has for them.
#[derive(Clone)]
pub struct Awaited {
    /// The ticket (the handshake's pre-shared key).
    pub ticket: Ticket,
    /// The requester the server named.
    pub from: String,
    /// The requester's identity key as the server knows it (`None`: none registered).
    pub key: Option<[u8; 32]>,
}

enum Slot {
    Waiting(Awaited, Instant),
    Used(Instant),
}

enum Lookup {
    Found(Awaited),
    /// Used already, at that time.
    Used(Instant),
    Unknown,
}

/// A line about keys for the person: `warning` ones are shown as errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyNote {
    /// Loud (a changed or wrong key) or plain (a first contact).
    pub warning: bool,
    /// What to show.
    pub text: String,
}

/// The identity of this client and what it remembers about peers' keys; shared by the
/// core loop, the listener's threads and the dialling threads.
pub struct PeerSecurity {
    /// Our username (half of every safety number).
    me: String,
    /// Our long-term key.
    identity: Arc<Identity>,
    /// Pinned peer keys (`<data-dir>/<user>/peer-keys`).
    pins: Mutex<Pins>,
    /// Ticket id → what the server announced (or when it was used).
    tickets: Mutex<HashMap<[u8; TICKET_ID_LEN], Slot>>,
    /// Keys refused because they differ from the pin, by user: what `\trust` pins.
    changed: Mutex<HashMap<String, [u8; 32]>>,
    /// Notes for the person, taken by the core loop.
    notes: Mutex<Vec<KeyNote>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A short form of a key for people.
pub fn fingerprint(key: &[u8; 32]) -> String {
    identity::key_fingerprint(key)
}

impl PeerSecurity {
    /// `me`'s security state: `identity` and the pins kept in `<data_dir>/<me>/`.
    pub fn new(me: &str, identity: Arc<Identity>, data_dir: &Path) -> io::Result<PeerSecurity> {
        let dir = data_dir.join(me.to_ascii_lowercase());
        Ok(PeerSecurity {
            me: me.to_string(),
            identity,
            pins: Mutex::new(Pins::open(&dir, PEER_PINS)?),
            tickets: Mutex::new(HashMap::new()),
            changed: Mutex::new(HashMap::new()),
            notes: Mutex::new(Vec::new()),
        })
    }

    /// Our public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.identity.public
    }

    /// The server announced that `awaited.from` will come with `awaited.ticket`: the
    /// listener's handshake can now find it (for `life`: the ticket's own).
    pub fn expect(&self, awaited: Awaited, life: Duration) {
        let id = noise::ticket_id(&awaited.ticket.to_string());
        let mut tickets = lock(&self.tickets);
        if !matches!(tickets.get(&id), Some(Slot::Used(_))) {
            tickets.insert(id, Slot::Waiting(awaited, Instant::now() + life));
        }
    }

    /// Forgets expired tickets and old used ids. Call about once a second.
    pub fn purge(&self) {
        let now = Instant::now();
        lock(&self.tickets).retain(|_, slot| match slot {
            Slot::Waiting(_, until) => *until > now,
            Slot::Used(at) => now.duration_since(*at) < USED_MEMORY,
        });
    }

    fn take_ticket(&self, id: &[u8; TICKET_ID_LEN]) -> Lookup {
        let mut tickets = lock(&self.tickets);
        match tickets.get(id) {
            None => Lookup::Unknown,
            Some(Slot::Used(at)) => Lookup::Used(*at),
            Some(Slot::Waiting(_, until)) if *until <= Instant::now() => Lookup::Unknown,
            Some(Slot::Waiting(..)) => match tickets.insert(*id, Slot::Used(Instant::now())) {
                Some(Slot::Waiting(awaited, _)) => Lookup::Found(awaited),
                _ => Lookup::Unknown,
            },
        }
    }

    fn note(&self, warning: bool, text: String) {
        if warning {
            log::warn!("{text}");
        }
        lock(&self.notes).push(KeyNote { warning, text });
    }

    /// Notes for the person since the last call.
    pub fn take_notes(&self) -> Vec<KeyNote> {
        std::mem::take(&mut *lock(&self.notes))
    }

    /// Checks `peer`'s proven key against its pin: pins it at first contact (and says
    /// so), refuses a changed one with a loud note. The error names the code to send.
    pub fn check_pin(&self, peer: &str, key: &[u8; 32]) -> Result<(), (ErrorCode, String)> {
        let check = lock(&self.pins).check_key(peer, key);
        match check {
            Ok(PinCheck::Same) => Ok(()),
            Ok(PinCheck::First) => {
                self.note(
                    false,
                    format!(
                        "* first contact with {}: key fingerprint {} (\\verify {} shows the safety number to compare by voice)",
                        Untrusted(peer),
                        fingerprint(key),
                        Untrusted(peer)
                    ),
                );
                Ok(())
            }
            Ok(PinCheck::Changed { pinned }) => Err(self.changed_key(peer, &pinned, key)),
            Err(e) => {
                log::warn!("the pin file could not be written: {e}");
                Err((ErrorCode::Internal, "cannot check keys now".into()))
            }
        }
    }

    /// Refuses a key that differs from `peer`'s pin (without pinning anything): for the
    /// requester, whose responder has not proven the ticket yet when the handshake ends.
    pub fn refuse_changed(&self, peer: &str, key: &[u8; 32]) -> Result<(), (ErrorCode, String)> {
        let pinned = lock(&self.pins).get(peer).and_then(identity::parse_key);
        match pinned {
            Some(pinned) if pinned != *key => Err(self.changed_key(peer, &pinned, key)),
            _ => Ok(()),
        }
    }

    /// Remembers a changed key for `\trust`, warns loudly, and says what to answer.
    fn changed_key(&self, peer: &str, pinned: &[u8; 32], key: &[u8; 32]) -> (ErrorCode, String) {
        {
            lock(&self.changed).insert(peer.to_ascii_lowercase(), *key);
            let peer = Untrusted(peer);
            self.note(
                    true,
                    format!(
                        "WARNING: {peer}'s identity key has CHANGED (pinned {}, now {}). Someone may be pretending to be {peer}, or {peer} uses a new device. Nothing was opened. Ask {peer} by voice or in person: \\verify {peer} shows the safety number of the new key; only if it matches, type \\trust {peer} and connect again.",
                        fingerprint(pinned),
                        fingerprint(key)
                    ),
                );
            (
                ErrorCode::KeyChanged,
                "your identity key is not the one pinned here; refused until checked".into(),
            )
        }
    }

    /// `\trust <user>`: pins the changed key last refused for `user`.
    pub fn trust(&self, user: &str) -> Result<String, String> {
        let new = lock(&self.changed).remove(&user.to_ascii_lowercase());
        let Some(key) = new else {
            return Err(match lock(&self.pins).get(user) {
                Some(_) => format!(
                    "{user}'s key has not changed; nothing to trust (\\verify {user} shows it)"
                ),
                None => format!("no key seen from {user} yet; it is pinned at first contact"),
            });
        };
        lock(&self.pins)
            .set(user, &identity::hex(&key))
            .map_err(|e| format!("cannot write the pin file: {e}"))?;
        Ok(format!(
            "* {user}'s new key {} is trusted and pinned; connect again",
            fingerprint(&key)
        ))
    }

    /// `\verify <user>`: the safety number of our key and `user`'s pinned key (and of a
    /// changed key waiting for `\trust`), to compare by voice.
    pub fn verify(&self, user: &str) -> Result<String, String> {
        let pinned = lock(&self.pins).get(user).and_then(identity::parse_key);
        let changed = lock(&self.changed).get(&user.to_ascii_lowercase()).copied();
        let mine = (self.me.as_str(), &self.identity.public);
        let mut text = Vec::new();
        if let Some(key) = pinned {
            text.push(format!(
                "* safety number with {user}: {}\n  (your key {}, {user}'s key {}; {user} sees the same number with \\verify {})",
                identity::safety_number(mine, (user, &key)),
                fingerprint(&self.identity.public),
                fingerprint(&key),
                self.me
            ));
        }
        if let Some(key) = changed {
            text.push(format!(
                "* {user}'s NEW key {} (not trusted yet): safety number {}",
                fingerprint(&key),
                identity::safety_number(mine, (user, &key))
            ));
        }
        if text.is_empty() {
            return Err(format!(
                "no key known for {user} yet: chat with {user} once, then \\verify {user}"
            ));
        }
        Ok(text.join("\n"))
    }
}

/// The requester's side (Noise initiator) over `sock`, connected to whoever should be
/// `peer`: proves `ticket`, refuses a key other than `expected` (the server's word, when
/// it has one) and a key other than the pinned one. A first contact is pinned only
/// later, by the caller, with [`PeerSecurity::check_pin`] once the first line from the
/// peer has decrypted (in XXpsk3 the responder proves the ticket only then). Errors: `ConnectionRefused` with a
/// [`ClearRefusal`] when the target refused before the handshake, `PermissionDenied`
/// for a wrong or changed key, others for a broken or silent connection.
pub fn secure_as_requester(
    sock: &TcpStream,
    ticket: &Ticket,
    expected: Option<[u8; 32]>,
    peer: &str,
    security: &PeerSecurity,
    deadline: Instant,
) -> io::Result<Secured> {
    let h = noise::initiate(
        sock,
        security.identity.private(),
        &ticket.to_string(),
        expected.as_ref(),
        deadline,
    )
    .map_err(|e| {
        if e.kind() == io::ErrorKind::PermissionDenied {
            security.note(
                true,
                format!(
                    "WARNING: whoever answered for {} does not hold the key the server named for {}: not opened ({})",
                    Untrusted(peer),
                    Untrusted(peer),
                    ErrorCode::KeyMismatch
                ),
            );
            io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "the answer did not come from the key the server named for {peer} ({})",
                    ErrorCode::KeyMismatch
                ),
            )
        } else {
            e
        }
    })?;
    let mut secured = Secured {
        sock: sock.try_clone()?,
        reader: h.reader,
        writer: h.writer,
        remote_key: h.remote_key,
    };
    if let Err((code, message)) = security.refuse_changed(peer, &secured.remote_key) {
        send_last(&mut secured, &PeerMsg::Err { code, message });
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{peer}'s identity key changed; not opened ({code})"),
        ));
    }
    Ok(secured)
}

/// Why the target side refused a connection, for the person's summary and the log.
pub type Refusal = (ErrorCode, String);

/// The target's side (Noise responder) over an accepted or relayed `sock`: finds the
/// ticket the first message names (waiting up to `TICKET_GRACE` for one the server has
/// not announced yet), completes the handshake, and checks the requester's key against
/// the server's word and the pins. A refusal before the handshake is answered by an
/// `ERR` line in clear, after it by an `ERR` inside Noise.
pub fn secure_as_target(
    sock: &TcpStream,
    security: &PeerSecurity,
) -> Result<(Secured, Awaited), Refusal> {
    // The whole handshake within the handshake timeout (a wait for the ticket's
    // announcement, up to `TICKET_GRACE`, does not count: `noise::respond`).
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    let refuse_clear = |code: ErrorCode, message: &str| -> Refusal {
        let line = PeerMsg::Err {
            code,
            message: message.to_string(),
        };
        let _ = sock.set_write_timeout(Some(HANDSHAKE_TIMEOUT));
        let _ = (&*sock).write_all(line.to_wire().as_bytes());
        let _ = sock.shutdown(Shutdown::Write);
        (code, message.to_string())
    };
    match first_byte(sock, deadline) {
        // Message 1 is 64 bytes: its length prefix starts with a zero byte.
        Ok(0) => {}
        Ok(_) => {
            return Err(refuse_clear(
                ErrorCode::NotNoise,
                "peer connections start with a Noise handshake (protocol.md §10)",
            ));
        }
        Err(e) if is_timeout(&e) => {
            return Err(refuse_clear(ErrorCode::Timeout, "no handshake in time"));
        }
        Err(e) => return Err((ErrorCode::NotNoise, format!("connection lost: {e}"))),
    }
    let found: Cell<Option<Awaited>> = Cell::new(None);
    let used: Cell<Option<Instant>> = Cell::new(None);
    let asked = Cell::new(false);
    let result = noise::respond(sock, security.identity.private(), deadline, |id| {
        asked.set(true);
        let until = Instant::now() + TICKET_GRACE;
        loop {
            match security.take_ticket(id) {
                Lookup::Found(awaited) => {
                    let text = awaited.ticket.to_string();
                    found.set(Some(awaited));
                    return Some(text);
                }
                Lookup::Used(at) => {
                    used.set(Some(at));
                    return None;
                }
                Lookup::Unknown if Instant::now() < until => thread::sleep(TICKET_POLL),
                Lookup::Unknown => return None,
            }
        }
    });
    let (h, _) = match result {
        Ok(done) => done,
        Err(e) => {
            return Err(if !asked.get() {
                if is_timeout(&e) {
                    refuse_clear(ErrorCode::Timeout, "no handshake in time")
                } else {
                    refuse_clear(ErrorCode::NotNoise, "not a Noise handshake")
                }
            } else if let Some(at) = used.get() {
                if at.elapsed() < RACE_WINDOW {
                    refuse_clear(ErrorCode::BadTicket, RACE_LOSER)
                } else {
                    refuse_clear(ErrorCode::BadTicket, "this ticket was used already")
                }
            } else if found.take().is_none() {
                refuse_clear(ErrorCode::BadTicket, "no such ticket")
            } else {
                // The ticket was known but the requester could not prove it (message 3
                // failed), or left: nothing can be said to it that it could read.
                (ErrorCode::NotNoise, format!("the handshake failed: {e}"))
            });
        }
    };
    let Some(awaited) = found.take() else {
        return Err((ErrorCode::BadTicket, "no such ticket".into()));
    };
    let clone = sock
        .try_clone()
        .map_err(|e| (ErrorCode::Internal, e.to_string()))?;
    let mut secured = Secured {
        sock: clone,
        reader: h.reader,
        writer: h.writer,
        remote_key: h.remote_key,
    };
    if let Some(named) = awaited.key
        && named != secured.remote_key
    {
        security.note(
            true,
            format!(
                "WARNING: a connection for {} came with a key other than the one the server named; refused ({})",
                Untrusted(&awaited.from),
                ErrorCode::KeyMismatch
            ),
        );
        let message = "your key is not the one the server named for you".to_string();
        send_last(
            &mut secured,
            &PeerMsg::Err {
                code: ErrorCode::KeyMismatch,
                message: message.clone(),
            },
        );
        return Err((ErrorCode::KeyMismatch, message));
    }
    if let Err((code, message)) = security.check_pin(&awaited.from, &secured.remote_key) {
        send_last(
            &mut secured,
            &PeerMsg::Err {
                code,
                message: message.clone(),
            },
        );
        return Err((code, message));
    }
    Ok((secured, awaited))
}

/// One line inside Noise and a FIN, on a link we give up on; never blocks for long.
pub fn send_last(secured: &mut Secured, msg: &PeerMsg) {
    let _ = secured.sock.set_write_timeout(Some(HANDSHAKE_TIMEOUT));
    let _ = secured.writer.write_all(msg.to_wire().as_bytes());
    let _ = secured.sock.shutdown(Shutdown::Write);
}

/// The refusal line a target wrote in clear instead of answering the handshake, parsed:
/// its code (if it names one we know) and its message.
pub fn clear_refusal(e: &io::Error) -> Option<(Option<ErrorCode>, String)> {
    let line = e.get_ref()?.downcast_ref::<ClearRefusal>()?;
    Some(match PeerMsg::parse(&line.0) {
        Ok(PeerMsg::Err { code, message }) => (Some(code), message),
        _ => (None, line.0.clone()),
    })
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// The first byte waiting on `sock`, left there (`peek`), by `deadline`.
fn first_byte(sock: &TcpStream, deadline: Instant) -> io::Result<u8> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "no handshake"));
        }
        sock.set_read_timeout(Some(left))?;
        let mut byte = [0u8; 1];
        match sock.peek(&mut byte) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => return Ok(byte[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}
