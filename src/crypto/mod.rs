//! Encryption and authentication of links: TLS to the server, Noise between peers,
//! and the long-term keys and pins behind them. No peerchat line is parsed here.
//!
//! - `tls`: rustls configurations, the server's certificate, pinning, a shareable stream.
//! - `noise`: the peer handshake (ticket as PSK) and the framed reader and writer.
//! - `identity`: the user's own key, pins of peers' keys and servers, safety numbers.
//! - `sealed`: one-way messages sealed to a user's key, for the server to relay.
//! - `trust`: the client's decision about a server's certificate (pin, flag, first use).

pub mod identity;
pub mod noise;
pub mod sealed;
pub mod tls;
pub mod trust;
