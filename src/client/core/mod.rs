//! The client's engine: server link, peer links, sessions, transfers, shares, history.
//!
//! [`start`] connects and logs in (asking the person through a [`login::Prompter`] the
//! front end supplies), then runs one loop on its own thread that waits on the front
//! end's [`Command`]s, the server link, the peer links and timers, all through one
//! crossbeam `select!`, and tells the front end what happened as [`Event`]s. It must
//! not contain terminal or HTTP code: the terminal (`client::tui`) and the web page
//! (`client::web`) are two front ends on this same loop.

pub mod chunk_out;
pub mod command;
pub mod disk_space;
pub mod event;
pub mod history;
pub mod ladder;
pub mod lane;
pub mod login;
pub mod mail;
pub mod offer_route;
pub mod peer_accept;
pub mod peer_dial;
pub mod peer_limits;
pub mod peer_link;
pub mod peer_out;
pub mod peer_secure;
pub mod replay;
pub mod resume_check;
pub mod retry;
pub mod server_link;
pub mod sessions;
pub mod summary;
pub mod transfer;
pub mod transfer_index;
pub mod transfers;

mod engine;

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam_channel::{Receiver, bounded, unbounded};

pub use command::Command;
pub use event::Event;

use crate::protocol::limits::{ACCEPT_TIMEOUT, ANSWER_WAIT};
use login::{PortChoice, Prompter};
use server_link::ServerLink;
use sessions::Sessions;
use transfer::Share;
use transfers::Transfers;

/// Transfer events that may wait for the core loop (progress beyond it is dropped).
const XFER_EVENTS: usize = 1024;

/// Peer events that may wait for the core loop before peer readers pause.
const PEER_EVENTS: usize = 1024;

/// Commands that may wait for the core loop; a front end sending more waits.
const COMMANDS: usize = 64;

/// Client settings; every flag of `peerchat-client` that the core uses.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientConfig {
    /// The server's address (host:port).
    #[arg(long, default_value = "127.0.0.1:9876")]
    pub server: String,
    /// Port to listen on for peers (0-65535; 0 = any free port); without it the client asks.
    #[arg(long, allow_negative_numbers = true)]
    pub port: Option<u16>,
    /// Interface to listen on for peers.
    #[arg(long, default_value = "0.0.0.0")]
    pub listen_addr: IpAddr,
    /// Seconds you have to accept or decline a chat request (1-30).
    #[arg(long, allow_negative_numbers = true, default_value_t = ACCEPT_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..=ACCEPT_TIMEOUT.as_secs()))]
    pub accept_timeout: u64,
    /// Seconds to wait for the peer to answer your chat request (1-40).
    #[arg(long, default_value_t = ANSWER_WAIT.as_secs(), value_parser = clap::value_parser!(u64).range(1..=ANSWER_WAIT.as_secs()))]
    pub answer_wait: u64,
    /// Folder to share: its regular files (not subfolders) are listed on the server and
    /// can be fetched by other users. Without it, a terminal session asks; pipes share
    /// nothing.
    #[arg(long)]
    pub share: Option<PathBuf>,
    /// Where received files go (default: <data-dir>/<user>/downloads).
    #[arg(long)]
    pub downloads: Option<PathBuf>,
    /// Folder for local data; each user's chat history goes in <data-dir>/<user>/.
    #[arg(long, default_value = "data")]
    pub data_dir: PathBuf,
    /// After losing the server, log in again by itself (every 1 s to 30 s, with the
    /// server's token, so without bcrypt), as `\reconnect` does.
    #[arg(long)]
    pub auto_reconnect: bool,
    /// The server's TLS certificate fingerprint (SHA-256, hex, colons optional), as the
    /// server prints it at start: only that certificate is accepted (nothing is pinned).
    #[arg(long, value_parser = parse_fingerprint_arg)]
    pub server_fingerprint: Option<String>,
    /// Trust (and pin) a server's certificate seen for the first time without asking.
    #[arg(long)]
    pub trust_first_use: bool,
    /// PEM file of CA certificates: the server's certificate must be signed by one of
    /// them for the server's name (checked the usual way); then no pin is used.
    #[arg(long, conflicts_with = "server_fingerprint")]
    pub server_ca: Option<PathBuf>,
    /// The name the server's CA-signed certificate must carry (default: the host of
    /// --server). Only with --server-ca.
    #[arg(long, requires = "server_ca")]
    pub server_name: Option<String>,
}

/// The host of `host:port` (`[v6]:port` too): the name a CA-signed certificate is
/// checked against by default.
fn server_host(server: &str) -> String {
    let host = server.rsplit_once(':').map_or(server, |(host, _)| host);
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_string()
}

fn parse_fingerprint_arg(text: &str) -> Result<String, String> {
    crate::crypto::tls::parse_fingerprint(text)
        .ok_or_else(|| "expected a SHA-256 fingerprint: 64 hex digits, colons optional".into())
}

impl ClientConfig {
    /// How this client decides to trust the server's certificate.
    pub fn server_trust(&self) -> crate::crypto::trust::ServerTrust {
        crate::crypto::trust::ServerTrust {
            data_dir: self.data_dir.clone(),
            fingerprint: self.server_fingerprint.clone(),
            trust_first_use: self.trust_first_use,
            source: Some(self.listen_addr),
            ca: self
                .server_ca
                .as_ref()
                .map(|roots| crate::crypto::trust::ServerCa {
                    roots: roots.clone(),
                    name: self
                        .server_name
                        .clone()
                        .unwrap_or_else(|| server_host(&self.server)),
                }),
        }
    }
}

/// A running core: send it commands, read its events. Dropping `commands` (or sending
/// `Command::Quit`) logs out; `events` ends with `Event::Bye` and then disconnects.
pub struct Handle {
    /// Where the front end sends what the person asks for (a chat line may be handled
    /// on the sending thread: `lane`).
    pub commands: lane::Lane<Command>,
    /// What happened, in order. Unbounded so the core never waits for a front end;
    /// a front end must keep reading it.
    pub events: Receiver<Event>,
    /// Our name as registered.
    pub name: String,
    /// The core loop's thread.
    pub thread: JoinHandle<()>,
}

/// A front end's hook on the core's events: called on the core's thread with each
/// event (and our name) before it is queued on `Handle::events`; true means handled,
/// not queued. A front end that only prints (the terminal with pipes) prints from
/// here, which saves waking its own thread for every event; it must be quick and must
/// never wait for the core. (Printing to a pipe nobody reads then stalls the core
/// rather than growing the unbounded queue.)
pub type EventHook = Box<dyn Fn(&Event, &str) -> bool + Send>;

/// Connects to the server, logs in through `prompter`, opens the peer listener, the
/// history and the shared folder, then starts the core loop. On failure returns the
/// sentence to show.
pub fn start(config: &ClientConfig, prompter: &mut dyn Prompter) -> Result<Handle, String> {
    start_with(config, prompter, None)
}

/// [`start`] with a hook that sees every event first (`Event::Welcome` on this thread).
pub fn start_with(
    config: &ClientConfig,
    prompter: &mut dyn Prompter,
    hook: Option<EventHook>,
) -> Result<Handle, String> {
    let addr = resolve(&config.server)?;
    let trust = config.server_trust();
    let choice = PortChoice::Bind {
        ip: config.listen_addr,
        port: config.port,
    };
    let (link, me) = loop {
        // From the interface we listen on (`trust.source`): the server announces to
        // peers the address our connection comes from.
        let link = {
            let mut ask = |server: &str, fingerprint: &str| prompter.ask_trust(server, fingerprint);
            ServerLink::connect(addr, &trust, Some(&mut ask)).map_err(|e| match e {
                crate::crypto::trust::TrustError::Io(e) => {
                    format!("cannot reach the server at {addr}: {e}")
                }
                refused => refused.to_string(),
            })?
        };
        let key = login::KeySource::DataDir(&config.data_dir);
        match login::run(&link, prompter, &choice, None, &key) {
            Ok(me) => break (link, me),
            Err(why) => {
                link.close();
                if !prompter.start_over() {
                    return Err(why);
                }
            }
        }
    };
    let Some(listener) = me.listener else {
        return Err("no listener was opened".into());
    };
    // The long-term identity key, made at the first login (given with the port), kept
    // beside the history.
    let user_dir = config.data_dir.join(me.name.to_ascii_lowercase());
    // History, pins, seen ids and downloads are the user's alone: the folder is made
    // readable by its owner only (README, "Where data lives"), older folders included.
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&user_dir, std::fs::Permissions::from_mode(0o700));
    }
    let identity = me.identity;
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let (peer_tx, peer_events) = lane::bounded_lane(PEER_EVENTS);
    let refusals = peer_limits::Refusals::new();
    let reversals = ladder::Reversals::new();
    let listen_ip = listener.local_addr().ok().map(|a| a.ip());
    let security = std::sync::Arc::new(
        peer_secure::PeerSecurity::new(
            &me.name,
            std::sync::Arc::clone(&identity),
            &config.data_dir,
        )
        .map_err(|e| format!("cannot read the pinned peer keys: {e}"))?,
    );
    let peer_lane = peer_tx.clone();
    peer_link::spawn_listener(
        listener,
        peer_tx.clone(),
        refusals.clone(),
        reversals.clone(),
        std::sync::Arc::clone(&security),
    )
    .map_err(|e| format!("cannot accept peers: {e}"))?;
    let history_path = history::path_for(&config.data_dir, &me.name);
    let history = match history::History::open(&history_path) {
        Ok(history) => Some(history),
        Err(e) => {
            prompter.show(&format!(
                "error: chat history unavailable ({}): {e}",
                history_path.display()
            ));
            None
        }
    };
    let share = choose_share(prompter, config.share.as_deref());
    let downloads = config.downloads.clone().unwrap_or_else(|| {
        config
            .data_dir
            .join(me.name.to_ascii_lowercase())
            .join("downloads")
    });
    let (xfer_tx, xfer_events) = bounded(XFER_EVENTS);
    let (command_tx, commands) = lane::bounded_lane(COMMANDS);
    let (event_tx, events) = unbounded();
    let welcome = Event::Welcome {
        name: me.name.clone(),
        addr: me.addr.to_string(),
    };
    // Given to the hook here, before the core's thread starts, so nothing the core
    // says (`* sharing ...`) comes before it.
    if !hook.as_ref().is_some_and(|hook| hook(&welcome, &me.name)) {
        let _ = event_tx.send(welcome);
    }
    let engine = engine::Engine {
        transfers: Transfers::new(
            &me.name,
            downloads,
            share,
            xfer_tx,
            std::sync::Arc::clone(&security),
        ),
        hook,
        me: me.name.clone(),
        sessions: Sessions::new(
            &me.name,
            peer_tx,
            history,
            Duration::from_secs(config.accept_timeout),
            Duration::from_secs(config.answer_wait),
            (refusals, reversals),
            std::sync::Arc::clone(&security),
        ),
        security,
        link: Some(link),
        held_reports: Default::default(),
        server: addr,
        trust,
        credentials: me.credentials,
        port,
        auto_reconnect: config.auto_reconnect.then(retry::Backoff::default),
        listen_ip,
        events: event_tx,
        active: None,
        mail: mail::Mail::new(&me.name, identity.clone(), user_dir.clone()),
        offer_route: offer_route::OfferRoute::default(),
        identity,
        stopped: false,
    };
    let core = std::sync::Arc::new(std::sync::Mutex::new(engine));
    engine::shortcuts(&core, &command_tx, &peer_lane);
    let thread = thread::Builder::new()
        .name("client-core".into())
        .spawn(move || {
            let mut engine = core
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // A resumable-login token for reconnects (kept in memory only).
            if let Some(link) = &engine.link {
                link.send_line(&login::token_request());
                // Our local addresses, for peers that ask for us (the ladder's hints).
                link.send_line(&ladder::hints_command(engine.listen_ip));
            }
            if engine.transfers.share_dir().is_some() {
                engine.transfers.announce_share();
                engine.flush();
            }
            drop(engine);
            engine::run(&core, &commands, &peer_events, &xfer_events);
        })
        .map_err(|e| format!("cannot start the client core: {e}"))?;
    Ok(Handle {
        commands: command_tx,
        events,
        name: me.name,
        thread,
    })
}

/// The shared folder from `--share`, or asked for through the front end (none if the
/// answer is empty or the front end does not ask).
fn choose_share(prompter: &mut dyn Prompter, flag: Option<&std::path::Path>) -> Option<Share> {
    let dir = match flag {
        Some(dir) => dir.to_path_buf(),
        None => {
            let answer = prompter.ask_share()?;
            if answer.trim().is_empty() {
                return None;
            }
            PathBuf::from(answer.trim())
        }
    };
    match Share::open(&dir) {
        Ok(share) => Some(share),
        Err(e) => {
            prompter.show(&format!("error: cannot share {}: {e}", dir.display()));
            None
        }
    }
}

fn resolve(server: &str) -> Result<SocketAddr, String> {
    server
        .to_socket_addrs()
        .map_err(|e| format!("bad server address {server}: {e}"))?
        .next()
        .ok_or_else(|| format!("bad server address {server}"))
}
