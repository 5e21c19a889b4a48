//! Address hints (protocol.md §13): the comma-separated address lists of the ladder's
//! direct and reverse rungs, as they appear on the wire.
//!
//! Owns the text of a hint list (`ip:port,ip:port` or `-`) and of the `HINTS` command's
//! IP list, and which addresses are worth giving to a peer. It must not dial anything
//! nor decide whose hints are given to whom (that is `server::commands`).

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use super::ParseError;
use super::codes::ErrorCode;
use super::limits::MAX_HINTS;

/// Addresses where a peer may be reached, besides (or including) the one the server saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hints(pub Vec<SocketAddr>);

impl Hints {
    /// Parses `ip:port[,ip:port]...` or `-` (none). At most `MAX_HINTS + 1` addresses
    /// (the reported ones and the one the server sees).
    pub fn parse(text: &str) -> Result<Hints, ParseError> {
        if text == "-" {
            return Ok(Hints::default());
        }
        let addrs = text
            .split(',')
            .map(|a| {
                a.parse::<SocketAddr>()
                    .map_err(|_| ParseError::bad("malformed address hint"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if addrs.len() > MAX_HINTS + 1 {
            return Err(ParseError::bad("too many address hints"));
        }
        Ok(Hints(addrs))
    }
}

impl fmt::Display for Hints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return write!(f, "-");
        }
        for (i, addr) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, ",")?;
            }
            write!(f, "{addr}")?;
        }
        Ok(())
    }
}

/// Whether a peer elsewhere could dial `ip`: not loopback, unspecified, multicast or
/// broadcast (IPv6 link-local needs a scope a hint cannot carry).
pub fn dialable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_loopback() || v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast())
        }
        IpAddr::V6(v6) => {
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || v6.is_unicast_link_local())
        }
    }
}

/// Parses the `HINTS` command's argument: `ip[,ip]...` (at most `MAX_HINTS`, each
/// [`dialable`]) or `-` to report none. Refusals carry `524 BAD_HINTS`.
pub fn parse_ips(text: &str) -> Result<Vec<IpAddr>, ParseError> {
    if text == "-" {
        return Ok(Vec::new());
    }
    let bad = |message: String| ParseError {
        code: ErrorCode::BadHints,
        message,
    };
    let mut ips = Vec::new();
    for word in text.split(',') {
        let ip: IpAddr = word
            .parse()
            .map_err(|_| bad("a hint is an IP address (the port is your announced one)".into()))?;
        if !dialable(ip) {
            return Err(bad(format!("{ip} cannot be dialled by peers")));
        }
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    if ips.len() > MAX_HINTS {
        return Err(bad(format!("at most {MAX_HINTS} address hints")));
    }
    Ok(ips)
}

/// The `HINTS` argument for `ips`: comma-separated, or `-`.
pub fn ips_text(ips: &[IpAddr]) -> String {
    if ips.is_empty() {
        return "-".into();
    }
    ips.iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hint_lists_round_trip_and_bound() {
        let h = Hints::parse("10.0.0.2:4000,[fd00::1]:4000").unwrap();
        assert_eq!(h.to_string(), "10.0.0.2:4000,[fd00::1]:4000");
        assert_eq!(Hints::parse("-").unwrap(), Hints::default());
        assert_eq!(Hints::default().to_string(), "-");
        assert!(Hints::parse("10.0.0.2").is_err());
        let many = ["10.0.0.1:1"; MAX_HINTS + 2].join(",");
        assert!(Hints::parse(&many).is_err());
    }

    #[test]
    fn reported_ips_must_be_dialable_and_few() {
        assert_eq!(
            parse_ips("192.168.1.20,192.168.1.20,fd00::2")
                .unwrap()
                .len(),
            2
        );
        for bad in [
            "127.0.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "::1",
            "fe80::1",
            "x",
            "",
        ] {
            assert_eq!(
                parse_ips(bad).unwrap_err().code,
                ErrorCode::BadHints,
                "{bad}"
            );
        }
        let many: Vec<String> = (1..=MAX_HINTS + 1).map(|i| format!("10.0.0.{i}")).collect();
        assert!(parse_ips(&many.join(",")).is_err());
        assert!(parse_ips("-").unwrap().is_empty());
    }
}
