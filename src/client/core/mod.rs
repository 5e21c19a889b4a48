//! The client's engine: server link, peer links, sessions, transfers, shares, history.
//!
//! It must not contain terminal or HTTP code; front ends drive it.

pub mod disk_space;
pub mod history;
pub mod login;
pub mod peer_dial;
pub mod peer_limits;
pub mod peer_link;
pub mod resume_check;
pub mod server_link;
pub mod sessions;
pub mod transfer;
pub mod transfer_index;
pub mod transfers;
