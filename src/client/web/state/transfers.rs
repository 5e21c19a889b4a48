//! The transfers panel's part of the page's snapshot: each transfer's row as the core
//! last told it, when its progress last moved, and where a received file was saved.
//!
//! Owns folding the core's transfer notices into `Snapshot::transfers`. It must not
//! talk to the core or know HTTP, like the rest of `state`.

use std::path::PathBuf;

use serde::Serialize;

use super::{Snapshot, now_ms};
use crate::client::core::event::{Role, Row, Stage, XferNotice};
use crate::protocol::server_msg::TransferResult;

/// One transfer as the page shows it.
#[derive(Debug, Clone, Serialize)]
pub struct TransferView {
    /// The core's row.
    pub row: Row,
    /// When `done` last changed (Unix ms), so the page can say "stalled".
    pub changed_ms: u64,
    /// A received file that can be opened (`GET /api/file?id=`).
    pub saved: bool,
    /// Where it was saved (not sent to the page).
    #[serde(skip)]
    pub saved_as: Option<PathBuf>,
}

impl Snapshot {
    fn upsert(&mut self, row: &Row) {
        let now = now_ms();
        let saved_as = match &row.stage {
            Stage::Finished(outcome) if outcome.result == TransferResult::Ok => {
                outcome.saved_as.clone()
            }
            _ => None,
        };
        match self.transfers.get_mut(&row.id) {
            Some(view) => {
                if view.row.done != row.done || view.row.stage != row.stage {
                    view.changed_ms = now;
                }
                view.row = row.clone();
                if saved_as.is_some() {
                    view.saved = true;
                    view.saved_as = saved_as;
                }
            }
            None => {
                self.transfers.insert(
                    row.id,
                    TransferView {
                        row: row.clone(),
                        changed_ms: now,
                        saved: saved_as.is_some(),
                        saved_as,
                    },
                );
            }
        }
    }

    /// Folds one transfer notice into the panel's rows.
    pub(super) fn apply_xfer(&mut self, notice: &XferNotice) {
        match notice {
            XferNotice::Offered {
                id,
                peer,
                name,
                size,
                via_server,
            } => self.upsert(&Row {
                id: *id,
                role: Role::Send,
                peer: peer.clone(),
                name: name.clone(),
                size: Some(*size),
                done: 0,
                stage: Stage::Offered,
                rate: 0.0,
                stalled: false,
                route: "direct",
                via_server: *via_server,
            }),
            XferNotice::OfferIn {
                id,
                from,
                name,
                size,
                via_server,
                ..
            } => self.upsert(&asked_row(*id, from, name, *size, *via_server)),
            XferNotice::FolderIn {
                id,
                from,
                name,
                size,
                ..
            } => self.upsert(&asked_row(*id, from, name, *size, false)),
            XferNotice::Started { row }
            | XferNotice::Finished { row }
            | XferNotice::Dropped { row } => self.upsert(row),
            XferNotice::Progress { rows } | XferNotice::List { rows } => {
                for row in rows {
                    self.upsert(row);
                }
            }
            XferNotice::Shared { .. } | XferNotice::Error(_) => {}
        }
    }
}

/// The row of an offer made to us, waiting for our answer.
fn asked_row(id: u64, from: &str, name: &str, size: u64, via_server: bool) -> Row {
    Row {
        id,
        role: Role::Receive,
        peer: from.to_string(),
        name: name.to_string(),
        size: Some(size),
        done: 0,
        stage: Stage::Asked,
        rate: 0.0,
        stalled: false,
        route: "direct",
        via_server,
    }
}
