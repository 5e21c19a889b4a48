//! Words about transfers shared by the core and its front ends.
//!
//! Owns the one-line summary of a finished transfer that the core writes into chat
//! history, and the byte-size and role words it uses. It must not print anything.

use super::transfers::{Role, Row, Stage};
use crate::sanitize::Untrusted;

/// `1.5 MiB`
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The word for what we do in a transfer.
pub fn role_word(role: Role) -> &'static str {
    match role {
        Role::Send => "send",
        Role::Receive => "receive",
        Role::Fetch => "fetch",
        Role::Serve => "serve",
    }
}

/// One line for the history about a finished transfer.
pub fn transfer_summary(row: &Row) -> String {
    let (verb, result) = match &row.stage {
        Stage::Finished(outcome) => (
            outcome.result.word(),
            outcome
                .hash
                .map(|h| format!(", hash {}", &h.to_hex().as_str()[..16])),
        ),
        _ => ("ended", None),
    };
    format!(
        "file {} {} ({}): {verb}{}",
        role_word(row.role),
        Untrusted(&row.name),
        human_size(row.size.unwrap_or(0)),
        result.unwrap_or_default()
    )
}
