//! The web front end's one gate: every request passes here before any route.
//!
//! Owns the checks Syncthing and Transmission learned the hard way: the `Host` header
//! must name this server (DNS rebinding, CVE-2018-5702), a present `Origin` must be
//! this page's own (CSRF), and every API call must carry the token in a header,
//! compared in constant time. It also owns the security headers every answer carries.
//! It must not route or read bodies.

use subtle::ConstantTimeEq;
use tiny_http::{Header, Request};

/// The header the page sends the token in.
pub const TOKEN_HEADER: &str = "X-Peerchat-Token";

/// Why a request is refused (each answered `403` with this sentence).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `Host` is missing or names another server.
    Host,
    /// `Origin` names another site.
    Origin,
    /// An API call without the token, or with a wrong one.
    Token,
}

impl Refusal {
    /// The sentence sent back.
    pub fn text(self) -> &'static str {
        match self {
            Refusal::Host => "forbidden: unknown Host",
            Refusal::Origin => "forbidden: foreign Origin",
            Refusal::Token => "forbidden: missing or wrong token",
        }
    }
}

/// What a request must show to get in.
pub struct Guard {
    /// `Host` values accepted (e.g. `127.0.0.1:8080`, `localhost:8080`).
    hosts: Vec<String>,
    /// The token, as the page sends it (hex).
    token: String,
}

impl Guard {
    /// A guard for a server on `port`, also accepting `extra_host` (the bound address
    /// when a non-loopback bind was allowed).
    pub fn new(port: u16, extra_host: Option<String>, token: String) -> Guard {
        let mut hosts = vec![
            format!("127.0.0.1:{port}"),
            format!("localhost:{port}"),
            format!("[::1]:{port}"),
        ];
        hosts.extend(extra_host);
        Guard { hosts, token }
    }

    /// Checks `Host` and `Origin` for every request, and the token when `api`.
    pub fn check(&self, request: &Request, api: bool) -> Result<(), Refusal> {
        let header = |name: &str| {
            request
                .headers()
                .iter()
                .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
                .map(|h| h.value.as_str().to_string())
        };
        let host = header("Host").ok_or(Refusal::Host)?;
        if !self.hosts.iter().any(|h| h.eq_ignore_ascii_case(&host)) {
            return Err(Refusal::Host);
        }
        if let Some(origin) = header("Origin") {
            let ok = self
                .hosts
                .iter()
                .any(|h| origin.eq_ignore_ascii_case(&format!("http://{h}")));
            if !ok {
                return Err(Refusal::Origin);
            }
        }
        if api {
            let given = header(TOKEN_HEADER).unwrap_or_default();
            let same: bool = given.as_bytes().ct_eq(self.token.as_bytes()).into();
            if !same {
                return Err(Refusal::Token);
            }
        }
        Ok(())
    }
}

/// The headers every answer carries: no inline script, no framing, no sniffing, no
/// caching, no referrer, and never any CORS permission.
pub fn security_headers() -> Vec<Header> {
    [
        (
            "Content-Security-Policy",
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
        ("X-Content-Type-Options", "nosniff"),
        ("X-Frame-Options", "DENY"),
        ("Referrer-Policy", "no-referrer"),
        ("Cache-Control", "no-store"),
    ]
    .iter()
    .filter_map(|(k, v)| Header::from_bytes(k.as_bytes(), v.as_bytes()).ok())
    .collect()
}
