//! The ladder for one data connection (protocol.md §13): direct at every hint, then the
//! peer dialling us back, then the relay, each with the same first line and the same
//! proof check.
//!
//! Owns the order of the rungs for a transfer and asking the UI loop for the server's
//! help between them (`NeedReverse`, `NeedRelay`). Obtaining each stream is
//! `core::ladder`'s, the first line and the proof `peer_dial::open_transfer`'s. It must
//! not move file bytes.

use std::io;
use std::net::SocketAddr;

use crossbeam_channel::{Receiver, Sender};

use crate::client::core::ladder::{self, Reversals, Route};
use crate::client::core::peer_dial;
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
}

/// A peer that answered but failed the proof is not tried again by another rung:
/// someone else holds its address.
fn next_rung(e: &io::Error) -> bool {
    !matches!(
        e.kind(),
        io::ErrorKind::PermissionDenied | io::ErrorKind::InvalidData
    )
}

impl Rungs {
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
        let e = match peer_dial::open_transfer(self.addr, &direct, first, peer) {
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
        let e = match peer_dial::open_transfer(self.addr, &Route::Reverse(wait), first, peer) {
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
            Ok((relay, token)) => {
                peer_dial::open_transfer(self.addr, &Route::Relay(relay, token), first, peer)
            }
            Err(_) => Err(e),
        }
    }
}
