//! Moving one file over one data connection: sending, receiving, hashing, resume; and
//! the safety rules for names and shared folders.
//!
//! Owns the byte stream after a data connection's first line (protocol.md §11), the
//! partial files and their state beside them, and every check that keeps a name from
//! the network inside the downloads or shared folder. Memory stays bounded (one chunk
//! buffer per transfer, whatever the file size). It must not decide who may transfer
//! (`sessions` checks tickets, `transfers` keeps the table) nor print.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use crate::protocol::server_msg::TransferResult;

mod names;
mod partial;
mod receive;
mod send;
mod share;
mod wire;

pub use names::safe_file_name;
pub use partial::{PARTIAL_DIR, kept_bytes};
pub use receive::{Expect, receive};
pub(super) use send::read_chunk;
pub use send::send;
pub use share::Share;
use wire::Stop;
pub use wire::Wire;

/// What a transfer thread reports.
#[derive(Debug)]
pub enum TransferEvent {
    /// `done` of `total` bytes are through (including a resumed prefix).
    Progress { id: u64, done: u64, total: u64 },
    /// The transfer ended.
    Finished { id: u64, outcome: Outcome },
    /// The peer of our transfer (server id `transfer`) could not be reached directly:
    /// ask the server for the relay (the thread waits for its token).
    NeedRelay { id: u64, transfer: u64 },
    /// The peer of our transfer (server id `transfer`) could not be reached directly:
    /// ask the server to have it dial us back (the thread waits for the connection).
    NeedReverse { id: u64, transfer: u64 },
}

/// How a transfer ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Outcome {
    /// The result class, as logged by the server.
    #[serde(serialize_with = "super::event::transfer_result")]
    pub result: TransferResult,
    /// A sentence for people: why it failed, or where the file went.
    pub detail: String,
    /// The file's size.
    pub size: u64,
    /// The peerchat file hash, when verified.
    #[serde(serialize_with = "super::event::hash")]
    pub hash: Option<blake3::Hash>,
    /// Where a received file was stored.
    pub saved_as: Option<PathBuf>,
    /// Bytes skipped because an earlier attempt had them.
    pub resumed_from: u64,
    /// How long it took.
    #[serde(serialize_with = "super::event::millis")]
    pub elapsed: Duration,
}

/// Lets the UI stop a running transfer from its thread, and remembers who asked.
#[derive(Clone, Default)]
pub struct Cancel(Arc<AtomicU8>);

const NOT_CANCELLED: u8 = 0;
const BY_US: u8 = 1;
const BY_PEER: u8 = 2;

impl Cancel {
    /// Asks the transfer to stop; it sends `CANCEL` and ends.
    pub fn cancel(&self) {
        let _ = self
            .0
            .compare_exchange(NOT_CANCELLED, BY_US, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// The peer cancelled (over the chat link): stop, and say so.
    pub fn cancelled_by_peer(&self) {
        let _ = self
            .0
            .compare_exchange(NOT_CANCELLED, BY_PEER, Ordering::SeqCst, Ordering::SeqCst);
    }

    fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst) != NOT_CANCELLED
    }

    /// Why the transfer stopped, if it was cancelled.
    fn reason(&self) -> Option<&'static str> {
        match self.0.load(Ordering::SeqCst) {
            BY_US => Some("cancelled"),
            BY_PEER => Some("cancelled by the peer"),
            _ => None,
        }
    }

    /// A failure while a cancel is under way is the cancel: the other side closing the
    /// connection breaks our read or write first.
    fn explain(&self, stop: Stop) -> Stop {
        match (stop, self.reason()) {
            (Stop::Fail(TransferResult::Failed, _, tell), Some(why)) => {
                Stop::Fail(TransferResult::Cancelled, why.into(), tell)
            }
            (Stop::Fail(TransferResult::Cancelled, _, tell), Some(why)) => {
                Stop::Fail(TransferResult::Cancelled, why.into(), tell)
            }
            (stop, _) => stop,
        }
    }
}
