//! The terminal front end of the client core.
//!
//! It must not open sockets or hold protocol state.

pub mod ui;
