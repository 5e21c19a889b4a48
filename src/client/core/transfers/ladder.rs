//! The ladder for one data connection (protocol.md §13): direct at every hint, then the
//! peer dialling us back, then the relay, each secured by the same Noise handshake (we
//! are the initiator on every rung) and carrying the same first line and proof check.
//!
//! Owns the order of the rungs for a transfer and asking the UI loop for the server's
//! help between them (`NeedReverse`, `NeedRelay`). Obtaining each stream is
//! `core::ladder`'s, the first line and the proof `peer_dial::open_transfer`'s. It must
//! not move file bytes.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

use crate::client::core::ladder::{self, Reversals, Route};
use crate::client::core::peer_dial;
use crate::client::core::peer_secure::{PeerSecurity, clear_refusal};
use crate::client::core::transfer::{TransferEvent, Wire};
use crate::protocol::limits::DEFAULT_RELAY_TOKEN_TTL;
use crate::protocol::peer_msg::PeerMsg;

/// What our `TRANSFER` grant gave, kept until the data connection opens.
pub(super) struct Grant {
    /// Where the server says the peer listens.
    pub addr: SocketAddr,
    /// The peer's other addresses (`<hints>`).
    pub hints: Vec<SocketAddr>,
    /// Where a peer dialling us back is handed over.
    pub reversals: Reversals,
    /// The transfer's ticket.
    pub ticket: crate::protocol::ticket::Ticket,
}

/// What a requester's transfer thread needs to climb the ladder.
pub(super) struct Rungs {
    /// Where the server says the peer listens.
    pub addr: SocketAddr,
    /// The peer's other addresses, tried at once with `addr`.
    pub hints: Vec<SocketAddr>,
    /// Where a peer dialling us back is handed over.
    pub reversals: Reversals,
    /// The relay and token, once the server gives them.
    pub relay: Receiver<(SocketAddr, String)>,
    /// The peer's identity key from the grant, for the handshake to check.
    pub peer_key: crate::protocol::identity_key::KeyField,
    /// Our key and the pins, for the handshake.
    pub security: Arc<PeerSecurity>,
}

/// Whether a failed rung lets the next one try. Not when someone answered but failed
/// the handshake or the proof (someone else holds the peer's address), nor when the
/// peer refused in clear before the handshake (it was reached: busy, say).
fn next_rung(e: &io::Error) -> bool {
    ladder::is_unreached(e)
        || (!matches!(
            e.kind(),
            io::ErrorKind::PermissionDenied | io::ErrorKind::InvalidData
        ) && clear_refusal(e).is_none())
}

impl Rungs {
    /// One rung: the data connection by `route`, secured and proven.
    fn open_by(&self, route: &Route, first: &PeerMsg, peer: &str) -> io::Result<Wire> {
        peer_dial::open_transfer(self.addr, route, first, peer, self.peer_key, &self.security)
    }

    /// A proven data connection to `peer` for our transfer `transfer` (table row `id`):
    /// direct at every hint; else ask for a reverse connection (`NeedReverse`) and wait
    /// for it; else ask for the relay (`NeedRelay`) and meet the peer there.
    pub fn open(
        &self,
        first: &PeerMsg,
        peer: &str,
        (id, transfer): (u64, u64),
        events: &Sender<TransferEvent>,
    ) -> io::Result<Wire> {
        let direct = Route::Direct(ladder::candidates(self.addr, &self.hints));
        let e = match self.open_by(&direct, first, peer) {
            Err(e) if next_rung(&e) => e,
            done => return done,
        };
        // Waiting before asking: the peer may dial back before the server answers us.
        let wait = self.reversals.expect(true, transfer);
        if events
            .send(TransferEvent::NeedReverse { id, transfer })
            .is_err()
        {
            return Err(e);
        }
        let e = match self.open_by(&Route::Reverse(wait), first, peer) {
            Err(e) if next_rung(&e) => e,
            done => return done,
        };
        if events
            .send(TransferEvent::NeedRelay { id, transfer })
            .is_err()
        {
            return Err(e);
        }
        match self.relay.recv_timeout(DEFAULT_RELAY_TOKEN_TTL) {
            Ok((relay, token)) => self.open_by(&Route::Relay(relay, token), first, peer),
            Err(_) => Err(e),
        }
    }
}
